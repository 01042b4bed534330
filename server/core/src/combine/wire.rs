//! JSON bodies of the combined-order APIs, with the service's field names.
//!
//! Optional fields are omitted, never sent as `null` (the current rules
//! forbid null); unknown fields in responses are ignored.

use serde::{Deserialize, Serialize};

/// `amount` of a sub-order in a prepay request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestAmount {
    /// Fen, ≥ 1.
    pub total_amount: i64,
    /// `CNY`.
    pub currency: String,
}

/// `settle_info` of a sub-order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettleInfo {
    /// Whether the sub-order takes part in profit sharing.
    pub profit_sharing: bool,
}

/// One `sub_orders[]` entry of `POST /v3/combine-transactions/jsapi`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepaySubOrder {
    /// Sub-merchant mchid.
    pub mchid: String,
    /// Opaque merchant data (≤ 128 characters), returned by query and notification.
    pub attach: String,
    /// Amount.
    pub amount: RequestAmount,
    /// Sub-order number, 6–32 of `[0-9A-Za-z_-|*]`.
    pub out_trade_no: String,
    /// Description, ≤ 127 characters.
    pub description: String,
    /// Goods detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Coupon tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goods_tag: Option<String>,
    /// Settlement options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_info: Option<SettleInfo>,
}

/// `scene_info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SceneInfo {
    /// Terminal id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Payer IP (required when scene_info is present in a request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_client_ip: Option<String>,
}

/// `combine_payer_info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayerInfo {
    /// The payer's openid under combine_appid.
    pub openid: String,
}

/// Body of `POST /v3/combine-transactions/jsapi`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepayRequest {
    /// 公众号 appid.
    pub combine_appid: String,
    /// Initiating merchant.
    pub combine_mchid: String,
    /// Combined order number.
    pub combine_out_trade_no: String,
    /// Scene.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene_info: Option<SceneInfo>,
    /// 2–10 sub-orders.
    pub sub_orders: Vec<PrepaySubOrder>,
    /// Payer.
    pub combine_payer_info: PayerInfo,
    /// RFC 3339 start time (older documents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_start: Option<String>,
    /// RFC 3339 expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_expire: Option<String>,
    /// Notification URL, no query string.
    pub notify_url: String,
}

/// 200 body of the prepay API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepayResponse {
    /// Valid 2 hours.
    pub prepay_id: String,
}

/// One `sub_orders[]` entry of the close request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseSubOrder {
    /// Sub-merchant.
    pub mchid: String,
    /// Sub-order number.
    pub out_trade_no: String,
}

/// Body of `POST /v3/combine-transactions/out-trade-no/{no}/close`
/// (the order number is in the path only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseRequest {
    /// 公众号 appid.
    pub combine_appid: String,
    /// Every sub-order of the original order, exactly.
    pub sub_orders: Vec<CloseSubOrder>,
}

/// `amount` of a sub-order in a query response or notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionAmount {
    /// Order amount, fen.
    pub total_amount: i64,
    /// What the payer paid, fen (total minus coupons).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_amount: Option<i64>,
    /// `CNY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Payer's currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_currency: Option<String>,
    /// Settlement rate (cross-border; rarely present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_rate: Option<i64>,
}

/// One `sub_orders[]` entry of a query response or decrypted notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionSubOrder {
    /// Sub-merchant.
    pub mchid: String,
    /// `JSAPI` etc.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_type: Option<String>,
    /// `SUCCESS`, `NOTPAY`, … (kept as text: unknown values must not make
    /// the whole body unparseable; they are checked where used).
    pub trade_state: String,
    /// Bank type (`OTHERS` for non-card).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_type: Option<String>,
    /// Merchant data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    /// RFC 3339, possibly with milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    /// WeChat Pay transaction id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    /// Sub-order number.
    pub out_trade_no: String,
    /// Partner mode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
    /// Amounts.
    pub amount: TransactionAmount,
    /// Coupons, passed through untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion_detail: Option<serde_json::Value>,
}

/// The combined transaction: the 200 body of the query API and the
/// decrypted `resource` of a pay notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CombineTransaction {
    /// 公众号 appid.
    pub combine_appid: String,
    /// Initiating merchant.
    pub combine_mchid: String,
    /// Combined order number.
    pub combine_out_trade_no: String,
    /// Scene.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene_info: Option<SceneInfo>,
    /// Sub-orders.
    pub sub_orders: Vec<TransactionSubOrder>,
    /// Payer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combine_payer_info: Option<PayerInfo>,
}

/// The notification envelope POSTed to notify_url.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationEnvelope {
    /// Unique notification id.
    pub id: String,
    /// RFC 3339.
    pub create_time: String,
    /// `TRANSACTION.SUCCESS`.
    pub event_type: String,
    /// `encrypt-resource`.
    pub resource_type: String,
    /// e.g. `支付成功`.
    #[serde(default)]
    pub summary: String,
    /// The encrypted [`CombineTransaction`].
    pub resource: crate::apiv3::EncryptedResource,
}

/// An APIv3 error body: `{"code","message","detail"?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// e.g. `PARAM_ERROR`.
    pub code: String,
    /// Human text (often Chinese).
    #[serde(default)]
    pub message: String,
    /// Field-level detail, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}
