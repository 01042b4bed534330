//! The transactional outbox's event records: which state changes produce
//! an event ([`EventKind`]), their ids and their exact JSON body
//! ([`payload`] for orders, [`refund_payload`] for refunds). The store
//! writes them in the same transaction as the state change;
//! [`crate::webhook`] delivers them.

use crate::combine::{CombineOrder, TradeState};
use crate::events::RefundEventNotice;
use crate::redact::mask_openid;
use serde::Serialize;
use wxpay_combine_core::refund::RefundStatus;

/// What happened to an order or to a refund of one of its sub-orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The order was paid (SUCCESS).
    Paid,
    /// The order was closed unpaid (CLOSED).
    Closed,
    /// The payment failed (PAYERROR).
    PaymentError,
    /// A refund succeeded (SUCCESS).
    RefundSucceeded,
    /// A refund was closed (CLOSED).
    RefundClosed,
    /// A refund became abnormal (ABNORMAL).
    RefundAbnormal,
}

impl EventKind {
    /// The event a transition into `state` produces, if any.
    pub fn for_state(state: TradeState) -> Option<Self> {
        match state {
            TradeState::Success => Some(Self::Paid),
            TradeState::Closed => Some(Self::Closed),
            TradeState::PayError => Some(Self::PaymentError),
            _ => None,
        }
    }

    /// The event a refund's change into `status` produces, if any.
    pub fn for_refund(status: RefundStatus) -> Option<Self> {
        match status {
            RefundStatus::Success => Some(Self::RefundSucceeded),
            RefundStatus::Closed => Some(Self::RefundClosed),
            RefundStatus::Abnormal => Some(Self::RefundAbnormal),
            RefundStatus::Processing => None,
        }
    }

    /// The `kind` column value: `paid`, `closed`, `payment_error`,
    /// `refund_succeeded`, `refund_closed`, `refund_abnormal`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Paid => "paid",
            Self::Closed => "closed",
            Self::PaymentError => "payment_error",
            Self::RefundSucceeded => "refund_succeeded",
            Self::RefundClosed => "refund_closed",
            Self::RefundAbnormal => "refund_abnormal",
        }
    }

    /// The payload's `type`: `order.paid`, `order.closed`,
    /// `order.payment_error`, `refund.succeeded`, `refund.closed`,
    /// `refund.abnormal`.
    pub fn event_type(self) -> &'static str {
        match self {
            Self::Paid => "order.paid",
            Self::Closed => "order.closed",
            Self::PaymentError => "order.payment_error",
            Self::RefundSucceeded => "refund.succeeded",
            Self::RefundClosed => "refund.closed",
            Self::RefundAbnormal => "refund.abnormal",
        }
    }
}

/// A new event id: `evt_` + 32 random hex digits.
pub fn new_event_id() -> String {
    format!("evt_{}", uuid::Uuid::new_v4().simple())
}

/// RFC 3339 in UTC; empty outside years 0000–9999.
fn rfc3339(unix: i64) -> String {
    wxpay_combine_core::timefmt::rfc3339_utc(unix).unwrap_or_default()
}

/// The JSON body of an event about `order` (as stored after the change),
/// fields in the order docs/webhooks.md shows. The payer's openid appears
/// masked only. Written straight from borrowed structs: this runs inside the
/// SQLite group commit, the store's one serial step.
pub fn payload(id: &str, kind: EventKind, sequence: i64, order: &CombineOrder, now: i64) -> String {
    #[derive(Serialize)]
    struct Event<'a> {
        id: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
        created_at: String,
        sequence: i64,
        order: Order<'a>,
    }
    #[derive(Serialize)]
    struct Order<'a> {
        combine_out_trade_no: &'a str,
        combine_mchid: &'a str,
        combine_appid: &'a str,
        state: &'static str,
        total_amount: i64,
        payer_openid_masked: String,
        sub_orders: Vec<Sub<'a>>,
        created_at: String,
        updated_at: String,
    }
    #[derive(Serialize)]
    struct Sub<'a> {
        mchid: &'a str,
        out_trade_no: &'a str,
        description: &'a str,
        attach: &'a str,
        amount: i64,
        transaction_id: Option<&'a str>,
        payer_amount: Option<i64>,
        bank_type: Option<&'a str>,
        success_time: Option<&'a str>,
    }
    let event = Event {
        id,
        kind: kind.event_type(),
        created_at: rfc3339(now),
        sequence,
        order: Order {
            combine_out_trade_no: &order.combine_out_trade_no,
            combine_mchid: &order.combine_mchid,
            combine_appid: &order.combine_appid,
            state: order.state.as_str(),
            total_amount: order.total_amount(),
            payer_openid_masked: mask_openid(&order.payer_openid),
            sub_orders: order
                .sub_orders
                .iter()
                .map(|s| Sub {
                    mchid: &s.mchid,
                    out_trade_no: &s.out_trade_no,
                    description: &s.description,
                    attach: &s.attach,
                    amount: s.amount,
                    transaction_id: s.transaction_id.as_deref(),
                    payer_amount: s.payer_amount,
                    bank_type: s.bank_type.as_deref(),
                    success_time: s.success_time.as_deref(),
                })
                .collect(),
            created_at: rfc3339(order.created_at),
            updated_at: rfc3339(order.updated_at),
        },
    };
    serde_json::to_string(&event).expect("an event serialises")
}

