//! The combined-order endpoints of the H5 page.
//!
//! Creation stores the order first and then calls prepay with parameters
//! derived only from the stored order (including `time_expire`), so any later
//! prepay for the same number is byte-identical and therefore idempotent at
//! WeChat Pay. A definitive refusal closes the order so the number is never
//! reused; an unclear failure leaves it open for `pay-params` to repeat.

use super::error::AppError;
use super::{AppState, Session};
use crate::apiv3::{generate_nonce, JsapiPayParams};
use crate::catalog::{is_service_text, MAX_SUB_ORDER_FEN};
use crate::combine::wire::{PayerInfo, PrepayRequest, PrepaySubOrder, RequestAmount};
use crate::combine::{
    ApiError, ApplyOutcome, CombineOrder, EventSource, SubOrder, TradeState, Transition,
};
use crate::reconcile::{confirm_close_refusal, refresh_from_query, CloseCheck, RefreshError};
use crate::redact::mask_openid;
use crate::store::{RefundRecord, StoreError};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use wxpay_combine_core::timefmt;

/// prepay_id lifetime (2 hours, regardless of time_expire).
pub const PREPAY_TTL_SECS: i64 = 7200;
/// Largest quantity of one line.
pub const MAX_QTY: u64 = 99;
/// Largest number of cart lines.
pub const MAX_LINES: usize = 50;
/// Codes meaning the order was already paid.
const PAID_CODES: &[&str] = &["ORDER_PAID", "ORDERPAID", "TRADE_STATE_ERROR"];
/// Codes meaning the order is already closed.
const CLOSED_CODES: &[&str] = &["ORDER_CLOSED", "ORDERCLOSED"];
/// Codes meaning WeChat Pay has no such order.
const NOT_FOUND_CODES: &[&str] = &["ORDER_NOT_EXIST", "ORDERNOTEXIST"];
/// Codes meaning the payer is paying now.
const PAYING_CODES: &[&str] = &["USER_PAYING", "USERPAYING"];

/// Unix seconds as RFC 3339 in China time (`2024-05-01T12:00:00+08:00`),
/// the form WeChat Pay uses; empty outside years 0000–9999.
pub fn rfc3339_cst(unix: i64) -> String {
    timefmt::rfc3339_beijing(unix).unwrap_or_default()
}

/// A new combined order number: `C` + yyyyMMddHHmmss (China time) + 12
/// random `[0-9A-Za-z]` = 27 characters, within the 6–32 `[0-9A-Za-z_-|*]`
/// rule. Sub-orders append `-1`, `-2`, … (at most 30 characters).
pub fn new_order_number(now: i64) -> String {
    let stamp = timefmt::compact_beijing(now).unwrap_or_else(|| "00000000000000".into());
    let random: String = generate_nonce().chars().take(12).collect();
    format!("C{stamp}{random}")
}

/// Whether `s` may be a combined order number (checked before any lookup).
pub fn is_order_number(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-|*".contains(&b))
}

/// The prepay request for a stored order: a pure function of the order and
/// the configuration, so repeating it repeats it exactly.
pub fn prepay_request(order: &CombineOrder, notify_url: &str) -> PrepayRequest {
    PrepayRequest {
        combine_appid: order.combine_appid.clone(),
        combine_mchid: order.combine_mchid.clone(),
        combine_out_trade_no: order.combine_out_trade_no.clone(),
        // scene_info would need the payer's IP, which can change between
        // attempts and break idempotency; it is optional.
        scene_info: None,
        sub_orders: order
            .sub_orders
            .iter()
            .map(|s| PrepaySubOrder {
                mchid: s.mchid.clone(),
                attach: s.attach.clone(),
                amount: RequestAmount {
                    total_amount: s.amount,
                    currency: "CNY".into(),
                },
                out_trade_no: s.out_trade_no.clone(),
                description: s.description.clone(),
                detail: None,
                goods_tag: None,
                settle_info: None,
            })
            .collect(),
        combine_payer_info: PayerInfo {
            openid: order.payer_openid.clone(),
        },
        time_start: None,
        time_expire: order.time_expire.map(rfc3339_cst),
        notify_url: notify_url.to_string(),
    }
}

