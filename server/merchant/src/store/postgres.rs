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
use super::{OutboxEvent, OutboxStats, Store, StoreError};
use crate::combine::{ApplyOutcome, CombineOrder, OrderEvent, Transition};
use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

mod refund_ops {
    crate::store::refunds::refund_ops!(
        sqlx::postgres::PgConnection,
        "SELECT state FROM combine_orders WHERE combine_out_trade_no = $1 FOR UPDATE"
    );

    /// Reads a refund with its row locked until the transaction ends.
    pub(super) async fn lock_refund(
        conn: &mut sqlx::postgres::PgConnection,
        out_refund_no: &str,
    ) -> Result<Option<RefundRecord>, StoreError> {
        let row: Option<RefundRow> = sqlx::query_as(crate::store::refunds::select_refunds!(
            "WHERE out_refund_no = $1 FOR UPDATE"
        ))
        .bind(out_refund_no)
        .fetch_optional(&mut *conn)
        .await?;
        row.map(record).transpose()
    }
}

/// Default pool size. Each transaction commits on its own connection and
/// PostgreSQL flushes the WAL of concurrent commits together, so the pool
/// must hold enough connections for a notification storm (64–256 in flight)
/// to keep several commits in flight; 32 per instance stays well inside the
/// server's default `max_connections` (100) with two instances.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 32;

/// The PostgreSQL order store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    events: crate::events::EventHub,
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
        Ok(Self {
            pool,
            events: crate::events::EventHub::new(),
        })
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

mod ops {
    crate::store::shared::sql_ops!(sqlx::postgres::PgConnection);

    use crate::combine::{ApplyOutcome, Transition};
    use crate::store::shared::Decision;