/// The JSON body of an event about a refund (as stored after the change),
/// in the same envelope as [`payload`]'s (`id`, `type`, `created_at`,
/// `sequence` within the combined order), the refund under `refund`, fields
/// in the order docs/webhooks.md shows; facts not yet known are `null`.
pub fn refund_payload(
    id: &str,
    kind: EventKind,
    sequence: i64,
    refund: &RefundEventNotice,
    now: i64,
) -> String {
    #[derive(Serialize)]
    struct Event<'a> {
        id: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
        created_at: String,
        sequence: i64,
        refund: Refund<'a>,
    }
    #[derive(Serialize)]
    struct Refund<'a> {
        combine_out_trade_no: &'a str,
        out_trade_no: &'a str,
        mchid: &'a str,
        out_refund_no: &'a str,
        refund_id: Option<&'a str>,
        amount: i64,
        status: &'static str,
        success_time: Option<&'a str>,
        user_received_account: Option<&'a str>,
    }
    let event = Event {
        id,
        kind: kind.event_type(),
        created_at: rfc3339(now),
        sequence,
        refund: Refund {
            combine_out_trade_no: &refund.combine_out_trade_no,
            out_trade_no: &refund.out_trade_no,
            mchid: &refund.mchid,
            out_refund_no: &refund.out_refund_no,
            refund_id: refund.refund_id.as_deref(),
            amount: refund.amount,
            status: refund.status.as_str(),
            success_time: refund.success_time.as_deref(),
            user_received_account: refund.user_received_account.as_deref(),
        },
    };
    serde_json::to_string(&event).expect("an event serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::combine::SubOrder;

    #[test]
    fn payload_masks_the_openid_and_names_the_event() {
        let order = CombineOrder {
            combine_out_trade_no: "C1".into(),
            combine_mchid: "1900000109".into(),
            combine_appid: "wxd678efh567hg6787".into(),
            payer_openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
            state: TradeState::Success,
            sub_orders: vec![SubOrder {
                mchid: "1900000110".into(),
                out_trade_no: "S1".into(),
                description: "tea".into(),
                attach: String::new(),
                amount: 100,
                transaction_id: Some("4200".into()),
                payer_amount: Some(100),
                bank_type: Some("OTHERS".into()),
                success_time: Some("2024-01-01T00:00:00+08:00".into()),
            }],
            prepay_id: None,
            prepay_expires_at: None,
            time_expire: None,
            created_at: 1_700_000_000,
            updated_at: 1_700_000_060,
            notified_at: None,
        };
        let id = new_event_id();
        assert!(id.starts_with("evt_") && id.len() == 36);
        let body = payload(&id, EventKind::Paid, 1, &order, 1_700_000_060);
        assert!(!body.contains("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"));
        // Field order as docs/webhooks.md shows it.
        let head = format!(
            r#"{{"id":"{id}","type":"order.paid","created_at":"2023-11-14T22:14:20Z","sequence":1,"order":{{"combine_out_trade_no":"#
        );
        assert!(body.starts_with(&head), "{body}");
        assert!(body.contains(r#""sub_orders":[{"mchid":"1900000110","out_trade_no":"S1","#));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["type"], "order.paid");
        assert_eq!(v["id"], id.as_str());
        assert_eq!(v["order"]["state"], "SUCCESS");
        assert_eq!(v["order"]["total_amount"], 100);
        assert_eq!(v["order"]["payer_openid_masked"], "oUpF***6o");
        assert_eq!(v["order"]["sub_orders"][0]["transaction_id"], "4200");
        assert_eq!(v["created_at"], "2023-11-14T22:14:20Z");
        assert_eq!(EventKind::for_state(TradeState::UserPaying), None);
        assert_eq!(
            EventKind::for_state(TradeState::PayError),
            Some(EventKind::PaymentError)
        );
    }

    #[test]
    fn refund_payload_names_the_refund_in_the_order_envelope() {
        use crate::events::RefundEventKind;
        let notice = RefundEventNotice {
            kind: RefundEventKind::Succeeded,
            combine_out_trade_no: "C1".into(),
            out_trade_no: "S1".into(),
            mchid: "1900000110".into(),
            out_refund_no: "RF1".into(),
            refund_id: Some("5030".into()),
            amount: 60,
            status: RefundStatus::Success,
            previous: RefundStatus::Processing,
            source: "notify",
            success_time: Some("2024-01-01T00:00:00+08:00".into()),
            user_received_account: None,
            at: 1_700_000_060,
        };
        let kind = EventKind::for_refund(RefundStatus::Success).unwrap();
        assert_eq!(kind.event_type(), notice.kind.as_str());
        let body = refund_payload("evt_1", kind, 3, &notice, 1_700_000_060);
        assert_eq!(
            body,
            r#"{"id":"evt_1","type":"refund.succeeded","created_at":"2023-11-14T22:14:20Z","sequence":3,"refund":{"combine_out_trade_no":"C1","out_trade_no":"S1","mchid":"1900000110","out_refund_no":"RF1","refund_id":"5030","amount":60,"status":"SUCCESS","success_time":"2024-01-01T00:00:00+08:00","user_received_account":null}}"#
        );
        assert_eq!(EventKind::for_refund(RefundStatus::Processing), None);
        for (status, column, kind) in [
            (RefundStatus::Closed, "refund_closed", "refund.closed"),
            (RefundStatus::Abnormal, "refund_abnormal", "refund.abnormal"),
        ] {
            let k = EventKind::for_refund(status).unwrap();
            assert_eq!((k.as_str(), k.event_type()), (column, kind));
            assert_eq!(RefundEventKind::of(status).unwrap().as_str(), kind);
        }
    }
}