pub use crate::combine::close_request;

/// Truncates to at most `max` bytes on a character boundary, marking the cut.
fn truncate_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let ellipsis = "…";
    let mut end = max - ellipsis.len();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ellipsis}", &s[..end])
}

/// Body of `POST /api/combine-orders`: `{"items": [{"sku", "qty"}, …]}`,
/// objects only (serde's derive would also take a struct as a JSON array,
/// `[[{"sku":…,"qty":1}]]` or `{"items":[["sku",1]]}`; that undocumented
/// form is refused).
#[derive(Debug)]
pub struct CreateOrderBody {
    /// Cart lines.
    pub items: Vec<CartLine>,
}

/// One cart line: what and how many, never a price.
#[derive(Debug)]
pub struct CartLine {
    /// Catalog SKU.
    pub sku: String,
    /// Quantity, 1–99.
    pub qty: u64,
}

/// The wire forms, deserialised only through [`ObjectOnly`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateOrderWire {
    items: Vec<ObjectOnly<CartLineWire>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CartLineWire {
    sku: String,
    qty: u64,
}

impl<'de> Deserialize<'de> for CreateOrderBody {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let ObjectOnly(w) = ObjectOnly::<CreateOrderWire>::deserialize(d)?;
        Ok(CreateOrderBody {
            items: w
                .items
                .into_iter()
                .map(|ObjectOnly(l)| CartLine {
                    sku: l.sku,
                    qty: l.qty,
                })
                .collect(),
        })
    }
}

/// `T` from a JSON object only: a derived struct deserialiser also
/// accepts a sequence of its fields in order.
struct ObjectOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
            .map(ObjectOnly)
    }
}

/// A sub-order as the page sees it.
#[derive(Debug, Serialize)]
pub struct SubOrderView {
    mchid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    merchant_name: Option<String>,
    out_trade_no: String,
    description: String,
    amount: i64,
    /// What the payer paid, when a coupon made it less than `amount`.
    #[serde(skip_serializing_if = "Option::is_none")]
    payer_amount: Option<i64>,
    trade_state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    success_time: Option<String>,
    /// Its refunds, oldest first (absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    refunds: Vec<RefundView>,
}

/// A refund as the payer sees it: how much and where it stands. No refund
/// number, reason or receiving account: the payer only follows the money.
#[derive(Debug, Serialize)]
pub struct RefundView {
    amount: i64,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    success_time: Option<String>,
}

/// An order as the page sees it (no openid, no prepay_id).
#[derive(Debug, Serialize)]
pub struct OrderView {
    combine_out_trade_no: String,
    state: &'static str,
    total_amount: i64,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    time_expire: Option<String>,
    sub_orders: Vec<SubOrderView>,
}

impl OrderView {
    /// The view of `order`.
    pub fn of(order: &CombineOrder, st: &AppState) -> Self {
        Self {
            combine_out_trade_no: order.combine_out_trade_no.clone(),
            state: order.state.as_str(),
            total_amount: order.total_amount(),
            created_at: rfc3339_cst(order.created_at),
            time_expire: order.time_expire.map(rfc3339_cst),
            sub_orders: order
                .sub_orders
                .iter()
                .map(|s| SubOrderView {
                    mchid: s.mchid.clone(),
                    merchant_name: st.catalog.merchant_name(&s.mchid).map(str::to_string),
                    out_trade_no: s.out_trade_no.clone(),
                    description: s.description.clone(),
                    amount: s.amount,
                    payer_amount: s.payer_amount.filter(|p| *p != s.amount),
                    trade_state: order.state.as_str(),
                    transaction_id: s.transaction_id.clone(),
                    success_time: s.success_time.clone(),
                    refunds: Vec::new(),
                })
                .collect(),
        }
    }

