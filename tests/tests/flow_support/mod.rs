//! Harness of the flow tests: the merchant server (`Kit::builder` +
//! `wxpay_combine::kit::serve`, exactly what `wxpay-combine demo` runs) on a free loopback
//! port against the embedded simulator, and a "browser" that follows
//! redirects by hand and keeps the merchant's cookies.
//!
//! Each flow runs on SQLite (a temp dir) and, when `WXPAY_TEST_DATABASE_URL`
//! is set, on PostgreSQL in a fresh schema (dropped afterwards). Without the
//! variable the PostgreSQL variant prints why it is skipped — and fails
//! under `CI=true`.

#![allow(dead_code)]

/// Instantiates `async fn name(db: Db)` as `sqlite::name` and
/// `postgres::name` tests (multi-threaded runtime).
#[allow(unused_macros)] // not every test file runs on both
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Db::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Db::Postgres).await;
                }
            )*
        }
    };
}

use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wxpay_combine::apiv3::{Clock, JsapiPayParams, SystemClock};
use wxpay_combine::combine::{CombineOrder, EventSource, OrderEvent, TradeState};
use wxpay_combine::config::Config;
use wxpay_combine::store::Store;
use wxpay_combine_cli::app::{self, DemoOptions};
use wxpay_combine_sim::SimHandle;

/// Which database a flow runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
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
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but WXPAY_TEST_DATABASE_URL is not set: the PostgreSQL flows are required in CI");
            }
            eprintln!("skipping PostgreSQL flow: WXPAY_TEST_DATABASE_URL is not set");
            None
        }
    }
}

/// A running merchant server with its simulator.
pub struct Flow {
    pub sim: SimHandle,
    pub base: String,
    pub config: Config,
    pub store: Arc<dyn Store>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), wxpay_combine::kit::StartError>>>,
    _pg: Option<PgSchema>,
    _dir: tempfile::TempDir,
}

impl Flow {
    /// Starts a flow on `db`, or returns `None` when PostgreSQL is not
    /// available (outside CI). `tweak` adjusts the demo options (defaults
    /// here: simulator time scale 0.01, the 5-minute close rule, no
    /// reconciliation within the test unless asked).
    pub async fn start(db: Db, tweak: impl FnOnce(&mut DemoOptions)) -> Option<Flow> {
        Self::start_with_config(db, tweak, |_| {}).await
    }

    /// [`Flow::start`] with a last adjustment of the validated configuration.
    pub async fn start_with_config(
        db: Db,
        tweak: impl FnOnce(&mut DemoOptions),
        adjust: impl FnOnce(&mut Config),
    ) -> Option<Flow> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut opts = DemoOptions::new(dir.path().join("data"));
        opts.addr = "127.0.0.1:0".parse().unwrap();
        opts.time_scale = 0.01;
        opts.query_after_secs = 1;
        opts.reconcile_interval_secs = 3600;
        opts.reconcile_after_secs = 3600;
        opts.www_dir = Some(dir.path().join("www"));
        std::fs::create_dir_all(dir.path().join("www")).unwrap();
        std::fs::write(
            dir.path().join("www/index.html"),
            "<!doctype html><title>flow</title>",
        )
        .unwrap();
        let pg = match db {
            Db::Sqlite => None,
            Db::Postgres => {
                let (url, schema) = PgSchema::create(postgres_url()?, "wxflow_").await;
                opts.database_url = Some(url);
                Some(schema)
            }
        };
        tweak(&mut opts);
        let mut demo = app::prepare_demo(&opts).await.expect("demo prepares");
        adjust(&mut demo.config);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let server = wxpay_combine::kit::Kit::builder(demo.config.clone())
            .clock(clock)
            .build()
            .await
            .expect("server builds");
        let store = server.store.clone();
        let base = demo.config.public_base_url.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(wxpay_combine::kit::serve(server, demo.listener, async {
            let _ = rx.await;
        }));
        Some(Flow {
            sim: demo.sim,
            base,
            config: demo.config,
            store,
            shutdown: Some(tx),
            server: Some(task),
            _pg: pg,
            _dir: dir,
        })
    }

    /// Signs `user` in through the simulator's OAuth pages.
    pub async fn login(&self, user: &str) -> Browser {
        let b = Browser::new(&self.base);
        b.login(user).await;
        b
    }

    /// The stored order.
    pub async fn order(&self, no: &str) -> CombineOrder {
        self.store
            .get_order(no)
            .await
            .unwrap()
            .expect("order stored")
    }

    /// The order's event log.
    pub async fn events(&self, no: &str) -> Vec<OrderEvent> {
        self.store.events(no).await.unwrap()
    }

    /// Waits until the stored order reaches `state`.
    pub async fn wait_state(&self, no: &str, state: TradeState, within: Duration) -> CombineOrder {
        let deadline = Instant::now() + within;
        loop {
            let o = self.order(no).await;
            if o.state == state {
                return o;
            }
            assert!(
                Instant::now() < deadline,
                "order {no} is {} after {within:?}, expected {state}",
                o.state
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the merchant server gracefully: no new connections, in-flight
    /// requests finish, the worker stops.
    pub async fn stop_server(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("server stops within the grace period")
                .expect("server task")
                .expect("server ran cleanly");
        }
    }

    /// Stops the server, then the simulator.
    pub async fn stop(mut self) {
        self.stop_server().await;
        let sim = self.sim;
        sim.shutdown().await;
    }
}

/// Transitions of an order to `state`, by source.
pub fn transitions_to(events: &[OrderEvent], state: TradeState) -> Vec<EventSource> {
    events
        .iter()
        .filter(|e| e.to_state == state && e.from_state.is_some())
        .map(|e| e.source)
        .collect()
}

/// A browser: no automatic redirects, the merchant's cookies kept by hand.
pub struct Browser {
    http: reqwest::Client,
    pub base: String,
    cookies: Mutex<HashMap<String, String>>,
}

/// An answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub body: Value,
}

