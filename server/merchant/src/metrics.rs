//! Process-global Prometheus metrics, kept in a `prometheus-client`
//! registry and rendered in the Prometheus text exposition format version
//! 0.0.4 (`text/plain; version=0.0.4`, [`CONTENT_TYPE`]).
//!
//! One registry per process ([`metrics`]); the typed methods of [`Metrics`]
//! are the only way in, so every family and label is listed here. Label
//! values are bounded: callers pass fixed strings (endpoint names, outcome
//! names — never URLs, ids or amounts); a value that is not a short
//! `[A-Za-z0-9_.-]` word becomes `other`, and a family holds at most
//! [`MAX_SERIES_PER_FAMILY`] label sets (further ones are counted as
//! `other`). Every family is listed (`# HELP`/`# TYPE`) from the start,
//! also before its first series exists.
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
//! | `wxpay_http_connections_open` | gauge | `listener` (`public`, `internal`) |
//! | `wxpay_http_connections_dropped_total` | counter | `reason` (`header_timeout`, `idle_timeout`) |
//!
//! Counters are registered without their `_total` suffix: prometheus-client
//! appends it to the family and sample names itself.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::atomic::AtomicU64;
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use prometheus_client::encoding::{prometheus_text, EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::render`]'s output: the Prometheus text
/// format 0.0.4, which is what `prometheus_text::encode` writes (not
/// OpenMetrics: no `# EOF`, counter `# TYPE` lines keep `_total`).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

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

/// A label set built from caller-supplied values: every value passed
/// through [`bounded`], plus the all-`other` set that absorbs label sets
/// beyond [`MAX_SERIES_PER_FAMILY`].
trait CallerLabels: EncodeLabelSet + Clone + Hash + Eq + std::fmt::Debug {
    fn other() -> Self;
}

/// `source` of `wxpay_payments_confirmed_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

/// `outcome` of the notification and webhook families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// `result` of the reconciliation and bill families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

/// `listener` of `wxpay_http_connections_open`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
}

/// `reason` of `wxpay_http_connections_dropped_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

impl CallerLabels for ListenerLabels {
    fn other() -> Self {
        Self {
            listener: "other".into(),
        }
    }
}

impl CallerLabels for ReasonLabels {
    fn other() -> Self {
        Self {
            reason: "other".into(),
        }
    }
}

/// `endpoint`, `outcome` of the two API families (in this order on the
/// wire; the histogram's `le` follows).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    endpoint: String,
    outcome: String,
}

/// `version` of `wxpay_build_info` (a constant, not caller-supplied).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

impl SourceLabels {
    fn new(source: &str) -> Self {
        Self {
            source: bounded(source).to_owned(),
        }
    }
}

impl CallerLabels for SourceLabels {
    fn other() -> Self {
        Self::new("other")
    }
}

impl OutcomeLabels {
    fn new(outcome: &str) -> Self {
        Self {
            outcome: bounded(outcome).to_owned(),
        }
    }
}

impl CallerLabels for OutcomeLabels {
    fn other() -> Self {
        Self::new("other")
    }
}

impl ResultLabels {
    fn new(result: &str) -> Self {
        Self {
            result: bounded(result).to_owned(),
        }
    }
}

impl CallerLabels for ResultLabels {
    fn other() -> Self {
        Self::new("other")
    }
}

impl ApiLabels {
    fn new(endpoint: &str, outcome: &str) -> Self {
        Self {
            endpoint: bounded(endpoint).to_owned(),
            outcome: bounded(outcome).to_owned(),
        }
    }
}

impl CallerLabels for ApiLabels {
    fn other() -> Self {
        Self::new("other", "other")
    }
}

/// The label sets admitted into a family, at most
/// [`MAX_SERIES_PER_FAMILY`] of them (plus the all-`other` set).
///
/// Tracked here because prometheus-client has no bounded family:
/// `Family::get_or_create` always inserts, and `Family::len`/`contains`
/// exist only behind its `test-util` feature, which carries no stability
/// guarantee. Checking and admitting under one lock also keeps concurrent
/// first uses from overshooting the cap.
#[derive(Debug)]
struct SeriesCap<S> {
    admitted: RwLock<HashSet<S>>,
}

impl<S: CallerLabels> SeriesCap<S> {
    fn new() -> Self {
        Self {
            admitted: RwLock::new(HashSet::new()),
        }
    }

