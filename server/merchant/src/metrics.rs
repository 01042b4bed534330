//! Process-global Prometheus metrics, rendered in the text exposition
//! format version 0.0.4 (`text/plain; version=0.0.4`).
//!
//! One registry per process ([`metrics`]); the typed methods of [`Metrics`]
//! are the only way in, so every family and label is listed here. Label
//! values are bounded: callers pass fixed strings (endpoint names, outcome
//! names — never URLs, ids or amounts); a value that is not a short
//! `[a-z0-9_.-]` word becomes `other`, and a family holds at most
//! [`MAX_SERIES_PER_FAMILY`] label sets (further ones are counted as
//! `other`).
//!
//! | name | type | labels |
//! |---|---|---|
//! | `wxpay_orders_created_total` | counter | |
//! | `wxpay_payments_confirmed_total` | counter | `source` (`notify`, `query`) |
//! | `wxpay_notifications_total` | counter | `outcome` |
//! | `wxpay_api_requests_total` | counter | `endpoint`, `outcome` |
//! | `wxpay_api_request_duration_seconds` | histogram | `endpoint`, `outcome` |
//! | `wxpay_reconcile_runs_total` | counter | `result` |
//! | `wxpay_bill_results_total` | counter | `result` |
//! | `wxpay_webhook_deliveries_total` | counter | `outcome` |
//! | `wxpay_webhook_pending` | gauge | |
//! | `wxpay_webhook_oldest_pending_age_seconds` | gauge | |
//! | `wxpay_build_info` | gauge | `version` |

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// At most this many label sets per family; more are folded into `other`.
pub const MAX_SERIES_PER_FAMILY: usize = 64;

/// Upper bounds (seconds) of the API latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Longest accepted label value.
const MAX_LABEL_LEN: usize = 48;

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static GLOBAL: OnceLock<Metrics> = OnceLock::new();
    GLOBAL.get_or_init(Metrics::new)
}

/// A label value as exported: itself when it is a short word of
/// `[A-Za-z0-9_.-]`, else `other`.
fn bounded(value: &str) -> &str {
    let ok = !value.is_empty()
        && value.len() <= MAX_LABEL_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        value
    } else {
        "other"
    }
}

