//! The embedded SQLite backend (the default): one file, WAL journal,
//! `synchronous=FULL` so a commit is on disk before it is acknowledged.
//!
//! **Group commit.** One commit costs one fsync (~0.2 ms), which would cap
//! the store near 5,000 writes per second. `create_order`, `set_prepay` and
//! `apply_transition` therefore go to a writer thread that commits every
//! request queued meanwhile at once (`sqlite/group_commit.rs`). The
//! store's other writes use a single-connection sqlx pool, take the write
//! lock up front (`BEGIN IMMEDIATE`) and take turns with that thread
//! through an in-process lock, so writers in this process queue instead of
//! failing with `SQLITE_BUSY`; the busy timeout covers other processes on
//! the same file. Reads use a separate pool and, thanks to WAL, never wait
//! for writers; `get_order`, the hottest one, runs in place on plain
//! connections (`sqlite/order_reads.rs`).

use super::shared::{self, validate_new, EventRow};
use super::{OutboxEvent, OutboxStats, Store, StoreError};
use crate::combine::{ApplyOutcome, CombineOrder, OrderEvent, Transition};
use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::SqliteConnection;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

mod group_commit;
mod order_reads;

mod refund_ops {
    // The transaction already holds the database write lock (BEGIN IMMEDIATE).
    crate::store::refunds::refund_ops!(
        sqlx::SqliteConnection,
        "SELECT state FROM combine_orders WHERE combine_out_trade_no = $1"
    );
}

use group_commit::{Job, WriteDone, WriteOp};
use order_reads::OrderReaders;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// Whether a rusqlite error is a primary-key or unique-key violation (not
/// another constraint).
pub(crate) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

/// How long a connection waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a caller may queue for the (single) writer connection.
const WRITER_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(60);

/// Reader connections (WAL readers run in parallel with the writer).
const READERS: u32 = 4;

/// The most write requests one group commit takes.
pub const MAX_BATCH: usize = 256;

/// Write requests that may wait for the writer task before callers queue
/// on the channel itself.
const QUEUE_CAPACITY: usize = 4 * MAX_BATCH;

/// The SQLite order store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Held by the group-commit thread for each batch and by every other
    /// write (see [`SqliteStore::exclusive`]).
    write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// The temporary file of `sqlite::memory:`.
    scratch: Option<std::sync::Arc<Scratch>>,
    group: mpsc::Sender<Job>,
    orders: std::sync::Arc<OrderReaders>,
    events: crate::events::EventHub,
}

