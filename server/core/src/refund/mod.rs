//! Refunds of combined-order sub-orders (`/v3/refund/domestic/refunds`):
//! the refund's status vocabulary, the wire types, and the business rules
//! a new refund must satisfy — shared by the merchant library (which checks
//! them before it calls WeChat Pay) and the simulator (which enforces them
//! as the real service does).
//!
//! A combined order has no refund of its own: each sub-order is refunded
//! by its own merchant, with that merchant's credentials, by the
//! sub-order's `transaction_id`.

mod rules;
pub mod wire;

pub use rules::{
    check_new_refund, PriorRefund, RefundRule, MAX_REFUNDS_PER_SUB_ORDER, REFUND_WINDOW_SECS,
};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A refund's `status` (`refund_status` in notifications).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RefundStatus {
    /// 退款处理中: accepted, outcome pending.
    #[serde(rename = "PROCESSING")]
    Processing,
    /// 退款成功.
    #[serde(rename = "SUCCESS")]
    Success,
    /// 退款关闭: final, no money moved (a new refund needs a new number).
    /// WxJava documents the spelling `CLOSE`; it is accepted on input.
    #[serde(rename = "CLOSED", alias = "CLOSE")]
    Closed,
    /// 退款异常: the original route failed (card cancelled…); not final,
    /// handled manually or by the abnormal-refund API.
    #[serde(rename = "ABNORMAL")]
    Abnormal,
}

impl RefundStatus {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Processing => "PROCESSING",
            RefundStatus::Success => "SUCCESS",
            RefundStatus::Closed => "CLOSED",
            RefundStatus::Abnormal => "ABNORMAL",
        }
    }

    /// Whether the refund's amount is (or may still be) taken from the
    /// sub-order: everything but CLOSED. ABNORMAL counts, because it is not
    /// final and may still succeed; counting it can only refuse a refund,
    /// never pay one twice.
    pub fn holds_amount(self) -> bool {
        !matches!(self, RefundStatus::Closed)
    }

    /// Whether moving from `self` to `next` is legal: PROCESSING may become
    /// anything else, ABNORMAL may still succeed or close, SUCCESS and
    /// CLOSED are final.
    pub fn can_become(self, next: RefundStatus) -> bool {
        match self {
            RefundStatus::Processing => next != RefundStatus::Processing,
            RefundStatus::Abnormal => {
                matches!(next, RefundStatus::Success | RefundStatus::Closed)
            }
            RefundStatus::Success | RefundStatus::Closed => false,
        }
    }

    /// The `event_type` of the notification announcing this status
    /// (`None` for PROCESSING, which is never notified).
    pub fn event_type(self) -> Option<&'static str> {
        match self {
            RefundStatus::Processing => None,
            RefundStatus::Success => Some("REFUND.SUCCESS"),
            RefundStatus::Closed => Some("REFUND.CLOSED"),
            RefundStatus::Abnormal => Some("REFUND.ABNORMAL"),
        }
    }
}

impl fmt::Display for RefundStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refund status string that is not one of the known values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown refund status {0:?}")]
pub struct UnknownRefundStatus(pub String);

impl FromStr for RefundStatus {
    type Err = UnknownRefundStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "PROCESSING" => RefundStatus::Processing,
            "SUCCESS" => RefundStatus::Success,
            "CLOSED" | "CLOSE" => RefundStatus::Closed,
            "ABNORMAL" => RefundStatus::Abnormal,
            other => return Err(UnknownRefundStatus(other.chars().take(32).collect())),
        })
    }
}

/// The event types of refund notifications.
pub const REFUND_EVENT_TYPES: [&str; 3] = ["REFUND.SUCCESS", "REFUND.ABNORMAL", "REFUND.CLOSED"];

/// Whether `s` is a valid `out_refund_no`: 1–64 of digits, letters and
/// `_-|*@`.
pub fn is_valid_out_refund_no(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-|*@".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_accepts_every_documented_spelling_and_emits_the_current_one() {
        for (text, status) in [
            ("PROCESSING", RefundStatus::Processing),
            ("SUCCESS", RefundStatus::Success),
            ("CLOSED", RefundStatus::Closed),
            ("CLOSE", RefundStatus::Closed),
            ("ABNORMAL", RefundStatus::Abnormal),
        ] {
            assert_eq!(text.parse::<RefundStatus>().unwrap(), status);
            let json: RefundStatus = serde_json::from_str(&format!("\"{text}\"")).unwrap();
            assert_eq!(json, status);
        }
        assert_eq!(
            serde_json::to_string(&RefundStatus::Closed).unwrap(),
            "\"CLOSED\""
        );
        assert!("REFUNDCLOSE".parse::<RefundStatus>().is_err());
    }

    #[test]
    fn transitions() {
        use RefundStatus::*;
        assert!(Processing.can_become(Success));
        assert!(Processing.can_become(Abnormal));
        assert!(Abnormal.can_become(Success));
        assert!(!Success.can_become(Closed));
        assert!(!Closed.can_become(Success));
        assert!(!Closed.holds_amount());
        assert!(Abnormal.holds_amount());
    }

    #[test]
    fn out_refund_no_charset() {
        assert!(is_valid_out_refund_no("R2024_01-a|b*c@d"));
        assert!(!is_valid_out_refund_no(""));
        assert!(!is_valid_out_refund_no("R 1"));
        assert!(!is_valid_out_refund_no(&"R".repeat(65)));
    }
}
