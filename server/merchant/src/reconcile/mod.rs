//! Reconciliation (the product document's step 4: "if no notification
//! arrives for a long time, query the order").
//!
//! The [`Worker`] periodically claims orders still open (NOTPAY/USERPAYING)
//! some time after creation, queries WeChat Pay and applies the answer
//! through the same path as notifications ([`payment::apply_transaction`]).
//! Orders past their `time_expire` (or a default lifetime) that are still
//! unpaid are closed with the close API and recorded CLOSED (source
//! `expiry`). Claims are leases in the database (`FOR UPDATE SKIP LOCKED`
//! with PostgreSQL), so several instances can run workers at once and an
//! order is handled by one of them at a time. An order that stays open is
//! queried again after a lease that grows with its age (at most hourly).
//!
//! [`refresh_from_query`] is the same step for one order, for the HTTP
//! layer's query-on-read.

pub mod settings;

use crate::apiv3::Clock;
use crate::combine::wire::CombineTransaction;
use crate::combine::{
    ApiError, ApplyOutcome, CombineApi, CombineOrder, EventSource, TradeState, Transition,
};
use crate::payment::{self, Mismatch, PaymentError};
use crate::store::{Store, StoreError};
use futures_util::StreamExt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// Error codes meaning "no such order" (new and old spellings).
const NOT_FOUND_CODES: &[&str] = &["ORDER_NOT_EXIST", "ORDERNOTEXIST"];
/// Close refused because the order is already closed.
const CLOSED_CODES: &[&str] = &["ORDER_CLOSED", "ORDERCLOSED"];
/// Close refused because the order was paid.
const PAID_CODES: &[&str] = &["ORDER_PAID", "ORDERPAID", "TRADE_STATE_ERROR"];
/// Close refused because the payer is paying right now (HTTP 202).
const PAYING_CODES: &[&str] = &["USER_PAYING", "USERPAYING"];

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Pause between rounds (a full batch starts the next round at once).
    pub interval: Duration,
    /// Orders younger than this are left to the notification.
    pub query_after: Duration,
    /// How long a claim lasts, and the shortest spacing between two queries
    /// of one order.
    pub lease: Duration,
    /// Longest spacing between two queries of one open order.
    pub max_requery: Duration,
    /// Orders claimed per round.
    pub batch: i64,
    /// Orders handled in parallel within a round.
    pub concurrency: usize,
    /// Lifetime of an order created without `time_expire` (WeChat Pay
    /// closes unpaid orders after 7 days).
    pub default_ttl: Duration,
    /// Never close an order younger than this ("订单生成后不能马上调用关单接口，
    /// 最短调用时间间隔为5分钟").
    pub min_close_age: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            query_after: Duration::from_secs(120),
            lease: Duration::from_secs(60),
            max_requery: Duration::from_secs(3600),
            batch: 50,
            concurrency: 4,
            default_ttl: Duration::from_secs(7 * 24 * 3600),
            min_close_age: Duration::from_secs(300),
        }
    }
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Orders claimed.
    pub claimed: usize,
    /// Orders whose state changed from a query answer.
    pub applied: usize,
    /// Orders queried and found unchanged (still open).
    pub unchanged: usize,
    /// Orders closed because they expired.
    pub closed: usize,
    /// Answers that disagreed with the stored order, or states the order
    /// cannot take (alerts logged).
    pub alerts: usize,
    /// Calls or writes that failed (retried after the lease).
    pub errors: usize,
}

/// What happened to one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Applied,
    Unchanged,
    Closed,
    Alert,
    Error,
}

