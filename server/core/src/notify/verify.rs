//! The pure part of notification handling: headers and raw body in, an
//! authenticated, decrypted and parsed transaction (or the refusal) out. No
//! database, no clock but the verifier's, no I/O — so the fuzz target
//! `notify_path` runs exactly what the merchant's notification handler runs
//! before it touches the store.

use super::{NotifyOutcome, SIGNTEST_PREFIX};
use crate::apiv3::{ApiV3Key, SignatureHeaders, Verifier, VerifyError};
use crate::combine::wire::{CombineTransaction, NotificationEnvelope};
use crate::payment::{self, clip};
use crate::refund::wire::RefundNotice;

/// Longest envelope `id` accepted (real ones are 36 characters).
pub const MAX_ID_LEN: usize = 128;

/// A notification that passed every check that needs no stored order.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedNotification {
    /// The envelope `id`, trimmed (1..=[`MAX_ID_LEN`] bytes).
    pub id: String,
    /// The decrypted resource, addressed to this merchant and app.
    pub transaction: CombineTransaction,
}

/// Why a notification was refused before the store: the outcome to count
/// and the message for the `{"code":"FAIL"}` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The outcome (never [`NotifyOutcome::Applied`] or
    /// [`NotifyOutcome::Duplicate`]).
    pub outcome: NotifyOutcome,
    /// Reply message.
    pub message: &'static str,
}

fn refuse(outcome: NotifyOutcome, message: &'static str) -> Refusal {
    Refusal { outcome, message }
}

/// Runs the store-free checks in order: [`check_signature`] → envelope
/// JSON, id and `event_type` (`TRANSACTION.*`) → AEAD decryption with
/// `key` → plaintext JSON → `combine_mchid` and `combine_appid`. Each
/// refusal is logged here.
pub fn verify_notification<'a>(
    verifier: &Verifier,
    key: &ApiV3Key,
    combine_mchid: &str,
    combine_appid: &str,
    header: impl Fn(&str) -> Option<&'a str>,
    body: &[u8],
) -> Result<VerifiedNotification, Refusal> {
    check_signature(verifier, header, body)?;
    open_notification(key, combine_mchid, combine_appid, body)
}

/// The signature step every notification goes through first:
/// `Wechatpay-*` headers (looked up case-insensitively through `header`)
/// → `WECHATPAY/SIGNTEST/` probe → signature and 300 s window over the
/// raw `body`.
pub fn check_signature<'a>(
    verifier: &Verifier,
    header: impl Fn(&str) -> Option<&'a str>,
    body: &[u8],
) -> Result<(), Refusal> {
    use NotifyOutcome as O;
    let sig = match SignatureHeaders::from_lookup(header) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "notification refused: signature headers missing");
            return Err(refuse(
                O::MissingHeaders,
                "missing Wechatpay signature headers",
            ));
        }
    };
    if sig.signature.starts_with(SIGNTEST_PREFIX) {
        tracing::info!("signature probe (WECHATPAY/SIGNTEST) answered FAIL as required");
        return Err(refuse(O::SignatureProbe, "signature verification failed"));
    }
    if let Err(e) = verifier.verify(&sig, body) {
        let outcome = match e {
            VerifyError::StaleTimestamp { .. } => O::Stale,
            VerifyError::UnknownSerial(_) => O::UnknownSerial,
            VerifyError::MissingHeader(_) => O::MissingHeaders,
            _ => O::BadSignature,
        };
        tracing::warn!(error = %e, serial = %clip(&sig.serial), "notification refused: verification failed");
        return Err(refuse(outcome, "signature verification failed"));
    }
    Ok(())
}

/// Which notifications an endpoint handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `TRANSACTION.*`, resource `transaction`.
    Payment,
    /// `REFUND.*`, resource `refund`.
    Refund,
}

impl Kind {
    /// Whether this endpoint handles the event; the refusal names the
    /// field that does not fit.
    fn check(self, event_type: &str, original_type: Option<&str>) -> Result<(), &'static str> {
        let (prefix, resource) = match self {
            Kind::Payment => ("TRANSACTION.", "transaction"),
            Kind::Refund => ("REFUND.", "refund"),
        };
        if !event_type.starts_with(prefix) {
            return Err(match self {
                Kind::Payment => "event_type is not TRANSACTION.* (refund events go to the refund notification URL)",
                Kind::Refund => "event_type is not REFUND.* (payment events go to the pay notification URL)",
            });
        }
        if !original_type.is_none_or(|t| t.is_empty() || t == resource) {
            return Err(match self {
                Kind::Payment => "resource.original_type is not transaction",
                Kind::Refund => "resource.original_type is not refund",
            });
        }
        Ok(())
    }
}

