//! The embedded SQLite backend (the default): one file, WAL journal,
//! `synchronous=FULL` so a commit is on disk before it is acknowledged.
//!
//! Writes go through a single-connection pool and take the write lock up
//! front (`BEGIN IMMEDIATE`), so concurrent writers in this process queue
//! instead of failing with `SQLITE_BUSY`; the busy timeout covers other
//! processes on the same file. Reads use a separate pool and, thanks to WAL,
//! never wait for writers.
//!
//! **Group commit.** One commit costs one fsync (~0.2 ms), which would cap
//! the store near 5,000 writes per second. `create_order`, `set_prepay` and
//! `apply_transition` therefore go through a writer task: it takes every
//! request queued meanwhile (at most [`MAX_BATCH`]), runs them in one
//! `BEGIN IMMEDIATE` transaction, each inside its own `SAVEPOINT` (a request
//! that fails is rolled back alone), commits once, and only then answers each
//! caller. Durability is unchanged: `synchronous=FULL`, and nobody hears
//! "done" before the `COMMIT` covering their change returned. When the
//! `COMMIT` fails, every request of the batch gets the error.

use super::shared::{self, validate_new, Decision, EventRow};
use super::{OutboxEvent, OutboxStats, Store, StoreError};
use crate::combine::{ApplyOutcome, CombineOrder, OrderEvent, Transition};
use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{FromRow as _, Row as _, SqliteConnection};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

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
    group: mpsc::Sender<Job>,
    events: crate::events::EventHub,
}

/// A write the group-commit task runs inside its own savepoint.
#[derive(Debug)]
enum WriteOp {
    Create(Box<CombineOrder>),
    SetPrepay {
        no: String,
        prepay_id: String,
        expires_at: i64,
    },
    Apply {
        no: String,
        transition: Box<Transition>,
        now: i64,
    },
}

/// What a write returns.
#[derive(Debug)]
enum WriteDone {
    Unit,
    Outcome(Box<ApplyOutcome>),
}

/// A queued write and where its answer goes.
#[derive(Debug)]
struct Job {
    op: WriteOp,
    reply: oneshot::Sender<Result<WriteDone, StoreError>>,
}

/// The group-commit writer: runs on its own thread until every store
/// handle is dropped.
async fn group_commit_task(pool: SqlitePool, mut queue: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        // A caller that went away (cancelled request) gets nothing done,
        // as if its own transaction had never started.
        jobs.retain(|j| !j.reply.is_closed());
        if !jobs.is_empty() {
            commit_batch(&pool, std::mem::take(&mut jobs)).await;
        }
    }
}

/// Runs `jobs` in one transaction and answers each after the commit.
async fn commit_batch(pool: &SqlitePool, jobs: Vec<Job>) {
    let started = std::time::Instant::now();
    let result = run_batch(pool, &jobs).await;
    tracing::trace!(
        requests = jobs.len(),
        micros = started.elapsed().as_micros() as u64,
        ok = result.is_ok(),
        "group commit"
    );
    match result {
        Ok(results) => {
            for (job, result) in jobs.into_iter().zip(results) {
                let _ = job.reply.send(result);
            }
        }
        Err(e) => {
            // Nothing of the batch is known to be on disk: everyone fails.
            let message = format!("group commit failed: {e}");
            let mut first = Some(e);
            for job in jobs {
                let err = match first.take() {
                    Some(e) => StoreError::Database(e),
                    None => StoreError::Database(sqlx::Error::Io(std::io::Error::other(
                        message.clone(),
                    ))),
                };
                let _ = job.reply.send(Err(err));
            }
        }
    }
}

/// One transaction for all of `jobs`, each in a savepoint. The outer error
/// is a failure of the transaction itself (BEGIN, savepoint bookkeeping,
/// COMMIT); a job's own failure is in its slot and its changes are undone.
async fn run_batch(
    pool: &SqlitePool,
    jobs: &[Job],
) -> Result<Vec<Result<WriteDone, StoreError>>, sqlx::Error> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs {
        results.push(match &job.op {
            WriteOp::Create(order) => create_job(&mut tx, order).await?,
            WriteOp::SetPrepay {
                no,
                prepay_id,
                expires_at,
            } => set_prepay_job(&mut tx, no, prepay_id, *expires_at).await,
            WriteOp::Apply {
                no,
                transition,
                now,
            } => apply_job(&mut tx, no, transition, *now).await?,
        });
    }
    tx.commit().await?;
    Ok(results)
}