/// The reconciliation worker.
#[derive(Clone)]
pub struct Worker {
    store: Arc<dyn Store>,
    api: Arc<dyn CombineApi>,
    config: WorkerConfig,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("store", &self.store)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker over `store` and `api`.
    pub fn new(
        store: Arc<dyn Store>,
        api: Arc<dyn CombineApi>,
        config: WorkerConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            api,
            config,
            clock,
        }
    }

    /// Runs rounds until `shutdown` completes. A round in progress is
    /// finished first (claims of unfinished orders lapse with their lease).
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let full = match self.run_once().await {
                Ok(s) => {
                    if s.claimed > 0 {
                        tracing::info!(
                            claimed = s.claimed,
                            applied = s.applied,
                            closed = s.closed,
                            unchanged = s.unchanged,
                            alerts = s.alerts,
                            errors = s.errors,
                            "reconciliation round"
                        );
                    }
                    s.claimed as i64 >= self.config.batch
                }
                Err(e) => {
                    tracing::error!(error = %e, "reconciliation round failed");
                    false
                }
            };
            let pause = if full {
                Duration::ZERO
            } else {
                self.config.interval
            };
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        tracing::info!("reconciliation worker stopped");
    }

    /// One round: claim a batch of due orders and handle each.
    pub async fn run_once(&self) -> Result<RunSummary, StoreError> {
        let now = self.clock.now();
        let orders = match self
            .store
            .claim_open_orders(
                now - secs(self.config.query_after),
                now,
                now + secs(self.config.lease),
                self.config.batch.max(1),
            )
            .await
        {
            Ok(orders) => orders,
            Err(e) => {
                crate::metrics::metrics().reconcile_run("error");
                return Err(e);
            }
        };
        let mut summary = RunSummary {
            claimed: orders.len(),
            ..RunSummary::default()
        };
        let steps: Vec<Step> = futures_util::stream::iter(orders)
            .map(|o| {
                // Every line about this order carries its number.
                let span =
                    tracing::info_span!("reconcile", combine_out_trade_no = %o.combine_out_trade_no);
                self.handle(o).instrument(span)
            })
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;
        for s in steps {
            match s {
                Step::Applied => summary.applied += 1,
                Step::Unchanged => summary.unchanged += 1,
                Step::Closed => summary.closed += 1,
                Step::Alert => summary.alerts += 1,
                Step::Error => summary.errors += 1,
            }
        }
        crate::metrics::metrics().reconcile_run(if summary.errors > 0 || summary.alerts > 0 {
            "partial"
        } else {
            "ok"
        });
        Ok(summary)
    }

    /// Query, apply, and close if expired.
    async fn handle(&self, order: CombineOrder) -> Step {
        let no = order.combine_out_trade_no.clone();
        let now = self.clock.now();
        let step = match query_and_apply(&*self.store, &*self.api, &no, now).await {
            Ok(outcome) => {
                let current = outcome.order();
                let changed = matches!(outcome, ApplyOutcome::Applied(_));
                if matches!(outcome, ApplyOutcome::Rejected { .. }) {
                    Step::Alert
                } else if current.state.is_open() && self.expired(current, now) {
                    self.close_expired(current, now).await
                } else if changed {
                    Step::Applied
                } else {
                    Step::Unchanged
                }
            }
            Err(RefreshError::Api(e)) if has_code(&e, NOT_FOUND_CODES) => {
                // WeChat Pay never saw the order (prepay failed or never
                // made). Once expired nobody can pay it: close it here.
                if self.expired(&order, now) {
                    let detail = "time_expire passed; the order does not exist at WeChat Pay";
                    self.record_closed(&order, detail, now).await
                } else {
                    Step::Unchanged
                }
            }
            Err(RefreshError::Api(e)) => {
                tracing::warn!(order = %no, error = %e, "reconciliation query failed; retrying later");
                Step::Error
            }
            Err(RefreshError::Mismatch { .. }) => Step::Alert,
            Err(RefreshError::NotFound(_)) | Err(RefreshError::Store(_)) => Step::Error,
        };
        if step != Step::Closed && step != Step::Applied {
            let next = self.next_query_at(&order, now);
            if let Err(e) = self.store.set_lease(&no, next).await {
                tracing::warn!(order = %no, error = %e, "could not extend the reconciliation lease");
            }
        }
        step
    }

    /// When an open order should be queried again: the lease, growing to a
    /// quarter of the order's age (at most `max_requery`), but not past the
    /// moment it expires.
    fn next_query_at(&self, order: &CombineOrder, now: i64) -> i64 {
        let age = (now - order.created_at).max(0);
        let spacing = (age / 4).clamp(
            secs(self.config.lease),
            secs(self.config.max_requery).max(secs(self.config.lease)),
        );
        let expiry = self.close_due_at(order);
        let next = now + spacing;
        if expiry > now {
            next.min(expiry.max(now + secs(self.config.lease)))
        } else {
            next
        }
    }

    /// When an unpaid order may be closed.
    fn close_due_at(&self, order: &CombineOrder) -> i64 {
        let expires = order
            .time_expire
            .unwrap_or(order.created_at + secs(self.config.default_ttl));
        expires.max(order.created_at + secs(self.config.min_close_age))
    }

    fn expired(&self, order: &CombineOrder, now: i64) -> bool {
        now >= self.close_due_at(order)
    }

    /// Closes an expired unpaid order at WeChat Pay, then records CLOSED.
    async fn close_expired(&self, order: &CombineOrder, now: i64) -> Step {
        let no = &order.combine_out_trade_no;
        let request = crate::combine::close_request(order);
        match self.api.close(no, &request).await {
            Ok(()) => {
                self.record_closed(order, "time_expire passed; closed at WeChat Pay", now)
                    .await
            }
            Err(e) if has_code(&e, CLOSED_CODES) => {
                // Recorded only once a query confirms it.
                match confirm_close_refusal(&*self.store, &*self.api, no, now).await {
                    Ok(CloseCheck::Queried(o)) if o.order().state == TradeState::Closed => {
                        if matches!(*o, ApplyOutcome::Applied(_)) {
                            Step::Closed
                        } else {
                            Step::Unchanged
                        }
                    }
                    Ok(CloseCheck::NotExist) => {
                        self.record_closed(
                            order,
                            "time_expire passed; WeChat Pay has no such order",
                            now,
                        )
                        .await
                    }
                    Ok(CloseCheck::Queried(o)) if matches!(*o, ApplyOutcome::Applied(_)) => {
                        Step::Applied
                    }
                    Ok(CloseCheck::Queried(o)) if matches!(*o, ApplyOutcome::Rejected { .. }) => {
                        Step::Alert
                    }
                    Ok(CloseCheck::Queried(_)) => {
                        tracing::warn!(order = %no, "close said ORDER_CLOSED but the query says open; retrying later");
                        Step::Error
                    }
                    Err(e) => {
                        tracing::warn!(order = %no, error = %e, "could not confirm ORDER_CLOSED with a query; retrying later");
                        Step::Error
                    }
                }
            }
            Err(e) if has_code(&e, PAID_CODES) => {
                // Paid at the last moment: take the facts from a query.
                tracing::info!(order = %no, "close refused: the order was paid; querying");
                match query_and_apply(&*self.store, &*self.api, no, now).await {
                    Ok(ApplyOutcome::Applied(_)) => Step::Applied,
                    Ok(ApplyOutcome::AlreadyApplied(_)) => Step::Unchanged,
                    Ok(ApplyOutcome::Rejected { .. }) | Err(RefreshError::Mismatch { .. }) => {
                        Step::Alert
                    }
                    Err(_) => Step::Error,
                }
            }
            Err(e) if has_code(&e, PAYING_CODES) => {
                tracing::info!(order = %no, "close deferred: the payer is paying");
                Step::Unchanged
            }
            Err(e) => {
                tracing::warn!(order = %no, error = %e, "closing an expired order failed; retrying later");
                Step::Error
            }
        }
    }

    async fn record_closed(&self, order: &CombineOrder, detail: &str, now: i64) -> Step {
        let no = &order.combine_out_trade_no;
        let t = Transition {
            to: TradeState::Closed,
            source: EventSource::Expiry,
            payments: Vec::new(),
            notification: None,
            detail: detail.to_string(),
        };
        match self.store.apply_transition(no, &t, now).await {
            Ok(ApplyOutcome::Applied(o)) => {
                self.store.announce(order.state, &o, EventSource::Expiry);
                tracing::info!(order = %no, "expired order closed");
                Step::Closed
            }
            Ok(ApplyOutcome::AlreadyApplied(_)) => Step::Unchanged,
            Ok(ApplyOutcome::Rejected { order: o, reason }) => {
                tracing::error!(order = %no, state = %o.state, %reason, "ALERT: closed at WeChat Pay but the stored order cannot be closed");
                Step::Alert
            }
            Err(e) => {
                tracing::error!(order = %no, error = %e, "recording an expiry close failed");
                Step::Error
            }
        }
    }
}

