//! Refunds of sub-orders (`/v3/refund/domestic/refunds`, direct mode):
//! create, query, the move from PROCESSING to a final status after a
//! (scaled) delay, and the refund notification.
//!
//! A sub-order is refunded only by its own merchant, signing with its own
//! key: the combined-order initiator gets the real service's refusals
//! (refunds.md §6.2). The rules a new refund must satisfy are the core's
//! [`check_new_refund`].

use super::auth::Caller;
use super::clock::{self, wall_ms};
use super::credentials::Merchant;
use super::error::ApiError;
use super::faults::Faults;
use super::ids;
use super::reply::Reply;
use super::state::{order_state, NotificationRow, RefundRow, SubOrderRow};
use super::SimState;
use axum::http::StatusCode;
use serde_json::{json, Value};
use wxpay_combine_core::apiv3::{Clock, EncryptedResource};
use wxpay_combine_core::refund::wire::{Refund, RefundAmount, RefundNotice, RefundNoticeAmount};
use wxpay_combine_core::refund::{
    check_new_refund, is_valid_out_refund_no, PriorRefund, RefundRule, RefundStatus,
};

/// Simulated seconds from acceptance to the final status, unless the
/// `refund_delay_secs` fault says otherwise (scaled by `time_scale`).
pub const REFUND_DELAY_SECS: u64 = 60;

/// Where the money goes in the simulator: no coupons, no bank cards.
const USER_RECEIVED_ACCOUNT: &str = "支付用户零钱";

fn not_found(message: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", message).with_internal(268_512_771)
}

fn mismatch() -> ApiError {
    ApiError::invalid_request("您的请求参数与订单信息不一致")
}

/// A validated create request.
struct CreateRequest {
    transaction_id: Option<String>,
    out_trade_no: Option<String>,
    out_refund_no: String,
    refund: i64,
    total: i64,
    reason: Option<String>,
    notify_url: Option<String>,
    funds_account: Option<String>,
}

fn opt_str(v: &Value, field: &str, max: usize) -> Result<Option<String>, ApiError> {
    match v.get(field.trim_start_matches('/')) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Err(ApiError::param(field, "不能为空")),
        Some(Value::String(s)) if s.len() > max => {
            Err(ApiError::param(field, format!("长度不能超过{max}字节")))
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::param(field, "应为字符串")),
    }
}

fn int(v: &Value, key: &str, field: &str) -> Result<i64, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Err(ApiError::param(field, "缺少必填字段")),
        Some(x) => x
            .as_i64()
            .ok_or_else(|| ApiError::param(field, "应为整数（单位：分）")),
    }
}

