//! The routes: create, read and close an order, and the page's claim of a
//! pay link.

use super::request::{claim_token, idempotency_key, parse_new_order, NewOrder};
use super::views::{ClaimView, ErrorView, OrderView, PrepayView};
use super::{InternalApi, InternalError};
use crate::combine::CombineOrder;
use crate::http::error::AppError;
use crate::http::orders::{
    self, close_order, is_order_number, new_order_number, prepay_stored, query_due, refresh,
    rfc3339_cst, sign_pay_params, Attempt,
};
use crate::http::{record_order, AppState, Session};
use crate::redact::mask_openid;
use crate::store::{ClaimOutcome, IdempotencyRecord, PayLink, PayLinkStatus, StoreError};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Any other path under `/internal` (answered only behind the token, like
/// the real routes).
pub(super) async fn not_found() -> Response {
    InternalError::NotFound.into_response()
}

/// `POST /internal/combine-orders`: the `Idempotency-Key` decides the order
/// number (the one its first request got, or a new one), then the order is
/// created for its payer or as a pay link. 201 when created, 200 for a
/// repeat.
pub(super) async fn create(
    State(api): State<InternalApi>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, InternalError> {
    let key = idempotency_key(&headers)?;
    let req = parse_new_order(&body)?;
    let st = &api.app;
    let now = st.clock.now();
    let digest = req.digest();
    // A new key naming a number an order (or a pay link) holds already is
    // refused, whatever its body: the key is not bound to another's order.
    if let Some(no) = &req.combine_out_trade_no {
        if st.store.idempotency_key(&key).await?.is_none()
            && (st.store.get_order(no).await?.is_some()
                || st.store.pay_link_for_order(no).await?.is_some())
        {
            return Err(InternalError::NumberUsed(format!(
                "order {no} exists (created under another Idempotency-Key)"
            )));
        }
    }
    let candidate = req
        .combine_out_trade_no
        .clone()
        .unwrap_or_else(|| new_order_number(now));
    let rec = st
        .store
        .record_idempotency_key(&IdempotencyRecord {
            key: key.clone(),
            request_sha256: digest.clone(),
            combine_out_trade_no: candidate,
            created_at: now,
        })
        .await
        .map_err(|e| match e {
            // Another key took this number between the check above and here.
            StoreError::Duplicate(no) => InternalError::NumberUsed(format!(
                "order {no} exists (created under another Idempotency-Key)"
            )),
            e => e.into(),
        })?;
    if rec.request_sha256 != digest {
        tracing::warn!("internal API: idempotency key reused with another body");
        return Err(InternalError::KeyReused);
    }
    let no = rec.combine_out_trade_no;
    record_order(&no);
    if req.pay_link {
        create_link(&api, &req, &no, now).await
    } else {
        create_for_payer(&api, &req, &no, now).await
    }
}

/// Creates (or finds again) the order `no` for the request's payer and
/// prepays it, unless a valid prepay is stored already.
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
            Some(o) if req.matches(&o, no) => (o, false),
            Some(_) => return Err(InternalError::NumberUsed(format!("order {no} exists"))),
            None => {
                let order = req.to_order(st, no, openid, now);
                match st.store.create_order(&order).await {
                    Ok(()) => (order, true),
                    // A concurrent repeat of the same request, or a sub-order
                    // number another order holds.
                    Err(StoreError::Duplicate(_)) => match st.store.get_order(no).await? {
                        Some(o) if req.matches(&o, no) => (o, false),
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
    let mut view = OrderView::of(&order);
    if order.state.is_open() && order.time_expire.is_none_or(|t| now < t) {
        let margin = st.settings.orders.prepay_reuse_margin_secs;
        let (prepay_id, expires_at) = match (&order.prepay_id, order.prepay_expires_at) {
            (Some(id), Some(exp)) if exp - margin > now => (id.clone(), exp),
            _ => {
                let attempt = if created {
                    Attempt::First
                } else {
                    Attempt::Repeat
                };
                // The expiry just recorded, not the order's old one.
                let p = prepay_stored(st, &order, attempt).await?;
                (p.prepay_id, p.expires_at)
            }
        };
        let pay_params = sign_pay_params(st, &prepay_id)?;
        view = view.with_prepay(PrepayView {
            prepay_id,
            prepay_expires_at: rfc3339_cst(expires_at),
            pay_params: Some(pay_params),
        });
    }
    Ok((created_or_repeat(created), Json(view)).into_response())
}

/// Creates (or finds again) the pay link of order `no`; the order itself is
/// made when a payer claims the link.
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
            if !req.matches(&draft_of(&l)?, no) {
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
                    Some(l) if req.matches(&draft_of(&l)?, no) => (l, false),
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
    let order = st.store.get_order(no).await?;
    let view = answer(api, order.as_ref(), Some(&link), now)?;
    Ok((created_or_repeat(created), Json(view)).into_response())
}

/// What every route about one order does first: a number that cannot be an
/// order is not found without a lookup, a possible one is recorded in the
/// request's span. Returns the time the route acts at.
fn order_route(api: &InternalApi, no: &str) -> Result<i64, InternalError> {
    if !is_order_number(no) {
        return Err(InternalError::NotFound);
    }
    record_order(no);
    Ok(api.app.clock.now())
}

/// `GET /internal/combine-orders/{no}`: the order, asking WeChat Pay first
/// when its notification is overdue.
pub(super) async fn get_order(
    State(api): State<InternalApi>,
    Path(no): Path<String>,
) -> Result<Json<OrderView>, InternalError> {
    let now = order_route(&api, &no)?;
    let st = &api.app;
    let link = st.store.pay_link_for_order(&no).await?;
    let mut order = st.store.get_order(&no).await?;
    if let Some(o) = &order {
        if query_due(st, o, now) {
            if let Some(fresh) = refresh(st, &no).await {
                order = Some(fresh);
            }
        }
    }
    let view = answer(&api, order.as_ref(), link.as_ref(), now)?;
    let refunds = st.store.refunds_of_order(&no).await?;
    Ok(Json(view.with_refunds(&refunds)))
}

/// `POST /internal/combine-orders/{no}/close`: a pay link whose order is
/// not stored closes at once; an order is closed at WeChat Pay, then here.
pub(super) async fn close(
    State(api): State<InternalApi>,
    Path(no): Path<String>,
) -> Result<Json<OrderView>, InternalError> {
    let now = order_route(&api, &no)?;
    let st = &api.app;
    // A link without a stored order closes at once (WeChat Pay never saw
    // the order), claimed or not: a later claim is refused.
    if st.store.close_pay_link(&no).await? {
        tracing::info!(order = %no, "pay link without an order closed by the internal API");
    }
    let link = st.store.pay_link_for_order(&no).await?;
    let order = match st.store.get_order(&no).await? {
        Some(o) => Some(close_order(st, o, "closed by the merchant").await?),
        None => None,
    };
    Ok(Json(answer(&api, order.as_ref(), link.as_ref(), now)?))
}

/// The answer about an order: the order once it exists (with its pay link
/// if it was made with one), else what its unclaimed link holds.
fn answer(
    api: &InternalApi,
    order: Option<&CombineOrder>,
    link: Option<&PayLink>,
    now: i64,
) -> Result<OrderView, InternalError> {
    match (order, link) {
        (Some(o), Some(l)) => Ok(OrderView::of(o).with_pay_link(api, l, now)),
        (Some(o), None) => Ok(OrderView::of(o)),
        (None, Some(l)) => Ok(OrderView::unclaimed(api, &draft_of(l)?, l, now)),
        (None, None) => Err(InternalError::NotFound),
    }
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

fn created_or_repeat(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
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
    let token = claim_token(&body)?;
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
            return Ok((status, Json(ErrorView::new(code, message))).into_response());
        }
    };
    let no = link.combine_out_trade_no.clone();
    record_order(&no);
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
    let order = orders::OrderView::of(&order, &st);
    Ok(Json(ClaimView {
        combine_out_trade_no: no,
        order,
    })
    .into_response())
}
