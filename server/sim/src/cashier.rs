//! The payer: `bridge.js` (a stand-in `WeixinJSBridge`), the cashier's order
//! preview, and the confirm step that checks `paySign` and pays.

use super::clock::wall_ms;
use super::credentials::Merchant;
use super::ids;
use super::notify;
use super::order::{self, transaction_json};
use super::state::{order_state, SubOrderRow};
use super::SimState;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use wxpay_combine_core::apiv3::{Clock, JsapiPayParams};

/// What WeChat says when the paying page is not under a registered pay
/// directory (支付授权目录).
pub const URL_NOT_REGISTERED: &str = "当前页面的URL未注册";

/// The pay-directory check: `None` when `page_url` may pay for `merchant`.
/// Without registered directories, or without a page (a payer driven by
/// code), nothing is checked.
fn page_refusal(merchant: &Merchant, page_url: Option<&str>) -> Option<CashierOutcome> {
    let page = page_url?;
    let dirs = merchant
        .pay_directories
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if dirs.is_empty() {
        return None;
    }
    let mut why = Vec::new();
    for d in &dirs {
        match wxpay_combine_core::paydir::check(d, page) {
            Ok(_) => return None,
            Err(e) => why.push(e.explain()),
        }
    }
    // The page URL may carry an order number in its query: log the directory only.
    let dir = url::Url::parse(page)
        .map(|u| wxpay_combine_core::paydir::page_directory(&u))
        .unwrap_or_default();
    tracing::info!(mchid = %merchant.creds.mchid, page_directory = %dir, registered = ?dirs, why = %why.join(" | "), "cashier refused: page outside the registered pay directories");
    Some(CashierOutcome::url_not_registered())
}

/// The bridge script.
pub const BRIDGE_JS: &str = include_str!("bridge.js");

/// The payer's choice in the cashier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CashierAction {
    /// Pay.
    Pay,
    /// Cancel.
    Cancel,
}

/// What `getBrandWCPayRequest`'s callback receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CashierOutcome {
    /// `get_brand_wcpay_request:ok|cancel|fail`.
    pub err_msg: String,
    /// Why it failed (the simulator's explanation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub err_desc: Option<String>,
}

impl CashierOutcome {
    fn ok() -> Self {
        Self {
            err_msg: "get_brand_wcpay_request:ok".into(),
            err_desc: None,
        }
    }
    fn cancel() -> Self {
        Self {
            err_msg: "get_brand_wcpay_request:cancel".into(),
            err_desc: None,
        }
    }
    fn fail(why: impl Into<String>) -> Self {
        Self {
            err_msg: "get_brand_wcpay_request:fail".into(),
            err_desc: Some(why.into()),
        }
    }
    /// WeChat's refusal of a page outside the registered pay directories.
    pub fn url_not_registered() -> Self {
        Self::fail(URL_NOT_REGISTERED)
    }
    /// Whether the payment went through.
    pub fn is_ok(&self) -> bool {
        self.err_msg == "get_brand_wcpay_request:ok"
    }
}

/// `GET /sim/bridge.js`.
pub async fn bridge_js() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        BRIDGE_JS,
    )
        .into_response()
}

/// `GET /sim/cashier/order?package=prepay_id%3D…`: what the cashier shows.
pub async fn order_preview(
    State(st): State<Arc<SimState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let pkg = q.get("package").map(String::as_str).unwrap_or("");
    let not_found =
        |why: &str| (StatusCode::NOT_FOUND, Json(json!({"error": why}))).into_response();
    let Some(prepay_id) = pkg.strip_prefix("prepay_id=") else {
        return not_found("package 应为 prepay_id=…");
    };
    let Ok(Some(p)) = st.db.prepay(prepay_id).await else {
        return not_found("prepay_id 不存在");
    };
    let Some(m) = st.merchant(&p.combine_mchid) else {
        return not_found("商户不存在");
    };
    let Ok(subs) = st
        .db
        .sub_orders(&p.combine_mchid, &p.combine_out_trade_no)
        .await
    else {
        return not_found("订单不存在");
    };
    // WeChat checks the page before the cashier opens.
    if let Some(refused) = page_refusal(m, q.get("page_url").map(String::as_str)) {
        return Json(json!({ "refused": refused })).into_response();
    }
    let faults = st
        .faults
        .effective(Some(&p.combine_mchid), Some(&p.combine_out_trade_no));
    let total: i64 = subs.iter().map(|s| s.total_amount).sum();
    Json(json!({
        "merchant_name": m.creds.merchant_name,
        "total_amount": total,
        "sub_orders": subs.iter().map(|s| json!({"description": s.description, "total_amount": s.total_amount})).collect::<Vec<_>>(),
        "tamper_pay_sign": faults.tamper_pay_sign.unwrap_or(false),
        "lose_answer": faults.lose_bridge_answer.unwrap_or(false),
    }))
    .into_response()
}