    /// With each sub-order's refunds (`refunds` are the order's, as
    /// `Store::refunds_of_order` lists them).
    pub fn with_refunds(mut self, refunds: &[RefundRecord]) -> Self {
        for sub in &mut self.sub_orders {
            sub.refunds = refunds
                .iter()
                .filter(|r| r.mchid == sub.mchid && r.out_trade_no == sub.out_trade_no)
                .map(|r| RefundView {
                    amount: r.amount,
                    status: r.status.as_str(),
                    success_time: r.success_time.clone(),
                })
                .collect();
        }
        self
    }
}

fn parse_json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, AppError> {
    let is_json = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(AppError::UnsupportedMediaType);
    }
    serde_json::from_slice(body).map_err(|e| AppError::InvalidRequest(e.to_string()))
}

/// Builds the order from the cart, pricing every line from the catalog.
fn build_order(
    st: &AppState,
    openid: &str,
    body: CreateOrderBody,
    number: &str,
    now: i64,
) -> Result<CombineOrder, AppError> {
    if body.items.is_empty() {
        return Err(AppError::InvalidRequest("items is empty".into()));
    }
    if body.items.len() > MAX_LINES {
        return Err(AppError::InvalidRequest(format!(
            "at most {MAX_LINES} cart lines"
        )));
    }
    // Group by merchant in order of first appearance; merge repeated SKUs.
    // A line is (sku, name, unit price, quantity).
    type Line = (String, String, i64, u64);
    let mut groups: Vec<(String, Vec<Line>)> = Vec::new();
    for line in body.items {
        let item = st
            .catalog
            .item(&line.sku)
            .ok_or_else(|| AppError::UnknownSku(line.sku.chars().take(40).collect()))?;
        if !(1..=MAX_QTY).contains(&line.qty) {
            return Err(AppError::InvalidQuantity {
                sku: item.sku.clone(),
                qty: line.qty,
            });
        }
        let gi = match groups.iter().position(|(m, _)| *m == item.merchant.mchid) {
            Some(i) => i,
            None => {
                groups.push((item.merchant.mchid.clone(), Vec::new()));
                groups.len() - 1
            }
        };
        let lines = &mut groups[gi].1;
        match lines.iter_mut().find(|(sku, ..)| *sku == item.sku) {
            Some(existing) => {
                existing.3 += line.qty;
                if existing.3 > MAX_QTY {
                    return Err(AppError::InvalidQuantity {
                        sku: item.sku.clone(),
                        qty: existing.3,
                    });
                }
            }
            None => lines.push((
                item.sku.clone(),
                item.name.clone(),
                item.price_fen,
                line.qty,
            )),
        }
    }
    if groups.len() < 2 {
        let mchid = &groups[0].0;
        return Err(AppError::NeedTwoMerchants {
            merchant: st.catalog.merchant_name(mchid).unwrap_or(mchid).to_string(),
        });
    }
    if groups.len() > 10 {
        return Err(AppError::TooManyMerchants(groups.len()));
    }
    let mut sub_orders = Vec::with_capacity(groups.len());
    for (i, (mchid, lines)) in groups.into_iter().enumerate() {
        let mut amount: i64 = 0;
        let mut parts = Vec::new();
        for (_, name, price, qty) in &lines {
            amount = price
                .checked_mul(*qty as i64)
                .and_then(|v| amount.checked_add(v))
                .filter(|v| *v <= MAX_SUB_ORDER_FEN)
                .ok_or_else(|| AppError::AmountTooLarge {
                    merchant: st
                        .catalog
                        .merchant_name(&mchid)
                        .unwrap_or(&mchid)
                        .to_string(),
                })?;
            parts.push(if *qty > 1 {
                format!("{name} ×{qty}")
            } else {
                name.clone()
            });
        }
        // description is string(127); stay within 127 bytes whatever the
        // service counts, and only with characters it accepts.
        let description = truncate_bytes(&parts.join("；"), 127);
        debug_assert!(is_service_text(&description));
        sub_orders.push(SubOrder::unpaid(
            mchid,
            format!("{number}-{}", i + 1),
            description,
            // Links the sub-order to its combined order in bills.
            number,
            amount,
        ));
    }
    Ok(new_order(st, number, openid, sub_orders, now))
}