    /// The label set to record `labels` under: itself when already
    /// admitted or while there is room, else the all-`other` set.
    fn admit(&self, labels: S) -> S {
        let known = self
            .admitted
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&labels);
        if known {
            return labels;
        }
        let mut admitted = self.admitted.write().unwrap_or_else(|e| e.into_inner());
        if admitted.contains(&labels) || admitted.len() < MAX_SERIES_PER_FAMILY {
            admitted.insert(labels.clone());
            labels
        } else {
            S::other()
        }
    }
}

/// A labelled counter family with its [`SeriesCap`].
#[derive(Debug)]
struct CounterVec<S> {
    family: Family<S, Counter>,
    cap: SeriesCap<S>,
}

impl<S: CallerLabels> CounterVec<S> {
    /// A new family, registered as `name` (without `_total`) in `registry`.
    fn register(registry: &mut Registry, name: &str, help: &str) -> Self
    where
        S: Send + Sync + 'static,
    {
        let family = Family::<S, Counter>::default();
        registry.register(name, help, Listed(family.clone()));
        Self {
            family,
            cap: SeriesCap::new(),
        }
    }

    fn add(&self, labels: S, n: u64) {
        let labels = self.cap.admit(labels);
        self.family.get_or_create(&labels).inc_by(n);
    }

    fn get(&self, labels: &S) -> u64 {
        self.family.get(labels).map(|c| c.get()).unwrap_or(0)
    }
}

/// A registered metric that is always listed. prometheus-client leaves a
/// family without series out of the output entirely (`is_empty`); this
/// exporter has always listed every family's `# HELP`/`# TYPE` from the
/// start, so keep that (the default `is_empty` is `false`).
#[derive(Debug)]
struct Listed<M>(M);

impl<M: EncodeMetric> EncodeMetric for Listed<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

