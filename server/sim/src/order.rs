//! Combined orders: prepay (with re-entry), query, close, and the
//! transaction JSON shared by the query answer and the notification.

use super::auth::Caller;
use super::clock::{self, SimClock};
use super::error::ApiError;
use super::ids;
use super::reply::Reply;
use super::state::{order_state, OrderRow, PrepayRow, SubOrderRow};
use super::validate::{self, PrepayRequest};
use super::SimState;
use axum::http::StatusCode;
use serde_json::{json, Value};
use wxpay_combine_core::apiv3::Clock;

/// How long a prepay_id stays valid.
pub const PREPAY_TTL_SECS: i64 = 2 * 3600;
/// Unpaid orders without `time_expire` close after seven days.
pub const DEFAULT_ORDER_TTL_SECS: i64 = 7 * 86_400;

/// The order's expiry instant.
pub fn expires_at(o: &OrderRow) -> i64 {
    o.time_expire
        .unwrap_or(o.created_at + DEFAULT_ORDER_TTL_SECS)
}

/// Loads an order and closes it first if it has expired unpaid.
pub async fn load_fresh(
    st: &SimState,
    mchid: &str,
    no: &str,
) -> Result<Option<OrderRow>, ApiError> {
    let Some(mut o) = st.db.order(mchid, no).await? else {
        return Ok(None);
    };
    if matches!(
        o.state.as_str(),
        order_state::NOTPAY | order_state::USERPAYING
    ) && st.clock.now() >= expires_at(&o)
    {
        st.db
            .set_order_state(mchid, no, order_state::CLOSED, Some("expired"))
            .await?;
        o.state = order_state::CLOSED.into();
        o.closed_reason = Some("expired".into());
    }
    Ok(Some(o))
}

/// The combined transaction object (query answer and notification plaintext).
pub fn transaction_json(o: &OrderRow, subs: &[SubOrderRow]) -> Value {
    let sub_orders: Vec<Value> = subs
        .iter()
        .map(|s| {
            let mut amount = json!({"total_amount": s.total_amount, "currency": s.currency});
            if let Some(p) = s.payer_amount {
                amount["payer_amount"] = json!(p);
                amount["payer_currency"] = json!(s.currency);
            }
            let mut v = json!({
                "mchid": s.mchid,
                "trade_type": "JSAPI",
                "trade_state": s.trade_state,
                "attach": s.attach,
                "out_trade_no": s.out_trade_no,
                "amount": amount,
            });
            if let Some(b) = &s.bank_type {
                v["bank_type"] = json!(b);
            }
            if let Some(t) = s.success_time {
                v["success_time"] = json!(clock::rfc3339(t));
            }
            if let Some(t) = &s.transaction_id {
                v["transaction_id"] = json!(t);
            }
            if let Some(coupon) = s
                .payer_amount
                .map(|p| s.total_amount - p)
                .filter(|c| *c > 0)
            {
                v["promotion_detail"] = json!([promotion(s, coupon)]);
            }
            v
        })
        .collect();
    let mut v = json!({
        "combine_appid": o.combine_appid,
        "combine_mchid": o.combine_mchid,
        "combine_out_trade_no": o.combine_out_trade_no,
        "sub_orders": sub_orders,
        "combine_payer_info": {"openid": o.openid},
    });
    if let Some(d) = &o.device_id {
        v["scene_info"] = json!({"device_id": d});
    }
    v
}

/// The `promotion_detail` entry of a sub-order paid with a coupon: a CASH
/// coupon funded by WeChat Pay (so 应结订单金额 stays the order amount),
/// its id derived from the transaction so query and notification agree.
fn promotion(s: &SubOrderRow, coupon: i64) -> Value {
    let tx = s.transaction_id.as_deref().unwrap_or_default();
    let tail = &tx[tx.len().saturating_sub(10)..];
    json!({
        "coupon_id": format!("10{tail}"),
        "name": "模拟器代金券",
        "scope": "SINGLE",
        "type": "CASH",
        "amount": coupon,
        "stock_id": "9000000001",
        "wechatpay_contribute": coupon,
        "merchant_contribute": 0,
        "other_contribute": 0,
        "currency": s.currency,
    })
}

fn prepay_reply(prepay_id: &str) -> Reply {
    Reply::json(&json!({"prepay_id": prepay_id}))
}