impl SqliteStore {
    /// Opens (creating if missing) the database named by `url` — `sqlite:PATH`,
    /// `sqlite://PATH` or a bare path — and migrates it. `sqlite::memory:`
    /// is a throwaway database: a temporary file, removed with the last
    /// handle (the group-commit writer needs a second connection to it).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let url = url.trim();
        if url.contains(":memory:") || url.contains("mode=memory") {
            let scratch = Scratch::new();
            let mut store = Self::open(&scratch.path).await?;
            store.scratch = Some(std::sync::Arc::new(scratch));
            return Ok(store);
        }
        let options = Self::options(url)?;
        if let Some(dir) = options.get_filename().parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                tracing::info!(dir = %dir.display(), "creating the database directory");
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Database(sqlx::Error::Io(std::io::Error::new(
                        e.kind(),
                        format!("creating {}: {e}", dir.display()),
                    )))
                })?;
            }
        }
        Self::connect_with(options).await
    }

    fn options(url: &str) -> Result<SqliteConnectOptions, StoreError> {
        Ok(
            if url.len() >= 7 && url[..7].eq_ignore_ascii_case("sqlite:") {
                SqliteConnectOptions::from_str(url)?
            } else {
                SqliteConnectOptions::new().filename(url)
            },
        )
    }

    /// What [`SqliteStore::connect`] would refuse, found without creating
    /// anything lasting (`serve --check`): the file must be a file, and its
    /// directory (or the nearest existing ancestor, when the directory is
    /// to be created) must take new files. Returns a note when the
    /// directory does not exist yet.
    pub fn check(url: &str) -> Result<Option<String>, StoreError> {
        let url = url.trim();
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Ok(None);
        }
        let options = Self::options(url)?;
        let file = options.get_filename();
        let io = |e: std::io::Error, what: String| {
            StoreError::Database(sqlx::Error::Io(std::io::Error::new(
                e.kind(),
                format!("{what}: {e}"),
            )))
        };
        let refuse = |what: String| {
            StoreError::Database(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                what,
            )))
        };
        if file.exists() {
            if !file.is_file() {
                return Err(refuse(format!("{} is not a file", file.display())));
            }
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(file)
                .map_err(|e| io(e, format!("opening {}", file.display())))?;
        }
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let existing = dir
            .ancestors()
            .find(|a| a.exists())
            .unwrap_or(Path::new("."));
        if !existing.is_dir() {
            return Err(refuse(format!("{} is not a directory", existing.display())));
        }
        // Whether it takes new files (the WAL and journal files, or the
        // directories to create): a probe file, removed at once.
        let probe = existing.join(format!(".wxpay-check-{}", std::process::id()));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
            .map_err(|e| io(e, format!("cannot create files in {}", existing.display())))?;
        let _ = std::fs::remove_file(&probe);
        Ok((existing != dir).then(|| format!("the directory {} will be created", dir.display())))
    }

    /// Opens the database at `path` (created if missing).
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::connect_with(SqliteConnectOptions::new().filename(path.as_ref())).await
    }

    async fn connect_with(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        let path = options.get_filename().to_path_buf();
        let options = options
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .synchronous(SqliteSynchronous::Full)
            // Savepoints keep a statement journal: in memory, not a temp file.
            .pragma("temp_store", "memory")
            .journal_mode(SqliteJournalMode::Wal);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(WRITER_ACQUIRE_TIMEOUT)
            .idle_timeout(Some(Duration::from_secs(600)))
            .max_lifetime(Some(Duration::from_secs(3600)))
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(options)
            .await?;
        let write_lock = std::sync::Arc::new(tokio::sync::Mutex::new(()));
        let (group, queue) = mpsc::channel(QUEUE_CAPACITY);
        let conn = group_commit::open(&path, BUSY_TIMEOUT)?;
        let lock = std::sync::Arc::clone(&write_lock);
        std::thread::Builder::new()
            .name("sqlite-group-commit".into())
            .spawn(move || group_commit::run(conn, queue, &lock))
            .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        Ok(Self {
            writer,
            reader,
            write_lock,
            group,
            orders: std::sync::Arc::new(OrderReaders::new(&path, BUSY_TIMEOUT)),
            events: crate::events::EventHub::new(),
            scratch: None,
        })
    }

    /// Hands `op` to the group-commit writer and waits for its commit.
    async fn write(&self, op: WriteOp) -> Result<WriteDone, StoreError> {
        let (reply, answer) = oneshot::channel();
        let gone = || StoreError::Database(sqlx::Error::WorkerCrashed);
        if self.group.send(Job { op, reply }).await.is_err() {
            return Err(gone());
        }
        answer.await.unwrap_or_else(|_| Err(gone()))
    }

    /// The connection for writes outside the group commit, with the lock the
    /// group-commit thread holds for each batch: the two writers take turns
    /// in this process instead of meeting `SQLITE_BUSY` and sleeping in
    /// SQLite's busy handler.
    async fn exclusive(&self) -> Result<Exclusive, StoreError> {
        let lock = std::sync::Arc::clone(&self.write_lock).lock_owned().await;
        let conn = self.writer.acquire().await?;
        Ok(Exclusive { conn, _lock: lock })
    }

    /// Closes both pools (checkpointing the WAL).
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

/// A writer connection held under the store's write lock.
struct Exclusive {
    conn: sqlx::pool::PoolConnection<sqlx::Sqlite>,
    _lock: tokio::sync::OwnedMutexGuard<()>,
}

impl std::ops::Deref for Exclusive {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for Exclusive {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }
}

