//! Payment and refund notifications: payment ones built at payment (refund
//! ones in `refund`), delivered by a background
//! worker on the real retry schedule, persisted so deliveries resume after
//! a restart.

use super::auth::signature_headers;
use super::clock::{self, wall_ms};
use super::credentials::Merchant;
use super::faults::FaultScope;
use super::state::{NotificationAttempt, NotificationRow};
use super::SimState;
use axum::http::header;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;
use wxpay_combine_core::apiv3::{generate_nonce, Clock, EncryptedResource};

/// Waits between a failed attempt and the next one (reference §4.6); after
/// the last one fails the notification is given up. Scaled by `time_scale`.
pub const RETRY_SCHEDULE_SECS: [u64; 15] = [
    15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10_800, 10_800, 10_800, 21_600, 21_600,
];

/// A merchant must answer within this real time (never scaled).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// While an attempt runs its notification is leased for this long, so a
/// crash mid-attempt leads to a retry after restart, not a loss.
const LEASE_MS: i64 = 15_000;

/// The most a merchant's answer body is kept in the attempt log.
const SNIPPET_CHARS: usize = 512;

/// The User-Agent real notifications carry.
const USER_AGENT: &str = "Mozilla/4.0";

/// Builds the notification of a payment: envelope with the transaction
/// encrypted under the merchant's APIv3 key.
pub fn build(
    merchant: &Merchant,
    transaction: &Value,
    order_no: &str,
    notify_url: &str,
    paid_at: i64,
    first_attempt_ms: i64,
) -> NotificationRow {
    let plaintext = serde_json::to_vec(transaction).unwrap_or_default();
    let resource = EncryptedResource::seal(
        &merchant.apiv3_key,
        "transaction",
        Some("transaction"),
        &plaintext,
    );
    let id = uuid::Uuid::new_v4().to_string();
    let envelope = json!({
        "id": id,
        "create_time": clock::rfc3339(paid_at),
        "resource_type": "encrypt-resource",
        "event_type": "TRANSACTION.SUCCESS",
        "summary": "支付成功",
        "resource": resource,
    });
    NotificationRow {
        id,
        combine_mchid: merchant.creds.mchid.clone(),
        combine_out_trade_no: order_no.into(),
        notify_url: notify_url.into(),
        body: envelope.to_string(),
        status: "pending".into(),
        attempts: 0,
        next_attempt_ms: first_attempt_ms,
        created_ms: wall_ms(),
    }
}

