//! Refunds of sub-orders: each by the sub-order's own merchant, with its own
//! credentials, by the sub-order's `transaction_id` (a combined order has
//! no refund of its own).
//!
//! [`RefundService::refund`] checks the rules and records the refund with
//! its `out_refund_no` **before** calling WeChat Pay (the store checks the
//! rules with the order row locked, so concurrent refunds cannot together
//! exceed a sub-order); a failed or timed-out call leaves it PROCESSING
//! without a `refund_id`, and every later attempt — a retry with the same
//! idempotency key, a query, the reconciliation sweep — re-sends the same
//! number with the same body, never a new number (a new number would
//! refund twice). The outcome arrives by refund notification
//! (`crate::notify::refund`) or by query.

mod api;

pub use api::{MerchantClients, RefundApi, RefundCallError};
// The protocol's refund vocabulary, for users of this module.
pub use wxpay_combine_core::refund::{wire, RefundRule, RefundStatus};

use crate::apiv3::Clock;
use crate::combine::ApiError;
use crate::store::{
    NewRefund, RefundApplied, RefundCreateError, RefundCreated, RefundRecord, RefundSource,
    RefundUpdate, Store, StoreError,
};
use std::sync::Arc;
use wire::{Refund, RefundRequest, RefundRequestAmount};

/// Longest `reason` WeChat Pay accepts, in bytes.
pub const MAX_REASON_BYTES: usize = 80;

/// Why a refund was not made (or its outcome is not known).
#[derive(Debug, thiserror::Error)]
pub enum RefundError {
    /// No such order.
    #[error("order {0} not found")]
    UnknownOrder(String),
    /// No such sub-order in the order.
    #[error("order {order} has no sub-order {out_trade_no}")]
    UnknownSubOrder {
        /// The order.
        order: String,
        /// The sub-order number asked for.
        out_trade_no: String,
    },
    /// No such refund.
    #[error("refund {0} not found")]
    UnknownRefund(String),
    /// A refund rule refuses it; nothing was stored.
    #[error("{0}")]
    Rule(RefundRule),
    /// The request itself is invalid (reason too long…); nothing was stored.
    #[error("{0}")]
    Invalid(String),
    /// The idempotency key was used with another request.
    #[error("idempotency key already used with another request")]
    KeyReused,
    /// The sub-order's merchant has no API credentials here; nothing was
    /// stored.
    #[error("merchant {0} has no API credentials here (add them under [[merchants]])")]
    NoCredentials(String),
    /// WeChat Pay refused the refund (confirmed: it does not know it); the
    /// refund is stored CLOSED and its amount is free again.
    #[error("WeChat Pay refused refund {out_refund_no}: {code}: {message}")]
    Refused {
        /// The refund number.
        out_refund_no: String,
        /// WeChat Pay's code.
        code: String,
        /// WeChat Pay's message.
        message: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RefundError {
    /// A stable code for API answers and the CLI.
    pub fn code(&self) -> &str {
        match self {
            RefundError::UnknownOrder(_) => "ORDER_NOT_FOUND",
            RefundError::UnknownSubOrder { .. } => "SUB_ORDER_NOT_FOUND",
            RefundError::UnknownRefund(_) => "REFUND_NOT_FOUND",
            RefundError::Rule(r) => r.code(),
            RefundError::Invalid(_) => "INVALID_REQUEST",
            RefundError::KeyReused => "IDEMPOTENCY_KEY_REUSED",
            RefundError::NoCredentials(_) => "MERCHANT_WITHOUT_CREDENTIALS",
            RefundError::Refused { code, .. } => code,
            RefundError::Store(_) => "INTERNAL",
        }
    }
}

/// A refund to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundOrder {
    /// The combined order.
    pub combine_out_trade_no: String,
    /// The sub-order to refund.
    pub out_trade_no: String,
    /// Fen.
    pub amount: i64,
    /// Shown to the payer (≤ 80 bytes).
    pub reason: Option<String>,
    /// The caller's idempotency key and the SHA-256 of its request.
    pub idempotency: Option<(String, String)>,
}

/// Makes, queries and settles refunds.
pub struct RefundService {
    store: Arc<dyn Store>,
    api: Arc<dyn RefundApi>,
    notify_url: String,
    clock: Arc<dyn Clock>,
    query_after_secs: i64,
}

impl std::fmt::Debug for RefundService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefundService")
            .field("notify_url", &self.notify_url)
            .finish_non_exhaustive()
    }
}

