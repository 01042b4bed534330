//! The payment-notification endpoint (`POST /wxpay/notify` by default).
//!
//! Order of checks, each refusing with `{"code":"FAIL",…}` and changing
//! nothing: body size → `Wechatpay-*` headers → `WECHATPAY/SIGNTEST/` probe →
//! signature and 300 s window (the same [`Verifier`] path as API responses,
//! over the raw bytes, before any parsing) → envelope JSON → AEAD decryption
//! with the APIv3 key → plaintext JSON → our combine_mchid/appid → the stored
//! order (ids, exact sub-order set, amounts; see [`crate::payment`]) → the
//! state change in one transaction under a row lock. The reply is 204 only
//! after that commit is durable; a repeat is acknowledged without writing,
//! including a repeat with another body (WeChat Pay re-encrypts retries)
//! whose decrypted transaction is exactly what is stored. The same id with a
//! different transaction is a 409 and an ALERT.
//!
//! A notification that is authentic and matches the order but reports
//! SUCCESS for an order already CLOSED (or otherwise final) means money was
//! taken for an order we gave up on: an incident. It is logged as an alert,
//! the state is left alone, and the reply is 409 FAIL. WeChat Pay then keeps
//! retrying on its 24 h schedule, so the alert repeats while someone looks
//! (refund by hand); acknowledging with 2xx would silence the only signal
//! that reaches us from WeChat Pay's side.

mod outcome;
pub mod refund;
pub mod settings;

pub use outcome::{NotifyCounters, NotifyReply};
pub use wxpay_combine_core::notify::{
    open_notification, verify_notification, NotifyOutcome, Refusal, VerifiedNotification,
    MAX_ID_LEN, SIGNTEST_PREFIX,
};

use crate::apiv3::{ApiV3Key, Clock, Verifier};
use crate::combine::{ApplyOutcome, EventSource, NotificationRef, RejectReason};
use crate::payment::{self, clip, PaymentError};
use crate::store::Store;
use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap};
use axum::routing::post;
use axum::Router;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;

/// Where the notification endpoint is mounted unless configured otherwise.
pub const DEFAULT_PATH: &str = "/wxpay/notify";

/// Largest accepted body. Real notifications are about 1–2 KiB (10
/// sub-orders with coupons stay far below this).
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// Time budget from the first body byte to the reply. WeChat Pay counts a
/// reply after 5 s as a failure; 4 s leaves a margin for the network.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(4);

/// Which merchant this endpoint serves, and its limits.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// The initiating merchant (combine_mchid) every notification must name.
    pub combine_mchid: String,
    /// The combine_appid every notification must name.
    pub combine_appid: String,
    /// Body size limit (413 above it).
    pub max_body_bytes: usize,
    /// Processing budget (5xx FAIL when exceeded).
    pub timeout: Duration,
}