/// Escapes a label value (`\`, `"` and newline).
fn escape_label(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A float as Prometheus writes it (`+Inf`, `-Inf`, `NaN`).
fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// `{a="x",b="y"}` (empty when there are no labels), with an optional
/// extra label (the histogram's `le`).
fn label_set(names: &[&str], values: &[String], extra: Option<(&str, &str)>) -> String {
    let mut out = String::new();
    let pairs = names
        .iter()
        .copied()
        .zip(values.iter().map(String::as_str))
        .chain(extra);
    for (i, (n, v)) in pairs.enumerate() {
        out.push(if i == 0 { '{' } else { ',' });
        out.push_str(n);
        out.push_str("=\"");
        escape_label(v, &mut out);
        out.push('"');
    }
    if !out.is_empty() {
        out.push('}');
    }
    out
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Picks the key for `values` in `map`: itself, or all-`other` when the
/// family is full.
fn series_key<V>(map: &BTreeMap<Vec<String>, V>, values: &[&str]) -> Vec<String> {
    let key: Vec<String> = values.iter().map(|v| bounded(v).to_string()).collect();
    if map.contains_key(&key) || map.len() < MAX_SERIES_PER_FAMILY {
        key
    } else {
        vec!["other".to_string(); values.len()]
    }
}

/// A family of series with fixed label names: the per-label-set state `T`
/// is a `u64` for counters and a [`HistogramSeries`] for histograms.
#[derive(Debug)]
struct Family<T> {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    series: Mutex<BTreeMap<Vec<String>, T>>,
}

impl<T: Default + Clone> Family<T> {
    fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        Self {
            name,
            help,
            labels,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    /// Updates the series of `values` (created on first use, bounded by
    /// [`series_key`]).
    fn update(&self, values: &[&str], f: impl FnOnce(&mut T)) {
        debug_assert_eq!(values.len(), self.labels.len());
        let mut map = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let key = series_key(&map, values);
        f(map.entry(key).or_default());
    }

    /// A copy of the series of `values`, if it exists.
    fn snapshot(&self, values: &[&str]) -> Option<T> {
        let key: Vec<String> = values.iter().map(|v| bounded(v).to_string()).collect();
        let map = self.series.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&key).cloned()
    }

    /// Writes the family header, then `line` for each series in label order.
    fn render_with(
        &self,
        out: &mut String,
        kind: &str,
        mut line: impl FnMut(&mut String, &[String], &T),
    ) {
        header(out, self.name, self.help, kind);
        let map = self.series.lock().unwrap_or_else(|e| e.into_inner());
        for (values, s) in map.iter() {
            line(out, values, s);
        }
    }
}

/// A counter family.
type CounterVec = Family<u64>;

impl CounterVec {
    fn add(&self, values: &[&str], n: u64) {
        self.update(values, |c| *c += n);
    }

    fn get(&self, values: &[&str]) -> u64 {
        self.snapshot(values).unwrap_or(0)
    }

    fn render(&self, out: &mut String) {
        let (name, labels) = (self.name, self.labels);
        self.render_with(out, "counter", |out, values, n| {
            let _ = writeln!(out, "{name}{} {n}", label_set(labels, values, None));
        });
    }
}

/// One histogram series: per-bucket (non-cumulative) counts, sum, count.
#[derive(Debug, Clone, Default)]
struct HistogramSeries {
    buckets: [u64; LATENCY_BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// A histogram family with [`LATENCY_BUCKETS`].
type HistogramVec = Family<HistogramSeries>;

impl HistogramVec {
    fn observe(&self, values: &[&str], v: f64) {
        self.update(values, |s| {
            if let Some(i) = LATENCY_BUCKETS.iter().position(|b| v <= *b) {
                s.buckets[i] += 1;
            }
            s.sum += v;
            s.count += 1;
        });
    }

    fn count(&self, values: &[&str]) -> u64 {
        self.snapshot(values).map(|s| s.count).unwrap_or(0)
    }

    fn render(&self, out: &mut String) {
        let (name, labels) = (self.name, self.labels);
        self.render_with(out, "histogram", |out, values, s| {
            let mut cumulative = 0;
            for (bound, n) in LATENCY_BUCKETS.iter().zip(s.buckets.iter()) {
                cumulative += n;
                let le = format_float(*bound);
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {cumulative}",
                    label_set(labels, values, Some(("le", &le)))
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{} {}",
                label_set(labels, values, Some(("le", "+Inf"))),
                s.count
            );
            let set = label_set(labels, values, None);
            let _ = writeln!(out, "{name}_sum{set} {}", format_float(s.sum));
            let _ = writeln!(out, "{name}_count{set} {}", s.count);
        });
    }
}

/// An unlabelled gauge holding a float.
#[derive(Debug)]
struct Gauge {
    name: &'static str,
    help: &'static str,
    bits: AtomicU64,
}

impl Gauge {
    fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            bits: AtomicU64::new(0f64.to_bits()),
        }
    }

    fn set(&self, v: f64) {
        self.bits.store(v.to_bits(), Ordering::Relaxed);
    }

    fn get(&self) -> f64 {
        f64::from_bits(self.bits.load(Ordering::Relaxed))
    }

    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "gauge");
        let _ = writeln!(out, "{} {}", self.name, format_float(self.get()));
    }
}

/// Notification outcomes exported at zero from the start (all of
/// [`crate::notify::NotifyOutcome`]'s names).
const NOTIFICATION_OUTCOMES: [&str; 16] = [
    "applied",
    "duplicate",
    "missing_headers",
    "bad_signature",
    "signature_probe",
    "stale",
    "unknown_serial",
    "too_large",
    "malformed",
    "undecryptable",
    "mismatch",
    "unknown_order",
    "replayed",
    "rejected",
    "timeout",
    "error",
];

