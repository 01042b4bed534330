//! The delivery worker: claim due events, POST them signed, record the
//! outcome. Every bit of state is in the outbox table, so the worker can be
//! stopped (or killed) at any point and resumes where it left off; an event
//! whose claim was held by a killed process is sent again once the claim
//! lapses (at-least-once).

use super::{sign, WebhookSettings, HEADER_EVENT_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use crate::apiv3::Clock;
use crate::store::{OutboxEvent, Store, StoreError};
use secrecy::ExposeSecret;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The outcome of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The receiver answered 2xx with this status.
    Delivered(u16),
    /// The receiver answered something else.
    Status(u16),
    /// No answer (connection refused, timeout, TLS…); the detail.
    Failed(String),
}

impl Delivery {
    /// Whether the event counts as delivered.
    pub fn is_delivered(&self) -> bool {
        matches!(self, Delivery::Delivered(_))
    }

    /// A short description for `last_error` and logs.
    pub fn describe(&self) -> String {
        match self {
            Delivery::Delivered(s) => format!("HTTP {s}"),
            Delivery::Status(s) => format!("HTTP {s}"),
            Delivery::Failed(e) => e.clone(),
        }
    }
}

/// Delay before the attempt that follows failure number `failures` (1 for
/// the first failure): `initial · 2^(failures-1)`, capped at `max`, then
/// scaled by a random factor in [0.5, 1] so that receivers coming back from
/// an outage are not hit by every event in the same second. At least 1 s.
pub fn backoff_secs(failures: i64, initial: u64, max: u64) -> u64 {
    let exp = failures.clamp(1, 40) as u32 - 1;
    let raw = initial
        .max(1)
        .saturating_mul(2u64.saturating_pow(exp))
        .min(max.max(1));
    ((raw as f64) * rand::random_range(0.5..=1.0))
        .round()
        .max(1.0) as u64
}

/// Sends outbox events to the configured receiver.
#[derive(Debug, Clone)]
pub struct WebhookWorker {
    store: Arc<dyn Store>,
    settings: Arc<WebhookSettings>,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl WebhookWorker {
    /// A worker delivering `store`'s outbox with `settings`.
    pub fn new(
        store: Arc<dyn Store>,
        settings: WebhookSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            // A redirect is not an acknowledgement; never follow one.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("wxpay-combine-webhook/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the webhook HTTP client: {e}"))?;
        Ok(Self {
            store,
            settings: Arc::new(settings),
            http,
            clock,
        })
    }

    /// The settings.
    pub fn settings(&self) -> &WebhookSettings {
        &self.settings
    }

    /// One POST of `event`, signed now. Records nothing.
    pub async fn send(&self, event: &OutboxEvent) -> Delivery {
        let ts = self.clock.now();
        let signature = sign::sign(
            self.settings.secret.expose_secret().as_bytes(),
            ts,
            event.payload.as_bytes(),
        );
        let r = self
            .http
            .post(self.settings.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(HEADER_EVENT_ID, &event.id)
            .header(HEADER_TIMESTAMP, ts.to_string())
            .header(HEADER_SIGNATURE, signature)
            .body(event.payload.clone())
            .send()
            .await;
        match r {
            Ok(resp) if resp.status().is_success() => Delivery::Delivered(resp.status().as_u16()),
            Ok(resp) => Delivery::Status(resp.status().as_u16()),
            // The URL may carry a token in its query: keep it out of errors.
            Err(e) => Delivery::Failed(e.without_url().to_string()),
        }
    }

    /// Sends `event` and records the outcome: delivered, or failed with
    /// the next attempt after [`backoff_secs`].
    pub async fn deliver(&self, event: &OutboxEvent) -> Result<Delivery, StoreError> {
        let outcome = self.send(event).await;
        let now = self.clock.now();
        let m = crate::metrics::metrics();
        if outcome.is_delivered() {
            m.webhook_delivery("delivered");
            self.store.mark_outbox_delivered(&event.id, now).await?;
            tracing::info!(event = %event.id, combine_out_trade_no = %event.combine_out_trade_no, kind = %event.kind, "webhook delivered");
        } else {
            m.webhook_delivery(match outcome {
                Delivery::Status(_) => "http_error",
                _ => "unreachable",
            });
            let failures = event.attempts + 1;
            let delay = backoff_secs(
                failures,
                self.settings.initial_backoff_secs,
                self.settings.max_backoff_secs,
            );
            let error: String = outcome.describe().chars().take(300).collect();
            self.store
                .mark_outbox_failed(&event.id, now + delay as i64, &error)
                .await?;
            tracing::warn!(event = %event.id, combine_out_trade_no = %event.combine_out_trade_no, attempts = failures, retry_in_secs = delay, error = %error, "webhook delivery failed");
        }
        Ok(outcome)
    }

    /// One round: claims due events and delivers them concurrently (at most
    /// one per order). Returns how many were claimed.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        // The claim outlives one attempt comfortably; a killed instance's
        // claim lapses after it.
        let lease = self.settings.timeout.as_secs() as i64 * 2 + 30;
        let events = self
            .store
            .claim_outbox_events(now, now + lease, self.settings.batch.max(1))
            .await?;
        let results = futures_util::future::join_all(events.iter().map(|e| self.deliver(e))).await;
        for r in results {
            r?;
        }
        Ok(events.len())
    }

    /// Publishes the backlog to the metrics.
    pub async fn update_metrics(&self) -> Result<(), StoreError> {
        let stats = self.store.outbox_stats().await?;
        let m = crate::metrics::metrics();
        m.set_webhook_pending(stats.pending.max(0) as u64);
        let age = stats
            .oldest_created_at
            .map(|t| (self.clock.now() - t).max(0) as f64)
            .unwrap_or(0.0);
        m.set_webhook_oldest_pending_age(age);
        Ok(())
    }

    /// Delivers until `stop` completes: rounds back to back while there is
    /// work, otherwise every `poll_interval`.
    pub async fn run(self, stop: impl Future<Output = ()> + Send) {
        tracing::info!(url = %redact_url(&self.settings.url), "webhook delivery worker started");
        tokio::pin!(stop);
        loop {
            let busy = match self.run_once().await {
                Ok(n) => n > 0,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook round failed");
                    false
                }
            };
            if let Err(e) = self.update_metrics().await {
                tracing::debug!(error = %e, "webhook metrics update failed");
            }
            if busy {
                // Stop promptly even under a steady backlog.
                if tokio::time::timeout(Duration::ZERO, &mut stop)
                    .await
                    .is_ok()
                {
                    break;
                }
                continue;
            }
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        }
        tracing::info!("webhook delivery worker stopped");
    }
}

/// The URL without credentials or query (for logs).
fn redact_url(url: &url::Url) -> String {
    format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port().map(|p| format!(":{p}")).unwrap_or_default()
    ) + url.path()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        for _ in 0..50 {
            let d1 = backoff_secs(1, 10, 3600);
            assert!((5..=10).contains(&d1), "{d1}");
            let d3 = backoff_secs(3, 10, 3600);
            assert!((20..=40).contains(&d3), "{d3}");
            let big = backoff_secs(30, 10, 3600);
            assert!((1800..=3600).contains(&big), "{big}");
            assert!(backoff_secs(1, 1, 1) >= 1);
        }
    }

    #[test]
    fn urls_are_logged_without_secrets() {
        let u = url::Url::parse("https://user:pw@hooks.example.com:8443/in?token=abc").unwrap();
        assert_eq!(redact_url(&u), "https://hooks.example.com:8443/in");
    }
}