/// A new order `no` of this merchant for `openid`, created at `now` and
/// expiring after the configured `order_expire_secs`.
pub(crate) fn new_order(
    st: &AppState,
    no: &str,
    openid: &str,
    sub_orders: Vec<SubOrder>,
    now: i64,
) -> CombineOrder {
    let expire = Some(now + st.settings.orders.expire_secs);
    let settings = &st.settings;
    CombineOrder::unpaid(
        no,
        &*settings.mchid,
        &*settings.appid,
        openid,
        sub_orders,
        expire,
        now,
    )
}

pub(crate) fn sign_pay_params(st: &AppState, prepay_id: &str) -> Result<JsapiPayParams, AppError> {
    JsapiPayParams::sign(
        &st.pay_key,
        &st.settings.appid,
        prepay_id,
        st.clock.now(),
        &generate_nonce(),
    )
    .map_err(|e| AppError::Internal(format!("paySign failed: {e}")))
}

/// Whether a prepay error proves WeChat Pay will never accept this order
/// number with these parameters (a 4xx other than rate limiting).
fn is_definitive(e: &ApiError) -> bool {
    matches!(e, ApiError::Service { status, .. } if (400..500).contains(status) && *status != 429)
}

fn has_code(e: &ApiError, codes: &[&str]) -> bool {
    e.code().is_some_and(|c| codes.contains(&c))
}

/// Whether this prepay is the order's first attempt (from creation) or a
/// repeat (from `pay-params`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    First,
    Repeat,
}

/// A prepay_id as recorded, with the end of its 2-hour life.
#[derive(Debug, Clone)]
pub(crate) struct StoredPrepay {
    pub(crate) prepay_id: String,
    /// Unix seconds.
    pub(crate) expires_at: i64,
}

/// Calls prepay for a stored open order and records the prepay_id.
///
/// A definitive refusal of the first attempt proves WeChat Pay never created
/// the order, so it is closed here and its number never reused. A refusal of
/// a repeat proves nothing of the kind (the first attempt may have created
/// the order, and an earlier prepay_id may still be payable): the order stays
/// open for the reconciliation worker, which closes it through the close API
/// once it expires.
pub(crate) async fn prepay_stored(
    st: &AppState,
    order: &CombineOrder,
    attempt: Attempt,
) -> Result<StoredPrepay, AppError> {
    let no = &order.combine_out_trade_no;
    let request = prepay_request(order, &st.settings.notify_url);
    match st.api.prepay(&request).await {
        Ok(prepay_id) => {
            // A repeated prepay answers the same id while it lives, and its
            // 2 hours run from when it was first issued: only a new id
            // starts a new lifetime.
            let expires_at = match (&order.prepay_id, order.prepay_expires_at) {
                (Some(id), Some(exp)) if *id == prepay_id => exp,
                _ => st.clock.now() + PREPAY_TTL_SECS,
            };
            st.store.set_prepay(no, &prepay_id, expires_at).await?;
            Ok(StoredPrepay {
                prepay_id,
                expires_at,
            })
        }
        Err(e) if has_code(&e, PAID_CODES) => {
            tracing::info!(order = %no, "prepay says the order is paid; querying");
            let _ = refresh(st, no).await;
            Err(AppError::OrderPaid)
        }
        Err(e) if is_definitive(&e) && attempt == Attempt::Repeat => {
            tracing::warn!(order = %no, error = %e, "repeated prepay refused; the order stays open until it expires");
            Err(AppError::Upstream(e))
        }
        Err(e) if is_definitive(&e) => {
            tracing::warn!(order = %no, error = %e, "prepay refused; closing the order locally so the number is not reused");
            let (code, message) = match &e {
                ApiError::Service { code, message, .. } => (code.clone(), message.clone()),
                _ => unreachable!("is_definitive matched a Service error"),
            };
            let transition = Transition {
                to: TradeState::Closed,
                source: EventSource::Close,
                payments: vec![],
                notification: None,
                detail: format!("prepay refused: {code}"),
            };
            let outcome = st
                .store
                .apply_transition(no, &transition, st.clock.now())
                .await?;
            if let ApplyOutcome::Applied(o) = &outcome {
                st.store.announce(order.state, o, EventSource::Close);
            }
            Err(AppError::PrepayRefused {
                combine_out_trade_no: no.clone(),
                code,
                message,
            })
        }
        Err(e) => {
            tracing::warn!(order = %no, error = %e, "prepay failed; the order stays open for a retry with identical parameters");
            Err(AppError::PrepayPending {
                combine_out_trade_no: no.clone(),
            })
        }
    }
}