/// The registry: every metric the server exports. Use the process-wide
/// one ([`metrics`]); [`Metrics::new`] is for tests of the format.
#[derive(Debug)]
pub struct Metrics {
    orders_created: AtomicU64,
    payments_confirmed: CounterVec,
    notifications: CounterVec,
    api_requests: CounterVec,
    api_duration: HistogramVec,
    reconcile_runs: CounterVec,
    bill_results: CounterVec,
    webhook_deliveries: CounterVec,
    webhook_pending: Gauge,
    webhook_oldest_age: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty registry (the notification outcomes and payment sources
    /// start at zero so that rates exist before the first event).
    pub fn new() -> Self {
        let m = Self {
            orders_created: AtomicU64::new(0),
            payments_confirmed: CounterVec::new(
                "wxpay_payments_confirmed_total",
                "Combined orders that became SUCCESS, by how the payment was learnt (notify, query).",
                &["source"],
            ),
            notifications: CounterVec::new(
                "wxpay_notifications_total",
                "Payment notifications received, by outcome.",
                &["outcome"],
            ),
            api_requests: CounterVec::new(
                "wxpay_api_requests_total",
                "WeChat Pay API calls (after retries), by endpoint and outcome.",
                &["endpoint", "outcome"],
            ),
            api_duration: HistogramVec::new(
                "wxpay_api_request_duration_seconds",
                "WeChat Pay API call latency in seconds (including retries), by endpoint and outcome.",
                &["endpoint", "outcome"],
            ),
            reconcile_runs: CounterVec::new(
                "wxpay_reconcile_runs_total",
                "Reconciliation sweeps, by result.",
                &["result"],
            ),
            bill_results: CounterVec::new(
                "wxpay_bill_results_total",
                "Trade-bill downloads and reconciliations, by result.",
                &["result"],
            ),
            webhook_deliveries: CounterVec::new(
                "wxpay_webhook_deliveries_total",
                "Outgoing webhook delivery attempts, by outcome.",
                &["outcome"],
            ),
            webhook_pending: Gauge::new(
                "wxpay_webhook_pending",
                "Outgoing webhook events not yet delivered.",
            ),
            webhook_oldest_age: Gauge::new(
                "wxpay_webhook_oldest_pending_age_seconds",
                "Age in seconds of the oldest undelivered webhook event (0 when none).",
            ),
        };
        for o in NOTIFICATION_OUTCOMES {
            m.notifications.add(&[o], 0);
        }
        for s in ["notify", "query"] {
            m.payments_confirmed.add(&[s], 0);
        }
        m
    }

    /// A combined order was stored (prepay succeeded).
    pub fn order_created(&self) {
        self.orders_created.fetch_add(1, Ordering::Relaxed);
    }

    /// Orders created so far.
    pub fn orders_created(&self) -> u64 {
        self.orders_created.load(Ordering::Relaxed)
    }

    /// A combined order became SUCCESS; `source` is `notify` or `query`
    /// (query-on-read, the reconciliation worker).
    pub fn payment_confirmed(&self, source: &str) {
        self.payments_confirmed.add(&[source], 1);
    }

    /// Payments confirmed so far through `source`.
    pub fn payments_confirmed(&self, source: &str) -> u64 {
        self.payments_confirmed.get(&[source])
    }

    /// A notification ended with `outcome` ([`crate::notify::NotifyOutcome::as_str`]).
    pub fn notification(&self, outcome: &str) {
        self.notifications.add(&[outcome], 1);
    }

    /// Notifications so far with `outcome`.
    pub fn notifications(&self, outcome: &str) -> u64 {
        self.notifications.get(&[outcome])
    }

    /// A WeChat Pay API call completed (after its retries): `endpoint` is
    /// a fixed name such as `combine_prepay`, `outcome` e.g. `ok`,
    /// `business_error`, `transport_error`.
    pub fn api_call(&self, endpoint: &str, outcome: &str, latency: Duration) {
        self.api_requests.add(&[endpoint, outcome], 1);
        self.api_duration
            .observe(&[endpoint, outcome], latency.as_secs_f64());
    }

    /// API calls so far to `endpoint` with `outcome`.
    pub fn api_calls(&self, endpoint: &str, outcome: &str) -> u64 {
        self.api_requests.get(&[endpoint, outcome])
    }

    /// Latency observations so far for `endpoint` with `outcome`.
    pub fn api_latency_count(&self, endpoint: &str, outcome: &str) -> u64 {
        self.api_duration.count(&[endpoint, outcome])
    }

    /// A reconciliation sweep finished with `result` (e.g. `ok`, `error`).
    pub fn reconcile_run(&self, result: &str) {
        self.reconcile_runs.add(&[result], 1);
    }

    /// Reconciliation sweeps so far with `result`.
    pub fn reconcile_runs(&self, result: &str) -> u64 {
        self.reconcile_runs.get(&[result])
    }

    /// A trade bill was processed with `result` (e.g. `matched`,
    /// `discrepancies`, `hash_mismatch`, `no_statement`, `error`).
    pub fn bill_result(&self, result: &str) {
        self.bill_results.add(&[result], 1);
    }

    /// Bill results so far with `result`.
    pub fn bill_results(&self, result: &str) -> u64 {
        self.bill_results.get(&[result])
    }

    /// An outgoing webhook delivery attempt ended with `outcome`.
    pub fn webhook_delivery(&self, outcome: &str) {
        self.webhook_deliveries.add(&[outcome], 1);
    }

    /// Webhook deliveries so far with `outcome`.
    pub fn webhook_deliveries(&self, outcome: &str) -> u64 {
        self.webhook_deliveries.get(&[outcome])
    }

    /// How many webhook events are waiting.
    pub fn set_webhook_pending(&self, n: u64) {
        self.webhook_pending.set(n as f64);
    }

    /// Age in seconds of the oldest waiting webhook event (0 when none).
    pub fn set_webhook_oldest_pending_age(&self, secs: f64) {
        self.webhook_oldest_age.set(secs);
    }

    /// Everything, in the Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        header(
            &mut out,
            "wxpay_build_info",
            "The running version (always 1).",
            "gauge",
        );
        let _ = writeln!(
            out,
            "wxpay_build_info{} 1",
            label_set(&["version"], &[env!("CARGO_PKG_VERSION").to_string()], None)
        );
        header(
            &mut out,
            "wxpay_orders_created_total",
            "Combined orders created (prepay succeeded and stored).",
            "counter",
        );
        let _ = writeln!(out, "wxpay_orders_created_total {}", self.orders_created());
        self.payments_confirmed.render(&mut out);
        self.notifications.render(&mut out);
        self.api_requests.render(&mut out);
        self.api_duration.render(&mut out);
        self.reconcile_runs.render(&mut out);
        self.bill_results.render(&mut out);
        self.webhook_deliveries.render(&mut out);
        self.webhook_pending.render(&mut out);
        self.webhook_oldest_age.render(&mut out);
        out
    }
}