fn new_prepay(clock: &SimClock, mchid: &str, no: &str) -> PrepayRow {
    let now = clock.now();
    PrepayRow {
        prepay_id: ids::prepay_id(now),
        combine_mchid: mchid.into(),
        combine_out_trade_no: no.into(),
        created_at: now,
        expires_at: now + PREPAY_TTL_SECS,
    }
}

/// Whether `openid` is a user of `appid` on this simulator.
pub async fn is_user(st: &SimState, appid: &str, openid: &str) -> Result<bool, ApiError> {
    Ok(openid == ids::openid(appid, ids::DEMO_USER) || st.db.user_exists(appid, openid).await?)
}

async fn business_checks(
    st: &SimState,
    caller: &Caller,
    r: &PrepayRequest,
) -> Result<(), ApiError> {
    let m = &caller.merchant;
    if !m.initiator {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "NO_AUTH",
            "商户号未开通合单支付权限",
        ));
    }
    if r.combine_mchid != m.creds.mchid {
        return Err(ApiError::invalid_request(
            "combine_mchid与请求头Authorization中的商户号不一致",
        )
        .with_detail(json!({"field": "/combine_mchid", "location": "body"})));
    }
    if r.combine_appid != m.creds.appid {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "APPID_MCHID_NOT_MATCH",
            "appid和mch_id不匹配",
        )
        .with_detail(json!({"field": "/combine_appid", "location": "body"})));
    }
    for (i, s) in r.sub_orders.iter().enumerate() {
        if !m.accepts_sub_mchid(&s.mchid) {
            let err = if st.merchant(&s.mchid).is_some() {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "APPID_MCHID_NOT_MATCH",
                    "子单商户号与combine_appid未绑定",
                )
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "MCH_NOT_EXISTS", "商户号不存在")
            };
            return Err(err.with_detail(
                json!({"field": format!("/sub_orders/{i}/mchid"), "location": "body"}),
            ));
        }
    }
    if !is_user(st, &r.combine_appid, &r.openid).await? {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "OPENID_MISMATCH",
            "appid与openid不匹配",
        )
        .with_detail(json!({"field": "/combine_payer_info/openid", "location": "body"})));
    }
    Ok(())
}

/// The request body as JSON, or WeChat Pay's PARAM_ERROR.
fn json_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            format!("请求体不是合法的JSON：{e}"),
        )
    })
}