fn validate(body: &[u8]) -> Result<CreateRequest, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            format!("请求体不是合法的JSON：{e}"),
        )
    })?;
    if !v.is_object() {
        return Err(ApiError::param("/", "请求体应为JSON对象"));
    }
    if opt_str(&v, "/sub_mchid", 32)?.is_some() {
        // Partner mode is not simulated; a direct-mode body has no sub_mchid.
        return Err(ApiError::param(
            "/sub_mchid",
            "直连商户模式下不能传sub_mchid",
        ));
    }
    let transaction_id = opt_str(&v, "/transaction_id", 32)?;
    let out_trade_no = opt_str(&v, "/out_trade_no", 32)?;
    if transaction_id.is_none() && out_trade_no.is_none() {
        return Err(ApiError::param(
            "/transaction_id",
            "transaction_id和out_trade_no必须二选一",
        ));
    }
    let out_refund_no = opt_str(&v, "/out_refund_no", 64)?
        .ok_or_else(|| ApiError::param("/out_refund_no", "缺少必填字段"))?;
    if !is_valid_out_refund_no(&out_refund_no) {
        return Err(ApiError::param(
            "/out_refund_no",
            "只能是数字、大小写字母和_-|*@",
        ));
    }
    let reason = opt_str(&v, "/reason", 80)?;
    let notify_url = opt_str(&v, "/notify_url", 256)?;
    if let Some(u) = &notify_url {
        // Both http and https are documented (refunds.md §5); no query.
        match url::Url::parse(u) {
            Ok(p) if matches!(p.scheme(), "http" | "https") && p.host().is_some() => {
                if p.query().is_some() {
                    return Err(ApiError::param("/notify_url", "不能携带参数"));
                }
            }
            _ => return Err(ApiError::param("/notify_url", "应为http(s)地址")),
        }
    }
    let funds_account = opt_str(&v, "/funds_account", 32)?;
    if let Some(f) = &funds_account {
        if !matches!(f.as_str(), "AVAILABLE" | "UNSETTLED") {
            return Err(ApiError::param(
                "/funds_account",
                "只支持AVAILABLE或UNSETTLED",
            ));
        }
    }
    let amount = match v.get("amount") {
        Some(a @ Value::Object(_)) => a,
        None | Some(Value::Null) => return Err(ApiError::param("/amount", "缺少必填字段")),
        Some(_) => return Err(ApiError::param("/amount", "应为对象")),
    };
    let refund = int(amount, "refund", "/amount/refund")?;
    if refund < 1 {
        return Err(ApiError::param("/amount/refund", "退款金额至少为1分"));
    }
    let total = int(amount, "total", "/amount/total")?;
    if total < 1 {
        return Err(ApiError::param("/amount/total", "原订单金额至少为1分"));
    }
    match amount.get("currency") {
        Some(Value::String(c)) if c == "CNY" => {}
        None | Some(Value::Null) => {
            return Err(ApiError::param("/amount/currency", "缺少必填字段"))
        }
        Some(_) => return Err(ApiError::param("/amount/currency", "只支持CNY")),
    }
    Ok(CreateRequest {
        transaction_id,
        out_trade_no,
        out_refund_no,
        refund,
        total,
        reason,
        notify_url,
        funds_account,
    })
}

/// The sub-order a request names, as the real service finds it for the
/// refunding merchant: `(combine_mchid, combine_out_trade_no, sub-order)`.
async fn find_sub_order(
    st: &SimState,
    mchid: &str,
    r: &CreateRequest,
) -> Result<(String, String, SubOrderRow), ApiError> {
    // `transaction_id` wins when both are sent (as in V2); a different
    // `out_trade_no` beside it is a mismatch.
    if let Some(t) = &r.transaction_id {
        let (cm, cno, sub) = st
            .db
            .sub_order_by_transaction(t)
            .await?
            .ok_or_else(|| not_found("订单不存在"))?;
        if sub.mchid != mchid
            || r.out_trade_no
                .as_ref()
                .is_some_and(|o| *o != sub.out_trade_no)
        {
            return Err(mismatch());
        }
        return Ok((cm, cno, sub));
    }
    let no = r.out_trade_no.as_deref().unwrap_or_default();
    st.db
        .sub_order_by_number(mchid, no)
        .await?
        .ok_or_else(|| not_found("订单不存在"))
}

fn rule_error(e: RefundRule) -> ApiError {
    match e {
        RefundRule::NotPaid => not_found("未支付的订单不能发起退款"),
        RefundRule::AmountTooSmall(_) => ApiError::param("/amount/refund", "退款金额至少为1分"),
        RefundRule::ExceedsRefundable { .. } => {
            ApiError::invalid_request("申请退款金额超过订单可退金额")
        }
        RefundRule::TooManyRefunds(_) => {
            ApiError::invalid_request("该订单部分退款次数已达上限（50次），不能再发起退款")
        }
        RefundRule::WindowExpired => {
            ApiError::invalid_request("订单已超过退款期限（支付成功后一年），不能发起退款")
        }
    }
}

fn status_of(text: &str) -> RefundStatus {
    text.parse().unwrap_or(RefundStatus::Processing)
}

