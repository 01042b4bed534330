//! Test databases for the store, notification and reconciliation suites.
//!
//! Every suite is written once as `async fn name(db: &TestDb)` and
//! instantiated per backend by [`backend_tests!`]: SQLite in a fresh
//! temporary file, PostgreSQL in a fresh schema of the database named by
//! `WXPAY_TEST_DATABASE_URL` (dropped afterwards). Without that variable the
//! PostgreSQL variants print why they are skipped — and fail under `CI=true`.

#![allow(dead_code)] // each test binary uses a different part

use std::path::PathBuf;
use std::sync::Arc;
use wxpay_combine::apiv3::EncryptedResource;
use wxpay_combine::combine::wire::{
    CombineTransaction, PayerInfo, TransactionAmount, TransactionSubOrder,
};
use wxpay_combine::combine::{CombineOrder, SubOrder, TradeState};
use wxpay_combine::store::{self, Store};

/// Which backend a [`TestDb`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// A private, empty, migrated database for one test.
pub struct TestDb {
    pub kind: Kind,
    /// The URL `store::connect` was given (for opening more stores).
    pub url: String,
    pub store: Arc<dyn Store>,
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(PathBuf),
    Schema { admin_url: String, schema: String },
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

impl TestDb {
    /// A SQLite database in a new temporary directory, opened through
    /// `store::connect` with a bare path (which must create the file).
    pub async fn sqlite() -> TestDb {
        let dir = std::env::temp_dir().join(unique("wxpay-test-"));
        let path = dir.join("orders.db");
        let url = path.to_str().expect("utf-8 temp path").to_string();
        let store = store::connect(&url)
            .await
            .expect("open SQLite test database");
        TestDb {
            kind: Kind::Sqlite,
            url,
            store,
            cleanup: Cleanup::Dir(dir),
        }
    }

    /// A fresh schema in the PostgreSQL test database, or `None` (printing
    /// the reason) when `WXPAY_TEST_DATABASE_URL` is unset outside CI.
    pub async fn postgres() -> Option<TestDb> {
        let admin_url = postgres_url()?;
        let schema = unique("wxtest_");
        let mut admin = connect_admin(&admin_url).await;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut admin)
            .await
            .expect("create test schema");
        let sep = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!("{admin_url}{sep}options[search_path]={schema}");
        let store = store::connect(&url)
            .await
            .expect("open PostgreSQL test store");
        Some(TestDb {
            kind: Kind::Postgres,
            url,
            store,
            cleanup: Cleanup::Schema { admin_url, schema },
        })
    }

    /// Another store (its own connection pool) on the same database — a
    /// second server instance.
    pub async fn open_another(&self) -> Arc<dyn Store> {
        store::connect(&self.url).await.expect("open second store")
    }

    /// Runs one statement on a separate raw connection (for checks the
    /// store API cannot express, like the append-only triggers).
    pub async fn raw_execute(&self, sql: &str) -> Result<u64, sqlx::Error> {
        use sqlx::Connection;
        match self.kind {
            Kind::Sqlite => {
                let mut c =
                    sqlx::SqliteConnection::connect(&format!("sqlite://{}", self.url)).await?;
                let r = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                    .execute(&mut c)
                    .await?;
                Ok(r.rows_affected())
            }
            Kind::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await?;
                let r = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                    .execute(&mut c)
                    .await?;
                Ok(r.rows_affected())
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Schema { admin_url, schema } => {
                // Drop may run inside a runtime (or while panicking): do the
                // async cleanup on a thread of its own.
                let (admin_url, schema) = (admin_url.clone(), schema.clone());
                let done = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("cleanup runtime");
                    rt.block_on(async {
                        let mut admin = connect_admin(&admin_url).await;
                        sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP SCHEMA IF EXISTS {schema} CASCADE"
                        )))
                        .execute(&mut admin)
                        .await
                    })
                });
                if let Ok(Err(e)) = done.join() {
                    eprintln!("warning: could not drop test schema: {e}");
                }
            }
        }
    }
}