/// `POST /v3/combine-transactions/jsapi`.
pub async fn prepay(st: &SimState, caller: &Caller, body: &[u8]) -> Result<Reply, ApiError> {
    let value = json_body(body)?;
    let r = validate::prepay(&value, st.clock.now())?;
    business_checks(st, caller, &r).await?;

    let mchid = &r.combine_mchid;
    let no = &r.combine_out_trade_no;
    let now = st.clock.now();
    let order = OrderRow {
        combine_mchid: mchid.clone(),
        combine_out_trade_no: no.clone(),
        combine_appid: r.combine_appid.clone(),
        request_json: serde_json::to_string(&value).unwrap_or_default(),
        openid: r.openid.clone(),
        notify_url: r.notify_url.clone(),
        device_id: r.device_id.clone(),
        state: order_state::NOTPAY.into(),
        closed_reason: None,
        time_expire: r.time_expire,
        created_at: now,
        paid_at: None,
    };
    let subs: Vec<SubOrderRow> = r
        .sub_orders
        .iter()
        .enumerate()
        .map(|(i, s)| SubOrderRow {
            idx: i as i64,
            mchid: s.mchid.clone(),
            out_trade_no: s.out_trade_no.clone(),
            attach: s.attach.clone(),
            description: s.description.clone(),
            total_amount: s.total_amount,
            currency: s.currency.clone(),
            trade_state: order_state::NOTPAY.into(),
            transaction_id: None,
            success_time: None,
            payer_amount: None,
            bank_type: None,
        })
        .collect();
    // The usual case, a new number: one insert, no lock (the database's
    // keys decide a race between two requests for the same number).
    let p = new_prepay(&st.clock, mchid, no);
    if st.db.insert_new_order(&order, &subs, &p).await? {
        return Ok(prepay_reply(&p.prepay_id));
    }

    // The number or a sub-order number is taken: re-entry or refusal,
    // decided under the write lock.
    let _guard = st.write_lock.lock().await;
    if let Some(existing) = load_fresh(st, mchid, no).await? {
        match existing.state.as_str() {
            order_state::SUCCESS | order_state::REFUND => return Err(ApiError::order_paid()),
            order_state::CLOSED => return Err(ApiError::order_closed()),
            _ => {}
        }
        let first: Value = serde_json::from_str(&existing.request_json).unwrap_or(Value::Null);
        // time_expire "can only be set on the first order and cannot be
        // changed" (reference §2.1); no code is documented for it, so the
        // simulator answers INVALID_REQUEST naming the field.
        if first.get("time_expire") != value.get("time_expire") {
            return Err(ApiError::invalid_request(
                "订单失效时间time_expire只能在首次下单时设置，不能修改；如需修改请使用新的商户订单号重新下单",
            )
            .with_detail(json!({"field": "/time_expire", "location": "body"}))
            .with_internal(268_498_688));
        }
        if first != value {
            return Err(
                ApiError::invalid_request("请求重入时，参数与首次请求时不一致")
                    .with_internal(268_498_688),
            );
        }
        if let Some(p) = st.db.latest_prepay(mchid, no).await? {
            if p.expires_at > st.clock.now() {
                return Ok(prepay_reply(&p.prepay_id));
            }
        }
        let p = new_prepay(&st.clock, mchid, no);
        st.db.insert_prepay(&p).await?;
        return Ok(prepay_reply(&p.prepay_id));
    }
    for (i, s) in r.sub_orders.iter().enumerate() {
        if st
            .db
            .sub_order_owner(&s.mchid, &s.out_trade_no)
            .await?
            .is_some()
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "OUT_TRADE_NO_USED",
                "商户订单号重复",
            )
            .with_detail(
                json!({"field": format!("/sub_orders/{i}/out_trade_no"), "location": "body"}),
            ));
        }
    }
    // The conflicting row is gone again: cannot happen while rows are never
    // deleted, and a retry would succeed.
    Err(ApiError::system("系统繁忙，请稍后重试"))
}

/// `GET /v3/combine-transactions/out-trade-no/{no}`.
pub async fn query(st: &SimState, caller: &Caller, no: &str) -> Result<Reply, ApiError> {
    let mchid = &caller.merchant.creds.mchid;
    let order = load_fresh(st, mchid, no)
        .await?
        .ok_or_else(ApiError::order_not_exist)?;
    let subs = st.db.sub_orders(mchid, no).await?;
    Ok(Reply::json(&transaction_json(&order, &subs)))
}

/// `POST /v3/combine-transactions/out-trade-no/{no}/close`.
pub async fn close(
    st: &SimState,
    caller: &Caller,
    no: &str,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let value = json_body(body)?;
    let req = validate::close(&value)?;
    let mchid = &caller.merchant.creds.mchid;
    let _guard = st.write_lock.lock().await;
    let order = load_fresh(st, mchid, no)
        .await?
        .ok_or_else(ApiError::order_not_exist)?;
    if req.combine_appid != order.combine_appid {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "APPID_MCHID_NOT_MATCH",
            "appid和mch_id不匹配",
        ));
    }
    let subs = st.db.sub_orders(mchid, no).await?;
    let mut want: Vec<(String, String)> = subs
        .iter()
        .map(|s| (s.mchid.clone(), s.out_trade_no.clone()))
        .collect();
    let mut got = req.sub_orders.clone();
    want.sort();
    got.sort();
    if want != got {
        return Err(ApiError::invalid_request(
            "请求关单的子单信息与下单时的子单信息不一致",
        ));
    }
    match order.state.as_str() {
        order_state::SUCCESS | order_state::REFUND => Err(ApiError::order_paid()),
        order_state::USERPAYING => Err(ApiError::new(
            StatusCode::ACCEPTED,
            "USER_PAYING",
            "用户支付中，请稍后查询",
        )),
        order_state::CLOSED if order.closed_reason.as_deref() == Some("api") => {
            Ok(Reply::NoContent)
        }
        order_state::CLOSED => Err(ApiError::order_closed()),
        _ => {
            st.db
                .set_order_state(mchid, no, order_state::CLOSED, Some("api"))
                .await?;
            Ok(Reply::NoContent)
        }
    }
}
