//! The PostgreSQL backend: several server instances share one database.
//!
//! A state change locks the order row (`SELECT … FOR UPDATE`) for the whole
//! transaction, so concurrent notifications and queries for one order are
//! applied one after the other and only the first changes anything. The
//! reconciliation worker claims orders with `FOR UPDATE SKIP LOCKED` and a
//! lease column, so two instances never work on the same order at once.
//! A schema other than `public` is chosen with
//! `?options[search_path]=NAME` in the URL.

use super::shared::{self, validate_new, EventRow};
use super::{Store, StoreError};
use crate::combine::{ApplyOutcome, CombineOrder, OrderEvent, Transition};
use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// Default pool size.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// The PostgreSQL order store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://…` or `postgresql://…`) and migrates.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(
            PgConnectOptions::from_str(url.trim())?,
            DEFAULT_MAX_CONNECTIONS,
        )
        .await
    }

    /// Connects with explicit options and pool size, and migrates.
    pub async fn connect_with(
        options: PgConnectOptions,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

mod ops {
    crate::store::shared::sql_ops!(sqlx::postgres::PgConnection);
}

#[async_trait]
impl Store for PgStore {
    async fn create_order(&self, order: &CombineOrder) -> Result<(), StoreError> {
        validate_new(order)?;
        let mut tx = self.pool.begin().await?;
        ops::insert_order(&mut tx, order).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_order(
        &self,
        combine_out_trade_no: &str,
    ) -> Result<Option<CombineOrder>, StoreError> {
        // One snapshot for the order row and its sub-orders.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await?;
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
            .execute(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        let order = ops::load(
            &mut tx,
            shared::SELECT_ORDER_FOR_UPDATE,
            combine_out_trade_no,
        )
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
            .execute(&self.pool)
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
        // Rows another instance is claiming right now are skipped, not
        // waited for; the lease condition is re-checked on the locked row
        // version, so an order claimed and committed meanwhile is excluded.
        let mut tx = self.pool.begin().await?;
        let claimed: Vec<(String,)> = sqlx::query_as(
            "WITH due AS ( \
               SELECT combine_out_trade_no FROM combine_orders \
               WHERE state IN ('NOTPAY', 'USERPAYING') AND created_at <= $1 \
                 AND (lease_until IS NULL OR lease_until <= $2) \
               ORDER BY created_at, combine_out_trade_no LIMIT $4 \
               FOR UPDATE SKIP LOCKED) \
             UPDATE combine_orders o SET lease_until = $3 FROM due \
             WHERE o.combine_out_trade_no = due.combine_out_trade_no \
             RETURNING o.combine_out_trade_no",
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
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(combine_out_trade_no.to_string()));
        }
        Ok(())
    }

    async fn events(&self, combine_out_trade_no: &str) -> Result<Vec<OrderEvent>, StoreError> {
        sqlx::query_as::<_, EventRow>(shared::SELECT_EVENTS)
            .bind(combine_out_trade_no)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(shared::event)
            .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
