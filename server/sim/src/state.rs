//! The simulator's persistent state: `DIR/sim.db`, SQLite in WAL mode.
//!
//! Orders, prepay ids, notification deliveries (so pending ones resume after
//! a restart), OAuth codes, bill download tokens, faults and the request log.
//! Callers that read-modify-write hold `SimState::write_lock`, so plain
//! statements are enough; a payment is one transaction.
//!
//! One rusqlite connection behind a mutex, used in place on the calling
//! task's thread: the hot statements here are microseconds of SQLite, far
//! less than handing each to a database thread and waking the task again
//! (which, through sqlx, cost the simulator a sixth of its CPU under load
//! — see BENCHMARKS.md "Load"); only bill generation and the test API's
//! listings read many rows. The guard is never held across an `.await`.
//! Known users are remembered in memory, and the request log is written
//! behind the answers in batches ([`CallLog`]).

use super::error::SimError;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Whether a rusqlite error is a primary-key or unique-key violation (not
/// another constraint): a taken order or sub-order number.
fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

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

/// Columns added to `refunds` for the refund API; added to databases made
/// before it (SQLite has no `ADD COLUMN IF NOT EXISTS`, so a duplicate
/// column error is ignored). Refunds made through `/sim/control` are
/// SUCCESS at once.
const REFUND_COLUMNS: &[&str] = &[
    "status TEXT NOT NULL DEFAULT 'SUCCESS'",
    "success_time INTEGER",
    "notify_url TEXT",
    "reason TEXT",
    "funds_account TEXT",
    "outcome TEXT",
    "due_ms INTEGER",
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
#[derive(Debug, Clone)]
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
#[derive(Debug, Clone)]
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
#[derive(Debug, Clone)]
pub struct PrepayRow {
    pub prepay_id: String,
    pub combine_mchid: String,
    pub combine_out_trade_no: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A sub-order joined with its order, for bills.
#[derive(Debug, Clone)]
pub struct BillTradeRow {
    pub combine_appid: String,
    pub openid: String,
    pub device_id: Option<String>,
    pub mchid: String,
    pub out_trade_no: String,
    pub attach: String,
    pub description: String,
    pub total_amount: i64,
    /// What the payer paid; below `total_amount` when a coupon was used.
    pub payer_amount: Option<i64>,
    pub transaction_id: Option<String>,
    pub success_time: Option<i64>,
    pub bank_type: Option<String>,
}

/// A refund joined with its sub-order, for bills.
#[derive(Debug, Clone)]
pub struct BillRefundRow {
    pub refund_id: String,
    pub out_refund_no: String,
    pub amount: i64,
    pub created_at: i64,
    pub status: String,
    pub success_time: Option<i64>,
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

/// A refund with its sub-order's transaction and amount.
#[derive(Debug, Clone)]
pub struct RefundRow {
    pub refund_id: String,
    pub out_refund_no: String,
    pub combine_mchid: String,
    pub combine_out_trade_no: String,
    pub mchid: String,
    pub out_trade_no: String,
    pub amount: i64,
    pub created_at: i64,
    pub status: String,
    pub success_time: Option<i64>,
    pub notify_url: Option<String>,
    pub reason: Option<String>,
    pub funds_account: Option<String>,
    pub outcome: Option<String>,
    pub due_ms: Option<i64>,
    /// The sub-order's (joined).
    pub transaction_id: Option<String>,
    /// The sub-order's amount (joined).
    pub total_amount: i64,
}

/// The `SELECT … FROM` of [`RefundRow`]s.
const REFUND_SELECT: &str = "SELECT r.refund_id AS refund_id, r.out_refund_no AS out_refund_no,
        r.combine_mchid AS combine_mchid, r.combine_out_trade_no AS combine_out_trade_no,
        r.mchid AS mchid, r.out_trade_no AS out_trade_no, r.amount AS amount,
        r.created_at AS created_at, r.status AS status, r.success_time AS success_time,
        r.notify_url AS notify_url, r.reason AS reason, r.funds_account AS funds_account,
        r.outcome AS outcome, r.due_ms AS due_ms, s.transaction_id AS transaction_id,
        s.total_amount AS total_amount
    FROM refunds r JOIN sub_orders s ON s.mchid = r.mchid AND s.out_trade_no = r.out_trade_no";

/// A notification to deliver.
#[derive(Debug, Clone)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone)]
pub struct BillTokenRow {
    pub token: String,
    pub mchid: String,
    pub created_at: i64,
    pub used: i64,
    pub gzip: i64,
    pub content: Vec<u8>,
}

/// An OAuth code.
#[derive(Debug, Clone)]
pub struct OAuthCodeRow {
    pub appid: String,
    pub openid: String,
    pub created_at: i64,
    pub used: i64,
}

/// One logged APIv3 request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiCallRecord {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// HTTP method.
    pub method: String,
    /// Path and query as sent.
    pub path: String,
    /// `prepay`, `query`, `close`, `certificates`, `tradebill`,
    /// `billdownload`, `refund`, `refund_query` or `unknown`.
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

// ---- row mapping ------------------------------------------------------

/// `T::from_row` reads a row by column name into the struct's fields of
/// the same names, and `T::COLUMNS` lists those names for a `SELECT`.
macro_rules! row_type {
    ($t:ident { $($field:ident),* $(,)? }) => {
        impl $t {
            #[allow(dead_code)]
            const COLUMNS: &'static str = stringify!($($field),*);

            fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
                Ok(Self { $($field: r.get(stringify!($field))?),* })
            }
        }
    };
}

row_type!(OrderRow {
    combine_mchid,
    combine_out_trade_no,
    combine_appid,
    request_json,
    openid,
    notify_url,
    device_id,
    state,
    closed_reason,
    time_expire,
    created_at,
    paid_at,
});

row_type!(SubOrderRow {
    idx,
    mchid,
    out_trade_no,
    attach,
    description,
    total_amount,
    currency,
    trade_state,
    transaction_id,
    success_time,
    payer_amount,
    bank_type,
});

row_type!(PrepayRow {
    prepay_id,
    combine_mchid,
    combine_out_trade_no,
    created_at,
    expires_at,
});

row_type!(BillTradeRow {
    combine_appid,
    openid,
    device_id,
    mchid,
    out_trade_no,
    attach,
    description,
    total_amount,
    payer_amount,
    transaction_id,
    success_time,
    bank_type,
});

row_type!(BillRefundRow {
    refund_id,
    out_refund_no,
    amount,
    created_at,
    status,
    success_time,
    combine_appid,
    openid,
    device_id,
    mchid,
    out_trade_no,
    attach,
    description,
    transaction_id,
    bank_type,
});

row_type!(RefundRow {
    refund_id,
    out_refund_no,
    combine_mchid,
    combine_out_trade_no,
    mchid,
    out_trade_no,
    amount,
    created_at,
    status,
    success_time,
    notify_url,
    reason,
    funds_account,
    outcome,
    due_ms,
    transaction_id,
    total_amount,
});

row_type!(NotificationRow {
    id,
    combine_mchid,
    combine_out_trade_no,
    notify_url,
    body,
    status,
    attempts,
    next_attempt_ms,
    created_ms,
});

row_type!(NotificationAttempt {
    notification_id,
    attempt,
    kind,
    at_ms,
    http_status,
    error,
    response_body,
    duration_ms,
    serial,
});

row_type!(BillTokenRow {
    token,
    mchid,
    created_at,
    used,
    gzip,
    content,
});

row_type!(OAuthCodeRow {
    appid,
    openid,
    created_at,
    used,
});

row_type!(ApiCallRecord {
    at_ms,
    method,
    path,
    endpoint,
    mchid,
    combine_out_trade_no,
    status,
    code,
});

// ---- the database -----------------------------------------------------

/// The database.
#[derive(Debug, Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
    calls: CallLog,
    /// Users known to exist (rows are never deleted, so a hit stays true).
    known_users: Arc<Mutex<HashSet<(String, String)>>>,
}

/// The request log's writer: records queue in memory and a task inserts
/// whatever has queued in one transaction, so logging costs the answer
/// nothing but a channel send. Readers call [`CallLog::flush`] first,
/// which returns once every earlier record is stored.
#[derive(Debug, Clone)]
struct CallLog {
    queue: mpsc::UnboundedSender<CallLogMessage>,
}

#[derive(Debug)]
enum CallLogMessage {
    Record(ApiCallRecord),
    Flush(oneshot::Sender<()>),
}

/// The most records one log transaction takes.
const CALL_LOG_BATCH: usize = 512;

/// How long the log waits for more records after the first of a batch:
/// under load, one transaction per request cost ≈ 3 % of the simulator's
/// CPU. Nobody waits for the log except a flush, which ends the wait at
/// once.
const CALL_LOG_GATHER: Duration = Duration::from_millis(50);

impl CallLog {
    fn start(conn: Arc<Mutex<Connection>>) -> Self {
        let (queue, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = Vec::with_capacity(CALL_LOG_BATCH);
            while rx.recv_many(&mut messages, CALL_LOG_BATCH).await > 0 {
                let is_flush = |m: &CallLogMessage| matches!(m, CallLogMessage::Flush(_));
                let deadline = tokio::time::Instant::now() + CALL_LOG_GATHER;
                let mut flush_waiting = messages.iter().any(is_flush);
                while !flush_waiting && messages.len() < CALL_LOG_BATCH {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(m)) => {
                            flush_waiting = is_flush(&m);
                            messages.push(m);
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
                let mut records = Vec::new();
                let mut flushed = Vec::new();
                for m in messages.drain(..) {
                    match m {
                        CallLogMessage::Record(r) => records.push(r),
                        CallLogMessage::Flush(done) => flushed.push(done),
                    }
                }
                if let Err(e) = insert_calls(&mut lock(&conn), &records) {
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

/// Inserts `records` in one transaction.
fn insert_calls(conn: &mut Connection, records: &[ApiCallRecord]) -> rusqlite::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO api_calls (at_ms, method, path, endpoint, mchid, combine_out_trade_no, status, code)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )?;
        for c in records {
            insert.execute(params![
                c.at_ms,
                c.method,
                c.path,
                c.endpoint,
                c.mchid,
                c.combine_out_trade_no,
                c.status,
                c.code
            ])?;
        }
    }
    tx.commit()
}

/// The connection, even if a thread panicked while holding it: a panic
/// inside a transaction dropped (rolled back) that transaction on the way
/// out, so the connection itself is sound.
fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Db {
    /// Opens (creating) `path` in WAL mode and creates the schema.
    pub async fn open(path: &Path) -> Result<Self, SimError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        // NORMAL: the simulator's own state may lose its last transactions
        // on a power cut (never on a process crash); it is a test double.
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")?;
        for stmt in SCHEMA {
            conn.execute(stmt, [])?;
        }
        for col in REFUND_COLUMNS {
            match conn.execute(&format!("ALTER TABLE refunds ADD COLUMN {col}"), []) {
                Ok(_) => {}
                Err(rusqlite::Error::SqliteFailure(_, Some(m)))
                    if m.contains("duplicate column") => {}
                Err(e) => return Err(e.into()),
            }
        }
        conn.execute(
            "CREATE INDEX IF NOT EXISTS refunds_by_no ON refunds (mchid, out_refund_no)",
            [],
        )?;
        conn.set_prepared_statement_cache_capacity(32);
        let conn = Arc::new(Mutex::new(conn));
        Ok(Self {
            calls: CallLog::start(conn.clone()),
            conn,
            known_users: Arc::default(),
        })
    }

    /// Stores the queued request log.
    pub async fn close(&self) {
        self.calls.flush().await;
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        lock(&self.conn)
    }

    // ---- orders -------------------------------------------------------

    pub async fn order(&self, mchid: &str, no: &str) -> rusqlite::Result<Option<OrderRow>> {
        self.conn()
            .prepare_cached(&format!(
                "SELECT {} FROM orders WHERE combine_mchid = ? AND combine_out_trade_no = ?",
                OrderRow::COLUMNS
            ))?
            .query_row(params![mchid, no], OrderRow::from_row)
            .optional()
    }

    pub async fn sub_orders(&self, mchid: &str, no: &str) -> rusqlite::Result<Vec<SubOrderRow>> {
        self.conn()
            .prepare_cached(
                "SELECT idx, mchid, out_trade_no, attach, description, total_amount, currency, trade_state,
                        transaction_id, success_time, payer_amount, bank_type
                 FROM sub_orders WHERE combine_mchid = ? AND combine_out_trade_no = ? ORDER BY idx",
            )?
            .query_map(params![mchid, no], SubOrderRow::from_row)?
            .collect()
    }

    /// The combined order a sub-order number already belongs to, if any.
    pub async fn sub_order_owner(
        &self,
        mchid: &str,
        out_trade_no: &str,
    ) -> rusqlite::Result<Option<(String, String)>> {
        self.conn()
            .prepare_cached("SELECT combine_mchid, combine_out_trade_no FROM sub_orders WHERE mchid = ? AND out_trade_no = ?")?
            .query_row(params![mchid, out_trade_no], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
    }

    /// Inserts a new order with its sub-orders and first prepay id in one
    /// transaction, without a prior lookup. `Ok(false)`: the order number
    /// or a sub-order number is taken (nothing was written); the caller
    /// then works out which, under the write lock.
    pub async fn insert_new_order(
        &self,
        o: &OrderRow,
        subs: &[SubOrderRow],
        prepay: &PrepayRow,
    ) -> rusqlite::Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        match insert_order_rows(&tx, o, subs, prepay) {
            Ok(()) => tx.commit().map(|()| true),
            // Dropping `tx` rolls the partial insert back.
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn insert_prepay(&self, p: &PrepayRow) -> rusqlite::Result<()> {
        insert_prepay(&self.conn(), p)
    }

    pub async fn prepay(&self, prepay_id: &str) -> rusqlite::Result<Option<PrepayRow>> {
        self.conn()
            .prepare_cached(&format!(
                "SELECT {} FROM prepays WHERE prepay_id = ?",
                PrepayRow::COLUMNS
            ))?
            .query_row([prepay_id], PrepayRow::from_row)
            .optional()
    }

    pub async fn latest_prepay(
        &self,
        mchid: &str,
        no: &str,
    ) -> rusqlite::Result<Option<PrepayRow>> {
        self.conn()
            .prepare_cached(&format!(
                "SELECT {} FROM prepays WHERE combine_mchid = ? AND combine_out_trade_no = ?
                 ORDER BY created_at DESC, rowid DESC LIMIT 1",
                PrepayRow::COLUMNS
            ))?
            .query_row(params![mchid, no], PrepayRow::from_row)
            .optional()
    }

    /// Moves an order and all its sub-orders to `state`.
    pub async fn set_order_state(
        &self,
        mchid: &str,
        no: &str,
        state: &str,
        closed_reason: Option<&str>,
    ) -> rusqlite::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE orders SET state = ?, closed_reason = ? WHERE combine_mchid = ? AND combine_out_trade_no = ?",
            params![state, closed_reason, mchid, no],
        )?;
        tx.execute(
            "UPDATE sub_orders SET trade_state = ? WHERE combine_mchid = ? AND combine_out_trade_no = ?",
            params![state, mchid, no],
        )?;
        tx.commit()
    }

    /// Marks every sub-order paid and queues the notification, atomically.
    pub async fn pay(
        &self,
        mchid: &str,
        no: &str,
        paid_at: i64,
        subs: &[SubOrderRow],
        notification: &NotificationRow,
    ) -> rusqlite::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE orders SET state = 'SUCCESS', paid_at = ? WHERE combine_mchid = ? AND combine_out_trade_no = ?",
            params![paid_at, mchid, no],
        )?;
        {
            let mut update_sub = tx.prepare_cached(
                "UPDATE sub_orders SET trade_state = 'SUCCESS', transaction_id = ?, success_time = ?, payer_amount = ?,
                     bank_type = ?
                 WHERE combine_mchid = ? AND combine_out_trade_no = ? AND idx = ?",
            )?;
            for s in subs {
                update_sub.execute(params![
                    s.transaction_id,
                    s.success_time,
                    s.payer_amount,
                    s.bank_type,
                    mchid,
                    no,
                    s.idx
                ])?;
            }
        }
        insert_notification(&tx, notification)?;
        tx.commit()
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
    ) -> rusqlite::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (mchid, out_trade_no): (String, String) = tx.query_row(
            "SELECT mchid, out_trade_no FROM sub_orders WHERE combine_mchid = ? AND combine_out_trade_no = ? AND idx = ?",
            params![combine_mchid, no, idx],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        tx.execute(
            "INSERT INTO refunds (refund_id, out_refund_no, combine_mchid, combine_out_trade_no, mchid, out_trade_no,
                 amount, created_at, status, success_time)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'SUCCESS', ?8)",
            params![refund_id, out_refund_no, combine_mchid, no, mchid, out_trade_no, amount, at],
        )?;
        tx.execute(
            "UPDATE sub_orders SET trade_state = 'REFUND' WHERE combine_mchid = ? AND combine_out_trade_no = ? AND idx = ?",
            params![combine_mchid, no, idx],
        )?;
        tx.commit()
    }

    pub async fn refunded_amount(
        &self,
        combine_mchid: &str,
        no: &str,
        idx: i64,
    ) -> rusqlite::Result<i64> {
        let sum: Option<i64> = self.conn().query_row(
            "SELECT SUM(r.amount) FROM refunds r JOIN sub_orders s
               ON s.mchid = r.mchid AND s.out_trade_no = r.out_trade_no
             WHERE r.status <> 'CLOSED' AND s.combine_mchid = ? AND s.combine_out_trade_no = ? AND s.idx = ?",
            params![combine_mchid, no, idx],
            |r| r.get(0),
        )?;
        Ok(sum.unwrap_or(0))
    }

    /// The sub-order holding WeChat Pay transaction `transaction_id`, with
    /// its combined order's (combine_mchid, combine_out_trade_no).
    pub async fn sub_order_by_transaction(
        &self,
        transaction_id: &str,
    ) -> rusqlite::Result<Option<(String, String, SubOrderRow)>> {
        self.conn()
            .prepare_cached(
                "SELECT combine_mchid, combine_out_trade_no, idx, mchid, out_trade_no, attach, description,
                        total_amount, currency, trade_state, transaction_id, success_time, payer_amount, bank_type
                 FROM sub_orders WHERE transaction_id = ?",
            )?
            .query_row([transaction_id], |r| {
                Ok((r.get(0)?, r.get(1)?, SubOrderRow::from_row(r)?))
            })
            .optional()
    }

    /// Sub-order `out_trade_no` of merchant `mchid`, with its combined
    /// order's (combine_mchid, combine_out_trade_no).
    pub async fn sub_order_by_number(
        &self,
        mchid: &str,
        out_trade_no: &str,
    ) -> rusqlite::Result<Option<(String, String, SubOrderRow)>> {
        self.conn()
            .prepare_cached(
                "SELECT combine_mchid, combine_out_trade_no, idx, mchid, out_trade_no, attach, description,
                        total_amount, currency, trade_state, transaction_id, success_time, payer_amount, bank_type
                 FROM sub_orders WHERE mchid = ? AND out_trade_no = ?",
            )?
            .query_row(params![mchid, out_trade_no], |r| {
                Ok((r.get(0)?, r.get(1)?, SubOrderRow::from_row(r)?))
            })
            .optional()
    }

    /// Merchant `mchid`'s refund `out_refund_no`.
    pub async fn refund_by_no(
        &self,
        mchid: &str,
        out_refund_no: &str,
    ) -> rusqlite::Result<Option<RefundRow>> {
        self.conn()
            .prepare_cached(&format!(
                "{REFUND_SELECT} WHERE r.mchid = ? AND r.out_refund_no = ?"
            ))?
            .query_row(params![mchid, out_refund_no], RefundRow::from_row)
            .optional()
    }

    /// The refunds of one sub-order: (amount, status).
    pub async fn refunds_of_sub_order(
        &self,
        mchid: &str,
        out_trade_no: &str,
    ) -> rusqlite::Result<Vec<(i64, String)>> {
        self.conn()
            .prepare_cached(
                "SELECT amount, status FROM refunds WHERE mchid = ? AND out_trade_no = ?",
            )?
            .query_map(params![mchid, out_trade_no], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
    }

    /// Records a refund accepted by the refund API and marks its sub-order
    /// `REFUND`, atomically.
    pub async fn insert_refund(&self, r: &RefundRow) -> rusqlite::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO refunds (refund_id, out_refund_no, combine_mchid, combine_out_trade_no, mchid, out_trade_no,
                 amount, created_at, status, success_time, notify_url, reason, funds_account, outcome, due_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            params![
                r.refund_id,
                r.out_refund_no,
                r.combine_mchid,
                r.combine_out_trade_no,
                r.mchid,
                r.out_trade_no,
                r.amount,
                r.created_at,
                r.status,
                r.success_time,
                r.notify_url,
                r.reason,
                r.funds_account,
                r.outcome,
                r.due_ms
            ],
        )?;
        tx.execute(
            "UPDATE sub_orders SET trade_state = 'REFUND' WHERE mchid = ? AND out_trade_no = ?",
            params![r.mchid, r.out_trade_no],
        )?;
        tx.commit()
    }

    /// Refunds still PROCESSING whose outcome is due by `now_ms`.
    pub async fn due_refunds(&self, now_ms: i64) -> rusqlite::Result<Vec<RefundRow>> {
        self.conn()
            .prepare_cached(&format!(
                "{REFUND_SELECT} WHERE r.status = 'PROCESSING' AND r.due_ms IS NOT NULL AND r.due_ms <= ?
                 ORDER BY r.due_ms LIMIT 64"
            ))?
            .query_map([now_ms], RefundRow::from_row)?
            .collect()
    }

    /// Moves a PROCESSING refund to its final status and queues its
    /// notification, atomically; `false` if it was no longer PROCESSING.
    pub async fn finish_refund(
        &self,
        refund_id: &str,
        status: &str,
        success_time: Option<i64>,
        notification: Option<&NotificationRow>,
    ) -> rusqlite::Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = tx.execute(
            "UPDATE refunds SET status = ?, success_time = ? WHERE refund_id = ? AND status = 'PROCESSING'",
            params![status, success_time, refund_id],
        )?;
        if changed == 0 {
            return Ok(false);
        }
        if let Some(n) = notification {
            insert_notification(&tx, n)?;
        }
        tx.commit().map(|()| true)
    }

    // ---- bills --------------------------------------------------------

    /// Sub-orders paid in `[from, to)` that belong in `mchid`'s bill.
    pub async fn bill_trades(
        &self,
        mchid: &str,
        from: i64,
        to: i64,
    ) -> rusqlite::Result<Vec<BillTradeRow>> {
        self.conn()
            .prepare_cached(
                "SELECT o.combine_appid, o.openid, o.device_id, s.mchid, s.out_trade_no, s.attach, s.description,
                        s.total_amount, s.payer_amount, s.transaction_id, s.success_time, s.bank_type
                 FROM sub_orders s JOIN orders o
                   ON o.combine_mchid = s.combine_mchid AND o.combine_out_trade_no = s.combine_out_trade_no
                 WHERE s.mchid = ?1 AND s.success_time >= ?2 AND s.success_time < ?3
                 ORDER BY s.success_time, s.combine_out_trade_no, s.idx",
            )?
            .query_map(params![mchid, from, to], BillTradeRow::from_row)?
            .collect()
    }

    /// Refunds made in `[from, to)` that belong in `mchid`'s bill.
    pub async fn bill_refunds(
        &self,
        mchid: &str,
        from: i64,
        to: i64,
    ) -> rusqlite::Result<Vec<BillRefundRow>> {
        self.conn()
            .prepare_cached(
                "SELECT r.refund_id, r.out_refund_no, r.amount, r.created_at, r.status, r.success_time, o.combine_appid, o.openid, o.device_id,
                        s.mchid, s.out_trade_no, s.attach, s.description, s.transaction_id, s.bank_type
                 FROM refunds r
                 JOIN sub_orders s ON s.mchid = r.mchid AND s.out_trade_no = r.out_trade_no
                 JOIN orders o ON o.combine_mchid = s.combine_mchid AND o.combine_out_trade_no = s.combine_out_trade_no
                 WHERE r.mchid = ?1 AND r.created_at >= ?2 AND r.created_at < ?3
                 ORDER BY r.created_at, r.refund_id",
            )?
            .query_map(params![mchid, from, to], BillRefundRow::from_row)?
            .collect()
    }

    pub async fn insert_bill_token(&self, t: &BillTokenRow) -> rusqlite::Result<()> {
        self.conn().execute(
            "INSERT INTO bill_tokens (token, mchid, created_at, used, gzip, content) VALUES (?, ?, ?, 0, ?, ?)",
            params![t.token, t.mchid, t.created_at, t.gzip, t.content],
        )?;
        Ok(())
    }

    pub async fn bill_token(&self, token: &str) -> rusqlite::Result<Option<BillTokenRow>> {
        self.conn()
            .query_row(
                "SELECT token, mchid, created_at, used, gzip, content FROM bill_tokens WHERE token = ?",
                [token],
                BillTokenRow::from_row,
            )
            .optional()
    }

    pub async fn use_bill_token(&self, token: &str) -> rusqlite::Result<()> {
        self.conn()
            .execute("UPDATE bill_tokens SET used = 1 WHERE token = ?", [token])?;
        Ok(())
    }

    // ---- notifications --------------------------------------------------

    pub async fn due_notifications(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> rusqlite::Result<Vec<NotificationRow>> {
        self.conn()
            .prepare_cached(&format!(
                "SELECT {} FROM notifications
                 WHERE status = 'pending' AND next_attempt_ms <= ? ORDER BY next_attempt_ms LIMIT ?",
        NotificationRow::COLUMNS
    ))?
            .query_map(params![now_ms, limit], NotificationRow::from_row)?
            .collect()
    }

    pub async fn next_due_ms(&self) -> rusqlite::Result<Option<i64>> {
        self.conn().query_row(
            "SELECT MIN(next_attempt_ms) FROM notifications WHERE status = 'pending'",
            [],
            |r| r.get(0),
        )
    }

    /// Sets a notification's status, attempt count and next time.
    pub async fn update_notification(
        &self,
        id: &str,
        status: &str,
        attempts: i64,
        next_attempt_ms: i64,
    ) -> rusqlite::Result<()> {
        self.conn()
            .prepare_cached("UPDATE notifications SET status = ?, attempts = ?, next_attempt_ms = ? WHERE id = ?")?
            .execute(params![status, attempts, next_attempt_ms, id])?;
        Ok(())
    }

    pub async fn record_attempt(&self, a: &NotificationAttempt) -> rusqlite::Result<()> {
        self.conn()
            .prepare_cached(
                "INSERT INTO notification_attempts (notification_id, attempt, kind, at_ms, http_status, error,
                     response_body, duration_ms, serial)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )?
            .execute(params![
                a.notification_id,
                a.attempt,
                a.kind,
                a.at_ms,
                a.http_status,
                a.error,
                a.response_body,
                a.duration_ms,
                a.serial
            ])?;
        Ok(())
    }

    pub async fn notifications(&self) -> rusqlite::Result<Vec<NotificationRow>> {
        self.conn()
            .prepare(&format!(
                "SELECT {} FROM notifications ORDER BY created_ms, id",
                NotificationRow::COLUMNS
            ))?
            .query_map([], NotificationRow::from_row)?
            .collect()
    }

    pub async fn attempts(&self) -> rusqlite::Result<Vec<NotificationAttempt>> {
        self.conn()
            .prepare(
                "SELECT notification_id, attempt, kind, at_ms, http_status, error, response_body, duration_ms, serial
                 FROM notification_attempts ORDER BY seq",
            )?
            .query_map([], NotificationAttempt::from_row)?
            .collect()
    }

    // ---- OAuth ----------------------------------------------------------

    pub async fn insert_code(
        &self,
        code: &str,
        appid: &str,
        openid: &str,
        at: i64,
    ) -> rusqlite::Result<()> {
        self.conn().execute(
            "INSERT INTO oauth_codes (code, appid, openid, created_at, used) VALUES (?, ?, ?, ?, 0)",
            params![code, appid, openid, at],
        )?;
        Ok(())
    }

    /// Marks a code used and returns it as it was before.
    pub async fn take_code(&self, code: &str) -> rusqlite::Result<Option<OAuthCodeRow>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row = tx
            .query_row(
                "SELECT appid, openid, created_at, used FROM oauth_codes WHERE code = ?",
                [code],
                OAuthCodeRow::from_row,
            )
            .optional()?;
        if row.is_some() {
            tx.execute("UPDATE oauth_codes SET used = 1 WHERE code = ?", [code])?;
        }
        tx.commit()?;
        Ok(row)
    }

    pub async fn remember_user(
        &self,
        appid: &str,
        openid: &str,
        name: &str,
    ) -> rusqlite::Result<()> {
        self.conn().execute(
            "INSERT OR IGNORE INTO users (appid, openid, name) VALUES (?, ?, ?)",
            params![appid, openid, name],
        )?;
        self.remember_known_user(appid, openid);
        Ok(())
    }

    pub async fn user_exists(&self, appid: &str, openid: &str) -> rusqlite::Result<bool> {
        let key = (appid.to_string(), openid.to_string());
        if self.known_users.lock().is_ok_and(|u| u.contains(&key)) {
            return Ok(true);
        }
        let found = self
            .conn()
            .prepare_cached("SELECT 1 FROM users WHERE appid = ? AND openid = ?")?
            .exists(params![appid, openid])?;
        if found {
            self.remember_known_user(appid, openid);
        }
        Ok(found)
    }

    fn remember_known_user(&self, appid: &str, openid: &str) {
        if let Ok(mut users) = self.known_users.lock() {
            users.insert((appid.to_string(), openid.to_string()));
        }
    }

    // ---- faults, meta, request log ------------------------------------

    pub async fn faults(&self) -> rusqlite::Result<Vec<(String, String)>> {
        self.conn()
            .prepare("SELECT scope, json FROM faults")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
    }

    pub async fn save_fault(&self, scope: &str, json: Option<&str>) -> rusqlite::Result<()> {
        let conn = self.conn();
        match json {
            Some(j) => conn.execute(
                "INSERT INTO faults (scope, json) VALUES (?, ?) ON CONFLICT(scope) DO UPDATE SET json = excluded.json",
                params![scope, j],
            ),
            None => conn.execute("DELETE FROM faults WHERE scope = ?", [scope]),
        }
        .map(|_| ())
    }

    pub async fn meta(&self, key: &str) -> rusqlite::Result<Option<String>> {
        self.conn()
            .query_row("SELECT value FROM meta WHERE key = ?", [key], |r| r.get(0))
            .optional()
    }

    pub async fn set_meta(&self, key: &str, value: &str) -> rusqlite::Result<()> {
        self.conn().execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// Queues a request-log record (stored shortly after; see [`CallLog`]).
    pub fn log_call(&self, c: ApiCallRecord) {
        self.calls.record(c);
    }

    pub async fn calls(&self) -> rusqlite::Result<Vec<ApiCallRecord>> {
        self.calls.flush().await;
        self.conn()
            .prepare(
                "SELECT at_ms, method, path, endpoint, mchid, combine_out_trade_no, status, code
                 FROM api_calls ORDER BY seq",
            )?
            .query_map([], ApiCallRecord::from_row)?
            .collect()
    }

    pub async fn count_calls(&self, endpoint: &str, no: &str) -> rusqlite::Result<i64> {
        self.calls.flush().await;
        self.conn().query_row(
            "SELECT COUNT(*) FROM api_calls WHERE endpoint = ? AND combine_out_trade_no = ?",
            params![endpoint, no],
            |r| r.get(0),
        )
    }

    pub async fn count_orders(&self) -> rusqlite::Result<(i64, i64)> {
        self.conn().query_row(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN state = 'SUCCESS' THEN 1 ELSE 0 END), 0) FROM orders",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }
}

