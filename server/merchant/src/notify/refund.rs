//! The refund-notification endpoint (`POST /wxpay/refund-notify` by
//! default), the refund counterpart of the payment endpoint, with the same
//! replies and guarantees.
//!
//! Order of checks, each refusing with `{"code":"FAIL",…}` and changing
//! nothing: body size → `Wechatpay-Serial` picks the merchant whose WeChat
//! Pay key it names (refunds are notified per refunding merchant) →
//! signature and 300 s window over the raw body → envelope, `REFUND.*`
//! event type → AEAD decryption with that merchant's APIv3 key → the
//! merchant named inside is that merchant → the stored refund (merchant,
//! sub-order, transaction, refund number, amounts) → the status change
//! under the refund's row lock. 204 only after the commit; repeats are
//! acknowledged without writing.

use super::{read_limited, NotifyCounters, NotifyOutcome, NotifyReply, ReadError};
use crate::apiv3::{ApiV3Key, Verifier};
use crate::payment::clip;
use crate::refund::RefundService;
use crate::store::{RefundApplied, RefundRecord, RefundSource, RefundUpdate};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use wxpay_combine_core::notify::{check_signature, open_refund_notification};
use wxpay_combine_core::refund::wire::RefundNotice;

/// Where the refund-notification endpoint is mounted unless configured
/// otherwise.
pub const DEFAULT_REFUND_PATH: &str = "/wxpay/refund-notify";

/// One merchant whose refund notifications this endpoint accepts.
#[derive(Clone)]
pub struct RefundMerchantKeys {
    /// The merchant.
    pub mchid: String,
    /// Verifies WeChat Pay's signatures addressed to it.
    pub verifier: Arc<Verifier>,
    /// Its APIv3 key (decrypts the resource).
    pub apiv3_key: ApiV3Key,
}

impl std::fmt::Debug for RefundMerchantKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefundMerchantKeys")
            .field("mchid", &self.mchid)
            .finish_non_exhaustive()
    }
}

/// Handles refund notifications for every merchant with credentials.
#[derive(Debug)]
pub struct RefundNotifyHandler {
    merchants: Vec<RefundMerchantKeys>,
    service: Arc<RefundService>,
    counters: NotifyCounters,
    max_body_bytes: usize,
    timeout: Duration,
}

impl RefundNotifyHandler {
    /// A handler for `merchants`, applying through `service`.
    pub fn new(
        merchants: Vec<RefundMerchantKeys>,
        service: Arc<RefundService>,
        max_body_bytes: usize,
        timeout: Duration,
    ) -> Self {
        Self {
            merchants,
            service,
            counters: NotifyCounters::default(),
            max_body_bytes,
            timeout,
        }
    }

    /// Per-outcome counts.
    pub fn counters(&self) -> &NotifyCounters {
        &self.counters
    }

