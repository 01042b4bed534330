//! What became of one notification, and the HTTP status WeChat Pay gets
//! for it.

use http::StatusCode;

/// The result of handling one notification. Only [`Applied`] and
/// [`Duplicate`] are acknowledged (204); everything else answers
/// `{"code":"FAIL",…}` with a 4xx/5xx status and changes nothing, and
/// WeChat Pay retries it on its schedule (15 s … 6 h, 24 h in all).
///
/// [`Applied`]: NotifyOutcome::Applied
/// [`Duplicate`]: NotifyOutcome::Duplicate
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotifyOutcome {
    /// The state change was committed durably.
    Applied,
    /// Already applied (same notification again, or the state was reached
    /// through a query): acknowledged, nothing written.
    Duplicate,
    /// A `Wechatpay-*` header is missing.
    MissingHeaders,
    /// The signature does not verify (or names an unsupported type, or a
    /// platform certificate outside its validity).
    BadSignature,
    /// A `WECHATPAY/SIGNTEST/` probe: WeChat Pay checking that we verify.
    SignatureProbe,
    /// The timestamp is 300 s or more away from now.
    Stale,
    /// `Wechatpay-Serial` names no key we hold.
    UnknownSerial,
    /// The body exceeds the size limit.
    TooLarge,
    /// The envelope or the decrypted resource is not the expected JSON.
    Malformed,
    /// The resource does not decrypt (wrong tag, associated data, nonce…).
    Undecryptable,
    /// Authentic, but an `event_type` (or `resource.original_type`) this
    /// endpoint does not handle (a refund event sent to the pay endpoint, or
    /// the other way round); the message names the field.
    WrongEvent,
    /// Authentic, but disagrees with the stored order (ids, amounts,
    /// sub-order set): an alert.
    Mismatch,
    /// Authentic, but no such order here.
    UnknownOrder,
    /// The notification id was already received for a different
    /// transaction (another body saying exactly what is stored is a
    /// [`NotifyOutcome::Duplicate`]).
    Replayed,
    /// Authentic and matching, but the order cannot take the reported state
    /// (e.g. SUCCESS for a CLOSED order): an incident, alerted.
    Rejected,
    /// Processing did not finish within the time budget.
    Timeout,
    /// The database (or the handler) failed.
    Error,
}

impl NotifyOutcome {
    /// Every outcome, in counter order.
    pub const ALL: [NotifyOutcome; 17] = [
        NotifyOutcome::Applied,
        NotifyOutcome::Duplicate,
        NotifyOutcome::MissingHeaders,
        NotifyOutcome::BadSignature,
        NotifyOutcome::SignatureProbe,
        NotifyOutcome::Stale,
        NotifyOutcome::UnknownSerial,
        NotifyOutcome::TooLarge,
        NotifyOutcome::Malformed,
        NotifyOutcome::Undecryptable,
        NotifyOutcome::WrongEvent,
        NotifyOutcome::Mismatch,
        NotifyOutcome::UnknownOrder,
        NotifyOutcome::Replayed,
        NotifyOutcome::Rejected,
        NotifyOutcome::Timeout,
        NotifyOutcome::Error,
    ];

    /// A stable snake_case name (for metrics labels and logs).
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyOutcome::Applied => "applied",
            NotifyOutcome::Duplicate => "duplicate",
            NotifyOutcome::MissingHeaders => "missing_headers",
            NotifyOutcome::BadSignature => "bad_signature",
            NotifyOutcome::SignatureProbe => "signature_probe",
            NotifyOutcome::Stale => "stale",
            NotifyOutcome::UnknownSerial => "unknown_serial",
            NotifyOutcome::TooLarge => "too_large",
            NotifyOutcome::Malformed => "malformed",
            NotifyOutcome::Undecryptable => "undecryptable",
            NotifyOutcome::WrongEvent => "wrong_event",
            NotifyOutcome::Mismatch => "mismatch",
            NotifyOutcome::UnknownOrder => "unknown_order",
            NotifyOutcome::Replayed => "replayed",
            NotifyOutcome::Rejected => "rejected",
            NotifyOutcome::Timeout => "timeout",
            NotifyOutcome::Error => "error",
        }
    }

    /// Whether WeChat Pay gets a success reply.
    pub fn is_ack(self) -> bool {
        matches!(self, NotifyOutcome::Applied | NotifyOutcome::Duplicate)
    }

    /// The HTTP status answered.
    pub fn status(self) -> StatusCode {
        match self {
            NotifyOutcome::Applied | NotifyOutcome::Duplicate => StatusCode::NO_CONTENT,
            NotifyOutcome::MissingHeaders
            | NotifyOutcome::BadSignature
            | NotifyOutcome::SignatureProbe
            | NotifyOutcome::Stale
            | NotifyOutcome::UnknownSerial => StatusCode::UNAUTHORIZED,
            NotifyOutcome::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            NotifyOutcome::Malformed | NotifyOutcome::Undecryptable | NotifyOutcome::WrongEvent => {
                StatusCode::BAD_REQUEST
            }
            NotifyOutcome::UnknownOrder => StatusCode::NOT_FOUND,
            NotifyOutcome::Mismatch | NotifyOutcome::Replayed | NotifyOutcome::Rejected => {
                StatusCode::CONFLICT
            }
            NotifyOutcome::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            NotifyOutcome::Error => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}
