//! The server-to-server order API, for a merchant backend that prices
//! orders itself. The protocol, with examples, is `docs/internal-api.md`;
//! this is a summary:
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
//!
//! The parts: `auth` (who may call), `request` (the request bodies and
//! their rules), `handlers` (the routes), `views` (the answers).

mod auth;
mod handlers;
mod refunds;
mod request;
mod views;

pub use auth::TokenCheck;
pub use handlers::claim;
pub use request::{
    parse_new_order, NewOrder, NewSubOrder, IDEMPOTENCY_HEADER, MAX_ATTACH_BYTES,
    MAX_DESCRIPTION_BYTES,
};
pub use views::{AWAITING_ORDER, AWAITING_PAYER};

use super::error::AppError;
use super::internal_settings::InternalApiConfig;
use super::AppState;
use crate::store::StoreError;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use base64::Engine;
use hmac::{KeyInit, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;
use std::sync::Arc;

type HmacSha256 = hmac::Hmac<Sha256>;

/// Largest request body of the internal API.
pub const MAX_INTERNAL_BODY_BYTES: usize = 64 * 1024;

/// The internal API's handler state.
#[derive(Clone)]
pub struct InternalApi {
    app: AppState,
    auth: Arc<TokenCheck>,
    link_secret: Arc<SecretSlice<u8>>,
    pay_link_ttl_secs: i64,
    page_url: String,
    refunds: Option<Arc<crate::refund::RefundService>>,
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
    ///
    /// Pay-link tokens are keyed with a key of their own, derived from
    /// `session_secret` under a distinct label: rotating the API token
    /// leaves open links working (rotating the session secret, which signs
    /// every payer out anyway, changes them).
    pub fn new(
        app: AppState,
        config: &InternalApiConfig,
        session_secret: &[u8],
        page_url: String,
    ) -> Self {
        let mut m = HmacSha256::new_from_slice(session_secret).expect("HMAC takes any key length");
        m.update(b"wxpay-combine pay-link key v1");
        let link_key = m.finalize().into_bytes().to_vec();
        Self {
            app,
            auth: Arc::new(TokenCheck::new(config.token.expose_secret())),
            link_secret: Arc::new(SecretSlice::from(link_key)),
            pay_link_ttl_secs: config.pay_link_ttl_secs,
            page_url,
            refunds: None,
        }
    }

    /// With the refund routes served by `service`.
    pub fn with_refunds(mut self, service: Arc<crate::refund::RefundService>) -> Self {
        self.refunds = Some(service);
        self
    }

    /// The token of an order's pay link: derived from the order number under
    /// the pay-link key, so a repeated request gets the same link although
    /// only the token's SHA-256 is stored.
    fn link_token(&self, no: &str) -> String {
        let mut m = HmacSha256::new_from_slice(self.link_secret.expose_secret())
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
        .route("/internal/combine-orders", post(handlers::create))
        .route("/internal/combine-orders/{no}", get(handlers::get_order))
        .route("/internal/combine-orders/{no}/close", post(handlers::close))
        .route(
            "/internal/combine-orders/{no}/refunds",
            post(refunds::create),
        )
        .route("/internal/refunds/{out_refund_no}", get(refunds::get))
        .route("/internal/{*rest}", any(handlers::not_found))
        .route("/internal", any(handlers::not_found))
        .layer(axum::middleware::from_fn_with_state(
            auth,
            auth::require_bearer,
        ))
        .layer(DefaultBodyLimit::max(MAX_INTERNAL_BODY_BYTES))
        .layer(axum::middleware::map_response(json_errors))
        .layer(tower_http::set_header::SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .with_state(api);
    super::traced(routes)
}

/// Every error in the documented JSON shape: the framework's own answers
/// (413 from the body limit, 405, an extractor's 400/415) are plain text,
/// so they are rewritten as `{"code", "message"}` here.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (code, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (
            "BODY_TOO_LARGE",
            format!("request body too large (limit {MAX_INTERNAL_BODY_BYTES} bytes)"),
        ),
        StatusCode::METHOD_NOT_ALLOWED => (
            "METHOD_NOT_ALLOWED",
            "this method is not allowed on this path".to_string(),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "UNSUPPORTED_MEDIA_TYPE",
            "the body must be application/json".to_string(),
        ),
        s if s.is_client_error() => ("INVALID_REQUEST", "the request is malformed".to_string()),
        _ => ("INTERNAL_ERROR", "the server failed".to_string()),
    };
    let (mut parts, _) = resp.into_parts();
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = Json(views::ErrorView::new(code, message)).into_response();
    let (body_parts, body) = body.into_parts();
    parts.headers.extend(body_parts.headers);
    Response::from_parts(parts, body)
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
                views::ErrorView::about(field, "INVALID_REQUEST", message),
            ),
            InternalError::KeyReused => (
                StatusCode::CONFLICT,
                views::ErrorView::new(
                    "IDEMPOTENCY_KEY_REUSED",
                    "this Idempotency-Key was used with a different request body",
                ),
            ),
            InternalError::NumberUsed(what) => (
                StatusCode::CONFLICT,
                views::ErrorView::new("ORDER_NUMBER_USED", what),
            ),
            InternalError::NotFound => (
                StatusCode::NOT_FOUND,
                views::ErrorView::new("NOT_FOUND", "no such order"),
            ),
            InternalError::App(e) => return e.into_response(),
        };
        (status, Json(body)).into_response()
    }
}
