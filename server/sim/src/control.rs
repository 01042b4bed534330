//! The test and rehearsal hooks under `/sim/`: faults and clock
//! (`POST /sim/control`), the delivery log (`GET /sim/notifications`),
//! counters (`GET /sim/stats`) and the request log (`GET /sim/api-calls`).

use super::error::SimError;
use super::faults::{FaultScope, Faults, FAULT_FIELDS};
use super::ids;
use super::state::{order_state, ApiCallRecord, NotificationAttempt};
use super::SimState;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use wxpay_combine_core::apiv3::Clock;

/// Faults of one scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScopedFaults {
    /// Where they apply.
    pub scope: FaultScope,
    /// What is set.
    pub faults: Faults,
}

/// What `POST /sim/control` answers: the state after the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlState {
    /// Shift of the simulator's clock, seconds.
    pub clock_offset_secs: i64,
    /// Every scope with faults.
    pub faults: Vec<ScopedFaults>,
    /// Trade bills are served at once (no `STATEMENT_CREATING` until 10:00
    /// the next day).
    #[serde(default)]
    pub bills_ready_immediately: bool,
    /// The coupon (fen) the cashier applies to each payment; 0: none.
    #[serde(default)]
    pub coupon_fen: i64,
}

/// A notification and where its delivery stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationSummary {
    /// The envelope's `id`.
    pub id: String,
    /// The merchant.
    pub combine_mchid: String,
    /// The order.
    pub combine_out_trade_no: String,
    /// Where it goes.
    pub notify_url: String,
    /// `pending`, `delivered`, `failed` (schedule exhausted) or `dropped`.
    pub status: String,
    /// Attempts made (not counting probes and duplicates).
    pub attempts: i64,
}

/// `GET /sim/notifications`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationLog {
    /// Notifications, oldest first.
    pub notifications: Vec<NotificationSummary>,
    /// Every attempt with the merchant's answer, oldest first.
    pub attempts: Vec<NotificationAttempt>,
}

/// `GET /sim/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SimStats {
    /// APIv3 requests by endpoint (`prepay`, `query`, …), whatever their outcome.
    pub api_calls: BTreeMap<String, i64>,
    /// Prepay requests by `combine_out_trade_no`, whatever their outcome.
    pub prepay_calls: BTreeMap<String, i64>,
    /// Orders created.
    pub orders: i64,
    /// Orders paid.
    pub paid_orders: i64,
    /// Notifications by delivery status.
    pub notifications: BTreeMap<String, i64>,
    /// Delivery attempts of any kind.
    pub notification_attempts: i64,
    /// Shift of the simulator's clock, seconds.
    pub clock_offset_secs: i64,
}

const CONTROL_FIELDS: &[&str] = &[
    "mchid",
    "combine_out_trade_no",
    "reset_faults",
    "clock_offset_secs",
    "set_user_paying",
    "refund",
    "pay_directories",
    "bills_ready_immediately",
    "coupon_fen",
];

fn refuse(msg: impl Into<String>) -> SimError {
    SimError::Control(msg.into())
}