/// The savepoint around one job's multi-statement script.
const JOB_SAVEPOINT: &str = "group_commit_job";

/// Runs `sql` (statements between `SAVEPOINT` and `RELEASE` of
/// [`JOB_SAVEPOINT`]) in one round trip. When it stops on an error, the
/// job's changes are taken back and the error is the job's alone; the outer
/// error means the transaction itself is in an unknown state (the whole
/// batch then fails).
async fn run_script<'q>(
    conn: &mut SqliteConnection,
    script: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
) -> Result<Result<(), sqlx::Error>, sqlx::Error> {
    match script.execute(&mut *conn).await {
        Ok(_) => Ok(Ok(())),
        Err(e) => {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "ROLLBACK TO {JOB_SAVEPOINT}; RELEASE {JOB_SAVEPOINT}"
            )))
            .execute(&mut *conn)
            .await?;
            Ok(Err(e))
        }
    }
}

/// `create_order` inside the group transaction: the order, its sub-orders
/// and the `create` event as one script in its own savepoint.
async fn create_job(
    conn: &mut SqliteConnection,
    order: &CombineOrder,
) -> Result<Result<WriteDone, StoreError>, sqlx::Error> {
    let mut sql = format!("SAVEPOINT {JOB_SAVEPOINT};\n{}", shared::INSERT_ORDER);
    let mut args = 11;
    for _ in &order.sub_orders {
        sql.push_str(";\n");
        sql.push_str(&shift_placeholders(shared::INSERT_SUB, args));
        args += 11;
    }
    sql.push_str(";\n");
    sql.push_str(&shift_placeholders(shared::INSERT_EVENT, args));
    sql.push_str(&format!(";\nRELEASE {JOB_SAVEPOINT}"));
    let no = &order.combine_out_trade_no;
    let mut q = shared::bind_order!(sqlx::query(sqlx::AssertSqlSafe(sql)), order);
    for (i, s) in order.sub_orders.iter().enumerate() {
        q = shared::bind_sub!(q, order, i, s);
    }
    q = shared::bind_create_event!(q, order);
    let err = match run_script(conn, q).await? {
        Ok(()) => return Ok(Ok(WriteDone::Unit)),
        Err(e) if shared::is_unique_violation(&e) => e,
        Err(e) => return Ok(Err(e.into())),
    };
    // Taken: the order number, or a sub-order's (mchid, out_trade_no).
    if !err.to_string().contains("sub_orders") {
        return Ok(Err(StoreError::Duplicate(no.clone())));
    }
    for s in &order.sub_orders {
        let taken: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM sub_orders WHERE mchid = $1 AND out_trade_no = $2")
                .bind(&s.mchid)
                .bind(&s.out_trade_no)
                .fetch_optional(&mut *conn)
                .await?;
        if taken.is_some() {
            return Ok(Err(StoreError::Duplicate(format!(
                "{}/{}",
                s.mchid, s.out_trade_no
            ))));
        }
    }
    Ok(Err(err.into()))
}

/// `set_prepay` inside the group transaction: one statement, atomic on its
/// own, so it needs no savepoint.
async fn set_prepay_job(
    conn: &mut SqliteConnection,
    no: &str,
    prepay_id: &str,
    expires_at: i64,
) -> Result<WriteDone, StoreError> {
    let r = sqlx::query(shared::UPDATE_PREPAY)
        .bind(no)
        .bind(prepay_id)
        .bind(expires_at)
        .execute(&mut *conn)
        .await?;
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound(no.to_string()));
    }
    Ok(WriteDone::Unit)
}