async fn connect_admin(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to WXPAY_TEST_DATABASE_URL: {e}"))
}

/// `WXPAY_TEST_DATABASE_URL`, or `None` with a printed reason; panics when
/// it is unset under `CI=true` (the PostgreSQL suite is required there).
pub fn postgres_url() -> Option<String> {
    match std::env::var("WXPAY_TEST_DATABASE_URL") {
        Ok(u) if !u.trim().is_empty() => Some(u.trim().to_string()),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but WXPAY_TEST_DATABASE_URL is not set: the PostgreSQL tests are required in CI");
            }
            eprintln!("skipping PostgreSQL variant: WXPAY_TEST_DATABASE_URL is not set");
            None
        }
    }
}

/// Instantiates `async fn name(db: &TestDb)` tests for both backends.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = crate::support::TestDb::sqlite().await;
                    super::$name(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(db) = crate::support::TestDb::postgres().await else { return };
                    super::$name(&db).await;
                }
            )*
        }
    };
}
pub(crate) use backend_tests;

pub const MCHID: &str = "1900000109";
pub const SUB_MCHID: &str = "1900000110";
pub const APPID: &str = "wxd678efh567hg6787";
pub const OPENID: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";

/// A NOTPAY order with two sub-orders (100 and 250 fen) created at `now`.
pub fn order(no: &str, now: i64) -> CombineOrder {
    let sub = |mchid: &str, n: &str, amount| SubOrder {
        mchid: mchid.into(),
        out_trade_no: format!("{no}-{n}"),
        description: format!("goods {n}"),
        attach: format!("attach-{n}"),
        amount,
        transaction_id: None,
        payer_amount: None,
        bank_type: None,
        success_time: None,
    };
    CombineOrder {
        combine_out_trade_no: no.into(),
        combine_mchid: MCHID.into(),
        combine_appid: APPID.into(),
        payer_openid: OPENID.into(),
        state: TradeState::NotPay,
        sub_orders: vec![sub(MCHID, "S1", 100), sub(SUB_MCHID, "S2", 250)],
        prepay_id: None,
        prepay_expires_at: None,
        time_expire: Some(now + 1800),
        created_at: now,
        updated_at: now,
        notified_at: None,
    }
}

/// WeChat Pay's decrypted view of `order`, paid (for notification tests).
pub fn paid_txn(order: &CombineOrder) -> CombineTransaction {
    CombineTransaction {
        combine_appid: order.combine_appid.clone(),
        combine_mchid: order.combine_mchid.clone(),
        combine_out_trade_no: order.combine_out_trade_no.clone(),
        scene_info: None,
        sub_orders: order
            .sub_orders
            .iter()
            .enumerate()
            .map(|(i, s)| TransactionSubOrder {
                mchid: s.mchid.clone(),
                trade_type: Some("JSAPI".into()),
                trade_state: "SUCCESS".into(),
                bank_type: Some("OTHERS".into()),
                attach: Some(s.attach.clone()),
                success_time: Some("2024-04-25T07:06:40+08:00".into()),
                transaction_id: Some(format!("42000020{i}2024042512345678")),
                out_trade_no: s.out_trade_no.clone(),
                sub_mchid: None,
                amount: TransactionAmount {
                    total_amount: s.amount,
                    payer_amount: Some(s.amount),
                    currency: Some("CNY".into()),
                    payer_currency: Some("CNY".into()),
                    settlement_rate: None,
                },
                promotion_detail: None,
            })
            .collect(),
        combine_payer_info: Some(PayerInfo {
            openid: OPENID.into(),
        }),
    }
}

/// A TRANSACTION.SUCCESS notification body around `resource`.
pub fn envelope(id: &str, resource: &EncryptedResource) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": id,
        "create_time": "2024-04-25T07:06:41+08:00",
        "resource_type": "encrypt-resource",
        "event_type": "TRANSACTION.SUCCESS",
        "summary": "支付成功",
        "resource": resource,
    }))
    .unwrap()
}
