//! The server-to-server order API, for a merchant backend that prices
//! orders itself (see `docs/internal-api.md`):
//!
//! | route | what |
//! |---|---|
//! | `POST /internal/combine-orders` | create an order for a payer's openid (prepay now), or a one-time pay link |
//! | `GET /internal/combine-orders/{no}` | the order (query-on-read when overdue) |
//! | `POST /internal/combine-orders/{no}/close` | close it (an unclaimed pay link closes at once) |
//!
//! Every request carries `Authorization: Bearer <token>` (the contents of
//! `internal_token_file`, compared in constant time); anything else is 401
//! with `WWW-Authenticate: Bearer`. The routes are served on their own
//! listener (`internal_listen`), on the public one only with the explicit
//! `internal_on_public_listener = true`.
//!
//! **Idempotency.** `POST /internal/combine-orders` requires an
//! `Idempotency-Key` header (1–64 characters of `[A-Za-z0-9._:-]`). The
//! first request with a key creates the order; the same key with the same
//! body (same JSON values, any key order or spacing) answers 200 with the
//! same order (and, for a pay link, the same link); the same key with
//! another body answers 409 `IDEMPOTENCY_KEY_REUSED`.
//!
//! **Pay links.** With `"pay_link": true` the order waits for its payer: the
//! answer holds a URL of the H5 page (`order.html?claim=TOKEN`). The payer
//! opens it in WeChat, OAuth identifies them, and the page claims the link
//! (`POST /api/pay-links/claim`), which creates the order with the payer's
//! openid; then the page pays as usual. A link is claimed once: another
//! payer is refused (409 `PAY_LINK_USED`), the same payer coming back gets
//! the same order. Only the SHA-256 of the token is stored.

use super::error::AppError;
use super::orders::{
    is_order_number, new_order_number, prepay_stored, query_due, refresh, rfc3339_cst,
    sign_pay_params, Attempt, PREPAY_TTL_SECS,
};
use super::{AppState, Session};
use crate::catalog::{is_service_text, MAX_SUB_ORDER_FEN};
use crate::combine::{CombineOrder, SubOrder, TradeState};
use crate::config::{InternalApiConfig, Secret};
use crate::redact::mask_openid;
use crate::store::{ClaimOutcome, IdempotencyRecord, PayLink, PayLinkStatus, StoreError};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use base64::Engine;
use hmac::{KeyInit, Mac};
use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The idempotency header of `POST /internal/combine-orders`.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// Largest request body of the internal API.
pub const MAX_INTERNAL_BODY_BYTES: usize = 64 * 1024;

/// Longest `attach` (WeChat Pay: string(128)).
pub const MAX_ATTACH_BYTES: usize = 128;

/// Longest `description` (WeChat Pay: string(127)).
pub const MAX_DESCRIPTION_BYTES: usize = 127;

/// The state reported for a pay-link order nobody claimed yet.
pub const AWAITING_PAYER: &str = "AWAITING_PAYER";

/// Checks bearer tokens in constant time: both sides are MACed under a
/// per-process random key and the tags compared with `verify_slice`, so
/// neither the content nor the length of the expected token leaks through
/// timing.
#[derive(Clone)]
pub struct TokenCheck {
    key: [u8; 32],
    expected: Vec<u8>,
}

impl std::fmt::Debug for TokenCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCheck(…)")
    }
}

impl TokenCheck {
    /// A checker accepting exactly `token`.
    pub fn new(token: &str) -> Self {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the OS random source works");
        let expected = Self::tag(&key, token.as_bytes());
        Self { key, expected }
    }

    fn tag(key: &[u8], v: &[u8]) -> Vec<u8> {
        let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
        m.update(v);
        m.finalize().into_bytes().to_vec()
    }

    /// Whether `presented` is the token.
    pub fn verify(&self, presented: &[u8]) -> bool {
        let mut m = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(presented);
        m.verify_slice(&self.expected).is_ok()
    }
}

/// The internal API's handler state.
#[derive(Clone)]
pub struct InternalApi {
    app: AppState,
    auth: Arc<TokenCheck>,
    link_secret: Arc<Secret>,
    pay_link_ttl_secs: i64,
    page_url: String,
}

impl std::fmt::Debug for InternalApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalApi")
            .field("page_url", &self.page_url)
            .finish_non_exhaustive()
    }
}

