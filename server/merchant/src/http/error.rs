//! Every failure the page can see, as one enum. Each becomes
//! `{"code","message",…}` with a fitting status; internal details are logged,
//! not returned.

use crate::combine::{ApiError, TradeState};
use crate::store::StoreError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

/// An HTTP API error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No (valid) payer session: log in via OAuth first.
    #[error("no payer session; open login_url to identify the payer")]
    NoSession {
        /// Where to start OAuth.
        login_url: String,
    },
    /// The body is not the expected JSON (includes unknown fields).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The body exceeds the API's size limit.
    #[error("request body too large")]
    BodyTooLarge,
    /// POST bodies must be `application/json`.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// A SKU that is not in the catalog.
    #[error("unknown sku {0:?}")]
    UnknownSku(String),
    /// A quantity outside 1–99.
    #[error("quantity {qty} of {sku} is outside 1–99")]
    InvalidQuantity {
        /// The SKU.
        sku: String,
        /// What was asked.
        qty: u64,
    },
    /// Every item comes from the same sub-merchant.
    #[error(
        "combined payment needs items from at least two sub-merchants; every item here is sold by {merchant}. \
         Add an item from another shop (or pay this shop with an ordinary JSAPI order)"
    )]
    NeedTwoMerchants {
        /// The only merchant.
        merchant: String,
    },
    /// More than 10 sub-merchants.
    #[error(
        "a combined order takes at most 10 sub-orders (one per sub-merchant); this cart has {0}"
    )]
    TooManyMerchants(usize),
    /// A sub-order above the per-sub-order cap.
    #[error(
        "the items of {merchant} add up to more than 10,000,000 yuan, the limit of one sub-order"
    )]
    AmountTooLarge {
        /// The merchant.
        merchant: String,
    },
    /// No such order, or not this payer's.
    #[error("order not found")]
    OrderNotFound,
    /// The order is final; nothing more can be done with it.
    #[error("the order is {0} and can no longer be paid")]
    OrderFinal(TradeState),
    /// The order is paid and cannot be closed.
    #[error("the order is paid; a paid order is refunded, never closed")]
    OrderPaid,
    /// The order passed its time_expire.
    #[error("the order expired; place a new order")]
    OrderExpired,
    /// Close asked too early (product rule: not within 5 minutes of creation).
    #[error("an order can be closed only {min_age_secs} s after creation; try again in {retry_after_secs} s")]
    TooEarlyToClose {
        /// The configured minimum age.
        min_age_secs: i64,
        /// Seconds left.
        retry_after_secs: i64,
    },
    /// The payer is paying right now (close answered USERPAYING).
    #[error("the payer is completing the payment right now; query the order again shortly")]
    PayerPaying,
    /// WeChat Pay refused the prepay definitively; the order was closed.
    #[error("WeChat Pay refused the order ({code}: {message}); it was closed, place a new order")]
    PrepayRefused {
        /// The order.
        combine_out_trade_no: String,
        /// Service code.
        code: String,
        /// Service message.
        message: String,
    },
    /// The prepay call failed in a way that may be temporary; the order stays
    /// open and the same call can be repeated through `pay-params`.
    #[error("WeChat Pay could not be reached to prepare the payment; retry with POST /api/combine-orders/{combine_out_trade_no}/pay-params")]
    PrepayPending {
        /// The order.
        combine_out_trade_no: String,
    },
    /// Another call to WeChat Pay failed.
    #[error("WeChat Pay call failed: {0}")]
    Upstream(ApiError),
    /// OAuth failed.
    #[error("{message}")]
    OAuth {
        /// HTTP status.
        status: StatusCode,
        /// Error code, e.g. `OAUTH_CODE_INVALID`.
        code: &'static str,
        /// What happened and the likely cause.
        message: String,
        /// Where to start over.
        login_url: Option<String>,
    },
    /// The database failed.
    #[error("storage error: {0}")]
    Store(#[from] StoreError),
    /// A bug or an unexpected failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        use AppError::*;
        match self {
            NoSession { .. } => StatusCode::UNAUTHORIZED,
            InvalidRequest(_)
            | UnknownSku(_)
            | InvalidQuantity { .. }
            | NeedTwoMerchants { .. }
            | TooManyMerchants(_)
            | AmountTooLarge { .. } => StatusCode::BAD_REQUEST,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            OrderNotFound => StatusCode::NOT_FOUND,
            OrderFinal(_) | OrderPaid | OrderExpired | TooEarlyToClose { .. } | PayerPaying => {
                StatusCode::CONFLICT
            }
            PrepayRefused { .. } | Upstream(_) => StatusCode::BAD_GATEWAY,
            PrepayPending { .. } => StatusCode::SERVICE_UNAVAILABLE,
            OAuth { status, .. } => *status,
            Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        use AppError::*;
        match self {
            NoSession { .. } => "NO_SESSION",
            InvalidRequest(_) => "INVALID_REQUEST",
            UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            BodyTooLarge => "BODY_TOO_LARGE",
            UnknownSku(_) => "UNKNOWN_SKU",
            InvalidQuantity { .. } => "INVALID_QUANTITY",
            NeedTwoMerchants { .. } => "NEED_TWO_MERCHANTS",
            TooManyMerchants(_) => "TOO_MANY_MERCHANTS",
            AmountTooLarge { .. } => "AMOUNT_TOO_LARGE",
            OrderNotFound => "ORDER_NOT_FOUND",
            OrderFinal(_) => "ORDER_FINAL",
            OrderPaid => "ORDER_PAID",
            OrderExpired => "ORDER_EXPIRED",
            TooEarlyToClose { .. } => "TOO_EARLY_TO_CLOSE",
            PayerPaying => "USER_PAYING",
            PrepayRefused { .. } => "PREPAY_REFUSED",
            PrepayPending { .. } => "PREPAY_PENDING",
            Upstream(_) => "WECHATPAY_ERROR",
            OAuth { code, .. } => code,
            Store(_) => "STORAGE_UNAVAILABLE",
            Internal(_) => "INTERNAL_ERROR",
        }
    }

    /// The message shown to the page (internal details are not included).
    pub fn public_message(&self) -> String {
        match self {
            AppError::Store(_) => "the order database is unavailable; try again shortly".into(),
            AppError::Internal(_) => "internal error".into(),
            AppError::Upstream(e) => match e {
                ApiError::Service { code, message, .. } => format!("WeChat Pay answered {code}: {message}"),
                _ => "WeChat Pay could not be reached or gave an unverifiable answer; try again shortly".into(),
            },
            other => other.to_string(),
        }
    }

    fn extra(&self) -> Map<String, Value> {
        let mut m = Map::new();
        match self {
            AppError::NoSession { login_url } => {
                m.insert("login_url".into(), json!(login_url));
            }
            AppError::OAuth {
                login_url: Some(u), ..
            } => {
                m.insert("login_url".into(), json!(u));
            }
            AppError::PrepayRefused {
                combine_out_trade_no,
                ..
            }
            | AppError::PrepayPending {
                combine_out_trade_no,
            } => {
                m.insert("combine_out_trade_no".into(), json!(combine_out_trade_no));
            }
            AppError::TooEarlyToClose {
                retry_after_secs, ..
            } => {
                m.insert("retry_after_secs".into(), json!(retry_after_secs));
            }
            AppError::OrderFinal(state) => {
                m.insert("state".into(), json!(state.as_str()));
            }
            _ => {}
        }
        m
    }

    /// The error as a small HTML page, for browser navigations (OAuth).
    pub fn into_html_response(self) -> Response {
        let status = self.status();
        let link = match &self {
            AppError::NoSession { login_url }
            | AppError::OAuth {
                login_url: Some(login_url),
                ..
            } => {
                format!(
                    "<p><a href=\"{}\">重新登录 / Sign in again</a></p>",
                    html_escape(login_url)
                )
            }
            _ => String::new(),
        };
        let body = format!(
            "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{code}</title></head>\
             <body><h1>{code}</h1><p>{message}</p>{link}</body></html>",
            code = self.code(),
            message = html_escape(&self.public_message()),
        );
        (
            status,
            [(http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response()
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(code = self.code(), error = %self, "request failed");
        } else {
            tracing::debug!(code = self.code(), error = %self, "request refused");
        }
        let mut body = Map::new();
        body.insert("code".into(), json!(self.code()));
        body.insert("message".into(), json!(self.public_message()));
        body.extend(self.extra());
        let mut resp = (status, Json(Value::Object(body))).into_response();
        if let AppError::TooEarlyToClose {
            retry_after_secs, ..
        } = self
        {
            if let Ok(v) = retry_after_secs.to_string().parse() {
                resp.headers_mut().insert(http::header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_details_stay_out_of_the_body() {
        let e = AppError::Internal("secret path /etc/key".into());
        assert_eq!(e.public_message(), "internal error");
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
