//! Matching WeChat Pay's view of a combined order — a decrypted
//! notification or a query answer, both a [`CombineTransaction`] — against
//! the stored order.
//!
//! [`transition_for`] compares the transaction with the stored order (ids,
//! the exact sub-order set, every amount) and yields a [`Transition`] or a
//! typed [`Mismatch`]. The merchant library's `payment::apply_transaction`
//! then hands the transition to the store, which locks the order and
//! decides whether it is new, a repeat or illegal. Notifications, the
//! reconciliation worker and query-on-read all go through there, so they
//! cannot disagree.

use crate::combine::wire::CombineTransaction;
use crate::combine::{
    CombineOrder, EventSource, NotificationRef, SubOrderPayment, TradeState, Transition,
};
use crate::redact::mask_openid;
use sha2::{Digest, Sha256};
use std::collections::HashSet;

/// The only currency combined JSAPI orders use.
pub const CURRENCY: &str = "CNY";

/// Why a transaction does not belong to the stored order. Each one is refused
/// and changes nothing; all but [`Mismatch::UnknownTradeState`] are alerts
/// (a signed message that disagrees with our order is a data leak, a bug or
/// an attack).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// `combine_mchid` is not ours / not the order's.
    #[error("combine_mchid {got:?} does not match {expected:?}")]
    CombineMchid {
        /// Ours.
        expected: String,
        /// Received.
        got: String,
    },
    /// `combine_appid` is not ours / not the order's.
    #[error("combine_appid {got:?} does not match {expected:?}")]
    CombineAppid {
        /// Ours.
        expected: String,
        /// Received.
        got: String,
    },
    /// `combine_out_trade_no` differs from the order it was matched to.
    #[error("combine_out_trade_no {got:?} does not match {expected:?}")]
    CombineOutTradeNo {
        /// Ours.
        expected: String,
        /// Received.
        got: String,
    },
    /// A different number of sub-orders.
    #[error("{got} sub-orders received, the order has {expected}")]
    SubOrderCount {
        /// Stored count.
        expected: usize,
        /// Received count.
        got: usize,
    },
    /// A sub-order (mchid + out_trade_no) the order does not have, or one
    /// listed twice.
    #[error("sub-order {mchid}/{out_trade_no} is not one of the order's (or is repeated)")]
    UnknownSubOrder {
        /// Sub-merchant.
        mchid: String,
        /// Sub-order number.
        out_trade_no: String,
    },
    /// A sub-order's `total_amount` differs from the stored amount.
    #[error("sub-order {out_trade_no}: amount {got} fen, the order says {expected} fen")]
    Amount {
        /// Sub-order number.
        out_trade_no: String,
        /// Stored fen.
        expected: i64,
        /// Received fen.
        got: i64,
    },
    /// A currency other than CNY.
    #[error("sub-order {out_trade_no}: currency {got:?}, expected CNY")]
    Currency {
        /// Sub-order number.
        out_trade_no: String,
        /// Received currency.
        got: String,
    },
    /// `payer_amount` negative or above the order amount.
    #[error("sub-order {out_trade_no}: payer_amount {got} outside 0..={total}")]
    PayerAmount {
        /// Sub-order number.
        out_trade_no: String,
        /// Received payer amount.
        got: i64,
        /// Sub-order amount.
        total: i64,
    },
    /// The payer is not the one the order was made for (both masked).
    #[error("payer {got} is not the order's payer {expected}")]
    Payer {
        /// Masked stored openid.
        expected: String,
        /// Masked received openid.
        got: String,
    },
    /// A notification without `combine_payer_info`: every order of this kit
    /// is a JSAPI order, whose notification names its payer, so the payer
    /// check cannot be skipped.
    #[error("notification without combine_payer_info (required for JSAPI orders)")]
    MissingPayer,
    /// Sub-orders in different states: a combined payment never partially
    /// succeeds.
    #[error("sub-orders disagree on trade_state ({0})")]
    MixedStates(String),
    /// A `trade_state` this server does not know.
    #[error("unknown trade_state {0:?}")]
    UnknownTradeState(String),
    /// A paid sub-order without a transaction id (refunds need it).
    #[error("sub-order {out_trade_no} is {state} but has no transaction_id")]
    MissingTransactionId {
        /// Sub-order number.
        out_trade_no: String,
        /// The state claimed.
        state: TradeState,
    },
}