impl InternalApi {
    /// The API over the public handlers' state; `page_url` is the pay
    /// directory's URL (`{public_base_url}{pay_directory}`), where pay links
    /// point.
    pub fn new(app: AppState, config: &InternalApiConfig, page_url: String) -> Self {
        Self {
            app,
            auth: Arc::new(TokenCheck::new(config.token.expose())),
            link_secret: Arc::new(config.token.clone()),
            pay_link_ttl_secs: config.pay_link_ttl_secs,
            page_url,
        }
    }

    /// The token of an order's pay link: derived from the order number under
    /// the API token, so a repeated request gets the same link although
    /// only the token's SHA-256 is stored.
    fn link_token(&self, no: &str) -> String {
        let mut m = HmacSha256::new_from_slice(self.link_secret.expose().as_bytes())
            .expect("HMAC takes any key length");
        m.update(b"wxpay-combine pay link\n");
        m.update(no.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
    }

    fn link_url(&self, token: &str) -> String {
        format!("{}order.html?claim={token}", self.page_url)
    }
}

/// The internal API's router (every route behind the bearer token).
pub fn router(api: InternalApi) -> Router {
    let auth = api.auth.clone();
    let routes = Router::new()
        .route("/internal/combine-orders", post(create))
        .route("/internal/combine-orders/{no}", get(get_order))
        .route("/internal/combine-orders/{no}/close", post(close))
        .route("/internal/{*rest}", any(not_found))
        .route("/internal", any(not_found))
        .layer(axum::middleware::from_fn_with_state(auth, require_bearer))
        .layer(DefaultBodyLimit::max(MAX_INTERNAL_BODY_BYTES))
        .layer(tower_http::set_header::SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .with_state(api);
    super::traced(routes)
}

async fn require_bearer(State(auth): State<Arc<TokenCheck>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_string())
        });
    match presented {
        Some(t) if auth.verify(t.as_bytes()) => next.run(req).await,
        Some(_) => {
            tracing::warn!("internal API: wrong bearer token");
            unauthorized(r#"Bearer realm="wxpay-combine", error="invalid_token""#)
        }
        None => unauthorized(r#"Bearer realm="wxpay-combine""#),
    }
}

fn unauthorized(challenge: &'static str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        )],
        Json(json!({
            "code": "UNAUTHORIZED",
            "message": "send Authorization: Bearer <internal API token>",
        })),
    )
        .into_response()
}

async fn not_found() -> Response {
    InternalError::NotFound.into_response()
}

/// A failure of the internal API.
#[derive(Debug)]
pub enum InternalError {
    /// A field is missing or wrong.
    Invalid {
        /// The field, e.g. `sub_orders[1].amount` (or a header name).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The idempotency key was used with another body.
    KeyReused,
    /// The order number (or a sub-order number) belongs to another order.
    NumberUsed(String),
    /// No such order.
    NotFound,
    /// What the public API would answer.
    App(AppError),
}

impl From<AppError> for InternalError {
    fn from(e: AppError) -> Self {
        InternalError::App(e)
    }
}

impl From<StoreError> for InternalError {
    fn from(e: StoreError) -> Self {
        InternalError::App(AppError::Store(e))
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> InternalError {
    InternalError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

impl IntoResponse for InternalError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            InternalError::Invalid { field, message } => (
                StatusCode::BAD_REQUEST,
                json!({"code": "INVALID_REQUEST", "field": field, "message": message}),
            ),
            InternalError::KeyReused => (
                StatusCode::CONFLICT,
                json!({"code": "IDEMPOTENCY_KEY_REUSED",
                       "message": "this Idempotency-Key was used with a different request body"}),
            ),
            InternalError::NumberUsed(what) => (
                StatusCode::CONFLICT,
                json!({"code": "ORDER_NUMBER_USED", "message": what}),
            ),
            InternalError::NotFound => (
                StatusCode::NOT_FOUND,
                json!({"code": "NOT_FOUND", "message": "no such order"}),
            ),
            InternalError::App(e) => return e.into_response(),
        };
        (status, Json(body)).into_response()
    }
}

// ---------------------------------------------------------------------------
// Requests

/// A validated `POST /internal/combine-orders` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewOrder {
    /// The merchant's order number, or `None` to have one generated.
    pub combine_out_trade_no: Option<String>,
    /// The payer's openid (`None` with a pay link).
    pub payer_openid: Option<String>,
    /// Whether a pay link is requested instead of a payer.
    pub pay_link: bool,
    /// The sub-orders, 2–10.
    pub sub_orders: Vec<NewSubOrder>,
}

