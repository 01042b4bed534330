//! Paid-event webhooks: an outbox written with every final state change,
//! delivered to the merchant's backend until it answers 2xx.
//!
//! - When an order becomes SUCCESS, CLOSED or PAYERROR, or a refund of one
//!   of its sub-orders becomes SUCCESS, CLOSED or ABNORMAL, the store
//!   inserts one `outbox_events` row **in the same transaction** as the
//!   state change (see `apply_locked` and `update_refund` in the store),
//!   holding the exact JSON body ([`crate::outbox::payload`],
//!   [`crate::outbox::refund_payload`]) and a stable event id (`evt_…`) for
//!   the receiver's dedupe; a refund's event is numbered in its order's
//!   sequence.
//! - [`WebhookWorker`] claims due events (only the oldest undelivered event
//!   of each order, under a lease, so events of one order arrive in order and
//!   two instances never send the same event at once), POSTs them signed
//!   ([`sign`]), and records the result: delivered on 2xx, else a next attempt
//!   with exponential backoff and jitter. All state is in the database, so a
//!   restart (even `kill -9`) resumes where it stopped: at-least-once.
//!
//! The receiver's side is documented in `docs/webhooks.md`.

pub mod deliver;
pub mod settings;
pub mod sign;

pub use deliver::{backoff_secs, Delivery, WebhookWorker};

use secrecy::SecretString;
use std::time::Duration;
use url::Url;

/// Header carrying the event id (the receiver's dedupe key).
pub const HEADER_EVENT_ID: &str = "Wxpay-Combine-Event-Id";
/// Header carrying the send time, Unix seconds (part of the signed text).
pub const HEADER_TIMESTAMP: &str = "Wxpay-Combine-Timestamp";
/// Header carrying `v1=<hex HMAC-SHA256(secret, timestamp "." body)>`.
pub const HEADER_SIGNATURE: &str = "Wxpay-Combine-Signature";

/// Where and how events are delivered (`webhook_*` configuration keys).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The receiver (`webhook_url`).
    pub url: Url,
    /// The HMAC key (`webhook_secret_file`).
    pub secret: SecretString,
    /// Timeout of one delivery attempt (`webhook_timeout_ms`).
    pub timeout: Duration,
    /// Delay after the first failure (`webhook_initial_backoff_secs`); it
    /// doubles with every further failure.
    pub initial_backoff_secs: u64,
    /// Longest delay between attempts (`webhook_max_backoff_secs`).
    pub max_backoff_secs: u64,
    /// How often the worker looks for due events when idle.
    pub poll_interval: Duration,
    /// Events claimed (and sent concurrently, one per order) per round.
    pub batch: i64,
}

impl WebhookSettings {
    /// Settings with the defaults: 10 s timeout, backoff from 5 s to 1 h,
    /// polling every second, 16 events per round.
    pub fn new(url: Url, secret: SecretString) -> Self {
        Self {
            url,
            secret,
            timeout: Duration::from_secs(10),
            initial_backoff_secs: 5,
            max_backoff_secs: 3600,
            poll_interval: Duration::from_secs(1),
            batch: 16,
        }
    }
}
