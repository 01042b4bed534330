//! JSON bodies of the refund APIs and the refund notification, with the
//! service's field names (refunds.md §1, §2, §5). Optional fields are
//! omitted when absent; unknown response fields are ignored; every
//! documented variant is accepted on input.

use super::RefundStatus;
use serde::{Deserialize, Serialize};

/// `amount` of a refund request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequestAmount {
    /// Fen to refund (标价金额).
    pub refund: i64,
    /// The original order's amount: for a combined sub-order, the
    /// sub-order's `total_amount`, not the combined sum.
    pub total: i64,
    /// `CNY`.
    pub currency: String,
    /// Source accounts (profit-sharing orders only); passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<serde_json::Value>,
}

/// Body of `POST /v3/refund/domestic/refunds`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequest {
    /// Partner mode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
    /// The sub-order's WeChat Pay transaction id (this kit always sends it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    /// The sub-order number (the alternative to `transaction_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    /// The merchant's refund number, unique per merchant.
    pub out_refund_no: String,
    /// Shown to the payer (≤ 80 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Where the refund notification goes (overrides the platform setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    /// `AVAILABLE` / `UNSETTLED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funds_account: Option<String>,
    /// Amounts.
    pub amount: RefundRequestAmount,
    /// Per-item refunds; passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goods_detail: Option<serde_json::Value>,
}

/// `amount` of a refund as WeChat Pay reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundAmount {
    /// The order's amount.
    pub total: i64,
    /// The refund (标价).
    pub refund: i64,
    /// Cash the payer paid.
    #[serde(default)]
    pub payer_total: i64,
    /// Cash returned to the payer.
    #[serde(default)]
    pub payer_refund: i64,
    /// refund − non-recharge coupon refund.
    #[serde(default)]
    pub settlement_refund: i64,
    /// total − non-recharge coupon amount.
    #[serde(default)]
    pub settlement_total: i64,
    /// Coupon part of the refund.
    #[serde(default)]
    pub discount_refund: i64,
    /// `CNY`.
    #[serde(default = "cny")]
    pub currency: String,
    /// Fee refunded (newer documents only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_fee: Option<i64>,
    /// Source accounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<serde_json::Value>,
}

fn cny() -> String {
    "CNY".into()
}

/// A refund: the 200 body of create, query and abnormal-refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    /// WeChat Pay's refund number.
    pub refund_id: String,
    /// The merchant's refund number.
    pub out_refund_no: String,
    /// The refunded transaction.
    pub transaction_id: String,
    /// The refunded (sub-)order number.
    pub out_trade_no: String,
    /// `ORIGINAL`, `BALANCE`, `OTHER_BALANCE`, `OTHER_BANKCARD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Where the money went, e.g. `支付用户零钱`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_received_account: Option<String>,
    /// RFC 3339, only when SUCCESS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    /// RFC 3339 acceptance time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    /// Status.
    pub status: RefundStatus,
    /// Funding account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funds_account: Option<String>,
    /// Amounts.
    pub amount: RefundAmount,
    /// Coupons; passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion_detail: Option<serde_json::Value>,
}

/// `amount` of a refund notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundNoticeAmount {
    /// The order's amount.
    pub total: i64,
    /// The refund.
    pub refund: i64,
    /// Cash the payer paid.
    #[serde(default)]
    pub payer_total: i64,
    /// Cash returned to the payer.
    #[serde(default)]
    pub payer_refund: i64,
}

/// The decrypted `resource` of a refund notification (`original_type`
/// `refund`). Direct mode names `mchid`; partner mode `sp_mchid` and
/// `sub_mchid`; the Java SDK's shape mirrors [`Refund`] (`status`, no
/// `mchid`). All three are accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundNotice {
    /// The refunding merchant (direct mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mchid: Option<String>,
    /// Partner mode: the service provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sp_mchid: Option<String>,
    /// Partner mode: the sub-merchant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
    /// The (sub-)order number.
    pub out_trade_no: String,
    /// The refunded transaction.
    pub transaction_id: String,
    /// The merchant's refund number.
    pub out_refund_no: String,
    /// WeChat Pay's refund number.
    pub refund_id: String,
    /// SUCCESS, CLOSED or ABNORMAL.
    #[serde(alias = "status")]
    pub refund_status: RefundStatus,
    /// RFC 3339, only when SUCCESS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    /// Where the money went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_received_account: Option<String>,
    /// Amounts.
    pub amount: RefundNoticeAmount,
}

impl RefundNotice {
    /// The merchant the notice is about: `mchid`, else `sub_mchid`.
    pub fn merchant(&self) -> Option<&str> {
        self.mchid.as_deref().or(self.sub_mchid.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notice_accepts_the_direct_partner_and_java_shapes() {
        let direct = r#"{"mchid":"1900000100","transaction_id":"1008450740201411110005820873","out_trade_no":"20150806125346","refund_id":"50200207182018070300011301001","out_refund_no":"7752501201407033233368018","refund_status":"SUCCESS","success_time":"2018-06-08T10:34:56+08:00","user_received_account":"招商银行信用卡0403","amount":{"total":999,"refund":999,"payer_total":999,"payer_refund":999}}"#;
        let n: RefundNotice = serde_json::from_str(direct).unwrap();
        assert_eq!(n.merchant(), Some("1900000100"));
        assert_eq!(n.refund_status, RefundStatus::Success);

        let partner = direct.replace(
            r#""mchid":"1900000100""#,
            r#""sp_mchid":"1900000100","sub_mchid":"1900000109""#,
        );
        let n: RefundNotice = serde_json::from_str(&partner).unwrap();
        assert_eq!(n.merchant(), Some("1900000109"));

        let java = r#"{"transaction_id":"T","out_trade_no":"S","refund_id":"R","out_refund_no":"O","status":"CLOSE","channel":"ORIGINAL","create_time":"2018-06-08T10:34:56+08:00","amount":{"total":2,"refund":1,"payer_total":2,"payer_refund":1}}"#;
        let n: RefundNotice = serde_json::from_str(java).unwrap();
        assert_eq!(n.refund_status, RefundStatus::Closed);
        assert_eq!(n.merchant(), None);
    }

    #[test]
    fn request_omits_absent_fields() {
        let r = RefundRequest {
            sub_mchid: None,
            transaction_id: Some("T".into()),
            out_trade_no: None,
            out_refund_no: "R1".into(),
            reason: None,
            notify_url: Some("https://m.example/wxpay/refund-notify".into()),
            funds_account: None,
            amount: RefundRequestAmount {
                refund: 1,
                total: 2,
                currency: "CNY".into(),
                from: None,
            },
            goods_detail: None,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"transaction_id":"T","out_refund_no":"R1","notify_url":"https://m.example/wxpay/refund-notify","amount":{"refund":1,"total":2,"currency":"CNY"}}"#
        );
    }
}