/// The temporary file behind `sqlite::memory:`, removed (with its WAL and
/// shared-memory files) when the last store handle goes.
#[derive(Debug)]
struct Scratch {
    path: std::path::PathBuf,
}

impl Scratch {
    fn new() -> Self {
        let name = format!("wxpay-combine-{}.db", uuid::Uuid::new_v4().simple());
        Self {
            path: std::env::temp_dir().join(name),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

mod ops {
    crate::store::shared::sql_ops!(sqlx::sqlite::SqliteConnection);
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_order(&self, order: &CombineOrder) -> Result<(), StoreError> {
        validate_new(order)?;
        self.write(WriteOp::Create(Box::new(order.clone())))
            .await
            .map(|_| ())
    }

    async fn get_order(
        &self,
        combine_out_trade_no: &str,
    ) -> Result<Option<CombineOrder>, StoreError> {
        self.orders.get_order(combine_out_trade_no)
    }

    async fn set_prepay(
        &self,
        combine_out_trade_no: &str,
        prepay_id: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.write(WriteOp::SetPrepay {
            no: combine_out_trade_no.to_string(),
            prepay_id: prepay_id.to_string(),
            expires_at,
        })
        .await
        .map(|_| ())
    }

    async fn apply_transition(
        &self,
        combine_out_trade_no: &str,
        transition: &Transition,
        now: i64,
    ) -> Result<ApplyOutcome, StoreError> {
        let done = self
            .write(WriteOp::Apply {
                no: combine_out_trade_no.to_string(),
                transition: Box::new(transition.clone()),
                now,
            })
            .await?;
        match done {
            WriteDone::Outcome(outcome) => Ok(*outcome),
            WriteDone::Unit => Err(StoreError::Corrupt(
                "group commit answered a transition without an outcome".into(),
            )),
        }
    }

    async fn touch_notified(&self, combine_out_trade_no: &str, now: i64) -> Result<(), StoreError> {
        let r = sqlx::query(shared::UPDATE_NOTIFIED)
            .bind(combine_out_trade_no)
            .bind(now)
            .execute(&mut *self.exclusive().await?)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(combine_out_trade_no.to_string()));
        }
        Ok(())
    }

    async fn claim_open_orders(
        &self,
        created_before: i64,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<CombineOrder>, StoreError> {
        // One statement under the write lock: a claimed order's lease is
        // set before any other claimer can look at it.
        let mut conn = self.exclusive().await?;
        let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
        let claimed: Vec<(String,)> = sqlx::query_as(
            "UPDATE combine_orders SET lease_until = $3 WHERE combine_out_trade_no IN ( \
               SELECT combine_out_trade_no FROM combine_orders \
               WHERE state IN ('NOTPAY', 'USERPAYING') AND created_at <= $1 \
                 AND (lease_until IS NULL OR lease_until <= $2) \
               ORDER BY created_at, combine_out_trade_no LIMIT $4) \
             RETURNING combine_out_trade_no",
        )
        .bind(created_before)
        .bind(now)
        .bind(lease_until)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let orders = ops::load_claimed(&mut tx, &claimed).await?;
        tx.commit().await?;
        Ok(orders)
    }

    async fn set_lease(
        &self,
        combine_out_trade_no: &str,
        lease_until: i64,
    ) -> Result<(), StoreError> {
        let r = sqlx::query(shared::UPDATE_LEASE)
            .bind(combine_out_trade_no)
            .bind(lease_until)
            .execute(&mut *self.exclusive().await?)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(combine_out_trade_no.to_string()));
        }
        Ok(())
    }