/// `POST /sim/cashier/confirm` with the six parameters plus `action`.
pub async fn confirm_http(
    State(st): State<Arc<SimState>>,
    Json(mut body): Json<Value>,
) -> Response {
    let page_url = body
        .as_object_mut()
        .and_then(|o| o.remove("page_url"))
        .and_then(|v| v.as_str().map(str::to_string));
    // `coupon_fen`: pay with a coupon of that many fen (overrides the
    // `/sim/control` setting for this payment).
    let coupon = match body.as_object_mut().and_then(|o| o.remove("coupon_fen")) {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64().filter(|n| *n >= 0) {
            Some(n) => Some(n),
            None => {
                return Json(CashierOutcome::fail("coupon_fen 应为非负整数（分）")).into_response()
            }
        },
    };
    let outcome = match parse_confirm(&mut body) {
        Ok((params, action, bank)) => match page_check(&st, &params, page_url.as_deref()).await {
            Some(refused) => refused,
            None => confirm_with_coupon(&st, &params, action, bank.as_deref(), coupon).await,
        },
        Err(why) => CashierOutcome::fail(why),
    };
    Json(outcome).into_response()
}

/// The pay-directory check of a confirm sent from a page.
async fn page_check(
    st: &SimState,
    params: &JsapiPayParams,
    page_url: Option<&str>,
) -> Option<CashierOutcome> {
    let prepay_id = params.prepay_id()?;
    let p = st.db.prepay(prepay_id).await.ok()??;
    page_refusal(st.merchant(&p.combine_mchid)?, page_url)
}

fn parse_confirm(
    body: &mut Value,
) -> Result<(JsapiPayParams, CashierAction, Option<String>), String> {
    let obj = body.as_object_mut().ok_or("body must be a JSON object")?;
    let action: CashierAction = obj
        .remove("action")
        .ok_or("action is missing")
        .and_then(|a| serde_json::from_value(a).map_err(|_| "action must be pay or cancel"))?;
    let bank = obj
        .remove("bank_type")
        .and_then(|b| b.as_str().map(str::to_string));
    let params: JsapiPayParams = serde_json::from_value(Value::Object(obj.clone()))
        .map_err(|e| format!("getBrandWCPayRequest 参数错误：{e}"))?;
    Ok((params, action, bank))
}

/// The cashier's decision: checks the parameters as WeChat does, then pays
/// (every sub-order at once) or cancels.
pub async fn confirm(
    st: &SimState,
    params: &JsapiPayParams,
    action: CashierAction,
    bank_type: Option<&str>,
) -> CashierOutcome {
    confirm_with_coupon(st, params, action, bank_type, None).await
}

/// [`confirm`] paying with a coupon of `coupon_fen` (`None`: the
/// `/sim/control` setting).
pub async fn confirm_with_coupon(
    st: &SimState,
    params: &JsapiPayParams,
    action: CashierAction,
    bank_type: Option<&str>,
    coupon_fen: Option<i64>,
) -> CashierOutcome {
    match confirm_inner(st, params, action, bank_type, coupon_fen).await {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %e, "cashier failed");
            CashierOutcome::fail("系统错误")
        }
    }
}