/// A validated sub-order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewSubOrder {
    /// Sub-merchant mchid.
    pub mchid: String,
    /// The merchant's sub-order number, or `None` to have `{no}-{i}` used.
    pub out_trade_no: Option<String>,
    /// 商品描述.
    pub description: String,
    /// Amount in fen.
    pub amount: i64,
    /// Merchant data returned by notifications, queries and bills (1–128
    /// bytes; `None`: the combined order number, which links the sub-order
    /// to its order in bills).
    pub attach: Option<String>,
}

impl NewOrder {
    /// SHA-256 (hex) of the request's meaning (the idempotency digest).
    pub fn digest(&self) -> String {
        let bytes = serde_json::to_vec(self).expect("a NewOrder serializes");
        hex::encode(Sha256::digest(bytes))
    }

    /// The order it makes under `no` for `openid` at `now`.
    fn to_order(&self, st: &AppState, no: &str, openid: &str, now: i64) -> CombineOrder {
        CombineOrder {
            combine_out_trade_no: no.to_string(),
            combine_mchid: st.settings.mchid.clone(),
            combine_appid: st.settings.appid.clone(),
            payer_openid: openid.to_string(),
            state: TradeState::NotPay,
            sub_orders: self
                .sub_orders
                .iter()
                .enumerate()
                .map(|(i, s)| SubOrder {
                    mchid: s.mchid.clone(),
                    out_trade_no: s
                        .out_trade_no
                        .clone()
                        .unwrap_or_else(|| format!("{no}-{}", i + 1)),
                    description: s.description.clone(),
                    attach: s.attach.clone().unwrap_or_else(|| no.to_string()),
                    amount: s.amount,
                    transaction_id: None,
                    payer_amount: None,
                    bank_type: None,
                    success_time: None,
                })
                .collect(),
            prepay_id: None,
            prepay_expires_at: None,
            time_expire: Some(now + st.settings.orders.expire_secs),
            created_at: now,
            updated_at: now,
            notified_at: None,
        }
    }
}

/// Whether a stored order is what `req` asks for under `no` (a repeat,
/// not another order using the same number).
fn same_order(o: &CombineOrder, req: &NewOrder, no: &str) -> bool {
    o.sub_orders.len() == req.sub_orders.len()
        && (req.payer_openid.is_none() || req.payer_openid.as_deref() == Some(&o.payer_openid))
        && o.sub_orders
            .iter()
            .zip(&req.sub_orders)
            .enumerate()
            .all(|(i, (s, r))| {
                s.mchid == r.mchid
                    && s.description == r.description
                    && s.amount == r.amount
                    && s.attach == r.attach.as_deref().unwrap_or(no)
                    && match &r.out_trade_no {
                        Some(n) => *n == s.out_trade_no,
                        None => s.out_trade_no == format!("{no}-{}", i + 1),
                    }
            })
}

