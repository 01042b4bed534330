//! Test databases for the store, notification and reconciliation suites.
//!
//! Every suite is written once as `async fn name(db: &TestDb)` and
//! instantiated per backend by [`backend_tests!`]: SQLite in a fresh
//! temporary file, PostgreSQL in a fresh schema of the database named by
//! `WXPAY_TEST_DATABASE_URL` (dropped afterwards). Without that variable the
//! PostgreSQL variants print why they are skipped — and fail under `CI=true`.
//!
//! Also the shapes the suites share: stored orders and the transitions that
//! move them, requests through an in-process router (`oneshot`) and their
//! answers, session cookies, and a store wrapper that observes or slows
//! calls. Included by `server/cli/tests` too (via `#[path]`).

#![allow(dead_code)] // each test binary uses a different part

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use tower::ServiceExt;
use wxpay_combine::apiv3::{ApiV3Key, EncryptedResource};
use wxpay_combine::combine::wire::{
    CombineTransaction, PayerInfo, TransactionAmount, TransactionSubOrder,
};
use wxpay_combine::combine::{
    ApplyOutcome, CombineOrder, EventSource, OrderEvent, SubOrder, SubOrderPayment, TradeState,
    Transition,
};
use wxpay_combine::http::session::{CookieSigner, Purpose, SessionData};
use wxpay_combine::store::{self, Store, StoreError};

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

    /// Stores [`order`]`(no, created_at)` and returns it.
    pub async fn create(&self, no: &str, created_at: i64) -> CombineOrder {
        create(&*self.store, no, created_at).await
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
#[allow(unused_macros)] // the HTTP suites include this module for its other helpers
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
#[allow(unused_imports)]
pub(crate) use backend_tests;

pub const MCHID: &str = "1900000109";
pub const SUB_MCHID: &str = "1900000110";
pub const APPID: &str = "wxd678efh567hg6787";
pub const OPENID: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";

/// A NOTPAY order with two sub-orders (100 and 250 fen) created at `now`.
pub fn order(no: &str, now: i64) -> CombineOrder {
    let sub = |mchid: &str, n: &str, amount| {
        SubOrder::unpaid(
            mchid,
            format!("{no}-{n}"),
            format!("goods {n}"),
            format!("attach-{n}"),
            amount,
        )
    };
    let subs = vec![sub(MCHID, "S1", 100), sub(SUB_MCHID, "S2", 250)];
    CombineOrder::unpaid(no, MCHID, APPID, OPENID, subs, Some(now + 1800), now)
}

/// WeChat Pay's decrypted view of `order`, paid (for notification tests).
pub fn paid_txn(order: &CombineOrder) -> CombineTransaction {
    txn_in(order, TradeState::Success, |i| {
        format!("42000020{i}2024042512345678")
    })
}

/// WeChat Pay's view of `order` in `state`; a paid one (SUCCESS or REFUND)
/// carries `transaction_id(i)` for sub-order `i`, a bank type and a success
/// time.
pub fn txn_in(
    order: &CombineOrder,
    state: TradeState,
    transaction_id: impl Fn(usize) -> String,
) -> CombineTransaction {
    let paid = matches!(state, TradeState::Success | TradeState::Refund);
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
                trade_state: state.as_str().into(),
                bank_type: paid.then(|| "OTHERS".into()),
                attach: Some(s.attach.clone()),
                success_time: paid.then(|| "2024-04-25T07:06:40+08:00".into()),
                transaction_id: paid.then(|| transaction_id(i)),
                out_trade_no: s.out_trade_no.clone(),
                sub_mchid: None,
                amount: TransactionAmount {
                    total_amount: s.amount,
                    payer_amount: paid.then_some(s.amount),
                    currency: Some("CNY".into()),
                    payer_currency: paid.then(|| "CNY".into()),
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

/// Stores [`order`]`(no, created_at)` in `store` and returns it.
pub async fn create(store: &dyn Store, no: &str, created_at: i64) -> CombineOrder {
    let o = order(no, created_at);
    store
        .create_order(&o)
        .await
        .unwrap_or_else(|e| panic!("create order {no}: {e}"));
    o
}

/// A transition to `to` without payments or notification.
pub fn transition(to: TradeState, source: EventSource, detail: &str) -> Transition {
    Transition {
        to,
        source,
        payments: Vec::new(),
        notification: None,
        detail: detail.into(),
    }
}

/// SUCCESS for [`order`]`(no, _)`: every sub-order paid in full at
/// 2024-04-25T10:00:00+08:00, the i-th with transaction id `transaction_id(i)`;
/// no notification, detail "test".
pub fn paid(no: &str, source: EventSource, transaction_id: impl Fn(usize) -> String) -> Transition {
    let o = order(no, 0);
    Transition {
        payments: o
            .sub_orders
            .iter()
            .enumerate()
            .map(|(i, s)| SubOrderPayment {
                mchid: s.mchid.clone(),
                out_trade_no: s.out_trade_no.clone(),
                transaction_id: Some(transaction_id(i)),
                payer_amount: Some(s.amount),
                bank_type: Some("OTHERS".into()),
                success_time: Some("2024-04-25T10:00:00+08:00".into()),
            })
            .collect(),
        ..transition(TradeState::Success, source, "test")
    }
}

/// `plaintext` sealed under `key` as WeChat Pay seals a transaction.
pub fn sealed(key: &ApiV3Key, plaintext: &[u8]) -> EncryptedResource {
    EncryptedResource::seal(key, "transaction", Some("transaction"), plaintext)
}

/// A notification body (see [`envelope`]) carrying `txn` sealed under `key`.
pub fn body_for(key: &ApiV3Key, id: &str, txn: &CombineTransaction) -> Vec<u8> {
    envelope(id, &sealed(key, &serde_json::to_vec(txn).unwrap()))
}

/// An answer of an in-process router.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON; panics (showing the body) when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    /// `None` for an empty body, else the body as JSON.
    pub fn json_if_any(&self) -> Option<Value> {
        (!self.body.is_empty()).then(|| self.json())
    }
    /// The body as JSON, or `null` when it is not JSON.
    pub fn json_or_null(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// A header's value, `None` when absent (or not text).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// Every `Set-Cookie` value.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }
}

/// Sends `req` through `app` (`tower::ServiceExt::oneshot`), reading the
/// answer's body (up to 1 MiB).
pub async fn oneshot(app: &Router, req: Request<Body>) -> Reply {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

/// [`oneshot`] for answers that are empty or JSON: the status, and the
/// JSON when there is a body.
pub async fn oneshot_json(app: &Router, req: Request<Body>) -> (StatusCode, Option<Value>) {
    let r = oneshot(app, req).await;
    (r.status, r.json_if_any())
}

/// A `Cookie` header value holding a session of `openid` sealed by
/// `signer`, valid for an hour from `now`.
pub fn session_cookie(signer: &CookieSigner, openid: &str, now: i64) -> String {
    let v = signer.seal(
        Purpose::Session,
        &SessionData {
            openid: openid.into(),
            expires_at: now + 3600,
        },
    );
    format!("{}={v}", signer.session_cookie_name())
}

/// The order number of an API answer (`combine_out_trade_no`).
pub fn order_no(v: &Value) -> String {
    v["combine_out_trade_no"]
        .as_str()
        .unwrap_or_else(|| panic!("no combine_out_trade_no in {v}"))
        .to_string()
}

/// What a [`HookedStore`] does around the calls it observes.
#[async_trait]
pub trait StoreHooks: Send + Sync {
    /// Before `apply_transition` reaches the real store.
    async fn before_apply(&self, _no: &str, _transition: &Transition) {}
    /// After `apply_transition` returned (whatever the result).
    fn after_apply(&self) {}
    /// When `claim_open_orders` is called.
    fn on_claim(&self) {}
}

/// Delegates every call to `inner`, running `hooks` around state changes and
/// claims (to hold writes in flight, or to record them).
pub struct HookedStore<H> {
    pub inner: Arc<dyn Store>,
    pub hooks: H,
}

impl<H> std::fmt::Debug for HookedStore<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookedStore")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<H: StoreHooks> Store for HookedStore<H> {
    async fn create_order(&self, order: &CombineOrder) -> Result<(), StoreError> {
        self.inner.create_order(order).await
    }
    async fn consume_oauth_state(
        &self,
        state_sha256: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.inner
            .consume_oauth_state(state_sha256, expires_at, now)
            .await
    }
    async fn get_order(&self, no: &str) -> Result<Option<CombineOrder>, StoreError> {
        self.inner.get_order(no).await
    }
    async fn set_prepay(&self, no: &str, id: &str, exp: i64) -> Result<(), StoreError> {
        self.inner.set_prepay(no, id, exp).await
    }
    async fn apply_transition(
        &self,
        no: &str,
        transition: &Transition,
        now: i64,
    ) -> Result<ApplyOutcome, StoreError> {
        self.hooks.before_apply(no, transition).await;
        let r = self.inner.apply_transition(no, transition, now).await;
        self.hooks.after_apply();
        r
    }
    async fn touch_notified(&self, no: &str, now: i64) -> Result<(), StoreError> {
        self.inner.touch_notified(no, now).await
    }
    async fn claim_open_orders(
        &self,
        created_before: i64,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<CombineOrder>, StoreError> {
        self.hooks.on_claim();
        self.inner
            .claim_open_orders(created_before, now, lease_until, limit)
            .await
    }
    async fn set_lease(&self, no: &str, lease_until: i64) -> Result<(), StoreError> {
        self.inner.set_lease(no, lease_until).await
    }
    async fn events(&self, no: &str) -> Result<Vec<OrderEvent>, StoreError> {
        self.inner.events(no).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}