/// `POST /api/combine-orders`.
pub async fn create(
    State(st): State<AppState>,
    session: Session,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, AppError> {
    let body = body.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(_) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            AppError::BodyTooLarge
        }
        other => AppError::InvalidRequest(other.body_text()),
    })?;
    let body: CreateOrderBody = parse_json_body(&headers, &body)?;
    let now = st.clock.now();
    let mut order = build_order(&st, &session.openid, body, &new_order_number(now), now)?;
    let mut tries = 0;
    loop {
        match st.store.create_order(&order).await {
            Ok(()) => break,
            Err(StoreError::Duplicate(_)) if tries < 3 => {
                // 12 random characters collided: draw again.
                tries += 1;
                let number = new_order_number(now);
                for (i, s) in order.sub_orders.iter_mut().enumerate() {
                    s.out_trade_no = format!("{number}-{}", i + 1);
                    s.attach = number.clone();
                }
                order.combine_out_trade_no = number;
            }
            Err(e) => return Err(e.into()),
        }
    }
    super::record_order(&order.combine_out_trade_no);
    crate::metrics::metrics().order_created();
    tracing::info!(
        order = %order.combine_out_trade_no,
        payer = %mask_openid(&order.payer_openid),
        total = order.total_amount(),
        sub_orders = order.sub_orders.len(),
        "combined order created"
    );
    let prepay_id = prepay_stored(&st, &order, Attempt::First).await?.prepay_id;
    let pay_params = sign_pay_params(&st, &prepay_id)?;
    let mut view = serde_json::to_value(OrderView::of(&order, &st))
        .map_err(|e| AppError::Internal(e.to_string()))?;
    view["pay_params"] =
        serde_json::to_value(&pay_params).map_err(|e| AppError::Internal(e.to_string()))?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Loads an order the session's payer owns; anything else is 404 (no
/// hint whether the number exists).
async fn owned_order(st: &AppState, session: &Session, no: &str) -> Result<CombineOrder, AppError> {
    if !is_order_number(no) {
        return Err(AppError::OrderNotFound);
    }
    super::record_order(no);
    match st.store.get_order(no).await? {
        Some(o) if o.payer_openid == session.openid => Ok(o),
        Some(_) => {
            tracing::warn!(order = %no, payer = %mask_openid(&session.openid), "order read by another payer refused");
            Err(AppError::OrderNotFound)
        }
        None => Err(AppError::OrderNotFound),
    }
}

/// Query-on-read; failures are logged and the stored order is kept.
pub(crate) async fn refresh(st: &AppState, no: &str) -> Option<CombineOrder> {
    match refresh_from_query(st.store.as_ref(), st.api.as_ref(), no, st.clock.now()).await {
        Ok(o) => Some(o),
        Err(RefreshError::Api(e)) if has_code(&e, NOT_FOUND_CODES) => {
            tracing::debug!(order = %no, "query: WeChat Pay has no such order (prepay never succeeded)");
            None
        }
        Err(e) => {
            tracing::warn!(order = %no, error = %e, "query-on-read failed; answering with the stored state");
            None
        }
    }
}