/// A new order's rows: the order, its sub-orders and its first prepay id.
fn insert_order_rows(
    conn: &Connection,
    o: &OrderRow,
    subs: &[SubOrderRow],
    prepay: &PrepayRow,
) -> rusqlite::Result<()> {
    let mut insert_order = conn.prepare_cached(
        "INSERT INTO orders (combine_mchid, combine_out_trade_no, combine_appid, request_json, openid,
             notify_url, device_id, state, closed_reason, time_expire, created_at, paid_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, NULL)",
    )?;
    insert_order.execute(params![
        o.combine_mchid,
        o.combine_out_trade_no,
        o.combine_appid,
        o.request_json,
        o.openid,
        o.notify_url,
        o.device_id,
        o.state,
        o.time_expire,
        o.created_at
    ])?;
    let mut insert_sub = conn.prepare_cached(
        "INSERT INTO sub_orders (combine_mchid, combine_out_trade_no, idx, mchid, out_trade_no, attach,
             description, total_amount, currency, trade_state)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?;
    for s in subs {
        insert_sub.execute(params![
            o.combine_mchid,
            o.combine_out_trade_no,
            s.idx,
            s.mchid,
            s.out_trade_no,
            s.attach,
            s.description,
            s.total_amount,
            s.currency,
            s.trade_state
        ])?;
    }
    insert_prepay(conn, prepay)
}

fn insert_prepay(conn: &Connection, p: &PrepayRow) -> rusqlite::Result<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO prepays ({}) VALUES (?, ?, ?, ?, ?)",
        PrepayRow::COLUMNS
    ))?
    .execute(params![
        p.prepay_id,
        p.combine_mchid,
        p.combine_out_trade_no,
        p.created_at,
        p.expires_at
    ])?;
    Ok(())
}

fn insert_notification(conn: &Connection, n: &NotificationRow) -> rusqlite::Result<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO notifications ({}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        NotificationRow::COLUMNS
    ))?
    .execute(params![
        n.id,
        n.combine_mchid,
        n.combine_out_trade_no,
        n.notify_url,
        n.body,
        n.status,
        n.attempts,
        n.next_attempt_ms,
        n.created_ms
    ])?;
    Ok(())
}
