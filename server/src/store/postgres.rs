//! The PostgreSQL backend: several server instances share one database.
//!
//! A state change locks the order row (`SELECT … FOR UPDATE`) for the whole
//! transaction, so concurrent notifications and queries for one order are
//! applied one after the other and only the first changes anything. The
//! reconciliation worker claims orders with `FOR UPDATE SKIP LOCKED` and a
//! lease column, so two instances never work on the same order at once.
//! A schema other than `public` is chosen with
//! `?options[search_path]=NAME` in the URL.

use super::shared::{
    self, assemble, changed_subs, decide, is_unique_violation, validate_new, Decision, EventRow,
    OrderRow, PriorNotification, SubRow,
};
use super::{Store, StoreError};
use crate::combine::{ApplyOutcome, CombineOrder, OrderEvent, Transition};
use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
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

async fn load(conn: &mut PgConnection, no: &str) -> Result<Option<CombineOrder>, StoreError> {
    let Some(row) = sqlx::query_as::<_, OrderRow>(shared::SELECT_ORDER)
        .bind(no)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    load_subs(conn, row, no).await.map(Some)
}

/// Loads the order and keeps its row locked until the transaction ends.
async fn load_locked(
    conn: &mut PgConnection,
    no: &str,
) -> Result<Option<CombineOrder>, StoreError> {
    let Some(row) = sqlx::query_as::<_, OrderRow>(shared::SELECT_ORDER_FOR_UPDATE)
        .bind(no)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    load_subs(conn, row, no).await.map(Some)
}

async fn load_subs(
    conn: &mut PgConnection,
    row: OrderRow,
    no: &str,
) -> Result<CombineOrder, StoreError> {
    let subs = sqlx::query_as::<_, SubRow>(shared::SELECT_SUBS)
        .bind(no)
        .fetch_all(&mut *conn)
        .await?;
    assemble(row, subs)
}

#[async_trait]
impl Store for PgStore {
    async fn create_order(&self, order: &CombineOrder) -> Result<(), StoreError> {
        validate_new(order)?;
        let mut tx = self.pool.begin().await?;
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
        // One snapshot for the order row and its sub-orders.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await?;
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
        let order = load_locked(&mut tx, combine_out_trade_no)
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
