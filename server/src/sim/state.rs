//! The simulator's persistent state: `DIR/sim.db`, SQLite in WAL mode.
//!
//! Orders, prepay ids, notification deliveries (so pending ones resume after
//! a restart), OAuth codes, bill download tokens, faults and the request log.
//! Callers that read-modify-write hold `SimState::write_lock`, so plain
//! statements are enough; a payment is one transaction.
//!
//! Each statement is a round trip to sqlx's SQLite worker thread, and the
//! one connection is the simulator's serial step under load, so the hot
//! paths keep those trips few: a new order is one script
//! ([`Db::insert_new_order`]), known users are remembered in memory, and
//! the request log is written behind the answers in batches ([`CallLog`]).

use super::error::SimError;
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS orders (
        combine_mchid TEXT NOT NULL,
        combine_out_trade_no TEXT NOT NULL,
        combine_appid TEXT NOT NULL,
        request_json TEXT NOT NULL,
        openid TEXT NOT NULL,
        notify_url TEXT NOT NULL,
        device_id TEXT,
        state TEXT NOT NULL,
        closed_reason TEXT,
        time_expire INTEGER,
        created_at INTEGER NOT NULL,
        paid_at INTEGER,
        PRIMARY KEY (combine_mchid, combine_out_trade_no))",
    "CREATE TABLE IF NOT EXISTS sub_orders (
        combine_mchid TEXT NOT NULL,
        combine_out_trade_no TEXT NOT NULL,
        idx INTEGER NOT NULL,
        mchid TEXT NOT NULL,
        out_trade_no TEXT NOT NULL,
        attach TEXT NOT NULL,
        description TEXT NOT NULL,
        total_amount INTEGER NOT NULL,
        currency TEXT NOT NULL,
        trade_state TEXT NOT NULL,
        transaction_id TEXT,
        success_time INTEGER,
        payer_amount INTEGER,
        bank_type TEXT,
        PRIMARY KEY (combine_mchid, combine_out_trade_no, idx),
        UNIQUE (mchid, out_trade_no))",
    "CREATE TABLE IF NOT EXISTS prepays (
        prepay_id TEXT PRIMARY KEY,
        combine_mchid TEXT NOT NULL,
        combine_out_trade_no TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS refunds (
        refund_id TEXT PRIMARY KEY,
        out_refund_no TEXT NOT NULL,
        combine_mchid TEXT NOT NULL,
        combine_out_trade_no TEXT NOT NULL,
        mchid TEXT NOT NULL,
        out_trade_no TEXT NOT NULL,
        amount INTEGER NOT NULL,
        created_at INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS notifications (
        id TEXT PRIMARY KEY,
        combine_mchid TEXT NOT NULL,
        combine_out_trade_no TEXT NOT NULL,
        notify_url TEXT NOT NULL,
        body TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt_ms INTEGER NOT NULL,
        created_ms INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS notification_attempts (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        notification_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        kind TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        http_status INTEGER,
        error TEXT,
        response_body TEXT,
        duration_ms INTEGER NOT NULL,
        serial TEXT)",
    "CREATE TABLE IF NOT EXISTS oauth_codes (
        code TEXT PRIMARY KEY,
        appid TEXT NOT NULL,
        openid TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        used INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS users (
        appid TEXT NOT NULL,
        openid TEXT NOT NULL,
        name TEXT NOT NULL,
        PRIMARY KEY (appid, openid))",
    "CREATE TABLE IF NOT EXISTS bill_tokens (
        token TEXT PRIMARY KEY,
        mchid TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        used INTEGER NOT NULL,
        gzip INTEGER NOT NULL,
        content BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS faults (scope TEXT PRIMARY KEY, json TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS api_calls (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        mchid TEXT,
        combine_out_trade_no TEXT,
        status INTEGER NOT NULL,
        code TEXT)",
    "CREATE INDEX IF NOT EXISTS api_calls_order ON api_calls (endpoint, combine_out_trade_no)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
];

/// Order-level state. Sub-orders carry the same `trade_state` except after a
/// refund.
pub mod order_state {
    /// Not paid yet.
    pub const NOTPAY: &str = "NOTPAY";
    /// The user is paying (set through the control API).
    pub const USERPAYING: &str = "USERPAYING";
    /// Paid.
    pub const SUCCESS: &str = "SUCCESS";
    /// Closed by the close API or by expiry.
    pub const CLOSED: &str = "CLOSED";
    /// A sub-order refunded after payment.
    pub const REFUND: &str = "REFUND";
}

/// A combined order.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrderRow {
    pub combine_mchid: String,
    pub combine_out_trade_no: String,
    pub combine_appid: String,
    pub request_json: String,
    pub openid: String,
    pub notify_url: String,
    pub device_id: Option<String>,
    pub state: String,
    pub closed_reason: Option<String>,
    pub time_expire: Option<i64>,
    pub created_at: i64,
    pub paid_at: Option<i64>,
}

/// One sub-order.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SubOrderRow {
    pub idx: i64,
    pub mchid: String,
    pub out_trade_no: String,
    pub attach: String,
    pub description: String,
    pub total_amount: i64,
    pub currency: String,
    pub trade_state: String,
    pub transaction_id: Option<String>,
    pub success_time: Option<i64>,
    pub payer_amount: Option<i64>,
    pub bank_type: Option<String>,
}

