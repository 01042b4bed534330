//! The webhook keys: `webhook_url` (off when unset), `webhook_secret_file`,
//! `webhook_timeout_ms`, `webhook_initial_backoff_secs`,
//! `webhook_max_backoff_secs`.

use super::WebhookSettings;
use crate::settings::{is_loopback, Bounded, FieldKind, FieldTable, Validator};
use std::path::Path;
use std::time::Duration;
use url::Url;

/// The keys of this subsystem.
pub const FIELDS: FieldTable = &[
    ("webhook_url", FieldKind::Str),
    ("webhook_secret_file", FieldKind::Str),
    ("webhook_timeout_ms", FieldKind::Int),
    ("webhook_initial_backoff_secs", FieldKind::Int),
    ("webhook_max_backoff_secs", FieldKind::Int),
];

/// Shortest accepted signing secret.
pub const MIN_SECRET_LEN: usize = 16;

const TIMEOUT_MS: Bounded = Bounded::new("webhook_timeout_ms", 10_000, 100, 120_000);
const INITIAL_BACKOFF_SECS: Bounded = Bounded::new("webhook_initial_backoff_secs", 5, 1, 3600);
const MAX_BACKOFF_SECS: Bounded = Bounded::new("webhook_max_backoff_secs", 3600, 1, 7 * 86400);

/// The raw values of this subsystem's keys, as written.
#[derive(Debug, Clone, Copy, Default)]
pub struct WebhookRaw<'a> {
    /// `webhook_url`.
    pub webhook_url: Option<&'a str>,
    /// `webhook_secret_file`.
    pub webhook_secret_file: Option<&'a Path>,
    /// `webhook_timeout_ms`.
    pub webhook_timeout_ms: Option<u64>,
    /// `webhook_initial_backoff_secs`.
    pub webhook_initial_backoff_secs: Option<u64>,
    /// `webhook_max_backoff_secs`.
    pub webhook_max_backoff_secs: Option<u64>,
}

/// Validates the keys: `None` when no `webhook_url` is set (nothing is
/// sent) or after recording a problem.
pub fn validate(
    raw: &WebhookRaw<'_>,
    demo: bool,
    v: &mut Validator<'_>,
) -> Option<WebhookSettings> {
    let Some(u) = raw.webhook_url.filter(|s| !s.is_empty()) else {
        if raw
            .webhook_secret_file
            .is_some_and(|p| !p.as_os_str().is_empty())
        {
            v.warn(
                "webhook_secret_file is set but webhook_url is not: no webhooks are sent".into(),
            );
        }
        return None;
    };
    let url = match Url::parse(u) {
        Ok(url) if matches!(url.scheme(), "https" | "http") && url.host().is_some() => {
            if url.scheme() == "http" && !demo && !is_loopback(&url) {
                v.warn(format!(
                    "webhook_url {}://{}… is plain http: events are signed but readable on the way",
                    url.scheme(),
                    url.host_str().unwrap_or_default()
                ));
            }
            Some(url)
        }
        Ok(_) => v.invalid("webhook_url", "must be an http(s) URL".into()),
        Err(e) => v.invalid("webhook_url", format!("not a URL: {e}")),
    };
    let secret = v
        .required_path(
            raw.webhook_secret_file,
            "webhook_secret_file",
            "a file holding the webhook signing secret (≥ 16 characters), e.g. `head -c 32 /dev/urandom | base64 > webhook.key`",
        )
        .and_then(|p| {
            v.secret_text("webhook_secret_file", &p, |t| {
                if t.len() < MIN_SECRET_LEN {
                    Err(format!(
                        "the secret must be at least {MIN_SECRET_LEN} characters"
                    ))
                } else {
                    Ok(())
                }
            })
        });
    let timeout_ms = v.bounded(raw.webhook_timeout_ms, TIMEOUT_MS);
    let initial = v.bounded(raw.webhook_initial_backoff_secs, INITIAL_BACKOFF_SECS);
    let max = v.bounded(raw.webhook_max_backoff_secs, MAX_BACKOFF_SECS);
    let mut w = WebhookSettings::new(url?, secret?);
    w.timeout = Duration::from_millis(timeout_ms);
    w.initial_backoff_secs = initial;
    w.max_backoff_secs = max.max(initial);
    Some(w)
}