    /// Handles one notification within the time budget (the work runs in
    /// its own task, so a commit under way is never cut off).
    pub async fn handle(self: &Arc<Self>, headers: HeaderMap, body: Bytes) -> NotifyReply {
        let this = Arc::clone(self);
        let task = tokio::spawn(async move { this.process(&headers, &body).await });
        let reply = match tokio::time::timeout(self.timeout, task).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(join)) => {
                tracing::error!(error = %join, "refund notification handler task failed");
                NotifyReply::new(NotifyOutcome::Error, "internal error")
            }
            Err(_) => NotifyReply::new(NotifyOutcome::Timeout, "processing timed out"),
        };
        self.counters.record(reply.outcome);
        reply
    }

    async fn process(&self, headers: &HeaderMap, body: &[u8]) -> NotifyReply {
        use NotifyOutcome as O;
        let lookup = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let Some(serial) = lookup("Wechatpay-Serial") else {
            return NotifyReply::new(O::MissingHeaders, "missing Wechatpay signature headers");
        };
        // The serial names the WeChat Pay key, and so the merchant, the
        // notification was signed for.
        let Some(merchant) = self
            .merchants
            .iter()
            .find(|m| m.verifier.serials().iter().any(|s| s == serial))
        else {
            tracing::warn!(serial = %clip(serial), "refund notification refused: serial names no configured merchant's key");
            return NotifyReply::new(O::UnknownSerial, "signature verification failed");
        };
        if let Err(r) = check_signature(&merchant.verifier, lookup, body) {
            return NotifyReply::new(r.outcome, r.message);
        }
        let verified = match open_refund_notification(&merchant.apiv3_key, &merchant.mchid, body) {
            Ok(v) => v,
            Err(r) => return NotifyReply::new(r.outcome, r.message),
        };
        let notice = &verified.notice;
        let stored = match self.service.store().get_refund(&notice.out_refund_no).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                tracing::warn!(out_refund_no = %clip(&notice.out_refund_no), "refund notification for an unknown refund refused");
                return NotifyReply::new(O::UnknownOrder, "unknown refund");
            }
            Err(e) => {
                tracing::error!(error = %e, "refund notification not stored: database error");
                return NotifyReply::new(O::Error, "storage error");
            }
        };
        if let Err(what) = matches_stored(notice, &merchant.mchid, &stored) {
            tracing::error!(
                out_refund_no = %stored.out_refund_no, notification_id = %verified.id, mismatch = %what,
                "ALERT: signed refund notification disagrees with the stored refund; nothing changed"
            );
            return NotifyReply::new(O::Mismatch, "notification does not match the refund");
        }
        let update = RefundUpdate {
            status: notice.refund_status,
            refund_id: Some(notice.refund_id.clone()),
            user_received_account: notice.user_received_account.clone(),
            success_time: notice.success_time.clone(),
            source: RefundSource::Notify,
            notification_id: Some(verified.id.clone()),
            detail: format!(
                "notify reports {} (notification {})",
                notice.refund_status,
                clip(&verified.id)
            ),
        };
        match self.service.apply(&stored.out_refund_no, &update).await {
            Ok(RefundApplied::Changed(..)) => NotifyReply::new(O::Applied, ""),
            Ok(RefundApplied::Unchanged(_)) => NotifyReply::new(O::Duplicate, ""),
            Ok(RefundApplied::Illegal(r)) => NotifyReply::new(
                O::Rejected,
                format!("refund {} is {}", r.out_refund_no, r.status),
            ),
            Err(e) => {
                tracing::error!(error = %e, "refund notification not stored: database error");
                NotifyReply::new(O::Error, "storage error")
            }
        }
    }
}

/// Compares a notice with the stored refund: the merchant that verified it,
/// the sub-order, the transaction, the refund number and the amounts.
fn matches_stored(n: &RefundNotice, mchid: &str, r: &RefundRecord) -> Result<(), String> {
    if r.mchid != mchid {
        return Err(format!(
            "refund belongs to {}, notified for {mchid}",
            r.mchid
        ));
    }
    if n.out_trade_no != r.out_trade_no {
        return Err(format!(
            "out_trade_no {} ≠ {}",
            clip(&n.out_trade_no),
            r.out_trade_no
        ));
    }
    if n.transaction_id != r.transaction_id {
        return Err("transaction_id differs".into());
    }
    if n.amount.refund != r.amount || n.amount.total != r.total {
        return Err(format!(
            "amounts {}/{} ≠ stored {}/{}",
            n.amount.refund, n.amount.total, r.amount, r.total
        ));
    }
    if let Some(id) = &r.refund_id {
        if *id != n.refund_id {
            return Err("refund_id differs".into());
        }
    }
    Ok(())
}

async fn endpoint(State(handler): State<Arc<RefundNotifyHandler>>, req: Request) -> NotifyReply {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let reject = |outcome: NotifyOutcome, message: &str| {
        handler.counters.record(outcome);
        NotifyReply::new(outcome, message)
    };
    if declared.is_some_and(|n| n > handler.max_body_bytes as u64) {
        return reject(NotifyOutcome::TooLarge, "body too large");
    }
    let body =
        match tokio::time::timeout(handler.timeout, read_limited(body, handler.max_body_bytes))
            .await
        {
            Ok(Ok(b)) => b,
            Ok(Err(ReadError::TooLarge)) => {
                return reject(NotifyOutcome::TooLarge, "body too large")
            }
            Ok(Err(ReadError::Body(_))) => {
                return reject(NotifyOutcome::Malformed, "body could not be read")
            }
            Err(_) => return reject(NotifyOutcome::Timeout, "body read timed out"),
        };
    handler.handle(parts.headers, body).await
}

/// A router serving `POST path` with `handler`.
pub fn router(handler: Arc<RefundNotifyHandler>, path: &str) -> Router {
    Router::new()
        .route(path, post(endpoint))
        .with_state(handler)
}
