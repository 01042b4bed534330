//! The one path from WeChat Pay's view of a combined order — a decrypted
//! notification or a query answer, both a [`CombineTransaction`] — to a
//! stored state change.
//!
//! [`transition_for`] (protocol core) compares the transaction with the
//! stored order and yields a [`Transition`](crate::combine::Transition) or a
//! typed [`Mismatch`]; [`apply_transaction`] then hands the transition to
//! [`Store::apply_transition`], which locks the order and decides whether it
//! is new, a repeat or illegal. Notifications, the reconciliation worker and
//! query-on-read all go through here, so they cannot disagree.

use crate::combine::wire::CombineTransaction;
use crate::combine::{ApplyOutcome, EventSource, NotificationRef, TradeState};
use crate::store::{Store, StoreError};
pub use wxpay_combine_core::payment::*;

/// Why [`apply_transaction`] changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// No stored order has this `combine_out_trade_no`.
    #[error("unknown order {0}")]
    UnknownOrder(String),
    /// The transaction disagrees with the stored order.
    #[error("order {combine_out_trade_no}: {mismatch}")]
    Mismatch {
        /// The order it was matched to.
        combine_out_trade_no: String,
        /// What disagrees.
        mismatch: Mismatch,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Applies WeChat Pay's view of an order: loads the order named by `txn`,
/// compares ([`transition_for`]), and applies the transition under the row
/// lock. Mismatches and rejected transitions are logged as alerts here, so
/// every caller alerts the same way.
pub async fn apply_transaction(
    store: &dyn Store,
    txn: &CombineTransaction,
    source: EventSource,
    notification: Option<NotificationRef>,
    now: i64,
) -> Result<ApplyOutcome, PaymentError> {
    let no = txn.combine_out_trade_no.as_str();
    let order = store
        .get_order(no)
        .await?
        .ok_or_else(|| PaymentError::UnknownOrder(clip(no)))?;
    let transition = match transition_for(&order, txn, source, notification) {
        Ok(t) => t,
        Err(mismatch) => {
            tracing::error!(
                order = %order.combine_out_trade_no,
                source = source.as_str(),
                %mismatch,
                "ALERT: WeChat Pay data does not match the stored order; nothing changed"
            );
            return Err(PaymentError::Mismatch {
                combine_out_trade_no: order.combine_out_trade_no,
                mismatch,
            });
        }
    };
    let outcome = store.apply_transition(no, &transition, now).await?;
    if let ApplyOutcome::Applied(o) = &outcome {
        // Committed: tell in-process listeners (at most once).
        store.announce(order.state, o, source);
    }
    match &outcome {
        ApplyOutcome::Applied(o) => tracing::info!(
            order = %o.combine_out_trade_no,
            from = %order.state,
            to = %o.state,
            source = source.as_str(),
            "order state changed"
        ),
        ApplyOutcome::AlreadyApplied(o) => tracing::debug!(
            order = %o.combine_out_trade_no,
            state = %o.state,
            source = source.as_str(),
            "already applied; nothing changed"
        ),
        ApplyOutcome::Rejected { order: o, reason } => tracing::error!(
            order = %o.combine_out_trade_no,
            state = %o.state,
            reported = %transition.to,
            source = source.as_str(),
            %reason,
            "ALERT: WeChat Pay reports a state this order cannot take; nothing changed"
        ),
    }
    if let ApplyOutcome::Applied(o) = &outcome {
        if o.state == TradeState::Success && order.state != TradeState::Success {
            crate::metrics::metrics().payment_confirmed(source.as_str());
        }
    }
    Ok(outcome)
}