fn is_trade_no(s: &str) -> bool {
    (6..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-|*".contains(&b))
}

/// Validates a request body, naming the first wrong field.
pub fn parse_new_order(body: &[u8]) -> Result<NewOrder, InternalError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| invalid("body", format!("not JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(invalid("body", "must be a JSON object"));
    };
    const KNOWN: &[&str] = &[
        "combine_out_trade_no",
        "payer_openid",
        "pay_link",
        "sub_orders",
    ];
    if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(invalid(k.clone(), "unknown field"));
    }
    let combine_out_trade_no = match obj.get("combine_out_trade_no") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if is_trade_no(s) => Some(s.clone()),
        Some(_) => {
            return Err(invalid(
                "combine_out_trade_no",
                "6–32 characters of [0-9A-Za-z_-|*], or omit it to have one generated",
            ))
        }
    };
    let pay_link = match obj.get("pay_link") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("pay_link", "must be true or false")),
    };
    let payer_openid =
        match obj.get("payer_openid") {
            None | Some(Value::Null) => None,
            Some(Value::String(s))
                if (1..=128).contains(&s.len())
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
            {
                Some(s.clone())
            }
            Some(_) => return Err(invalid(
                "payer_openid",
                "1–128 characters of [0-9A-Za-z_-] (the payer's openid under the configured appid)",
            )),
        };
    match (&payer_openid, pay_link) {
        (Some(_), true) => {
            return Err(invalid(
                "pay_link",
                "give either payer_openid or pay_link: true, not both",
            ))
        }
        (None, false) => return Err(invalid("payer_openid", "required unless pay_link is true")),
        _ => {}
    }
    let subs = match obj.get("sub_orders") {
        Some(Value::Array(a)) => a,
        None => return Err(invalid("sub_orders", "required: 2–10 sub-orders")),
        Some(_) => return Err(invalid("sub_orders", "must be an array of 2–10 sub-orders")),
    };
    if !(2..=10).contains(&subs.len()) {
        return Err(invalid(
            "sub_orders",
            format!("a combined order has 2–10 sub-orders, got {}", subs.len()),
        ));
    }
    let mut sub_orders = Vec::with_capacity(subs.len());
    for (i, v) in subs.iter().enumerate() {
        let at = |f: &str| format!("sub_orders[{i}].{f}");
        let Value::Object(s) = v else {
            return Err(invalid(format!("sub_orders[{i}]"), "must be an object"));
        };
        const SUB_KNOWN: &[&str] = &["mchid", "out_trade_no", "description", "amount", "attach"];
        if let Some(k) = s.keys().find(|k| !SUB_KNOWN.contains(&k.as_str())) {
            return Err(invalid(at(k), "unknown field"));
        }
        let mchid = match s.get("mchid") {
            Some(Value::String(m))
                if (1..=32).contains(&m.len()) && m.bytes().all(|b| b.is_ascii_alphanumeric()) =>
            {
                m.clone()
            }
            _ => {
                return Err(invalid(
                    at("mchid"),
                    "the sub-merchant's mchid (1–32 letters or digits)",
                ))
            }
        };
        let out_trade_no = match s.get("out_trade_no") {
            None | Some(Value::Null) => None,
            Some(Value::String(n)) if is_trade_no(n) => Some(n.clone()),
            Some(_) => {
                return Err(invalid(
                    at("out_trade_no"),
                    "6–32 characters of [0-9A-Za-z_-|*], or omit it to have one generated",
                ))
            }
        };
        let description = match s.get("description") {
            Some(Value::String(d))
                if !d.trim().is_empty()
                    && d.len() <= MAX_DESCRIPTION_BYTES
                    && is_service_text(d) =>
            {
                d.clone()
            }
            _ => {
                return Err(invalid(
                    at("description"),
                    format!(
                    "1–{MAX_DESCRIPTION_BYTES} bytes of text without emoji or control characters"
                ),
                ))
            }
        };
        let amount = match s.get("amount").and_then(Value::as_i64) {
            Some(a) if (1..=MAX_SUB_ORDER_FEN).contains(&a) => a,
            _ => {
                return Err(invalid(
                    at("amount"),
                    format!("an integer number of fen, 1–{MAX_SUB_ORDER_FEN}"),
                ))
            }
        };
        let attach = match s.get("attach") {
            None | Some(Value::Null) => None,
            Some(Value::String(a))
                if !a.is_empty() && a.len() <= MAX_ATTACH_BYTES && is_service_text(a) =>
            {
                Some(a.clone())
            }
            Some(_) => {
                return Err(invalid(
                    at("attach"),
                    format!(
                    "1–{MAX_ATTACH_BYTES} bytes of text without emoji or control characters, or omit it"
                ),
                ))
            }
        };
        if let Some(n) = &out_trade_no {
            if sub_orders
                .iter()
                .any(|p: &NewSubOrder| p.mchid == mchid && p.out_trade_no.as_ref() == Some(n))
            {
                return Err(invalid(
                    at("out_trade_no"),
                    "listed twice for the same mchid",
                ));
            }
        }
        sub_orders.push(NewSubOrder {
            mchid,
            out_trade_no,
            description,
            amount,
            attach,
        });
    }
    Ok(NewOrder {
        combine_out_trade_no,
        payer_openid,
        pay_link,
        sub_orders,
    })
}

