//! The combined order as this server keeps it: one payment, several
//! sub-orders, each owned by a sub-merchant.
//!
//! Amounts are integer fen everywhere; there is no floating point money.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// `trade_state` of a (sub-)order, with the service's spelling on the wire.
///
/// A combined order never partially succeeds: all sub-orders share the
/// state, so the order's state is the sub-orders' state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TradeState {
    /// 未支付 — created, not paid.
    #[serde(rename = "NOTPAY")]
    NotPay,
    /// 用户支付中 — the payer is entering a password.
    #[serde(rename = "USERPAYING")]
    UserPaying,
    /// 支付成功.
    Success,
    /// 已关闭.
    Closed,
    /// 支付失败.
    #[serde(rename = "PAYERROR")]
    PayError,
    /// 转入退款 — paid, then (partly) refunded.
    Refund,
}

impl TradeState {
    /// The wire spelling (`NOTPAY`, `SUCCESS`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            TradeState::NotPay => "NOTPAY",
            TradeState::UserPaying => "USERPAYING",
            TradeState::Success => "SUCCESS",
            TradeState::Closed => "CLOSED",
            TradeState::PayError => "PAYERROR",
            TradeState::Refund => "REFUND",
        }
    }

    /// Whether no further transition can happen without a refund.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TradeState::Success | TradeState::Closed | TradeState::PayError | TradeState::Refund
        )
    }

    /// Whether the order is still waiting for the payer.
    pub fn is_open(self) -> bool {
        matches!(self, TradeState::NotPay | TradeState::UserPaying)
    }

    /// Whether moving from `self` to `next` is a legal state transition.
    /// NOTPAY/USERPAYING may become anything; SUCCESS may become REFUND;
    /// everything else is final.
    pub fn can_become(self, next: TradeState) -> bool {
        match self {
            TradeState::NotPay | TradeState::UserPaying => next != self,
            TradeState::Success => next == TradeState::Refund,
            _ => false,
        }
    }
}

impl fmt::Display for TradeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `trade_state` string that is not one of the known values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown trade_state {0:?}")]
pub struct UnknownTradeState(pub String);

impl FromStr for TradeState {
    type Err = UnknownTradeState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "NOTPAY" => TradeState::NotPay,
            "USERPAYING" => TradeState::UserPaying,
            "SUCCESS" => TradeState::Success,
            "CLOSED" => TradeState::Closed,
            "PAYERROR" => TradeState::PayError,
            "REFUND" => TradeState::Refund,
            other => return Err(UnknownTradeState(other.chars().take(32).collect())),
        })
    }
}

/// One sub-order: the part of the payment that goes to one sub-merchant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubOrder {
    /// The sub-merchant's mchid.
    pub mchid: String,
    /// The merchant's order number for this sub-order (unique per mchid).
    pub out_trade_no: String,
    /// 商品描述, shown in the payer's bill.
    pub description: String,
    /// Opaque merchant data, returned by query, notification and bill.
    pub attach: String,
    /// Amount in fen (≥ 1), CNY.
    pub amount: i64,
    /// WeChat Pay's transaction id, once paid.
    pub transaction_id: Option<String>,
    /// What the payer paid (amount minus coupons), once paid.
    pub payer_amount: Option<i64>,
    /// Paying bank type, once paid.
    pub bank_type: Option<String>,
    /// RFC 3339 success time, once paid.
    pub success_time: Option<String>,
}

/// A combined order as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CombineOrder {
    /// 合单商户订单号, unique under combine_mchid.
    pub combine_out_trade_no: String,
    /// The initiating merchant.
    pub combine_mchid: String,
    /// The 公众号 appid the order and the payer's openid belong to.
    pub combine_appid: String,
    /// The payer's openid under `combine_appid`.
    pub payer_openid: String,
    /// Current state (the state of every sub-order).
    pub state: TradeState,
    /// The sub-orders, 2–10, in creation order.
    pub sub_orders: Vec<SubOrder>,
    /// Last prepay_id obtained, with its expiry (Unix seconds; 2 hours).
    pub prepay_id: Option<String>,
    /// When `prepay_id` stops being valid.
    pub prepay_expires_at: Option<i64>,
    /// `time_expire` sent with the order, Unix seconds.
    pub time_expire: Option<i64>,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Last state change, Unix seconds.
    pub updated_at: i64,
    /// When a notification was last applied or seen for this order.
    pub notified_at: Option<i64>,
}

impl SubOrder {
    /// A sub-order not paid yet: WeChat Pay's fields are filled in once it
    /// is.
    pub fn unpaid(
        mchid: impl Into<String>,
        out_trade_no: impl Into<String>,
        description: impl Into<String>,
        attach: impl Into<String>,
        amount: i64,
    ) -> Self {
        Self {
            mchid: mchid.into(),
            out_trade_no: out_trade_no.into(),
            description: description.into(),
            attach: attach.into(),
            amount,
            transaction_id: None,
            payer_amount: None,
            bank_type: None,
            success_time: None,
        }
    }
}