    /// Inserts a validated order, its sub-orders and the `create` event.
    pub(super) async fn insert_order(
        conn: &mut sqlx::postgres::PgConnection,
        order: &CombineOrder,
    ) -> Result<(), StoreError> {
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
            .execute(&mut *conn)
            .await;
        match inserted {
            Err(e) if shared::is_unique_violation(&e) => {
                return Err(StoreError::Duplicate(no.clone()))
            }
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
                .execute(&mut *conn)
                .await;
            match r {
                Err(e) if shared::is_unique_violation(&e) => {
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
            .bind(shared::create_detail(order))
            .bind(order.created_at)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Decides and writes a transition for `order`, which the caller has
    /// locked. Writes nothing unless the decision says so.
    pub(super) async fn apply_locked(
        conn: &mut sqlx::postgres::PgConnection,
        order: CombineOrder,
        t: &Transition,
        now: i64,
    ) -> Result<ApplyOutcome, StoreError> {
        let no = order.combine_out_trade_no.clone();
        let prior = match &t.notification {
            Some(n) => {
                sqlx::query_as::<_, shared::PriorNotification>(shared::SELECT_NOTIFICATION)
                    .bind(&n.id)
                    .fetch_optional(&mut *conn)
                    .await?
            }
            None => None,
        };
        match shared::decide(&order, prior.as_ref(), t, now) {
            Decision::Repeat => Ok(ApplyOutcome::AlreadyApplied(order)),
            Decision::Reject(reason) => Ok(ApplyOutcome::Rejected { order, reason }),
            Decision::RecordDuplicate(n) => {
                sqlx::query(shared::INSERT_DUPLICATE_NOTIFICATION)
                    .bind(&n.id)
                    .bind(&no)
                    .bind(&n.body_sha256)
                    .bind("duplicate")
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                Ok(ApplyOutcome::AlreadyApplied(order))
            }
            Decision::Apply(new) => {
                sqlx::query(shared::UPDATE_ORDER_STATE)
                    .bind(&no)
                    .bind(new.state.as_str())
                    .bind(new.updated_at)
                    .bind(new.notified_at)
                    .execute(&mut *conn)
                    .await?;
                for s in shared::changed_subs(&order, &new) {
                    sqlx::query(shared::UPDATE_SUB_PAYMENT)
                        .bind(&s.mchid)
                        .bind(&s.out_trade_no)
                        .bind(&s.transaction_id)
                        .bind(s.payer_amount)
                        .bind(&s.bank_type)
                        .bind(&s.success_time)
                        .execute(&mut *conn)
                        .await?;
                }
                sqlx::query(shared::INSERT_EVENT)
                    .bind(&no)
                    .bind(order.state.as_str())
                    .bind(new.state.as_str())
                    .bind(t.source.as_str())
                    .bind(t.notification.as_ref().map(|n| n.id.clone()))
                    .bind(&t.detail)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                // Outbox: the webhook event commits with the change.
                if let Some(kind) = crate::outbox::EventKind::for_state(new.state) {
                    let seq: i64 = sqlx::query_scalar(shared::NEXT_OUTBOX_SEQ)
                        .bind(&no)
                        .fetch_one(&mut *conn)
                        .await?;
                    let id = crate::outbox::new_event_id();
                    let payload = crate::outbox::payload(&id, kind, seq, &new, now);
                    sqlx::query(shared::INSERT_OUTBOX)
                        .bind(&id)
                        .bind(&no)
                        .bind(seq)
                        .bind(kind.as_str())
                        .bind(payload)
                        .bind(now)
                        .execute(&mut *conn)
                        .await?;
                }
                if let Some(n) = &t.notification {
                    sqlx::query(shared::INSERT_NOTIFICATION)
                        .bind(&n.id)
                        .bind(&no)
                        .bind(&n.body_sha256)
                        .bind("applied")
                        .bind(now)
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(ApplyOutcome::Applied(*new))
            }
        }
    }
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
            .execute(&self.pool)
            .await
            .map_err(|e| super::intake::key_error(e, &record.combine_out_trade_no))?;
        let row: super::intake::KeyRow = sqlx::query_as(super::intake::SELECT_KEY)
            .bind(&record.key)
            .fetch_one(&self.pool)
            .await?;
        Ok(super::intake::key(row))
    }

    async fn idempotency_key(
        &self,
        key: &str,
    ) -> Result<Option<super::IdempotencyRecord>, StoreError> {
        let row: Option<super::intake::KeyRow> = sqlx::query_as(super::intake::SELECT_KEY)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(super::intake::key))
    }

    async fn consume_oauth_state(
        &self,
        state_sha256: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        sqlx::query(super::intake::DELETE_EXPIRED_STATES)
            .bind(now)
            .execute(&self.pool)
            .await?;
        let done = sqlx::query(super::intake::INSERT_STATE)
            .bind(state_sha256)
            .bind(expires_at)
            .execute(&self.pool)
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
            .execute(&self.pool)
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
                .fetch_optional(&self.pool)
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
            .execute(&self.pool)
            .await?
            .rows_affected();
        let row: Option<super::intake::LinkRow> =
            sqlx::query_as(super::intake::SELECT_LINK_BY_TOKEN)
                .bind(token_sha256)
                .fetch_optional(&self.pool)
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
            .execute(&self.pool)
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
        // Events another instance is claiming right now are skipped, not
        // waited for; the lease is re-checked on the locked row version.
        let mut events: Vec<OutboxEvent> = sqlx::query_as(
            "WITH due AS ( \
               SELECT e.id FROM outbox_events e \
               WHERE e.delivered_at IS NULL AND e.next_attempt_at <= $1 \
                 AND (e.lease_until IS NULL OR e.lease_until <= $1) \
                 AND NOT EXISTS (SELECT 1 FROM outbox_events p \
                   WHERE p.combine_out_trade_no = e.combine_out_trade_no \
                     AND p.delivered_at IS NULL AND p.seq < e.seq) \
               ORDER BY e.next_attempt_at, e.created_at, e.id LIMIT $3 \
               FOR UPDATE OF e SKIP LOCKED) \
             UPDATE outbox_events o SET lease_until = $2 FROM due WHERE o.id = due.id \
             RETURNING o.id, o.combine_out_trade_no, o.seq, o.kind, o.payload, o.created_at, \
               o.attempts, o.next_attempt_at, o.delivered_at, o.last_error",
        )
        .bind(now)
        .bind(lease_until)
        .bind(limit)
        .fetch_all(&self.pool)
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
                .execute(&self.pool)
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
                .execute(&self.pool)
                .await?,
            id,
        )
    }

    async fn pending_outbox_events(&self, limit: i64) -> Result<Vec<OutboxEvent>, StoreError> {
        Ok(sqlx::query_as(shared::PENDING_OUTBOX)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn get_outbox_event(&self, id: &str) -> Result<Option<OutboxEvent>, StoreError> {
        Ok(sqlx::query_as(shared::GET_OUTBOX)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn reschedule_outbox_event(&self, id: &str, at: i64) -> Result<(), StoreError> {
        outbox_update(
            sqlx::query(shared::RESCHEDULE_OUTBOX)
                .bind(id)
                .bind(at)
                .execute(&self.pool)
                .await?,
            id,
        )
    }

    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let (pending, oldest_created_at): (i64, Option<i64>) = sqlx::query_as(shared::OUTBOX_STATS)
            .fetch_one(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        let created = refund_ops::create_refund(&mut tx, new, now).await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn get_refund(
        &self,
        out_refund_no: &str,
    ) -> Result<Option<super::RefundRecord>, StoreError> {
        refund_ops::get_refund(&mut *self.pool.acquire().await?, out_refund_no).await
    }

    async fn refunds_of_order(
        &self,
        combine_out_trade_no: &str,
    ) -> Result<Vec<super::RefundRecord>, StoreError> {
        refund_ops::refunds_of_order(&mut *self.pool.acquire().await?, combine_out_trade_no).await
    }

    async fn update_refund(
        &self,
        out_refund_no: &str,
        update: &super::RefundUpdate,
        now: i64,
    ) -> Result<super::RefundApplied, StoreError> {
        let mut tx = self.pool.begin().await?;
        let current = refund_ops::lock_refund(&mut tx, out_refund_no)
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
        refund_ops::processing_refunds(&mut *self.pool.acquire().await?, updated_before, limit)
            .await
    }

    async fn refunds_created_between(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Vec<super::RefundRecord>, StoreError> {
        refund_ops::refunds_created_between(&mut *self.pool.acquire().await?, from, to).await
    }

    async fn refund_events(
        &self,
        out_refund_no: &str,
    ) -> Result<Vec<super::RefundEvent>, StoreError> {
        refund_ops::refund_events(&mut *self.pool.acquire().await?, out_refund_no).await
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
            .fetch_all(&self.pool)
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
            .fetch_optional(&self.pool)
            .await?
            .map(shared::bill_sub)
            .transpose()
    }
}

// Outbox:
fn outbox_update(r: sqlx::postgres::PgQueryResult, id: &str) -> Result<(), StoreError> {
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound(id.to_string()));
    }
    Ok(())
}