/// Whether a read should ask WeChat Pay first: the order is open and no
/// notification came within `query_after_secs` (of creation or of the last
/// notification seen), and this order was not queried that recently.
pub(crate) fn query_due(st: &AppState, order: &CombineOrder, now: i64) -> bool {
    if !order.state.is_open() {
        return false;
    }
    let delay = st.settings.orders.query_after_secs;
    let since = order
        .notified_at
        .unwrap_or(order.created_at)
        .max(order.created_at);
    if now - since < delay {
        return false;
    }
    let mut last = st.query_throttle.lock().unwrap_or_else(|e| e.into_inner());
    if last.len() > 10_000 {
        last.retain(|_, t| now - *t < delay);
    }
    match last.get(&order.combine_out_trade_no) {
        Some(t) if now - *t < delay => false,
        _ => {
            last.insert(order.combine_out_trade_no.clone(), now);
            true
        }
    }
}

/// `GET /api/combine-orders/{no}`.
pub async fn get(
    State(st): State<AppState>,
    session: Session,
    Path(no): Path<String>,
) -> Result<Json<OrderView>, AppError> {
    let mut order = owned_order(&st, &session, &no).await?;
    if query_due(&st, &order, st.clock.now()) {
        if let Some(fresh) = refresh(&st, &no).await {
            order = fresh;
        }
    }
    // Only read once the order is known to be this payer's.
    let refunds = st.store.refunds_of_order(&no).await?;
    Ok(Json(OrderView::of(&order, &st).with_refunds(&refunds)))
}

/// `POST /api/combine-orders/{no}/pay-params`.
pub async fn pay_params(
    State(st): State<AppState>,
    session: Session,
    Path(no): Path<String>,
) -> Result<Json<Value>, AppError> {
    let order = owned_order(&st, &session, &no).await?;
    if !order.state.is_open() {
        return Err(AppError::OrderFinal(order.state));
    }
    let now = st.clock.now();
    if order.time_expire.is_some_and(|t| now >= t) {
        return Err(AppError::OrderExpired);
    }
    let margin = st.settings.orders.prepay_reuse_margin_secs;
    let prepay_id = match (&order.prepay_id, order.prepay_expires_at) {
        (Some(id), Some(exp)) if exp - margin > now => id.clone(),
        _ => prepay_stored(&st, &order, Attempt::Repeat).await?.prepay_id,
    };
    let pay_params = sign_pay_params(&st, &prepay_id)?;
    Ok(Json(json!({
        "combine_out_trade_no": order.combine_out_trade_no,
        "pay_params": pay_params,
    })))
}

/// `POST /api/combine-orders/{no}/close`.
pub async fn close(
    State(st): State<AppState>,
    session: Session,
    Path(no): Path<String>,
) -> Result<Json<OrderView>, AppError> {
    let order = owned_order(&st, &session, &no).await?;
    let order = close_order(&st, order, "closed by the payer").await?;
    Ok(Json(OrderView::of(&order, &st)))
}

