//! The seam between this server and WeChat Pay's combined-order API.
//!
//! The HTTP client implements [`CombineApi`]; the reconciliation worker and
//! the HTTP handlers depend on the trait only, so they are tested with a fake.

use super::wire::{CloseRequest, CombineTransaction, PrepayRequest};
use async_trait::async_trait;

/// A failed call to WeChat Pay.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The service answered with an error status and body.
    #[error("WeChat Pay answered HTTP {status} {code}: {message} (Request-ID {request_id:?})")]
    Service {
        /// HTTP status.
        status: u16,
        /// `code` of the body, e.g. `ORDER_NOT_EXIST`.
        code: String,
        /// `message` of the body.
        message: String,
        /// `detail` of the body, when given.
        detail: Option<serde_json::Value>,
        /// The `Request-ID` header (its numeric suffix is an internal code).
        request_id: Option<String>,
    },
    /// An error answer without a signature (or one that did not verify):
    /// its code is not trusted, so [`ApiError::code`] is `None` and nothing
    /// decides on it; only its status drives retries.
    #[error("WeChat Pay answered HTTP {status} with an unverified body ({reason}); its code {claimed_code:?} is not trusted (Request-ID {request_id:?})")]
    Unverified {
        /// HTTP status.
        status: u16,
        /// The `code` the body claims (for logs only).
        claimed_code: String,
        /// Why it is unverified: no signature headers, or the refusal.
        reason: String,
        /// The `Request-ID` header.
        request_id: Option<String>,
    },
    /// The answer's signature did not verify (a 2xx without a valid
    /// signature is treated as forged).
    #[error("response signature invalid: {0}")]
    Verify(#[from] crate::apiv3::VerifyError),
    /// The request could not be signed.
    #[error("request signing failed: {0}")]
    Sign(#[from] crate::apiv3::SignError),
    /// Connection failure or timeout; the call may or may not have happened.
    #[error("transport error calling {endpoint}: {detail}")]
    Transport {
        /// Which API.
        endpoint: &'static str,
        /// What failed.
        detail: String,
    },
    /// A 2xx body that does not parse.
    #[error("unexpected response body from {endpoint}: {detail}")]
    Decode {
        /// Which API.
        endpoint: &'static str,
        /// Parser message.
        detail: String,
    },
}

impl ApiError {
    /// The service's error code, if the service answered with a verified
    /// error (an [`ApiError::Unverified`] answer has none).
    pub fn code(&self) -> Option<&str> {
        match self {
            ApiError::Service { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether trying again may succeed (transport errors, 5xx, rate limits).
    pub fn is_retryable(&self) -> bool {
        match self {
            ApiError::Transport { .. } => true,
            ApiError::Service { status, .. } | ApiError::Unverified { status, .. } => {
                *status >= 500 || *status == 429
            }
            _ => false,
        }
    }
}

/// Combined-order operations on WeChat Pay.
#[async_trait]
pub trait CombineApi: Send + Sync {
    /// `POST /v3/combine-transactions/jsapi` → prepay_id. Idempotent on
    /// `combine_out_trade_no` with identical parameters.
    async fn prepay(&self, request: &PrepayRequest) -> Result<String, ApiError>;

    /// `GET /v3/combine-transactions/out-trade-no/{no}`.
    async fn query(&self, combine_out_trade_no: &str) -> Result<CombineTransaction, ApiError>;

    /// `POST /v3/combine-transactions/out-trade-no/{no}/close` (204). Re-entrant.
    async fn close(
        &self,
        combine_out_trade_no: &str,
        request: &CloseRequest,
    ) -> Result<(), ApiError>;
}