impl RefundService {
    /// A service over `store` calling `api` (which knows the merchants
    /// with credentials); refund notifications go to
    /// `notify_url`; a refund PROCESSING for `query_after_secs` is queried.
    pub fn new(
        store: Arc<dyn Store>,
        api: Arc<dyn RefundApi>,
        notify_url: String,
        clock: Arc<dyn Clock>,
        query_after_secs: i64,
    ) -> Self {
        Self {
            store,
            api,
            notify_url,
            clock,
            query_after_secs,
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Refunds `amount` fen of a sub-order: checks, records, calls WeChat
    /// Pay with the sub-order merchant's credentials, records the answer.
    /// A call that fails without an answer leaves the refund PROCESSING
    /// (returned as such); it is re-sent with the same number later.
    pub async fn refund(&self, order: RefundOrder) -> Result<RefundRecord, RefundError> {
        if let Some(r) = &order.reason {
            if r.len() > MAX_REASON_BYTES || r.chars().any(char::is_control) {
                return Err(RefundError::Invalid(format!(
                    "reason must be at most {MAX_REASON_BYTES} bytes without control characters"
                )));
            }
        }
        let stored = self
            .store
            .get_order(&order.combine_out_trade_no)
            .await?
            .ok_or_else(|| RefundError::UnknownOrder(order.combine_out_trade_no.clone()))?;
        let sub = stored
            .sub_orders
            .iter()
            .find(|s| s.out_trade_no == order.out_trade_no)
            .ok_or_else(|| RefundError::UnknownSubOrder {
                order: order.combine_out_trade_no.clone(),
                out_trade_no: order.out_trade_no.clone(),
            })?;
        if !self.api.can_refund(&sub.mchid) {
            return Err(RefundError::NoCredentials(sub.mchid.clone()));
        }
        let now = self.clock.now();
        let new = NewRefund {
            out_refund_no: new_out_refund_no(now),
            combine_out_trade_no: order.combine_out_trade_no.clone(),
            out_trade_no: order.out_trade_no.clone(),
            amount: order.amount,
            reason: order.reason.clone().filter(|r| !r.trim().is_empty()),
            idempotency: order.idempotency.clone(),
        };
        let record = match self.store.create_refund(&new, now).await {
            Ok(RefundCreated::Created(r)) => r,
            // A retry of the same request: finish what the first one began.
            Ok(RefundCreated::Existing(r))
                if r.status == RefundStatus::Processing && r.refund_id.is_none() =>
            {
                r
            }
            Ok(RefundCreated::Existing(r)) => return Ok(r),
            Err(RefundCreateError::UnknownOrder(o)) => return Err(RefundError::UnknownOrder(o)),
            Err(RefundCreateError::UnknownSubOrder {
                order,
                out_trade_no,
            }) => {
                return Err(RefundError::UnknownSubOrder {
                    order,
                    out_trade_no,
                })
            }
            Err(RefundCreateError::Refused(rule)) => return Err(RefundError::Rule(rule)),
            Err(RefundCreateError::KeyReused) => return Err(RefundError::KeyReused),
            Err(RefundCreateError::Store(e)) => return Err(e.into()),
        };
        tracing::info!(
            order = %record.combine_out_trade_no, out_trade_no = %record.out_trade_no,
            mchid = %record.mchid, out_refund_no = %record.out_refund_no, amount = record.amount,
            "refund recorded; sending it to WeChat Pay"
        );
        self.send(record).await
    }

    /// The request of a stored refund: the same body on every attempt.
    fn request(&self, r: &RefundRecord) -> RefundRequest {
        RefundRequest {
            sub_mchid: None,
            transaction_id: Some(r.transaction_id.clone()),
            out_trade_no: None,
            out_refund_no: r.out_refund_no.clone(),
            reason: r.reason.clone(),
            notify_url: Some(self.notify_url.clone()),
            funds_account: None,
            amount: RefundRequestAmount {
                refund: r.amount,
                total: r.total,
                currency: wxpay_combine_core::payment::CURRENCY.into(),
                from: None,
            },
            goods_detail: None,
        }
    }

    /// Sends (or re-sends) a stored refund not yet accepted.
    async fn send(&self, record: RefundRecord) -> Result<RefundRecord, RefundError> {
        match self.api.create(&record.mchid, &self.request(&record)).await {
            Ok(answer) => self.record(&record, &answer, RefundSource::Api, None).await,
            Err(RefundCallError::NoCredentials(m)) => Err(RefundError::NoCredentials(m)),
            Err(RefundCallError::Api(e)) if is_refusal(&e) => self.confirm_refusal(record, e).await,
            Err(RefundCallError::Api(e)) => {
                tracing::warn!(
                    out_refund_no = %record.out_refund_no, error = %e,
                    "refund call failed without an answer; it stays PROCESSING and is re-sent with the same number"
                );
                Ok(record)
            }
        }
    }

    /// WeChat Pay refused the create call. An error body may be unsigned,
    /// so before the refund is closed (freeing its amount) a verified query
    /// must confirm WeChat Pay does not know it.
    async fn confirm_refusal(
        &self,
        record: RefundRecord,
        refusal: ApiError,
    ) -> Result<RefundRecord, RefundError> {
        match self.api.query(&record.mchid, &record.out_refund_no).await {
            Ok(answer) => {
                self.record(&record, &answer, RefundSource::Query, None)
                    .await
            }
            Err(RefundCallError::Api(e)) if e.code() == Some("RESOURCE_NOT_EXISTS") => {
                let (code, message) = match &refusal {
                    ApiError::Service { code, message, .. } => (code.clone(), message.clone()),
                    other => ("REFUSED".to_string(), other.to_string()),
                };
                let update = RefundUpdate {
                    status: RefundStatus::Closed,
                    refund_id: None,
                    user_received_account: None,
                    success_time: None,
                    source: RefundSource::Api,
                    notification_id: None,
                    detail: format!("refused by WeChat Pay: {code}: {message}"),
                };
                self.store
                    .update_refund(&record.out_refund_no, &update, self.clock.now())
                    .await?;
                tracing::warn!(out_refund_no = %record.out_refund_no, code = %code, "refund refused by WeChat Pay; stored CLOSED");
                Err(RefundError::Refused {
                    out_refund_no: record.out_refund_no,
                    code,
                    message,
                })
            }
            Err(e) => {
                tracing::warn!(
                    out_refund_no = %record.out_refund_no, refusal = %refusal, query_error = %e,
                    "refund refused but the refusal could not be confirmed; it stays PROCESSING"
                );
                Ok(record)
            }
        }
    }

    /// Records WeChat Pay's answer about a refund, after checking it is
    /// about this refund (transaction and amount).
    async fn record(
        &self,
        record: &RefundRecord,
        answer: &Refund,
        source: RefundSource,
        notification_id: Option<String>,
    ) -> Result<RefundRecord, RefundError> {
        if answer.transaction_id != record.transaction_id || answer.amount.refund != record.amount {
            tracing::error!(
                out_refund_no = %record.out_refund_no,
                "ALERT: WeChat Pay's answer about a refund names another transaction or amount; nothing changed"
            );
            return Ok(record.clone());
        }
        let update = RefundUpdate {
            status: answer.status,
            refund_id: Some(answer.refund_id.clone()),
            user_received_account: answer.user_received_account.clone(),
            success_time: answer.success_time.clone(),
            source,
            notification_id,
            detail: format!("{} reports {}", source.as_str(), answer.status),
        };
        Ok(match self.apply(&record.out_refund_no, &update).await? {
            RefundApplied::Changed(_, r)
            | RefundApplied::Unchanged(r)
            | RefundApplied::Illegal(r) => r,
        })
    }

    /// Applies an update under the refund's row lock and logs what it did
    /// (the refund notification endpoint and the paths above share it).
    pub async fn apply(
        &self,
        out_refund_no: &str,
        update: &RefundUpdate,
    ) -> Result<RefundApplied, RefundError> {
        let applied = self
            .store
            .update_refund(out_refund_no, update, self.clock.now())
            .await?;
        match &applied {
            RefundApplied::Changed(from, r) => {
                tracing::info!(out_refund_no = %out_refund_no, from = %from, to = %r.status, source = update.source.as_str(), "refund status changed");
            }
            RefundApplied::Unchanged(_) => {}
            RefundApplied::Illegal(r) => {
                tracing::error!(
                    out_refund_no = %out_refund_no, stored = %r.status, reported = %update.status,
                    "ALERT: refund reported in a status it cannot take; nothing changed"
                );
            }
        }
        Ok(applied)
    }

    /// A refund as stored; a PROCESSING one not yet accepted is re-sent,
    /// and one PROCESSING for longer than the query delay (or any, with
    /// `force`) is asked about first.
    pub async fn get(&self, out_refund_no: &str, force: bool) -> Result<RefundRecord, RefundError> {
        let record = self
            .store
            .get_refund(out_refund_no)
            .await?
            .ok_or_else(|| RefundError::UnknownRefund(out_refund_no.to_string()))?;
        self.settle(record, force).await
    }

    async fn settle(&self, record: RefundRecord, force: bool) -> Result<RefundRecord, RefundError> {
        if record.status != RefundStatus::Processing {
            return Ok(record);
        }
        if record.refund_id.is_none() {
            return self.send(record).await;
        }
        let overdue = record.updated_at + self.query_after_secs <= self.clock.now();
        if !(force || overdue) {
            return Ok(record);
        }
        match self.api.query(&record.mchid, &record.out_refund_no).await {
            Ok(answer) => {
                self.record(&record, &answer, RefundSource::Query, None)
                    .await
            }
            Err(e) => {
                tracing::warn!(out_refund_no = %record.out_refund_no, error = %e, "refund query failed; answering the stored state");
                Ok(record)
            }
        }
    }

    /// The reconciliation sweep: refunds PROCESSING for longer than the
    /// query delay are re-sent (not yet accepted) or queried. Returns how
    /// many were looked at.
    pub async fn sweep(&self, limit: i64) -> Result<usize, RefundError> {
        let due = self
            .store
            .processing_refunds(self.clock.now() - self.query_after_secs, limit)
            .await?;
        let n = due.len();
        for r in due {
            if let Err(e) = self.settle(r, true).await {
                tracing::warn!(error = %e, "refund sweep: one refund could not be settled");
            }
        }
        Ok(n)
    }
}

/// Whether an error is WeChat Pay refusing the request (a 4xx other than
/// 429), as opposed to a failure that leaves the outcome unknown.
fn is_refusal(e: &ApiError) -> bool {
    matches!(e, ApiError::Service { status, .. } if (400..500).contains(status) && *status != 429)
}

/// A new refund number: `RF`, the Beijing time to the second and 12 random
/// characters (unique per merchant, within WeChat Pay's 64 characters).
fn new_out_refund_no(now: i64) -> String {
    let stamp = wxpay_combine_core::timefmt::compact_beijing(now).unwrap_or_default();
    let nonce: String = crate::apiv3::generate_nonce()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    format!("RF{stamp}{nonce}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refund_numbers_are_valid_and_distinct() {
        let a = new_out_refund_no(1_700_000_000);
        let b = new_out_refund_no(1_700_000_000);
        assert_ne!(a, b);
        assert!(
            wxpay_combine_core::refund::is_valid_out_refund_no(&a),
            "{a}"
        );
        assert!(a.starts_with("RF2023"), "{a}");
    }
}