/// Closes an open order at WeChat Pay and records CLOSED (re-entrant for a
/// closed order; the minimum-age rule applies). Shared by the payer's close
/// and the server-to-server API; returns the order as stored.
pub(crate) async fn close_order(
    st: &AppState,
    order: CombineOrder,
    reason: &str,
) -> Result<CombineOrder, AppError> {
    let no = order.combine_out_trade_no.clone();
    match order.state {
        TradeState::Success | TradeState::Refund => return Err(AppError::OrderPaid),
        // Closing is re-entrant: an already closed order answers as is.
        TradeState::Closed => return Ok(order),
        TradeState::PayError => return Err(AppError::OrderFinal(order.state)),
        TradeState::NotPay | TradeState::UserPaying => {}
    }
    let now = st.clock.now();
    let min_age = st.settings.orders.close_min_age_secs;
    let age = now - order.created_at;
    if age < min_age {
        return Err(AppError::TooEarlyToClose {
            min_age_secs: min_age,
            retry_after_secs: min_age - age,
        });
    }
    let detail = match st.api.close(&no, &close_request(&order)).await {
        Ok(()) => reason.to_string(),
        // A refusal alone records nothing: a verified query decides.
        Err(e) if has_code(&e, CLOSED_CODES) || has_code(&e, NOT_FOUND_CODES) => {
            match confirm_close_refusal(st.store.as_ref(), st.api.as_ref(), &no, now).await {
                Ok(CloseCheck::Queried(outcome)) => {
                    let o = outcome.order().clone();
                    return match o.state {
                        TradeState::Closed => Ok(o),
                        TradeState::Success | TradeState::Refund => Err(AppError::OrderPaid),
                        _ => {
                            tracing::warn!(order = %no, error = %e, state = %o.state, "close refused but the query says the order is open; not recorded");
                            Err(AppError::Upstream(e))
                        }
                    };
                }
                // Never created there (prepay never got through): nobody can pay it.
                Ok(CloseCheck::NotExist) => {
                    "closed locally: WeChat Pay has no such order".to_string()
                }
                Err(q) => {
                    tracing::warn!(order = %no, error = %q, "could not confirm the close refusal with a query; not recorded");
                    return Err(AppError::Upstream(e));
                }
            }
        }
        Err(e) if has_code(&e, PAID_CODES) => {
            let _ = refresh(st, &no).await;
            return Err(AppError::OrderPaid);
        }
        Err(e) if has_code(&e, PAYING_CODES) => return Err(AppError::PayerPaying),
        Err(e) => return Err(AppError::Upstream(e)),
    };
    let transition = Transition {
        to: TradeState::Closed,
        source: EventSource::Close,
        payments: vec![],
        notification: None,
        detail,
    };
    let outcome = st
        .store
        .apply_transition(&no, &transition, st.clock.now())
        .await?;
    if let ApplyOutcome::Applied(o) = &outcome {
        st.store.announce(order.state, o, EventSource::Close);
    }
    match outcome {
        ApplyOutcome::Applied(o) | ApplyOutcome::AlreadyApplied(o) => {
            tracing::info!(order = %no, "combined order closed");
            Ok(o)
        }
        // Paid in the meantime (a notification won the race).
        ApplyOutcome::Rejected { order, reason } => {
            tracing::warn!(order = %no, %reason, "close not recorded");
            if matches!(order.state, TradeState::Success | TradeState::Refund) {
                Err(AppError::OrderPaid)
            } else {
                Err(AppError::OrderFinal(order.state))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_numbers_follow_the_charset_and_length_rules() {
        let n = new_order_number(1_714_536_000); // 2024-05-01T12:00:00+08:00
        assert_eq!(n.len(), 27);
        assert!(n.starts_with("C20240501120000"), "{n}");
        assert!(is_order_number(&n));
        assert!(is_order_number(&format!("{n}-10")));
        assert_ne!(new_order_number(0), new_order_number(0));
        assert!(!is_order_number("a/b"));
        assert!(!is_order_number(""));
        assert!(!is_order_number(&"a".repeat(33)));
    }

    #[test]
    fn times_are_china_time() {
        assert_eq!(rfc3339_cst(1_714_536_000), "2024-05-01T12:00:00+08:00");
    }

    #[test]
    fn truncation_respects_characters() {
        let s = "三".repeat(50); // 150 bytes
        let t = truncate_bytes(&s, 127);
        assert!(t.len() <= 127);
        assert!(t.ends_with('…'));
        assert_eq!(truncate_bytes("abc", 127), "abc");
    }
}
