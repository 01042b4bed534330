//! The demo that flows and clusters start from: what `wxpay-combine demo`
//! prepares (simulator, keys, catalog, `wxpay.toml`), in a temp dir, on
//! SQLite or in a fresh PostgreSQL schema.

use crate::database::{postgres_url, Db, PgSchema};
use wxpay_combine_cli::app::{self, Demo, DemoOptions};

/// A prepared demo with what must outlive it.
pub struct TestDemo {
    pub demo: Demo,
    /// The PostgreSQL schema (dropped on drop), `None` on SQLite.
    pub pg: Option<PgSchema>,
    /// Data dir and page dir; removed on drop.
    pub dir: tempfile::TempDir,
}

impl TestDemo {
    /// Prepares the demo on `db`, or returns `None` when PostgreSQL is not
    /// available (outside CI). Defaults: loopback port 0, simulator time
    /// scale 0.01, no query-on-read and no reconciliation within a test, a
    /// placeholder page titled `page_title`; `tweak` adjusts them. The
    /// PostgreSQL schema is named `<schema_prefix><uuid>`.
    pub async fn prepare(
        db: Db,
        page_title: &str,
        schema_prefix: &str,
        tweak: impl FnOnce(&mut DemoOptions),
    ) -> Option<TestDemo> {
        let admin_url = match db {
            Db::Sqlite => None,
            Db::Postgres => Some(postgres_url()?),
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let mut opts = DemoOptions::new(dir.path().join("data"));
        opts.addr = "127.0.0.1:0".parse().unwrap();
        opts.time_scale = 0.01;
        opts.query_after_secs = 3600;
        opts.reconcile_interval_secs = 3600;
        opts.reconcile_after_secs = 3600;
        let www = dir.path().join("www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(
            www.join("index.html"),
            format!("<!doctype html><title>{page_title}</title>"),
        )
        .unwrap();
        opts.www_dir = Some(www);
        let pg = match admin_url {
            None => None,
            Some(admin_url) => {
                let (url, schema) = PgSchema::create(admin_url, schema_prefix).await;
                opts.database_url = Some(url);
                Some(schema)
            }
        };
        tweak(&mut opts);
        let demo = app::prepare_demo(&opts).await.expect("demo prepares");
        Some(TestDemo { demo, pg, dir })
    }
}
