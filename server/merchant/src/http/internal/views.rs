//! The internal API's answers. Unlike the page's views (`orders::OrderView`)
//! they carry the payer, `attach`, the prepay and the pay link.

use super::InternalApi;
use crate::apiv3::JsapiPayParams;
use crate::combine::{CombineOrder, SubOrder, TradeState};
use crate::http::orders::{self, rfc3339_cst};
use crate::store::{PayLink, PayLinkStatus, RefundRecord};
use serde::Serialize;

/// The state reported for a pay-link order nobody claimed yet.
pub const AWAITING_PAYER: &str = "AWAITING_PAYER";

/// The state reported for a pay link a payer claimed whose order is not
/// stored yet (its creation is in flight, or failed and the payer's next
/// visit creates it).
pub const AWAITING_ORDER: &str = "AWAITING_ORDER";

/// An order: the answer of every `/internal/combine-orders` route.
#[derive(Debug, Serialize)]
pub(super) struct OrderView {
    combine_out_trade_no: String,
    state: &'static str,
    total_amount: i64,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    time_expire: Option<String>,
    /// Absent while a pay link waits for its payer.
    #[serde(skip_serializing_if = "Option::is_none")]
    payer_openid: Option<String>,
    sub_orders: Vec<SubOrderView>,
    /// While the order can be paid: its stored prepay (with the signed
    /// pay parameters in the answer of a creation).
    #[serde(flatten)]
    prepay: Option<PrepayView>,
    /// Only for orders created with a pay link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pay_link: Option<PayLinkView>,
}

/// A sub-order, with WeChat Pay's side once paid.
#[derive(Debug, Serialize)]
struct SubOrderView {
    mchid: String,
    out_trade_no: String,
    description: String,
    amount: i64,
    attach: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payer_amount: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    success_time: Option<String>,
    /// Its refunds, oldest first (absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    refunds: Vec<RefundView>,
}

/// A refund of a sub-order: the answer of the refund routes, and listed
/// under each sub-order of an order.
#[derive(Debug, Serialize)]
pub(super) struct RefundView {
    out_refund_no: String,
    status: &'static str,
    amount: i64,
    out_trade_no: String,
    mchid: String,
    combine_out_trade_no: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refund_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_received_account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    success_time: Option<String>,
    created_at: String,
}

impl RefundView {
    pub(super) fn of(r: &RefundRecord) -> Self {
        Self {
            out_refund_no: r.out_refund_no.clone(),
            status: r.status.as_str(),
            amount: r.amount,
            out_trade_no: r.out_trade_no.clone(),
            mchid: r.mchid.clone(),
            combine_out_trade_no: r.combine_out_trade_no.clone(),
            reason: r.reason.clone(),
            refund_id: r.refund_id.clone(),
            user_received_account: r.user_received_account.clone(),
            success_time: r.success_time.clone(),
            created_at: rfc3339_cst(r.created_at),
        }
    }
}

/// What the merchant's own page needs to pay: the prepay and the signed
/// `getBrandWCPayRequest` parameters.
#[derive(Debug, Serialize)]
pub(super) struct PrepayView {
    pub(super) prepay_id: String,
    pub(super) prepay_expires_at: String,
    /// Only in the answer of a creation: reads report the prepay alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) pay_params: Option<JsapiPayParams>,
}

/// A pay link: `open` (with its `url`), `expired`, `claimed` or `closed`.
#[derive(Debug, Serialize)]
pub(super) struct PayLinkView {
    status: &'static str,
    expires_at: String,
    /// Only while the link can be claimed.
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
}