/// A prepay id.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PrepayRow {
    pub prepay_id: String,
    pub combine_mchid: String,
    pub combine_out_trade_no: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A sub-order joined with its order, for bills.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BillTradeRow {
    pub combine_appid: String,
    pub openid: String,
    pub device_id: Option<String>,
    pub mchid: String,
    pub out_trade_no: String,
    pub attach: String,
    pub description: String,
    pub total_amount: i64,
    pub transaction_id: Option<String>,
    pub success_time: Option<i64>,
    pub bank_type: Option<String>,
}

/// A refund joined with its sub-order, for bills.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BillRefundRow {
    pub refund_id: String,
    pub out_refund_no: String,
    pub amount: i64,
    pub created_at: i64,
    pub combine_appid: String,
    pub openid: String,
    pub device_id: Option<String>,
    pub mchid: String,
    pub out_trade_no: String,
    pub attach: String,
    pub description: String,
    pub transaction_id: Option<String>,
    pub bank_type: Option<String>,
}

/// A notification to deliver.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NotificationRow {
    pub id: String,
    pub combine_mchid: String,
    pub combine_out_trade_no: String,
    pub notify_url: String,
    pub body: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_ms: i64,
    pub created_ms: i64,
}

/// One delivery attempt, as `GET /sim/notifications` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct NotificationAttempt {
    /// Notification id (the envelope's `id`).
    pub notification_id: String,
    /// 1-based attempt number (0 for a signature probe).
    pub attempt: i64,
    /// `delivery`, `duplicate`, `probe` or `dropped`.
    pub kind: String,
    /// When it was sent, Unix milliseconds.
    pub at_ms: i64,
    /// The merchant's HTTP status, if it answered.
    pub http_status: Option<i64>,
    /// Transport error or timeout, if it did not.
    pub error: Option<String>,
    /// The start of the merchant's answer body.
    pub response_body: Option<String>,
    /// How long the merchant took.
    pub duration_ms: i64,
    /// `Wechatpay-Serial` of the attempt.
    pub serial: Option<String>,
}

/// A bill download token.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BillTokenRow {
    pub token: String,
    pub mchid: String,
    pub created_at: i64,
    pub used: i64,
    pub gzip: i64,
    pub content: Vec<u8>,
}

/// An OAuth code.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OAuthCodeRow {
    pub appid: String,
    pub openid: String,
    pub created_at: i64,
    pub used: i64,
}

/// One logged APIv3 request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ApiCallRecord {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// HTTP method.
    pub method: String,
    /// Path and query as sent.
    pub path: String,
    /// `prepay`, `query`, `close`, `certificates`, `tradebill`,
    /// `billdownload` or `unknown`.
    pub endpoint: String,
    /// The mchid of the Authorization header, when it parsed.
    pub mchid: Option<String>,
    /// The combined order named, when there is one.
    pub combine_out_trade_no: Option<String>,
    /// The status answered.
    pub status: i64,
    /// The error code answered, if any.
    pub code: Option<String>,
}

/// The database.
#[derive(Debug, Clone)]
pub struct Db {
    pool: SqlitePool,
    calls: CallLog,
    /// Users known to exist (rows are never deleted, so a hit stays true).
    known_users: Arc<Mutex<HashSet<(String, String)>>>,
}