/// Applies a control request (see `docs/simulator.md`).
pub async fn apply(st: &SimState, body: &Value) -> Result<ControlState, SimError> {
    let obj = body
        .as_object()
        .ok_or_else(|| refuse("the body must be a JSON object"))?;
    for k in obj.keys() {
        if !CONTROL_FIELDS.contains(&k.as_str()) && !FAULT_FIELDS.contains(&k.as_str()) {
            return Err(refuse(format!("unknown field {k:?}")));
        }
    }
    let text = |k: &str| -> Result<Option<String>, SimError> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            _ => Err(refuse(format!("{k} must be a non-empty string"))),
        }
    };
    let mchid = text("mchid")?;
    let order_no = text("combine_out_trade_no")?;
    if let Some(m) = &mchid {
        if st.account(m).is_none() {
            return Err(refuse(format!("no merchant {m}")));
        }
    }
    let _guard = st.write_lock.lock().await;

    if obj.get("reset_faults").and_then(Value::as_bool) == Some(true) {
        for scope in st.faults.clear() {
            st.db.save_fault(&scope.key(), None).await?;
        }
    }
    if let Some(v) = obj.get("clock_offset_secs") {
        let secs = v
            .as_i64()
            .ok_or_else(|| refuse("clock_offset_secs must be an integer"))?;
        st.clock.set_offset(secs);
        st.db
            .set_meta("clock_offset_secs", &secs.to_string())
            .await?;
    }
    if let Some(v) = obj.get("bills_ready_immediately") {
        let on = v
            .as_bool()
            .ok_or_else(|| refuse("bills_ready_immediately must be a boolean"))?;
        st.bills_ready_immediately.store(on, Ordering::Relaxed);
        st.db
            .set_meta("bills_ready_immediately", &on.to_string())
            .await?;
    }
    if let Some(v) = obj.get("coupon_fen") {
        let fen = v
            .as_i64()
            .filter(|n| *n >= 0)
            .ok_or_else(|| refuse("coupon_fen must be a non-negative integer (fen)"))?;
        st.coupon_fen.store(fen, Ordering::Relaxed);
        st.db.set_meta("coupon_fen", &fen.to_string()).await?;
    }
    let patch: Map<String, Value> = obj
        .iter()
        .filter(|(k, _)| FAULT_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !patch.is_empty() {
        let scope = match (&order_no, &mchid) {
            (Some(o), _) => FaultScope::Order {
                combine_out_trade_no: o.clone(),
            },
            (None, Some(m)) => FaultScope::Merchant { mchid: m.clone() },
            (None, None) => FaultScope::Global,
        };
        let updated = st.faults.get(&scope).patch(&patch).map_err(refuse)?;
        set_faults_locked(st, scope, updated).await?;
    }

    let owner = mchid
        .clone()
        .unwrap_or_else(|| st.primary().creds.mchid.clone());
    if let Some(v) = obj.get("set_user_paying") {
        let paying = v
            .as_bool()
            .ok_or_else(|| refuse("set_user_paying must be a boolean"))?;
        let no = order_no
            .as_deref()
            .ok_or_else(|| refuse("set_user_paying needs combine_out_trade_no"))?;
        let order = st
            .db
            .order(&owner, no)
            .await?
            .ok_or_else(|| refuse(format!("no order {no} of merchant {owner}")))?;
        let (from, to) = if paying {
            (order_state::NOTPAY, order_state::USERPAYING)
        } else {
            (order_state::USERPAYING, order_state::NOTPAY)
        };
        if order.state != from {
            return Err(refuse(format!("order {no} is {}, not {from}", order.state)));
        }
        st.db.set_order_state(&owner, no, to, None).await?;
    }
    if let Some(v) = obj.get("pay_directories") {
        let dirs: Vec<String> = match v {
            Value::Null => Vec::new(),
            v => serde_json::from_value(v.clone())
                .map_err(|_| refuse("pay_directories must be a list of URLs or null"))?,
        };
        set_pay_directories(st, &owner, dirs)?;
    }
    if let Some(r) = obj.get("refund") {
        let no = order_no
            .as_deref()
            .ok_or_else(|| refuse("refund needs combine_out_trade_no"))?;
        refund(st, &owner, no, r).await?;
    }
    Ok(snapshot(st))
}

async fn refund(st: &SimState, owner: &str, no: &str, r: &Value) -> Result<(), SimError> {
    let out_trade_no = r
        .get("out_trade_no")
        .and_then(Value::as_str)
        .ok_or_else(|| refuse("refund.out_trade_no is required"))?;
    let subs = st.db.sub_orders(owner, no).await?;
    let sub = subs
        .iter()
        .find(|s| s.out_trade_no == out_trade_no)
        .ok_or_else(|| refuse(format!("order {no} has no sub-order {out_trade_no}")))?;
    if !matches!(
        sub.trade_state.as_str(),
        order_state::SUCCESS | order_state::REFUND
    ) {
        return Err(refuse(format!(
            "sub-order {out_trade_no} is {}, not paid",
            sub.trade_state
        )));
    }
    let done = st.db.refunded_amount(owner, no, sub.idx).await?;
    let left = sub.total_amount - done;
    let amount = match r.get("amount") {
        None | Some(Value::Null) => left,
        Some(v) => v
            .as_i64()
            .ok_or_else(|| refuse("refund.amount must be an integer (fen)"))?,
    };
    if amount < 1 || amount > left {
        return Err(refuse(format!("refund amount must be 1..={left} fen")));
    }
    let now = st.clock.now();
    let out_refund_no = r
        .get("out_refund_no")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("R{}", ids::digits(20)));
    st.db
        .refund(
            owner,
            no,
            sub.idx,
            &ids::refund_id(now),
            &out_refund_no,
            amount,
            now,
        )
        .await?;
    Ok(())
}

/// Replaces a merchant's registered pay directories (empty: no check).
pub fn set_pay_directories(st: &SimState, mchid: &str, dirs: Vec<String>) -> Result<(), SimError> {
    super::config::check_pay_directories(&dirs).map_err(refuse)?;
    let m = st
        .merchant(mchid)
        .ok_or_else(|| refuse(format!("no initiating merchant {mchid}")))?;
    *m.pay_directories.write().unwrap_or_else(|e| e.into_inner()) = dirs;
    Ok(())
}