/// `sql` with every `$N` placeholder renumbered to `$(N + offset)`, so that
/// several statements can share one argument list.
fn shift_placeholders(sql: &str, offset: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut rest = sql;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..=i]);
        rest = &rest[i + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if let Ok(n) = rest[..digits].parse::<usize>() {
            out.push_str(&(n + offset).to_string());
        } else {
            out.push_str(&rest[..digits]);
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

/// The rows of a read script, told apart by a column only their statement
/// has: an order row, its sub-orders, a notification id's record, and a
/// one-column number (the next outbox sequence).
#[derive(Default)]
struct ScriptRows {
    order: Option<shared::OrderRow>,
    subs: Vec<shared::SubRow>,
    prior: Option<shared::PriorNotification>,
    next_seq: Option<i64>,
}

impl ScriptRows {
    fn split(rows: &[sqlx::sqlite::SqliteRow]) -> Result<Self, StoreError> {
        let has = |row: &sqlx::sqlite::SqliteRow, column: &str| row.try_column(column).is_ok();
        let mut read = Self::default();
        for row in rows {
            if has(row, "combine_appid") {
                read.order = Some(shared::OrderRow::from_row(row)?);
            } else if has(row, "description") {
                read.subs.push(shared::SubRow::from_row(row)?);
            } else if has(row, "body_sha256") {
                read.prior = Some(shared::PriorNotification::from_row(row)?);
            } else if row.columns().len() == 1 {
                read.next_seq = Some(row.try_get::<i64, _>(0)?);
            } else {
                return Err(StoreError::Corrupt(
                    "unexpected row in a read script".into(),
                ));
            }
        }
        Ok(read)
    }
}

/// [`Store::get_order`] as one script: the order row and its sub-orders
/// from one snapshot, in one round trip to a reader's worker thread.
fn get_order_script() -> &'static str {
    static SCRIPT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| {
        format!(
            "BEGIN;\n{};\n{};\nCOMMIT",
            shared::SELECT_ORDER,
            shared::SELECT_SUBS
        )
    })
}

/// The reads of [`apply_job`] as one script (`$1` the order number, `$2`
/// the notification id or NULL).
fn read_script() -> &'static str {
    static SCRIPT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| {
        format!(
            "{};\n{};\n{};\n{}",
            shared::SELECT_ORDER,
            shared::SELECT_SUBS,
            shift_placeholders(shared::SELECT_NOTIFICATION, 1),
            shared::NEXT_OUTBOX_SEQ
        )
    })
}