/// The request log's writer: records queue in memory and a task inserts
/// whatever has queued in one transaction, so logging costs the answer no
/// database round trip. Readers call [`CallLog::flush`] first, which
/// returns once every earlier record is stored.
#[derive(Debug, Clone)]
struct CallLog {
    queue: mpsc::UnboundedSender<CallLogMessage>,
}

#[derive(Debug)]
enum CallLogMessage {
    Record(ApiCallRecord),
    Flush(oneshot::Sender<()>),
}

/// The most records one log insert takes (8 parameters each, far below
/// SQLite's parameter limit).
const CALL_LOG_BATCH: usize = 512;

impl CallLog {
    fn start(pool: SqlitePool) -> Self {
        let (queue, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = Vec::with_capacity(CALL_LOG_BATCH);
            while rx.recv_many(&mut messages, CALL_LOG_BATCH).await > 0 {
                let mut records = Vec::new();
                let mut flushed = Vec::new();
                for m in messages.drain(..) {
                    match m {
                        CallLogMessage::Record(r) => records.push(r),
                        CallLogMessage::Flush(done) => flushed.push(done),
                    }
                }
                if let Err(e) = insert_calls(&pool, &records).await {
                    tracing::warn!(error = %e, records = records.len(), "could not log API calls");
                }
                for done in flushed {
                    let _ = done.send(());
                }
            }
        });
        Self { queue }
    }

    fn record(&self, c: ApiCallRecord) {
        // The task lives as long as any handle: a send fails only while
        // the runtime shuts down.
        let _ = self.queue.send(CallLogMessage::Record(c));
    }

    async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.queue.send(CallLogMessage::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

/// Inserts `records` with one statement.
async fn insert_calls(pool: &SqlitePool, records: &[ApiCallRecord]) -> Result<(), sqlx::Error> {
    if records.is_empty() {
        return Ok(());
    }
    let mut sql = String::from(
        "INSERT INTO api_calls (at_ms, method, path, endpoint, mchid, combine_out_trade_no, status, code) VALUES ",
    );
    for i in 0..records.len() {
        sql.push_str(if i == 0 {
            "(?, ?, ?, ?, ?, ?, ?, ?)"
        } else {
            ", (?, ?, ?, ?, ?, ?, ?, ?)"
        });
    }
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for c in records {
        q = q
            .bind(c.at_ms)
            .bind(c.method.clone())
            .bind(c.path.clone())
            .bind(c.endpoint.clone())
            .bind(c.mchid.clone())
            .bind(c.combine_out_trade_no.clone())
            .bind(c.status)
            .bind(c.code.clone());
    }
    q.execute(pool).await.map(|_| ())
}

impl Db {
    /// Opens (creating) `path` in WAL mode and creates the schema.
    pub async fn open(path: &Path) -> Result<Self, SimError> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        // One connection: writers queue in process instead of meeting
        // SQLITE_BUSY and sleeping in SQLite's busy handler (which made
        // concurrent prepays wait tens of milliseconds each).
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        for stmt in SCHEMA {
            sqlx::query(*stmt).execute(&pool).await?;
        }
        Ok(Self {
            calls: CallLog::start(pool.clone()),
            pool,
            known_users: Arc::default(),
        })
    }

    /// Stores the queued request log, then closes the pool.
    pub async fn close(&self) {
        self.calls.flush().await;
        self.pool.close().await;
    }

    // ---- orders -------------------------------------------------------

    pub async fn order(&self, mchid: &str, no: &str) -> Result<Option<OrderRow>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM orders WHERE combine_mchid = ? AND combine_out_trade_no = ?")
            .bind(mchid.to_string())
            .bind(no.to_string())
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn sub_orders(&self, mchid: &str, no: &str) -> Result<Vec<SubOrderRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT idx, mchid, out_trade_no, attach, description, total_amount, currency, trade_state,
                    transaction_id, success_time, payer_amount, bank_type
             FROM sub_orders WHERE combine_mchid = ? AND combine_out_trade_no = ? ORDER BY idx",
        )
        .bind(mchid.to_string())
        .bind(no.to_string())
        .fetch_all(&self.pool)
        .await
    }

    /// The combined order a sub-order number already belongs to, if any.
    pub async fn sub_order_owner(
        &self,
        mchid: &str,
        out_trade_no: &str,
    ) -> Result<Option<(String, String)>, sqlx::Error> {
        sqlx::query_as("SELECT combine_mchid, combine_out_trade_no FROM sub_orders WHERE mchid = ? AND out_trade_no = ?")
            .bind(mchid.to_string())
            .bind(out_trade_no.to_string())
            .fetch_optional(&self.pool)
            .await
    }

    /// Inserts a new order with its sub-orders and first prepay id as one
    /// script (one round trip), without a prior lookup. `Ok(false)`: the
    /// order number or a sub-order number is taken (nothing was written);
    /// the caller then works out which, under the write lock.
    pub async fn insert_new_order(
        &self,
        o: &OrderRow,
        subs: &[SubOrderRow],
        prepay: &PrepayRow,
    ) -> Result<bool, sqlx::Error> {
        let mut sql = String::from(
            "BEGIN IMMEDIATE;
             INSERT INTO orders (combine_mchid, combine_out_trade_no, combine_appid, request_json, openid, notify_url,
                 device_id, state, closed_reason, time_expire, created_at, paid_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, NULL);\n",
        );
        for _ in subs {
            sql.push_str(
                "INSERT INTO sub_orders (combine_mchid, combine_out_trade_no, idx, mchid, out_trade_no, attach, description,
                     total_amount, currency, trade_state)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?);\n",
            );
        }
        sql.push_str(INSERT_PREPAY);
        sql.push_str(";\nCOMMIT");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(o.combine_mchid.clone())
            .bind(o.combine_out_trade_no.clone())
            .bind(o.combine_appid.clone())
            .bind(o.request_json.clone())
            .bind(o.openid.clone())
            .bind(o.notify_url.clone())
            .bind(o.device_id.clone())
            .bind(o.state.clone())
            .bind(o.time_expire)
            .bind(o.created_at);
        for s in subs {
            q = q
                .bind(o.combine_mchid.clone())
                .bind(o.combine_out_trade_no.clone())
                .bind(s.idx)
                .bind(s.mchid.clone())
                .bind(s.out_trade_no.clone())
                .bind(s.attach.clone())
                .bind(s.description.clone())
                .bind(s.total_amount)
                .bind(s.currency.clone())
                .bind(s.trade_state.clone());
        }
        q = q
            .bind(prepay.prepay_id.clone())
            .bind(prepay.combine_mchid.clone())
            .bind(prepay.combine_out_trade_no.clone())
            .bind(prepay.created_at)
            .bind(prepay.expires_at);
        // The connection, not the pool: a script that stops inside its
        // transaction is rolled back here before anyone else uses it.
        let mut conn = self.pool.acquire().await?;
        match q.execute(&mut *conn).await {
            Ok(_) => Ok(true),
            Err(e) => {
                if let Err(rollback) = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await {
                    // A connection in an unknown state must not go back.
                    conn.detach();
                    tracing::warn!(error = %rollback, "rollback after a failed order insert");
                }
                match e.as_database_error() {
                    Some(d) if d.is_unique_violation() => Ok(false),
                    _ => Err(e),
                }
            }
        }
    }

    pub async fn insert_prepay(&self, p: &PrepayRow) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        insert_prepay(&mut tx, p).await?;
        tx.commit().await
    }

    pub async fn prepay(&self, prepay_id: &str) -> Result<Option<PrepayRow>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM prepays WHERE prepay_id = ?")
            .bind(prepay_id.to_string())
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn latest_prepay(
        &self,
        mchid: &str,
        no: &str,
    ) -> Result<Option<PrepayRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT * FROM prepays WHERE combine_mchid = ? AND combine_out_trade_no = ? ORDER BY created_at DESC, rowid DESC LIMIT 1",
        )
        .bind(mchid.to_string())
        .bind(no.to_string())
        .fetch_optional(&self.pool)
        .await
    }

    /// Moves an order and all its sub-orders to `state`.
    pub async fn set_order_state(
        &self,
        mchid: &str,
        no: &str,
        state: &str,
        closed_reason: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE orders SET state = ?, closed_reason = ? WHERE combine_mchid = ? AND combine_out_trade_no = ?")
            .bind(state.to_string())
            .bind(closed_reason.map(str::to_string))
            .bind(mchid.to_string())
            .bind(no.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE sub_orders SET trade_state = ? WHERE combine_mchid = ? AND combine_out_trade_no = ?")
            .bind(state.to_string())
            .bind(mchid.to_string())
            .bind(no.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// Marks every sub-order paid and queues the notification, atomically.
    pub async fn pay(
        &self,
        mchid: &str,
        no: &str,
        paid_at: i64,
        subs: &[SubOrderRow],
        notification: &NotificationRow,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE orders SET state = 'SUCCESS', paid_at = ? WHERE combine_mchid = ? AND combine_out_trade_no = ?")
            .bind(paid_at)
            .bind(mchid.to_string())
            .bind(no.to_string())
            .execute(&mut *tx)
            .await?;
        for s in subs {
            sqlx::query(
                "UPDATE sub_orders SET trade_state = 'SUCCESS', transaction_id = ?, success_time = ?, payer_amount = ?, bank_type = ?
                 WHERE combine_mchid = ? AND combine_out_trade_no = ? AND idx = ?",
            )
            .bind(s.transaction_id.clone())
            .bind(s.success_time)
            .bind(s.payer_amount)
            .bind(s.bank_type.clone())
            .bind(mchid.to_string())
            .bind(no.to_string())
            .bind(s.idx)
            .execute(&mut *tx)
            .await?;
        }
        insert_notification(&mut tx, notification).await?;
        tx.commit().await
    }

    /// Records a refund of one sub-order (made "in the merchant platform").
    #[allow(clippy::too_many_arguments)]
    pub async fn refund(
        &self,
        combine_mchid: &str,
        no: &str,
        idx: i64,
        refund_id: &str,
        out_refund_no: &str,
        amount: i64,
        at: i64,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let (mchid, out_trade_no): (String, String) = sqlx::query_as(
            "SELECT mchid, out_trade_no FROM sub_orders WHERE combine_mchid = ? AND combine_out_trade_no = ? AND idx = ?",
        )
        .bind(combine_mchid.to_string())
        .bind(no.to_string())
        .bind(idx)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO refunds (refund_id, out_refund_no, combine_mchid, combine_out_trade_no, mchid, out_trade_no, amount, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(refund_id.to_string())
        .bind(out_refund_no.to_string())
        .bind(combine_mchid.to_string())
        .bind(no.to_string())
        .bind(mchid)
        .bind(out_trade_no)
        .bind(amount)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE sub_orders SET trade_state = 'REFUND' WHERE combine_mchid = ? AND combine_out_trade_no = ? AND idx = ?")
            .bind(combine_mchid.to_string())
            .bind(no.to_string())
            .bind(idx)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    pub async fn refunded_amount(
        &self,
        combine_mchid: &str,
        no: &str,
        idx: i64,
    ) -> Result<i64, sqlx::Error> {
        let (sum,): (Option<i64>,) = sqlx::query_as(
            "SELECT SUM(r.amount) FROM refunds r JOIN sub_orders s
               ON s.mchid = r.mchid AND s.out_trade_no = r.out_trade_no
             WHERE s.combine_mchid = ? AND s.combine_out_trade_no = ? AND s.idx = ?",
        )
        .bind(combine_mchid.to_string())
        .bind(no.to_string())
        .bind(idx)
        .fetch_one(&self.pool)
        .await?;
        Ok(sum.unwrap_or(0))
    }

    // ---- bills --------------------------------------------------------

    /// Sub-orders paid in `[from, to)` that belong in `mchid`'s bill.
    pub async fn bill_trades(
        &self,
        mchid: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<BillTradeRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT o.combine_appid, o.openid, o.device_id, s.mchid, s.out_trade_no, s.attach, s.description,
                    s.total_amount, s.transaction_id, s.success_time, s.bank_type
             FROM sub_orders s JOIN orders o
               ON o.combine_mchid = s.combine_mchid AND o.combine_out_trade_no = s.combine_out_trade_no
             WHERE (s.combine_mchid = ? OR s.mchid = ?) AND s.success_time >= ? AND s.success_time < ?
             ORDER BY s.success_time, s.combine_out_trade_no, s.idx",
        )
        .bind(mchid.to_string())
        .bind(mchid.to_string())
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await
    }

    /// Refunds made in `[from, to)` that belong in `mchid`'s bill.
    pub async fn bill_refunds(
        &self,
        mchid: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<BillRefundRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT r.refund_id, r.out_refund_no, r.amount, r.created_at, o.combine_appid, o.openid, o.device_id,
                    s.mchid, s.out_trade_no, s.attach, s.description, s.transaction_id, s.bank_type
             FROM refunds r
             JOIN sub_orders s ON s.mchid = r.mchid AND s.out_trade_no = r.out_trade_no
             JOIN orders o ON o.combine_mchid = s.combine_mchid AND o.combine_out_trade_no = s.combine_out_trade_no
             WHERE (r.combine_mchid = ? OR r.mchid = ?) AND r.created_at >= ? AND r.created_at < ?
             ORDER BY r.created_at, r.refund_id",
        )
        .bind(mchid.to_string())
        .bind(mchid.to_string())
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await
    }

    pub async fn insert_bill_token(&self, t: &BillTokenRow) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO bill_tokens (token, mchid, created_at, used, gzip, content) VALUES (?, ?, ?, 0, ?, ?)")
            .bind(t.token.clone())
            .bind(t.mchid.clone())
            .bind(t.created_at)
            .bind(t.gzip)
            .bind(t.content.clone())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn bill_token(&self, token: &str) -> Result<Option<BillTokenRow>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM bill_tokens WHERE token = ?")
            .bind(token.to_string())
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn use_bill_token(&self, token: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE bill_tokens SET used = 1 WHERE token = ?")
            .bind(token.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- notifications --------------------------------------------------

    pub async fn due_notifications(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<NotificationRow>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM notifications WHERE status = 'pending' AND next_attempt_ms <= ? ORDER BY next_attempt_ms LIMIT ?")
            .bind(now_ms)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
    }

    pub async fn next_due_ms(&self) -> Result<Option<i64>, sqlx::Error> {
        let (v,): (Option<i64>,) = sqlx::query_as(
            "SELECT MIN(next_attempt_ms) FROM notifications WHERE status = 'pending'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(v)
    }

    /// Sets a notification's status, attempt count and next time.
    pub async fn update_notification(
        &self,
        id: &str,
        status: &str,
        attempts: i64,
        next_attempt_ms: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE notifications SET status = ?, attempts = ?, next_attempt_ms = ? WHERE id = ?",
        )
        .bind(status.to_string())
        .bind(attempts)
        .bind(next_attempt_ms)
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn record_attempt(&self, a: &NotificationAttempt) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO notification_attempts (notification_id, attempt, kind, at_ms, http_status, error, response_body, duration_ms, serial)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(a.notification_id.clone())
        .bind(a.attempt)
        .bind(a.kind.clone())
        .bind(a.at_ms)
        .bind(a.http_status)
        .bind(a.error.clone())
        .bind(a.response_body.clone())
        .bind(a.duration_ms)
        .bind(a.serial.clone())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn notifications(&self) -> Result<Vec<NotificationRow>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM notifications ORDER BY created_ms, id")
            .fetch_all(&self.pool)
            .await
    }

    pub async fn attempts(&self) -> Result<Vec<NotificationAttempt>, sqlx::Error> {
        sqlx::query_as(
            "SELECT notification_id, attempt, kind, at_ms, http_status, error, response_body, duration_ms, serial
             FROM notification_attempts ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await
    }

    // ---- OAuth ----------------------------------------------------------

    pub async fn insert_code(
        &self,
        code: &str,
        appid: &str,
        openid: &str,
        at: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO oauth_codes (code, appid, openid, created_at, used) VALUES (?, ?, ?, ?, 0)")
            .bind(code.to_string())
            .bind(appid.to_string())
            .bind(openid.to_string())
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks a code used and returns it as it was before.
    pub async fn take_code(&self, code: &str) -> Result<Option<OAuthCodeRow>, sqlx::Error> {
        let row: Option<OAuthCodeRow> = sqlx::query_as("SELECT * FROM oauth_codes WHERE code = ?")
            .bind(code.to_string())
            .fetch_optional(&self.pool)
            .await?;
        if row.is_some() {
            sqlx::query("UPDATE oauth_codes SET used = 1 WHERE code = ?")
                .bind(code.to_string())
                .execute(&self.pool)
                .await?;
        }
        Ok(row)
    }

    pub async fn remember_user(
        &self,
        appid: &str,
        openid: &str,
        name: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT OR IGNORE INTO users (appid, openid, name) VALUES (?, ?, ?)")
            .bind(appid.to_string())
            .bind(openid.to_string())
            .bind(name.to_string())
            .execute(&self.pool)
            .await?;
        self.remember_known_user(appid, openid);
        Ok(())
    }

    pub async fn user_exists(&self, appid: &str, openid: &str) -> Result<bool, sqlx::Error> {
        let key = (appid.to_string(), openid.to_string());
        if self.known_users.lock().is_ok_and(|u| u.contains(&key)) {
            return Ok(true);
        }
        let row: Option<(String,)> =
            sqlx::query_as("SELECT name FROM users WHERE appid = ? AND openid = ?")
                .bind(appid.to_string())
                .bind(openid.to_string())
                .fetch_optional(&self.pool)
                .await?;
        if row.is_some() {
            self.remember_known_user(appid, openid);
        }
        Ok(row.is_some())
    }

    fn remember_known_user(&self, appid: &str, openid: &str) {
        if let Ok(mut users) = self.known_users.lock() {
            users.insert((appid.to_string(), openid.to_string()));
        }
    }

    // ---- faults, meta, request log ------------------------------------

    pub async fn faults(&self) -> Result<Vec<(String, String)>, sqlx::Error> {
        sqlx::query_as("SELECT scope, json FROM faults")
            .fetch_all(&self.pool)
            .await
    }

    pub async fn save_fault(&self, scope: &str, json: Option<&str>) -> Result<(), sqlx::Error> {
        match json {
            Some(j) => sqlx::query("INSERT INTO faults (scope, json) VALUES (?, ?) ON CONFLICT(scope) DO UPDATE SET json = excluded.json")
                .bind(scope.to_string())
                .bind(j.to_string())
                .execute(&self.pool)
                .await
                .map(|_| ()),
            None => sqlx::query("DELETE FROM faults WHERE scope = ?")
                .bind(scope.to_string())
                .execute(&self.pool)
                .await
                .map(|_| ()),
        }
    }

    pub async fn meta(&self, key: &str) -> Result<Option<String>, sqlx::Error> {
        let row: Option<(String,)> = sqlx::query_as("SELECT value FROM meta WHERE key = ?")
            .bind(key.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.0))
    }

    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
            .bind(key.to_string())
            .bind(value.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Queues a request-log record (stored shortly after; see [`CallLog`]).
    pub fn log_call(&self, c: ApiCallRecord) {
        self.calls.record(c);
    }

    pub async fn calls(&self) -> Result<Vec<ApiCallRecord>, sqlx::Error> {
        self.calls.flush().await;
        sqlx::query_as(
            "SELECT at_ms, method, path, endpoint, mchid, combine_out_trade_no, status, code FROM api_calls ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await
    }

    pub async fn count_calls(&self, endpoint: &str, no: &str) -> Result<i64, sqlx::Error> {
        self.calls.flush().await;
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM api_calls WHERE endpoint = ? AND combine_out_trade_no = ?",
        )
        .bind(endpoint.to_string())
        .bind(no.to_string())
        .fetch_one(&self.pool)
        .await?;
        Ok(n)
    }

    pub async fn count_orders(&self) -> Result<(i64, i64), sqlx::Error> {
        sqlx::query_as("SELECT COUNT(*), COALESCE(SUM(CASE WHEN state = 'SUCCESS' THEN 1 ELSE 0 END), 0) FROM orders")
            .fetch_one(&self.pool)
            .await
    }
}

const INSERT_PREPAY: &str = "INSERT INTO prepays (prepay_id, combine_mchid, combine_out_trade_no, \
     created_at, expires_at) VALUES (?, ?, ?, ?, ?)";

async fn insert_prepay(tx: &mut sqlx::SqliteConnection, p: &PrepayRow) -> Result<(), sqlx::Error> {
    sqlx::query(INSERT_PREPAY)
        .bind(p.prepay_id.clone())
        .bind(p.combine_mchid.clone())
        .bind(p.combine_out_trade_no.clone())
        .bind(p.created_at)
        .bind(p.expires_at)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn insert_notification(
    tx: &mut sqlx::SqliteConnection,
    n: &NotificationRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO notifications (id, combine_mchid, combine_out_trade_no, notify_url, body, status, attempts, next_attempt_ms, created_ms)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(n.id.clone())
    .bind(n.combine_mchid.clone())
    .bind(n.combine_out_trade_no.clone())
    .bind(n.notify_url.clone())
    .bind(n.body.clone())
    .bind(n.status.clone())
    .bind(n.attempts)
    .bind(n.next_attempt_ms)
    .bind(n.created_ms)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
