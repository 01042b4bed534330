//! The reply WeChat Pay gets for one notification, and per-outcome counters
//! (plain atomics, also exported as metrics).

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use std::sync::atomic::{AtomicU64, Ordering};
use wxpay_combine_core::notify::NotifyOutcome;

/// The reply to one notification: 204 without body, or a status with
/// `{"code":"FAIL","message":…}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyReply {
    /// What happened.
    pub outcome: NotifyOutcome,
    /// Short reason sent to WeChat Pay on failure (no secrets, no openids).
    pub message: String,
}

impl NotifyReply {
    pub(crate) fn new(outcome: NotifyOutcome, message: impl Into<String>) -> Self {
        Self {
            outcome,
            message: message.into(),
        }
    }

    /// The JSON body (`None` for an acknowledgement).
    pub fn body(&self) -> Option<String> {
        (!self.outcome.is_ack())
            .then(|| serde_json::json!({ "code": "FAIL", "message": self.message }).to_string())
    }
}

impl IntoResponse for NotifyReply {
    fn into_response(self) -> Response {
        let status = self.outcome.status();
        match self.body() {
            None => status.into_response(),
            Some(body) => {
                let mut r = (status, body).into_response();
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json; charset=utf-8"),
                );
                r
            }
        }
    }
}

/// One counter per [`NotifyOutcome`].
#[derive(Debug, Default)]
pub struct NotifyCounters([AtomicU64; NotifyOutcome::ALL.len()]);

impl NotifyCounters {
    pub(crate) fn record(&self, outcome: NotifyOutcome) {
        self.0[outcome_index(outcome)].fetch_add(1, Ordering::Relaxed);
        crate::metrics::metrics().notification(outcome.as_str());
    }

    /// How many notifications ended with `outcome`.
    pub fn get(&self, outcome: NotifyOutcome) -> u64 {
        self.0[outcome_index(outcome)].load(Ordering::Relaxed)
    }

    /// All counters, in [`NotifyOutcome::ALL`] order.
    pub fn snapshot(&self) -> Vec<(NotifyOutcome, u64)> {
        NotifyOutcome::ALL
            .iter()
            .map(|o| (*o, self.get(*o)))
            .collect()
    }
}

fn outcome_index(outcome: NotifyOutcome) -> usize {
    NotifyOutcome::ALL
        .iter()
        .position(|o| *o == outcome)
        .unwrap_or(0)
}