/// The Refund object (refunds.md §1.2), with no coupons.
pub fn refund_json(r: &RefundRow) -> Value {
    let status = status_of(&r.status);
    let body = Refund {
        refund_id: r.refund_id.clone(),
        out_refund_no: r.out_refund_no.clone(),
        transaction_id: r.transaction_id.clone().unwrap_or_default(),
        out_trade_no: r.out_trade_no.clone(),
        channel: Some("ORIGINAL".into()),
        user_received_account: Some(USER_RECEIVED_ACCOUNT.into()),
        success_time: r
            .success_time
            .filter(|_| status == RefundStatus::Success)
            .map(clock::rfc3339),
        create_time: Some(clock::rfc3339(r.created_at)),
        status,
        funds_account: Some(
            r.funds_account
                .clone()
                .unwrap_or_else(|| "UNSETTLED".into()),
        ),
        amount: RefundAmount {
            total: r.total_amount,
            refund: r.amount,
            payer_total: r.total_amount,
            payer_refund: r.amount,
            settlement_refund: r.amount,
            settlement_total: r.total_amount,
            discount_refund: 0,
            currency: "CNY".into(),
            refund_fee: None,
            from: None,
        },
        promotion_detail: None,
    };
    serde_json::to_value(body).unwrap_or(Value::Null)
}

/// `POST /v3/refund/domestic/refunds`.
pub async fn create(st: &SimState, caller: &Caller, body: &[u8]) -> Result<Reply, ApiError> {
    let req = validate(body)?;
    let mchid = caller.merchant.creds.mchid.as_str();
    let _guard = st.write_lock.lock().await;
    let (combine_mchid, combine_no, sub) = find_sub_order(st, mchid, &req).await?;
    let faults = st.faults.effective(Some(mchid), Some(&combine_no));
    if faults.refund_frequency_limited == Some(true) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "FREQUENCY_LIMITED",
            "该笔退款未受理，请降低频率后重试",
        ));
    }
    // The same number again: the same refund (idempotent), or a refusal
    // when it names another sub-order or amount.
    if let Some(existing) = st.db.refund_by_no(mchid, &req.out_refund_no).await? {
        if existing.out_trade_no != sub.out_trade_no || existing.amount != req.refund {
            return Err(ApiError::invalid_request(
                "商户退款单号已被使用，且与原退款请求的订单或金额不一致",
            ));
        }
        return Ok(Reply::json(&refund_json(&existing)));
    }
    let paid = matches!(
        sub.trade_state.as_str(),
        order_state::SUCCESS | order_state::REFUND
    );
    if !paid {
        return Err(rule_error(RefundRule::NotPaid));
    }
    if req.total != sub.total_amount {
        return Err(mismatch());
    }
    let prior: Vec<PriorRefund> = st
        .db
        .refunds_of_sub_order(mchid, &sub.out_trade_no)
        .await?
        .into_iter()
        .map(|(amount, status)| PriorRefund {
            amount,
            status: status_of(&status),
        })
        .collect();
    let now = st.clock.now();
    check_new_refund(sub.total_amount, sub.success_time, &prior, req.refund, now)
        .map_err(rule_error)?;

    let delay = faults.refund_delay_secs.unwrap_or(REFUND_DELAY_SECS);
    let row = RefundRow {
        refund_id: ids::refund_id(now),
        out_refund_no: req.out_refund_no,
        combine_mchid,
        combine_out_trade_no: combine_no,
        mchid: mchid.to_string(),
        out_trade_no: sub.out_trade_no.clone(),
        amount: req.refund,
        created_at: now,
        status: RefundStatus::Processing.as_str().into(),
        success_time: None,
        notify_url: req.notify_url,
        reason: req.reason,
        funds_account: req.funds_account,
        outcome: Some(outcome(&faults).as_str().into()),
        due_ms: Some(wall_ms() + scaled_ms(delay, st.time_scale)),
        transaction_id: sub.transaction_id.clone(),
        total_amount: sub.total_amount,
    };
    st.db.insert_refund(&row).await?;
    st.wake.notify_one();
    Ok(Reply::json(&refund_json(&row)))
}

fn outcome(faults: &Faults) -> RefundStatus {
    match faults.refund_outcome {
        Some(s @ (RefundStatus::Closed | RefundStatus::Abnormal)) => s,
        _ => RefundStatus::Success,
    }
}