fn idempotency_key(headers: &HeaderMap) -> Result<String, InternalError> {
    let bad = || {
        invalid(
            "Idempotency-Key",
            "required header: 1–64 characters of [A-Za-z0-9._:-], unique per order you create",
        )
    };
    let v = headers
        .get(IDEMPOTENCY_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(bad)?;
    if (1..=64).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        Ok(v.to_string())
    } else {
        Err(bad())
    }
}

// ---------------------------------------------------------------------------
// Views

/// The internal API's view of an order (unlike the page's view: with the
/// payer, attach and the pay link).
fn order_view(o: &CombineOrder) -> Map<String, Value> {
    let mut v = Map::new();
    v.insert("combine_out_trade_no".into(), json!(o.combine_out_trade_no));
    v.insert("state".into(), json!(o.state.as_str()));
    v.insert("total_amount".into(), json!(o.total_amount()));
    v.insert("created_at".into(), json!(rfc3339_cst(o.created_at)));
    if let Some(t) = o.time_expire {
        v.insert("time_expire".into(), json!(rfc3339_cst(t)));
    }
    if !o.payer_openid.is_empty() {
        v.insert("payer_openid".into(), json!(o.payer_openid));
    }
    let subs: Vec<Value> = o
        .sub_orders
        .iter()
        .map(|s| {
            let mut m = json!({
                "mchid": s.mchid,
                "out_trade_no": s.out_trade_no,
                "description": s.description,
                "amount": s.amount,
                "attach": s.attach,
            });
            if let Some(t) = &s.transaction_id {
                m["transaction_id"] = json!(t);
            }
            if let Some(a) = s.payer_amount {
                m["payer_amount"] = json!(a);
            }
            if let Some(t) = &s.success_time {
                m["success_time"] = json!(t);
            }
            m
        })
        .collect();
    v.insert("sub_orders".into(), Value::Array(subs));
    v
}

fn link_view(api: &InternalApi, link: &PayLink, now: i64) -> Value {
    let status = match link.status {
        PayLinkStatus::Open if link.expires_at <= now => "expired",
        s => s.as_str(),
    };
    let mut v = json!({
        "status": status,
        "expires_at": rfc3339_cst(link.expires_at),
    });
    if link.status == PayLinkStatus::Open && link.expires_at > now {
        v["url"] = json!(api.link_url(&api.link_token(&link.combine_out_trade_no)));
    }
    v
}

/// An unclaimed link's order as stored in the link.
fn draft_of(link: &PayLink) -> Result<CombineOrder, InternalError> {
    serde_json::from_str(&link.draft).map_err(|e| {
        InternalError::App(AppError::Store(StoreError::Corrupt(format!(
            "pay link draft of {}: {e}",
            link.combine_out_trade_no
        ))))
    })
}

fn draft_view(api: &InternalApi, link: &PayLink, now: i64) -> Result<Value, InternalError> {
    let draft = draft_of(link)?;
    let mut v = order_view(&draft);
    let state = match link.status {
        PayLinkStatus::Open if link.expires_at > now => AWAITING_PAYER,
        // Expired or closed before anyone paid: nobody can pay it.
        _ => TradeState::Closed.as_str(),
    };
    v.insert("state".into(), json!(state));
    v.insert("pay_link".into(), link_view(api, link, now));
    Ok(Value::Object(v))
}

// ---------------------------------------------------------------------------
// Handlers

