//! Errors: [`ApiError`] is what the simulated service answers; [`SimError`]
//! is what starting or driving the simulator can fail with.

use axum::http::StatusCode;
use serde_json::{json, Value};
use thiserror::Error;

/// Starting, configuring or controlling the simulator failed.
#[derive(Debug, Error)]
pub enum SimError {
    /// A file in the data directory could not be read or written.
    #[error("{path}: {detail}")]
    Io {
        /// The file or directory.
        path: String,
        /// The OS error.
        detail: String,
    },
    /// The configuration file or a stored credential file is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Key material could not be loaded or generated.
    #[error("key material: {0}")]
    Key(#[from] wxpay_combine_core::apiv3::KeyError),
    /// Signing failed inside the crypto backend.
    #[error("signing: {0}")]
    Sign(#[from] wxpay_combine_core::apiv3::SignError),
    /// A certificate could not be generated.
    #[error("certificate generation: {0}")]
    Certificate(String),
    /// The state database failed.
    #[error("state database: {0}")]
    Db(#[from] rusqlite::Error),
    /// The listening address could not be bound.
    #[error("cannot listen on {addr}: {detail}")]
    Bind {
        /// The requested address.
        addr: String,
        /// The OS error.
        detail: String,
    },
    /// A control request was refused.
    #[error("control request refused: {0}")]
    Control(String),
}

impl SimError {
    pub(crate) fn io(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        Self::Io {
            path: path.display().to_string(),
            detail: e.to_string(),
        }
    }
}

/// An error answer of the simulated APIv3 service: an HTTP status and the
/// body `{"code","message","detail"?}`. `internal` is the numeric code the
/// real service appends to `Request-ID`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// `code`, e.g. `PARAM_ERROR`.
    pub code: &'static str,
    /// `message`, in the service's language.
    pub message: String,
    /// `detail`, when the service gives one.
    pub detail: Option<Value>,
    /// Suffix of `Request-ID`.
    pub internal: u32,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            detail: None,
            internal: 268_435_456,
        }
    }

    pub(crate) fn with_detail(mut self, detail: Value) -> Self {
        self.detail = Some(detail);
        self
    }

    pub(crate) fn with_internal(mut self, internal: u32) -> Self {
        self.internal = internal;
        self
    }

    /// 400 `PARAM_ERROR` about one body field (JSON pointer).
    pub(crate) fn param(field: &str, issue: impl Into<String>) -> Self {
        let issue = issue.into();
        Self::new(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            format!("输入源“/body{field}”映射到值字段校验失败：{issue}"),
        )
        .with_detail(json!({"field": field, "location": "body", "issue": issue}))
        .with_internal(268_435_459)
    }

    /// 400 `INVALID_REQUEST`.
    pub(crate) fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message).with_internal(268_435_460)
    }

    /// 401 `SIGN_ERROR` in the shape the real service uses.
    pub(crate) fn sign_error(field: &str, issue: &str, sign_information: Value) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "SIGN_ERROR",
            "错误的签名，验签失败",
        )
        .with_detail(json!({
            "detail": {"issue": issue},
            "field": field,
            "location": "authorization",
            "sign_information": sign_information,
        }))
        .with_internal(268_443_699)
    }

    /// 404 `ORDER_NOT_EXIST`.
    pub(crate) fn order_not_exist() -> Self {
        Self::new(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在").with_internal(268_512_771)
    }

    /// 400 `ORDER_PAID`.
    pub(crate) fn order_paid() -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ORDER_PAID", "该订单已支付").with_internal(268_449_538)
    }

    /// 400 `ORDER_CLOSED`.
    pub(crate) fn order_closed() -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ORDER_CLOSED", "订单已关闭").with_internal(268_447_914)
    }

    /// 500 `SYSTEM_ERROR`.
    pub(crate) fn system(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", message)
            .with_internal(268_435_457)
    }

    /// 429 `FREQUENCY_LIMITED`, unprocessed.
    pub(crate) fn frequency_limited() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "FREQUENCY_LIMITED",
            "频率超限，请降低请求接口频率",
        )
        .with_internal(268_435_458)
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        let mut v = json!({"code": self.code, "message": self.message});
        if let Some(d) = &self.detail {
            v["detail"] = d.clone();
        }
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        tracing::error!(error = %e, "simulator state database failed");
        Self::system("系统错误")
    }
}

impl From<SimError> for ApiError {
    fn from(e: SimError) -> Self {
        tracing::error!(error = %e, "simulator failed");
        Self::system("系统错误")
    }
}