impl OrderView {
    /// The view of a stored order.
    pub(super) fn of(o: &CombineOrder) -> Self {
        Self {
            combine_out_trade_no: o.combine_out_trade_no.clone(),
            state: o.state.as_str(),
            total_amount: o.total_amount(),
            created_at: rfc3339_cst(o.created_at),
            time_expire: o.time_expire.map(rfc3339_cst),
            payer_openid: (!o.payer_openid.is_empty()).then(|| o.payer_openid.clone()),
            sub_orders: o.sub_orders.iter().map(SubOrderView::of).collect(),
            prepay: match (&o.prepay_id, o.prepay_expires_at) {
                (Some(id), Some(expires)) if o.state.is_open() => Some(PrepayView {
                    prepay_id: id.clone(),
                    prepay_expires_at: rfc3339_cst(expires),
                    pay_params: None,
                }),
                _ => None,
            },
            pay_link: None,
        }
    }

    /// The view of an order not stored yet, as its link stores it:
    /// `AWAITING_PAYER` while the link is open, `AWAITING_ORDER` once a
    /// payer claimed it, `CLOSED` once it expired or was closed (nobody can
    /// pay it then).
    pub(super) fn unclaimed(
        api: &InternalApi,
        draft: &CombineOrder,
        link: &PayLink,
        now: i64,
    ) -> Self {
        let state = match link.status {
            PayLinkStatus::Open if link.expires_at > now => AWAITING_PAYER,
            PayLinkStatus::Claimed => AWAITING_ORDER,
            _ => TradeState::Closed.as_str(),
        };
        Self {
            state,
            ..Self::of(draft).with_pay_link(api, link, now)
        }
    }

    /// With the order's pay link.
    pub(super) fn with_pay_link(self, api: &InternalApi, link: &PayLink, now: i64) -> Self {
        Self {
            pay_link: Some(PayLinkView::of(api, link, now)),
            ..self
        }
    }

    /// With each sub-order's refunds.
    pub(super) fn with_refunds(mut self, refunds: &[RefundRecord]) -> Self {
        for sub in &mut self.sub_orders {
            sub.refunds = refunds
                .iter()
                .filter(|r| r.mchid == sub.mchid && r.out_trade_no == sub.out_trade_no)
                .map(RefundView::of)
                .collect();
        }
        self
    }

    /// With what the page needs to pay.
    pub(super) fn with_prepay(self, prepay: PrepayView) -> Self {
        Self {
            prepay: Some(prepay),
            ..self
        }
    }
}

impl SubOrderView {
    fn of(s: &SubOrder) -> Self {
        Self {
            mchid: s.mchid.clone(),
            out_trade_no: s.out_trade_no.clone(),
            description: s.description.clone(),
            amount: s.amount,
            attach: s.attach.clone(),
            transaction_id: s.transaction_id.clone(),
            payer_amount: s.payer_amount,
            success_time: s.success_time.clone(),
            refunds: Vec::new(),
        }
    }
}

impl PayLinkView {
    fn of(api: &InternalApi, link: &PayLink, now: i64) -> Self {
        let open = link.status == PayLinkStatus::Open && link.expires_at > now;
        let status = match link.status {
            PayLinkStatus::Open if !open => "expired",
            s => s.as_str(),
        };
        Self {
            status,
            expires_at: rfc3339_cst(link.expires_at),
            url: open.then(|| api.link_url(&api.link_token(&link.combine_out_trade_no))),
        }
    }
}

/// The answer of a pay-link claim: the order, as the page sees it.
#[derive(Debug, Serialize)]
pub(super) struct ClaimView {
    pub(super) combine_out_trade_no: String,
    pub(super) order: orders::OrderView,
}

/// An error: `{"code", "field"?, "message"}`.
#[derive(Debug, Serialize)]
pub(super) struct ErrorView {
    code: &'static str,
    /// The request field at fault, for `INVALID_REQUEST`.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    message: String,
}

impl ErrorView {
    pub(super) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            field: None,
            message: message.into(),
        }
    }

    pub(super) fn about(field: String, code: &'static str, message: String) -> Self {
        Self {
            field: Some(field),
            ..Self::new(code, message)
        }
    }
}