/// `POST /internal/combine-orders`.
async fn create(
    State(api): State<InternalApi>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, InternalError> {
    let key = idempotency_key(&headers)?;
    let req = parse_new_order(&body)?;
    let st = &api.app;
    let now = st.clock.now();
    let candidate = req
        .combine_out_trade_no
        .clone()
        .unwrap_or_else(|| new_order_number(now));
    let rec = st
        .store
        .record_idempotency_key(&IdempotencyRecord {
            key: key.clone(),
            request_sha256: req.digest(),
            combine_out_trade_no: candidate,
            created_at: now,
        })
        .await?;
    if rec.request_sha256 != req.digest() {
        tracing::warn!("internal API: idempotency key reused with another body");
        return Err(InternalError::KeyReused);
    }
    let no = rec.combine_out_trade_no;
    super::record_order(&no);
    if req.pay_link {
        create_link(&api, &req, &no, now).await
    } else {
        create_for_payer(&api, &req, &no, now).await
    }
}

async fn create_for_payer(
    api: &InternalApi,
    req: &NewOrder,
    no: &str,
    now: i64,
) -> Result<Response, InternalError> {
    let st = &api.app;
    let openid = req.payer_openid.as_deref().unwrap_or_default();
    if st.store.pay_link_for_order(no).await?.is_some() {
        return Err(InternalError::NumberUsed(format!(
            "order {no} exists (created with a pay link)"
        )));
    }
    let (order, created) =
        match st.store.get_order(no).await? {
            Some(o) if same_order(&o, req, no) => (o, false),
            Some(_) => return Err(InternalError::NumberUsed(format!("order {no} exists"))),
            None => {
                let order = req.to_order(st, no, openid, now);
                match st.store.create_order(&order).await {
                    Ok(()) => (order, true),
                    // A concurrent repeat of the same request, or a sub-order
                    // number another order holds.
                    Err(StoreError::Duplicate(_)) => match st.store.get_order(no).await? {
                        Some(o) if same_order(&o, req, no) => (o, false),
                        _ => return Err(InternalError::NumberUsed(
                            "a sub-order number (mchid + out_trade_no) belongs to another order"
                                .into(),
                        )),
                    },
                    Err(e) => return Err(e.into()),
                }
            }
        };
    if created {
        crate::metrics::metrics().order_created();
        tracing::info!(
            order = %no,
            payer = %mask_openid(openid),
            total = order.total_amount(),
            sub_orders = order.sub_orders.len(),
            "combined order created by the internal API"
        );
    }
    let mut view = order_view(&order);
    if order.state.is_open() && order.time_expire.is_none_or(|t| now < t) {
        let margin = st.settings.orders.prepay_reuse_margin_secs;
        let prepay_id = match (&order.prepay_id, order.prepay_expires_at) {
            (Some(id), Some(exp)) if exp - margin > now => id.clone(),
            _ => {
                let attempt = if created {
                    Attempt::First
                } else {
                    Attempt::Repeat
                };
                prepay_stored(st, &order, attempt).await?
            }
        };
        let params = sign_pay_params(st, &prepay_id)?;
        view.insert("prepay_id".into(), json!(prepay_id));
        view.insert(
            "prepay_expires_at".into(),
            json!(rfc3339_cst(
                order.prepay_expires_at.unwrap_or(now + PREPAY_TTL_SECS)
            )),
        );
        view.insert(
            "pay_params".into(),
            serde_json::to_value(&params).map_err(|e| AppError::Internal(e.to_string()))?,
        );
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(Value::Object(view))).into_response())
}

async fn create_link(
    api: &InternalApi,
    req: &NewOrder,
    no: &str,
    now: i64,
) -> Result<Response, InternalError> {
    let st = &api.app;
    let token = api.link_token(no);
    let token_sha256 = hex::encode(Sha256::digest(token.as_bytes()));
    let existing = st.store.pay_link_for_order(no).await?;
    let (link, created) = match existing {
        Some(l) => {
            if !same_order(&draft_of(&l)?, req, no) {
                return Err(InternalError::NumberUsed(format!("order {no} exists")));
            }
            (l, false)
        }
        None => {
            if st.store.get_order(no).await?.is_some() {
                return Err(InternalError::NumberUsed(format!("order {no} exists")));
            }
            let draft = req.to_order(st, no, "", now);
            let link = PayLink {
                token_sha256,
                combine_out_trade_no: no.to_string(),
                draft: serde_json::to_string(&draft)
                    .map_err(|e| AppError::Internal(e.to_string()))?,
                status: PayLinkStatus::Open,
                payer_openid: None,
                created_at: now,
                expires_at: now + api.pay_link_ttl_secs,
                claimed_at: None,
            };
            match st.store.create_pay_link(&link).await {
                Ok(()) => (link, true),
                Err(StoreError::Duplicate(_)) => match st.store.pay_link_for_order(no).await? {
                    Some(l) if same_order(&draft_of(&l)?, req, no) => (l, false),
                    _ => return Err(InternalError::NumberUsed(format!("order {no} exists"))),
                },
                Err(e) => return Err(e.into()),
            }
        }
    };
    if created {
        tracing::info!(order = %no, "pay link created by the internal API");
    }
    // Claimed already: the order itself is the answer.
    let body = match st.store.get_order(no).await? {
        Some(o) => {
            let mut v = order_view(&o);
            v.insert("pay_link".into(), link_view(api, &link, now));
            Value::Object(v)
        }
        None => draft_view(api, &link, now)?,
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(body)).into_response())
}