/// The delivery worker; returns when `stop` turns true.
pub async fn run(st: Arc<SimState>, mut stop: watch::Receiver<bool>) {
    let mut inflight = JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        while inflight.try_join_next().is_some() {}
        // Refunds whose outcome is due queue their notifications first.
        super::refund::complete_due(&st).await;
        // The optional global cap on notifications in delivery; a finished
        // delivery wakes this loop.
        let cap = st
            .faults
            .get(&FaultScope::Global)
            .notify_max_inflight
            .map(|c| c.max(1) as usize);
        let room = cap.map_or(32, |c| c.saturating_sub(inflight.len()).min(32));
        let now = wall_ms();
        let due = if room > 0 {
            st.db.due_notifications(now, room as i64).await
        } else {
            Ok(Vec::new())
        };
        match due {
            Ok(due) => {
                for n in due {
                    if let Err(e) = st
                        .db
                        .update_notification(&n.id, "pending", n.attempts, now + LEASE_MS)
                        .await
                    {
                        tracing::warn!(error = %e, "could not lease a notification");
                        continue;
                    }
                    inflight.spawn(deliver(st.clone(), n));
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read due notifications"),
        }
        while inflight.try_join_next().is_some() {}
        let full = cap.is_some_and(|c| inflight.len() >= c);
        let next = st.db.next_due_ms().await.ok().flatten();
        let wait = match next {
            // At the cap: nothing to start until a delivery ends (and wakes us).
            _ if full => 1_000,
            Some(t) => (t - wall_ms()).clamp(0, 1_000),
            None => 1_000,
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
            _ = st.wake.notified() => {}
            _ = stop.changed() => {}
        }
    }
    inflight.abort_all();
    while inflight.join_next().await.is_some() {}
}

struct Sent {
    accepted: bool,
    record: NotificationAttempt,
}

#[allow(clippy::too_many_arguments)]
async fn send(
    st: &SimState,
    merchant: &Merchant,
    n: &NotificationRow,
    url: &str,
    attempt: i64,
    kind: &str,
    probe: bool,
) -> Sent {
    let now = st.clock.now();
    let body = n.body.as_bytes();
    let Some(choice) = merchant.platform.notification_key(now) else {
        return Sent {
            accepted: false,
            record: record(
                n,
                attempt,
                kind,
                None,
                Some("no signing key".into()),
                None,
                0,
                None,
            ),
        };
    };
    let probe_sig = probe.then(|| format!("WECHATPAY/SIGNTEST/{}", generate_nonce()));
    let mut req = st
        .http
        .post(url)
        .timeout(ANSWER_TIMEOUT)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, USER_AGENT)
        .header(header::ACCEPT, "*/*")
        .body(n.body.clone());
    for (k, v) in signature_headers(now, choice.serial, choice.key, body, probe_sig.as_deref()) {
        req = req.header(k, v);
    }
    let started = Instant::now();
    let at_ms = wall_ms();
    let serial = Some(choice.serial.to_string());
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let text = match tokio::time::timeout(ANSWER_TIMEOUT, resp.text()).await {
                Ok(Ok(t)) => t,
                _ => String::new(),
            };
            let snippet: String = text.chars().take(SNIPPET_CHARS).collect();
            let ms = started.elapsed().as_millis() as i64;
            Sent {
                accepted: status == 200 || status == 204,
                record: NotificationAttempt {
                    at_ms,
                    ..record(
                        n,
                        attempt,
                        kind,
                        Some(i64::from(status)),
                        None,
                        Some(snippet),
                        ms,
                        serial,
                    )
                },
            }
        }
        Err(e) => {
            let what = if e.is_timeout() {
                "no answer within 5 s".to_string()
            } else if e.is_connect() {
                "connection failed".to_string()
            } else {
                format!("request failed: {e}")
            };
            let ms = started.elapsed().as_millis() as i64;
            Sent {
                accepted: false,
                record: NotificationAttempt {
                    at_ms,
                    ..record(n, attempt, kind, None, Some(what), None, ms, serial)
                },
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn record(
    n: &NotificationRow,
    attempt: i64,
    kind: &str,
    http_status: Option<i64>,
    error: Option<String>,
    response_body: Option<String>,
    duration_ms: i64,
    serial: Option<String>,
) -> NotificationAttempt {
    NotificationAttempt {
        notification_id: n.id.clone(),
        attempt,
        kind: kind.into(),
        at_ms: wall_ms(),
        http_status,
        error,
        response_body,
        duration_ms,
        serial,
    }
}

fn scaled_ms(secs: u64, scale: f64) -> i64 {
    ((secs as f64) * 1000.0 * scale).round().max(0.0) as i64
}

async fn deliver(st: Arc<SimState>, n: NotificationRow) {
    let Some(merchant) = st.account(&n.combine_mchid).cloned() else {
        let _ = st
            .db
            .update_notification(&n.id, "failed", n.attempts, 0)
            .await;
        return;
    };
    let faults = st
        .faults
        .effective(Some(&n.combine_mchid), Some(&n.combine_out_trade_no));
    let attempt = n.attempts + 1;
    if faults.drop_notifications == Some(true) {
        let _ = st
            .db
            .record_attempt(&record(
                &n,
                attempt,
                "dropped",
                None,
                Some("dropped by fault injection".into()),
                None,
                0,
                None,
            ))
            .await;
        let _ = st
            .db
            .update_notification(&n.id, "dropped", attempt, 0)
            .await;
        return;
    }
    // Where copy `i` goes: the order's notify_url, or round-robin over the
    // `notify_targets` fault, one further on each retry.
    let targets = faults.notify_targets.as_deref().filter(|t| !t.is_empty());
    let target = |i: usize| -> &str {
        match targets {
            Some(t) => &t[(i + attempt as usize - 1) % t.len()],
            None => &n.notify_url,
        }
    };
    if n.attempts == 0 && faults.signtest_probe == Some(true) {
        let probe = send(&st, &merchant, &n, target(0), 0, "probe", true).await;
        let _ = st.db.record_attempt(&probe.record).await;
    }
    let copies = 1 + faults.duplicate_notifications.unwrap_or(0).min(20) as usize;
    let sends = (0..copies).map(|i| {
        let kind = if i == 0 { "delivery" } else { "duplicate" };
        send(&st, &merchant, &n, target(i), attempt, kind, false)
    });
    let results = futures_util::future::join_all(sends).await;
    let accepted = results.iter().any(|r| r.accepted);
    for r in &results {
        let _ = st.db.record_attempt(&r.record).await;
    }
    let (status, next) = if accepted {
        ("delivered", 0)
    } else if attempt as usize > RETRY_SCHEDULE_SECS.len() {
        ("failed", 0)
    } else {
        (
            "pending",
            wall_ms() + scaled_ms(RETRY_SCHEDULE_SECS[attempt as usize - 1], st.time_scale),
        )
    };
    if let Err(e) = st
        .db
        .update_notification(&n.id, status, attempt, next)
        .await
    {
        tracing::warn!(error = %e, "could not update a notification");
    }
    st.wake.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_totals_24h4m_and_scales() {
        let total: u64 = RETRY_SCHEDULE_SECS.iter().sum();
        assert_eq!(total, 24 * 3600 + 4 * 60);
        assert_eq!(scaled_ms(15, 0.01), 150);
        assert_eq!(scaled_ms(15, 1.0), 15_000);
    }
}
