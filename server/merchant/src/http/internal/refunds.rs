//! The refund routes: refund a sub-order (by its own merchant) and read a
//! refund.

use super::request::idempotency_key;
use super::views::RefundView;
use super::InternalApi;
use crate::refund::{RefundError, RefundOrder};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The body of `POST /internal/combine-orders/{no}/refunds`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RefundBody {
    out_trade_no: String,
    amount: i64,
    #[serde(default)]
    reason: Option<String>,
}

fn error(status: StatusCode, code: &str, field: Option<&str>, message: String) -> Response {
    let mut body = serde_json::json!({ "code": code, "message": message });
    if let Some(f) = field {
        body["field"] = f.into();
    }
    (status, Json(body)).into_response()
}

fn refund_error(e: RefundError) -> Response {
    let status = match &e {
        RefundError::UnknownOrder(_)
        | RefundError::UnknownSubOrder { .. }
        | RefundError::UnknownRefund(_) => StatusCode::NOT_FOUND,
        RefundError::Rule(_) | RefundError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        RefundError::KeyReused => StatusCode::CONFLICT,
        RefundError::NoCredentials(_) => StatusCode::UNPROCESSABLE_ENTITY,
        RefundError::Refused { .. } => StatusCode::BAD_GATEWAY,
        RefundError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if let RefundError::Store(err) = &e {
        tracing::error!(error = %err, "refund failed: database error");
        return error(status, "INTERNAL", None, "database error".into());
    }
    error(status, e.code(), None, e.to_string())
}

/// `POST /internal/combine-orders/{no}/refunds` with an `Idempotency-Key`
/// and `{"out_trade_no","amount","reason"?}` → 201 with the refund (the
/// same key with the same request answers the same refund; a rule's
/// refusal is 422 with the rule's code and stores nothing).
pub(super) async fn create(
    State(api): State<InternalApi>,
    Path(no): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(service) = api.refunds.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            None,
            "refunds are not enabled".into(),
        );
    };
    let key = match idempotency_key(&headers) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let de = &mut serde_json::Deserializer::from_slice(&body);
    let req: RefundBody = match serde_path_to_error::deserialize(de) {
        Ok(r) => r,
        Err(e) => {
            let field = e.path().to_string();
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                Some(&field),
                e.into_inner().to_string(),
            );
        }
    };
    let digest = hex::encode(Sha256::digest(
        format!(
            "{no}\n{}\n{}\n{}",
            req.out_trade_no,
            req.amount,
            req.reason.as_deref().unwrap_or("")
        )
        .as_bytes(),
    ));
    let order = RefundOrder {
        combine_out_trade_no: no,
        out_trade_no: req.out_trade_no,
        amount: req.amount,
        reason: req.reason,
        idempotency: Some((key, digest)),
    };
    match service.refund(order).await {
        Ok(r) => (StatusCode::CREATED, Json(RefundView::of(&r))).into_response(),
        Err(e) => refund_error(e),
    }
}

/// `GET /internal/refunds/{out_refund_no}`: the refund; a PROCESSING one
/// whose outcome is overdue is asked about first.
pub(super) async fn get(
    State(api): State<InternalApi>,
    Path(out_refund_no): Path<String>,
) -> Response {
    let Some(service) = api.refunds.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            None,
            "refunds are not enabled".into(),
        );
    };
    match service.get(&out_refund_no, false).await {
        Ok(r) => Json(RefundView::of(&r)).into_response(),
        Err(e) => refund_error(e),
    }
}