impl CombineOrder {
    /// A new order awaiting payment (`NOTPAY`, no prepay_id yet), created
    /// at `now`.
    pub fn unpaid(
        combine_out_trade_no: impl Into<String>,
        combine_mchid: impl Into<String>,
        combine_appid: impl Into<String>,
        payer_openid: impl Into<String>,
        sub_orders: Vec<SubOrder>,
        time_expire: Option<i64>,
        now: i64,
    ) -> Self {
        Self {
            combine_out_trade_no: combine_out_trade_no.into(),
            combine_mchid: combine_mchid.into(),
            combine_appid: combine_appid.into(),
            payer_openid: payer_openid.into(),
            state: TradeState::NotPay,
            sub_orders,
            prepay_id: None,
            prepay_expires_at: None,
            time_expire,
            created_at: now,
            updated_at: now,
            notified_at: None,
        }
    }

    /// Sum of the sub-order amounts, in fen.
    pub fn total_amount(&self) -> i64 {
        self.sub_orders.iter().map(|s| s.amount).sum()
    }
}

/// Where a state change came from (recorded in the events table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventSource {
    /// Order created by this server.
    Create,
    /// A verified pay notification.
    Notify,
    /// The query API (on demand or by the reconciliation worker).
    Query,
    /// The close API.
    Close,
    /// Closed because `time_expire` passed.
    Expiry,
}

impl EventSource {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EventSource::Create => "create",
            EventSource::Notify => "notify",
            EventSource::Query => "query",
            EventSource::Close => "close",
            EventSource::Expiry => "expiry",
        }
    }
}

/// Payment facts for one sub-order, from a notification or a query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubOrderPayment {
    /// Sub-merchant mchid.
    pub mchid: String,
    /// Sub-order number.
    pub out_trade_no: String,
    /// WeChat Pay transaction id.
    pub transaction_id: Option<String>,
    /// Amount the payer paid, fen.
    pub payer_amount: Option<i64>,
    /// Bank type.
    pub bank_type: Option<String>,
    /// RFC 3339 success time.
    pub success_time: Option<String>,
}

/// A requested state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The new state.
    pub to: TradeState,
    /// Where it came from.
    pub source: EventSource,
    /// Per-sub-order payment facts (empty when closing).
    pub payments: Vec<SubOrderPayment>,
    /// The notification id, for notifications: a repeat of the same id with
    /// the same body digest is a duplicate; with a different body it is refused.
    pub notification: Option<NotificationRef>,
    /// Free-form detail for the event log (never secrets or full openids).
    pub detail: String,
}

/// Identifies a delivered notification for idempotency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRef {
    /// The envelope `id`.
    pub id: String,
    /// SHA-256 hex of the raw notification body.
    pub body_sha256: String,
}

/// What the store did with a [`Transition`] (the merchant library's
/// `Store::apply_transition`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The state changed (one event row written).
    Applied(CombineOrder),
    /// The order is already in the requested state (or the notification id
    /// was already applied with the same body): nothing changed.
    AlreadyApplied(CombineOrder),
    /// The transition is not legal from the current state (e.g. SUCCESS for a
    /// CLOSED order), or the notification id was already used with another
    /// body: nothing changed; the caller should alert.
    Rejected {
        /// The order as it is.
        order: CombineOrder,
        /// Why.
        reason: RejectReason,
    },
}

impl ApplyOutcome {
    /// The order after the call (changed or not).
    pub fn order(&self) -> &CombineOrder {
        match self {
            ApplyOutcome::Applied(o) | ApplyOutcome::AlreadyApplied(o) => o,
            ApplyOutcome::Rejected { order, .. } => order,
        }
    }
}

/// Why [`ApplyOutcome::Rejected`]: each is a refusal that changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    /// The state machine does not allow `from` → `to` (e.g. CLOSED → SUCCESS:
    /// money taken for a closed order, an incident).
    #[error("illegal transition {from} -> {to}")]
    IllegalTransition {
        /// Stored state.
        from: TradeState,
        /// Requested state.
        to: TradeState,
    },
    /// This notification id was already recorded with a different body digest.
    #[error("notification id {id:?} was already received with a different body")]
    NotificationReplayed {
        /// The envelope id.
        id: String,
    },
    /// A payment names a sub-order the order does not have.
    #[error("sub-order {mchid}/{out_trade_no} is not part of the order")]
    UnknownSubOrder {
        /// Sub-merchant.
        mchid: String,
        /// Sub-order number.
        out_trade_no: String,
    },
    /// A payment carries a transaction id different from the one stored.
    #[error("sub-order {out_trade_no} already has another transaction id")]
    TransactionIdChanged {
        /// Sub-order number.
        out_trade_no: String,
    },
}

/// One row of the append-only events table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderEvent {
    /// Monotonic id.
    pub id: i64,
    /// The order.
    pub combine_out_trade_no: String,
    /// State before (None for creation).
    pub from_state: Option<TradeState>,
    /// State after.
    pub to_state: TradeState,
    /// Where it came from.
    pub source: EventSource,
    /// Detail text.
    pub detail: String,
    /// Unix seconds.
    pub at: i64,
}