/// `apply_transition` inside the group transaction, in few round trips to
/// SQLite's worker thread (each costs two thread switches, and the writer
/// is the one serial step under load): the order and the notification id
/// are read, [`shared::decide`] judges, and the writes of an applied
/// transition — the same rows `apply_locked` writes for PostgreSQL: order,
/// changed sub-orders, event, outbox event, notification id — go as one
/// multi-statement script wrapped in its own savepoint, so a failure takes
/// back exactly this transition. The outer error means the transaction
/// itself is in an unknown state (the whole batch then fails).
async fn apply_job(
    conn: &mut SqliteConnection,
    no: &str,
    t: &Transition,
    now: i64,
) -> Result<Result<WriteDone, StoreError>, sqlx::Error> {
    // One read script, one round trip: the order row, its sub-orders, the
    // notification id's record and the next outbox sequence number.
    let decided = async {
        let rows = sqlx::query(sqlx::AssertSqlSafe(read_script()))
            .bind(no)
            .bind(t.notification.as_ref().map(|n| n.id.as_str()))
            .fetch_all(&mut *conn)
            .await?;
        let read = ScriptRows::split(&rows)?;
        let row = read
            .order
            .ok_or_else(|| StoreError::NotFound(no.to_string()))?;
        let order = shared::assemble(row, read.subs)?;
        let decision = shared::decide(&order, read.prior.as_ref(), t, now);
        Ok::<_, StoreError>((order, decision, read.next_seq.unwrap_or(1)))
    }
    .await;
    let (order, decision, next_seq) = match decided {
        Ok(d) => d,
        // Nothing was written: a read failure is this request's alone.
        Err(e) => return Ok(Err(e)),
    };
    let new = match decision {
        Decision::Repeat => {
            return Ok(Ok(WriteDone::Outcome(Box::new(
                ApplyOutcome::AlreadyApplied(order),
            ))))
        }
        Decision::Reject(reason) => {
            return Ok(Ok(WriteDone::Outcome(Box::new(ApplyOutcome::Rejected {
                order,
                reason,
            }))))
        }
        Decision::RecordDuplicate(n) => {
            // One statement: atomic on its own.
            let r = sqlx::query(shared::INSERT_DUPLICATE_NOTIFICATION)
                .bind(&n.id)
                .bind(no)
                .bind(&n.body_sha256)
                .bind("duplicate")
                .bind(now)
                .execute(&mut *conn)
                .await;
            return Ok(match r {
                Ok(_) => Ok(WriteDone::Outcome(Box::new(ApplyOutcome::AlreadyApplied(
                    order,
                )))),
                Err(e) => Err(e.into()),
            });
        }
        Decision::Apply(new) => new,
    };
    let outbox = crate::webhook::EventKind::for_state(new.state).map(|kind| (kind, next_seq));

    let mut sql = format!("SAVEPOINT {JOB_SAVEPOINT};\n");
    let mut args = 0;
    let mut add = |sql: &mut String, statement: &str, params: usize| {
        sql.push_str(&shift_placeholders(statement, args));
        sql.push_str(";\n");
        args += params;
    };
    add(&mut sql, shared::UPDATE_ORDER_STATE, 4);
    let changed: Vec<&crate::combine::SubOrder> = shared::changed_subs(&order, &new).collect();
    for _ in &changed {
        add(&mut sql, shared::UPDATE_SUB_PAYMENT, 6);
    }
    add(&mut sql, shared::INSERT_EVENT, 7);
    if outbox.is_some() {
        add(&mut sql, shared::INSERT_OUTBOX, 6);
    }
    if t.notification.is_some() {
        add(&mut sql, shared::INSERT_NOTIFICATION, 5);
    }
    sql.push_str(&format!("RELEASE {JOB_SAVEPOINT}"));

    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(no)
        .bind(new.state.as_str())
        .bind(new.updated_at)
        .bind(new.notified_at);
    for s in &changed {
        q = q
            .bind(&s.mchid)
            .bind(&s.out_trade_no)
            .bind(&s.transaction_id)
            .bind(s.payer_amount)
            .bind(&s.bank_type)
            .bind(&s.success_time);
    }
    q = q
        .bind(no)
        .bind(order.state.as_str())
        .bind(new.state.as_str())
        .bind(t.source.as_str())
        .bind(t.notification.as_ref().map(|n| n.id.clone()))
        .bind(&t.detail)
        .bind(now);
    if let Some((kind, seq)) = outbox {
        let id = crate::webhook::new_event_id();
        let payload = crate::webhook::payload(&id, kind, seq, &new, now);
        q = q
            .bind(id)
            .bind(no)
            .bind(seq)
            .bind(kind.as_str())
            .bind(payload)
            .bind(now);
    }
    if let Some(n) = &t.notification {
        q = q
            .bind(&n.id)
            .bind(no)
            .bind(&n.body_sha256)
            .bind("applied")
            .bind(now);
    }
    Ok(match run_script(conn, q).await? {
        Ok(()) => Ok(WriteDone::Outcome(Box::new(ApplyOutcome::Applied(*new)))),
        Err(e) => Err(e.into()),
    })
}

