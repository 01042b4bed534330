//! The embedded SQLite backend (the default): one file, WAL journal,
//! `synchronous=FULL` so a commit is on disk before it is acknowledged.
//!
//! Writes go through a single-connection pool and take the write lock up
//! front (`BEGIN IMMEDIATE`), so concurrent writers in this process queue
//! instead of failing with `SQLITE_BUSY`; the busy timeout covers other
//! processes on the same file. Reads use a separate pool and, thanks to WAL,
//! never wait for writers. (A later group-commit writer can batch several
//! `apply_transition` calls into one transaction behind the same methods.)

use super::shared::{self, validate_new, EventRow};
use super::{Store, StoreError};
use crate::combine::{ApplyOutcome, CombineOrder, OrderEvent, Transition};
use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
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

mod ops {
    crate::store::shared::sql_ops!(sqlx::sqlite::SqliteConnection);
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_order(&self, order: &CombineOrder) -> Result<(), StoreError> {
        validate_new(order)?;
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        ops::insert_order(&mut tx, order).await?;
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
        let order = ops::load(&mut tx, shared::SELECT_ORDER, combine_out_trade_no).await?;
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
        let order = ops::load(&mut tx, shared::SELECT_ORDER, combine_out_trade_no)
            .await?
            .ok_or_else(|| StoreError::NotFound(combine_out_trade_no.to_string()))?;
        let outcome = ops::apply_locked(&mut tx, order, transition, now).await?;
        // Nothing written for repeats and refusals: the commit is then free.
        tx.commit().await?;
        Ok(outcome)
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
}