impl NotifyConfig {
    /// Defaults for the limits.
    pub fn new(combine_mchid: impl Into<String>, combine_appid: impl Into<String>) -> Self {
        Self {
            combine_mchid: combine_mchid.into(),
            combine_appid: combine_appid.into(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Handles payment notifications. Cheap to share: wrap it in an `Arc` and
/// mount [`router`].
#[derive(Debug)]
pub struct NotifyHandler {
    store: Arc<dyn Store>,
    verifier: Arc<Verifier>,
    key: ApiV3Key,
    config: NotifyConfig,
    clock: Arc<dyn Clock>,
    counters: NotifyCounters,
    unknown_serial_hook: Option<UnknownSerialHook>,
}

/// Called when a notification names a `Wechatpay-Serial` the verifier does
/// not hold (certificate mode: a rotated platform certificate). It must not
/// block: the reply stays FAIL, and WeChat Pay's retry finds the refreshed
/// certificates.
#[derive(Clone)]
struct UnknownSerialHook(Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for UnknownSerialHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnknownSerialHook")
    }
}

impl NotifyHandler {
    /// A handler for `config`'s merchant. `clock` stamps stored changes; the
    /// replay window is checked by `verifier` with its own clock (normally
    /// the same one).
    pub fn new(
        store: Arc<dyn Store>,
        verifier: Arc<Verifier>,
        key: ApiV3Key,
        config: NotifyConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            verifier,
            key,
            config,
            clock,
            counters: NotifyCounters::default(),
            unknown_serial_hook: None,
        }
    }

    /// Calls `hook` whenever a notification names an unknown serial, e.g. to
    /// start a (rate-limited) platform-certificate refresh in the background.
    pub fn with_unknown_serial_hook(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.unknown_serial_hook = Some(UnknownSerialHook(Arc::new(hook)));
        self
    }

    /// The configuration.
    pub fn config(&self) -> &NotifyConfig {
        &self.config
    }

    /// Per-outcome counters.
    pub fn counters(&self) -> &NotifyCounters {
        &self.counters
    }

    /// Handles one notification already read into memory: runs the checks
    /// and the state change within the time budget (counted from
    /// `started`), records the outcome, and returns the reply.
    ///
    /// The work runs in its own task: when the budget runs out the reply is
    /// a 503 FAIL, but a database commit already under way is not cut off
    /// mid-flight; if it lands, WeChat Pay's retry is acknowledged as a
    /// duplicate.
    pub async fn handle(
        self: &Arc<Self>,
        headers: HeaderMap,
        body: Bytes,
        started: Instant,
    ) -> NotifyReply {
        let this = Arc::clone(self);
        let task = tokio::spawn(
            async move { this.process(&headers, &body).await }.instrument(tracing::Span::current()),
        );
        let deadline = started + self.config.timeout;
        let reply = match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(join)) => {
                tracing::error!(error = %join, "notification handler task failed");
                NotifyReply::new(NotifyOutcome::Error, "internal error")
            }
            Err(_) => {
                tracing::error!(
                    budget_ms = self.config.timeout.as_millis() as u64,
                    "notification not processed within the time budget; answered FAIL"
                );
                NotifyReply::new(NotifyOutcome::Timeout, "processing timed out")
            }
        };
        self.counters.record(reply.outcome);
        reply
    }

    /// The checks and the state change (no time budget, no counting).
    async fn process(&self, headers: &HeaderMap, body: &[u8]) -> NotifyReply {
        use NotifyOutcome as O;
        let verified = match verify_notification(
            &self.verifier,
            &self.key,
            &self.config.combine_mchid,
            &self.config.combine_appid,
            |name| headers.get(name).and_then(|v| v.to_str().ok()),
            body,
        ) {
            Ok(v) => v,
            Err(refusal) => {
                if let (O::UnknownSerial, Some(hook)) = (refusal.outcome, &self.unknown_serial_hook)
                {
                    (hook.0)();
                }
                return NotifyReply::new(refusal.outcome, refusal.message);
            }
        };
        let (id, txn) = (verified.id.as_str(), &verified.transaction);
        let order = clip(&txn.combine_out_trade_no);

        let notification = NotificationRef {
            id: id.to_string(),
            body_sha256: payment::body_sha256(body),
        };
        let now = self.clock.now();
        // Every line about this order (here and in payment) carries its number.
        let span = tracing::info_span!("notification", combine_out_trade_no = %order);
        let applied = payment::apply_transaction(
            &*self.store,
            txn,
            EventSource::Notify,
            Some(notification),
            now,
        )
        .instrument(span.clone())
        .await;
        let _entered = span.enter(); // no await below
        match applied {
            Ok(ApplyOutcome::Applied(o)) => {
                tracing::info!(order = %o.combine_out_trade_no, notification_id = %id, state = %o.state, "notification applied");
                NotifyReply::new(O::Applied, "")
            }
            Ok(ApplyOutcome::AlreadyApplied(o)) => {
                tracing::info!(order = %o.combine_out_trade_no, notification_id = %id, state = %o.state, "duplicate notification acknowledged");
                NotifyReply::new(O::Duplicate, "")
            }
            Ok(ApplyOutcome::Rejected {
                order: o,
                reason: RejectReason::NotificationReplayed { .. },
            }) => {
                tracing::error!(
                    order = %o.combine_out_trade_no, notification_id = %id,
                    "ALERT: notification id replayed with a different transaction; nothing changed"
                );
                NotifyReply::new(
                    O::Replayed,
                    "notification id already used for a different transaction",
                )
            }
            Ok(ApplyOutcome::Rejected { order: o, reason }) => {
                // payment::apply_transaction has logged the alert.
                NotifyReply::new(
                    O::Rejected,
                    format!("order {} is {}: {reason}", o.combine_out_trade_no, o.state),
                )
            }
            Err(PaymentError::UnknownOrder(_)) => {
                tracing::warn!(order = %order, notification_id = %id, "notification for an unknown order refused");
                NotifyReply::new(O::UnknownOrder, "unknown order")
            }
            Err(PaymentError::Mismatch { .. }) => {
                NotifyReply::new(O::Mismatch, "notification does not match the order")
            }
            Err(PaymentError::Store(e)) => {
                tracing::error!(order = %order, notification_id = %id, error = %e, "notification not stored: database error");
                NotifyReply::new(O::Error, "storage error")
            }
        }
    }
}

