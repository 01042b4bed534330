//! The databases the flows run on: SQLite in a temp dir, and PostgreSQL (when
//! `WXPAY_TEST_DATABASE_URL` is set) in a fresh schema dropped afterwards.

use crate::under_ci;

/// Which database a flow runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Instantiates `async fn name(db: Db)` as `sqlite::name` and
/// `postgres::name` tests (multi-threaded runtime).
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::database::Db::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::database::Db::Postgres).await;
                }
            )*
        }
    };
}

/// A fresh PostgreSQL schema, dropped on drop.
pub struct PgSchema {
    admin_url: String,
    schema: String,
}

impl PgSchema {
    /// Creates a schema named `PREFIX<uuid>` in the database at `admin_url`;
    /// returns the database URL that selects it, and the guard that drops it.
    pub async fn create(admin_url: String, prefix: &str) -> (String, PgSchema) {
        use sqlx::Connection;
        let schema = format!("{prefix}{}", uuid::Uuid::new_v4().simple());
        let mut c = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to WXPAY_TEST_DATABASE_URL: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut c)
            .await
            .expect("create schema");
        let sep = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!("{admin_url}{sep}options[search_path]={schema}");
        (url, PgSchema { admin_url, schema })
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let (url, schema) = (self.admin_url.clone(), self.schema.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut c) = sqlx::PgConnection::connect(&url).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS {schema} CASCADE"
                    )))
                    .execute(&mut c)
                    .await;
                }
            })
        })
        .join();
    }
}

/// `WXPAY_TEST_DATABASE_URL`, or `None` with the reason printed; panics
/// under `CI=true` (PostgreSQL is required there).
pub fn postgres_url() -> Option<String> {
    match std::env::var("WXPAY_TEST_DATABASE_URL") {
        Ok(u) if !u.trim().is_empty() => Some(u.trim().to_string()),
        _ => {
            if under_ci() {
                panic!("CI=true but WXPAY_TEST_DATABASE_URL is not set: the PostgreSQL flows are required in CI");
            }
            eprintln!("skipping PostgreSQL flow: WXPAY_TEST_DATABASE_URL is not set");
            None
        }
    }
}
