//! The embedded SQLite backend (the default): one file, WAL journal,
//! `synchronous=FULL` so a commit is on disk before it is acknowledged.
//!
//! Writes go through a single-connection pool and take the write lock up
//! front (`BEGIN IMMEDIATE`), so concurrent writers in this process queue
//! instead of failing with `SQLITE_BUSY`; the busy timeout covers other
//! processes on the same file. Reads use a separate pool and, thanks to WAL,
//! never wait for writers. (A later group-commit writer can batch several
//! `apply_transition` calls into one transaction behind the same methods.)

use super::shared::{
    self, assemble, changed_subs, decide, is_unique_violation, validate_new, Decision, EventRow,
    OrderRow, PriorNotification, SubRow,
};
use super::{Store, StoreError};
use crate::combine::{ApplyOutcome, CombineOrder, OrderEvent, Transition};
use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a connection waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a caller may queue for the (single) writer connection.
const WRITER_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(60);

/// Reader connections (WAL readers run in parallel with the writer).
const READERS: u32 = 4;

/// The SQLite order store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
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
            .synchronous(SqliteSynchronous::Full);
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
        Ok(Self { writer, reader })
    }

    /// Closes both pools (checkpointing the WAL).
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

async fn load(conn: &mut SqliteConnection, no: &str) -> Result<Option<CombineOrder>, StoreError> {
    let Some(row) = sqlx::query_as::<_, OrderRow>(shared::SELECT_ORDER)
        .bind(no)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let subs = sqlx::query_as::<_, SubRow>(shared::SELECT_SUBS)
        .bind(no)
        .fetch_all(&mut *conn)
        .await?;
    assemble(row, subs).map(Some)
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_order(&self, order: &CombineOrder) -> Result<(), StoreError> {
        validate_new(order)?;
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let no = &order.combine_out_trade_no;
        let inserted = sqlx::query(shared::INSERT_ORDER)
            .bind(no)
            .bind(&order.combine_mchid)
            .bind(&order.combine_appid)
            .bind(&order.payer_openid)
            .bind(order.state.as_str())
            .bind(&order.prepay_id)
            .bind(order.prepay_expires_at)
            .bind(order.time_expire)
            .bind(order.created_at)
            .bind(order.updated_at)
            .bind(order.notified_at)
            .execute(&mut *tx)
            .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => return Err(StoreError::Duplicate(no.clone())),
            r => r?,
        };
        for (i, s) in order.sub_orders.iter().enumerate() {
            let r = sqlx::query(shared::INSERT_SUB)
                .bind(&s.mchid)
                .bind(&s.out_trade_no)
                .bind(no)
                .bind(i as i64)
                .bind(&s.description)
                .bind(&s.attach)
                .bind(s.amount)
                .bind(&s.transaction_id)
                .bind(s.payer_amount)
                .bind(&s.bank_type)
                .bind(&s.success_time)
                .execute(&mut *tx)
                .await;
            match r {
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::Duplicate(format!(
                        "{}/{}",
                        s.mchid, s.out_trade_no
                    )))
                }
                r => r?,
            };
        }
        sqlx::query(shared::INSERT_EVENT)
            .bind(no)
            .bind(None::<String>)
            .bind(order.state.as_str())
            .bind("create")
            .bind(None::<String>)
            .bind(format!(
                "created with {} sub-orders, total {} fen",
                order.sub_orders.len(),
                order.total_amount()
            ))
            .bind(order.created_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_order(
        &self,
        combine_out_trade_no: &str,
    ) -> Result<Option<CombineOrder>, StoreError> {
        // One read transaction: the order row and its sub-orders come from
        // the same snapshot.
        let mut tx = self.reader.begin().await?;
        let order = load(&mut tx, combine_out_trade_no).await?;
        tx.commit().await?;
        Ok(order)
    }

    async fn set_prepay(
        &self,
        combine_out_trade_no: &str,
        prepay_id: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let r = sqlx::query(shared::UPDATE_PREPAY)
            .bind(combine_out_trade_no)
            .bind(prepay_id)
            .bind(expires_at)
            .execute(&self.writer)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(combine_out_trade_no.to_string()));
        }
        Ok(())
    }

    async fn apply_transition(
        &self,
        combine_out_trade_no: &str,
        transition: &Transition,
        now: i64,
    ) -> Result<ApplyOutcome, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let order = load(&mut tx, combine_out_trade_no)
            .await?
            .ok_or_else(|| StoreError::NotFound(combine_out_trade_no.to_string()))?;
        let prior = match &transition.notification {
            Some(n) => {
                sqlx::query_as::<_, PriorNotification>(shared::SELECT_NOTIFICATION)
                    .bind(&n.id)
                    .fetch_optional(&mut *tx)
                    .await?
            }
            None => None,
        };
        match decide(&order, prior.as_ref(), transition, now) {
            Decision::Repeat => {
                tx.rollback().await?;
                Ok(ApplyOutcome::AlreadyApplied(order))
            }
            Decision::Reject(reason) => {
                tx.rollback().await?;
                Ok(ApplyOutcome::Rejected { order, reason })
            }
            Decision::RecordDuplicate(n) => {
                sqlx::query(shared::INSERT_NOTIFICATION)
                    .bind(&n.id)
                    .bind(combine_out_trade_no)
                    .bind(&n.body_sha256)
                    .bind("duplicate")
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(ApplyOutcome::AlreadyApplied(order))
            }
            Decision::Apply(new) => {
                sqlx::query(shared::UPDATE_ORDER_STATE)
                    .bind(combine_out_trade_no)
                    .bind(new.state.as_str())
                    .bind(new.updated_at)
                    .bind(new.notified_at)
                    .execute(&mut *tx)
                    .await?;
                for s in changed_subs(&order, &new) {
                    sqlx::query(shared::UPDATE_SUB_PAYMENT)
                        .bind(&s.mchid)
                        .bind(&s.out_trade_no)
                        .bind(&s.transaction_id)
                        .bind(s.payer_amount)
                        .bind(&s.bank_type)
                        .bind(&s.success_time)
                        .execute(&mut *tx)
                        .await?;
                }
                let notification_id = transition.notification.as_ref().map(|n| n.id.clone());
                sqlx::query(shared::INSERT_EVENT)
                    .bind(combine_out_trade_no)
                    .bind(order.state.as_str())
                    .bind(new.state.as_str())
                    .bind(transition.source.as_str())
                    .bind(&notification_id)
                    .bind(&transition.detail)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                if let Some(n) = &transition.notification {
                    sqlx::query(shared::INSERT_NOTIFICATION)
                        .bind(&n.id)
                        .bind(combine_out_trade_no)
                        .bind(&n.body_sha256)
                        .bind("applied")
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(ApplyOutcome::Applied(*new))
            }
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
        let mut orders = Vec::with_capacity(claimed.len());
        for (no,) in &claimed {
            if let Some(o) = load(&mut tx, no).await? {
                orders.push(o);
            }
        }
        tx.commit().await?;
        orders.sort_by(|a, b| {
            (a.created_at, &a.combine_out_trade_no).cmp(&(b.created_at, &b.combine_out_trade_no))
        });
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
}