/// A notification request read into memory: headers and the raw body bytes
/// exactly as received (the signature covers them), at most
/// [`NotifyConfig::max_body_bytes`].
#[derive(Debug)]
pub struct RawNotification {
    /// Request headers.
    pub headers: HeaderMap,
    /// Raw body.
    pub body: Bytes,
    /// When reading started (the time budget counts from here).
    pub started: Instant,
}

impl FromRequest<Arc<NotifyHandler>> for RawNotification {
    type Rejection = NotifyReply;

    async fn from_request(req: Request, state: &Arc<NotifyHandler>) -> Result<Self, NotifyReply> {
        let started = Instant::now();
        let limit = state.config.max_body_bytes;
        let deadline = started + state.config.timeout;
        let (parts, body) = req.into_parts();
        let reject = |outcome: NotifyOutcome, message: &str| {
            state.counters.record(outcome);
            NotifyReply::new(outcome, message)
        };
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            tracing::warn!(limit, declared, "notification refused: body too large");
            return Err(reject(NotifyOutcome::TooLarge, "body too large"));
        }
        match tokio::time::timeout_at(deadline, read_limited(body, limit)).await {
            Ok(Ok(body)) => Ok(RawNotification {
                headers: parts.headers,
                body,
                started,
            }),
            Ok(Err(ReadError::TooLarge)) => {
                tracing::warn!(limit, "notification refused: body too large");
                Err(reject(NotifyOutcome::TooLarge, "body too large"))
            }
            Ok(Err(ReadError::Body(e))) => {
                tracing::warn!(error = %e, "notification refused: body could not be read");
                Err(reject(NotifyOutcome::Malformed, "body could not be read"))
            }
            Err(_) => {
                tracing::warn!("notification refused: body not received within the time budget");
                Err(reject(NotifyOutcome::Timeout, "body read timed out"))
            }
        }
    }
}

pub(crate) enum ReadError {
    TooLarge,
    Body(axum::Error),
}

/// Reads the body, stopping as soon as it exceeds `limit`.
pub(crate) async fn read_limited(body: Body, limit: usize) -> Result<Bytes, ReadError> {
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ReadError::Body)?;
        if buf.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

async fn endpoint(State(handler): State<Arc<NotifyHandler>>, raw: RawNotification) -> NotifyReply {
    handler.handle(raw.headers, raw.body, raw.started).await
}

/// A router serving `POST path` with `handler` (merge it into the app's
/// router; other methods get 405).
pub fn router(handler: Arc<NotifyHandler>, path: &str) -> Router {
    Router::new()
        .route(path, post(endpoint))
        .with_state(handler)
}