    async fn events(&self, combine_out_trade_no: &str) -> Result<Vec<OrderEvent>, StoreError> {
        sqlx::query_as::<_, EventRow>(shared::SELECT_EVENTS)
            .bind(combine_out_trade_no)
            .fetch_all(&self.reader)
            .await?
            .into_iter()
            .map(shared::event)
            .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    // Intake:
    fn event_hub(&self) -> Option<&crate::events::EventHub> {
        Some(&self.events)
    }

    async fn record_idempotency_key(
        &self,
        record: &super::IdempotencyRecord,
    ) -> Result<super::IdempotencyRecord, StoreError> {
        sqlx::query(super::intake::INSERT_KEY)
            .bind(&record.key)
            .bind(&record.request_sha256)
            .bind(&record.combine_out_trade_no)
            .bind(record.created_at)
            .execute(&mut *self.exclusive().await?)
            .await
            .map_err(|e| super::intake::key_error(e, &record.combine_out_trade_no))?;
        let row: super::intake::KeyRow = sqlx::query_as(super::intake::SELECT_KEY)
            .bind(&record.key)
            .fetch_one(&mut *self.exclusive().await?)
            .await?;
        Ok(super::intake::key(row))
    }

    async fn idempotency_key(
        &self,
        key: &str,
    ) -> Result<Option<super::IdempotencyRecord>, StoreError> {
        let row: Option<super::intake::KeyRow> = sqlx::query_as(super::intake::SELECT_KEY)
            .bind(key)
            .fetch_optional(&mut *self.exclusive().await?)
            .await?;
        Ok(row.map(super::intake::key))
    }

    async fn consume_oauth_state(
        &self,
        state_sha256: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.exclusive().await?;
        sqlx::query(super::intake::DELETE_EXPIRED_STATES)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        let done = sqlx::query(super::intake::INSERT_STATE)
            .bind(state_sha256)
            .bind(expires_at)
            .execute(&mut *conn)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn create_pay_link(&self, link: &super::PayLink) -> Result<(), StoreError> {
        sqlx::query(super::intake::INSERT_LINK)
            .bind(&link.token_sha256)
            .bind(&link.combine_out_trade_no)
            .bind(&link.draft)
            .bind(link.status.as_str())
            .bind(&link.payer_openid)
            .bind(link.created_at)
            .bind(link.expires_at)
            .bind(link.claimed_at)
            .execute(&mut *self.exclusive().await?)
            .await
            .map_err(|e| {
                if shared::is_unique_violation(&e) {
                    StoreError::Duplicate(link.combine_out_trade_no.clone())
                } else {
                    e.into()
                }
            })?;
        Ok(())
    }

    async fn pay_link_for_order(
        &self,
        combine_out_trade_no: &str,
    ) -> Result<Option<super::PayLink>, StoreError> {
        let row: Option<super::intake::LinkRow> =
            sqlx::query_as(super::intake::SELECT_LINK_BY_ORDER)
                .bind(combine_out_trade_no)
                .fetch_optional(&self.reader)
                .await?;
        row.map(super::intake::link).transpose()
    }

    async fn claim_pay_link(
        &self,
        token_sha256: &str,
        openid: &str,
        now: i64,
    ) -> Result<super::ClaimOutcome, StoreError> {
        let updated = sqlx::query(super::intake::CLAIM_LINK)
            .bind(token_sha256)
            .bind(openid)
            .bind(now)
            .execute(&mut *self.exclusive().await?)
            .await?
            .rows_affected();
        let row: Option<super::intake::LinkRow> =
            sqlx::query_as(super::intake::SELECT_LINK_BY_TOKEN)
                .bind(token_sha256)
                .fetch_optional(&mut *self.exclusive().await?)
                .await?;
        let link = row.map(super::intake::link).transpose()?;
        Ok(match link {
            Some(l) if updated == 1 => super::ClaimOutcome::Claimed(l),
            other => super::intake::refused(other, openid, now),
        })
    }

    async fn close_pay_link(&self, combine_out_trade_no: &str) -> Result<bool, StoreError> {
        let r = sqlx::query(super::intake::CLOSE_LINK)
            .bind(combine_out_trade_no)
            .execute(&mut *self.exclusive().await?)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    // Outbox:
    async fn claim_outbox_events(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        // One statement under the write lock: the claim is set before any
        // other claimer can look at the event.
        let mut events: Vec<OutboxEvent> = sqlx::query_as(
            "UPDATE outbox_events SET lease_until = $2 WHERE id IN ( \
               SELECT e.id FROM outbox_events e \
               WHERE e.delivered_at IS NULL AND e.next_attempt_at <= $1 \
                 AND (e.lease_until IS NULL OR e.lease_until <= $1) \
                 AND NOT EXISTS (SELECT 1 FROM outbox_events p \
                   WHERE p.combine_out_trade_no = e.combine_out_trade_no \
                     AND p.delivered_at IS NULL AND p.seq < e.seq) \
               ORDER BY e.next_attempt_at, e.created_at, e.id LIMIT $3) \
             RETURNING id, combine_out_trade_no, seq, kind, payload, created_at, attempts, \
               next_attempt_at, delivered_at, last_error",
        )
        .bind(now)
        .bind(lease_until)
        .bind(limit)
        .fetch_all(&mut *self.exclusive().await?)
        .await?;
        events.sort_by(|a, b| {
            (a.next_attempt_at, a.created_at, &a.id).cmp(&(b.next_attempt_at, b.created_at, &b.id))
        });
        Ok(events)
    }

    async fn mark_outbox_delivered(&self, id: &str, now: i64) -> Result<(), StoreError> {
        outbox_update(
            sqlx::query(shared::MARK_OUTBOX_DELIVERED)
                .bind(id)
                .bind(now)
                .execute(&mut *self.exclusive().await?)
                .await?,
            id,
        )
    }

    async fn mark_outbox_failed(
        &self,
        id: &str,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        outbox_update(
            sqlx::query(shared::MARK_OUTBOX_FAILED)
                .bind(id)
                .bind(next_attempt_at)
                .bind(error)
                .execute(&mut *self.exclusive().await?)
                .await?,
            id,
        )
    }

    async fn pending_outbox_events(&self, limit: i64) -> Result<Vec<OutboxEvent>, StoreError> {
        Ok(sqlx::query_as(shared::PENDING_OUTBOX)
            .bind(limit)
            .fetch_all(&self.reader)
            .await?)
    }

    async fn get_outbox_event(&self, id: &str) -> Result<Option<OutboxEvent>, StoreError> {
        Ok(sqlx::query_as(shared::GET_OUTBOX)
            .bind(id)
            .fetch_optional(&self.reader)
            .await?)
    }

    async fn reschedule_outbox_event(&self, id: &str, at: i64) -> Result<(), StoreError> {
        outbox_update(
            sqlx::query(shared::RESCHEDULE_OUTBOX)
                .bind(id)
                .bind(at)
                .execute(&mut *self.exclusive().await?)
                .await?,
            id,
        )
    }

    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let (pending, oldest_created_at): (i64, Option<i64>) = sqlx::query_as(shared::OUTBOX_STATS)
            .fetch_one(&self.reader)
            .await?;
        Ok(OutboxStats {
            pending,
            oldest_created_at,
        })
    }

    // Bills:
    // Refunds:
    async fn create_refund(
        &self,
        new: &super::NewRefund,
        now: i64,
    ) -> Result<super::RefundCreated, super::RefundCreateError> {
        let mut conn = self.exclusive().await?;
        let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
        let created = refund_ops::create_refund(&mut tx, new, now).await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn get_refund(
        &self,
        out_refund_no: &str,
    ) -> Result<Option<super::RefundRecord>, StoreError> {
        refund_ops::get_refund(&mut *self.reader.acquire().await?, out_refund_no).await
    }

    async fn refunds_of_order(
        &self,
        combine_out_trade_no: &str,
    ) -> Result<Vec<super::RefundRecord>, StoreError> {
        refund_ops::refunds_of_order(&mut *self.reader.acquire().await?, combine_out_trade_no).await
    }

    async fn update_refund(
        &self,
        out_refund_no: &str,
        update: &super::RefundUpdate,
        now: i64,
    ) -> Result<super::RefundApplied, StoreError> {
        let mut conn = self.exclusive().await?;
        let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
        let current = refund_ops::get_refund(&mut tx, out_refund_no)
            .await?
            .ok_or_else(|| StoreError::NotFound(out_refund_no.to_string()))?;
        let applied = refund_ops::update_refund(&mut tx, current, update, now).await?;
        tx.commit().await?;
        super::refunds::announce(&self.events, &applied, update.source);
        Ok(applied)
    }

    async fn processing_refunds(
        &self,
        updated_before: i64,
        limit: i64,
    ) -> Result<Vec<super::RefundRecord>, StoreError> {
        refund_ops::processing_refunds(&mut *self.reader.acquire().await?, updated_before, limit)
            .await
    }

    async fn refunds_created_between(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Vec<super::RefundRecord>, StoreError> {
        refund_ops::refunds_created_between(&mut *self.reader.acquire().await?, from, to).await
    }

    async fn refund_events(
        &self,
        out_refund_no: &str,
    ) -> Result<Vec<super::RefundEvent>, StoreError> {
        refund_ops::refund_events(&mut *self.reader.acquire().await?, out_refund_no).await
    }

    async fn paid_sub_orders_between(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Vec<super::LocalSubOrder>, StoreError> {
        let (lo, hi) = shared::bill_window_dates(from, to);
        let rows = sqlx::query_as::<_, shared::BillSubRow>(shared::BILL_SUBS_BY_DAY)
            .bind(lo)
            .bind(hi)
            .fetch_all(&self.reader)
            .await?;
        shared::bill_subs_in_window(rows, from, to)
    }

    async fn bill_sub_order(
        &self,
        mchid: &str,
        out_trade_no: &str,
    ) -> Result<Option<super::LocalSubOrder>, StoreError> {
        sqlx::query_as::<_, shared::BillSubRow>(shared::BILL_SUB_BY_KEY)
            .bind(mchid)
            .bind(out_trade_no)
            .fetch_optional(&self.reader)
            .await?
            .map(shared::bill_sub)
            .transpose()
    }
}

// Outbox:
fn outbox_update(r: sqlx::sqlite::SqliteQueryResult, id: &str) -> Result<(), StoreError> {
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound(id.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::combine::TradeState;

    fn order(no: &str) -> CombineOrder {
        let mut o = shared::tests::order(TradeState::NotPay);
        o.combine_out_trade_no = no.into();
        o.sub_orders[0].out_trade_no = format!("{no}-1");
        o
    }

    #[tokio::test]
    async fn memory_database_is_a_temporary_file_removed_with_the_store() {
        let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
        let path = store.scratch.as_ref().unwrap().path.clone();
        store.create_order(&order("M1")).await.unwrap();
        assert!(store.get_order("M1").await.unwrap().is_some());
        assert!(path.exists());
        store.close().await;
        // The last handle removes the file as it goes.
        drop(store);
        assert!(!path.exists(), "{} left behind", path.display());
    }

    /// Group-committed writes and the other (sqlx) writes take turns
    /// through the write lock: under a mix of both nothing fails with
    /// `SQLITE_BUSY` and nothing is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_and_other_writes_take_turns() {
        let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
        let n = 300;
        let creates = (0..n).map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.create_order(&order(&format!("T{i:04}"))).await })
        });
        let creates: Vec<_> = creates.collect();
        let mut leases = Vec::new();
        for i in 0..n {
            let store = store.clone();
            leases.push(tokio::spawn(async move {
                // Another order's lease: a sqlx write beside the batches.
                let no = format!("T{:04}", i / 2);
                loop {
                    match store.set_lease(&no, 1).await {
                        Err(StoreError::NotFound(_)) => tokio::task::yield_now().await,
                        other => return other,
                    }
                }
            }));
        }
        for c in creates {
            c.await.unwrap().unwrap();
        }
        for l in leases {
            l.await.unwrap().unwrap();
        }
        for i in 0..n {
            let o = store.get_order(&format!("T{i:04}")).await.unwrap();
            assert!(o.is_some(), "T{i:04} missing");
        }
        store.close().await;
    }
}