/// A verified body's envelope, opened: id and decrypted plaintext.
struct Opened {
    id: String,
    plaintext: Vec<u8>,
}

/// Envelope JSON and id → `event_type` for `kind` → AEAD decryption.
fn open_envelope(key: &ApiV3Key, kind: Kind, body: &[u8]) -> Result<Opened, Refusal> {
    use NotifyOutcome as O;
    let envelope: NotificationEnvelope = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "signed notification refused: envelope is not the expected JSON");
            return Err(refuse(O::Malformed, "malformed notification body"));
        }
    };
    let id = envelope.id.trim();
    if id.is_empty() || id.len() > MAX_ID_LEN {
        tracing::warn!("signed notification refused: bad id");
        return Err(refuse(O::Malformed, "malformed notification id"));
    }
    if let Err(message) = kind.check(
        &envelope.event_type,
        envelope.resource.original_type.as_deref(),
    ) {
        tracing::warn!(
            notification_id = %id, event_type = %clip(&envelope.event_type),
            original_type = %clip(envelope.resource.original_type.as_deref().unwrap_or("")),
            "signed notification refused: {message}"
        );
        return Err(refuse(O::WrongEvent, message));
    }
    match envelope.resource.open(key) {
        Ok(plaintext) => Ok(Opened {
            id: id.to_string(),
            plaintext,
        }),
        Err(e) => {
            tracing::warn!(notification_id = %id, error = %e, "signed notification refused: resource does not decrypt");
            Err(refuse(O::Undecryptable, "resource decryption failed"))
        }
    }
}

/// The checks after the signature (the second half of
/// [`verify_notification`], which calls it only for a verified `body`):
/// envelope JSON, id and event type → AEAD decryption with `key` →
/// plaintext JSON → `combine_mchid` and `combine_appid`. Public so the
/// fuzz target can drive it without an RSA signature per input; never call
/// it on an unverified body.
pub fn open_notification(
    key: &ApiV3Key,
    combine_mchid: &str,
    combine_appid: &str,
    body: &[u8],
) -> Result<VerifiedNotification, Refusal> {
    use NotifyOutcome as O;
    let Opened { id, plaintext } = open_envelope(key, Kind::Payment, body)?;
    let transaction: CombineTransaction = match serde_json::from_slice(&plaintext) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(notification_id = %id, error = %e, "signed notification refused: decrypted resource is not a combined transaction");
            return Err(refuse(O::Malformed, "malformed resource"));
        }
    };
    if let Err(m) = payment::check_merchant(&transaction, combine_mchid, combine_appid) {
        tracing::error!(
            order = %clip(&transaction.combine_out_trade_no), notification_id = %id, mismatch = %m,
            "ALERT: signed notification for another merchant; nothing changed"
        );
        return Err(refuse(O::Mismatch, "notification does not match the order"));
    }
    Ok(VerifiedNotification { id, transaction })
}

/// A refund notification that passed every check that needs no stored
/// refund.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedRefundNotice {
    /// The envelope `id`, trimmed.
    pub id: String,
    /// The decrypted resource; its merchant (when named) is `mchid`.
    pub notice: RefundNotice,
}

/// The checks after the signature for a refund notification, verified by
/// the WeChat Pay key of merchant `mchid`: envelope JSON, id and event
/// type (`REFUND.*`) → AEAD decryption with that merchant's APIv3 `key`
/// → plaintext JSON → the merchant it names is `mchid` (notices without a
/// merchant field, the Java SDK's shape, are matched by the stored refund
/// alone). Never call it on an unverified body.
pub fn open_refund_notification(
    key: &ApiV3Key,
    mchid: &str,
    body: &[u8],
) -> Result<VerifiedRefundNotice, Refusal> {
    use NotifyOutcome as O;
    let Opened { id, plaintext } = open_envelope(key, Kind::Refund, body)?;
    let notice: RefundNotice = match serde_json::from_slice(&plaintext) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(notification_id = %id, error = %e, "signed notification refused: decrypted resource is not a refund");
            return Err(refuse(O::Malformed, "malformed resource"));
        }
    };
    if let Some(named) = notice.merchant() {
        if named != mchid {
            tracing::error!(
                notification_id = %id, named = %clip(named), verified_for = %mchid,
                "ALERT: signed refund notification names another merchant; nothing changed"
            );
            return Err(refuse(
                O::Mismatch,
                "notification does not match the refund",
            ));
        }
    }
    Ok(VerifiedRefundNotice { id, notice })
}