async fn confirm_inner(
    st: &SimState,
    params: &JsapiPayParams,
    action: CashierAction,
    bank_type: Option<&str>,
    coupon_fen: Option<i64>,
) -> Result<CashierOutcome, rusqlite::Error> {
    let Some(prepay_id) = params.prepay_id() else {
        return Ok(CashierOutcome::fail("package 应为 prepay_id=…"));
    };
    let Some(p) = st.db.prepay(prepay_id).await? else {
        return Ok(CashierOutcome::fail("prepay_id 不存在"));
    };
    if p.expires_at <= st.clock.now() {
        return Ok(CashierOutcome::fail("prepay_id 已过期（有效期2小时）"));
    }
    let Some(merchant) = st.merchant(&p.combine_mchid).cloned() else {
        return Ok(CashierOutcome::fail("商户不存在"));
    };
    let order = match order::load_fresh(st, &p.combine_mchid, &p.combine_out_trade_no).await {
        Ok(Some(o)) => o,
        _ => return Ok(CashierOutcome::fail("订单不存在")),
    };
    if params.app_id != order.combine_appid {
        return Ok(CashierOutcome::fail(
            "appId 与下单时的 combine_appid 不一致",
        ));
    }
    if !params.time_stamp.bytes().all(|b| b.is_ascii_digit()) || params.time_stamp.is_empty() {
        return Ok(CashierOutcome::fail("timeStamp 应为秒级时间戳字符串"));
    }
    if params.nonce_str.is_empty() || params.nonce_str.chars().count() > 32 {
        return Ok(CashierOutcome::fail("nonceStr 长度应为1到32"));
    }
    if !params.verify(&merchant.api_public_key) {
        return Ok(CashierOutcome::fail("支付验证签名失败"));
    }
    if action == CashierAction::Cancel {
        return Ok(CashierOutcome::cancel());
    }
    // The tamper_pay_sign fault alters paySign on every cashier path (the
    // page's bridge.js does it itself; a payer driven by code or a direct
    // POST gets the same answer here).
    let faults = st
        .faults
        .effective(Some(&p.combine_mchid), Some(&p.combine_out_trade_no));
    if faults.tamper_pay_sign.unwrap_or(false) {
        return Ok(CashierOutcome::fail("支付验证签名失败"));
    }
    let coupon = coupon_fen.unwrap_or_else(|| st.coupon_fen.load(Ordering::Relaxed));
    pay(st, &merchant, &p.combine_out_trade_no, bank_type, coupon).await
}

async fn pay(
    st: &SimState,
    merchant: &Merchant,
    no: &str,
    bank_type: Option<&str>,
    coupon_fen: i64,
) -> Result<CashierOutcome, rusqlite::Error> {
    let mchid = &merchant.creds.mchid;
    let _guard = st.write_lock.lock().await;
    let order = match order::load_fresh(st, mchid, no).await {
        Ok(Some(o)) => o,
        _ => return Ok(CashierOutcome::fail("订单不存在")),
    };
    match order.state.as_str() {
        order_state::NOTPAY | order_state::USERPAYING => {}
        order_state::CLOSED => return Ok(CashierOutcome::fail("订单已关闭")),
        _ => return Ok(CashierOutcome::fail("订单已支付")),
    }
    let now = st.clock.now();
    let bank = bank_type
        .filter(|b| !b.is_empty() && b.len() <= 16)
        .unwrap_or("OTHERS");
    let subs = st.db.sub_orders(mchid, no).await?;
    // The coupon goes to the first sub-order it fits (the payer pays at
    // least 1 fen), capped at that sub-order's amount − 1.
    let coupon_on = (coupon_fen > 0)
        .then(|| subs.iter().position(|s| s.total_amount > 1))
        .flatten();
    let subs: Vec<SubOrderRow> = subs
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let coupon = if Some(i) == coupon_on {
                coupon_fen.min(s.total_amount - 1)
            } else {
                0
            };
            SubOrderRow {
                trade_state: order_state::SUCCESS.into(),
                transaction_id: Some(ids::transaction_id(now)),
                success_time: Some(now),
                payer_amount: Some(s.total_amount - coupon),
                bank_type: Some(bank.into()),
                ..s
            }
        })
        .collect();
    let mut paid = order.clone();
    paid.state = order_state::SUCCESS.into();
    paid.paid_at = Some(now);
    let faults = st.faults.effective(Some(mchid), Some(no));
    let first_ms = wall_ms() + faults.notify_delay_ms.unwrap_or(0) as i64;
    let notification = notify::build(
        merchant,
        &transaction_json(&paid, &subs),
        no,
        &order.notify_url,
        now,
        first_ms,
    );
    st.db.pay(mchid, no, now, &subs, &notification).await?;
    st.wake.notify_one();
    Ok(CashierOutcome::ok())
}