/// Checks that a transaction is addressed to this merchant at all.
pub fn check_merchant(
    txn: &CombineTransaction,
    combine_mchid: &str,
    combine_appid: &str,
) -> Result<(), Mismatch> {
    if txn.combine_mchid != combine_mchid {
        return Err(Mismatch::CombineMchid {
            expected: combine_mchid.into(),
            got: clip(&txn.combine_mchid),
        });
    }
    if txn.combine_appid != combine_appid {
        return Err(Mismatch::CombineAppid {
            expected: combine_appid.into(),
            got: clip(&txn.combine_appid),
        });
    }
    Ok(())
}

/// Whether the order is a JSAPI order: it has a payer (JSAPI prepay needs
/// the openid; this kit places no other kind) or WeChat Pay says so.
fn is_jsapi(order: &CombineOrder, txn: &CombineTransaction) -> bool {
    !order.payer_openid.is_empty()
        || txn
            .sub_orders
            .iter()
            .any(|s| s.trade_type.as_deref() == Some("JSAPI"))
}

/// Compares `txn` with the stored `order` and, when every identifier and
/// amount agrees and the sub-order sets are equal, returns the transition to
/// the state `txn` reports.
pub fn transition_for(
    order: &CombineOrder,
    txn: &CombineTransaction,
    source: EventSource,
    notification: Option<NotificationRef>,
) -> Result<Transition, Mismatch> {
    if txn.combine_out_trade_no != order.combine_out_trade_no {
        return Err(Mismatch::CombineOutTradeNo {
            expected: order.combine_out_trade_no.clone(),
            got: clip(&txn.combine_out_trade_no),
        });
    }
    check_merchant(txn, &order.combine_mchid, &order.combine_appid)?;
    match &txn.combine_payer_info {
        Some(payer) if !order.payer_openid.is_empty() && payer.openid != order.payer_openid => {
            return Err(Mismatch::Payer {
                expected: mask_openid(&order.payer_openid),
                got: mask_openid(&payer.openid),
            });
        }
        Some(_) => {}
        // Notifications of JSAPI orders carry the payer (the documented
        // plaintext always has it): one without is refused, not applied with
        // the check skipped. Query answers are WeChat Pay's reply to our own
        // request, and the query documentation does not promise the block
        // for every state (an unpaid order), so they are not held to it.
        None if source == EventSource::Notify && is_jsapi(order, txn) => {
            return Err(Mismatch::MissingPayer);
        }
        None => {}
    }
    if txn.sub_orders.len() != order.sub_orders.len() {
        return Err(Mismatch::SubOrderCount {
            expected: order.sub_orders.len(),
            got: txn.sub_orders.len(),
        });
    }

    let mut seen = HashSet::new();
    let mut state: Option<TradeState> = None;
    let mut payments = Vec::with_capacity(txn.sub_orders.len());
    for t in &txn.sub_orders {
        let stored = order
            .sub_orders
            .iter()
            .find(|s| s.mchid == t.mchid && s.out_trade_no == t.out_trade_no)
            .filter(|_| seen.insert((t.mchid.as_str(), t.out_trade_no.as_str())))
            .ok_or_else(|| Mismatch::UnknownSubOrder {
                mchid: clip(&t.mchid),
                out_trade_no: clip(&t.out_trade_no),
            })?;
        if t.amount.total_amount != stored.amount {
            return Err(Mismatch::Amount {
                out_trade_no: stored.out_trade_no.clone(),
                expected: stored.amount,
                got: t.amount.total_amount,
            });
        }
        if let Some(c) = &t.amount.currency {
            if c != CURRENCY {
                return Err(Mismatch::Currency {
                    out_trade_no: stored.out_trade_no.clone(),
                    got: clip(c),
                });
            }
        }
        if let Some(p) = t.amount.payer_amount {
            if p < 0 || p > stored.amount {
                return Err(Mismatch::PayerAmount {
                    out_trade_no: stored.out_trade_no.clone(),
                    got: p,
                    total: stored.amount,
                });
            }
        }
        let s: TradeState = t
            .trade_state
            .parse()
            .map_err(|_| Mismatch::UnknownTradeState(clip(&t.trade_state)))?;
        // A refunded sub-order reports REFUND (转入退款) while the others
        // stay SUCCESS: the combined payment succeeded as a whole, and the
        // refunds are tracked per sub-order, so both read as paid.
        let s = if s == TradeState::Refund {
            TradeState::Success
        } else {
            s
        };
        match state {
            None => state = Some(s),
            Some(prev) if prev != s => {
                return Err(Mismatch::MixedStates(format!("{prev} and {s}")));
            }
            Some(_) => {}
        }
        if matches!(s, TradeState::Success | TradeState::Refund)
            && t.transaction_id.as_deref().is_none_or(str::is_empty)
        {
            return Err(Mismatch::MissingTransactionId {
                out_trade_no: stored.out_trade_no.clone(),
                state: s,
            });
        }
        payments.push(SubOrderPayment {
            mchid: t.mchid.clone(),
            out_trade_no: t.out_trade_no.clone(),
            transaction_id: t.transaction_id.clone().filter(|v| !v.is_empty()),
            payer_amount: t.amount.payer_amount,
            bank_type: t.bank_type.clone(),
            success_time: t.success_time.clone(),
        });
    }
    let to = state.ok_or(Mismatch::SubOrderCount {
        expected: order.sub_orders.len(),
        got: 0,
    })?;
    let detail = describe(source, to, &payments, notification.as_ref());
    Ok(Transition {
        to,
        source,
        payments,
        notification,
        detail,
    })
}