/// What a verified query says after close answered `ORDER_CLOSED` or
/// `ORDER_NOT_EXIST`: a refusal alone never records CLOSED.
#[derive(Debug)]
pub enum CloseCheck {
    /// The query's answer was applied; [`ApplyOutcome::order`] tells the
    /// state (CLOSED when WeChat Pay closed it, paid when it was paid).
    Queried(Box<ApplyOutcome>),
    /// The query also answered a verified `ORDER_NOT_EXIST`: WeChat Pay
    /// never created the order, so nobody can pay it.
    NotExist,
}

/// Confirms a close refusal with a query (see [`CloseCheck`]).
pub async fn confirm_close_refusal(
    store: &dyn Store,
    api: &dyn CombineApi,
    no: &str,
    now: i64,
) -> Result<CloseCheck, RefreshError> {
    match query_and_apply(store, api, no, now).await {
        Ok(outcome) => Ok(CloseCheck::Queried(Box::new(outcome))),
        Err(RefreshError::Api(e)) if has_code(&e, NOT_FOUND_CODES) => Ok(CloseCheck::NotExist),
        Err(e) => Err(e),
    }
}

/// Why [`refresh_from_query`] could not refresh.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// No such order stored.
    #[error("order {0} not found")]
    NotFound(String),
    /// The query failed (`ApiError::code()` tells `ORDER_NOT_EXIST` etc.).
    #[error(transparent)]
    Api(ApiError),
    /// WeChat Pay's answer disagrees with the stored order (alert logged;
    /// nothing changed).
    #[error("order {combine_out_trade_no}: {mismatch}")]
    Mismatch {
        /// The order.
        combine_out_trade_no: String,
        /// What disagrees.
        mismatch: Mismatch,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<PaymentError> for RefreshError {
    fn from(e: PaymentError) -> Self {
        match e {
            PaymentError::UnknownOrder(no) => RefreshError::NotFound(no),
            PaymentError::Mismatch {
                combine_out_trade_no,
                mismatch,
            } => RefreshError::Mismatch {
                combine_out_trade_no,
                mismatch,
            },
            PaymentError::Store(e) => RefreshError::Store(e),
        }
    }
}

/// Query-on-read: if the order is still open, asks WeChat Pay and applies
/// the answer (source `query`) through the notification path; returns the
/// order as stored afterwards. A final order is returned as stored, without
/// a query. When WeChat Pay reports a state the order cannot take (e.g.
/// SUCCESS for a CLOSED order) the alert is logged and the stored order is
/// returned unchanged.
pub async fn refresh_from_query(
    store: &dyn Store,
    api: &dyn CombineApi,
    combine_out_trade_no: &str,
    now: i64,
) -> Result<CombineOrder, RefreshError> {
    let order = store
        .get_order(combine_out_trade_no)
        .await?
        .ok_or_else(|| RefreshError::NotFound(combine_out_trade_no.to_string()))?;
    if !order.state.is_open() {
        return Ok(order);
    }
    let outcome = query_and_apply(store, api, combine_out_trade_no, now).await?;
    Ok(match outcome {
        ApplyOutcome::Applied(o) | ApplyOutcome::AlreadyApplied(o) => o,
        ApplyOutcome::Rejected { order, .. } => order,
    })
}

/// Queries one order and applies the answer.
async fn query_and_apply(
    store: &dyn Store,
    api: &dyn CombineApi,
    no: &str,
    now: i64,
) -> Result<ApplyOutcome, RefreshError> {
    let txn: CombineTransaction = api.query(no).await.map_err(RefreshError::Api)?;
    if txn.combine_out_trade_no != no {
        // An answer about another order is not applied to either.
        let mismatch = Mismatch::CombineOutTradeNo {
            expected: no.to_string(),
            got: txn.combine_out_trade_no.chars().take(64).collect(),
        };
        tracing::error!(order = %no, %mismatch, "ALERT: query answered for another order; nothing changed");
        return Err(RefreshError::Mismatch {
            combine_out_trade_no: no.to_string(),
            mismatch,
        });
    }
    Ok(payment::apply_transaction(store, &txn, EventSource::Query, None, now).await?)
}

fn has_code(e: &ApiError, codes: &[&str]) -> bool {
    e.code().is_some_and(|c| codes.contains(&c))
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
}