/// Replaces one scope's faults (caller holds the write lock).
pub async fn set_faults_locked(
    st: &SimState,
    scope: FaultScope,
    faults: Faults,
) -> Result<(), SimError> {
    let json = (!faults.is_empty())
        .then(|| serde_json::to_string(&faults))
        .transpose()
        .map_err(|e| refuse(e.to_string()))?;
    st.db.save_fault(&scope.key(), json.as_deref()).await?;
    st.faults.set(scope, faults);
    Ok(())
}

/// The current control state.
pub fn snapshot(st: &SimState) -> ControlState {
    ControlState {
        clock_offset_secs: st.clock.offset(),
        faults: st
            .faults
            .all()
            .into_iter()
            .map(|(scope, faults)| ScopedFaults { scope, faults })
            .collect(),
        bills_ready_immediately: st.bills_ready_immediately.load(Ordering::Relaxed),
        coupon_fen: st.coupon_fen.load(Ordering::Relaxed),
    }
}

/// The delivery log, optionally for one order.
pub async fn notification_log(
    st: &SimState,
    order: Option<&str>,
) -> Result<NotificationLog, SimError> {
    let notifications: Vec<NotificationSummary> = st
        .db
        .notifications()
        .await?
        .into_iter()
        .filter(|n| order.is_none_or(|o| n.combine_out_trade_no == o))
        .map(|n| NotificationSummary {
            id: n.id,
            combine_mchid: n.combine_mchid,
            combine_out_trade_no: n.combine_out_trade_no,
            notify_url: n.notify_url,
            status: n.status,
            attempts: n.attempts,
        })
        .collect();
    let ids: std::collections::HashSet<&str> =
        notifications.iter().map(|n| n.id.as_str()).collect();
    let attempts = st
        .db
        .attempts()
        .await?
        .into_iter()
        .filter(|a| ids.contains(a.notification_id.as_str()))
        .collect();
    Ok(NotificationLog {
        notifications,
        attempts,
    })
}

/// The counters.
pub async fn stats(st: &SimState) -> Result<SimStats, SimError> {
    let mut s = SimStats {
        clock_offset_secs: st.clock.offset(),
        ..Default::default()
    };
    for c in st.db.calls().await? {
        *s.api_calls.entry(c.endpoint.clone()).or_default() += 1;
        if c.endpoint == "prepay" {
            if let Some(no) = c.combine_out_trade_no {
                *s.prepay_calls.entry(no).or_default() += 1;
            }
        }
    }
    (s.orders, s.paid_orders) = st.db.count_orders().await?;
    for n in st.db.notifications().await? {
        *s.notifications.entry(n.status).or_default() += 1;
    }
    s.notification_attempts = st.db.attempts().await?.len() as i64;
    Ok(s)
}

fn bad(e: SimError) -> Response {
    let status = match e {
        SimError::Control(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, Json(json!({"error": e.to_string()}))).into_response()
}

/// `POST /sim/control`.
pub async fn control_http(State(st): State<Arc<SimState>>, body: axum::body::Bytes) -> Response {
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad(refuse(format!("the body is not JSON: {e}"))),
    };
    match apply(&st, &value).await {
        Ok(s) => Json(s).into_response(),
        Err(e) => bad(e),
    }
}

/// `GET /sim/control`.
pub async fn control_get(State(st): State<Arc<SimState>>) -> Response {
    Json(snapshot(&st)).into_response()
}

/// `GET /sim/notifications[?combine_out_trade_no=…]`.
pub async fn notifications_http(
    State(st): State<Arc<SimState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    match notification_log(&st, q.get("combine_out_trade_no").map(String::as_str)).await {
        Ok(l) => Json(l).into_response(),
        Err(e) => bad(e),
    }
}

/// `GET /sim/stats`.
pub async fn stats_http(State(st): State<Arc<SimState>>) -> Response {
    match stats(&st).await {
        Ok(s) => Json(s).into_response(),
        Err(e) => bad(e),
    }
}

/// `GET /sim/api-calls`.
pub async fn api_calls_http(State(st): State<Arc<SimState>>) -> Response {
    match st.db.calls().await {
        Ok(c) => Json::<Vec<ApiCallRecord>>(c).into_response(),
        Err(e) => bad(e.into()),
    }
}

/// `GET /`: where things are.
pub async fn index(State(st): State<Arc<SimState>>) -> Response {
    let merchants: Vec<Value> = st
        .merchants
        .iter()
        .map(|m| json!({"mchid": m.creds.mchid, "appid": m.creds.appid, "key_mode": m.creds.key_mode, "dir": m.creds.dir}))
        .collect();
    Json(json!({
        "service": "wxpay-combine WeChat Pay APIv3 simulator",
        "base_url": st.base_url,
        "merchants": merchants,
        "now": super::clock::rfc3339(st.clock.now()),
        "docs": "docs/simulator.md",
    }))
    .into_response()
}