fn scaled_ms(secs: u64, scale: f64) -> i64 {
    ((secs as f64) * 1000.0 * scale).round().max(0.0) as i64
}

/// `GET /v3/refund/domestic/refunds/{out_refund_no}`: only the refunding
/// merchant sees its refund.
pub async fn query(st: &SimState, caller: &Caller, no: &str) -> Result<Reply, ApiError> {
    let row = st
        .db
        .refund_by_no(&caller.merchant.creds.mchid, no)
        .await?
        .ok_or_else(|| not_found("退款单不存在"))?;
    Ok(Reply::json(&refund_json(&row)))
}

/// Moves every due PROCESSING refund to its outcome and queues its
/// notification (the delivery worker calls this on each turn).
pub async fn complete_due(st: &SimState) {
    let due = match st.db.due_refunds(wall_ms()).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "could not read due refunds");
            return;
        }
    };
    for mut r in due {
        let status = r
            .outcome
            .as_deref()
            .map(status_of)
            .filter(|s| *s != RefundStatus::Processing)
            .unwrap_or(RefundStatus::Success);
        let now = st.clock.now();
        let success_time = (status == RefundStatus::Success).then_some(now);
        r.status = status.as_str().into();
        r.success_time = success_time;
        let notification = match (&r.notify_url, st.account(&r.mchid)) {
            (Some(url), Some(m)) => Some(notification(st, m, &r, url, now)),
            _ => None,
        };
        match st
            .db
            .finish_refund(
                &r.refund_id,
                status.as_str(),
                success_time,
                notification.as_ref(),
            )
            .await
        {
            Ok(true) if notification.is_some() => st.wake.notify_one(),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not finish a refund"),
        }
    }
}

/// The notification of refund `r` in its final status: the direct-mode
/// RefundNotice, encrypted with the refunding merchant's APIv3 key (the
/// delivery signs it with that merchant's WeChat Pay key).
fn notification(
    st: &SimState,
    merchant: &Merchant,
    r: &RefundRow,
    url: &str,
    now: i64,
) -> NotificationRow {
    let status = status_of(&r.status);
    let notice = RefundNotice {
        mchid: Some(r.mchid.clone()),
        sp_mchid: None,
        sub_mchid: None,
        out_trade_no: r.out_trade_no.clone(),
        transaction_id: r.transaction_id.clone().unwrap_or_default(),
        out_refund_no: r.out_refund_no.clone(),
        refund_id: r.refund_id.clone(),
        refund_status: status,
        success_time: r.success_time.map(clock::rfc3339),
        user_received_account: Some(USER_RECEIVED_ACCOUNT.into()),
        amount: RefundNoticeAmount {
            total: r.total_amount,
            refund: r.amount,
            payer_total: r.total_amount,
            payer_refund: r.amount,
        },
    };
    let plaintext = serde_json::to_vec(&notice).unwrap_or_default();
    let resource =
        EncryptedResource::seal(&merchant.apiv3_key, "refund", Some("refund"), &plaintext);
    let summary = match status {
        RefundStatus::Success => "退款成功",
        RefundStatus::Closed => "退款关闭",
        _ => "退款异常",
    };
    let id = uuid::Uuid::new_v4().to_string();
    let envelope = json!({
        "id": id,
        "create_time": clock::rfc3339(now),
        "resource_type": "encrypt-resource",
        "event_type": status.event_type().unwrap_or("REFUND.SUCCESS"),
        "summary": summary,
        "resource": resource,
    });
    let delay = st
        .faults
        .effective(Some(&r.mchid), Some(&r.combine_out_trade_no))
        .notify_delay_ms
        .unwrap_or(0) as i64;
    NotificationRow {
        id,
        // Delivery looks the signer up by this mchid: the refunding merchant.
        combine_mchid: r.mchid.clone(),
        combine_out_trade_no: r.combine_out_trade_no.clone(),
        notify_url: url.into(),
        body: envelope.to_string(),
        status: "pending".into(),
        attempts: 0,
        next_attempt_ms: wall_ms() + delay,
        created_ms: wall_ms(),
    }
}