/// A latency histogram with [`LATENCY_BUCKETS`] (`+Inf` is implicit).
fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Notification outcomes exported at zero from the start (all of
/// [`crate::notify::NotifyOutcome`]'s names).
const NOTIFICATION_OUTCOMES: [&str; 17] = [
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
    "wrong_event",
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
    registry: Registry,
    orders_created: Counter,
    payments_confirmed: CounterVec<SourceLabels>,
    notifications: CounterVec<OutcomeLabels>,
    api_requests: Family<ApiLabels, Counter>,
    api_duration: Family<ApiLabels, Histogram>,
    /// One cap for both API families: they are always updated together,
    /// so they hold the same label sets.
    api_cap: SeriesCap<ApiLabels>,
    reconcile_runs: CounterVec<ResultLabels>,
    bill_results: CounterVec<ResultLabels>,
    webhook_deliveries: CounterVec<OutcomeLabels>,
    webhook_pending: Gauge,
    webhook_oldest_age: Gauge<f64, AtomicU64>,
    connections_open: Family<ListenerLabels, Gauge>,
    connections_cap: SeriesCap<ListenerLabels>,
    connections_dropped: CounterVec<ReasonLabels>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty registry (the notification outcomes and payment sources
    /// start at zero so that rates exist before the first event).
    ///
    /// Registration order is output order. Help texts carry no final full
    /// stop: prometheus-client adds one.
    pub fn new() -> Self {
        let mut registry = Registry::default();

        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        registry.register(
            "wxpay_build_info",
            "The running version (always 1)",
            build_info,
        );

        let orders_created = Counter::default();
        registry.register(
            "wxpay_orders_created",
            "Combined orders stored (page API, internal API, pay-link claims), counted before prepay: a refused prepay counts too",
            orders_created.clone(),
        );
        let payments_confirmed = CounterVec::register(
            &mut registry,
            "wxpay_payments_confirmed",
            "Combined orders that became SUCCESS, by how the payment was learnt (notify, query)",
        );
        let notifications = CounterVec::register(
            &mut registry,
            "wxpay_notifications",
            "Payment notifications received, by outcome",
        );

        let api_requests = Family::<ApiLabels, Counter>::default();
        registry.register(
            "wxpay_api_requests",
            "WeChat Pay API calls (after retries), by endpoint and outcome",
            Listed(api_requests.clone()),
        );
        let api_duration =
            Family::<ApiLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "wxpay_api_request_duration_seconds",
            "WeChat Pay API call latency in seconds (including retries), by endpoint and outcome",
            Listed(api_duration.clone()),
        );

        let reconcile_runs = CounterVec::register(
            &mut registry,
            "wxpay_reconcile_runs",
            "Reconciliation sweeps, by result",
        );
        let bill_results = CounterVec::register(
            &mut registry,
            "wxpay_bill_results",
            "Trade-bill downloads and reconciliations, by result",
        );
        let webhook_deliveries = CounterVec::register(
            &mut registry,
            "wxpay_webhook_deliveries",
            "Outgoing webhook delivery attempts, by outcome",
        );

        let webhook_pending = Gauge::default();
        registry.register(
            "wxpay_webhook_pending",
            "Outgoing webhook events not yet delivered",
            webhook_pending.clone(),
        );
        let webhook_oldest_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "wxpay_webhook_oldest_pending_age_seconds",
            "Age in seconds of the oldest undelivered webhook event (0 when none)",
            webhook_oldest_age.clone(),
        );

        let connections_open = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "wxpay_http_connections_open",
            "Open HTTP connections, by listener",
            Listed(connections_open.clone()),
        );
        let connections_dropped = CounterVec::register(
            &mut registry,
            "wxpay_http_connections_dropped",
            "HTTP connections dropped for a missed header-read or keep-alive deadline, by reason",
        );

        let m = Self {
            registry,
            connections_open,
            connections_cap: SeriesCap::new(),
            connections_dropped,
            orders_created,
            payments_confirmed,
            notifications,
            api_requests,
            api_duration,
            api_cap: SeriesCap::new(),
            reconcile_runs,
            bill_results,
            webhook_deliveries,
            webhook_pending,
            webhook_oldest_age,
        };
        for o in NOTIFICATION_OUTCOMES {
            m.notifications.add(OutcomeLabels::new(o), 0);
        }
        for s in ["notify", "query"] {
            m.payments_confirmed.add(SourceLabels::new(s), 0);
        }
        m
    }

    /// A combined order was stored (prepay succeeded).
    pub fn order_created(&self) {
        self.orders_created.inc();
    }

    /// Orders created so far.
    pub fn orders_created(&self) -> u64 {
        self.orders_created.get()
    }

    /// A combined order became SUCCESS; `source` is `notify` or `query`
    /// (query-on-read, the reconciliation worker).
    pub fn payment_confirmed(&self, source: &str) {
        self.payments_confirmed.add(SourceLabels::new(source), 1);
    }

    /// Payments confirmed so far through `source`.
    pub fn payments_confirmed(&self, source: &str) -> u64 {
        self.payments_confirmed.get(&SourceLabels::new(source))
    }

    /// A notification ended with `outcome` ([`crate::notify::NotifyOutcome::as_str`]).
    pub fn notification(&self, outcome: &str) {
        self.notifications.add(OutcomeLabels::new(outcome), 1);
    }

    /// Notifications so far with `outcome`.
    pub fn notifications(&self, outcome: &str) -> u64 {
        self.notifications.get(&OutcomeLabels::new(outcome))
    }

    /// A WeChat Pay API call completed (after its retries): `endpoint` is
    /// a fixed name such as `combine_prepay`, `outcome` e.g. `ok`,
    /// `business_error`, `transport_error`.
    pub fn api_call(&self, endpoint: &str, outcome: &str, latency: Duration) {
        let labels = self.api_cap.admit(ApiLabels::new(endpoint, outcome));
        self.api_requests.get_or_create(&labels).inc();
        self.api_duration
            .get_or_create(&labels)
            .observe(latency.as_secs_f64());
    }

    /// API calls so far to `endpoint` with `outcome`.
    pub fn api_calls(&self, endpoint: &str, outcome: &str) -> u64 {
        self.api_requests
            .get(&ApiLabels::new(endpoint, outcome))
            .map(|c| c.get())
            .unwrap_or(0)
    }

    /// Latency observations so far for `endpoint` with `outcome`.
    ///
    /// Read from the request counter: [`Metrics::api_call`] is the only
    /// writer of both API families and observes once per count under the
    /// same label set, while prometheus-client's `Histogram::count` exists
    /// only behind its unstable `test-util` feature.
    pub fn api_latency_count(&self, endpoint: &str, outcome: &str) -> u64 {
        self.api_calls(endpoint, outcome)
    }

    /// A reconciliation sweep finished with `result` (e.g. `ok`, `error`).
    pub fn reconcile_run(&self, result: &str) {
        self.reconcile_runs.add(ResultLabels::new(result), 1);
    }

    /// Reconciliation sweeps so far with `result`.
    pub fn reconcile_runs(&self, result: &str) -> u64 {
        self.reconcile_runs.get(&ResultLabels::new(result))
    }

    /// A trade bill was processed with `result` (e.g. `matched`,
    /// `discrepancies`, `hash_mismatch`, `no_statement`, `error`).
    pub fn bill_result(&self, result: &str) {
        self.bill_results.add(ResultLabels::new(result), 1);
    }

    /// Bill results so far with `result`.
    pub fn bill_results(&self, result: &str) -> u64 {
        self.bill_results.get(&ResultLabels::new(result))
    }

    /// An outgoing webhook delivery attempt ended with `outcome`.
    pub fn webhook_delivery(&self, outcome: &str) {
        self.webhook_deliveries.add(OutcomeLabels::new(outcome), 1);
    }

    /// Webhook deliveries so far with `outcome`.
    pub fn webhook_deliveries(&self, outcome: &str) -> u64 {
        self.webhook_deliveries.get(&OutcomeLabels::new(outcome))
    }

    /// How many webhook events are waiting.
    pub fn set_webhook_pending(&self, n: u64) {
        // The gauge is an i64; a backlog beyond i64::MAX cannot happen.
        self.webhook_pending
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Age in seconds of the oldest waiting webhook event (0 when none).
    pub fn set_webhook_oldest_pending_age(&self, secs: f64) {
        self.webhook_oldest_age.set(secs);
    }

    /// A connection was accepted on `listener`; it counts as open until
    /// the returned guard is dropped.
    pub fn connection_opened(&self, listener: &str) -> ConnectionGuard {
        let labels = self.connections_cap.admit(ListenerLabels {
            listener: bounded(listener).to_owned(),
        });
        let gauge = self.connections_open.get_or_create(&labels).clone();
        gauge.inc();
        ConnectionGuard(gauge)
    }

    /// Connections open now on `listener`.
    pub fn connections_open(&self, listener: &str) -> i64 {
        let labels = ListenerLabels {
            listener: bounded(listener).to_owned(),
        };
        self.connections_open
            .get(&labels)
            .map(|g| g.get())
            .unwrap_or(0)
    }

    /// A connection was dropped for a missed deadline (`reason`).
    pub fn connection_dropped(&self, reason: &str) {
        self.connections_dropped.add(
            ReasonLabels {
                reason: bounded(reason).to_owned(),
            },
            1,
        );
    }

    /// Connections dropped so far for `reason`.
    pub fn connections_dropped(&self, reason: &str) -> u64 {
        self.connections_dropped.get(&ReasonLabels {
            reason: bounded(reason).to_owned(),
        })
    }

    /// Everything, in the Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail; an error here would be a
        // broken metric encoder, which must not take the scrape down.
        if let Err(e) = prometheus_text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding the metrics failed");
        }
        out
    }
}

