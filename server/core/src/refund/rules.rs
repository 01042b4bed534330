//! The rules a new refund of one sub-order must satisfy (refunds.md §6):
//! the sub-order is paid; at least 1 fen; the refunds that hold an amount
//! plus this one stay within the sub-order's amount; at most 50 refunds;
//! within one year of the payment's success time.

use super::RefundStatus;

/// Most refunds of one sub-order (partial refunds included).
pub const MAX_REFUNDS_PER_SUB_ORDER: usize = 50;

/// The refund window: the payment's success time + 365 days.
pub const REFUND_WINDOW_SECS: i64 = 365 * 24 * 3600;

/// A refund already recorded for the sub-order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriorRefund {
    /// Fen.
    pub amount: i64,
    /// Its current status.
    pub status: RefundStatus,
}

/// Why a refund is refused before it is sent. Each has a stable code for
/// API answers and the CLI's stderr.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefundRule {
    /// The sub-order is not paid (or its payment time is unknown).
    #[error("sub-order is not paid")]
    NotPaid,
    /// Less than 1 fen.
    #[error("refund amount {0} fen is below 1 fen")]
    AmountTooSmall(i64),
    /// The refunds that hold an amount plus this one exceed the sub-order.
    #[error("refund of {requested} fen exceeds the refundable {refundable} fen of {total}")]
    ExceedsRefundable {
        /// This refund.
        requested: i64,
        /// What is left.
        refundable: i64,
        /// The sub-order's amount.
        total: i64,
    },
    /// Already 50 refunds.
    #[error("the sub-order already has {0} refunds (at most 50)")]
    TooManyRefunds(usize),
    /// More than a year after the payment.
    #[error("the payment is older than the one-year refund window")]
    WindowExpired,
}

impl RefundRule {
    /// The rule's code, as answered by the internal API and the CLI.
    pub fn code(&self) -> &'static str {
        match self {
            RefundRule::NotPaid => "SUB_ORDER_NOT_PAID",
            RefundRule::AmountTooSmall(_) => "REFUND_AMOUNT_INVALID",
            RefundRule::ExceedsRefundable { .. } => "REFUND_EXCEEDS_AMOUNT",
            RefundRule::TooManyRefunds(_) => "TOO_MANY_REFUNDS",
            RefundRule::WindowExpired => "REFUND_WINDOW_EXPIRED",
        }
    }
}

/// Checks a new refund of `amount` fen of a sub-order of `total` fen,
/// paid at `paid_at` (Unix seconds; `None` when not paid), at `now`, given
/// the refunds already recorded.
pub fn check_new_refund(
    total: i64,
    paid_at: Option<i64>,
    prior: &[PriorRefund],
    amount: i64,
    now: i64,
) -> Result<(), RefundRule> {
    let paid_at = paid_at.ok_or(RefundRule::NotPaid)?;
    if amount < 1 {
        return Err(RefundRule::AmountTooSmall(amount));
    }
    if prior.len() >= MAX_REFUNDS_PER_SUB_ORDER {
        return Err(RefundRule::TooManyRefunds(prior.len()));
    }
    if now > paid_at.saturating_add(REFUND_WINDOW_SECS) {
        return Err(RefundRule::WindowExpired);
    }
    let held: i64 = prior
        .iter()
        .filter(|r| r.status.holds_amount())
        .map(|r| r.amount)
        .sum();
    let refundable = (total - held).max(0);
    if amount > refundable {
        return Err(RefundRule::ExceedsRefundable {
            requested: amount,
            refundable,
            total,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use RefundStatus::*;

    fn prior(amount: i64, status: RefundStatus) -> PriorRefund {
        PriorRefund { amount, status }
    }

    #[test]
    fn each_rule() {
        let t0 = 1_700_000_000;
        assert_eq!(
            check_new_refund(100, None, &[], 1, t0),
            Err(RefundRule::NotPaid)
        );
        assert_eq!(
            check_new_refund(100, Some(t0), &[], 0, t0),
            Err(RefundRule::AmountTooSmall(0))
        );
        assert!(check_new_refund(100, Some(t0), &[], 100, t0).is_ok());
        assert_eq!(
            check_new_refund(100, Some(t0), &[prior(60, Processing)], 41, t0),
            Err(RefundRule::ExceedsRefundable {
                requested: 41,
                refundable: 40,
                total: 100
            })
        );
        // A closed refund frees its amount.
        assert!(check_new_refund(100, Some(t0), &[prior(60, Closed)], 100, t0).is_ok());
        // Abnormal still holds it.
        assert!(check_new_refund(100, Some(t0), &[prior(60, Abnormal)], 41, t0).is_err());
        let fifty = vec![prior(1, Closed); 50];
        assert_eq!(
            check_new_refund(100, Some(t0), &fifty, 1, t0),
            Err(RefundRule::TooManyRefunds(50))
        );
        assert!(check_new_refund(100, Some(t0), &[], 1, t0 + REFUND_WINDOW_SECS).is_ok());
        assert_eq!(
            check_new_refund(100, Some(t0), &[], 1, t0 + REFUND_WINDOW_SECS + 1),
            Err(RefundRule::WindowExpired)
        );
    }
}