/// The event-log text: source, state, transaction ids. Never the openid.
fn describe(
    source: EventSource,
    to: TradeState,
    payments: &[SubOrderPayment],
    notification: Option<&NotificationRef>,
) -> String {
    let mut d = format!("{} reports {to}", source.as_str());
    if let Some(n) = notification {
        d.push_str(&format!(" (notification {})", clip(&n.id)));
    }
    let ids: Vec<String> = payments
        .iter()
        .filter_map(|p| {
            p.transaction_id
                .as_ref()
                .map(|t| format!("{}={t}", p.out_trade_no))
        })
        .collect();
    if !ids.is_empty() {
        d.push_str("; transaction ids ");
        d.push_str(&ids.join(", "));
    }
    d
}

/// SHA-256 (lower-case hex) of a raw notification body, its idempotency
/// digest.
pub fn body_sha256(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// Received identifiers go into logs and errors; bound their length.
pub fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::combine::wire::{PayerInfo, TransactionAmount, TransactionSubOrder};
    use crate::combine::SubOrder;

    fn order() -> CombineOrder {
        let sub = |m: &str, n: &str, a| SubOrder::unpaid(m, n, "d", "", a);
        CombineOrder::unpaid(
            "C100",
            "1900000109",
            "wxd678efh567hg6787",
            "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
            vec![sub("1900000109", "S1", 100), sub("1900000110", "S2", 250)],
            None,
            0,
        )
    }

    fn txn(state: &str) -> CombineTransaction {
        let sub = |m: &str, n: &str, a, t: &str| TransactionSubOrder {
            mchid: m.into(),
            trade_type: Some("JSAPI".into()),
            trade_state: state.into(),
            bank_type: Some("OTHERS".into()),
            attach: None,
            success_time: Some("2024-05-01T10:00:00+08:00".into()),
            transaction_id: Some(t.into()),
            out_trade_no: n.into(),
            sub_mchid: None,
            amount: TransactionAmount {
                total_amount: a,
                payer_amount: Some(a),
                currency: Some("CNY".into()),
                payer_currency: Some("CNY".into()),
                settlement_rate: None,
            },
            promotion_detail: None,
        };
        CombineTransaction {
            combine_appid: "wxd678efh567hg6787".into(),
            combine_mchid: "1900000109".into(),
            combine_out_trade_no: "C100".into(),
            scene_info: None,
            sub_orders: vec![
                sub("1900000110", "S2", 250, "4200002"),
                sub("1900000109", "S1", 100, "4200001"),
            ],
            combine_payer_info: Some(PayerInfo {
                openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
            }),
        }
    }

    #[test]
    fn matching_transaction_gives_transition_in_any_sub_order_order() {
        let t = transition_for(&order(), &txn("SUCCESS"), EventSource::Query, None).unwrap();
        assert_eq!(t.to, TradeState::Success);
        assert_eq!(t.payments.len(), 2);
        assert!(t.detail.contains("S1=4200001"), "{}", t.detail);
        assert!(!t.detail.contains("oUpF"), "no openid in the event log");
    }

    #[test]
    fn every_mismatch_is_typed() {
        let o = order();
        let check = |f: &dyn Fn(&mut CombineTransaction)| {
            let mut t = txn("SUCCESS");
            f(&mut t);
            transition_for(&o, &t, EventSource::Notify, None).unwrap_err()
        };
        assert!(matches!(
            check(&|t| t.combine_mchid = "1".into()),
            Mismatch::CombineMchid { .. }
        ));
        assert!(matches!(
            check(&|t| t.combine_appid = "wx1".into()),
            Mismatch::CombineAppid { .. }
        ));
        assert!(matches!(
            check(&|t| t.combine_out_trade_no = "C101".into()),
            Mismatch::CombineOutTradeNo { .. }
        ));
        assert!(matches!(
            check(&|t| {
                t.sub_orders.pop();
            }),
            Mismatch::SubOrderCount { .. }
        ));
        assert!(matches!(
            check(&|t| t.sub_orders[1] = t.sub_orders[0].clone()),
            Mismatch::UnknownSubOrder { .. }
        ));
        assert!(matches!(
            check(&|t| t.sub_orders[0].mchid = "1900000111".into()),
            Mismatch::UnknownSubOrder { .. }
        ));
        assert!(matches!(
            check(&|t| t.sub_orders[0].amount.total_amount = 1),
            Mismatch::Amount {
                expected: 250,
                got: 1,
                ..
            }
        ));
        assert!(matches!(
            check(&|t| t.sub_orders[0].amount.currency = Some("USD".into())),
            Mismatch::Currency { .. }
        ));
        assert!(matches!(
            check(&|t| t.sub_orders[0].amount.payer_amount = Some(251)),
            Mismatch::PayerAmount { .. }
        ));
        assert!(matches!(
            check(&|t| t.sub_orders[0].trade_state = "NOTPAY".into()),
            Mismatch::MixedStates(_)
        ));
        assert!(matches!(
            check(&|t| t.sub_orders[0].transaction_id = None),
            Mismatch::MissingTransactionId { .. }
        ));
        let payer = check(&|t| {
            t.combine_payer_info = Some(PayerInfo {
                openid: "oOther123456789".into(),
            })
        });
        assert!(matches!(payer, Mismatch::Payer { .. }));
        assert!(
            !payer.to_string().contains("oUpF8uMuAJO"),
            "openid masked: {payer}"
        );
        // No payer block: refused in a notification, accepted from a query.
        assert_eq!(
            check(&|t| t.combine_payer_info = None),
            Mismatch::MissingPayer
        );
        let mut no_payer = txn("SUCCESS");
        no_payer.combine_payer_info = None;
        assert!(transition_for(&o, &no_payer, EventSource::Query, None).is_ok());
        let mut t = txn("WHATEVER");
        t.sub_orders
            .iter_mut()
            .for_each(|s| s.trade_state = "WHATEVER".into());
        assert!(matches!(
            transition_for(&o, &t, EventSource::Query, None),
            Err(Mismatch::UnknownTradeState(_))
        ));
    }

    #[test]
    fn partly_refunded_orders_read_as_paid() {
        // One sub-order refunded (REFUND), the other not (SUCCESS): the
        // combined payment succeeded; refunds are kept per sub-order.
        let mut t = txn("SUCCESS");
        t.sub_orders[1].trade_state = "REFUND".into();
        let tr = transition_for(&order(), &t, EventSource::Query, None).unwrap();
        assert_eq!(tr.to, TradeState::Success);
        let tr = transition_for(&order(), &txn("REFUND"), EventSource::Query, None).unwrap();
        assert_eq!(tr.to, TradeState::Success);
        // A refund still needs the transaction id of the payment.
        t.sub_orders[1].transaction_id = None;
        assert!(matches!(
            transition_for(&order(), &t, EventSource::Query, None),
            Err(Mismatch::MissingTransactionId { .. })
        ));
    }

    #[test]
    fn unpaid_states_need_no_transaction_id() {
        let mut t = txn("NOTPAY");
        t.sub_orders
            .iter_mut()
            .for_each(|s| s.transaction_id = None);
        let tr = transition_for(&order(), &t, EventSource::Query, None).unwrap();
        assert_eq!(tr.to, TradeState::NotPay);
    }

    #[test]
    fn merchant_check() {
        let t = txn("SUCCESS");
        assert!(check_merchant(&t, "1900000109", "wxd678efh567hg6787").is_ok());
        assert!(check_merchant(&t, "1900000108", "wxd678efh567hg6787").is_err());
        assert!(check_merchant(&t, "1900000109", "wx0").is_err());
    }
}