/// Counts one open connection until dropped
/// ([`Metrics::connection_opened`]).
#[derive(Debug)]
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
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

/// The metrics keys: `metrics_listen`, `metrics_on_public_listener`.
pub mod settings {
    use crate::settings::{FieldKind, FieldTable, Validator};
    use std::net::SocketAddr;

    /// The keys of this subsystem.
    pub const FIELDS: FieldTable = &[
        ("metrics_listen", FieldKind::Str),
        ("metrics_on_public_listener", FieldKind::Bool),
    ];

    /// Where `GET /metrics` is served.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct MetricsSettings {
        /// A separate listener for `GET /metrics` (None: none).
        pub listen: Option<SocketAddr>,
        /// `GET /metrics` on the public listener too.
        pub on_public_listener: bool,
    }

    /// Validates the keys.
    pub fn validate(
        listen: Option<&str>,
        on_public_listener: Option<bool>,
        v: &mut Validator<'_>,
    ) -> MetricsSettings {
        MetricsSettings {
            listen: v.socket_addr("metrics_listen", listen, "127.0.0.1:9464"),
            on_public_listener: on_public_listener.unwrap_or(false),
        }
    }
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
            "wxpay_http_connections_open",
            "wxpay_http_connections_dropped_total",
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
    fn open_connections_are_counted_until_dropped() {
        let m = Metrics::new();
        let a = m.connection_opened("public");
        let b = m.connection_opened("public");
        assert_eq!(m.connections_open("public"), 2);
        let text = m.render();
        assert_eq!(
            value(&text, "wxpay_http_connections_open{listener=\"public\"}").as_deref(),
            Some("2")
        );
        drop(a);
        drop(b);
        assert_eq!(m.connections_open("public"), 0);
        m.connection_dropped("header_timeout");
        assert_eq!(m.connections_dropped("header_timeout"), 1);
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
    fn families_have_their_types_and_label_sets() {
        let m = Metrics::new();
        m.api_call("combine_close", "ok", Duration::from_millis(1));
        let text = m.render();
        let types: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| {
                let (n, t) = l.split_once(' ').unwrap();
                (n.to_string(), t.to_string())
            })
            .collect();
        let expected = [
            ("wxpay_build_info", "gauge"),
            ("wxpay_orders_created_total", "counter"),
            ("wxpay_payments_confirmed_total", "counter"),
            ("wxpay_notifications_total", "counter"),
            ("wxpay_api_requests_total", "counter"),
            ("wxpay_api_request_duration_seconds", "histogram"),
            ("wxpay_reconcile_runs_total", "counter"),
            ("wxpay_bill_results_total", "counter"),
            ("wxpay_webhook_deliveries_total", "counter"),
            ("wxpay_webhook_pending", "gauge"),
            ("wxpay_webhook_oldest_pending_age_seconds", "gauge"),
            ("wxpay_http_connections_open", "gauge"),
            ("wxpay_http_connections_dropped_total", "counter"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        assert_eq!(types, expected);
        // Help texts end with exactly one full stop.
        assert!(
            text.contains("# HELP wxpay_reconcile_runs_total Reconciliation sweeps, by result.\n")
        );
        assert!(!text.contains(".."), "{text}");
        // The build info line, and the label names of each family.
        assert!(text.contains(&format!(
            "\nwxpay_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
        for series in [
            "wxpay_payments_confirmed_total{source=\"query\"}",
            "wxpay_notifications_total{outcome=\"timeout\"}",
            "wxpay_api_requests_total{endpoint=\"combine_close\",outcome=\"ok\"}",
            "wxpay_api_request_duration_seconds_count{endpoint=\"combine_close\",outcome=\"ok\"}",
            "wxpay_api_request_duration_seconds_bucket{endpoint=\"combine_close\",outcome=\"ok\",le=\"0.005\"}",
        ] {
            assert!(value(&text, series).is_some(), "{series}:\n{text}");
        }
        // The old hand-written exposition's content type, from the encoder
        // that now writes it: no OpenMetrics terminator.
        assert_eq!(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn series_cap_counts_overflow_as_other() {
        let m = Metrics::new();
        // 16 outcomes are pre-created; fill the family to the cap.
        for i in 0..(MAX_SERIES_PER_FAMILY - NOTIFICATION_OUTCOMES.len()) {
            m.notification(&format!("n{i}"));
        }
        m.notification("one_too_many");
        m.notification("applied");
        assert_eq!(m.notifications("one_too_many"), 0);
        assert_eq!(m.notifications("other"), 1);
        assert_eq!(m.notifications("applied"), 1);
        assert_eq!(m.notifications("n0"), 1);
        // The two API families share their admitted label sets.
        for i in 0..MAX_SERIES_PER_FAMILY {
            m.api_call(&format!("e{i}"), "ok", Duration::from_millis(1));
        }
        m.api_call("late", "ok", Duration::from_millis(1));
        m.api_call("e0", "ok", Duration::from_millis(1));
        assert_eq!(m.api_calls("late", "ok"), 0);
        assert_eq!(m.api_calls("other", "other"), 1);
        assert_eq!(m.api_calls("e0", "ok"), 2);
        let text = m.render();
        let count = |prefix: &str| {
            samples(&text)
                .into_iter()
                .filter(|(s, _)| s.starts_with(prefix))
                .count()
        };
        assert_eq!(
            count("wxpay_api_requests_total{"),
            MAX_SERIES_PER_FAMILY + 1
        );
        assert_eq!(
            count("wxpay_api_request_duration_seconds_count{"),
            MAX_SERIES_PER_FAMILY + 1
        );
        assert_eq!(
            value(
                &text,
                "wxpay_api_request_duration_seconds_count{endpoint=\"other\",outcome=\"other\"}"
            )
            .as_deref(),
            Some("1")
        );
        assert!(!text.contains("endpoint=\"late\""), "{text}");
    }

    #[test]
    fn bounded_keeps_short_words_only() {
        for ok in [
            "ok",
            "combine_prepay",
            "A-Z.0_9",
            &"a".repeat(MAX_LABEL_LEN),
        ] {
            assert_eq!(bounded(ok), ok);
        }
        for bad in [
            "",
            "a b",
            "x/y",
            "é",
            "a\"b",
            "a\nb",
            &"a".repeat(MAX_LABEL_LEN + 1),
        ] {
            assert_eq!(bounded(bad), "other", "{bad:?}");
        }
    }

    #[test]
    fn global_registry_is_shared() {
        let before = metrics().reconcile_runs("unit_test_marker");
        metrics().reconcile_run("unit_test_marker");
        assert_eq!(metrics().reconcile_runs("unit_test_marker"), before + 1);
        assert!(std::ptr::eq(metrics(), metrics()));
    }
}