impl SqliteStore {
    /// Opens (creating if missing) the database named by `url` — `sqlite:PATH`,
    /// `sqlite://PATH`, `sqlite::memory:` or a bare path — and migrates it.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let url = url.trim();
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let options = if url.len() >= 7 && url[..7].eq_ignore_ascii_case("sqlite:") {
            SqliteConnectOptions::from_str(url)?
        } else {
            SqliteConnectOptions::new().filename(url)
        };
        if !in_memory {
            if let Some(dir) = options.get_filename().parent() {
                if !dir.as_os_str().is_empty() && !dir.exists() {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        StoreError::Database(sqlx::Error::Io(std::io::Error::new(
                            e.kind(),
                            format!("creating {}: {e}", dir.display()),
                        )))
                    })?;
                }
            }
        }
        Self::connect_with(options, in_memory).await
    }

    /// Opens the database at `path` (created if missing).
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::connect_with(SqliteConnectOptions::new().filename(path.as_ref()), false).await
    }

    async fn connect_with(
        options: SqliteConnectOptions,
        in_memory: bool,
    ) -> Result<Self, StoreError> {
        let options = options
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .synchronous(SqliteSynchronous::Full)
            // Savepoints keep a statement journal: in memory, not a temp file.
            .pragma("temp_store", "memory");
        let options = if in_memory {
            options
        } else {
            options.journal_mode(SqliteJournalMode::Wal)
        };
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(if in_memory { 1 } else { 0 })
            .acquire_timeout(WRITER_ACQUIRE_TIMEOUT)
            // An in-memory database lives as long as its one connection.
            .idle_timeout(if in_memory {
                None
            } else {
                Some(Duration::from_secs(600))
            })
            .max_lifetime(if in_memory {
                None
            } else {
                Some(Duration::from_secs(3600))
            })
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&writer).await?;
        let reader = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(READERS)
                .connect_with(options)
                .await?
        };
        let (group, queue) = mpsc::channel(QUEUE_CAPACITY);
        // The writer runs on a thread of its own: each of its statements is
        // a round trip to SQLite's worker thread, and on the shared runtime
        // every wake-up would queue behind the request tasks (a busy server
        // would then starve its own commits).
        let pool = writer.clone();
        std::thread::Builder::new()
            .name("sqlite-group-commit".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(group_commit_task(pool, queue)),
                    // Dropping the queue makes `write` run requests inline.
                    Err(e) => {
                        tracing::error!(error = %e, "SQLite group-commit runtime failed to start")
                    }
                }
            })
            .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        Ok(Self {
            writer,
            reader,
            group,
            events: crate::events::EventHub::new(),
        })
    }

    /// Hands `op` to the group-commit writer and waits for its commit. If
    /// the writer is gone, the write runs in a transaction of its own.
    async fn write(&self, op: WriteOp) -> Result<WriteDone, StoreError> {
        let (reply, answer) = oneshot::channel();
        match self.group.send(Job { op, reply }).await {
            Ok(()) => answer
                .await
                .unwrap_or_else(|_| Err(StoreError::Database(sqlx::Error::WorkerCrashed))),
            Err(mpsc::error::SendError(job)) => {
                let mut results = run_batch(&self.writer, std::slice::from_ref(&job)).await?;
                results
                    .pop()
                    .unwrap_or(Err(StoreError::Database(sqlx::Error::WorkerCrashed)))
            }
        }
    }

    /// Closes both pools (checkpointing the WAL).
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
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
        let mut conn = self.reader.acquire().await?;
        let rows = match sqlx::query(sqlx::AssertSqlSafe(get_order_script()))
            .bind(combine_out_trade_no)
            .fetch_all(&mut *conn)
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                // The script may have stopped inside its transaction.
                if sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await.is_err() {
                    let _ = conn.detach();
                }
                return Err(e.into());
            }
        };
        let read = ScriptRows::split(&rows)?;
        read.order
            .map(|row| shared::assemble(row, read.subs))
            .transpose()
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
            .execute(&self.writer)
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
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
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
            .execute(&self.writer)
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
            .execute(&self.writer)
            .await?;
        let row: super::intake::KeyRow = sqlx::query_as(super::intake::SELECT_KEY)
            .bind(&record.key)
            .fetch_one(&self.writer)
            .await?;
        Ok(super::intake::key(row))
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
            .execute(&self.writer)
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
            .execute(&self.writer)
            .await?
            .rows_affected();
        let row: Option<super::intake::LinkRow> =
            sqlx::query_as(super::intake::SELECT_LINK_BY_TOKEN)
                .bind(token_sha256)
                .fetch_optional(&self.writer)
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
            .execute(&self.writer)
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
        .fetch_all(&self.writer)
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
                .execute(&self.writer)
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
                .execute(&self.writer)
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
                .execute(&self.writer)
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
    async fn paid_sub_orders_between(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Vec<crate::bill::LocalSubOrder>, StoreError> {
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
    ) -> Result<Option<crate::bill::LocalSubOrder>, StoreError> {
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