impl Browser {
    pub fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .unwrap(),
            base: base.to_string(),
            cookies: Mutex::new(HashMap::new()),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> Answer {
        let mine = url.starts_with(&self.base);
        let mut req = self.http.request(method, url);
        if mine {
            req = req.header("Cookie", self.cookie_header());
        }
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status().as_u16();
        if mine {
            for v in resp.headers().get_all("set-cookie") {
                let pair = v.to_str().unwrap().split(';').next().unwrap().to_string();
                let (k, val) = pair.split_once('=').unwrap();
                let mut jar = self.cookies.lock().unwrap();
                if val.is_empty() || v.to_str().unwrap().contains("Max-Age=0") {
                    jar.remove(k);
                } else {
                    jar.insert(k.to_string(), val.to_string());
                }
            }
        }
        let location = resp
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = resp.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Answer {
            status,
            location,
            body,
        }
    }

    /// `/oauth/start` → simulator authorize (as `user`) → `/oauth/callback` → the page.
    pub async fn login(&self, user: &str) {
        let a = self
            .send(
                reqwest::Method::GET,
                &format!("{}/oauth/start?return=%2Fpay%2F", self.base),
                None,
            )
            .await;
        assert_eq!(a.status, 302, "{:?}", a.body);
        let authorize = a.location.unwrap();
        assert!(authorize.ends_with("#wechat_redirect"), "{authorize}");
        assert!(
            authorize.contains("&response_type=code&scope=snsapi_base&state="),
            "{authorize}"
        );
        // The fragment stays in the browser; the simulator picks the user by name.
        let authorize =
            authorize.trim_end_matches("#wechat_redirect").to_string() + "&user=" + user;
        let a = self.send(reqwest::Method::GET, &authorize, None).await;
        assert_eq!(a.status, 302, "authorize: {:?}", a.body);
        let callback = a.location.unwrap();
        assert!(
            callback.starts_with(&format!("{}/oauth/callback?", self.base)),
            "{callback}"
        );
        let a = self.send(reqwest::Method::GET, &callback, None).await;
        assert_eq!(a.status, 302, "callback: {:?}", a.body);
        assert_eq!(a.location.as_deref(), Some("/pay/"));
        assert!(self.cookies.lock().unwrap().contains_key("wxpay_session"));
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(reqwest::Method::GET, &format!("{}{path}", self.base), None)
            .await
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> Answer {
        self.send(reqwest::Method::POST, &format!("{}{path}", self.base), body)
            .await
    }

    /// Creates an order with one item of each of the first `merchants` shops.
    pub async fn create_order(&self, merchants: usize) -> Value {
        let catalog = self.get("/api/catalog").await.body;
        let mut seen = Vec::new();
        let mut items = Vec::new();
        for item in catalog["items"].as_array().unwrap() {
            let m = item["merchant"]["mchid"].as_str().unwrap().to_string();
            if !seen.contains(&m) && seen.len() < merchants {
                seen.push(m);
                items.push(json!({"sku": item["sku"], "qty": 1}));
            }
        }
        assert_eq!(
            seen.len(),
            merchants,
            "the demo catalog has {merchants} merchants"
        );
        let a = self
            .post("/api/combine-orders", Some(json!({ "items": items })))
            .await;
        assert_eq!(a.status, 201, "{:?}", a.body);
        a.body
    }
}

/// The pay params of a create or pay-params answer.
pub fn pay_params(v: &Value) -> JsapiPayParams {
    serde_json::from_value(v["pay_params"].clone())
        .unwrap_or_else(|e| panic!("no pay_params in {v}: {e}"))
}

/// The order number of an answer.
pub fn order_no(v: &Value) -> String {
    v["combine_out_trade_no"]
        .as_str()
        .unwrap_or_else(|| panic!("no combine_out_trade_no in {v}"))
        .to_string()
}