/// `GET /internal/combine-orders/{no}`.
async fn get_order(
    State(api): State<InternalApi>,
    Path(no): Path<String>,
) -> Result<Json<Value>, InternalError> {
    if !is_order_number(&no) {
        return Err(InternalError::NotFound);
    }
    super::record_order(&no);
    let st = &api.app;
    let now = st.clock.now();
    let link = st.store.pay_link_for_order(&no).await?;
    match st.store.get_order(&no).await? {
        Some(mut order) => {
            if query_due(st, &order, now) {
                if let Some(fresh) = refresh(st, &no).await {
                    order = fresh;
                }
            }
            let mut v = order_view(&order);
            if let Some(l) = &link {
                v.insert("pay_link".into(), link_view(&api, l, now));
            }
            Ok(Json(Value::Object(v)))
        }
        None => match link {
            Some(l) => Ok(Json(draft_view(&api, &l, now)?)),
            None => Err(InternalError::NotFound),
        },
    }
}

/// `POST /internal/combine-orders/{no}/close`.
async fn close(
    State(api): State<InternalApi>,
    Path(no): Path<String>,
) -> Result<Json<Value>, InternalError> {
    if !is_order_number(&no) {
        return Err(InternalError::NotFound);
    }
    super::record_order(&no);
    let st = &api.app;
    let now = st.clock.now();
    // An unclaimed link closes at once: WeChat Pay never saw the order.
    if st.store.close_pay_link(&no).await? {
        tracing::info!(order = %no, "unclaimed pay link closed by the internal API");
    }
    let link = st.store.pay_link_for_order(&no).await?;
    match st.store.get_order(&no).await? {
        Some(order) => {
            let order = super::orders::close_order(st, order, "closed by the merchant").await?;
            let mut v = order_view(&order);
            if let Some(l) = &link {
                v.insert("pay_link".into(), link_view(&api, l, now));
            }
            Ok(Json(Value::Object(v)))
        }
        None => match link {
            Some(l) => Ok(Json(draft_view(&api, &l, now)?)),
            None => Err(InternalError::NotFound),
        },
    }
}

// ---------------------------------------------------------------------------
// The page's side of a pay link