/// `GET /metrics` answering [`Metrics::render`] of the process-wide
/// registry. Mounted on the separate metrics listener (`metrics_listen`),
/// or on the public one only when `metrics_on_public_listener` is set.
pub fn router<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    axum::Router::new().route("/metrics", axum::routing::get(scrape))
}

async fn scrape() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
        metrics().render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses the exposition text into `(series, value)` and checks each
    /// line's shape on the way.
    fn samples(text: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                let name = it.next().unwrap();
                let kind = it.next().unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(typed.insert(name.to_string()), "TYPE twice: {name}");
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            assert!(!line.starts_with('#'), "{line}");
            let (series, value) = line.rsplit_once(' ').expect(line);
            let name = series.split('{').next().unwrap();
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
                "{line}"
            );
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
                .unwrap_or(name);
            assert!(typed.contains(family), "sample before its TYPE: {line}");
            assert!(
                value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
                "{line}"
            );
            out.push((series.to_string(), value.to_string()));
        }
        out
    }

    fn value(text: &str, series: &str) -> Option<String> {
        samples(text)
            .into_iter()
            .find(|(s, _)| s == series)
            .map(|(_, v)| v)
    }

    #[test]
    fn empty_registry_is_valid_and_lists_every_family() {
        let text = Metrics::new().render();
        samples(&text);
        for family in [
            "wxpay_orders_created_total",
            "wxpay_payments_confirmed_total",
            "wxpay_notifications_total",
            "wxpay_api_requests_total",
            "wxpay_api_request_duration_seconds",
            "wxpay_reconcile_runs_total",
            "wxpay_bill_results_total",
            "wxpay_webhook_deliveries_total",
            "wxpay_webhook_pending",
            "wxpay_webhook_oldest_pending_age_seconds",
            "wxpay_build_info",
        ] {
            assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
        }
        assert_eq!(
            value(
                &text,
                "wxpay_notifications_total{outcome=\"bad_signature\"}"
            )
            .as_deref(),
            Some("0")
        );
        assert_eq!(
            value(&text, "wxpay_orders_created_total").as_deref(),
            Some("0")
        );
    }

    #[test]
    fn counters_and_gauges_render_their_values() {
        let m = Metrics::new();
        m.order_created();
        m.order_created();
        m.payment_confirmed("notify");
        m.notification("applied");
        m.notification("applied");
        m.notification("stale");
        m.reconcile_run("ok");
        m.bill_result("matched");
        m.webhook_delivery("delivered");
        m.set_webhook_pending(7);
        m.set_webhook_oldest_pending_age(12.5);
        let text = m.render();
        let v = |s: &str| value(&text, s);
        assert_eq!(v("wxpay_orders_created_total").as_deref(), Some("2"));
        assert_eq!(
            v("wxpay_payments_confirmed_total{source=\"notify\"}").as_deref(),
            Some("1")
        );
        assert_eq!(
            v("wxpay_payments_confirmed_total{source=\"query\"}").as_deref(),
            Some("0")
        );
        assert_eq!(
            v("wxpay_notifications_total{outcome=\"applied\"}").as_deref(),
            Some("2")
        );
        assert_eq!(
            v("wxpay_notifications_total{outcome=\"stale\"}").as_deref(),
            Some("1")
        );
        assert_eq!(
            v("wxpay_reconcile_runs_total{result=\"ok\"}").as_deref(),
            Some("1")
        );
        assert_eq!(
            v("wxpay_bill_results_total{result=\"matched\"}").as_deref(),
            Some("1")
        );
        assert_eq!(
            v("wxpay_webhook_deliveries_total{outcome=\"delivered\"}").as_deref(),
            Some("1")
        );
        assert_eq!(v("wxpay_webhook_pending").as_deref(), Some("7"));
        assert_eq!(
            v("wxpay_webhook_oldest_pending_age_seconds").as_deref(),
            Some("12.5")
        );
        assert_eq!(m.notifications("applied"), 2);
        assert_eq!(m.payments_confirmed("notify"), 1);
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_sum_and_count() {
        let m = Metrics::new();
        m.api_call("combine_prepay", "ok", Duration::from_millis(3));
        m.api_call("combine_prepay", "ok", Duration::from_millis(30));
        m.api_call("combine_prepay", "ok", Duration::from_secs(60));
        m.api_call(
            "combine_query",
            "transport_error",
            Duration::from_millis(200),
        );
        let text = m.render();
        let v = |le: &str| {
            value(
                &text,
                &format!(
                    "wxpay_api_request_duration_seconds_bucket{{endpoint=\"combine_prepay\",outcome=\"ok\",le=\"{le}\"}}"
                ),
            )
        };
        assert_eq!(v("0.005").as_deref(), Some("1"));
        assert_eq!(v("0.025").as_deref(), Some("1"));
        assert_eq!(v("0.05").as_deref(), Some("2"));
        assert_eq!(v("30").as_deref(), Some("2"));
        assert_eq!(v("+Inf").as_deref(), Some("3"));
        assert_eq!(
            value(
                &text,
                "wxpay_api_request_duration_seconds_count{endpoint=\"combine_prepay\",outcome=\"ok\"}"
            )
            .as_deref(),
            Some("3")
        );
        let sum: f64 = value(
            &text,
            "wxpay_api_request_duration_seconds_sum{endpoint=\"combine_prepay\",outcome=\"ok\"}",
        )
        .unwrap()
        .parse()
        .unwrap();
        assert!((sum - 60.033).abs() < 1e-9, "{sum}");
        assert_eq!(
            value(
                &text,
                "wxpay_api_requests_total{endpoint=\"combine_query\",outcome=\"transport_error\"}"
            )
            .as_deref(),
            Some("1")
        );
        assert_eq!(m.api_calls("combine_prepay", "ok"), 3);
        assert_eq!(m.api_latency_count("combine_query", "transport_error"), 1);
        // Every bucket line is non-decreasing.
        let buckets: Vec<u64> = samples(&text)
            .into_iter()
            .filter(|(s, _)| s.contains("combine_prepay") && s.contains("_bucket"))
            .map(|(_, v)| v.parse().unwrap())
            .collect();
        assert_eq!(buckets.len(), LATENCY_BUCKETS.len() + 1);
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    }

    #[test]
    fn label_values_are_bounded() {
        let m = Metrics::new();
        m.notification("https://evil.example/?x=\"1\"\n");
        m.notification(&"a".repeat(200));
        assert_eq!(m.notifications("other"), 2);
        for i in 0..(MAX_SERIES_PER_FAMILY * 2) {
            m.bill_result(&format!("r{i}"));
        }
        let text = m.render();
        let series = samples(&text)
            .into_iter()
            .filter(|(s, _)| s.starts_with("wxpay_bill_results_total"))
            .count();
        assert_eq!(series, MAX_SERIES_PER_FAMILY + 1);
        assert_eq!(m.bill_results("other"), MAX_SERIES_PER_FAMILY as u64);
        assert!(!text.contains("evil"));
    }

    #[test]
    fn label_escaping_and_float_format() {
        let mut s = String::new();
        escape_label("a\\b\"c\nd", &mut s);
        assert_eq!(s, "a\\\\b\\\"c\\nd");
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_float(f64::NAN), "NaN");
        assert_eq!(format_float(0.25), "0.25");
        assert_eq!(format_float(1.0), "1");
        assert_eq!(label_set(&[], &[], None), "");
        assert_eq!(
            label_set(&["a"], &["x".into()], Some(("le", "+Inf"))),
            "{a=\"x\",le=\"+Inf\"}"
        );
    }

    #[test]
    fn global_registry_is_shared() {
        let before = metrics().reconcile_runs("unit_test_marker");
        metrics().reconcile_run("unit_test_marker");
        assert_eq!(metrics().reconcile_runs("unit_test_marker"), before + 1);
        assert!(std::ptr::eq(metrics(), metrics()));
    }
}