/// `POST /api/pay-links/claim` `{"token": "…"}` (public, with the payer's
/// session): binds the link to the signed-in payer, creates the order and
/// prepays. Answers `{"combine_out_trade_no", "order"}`; the page then shows
/// `order.html?no=…` and pays as usual.
pub async fn claim(
    State(st): State<AppState>,
    session: Session,
    Json(body): Json<Value>,
) -> Result<Response, AppError> {
    let token = body
        .get("token")
        .and_then(Value::as_str)
        .filter(|t| (16..=128).contains(&t.len()))
        .ok_or_else(|| AppError::InvalidRequest("token: the pay link's token".into()))?;
    let sha = hex::encode(Sha256::digest(token.as_bytes()));
    let now = st.clock.now();
    let link = match st.store.claim_pay_link(&sha, &session.openid, now).await? {
        ClaimOutcome::Claimed(l) | ClaimOutcome::AlreadyClaimed(l) => l,
        other => {
            let (status, code, message) = match other {
                ClaimOutcome::Taken => (
                    StatusCode::CONFLICT,
                    "PAY_LINK_USED",
                    "This pay link was already used by another payer.",
                ),
                ClaimOutcome::Expired => (
                    StatusCode::GONE,
                    "PAY_LINK_EXPIRED",
                    "This pay link has expired; ask the shop for a new one.",
                ),
                ClaimOutcome::Closed => (
                    StatusCode::GONE,
                    "PAY_LINK_CLOSED",
                    "This order was cancelled by the shop.",
                ),
                _ => (
                    StatusCode::NOT_FOUND,
                    "PAY_LINK_NOT_FOUND",
                    "No such pay link.",
                ),
            };
            tracing::info!(payer = %mask_openid(&session.openid), code, "pay link claim refused");
            return Ok((status, Json(json!({"code": code, "message": message}))).into_response());
        }
    };
    let no = link.combine_out_trade_no.clone();
    super::record_order(&no);
    let order = match st.store.get_order(&no).await? {
        Some(o) => o,
        None => {
            let mut order: CombineOrder = serde_json::from_str(&link.draft).map_err(|e| {
                AppError::Store(StoreError::Corrupt(format!("pay link draft of {no}: {e}")))
            })?;
            // The order starts now, for this payer.
            order.payer_openid = session.openid.clone();
            order.created_at = now;
            order.updated_at = now;
            order.time_expire = Some(now + st.settings.orders.expire_secs);
            match st.store.create_order(&order).await {
                Ok(()) => {
                    crate::metrics::metrics().order_created();
                    tracing::info!(
                        order = %no,
                        payer = %mask_openid(&session.openid),
                        total = order.total_amount(),
                        "pay link claimed; combined order created"
                    );
                    match prepay_stored(&st, &order, Attempt::First).await {
                        Ok(_) | Err(AppError::PrepayPending { .. }) => {}
                        Err(e) => return Err(e),
                    }
                    st.store.get_order(&no).await?.unwrap_or(order)
                }
                // A concurrent claim by the same payer created it.
                Err(StoreError::Duplicate(_)) => st
                    .store
                    .get_order(&no)
                    .await?
                    .ok_or(AppError::OrderNotFound)?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    if order.payer_openid != session.openid {
        return Err(AppError::OrderNotFound);
    }
    Ok(Json(json!({
        "combine_out_trade_no": no,
        "order": super::orders::OrderView::of(&order, &st),
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    fn subs() -> Value {
        json!([
            {"mchid": "1900000109", "description": "A", "amount": 100},
            {"mchid": "1900000110", "description": "B", "amount": 200, "attach": "x"},
        ])
    }

    #[test]
    fn token_check_accepts_only_the_token() {
        let c = TokenCheck::new("0123456789abcdef0123456789abcdef");
        assert!(c.verify(b"0123456789abcdef0123456789abcdef"));
        assert!(!c.verify(b"0123456789abcdef0123456789abcdeF"));
        assert!(!c.verify(b"0123456789abcdef0123456789abcde"));
        assert!(!c.verify(b""));
    }

    #[test]
    fn validation_names_the_field() {
        let field = |v: Value| match parse_new_order(&body(v)) {
            Err(InternalError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(json!({"payer_openid": "o1", "sub_orders": [
                {"mchid": "1900000109", "description": "A", "amount": 100},
                {"mchid": "1900000110", "description": "B", "amount": 0},
            ]})),
            "sub_orders[1].amount"
        );
        assert_eq!(field(json!({"sub_orders": subs()})), "payer_openid");
        assert_eq!(
            field(json!({"payer_openid": "o1", "pay_link": true, "sub_orders": subs()})),
            "pay_link"
        );
        assert_eq!(
            field(json!({"payer_openid": "o1", "sub_orders": [subs()[0]]})),
            "sub_orders"
        );
        assert_eq!(
            field(json!({"payer_openid": "o1", "sub_orders": subs(), "extra": 1})),
            "extra"
        );
        assert_eq!(
            field(json!({"payer_openid": "o1", "sub_orders": [
                {"mchid": "1900000109", "description": "A", "amount": 100, "price": 1},
                {"mchid": "1900000110", "description": "B", "amount": 1},
            ]})),
            "sub_orders[0].price"
        );
        assert_eq!(
            field(json!({"payer_openid": "o1", "sub_orders": [
                {"mchid": "1900000109", "description": "A", "amount": 100},
                {"mchid": "1900000110", "description": "😀", "amount": 1},
            ]})),
            "sub_orders[1].description"
        );
    }

    #[test]
    fn digest_ignores_key_order_and_spacing() {
        let a = parse_new_order(br#"{"payer_openid":"o1","sub_orders":[{"mchid":"1","description":"A","amount":1},{"mchid":"2","description":"B","amount":2}]}"#).unwrap();
        let b = parse_new_order(br#"{ "sub_orders": [ {"amount":1,"description":"A","mchid":"1"}, {"description":"B","mchid":"2","amount":2} ], "payer_openid": "o1" }"#).unwrap();
        let c = parse_new_order(br#"{"payer_openid":"o1","sub_orders":[{"mchid":"1","description":"A","amount":1},{"mchid":"2","description":"B","amount":3}]}"#).unwrap();
        assert_eq!(a.digest(), b.digest());
        assert_ne!(a.digest(), c.digest());
    }
}
