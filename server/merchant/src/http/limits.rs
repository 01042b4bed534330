//! Abuse limits on the public side:
//!
//! - **rate limits** on order creation, pay params, the payer's close (each
//!   reaches WeChat Pay) and pay-link claims, per client IP (IPv6 per /64)
//!   and per payer session (a keyed `governor` limiter each: `N` requests
//!   per minute, bursts of up to `N`, keys in a bounded table of
//!   [`DEFAULT_MAX_KEYS`]), answered `429` with `Retry-After` and the usual
//!   JSON error body (`RATE_LIMITED`);
//! - a **body size limit** on every route of [`super::app`] (`413`
//!   `BODY_TOO_LARGE`; the notification route keeps its own limit);
//! - **CORS** closed by default: without `cors_allowed_origins` no
//!   cross-origin request is granted (no `Access-Control-Allow-*` headers);
//!   listed origins get credentialed GET/POST;
//! - a **cross-site write guard**: a POST to `/api/…` whose `Origin` is
//!   neither the server's own public origin nor an allowed one is refused
//!   (`403 CROSS_ORIGIN_REFUSED`) before any handler runs — together with
//!   `SameSite=Lax` cookies and the `application/json` requirement, a form on
//!   another site cannot create an order with the payer's cookie.
//!
//! The client IP is the socket's peer address; `X-Forwarded-For` is read
//! only when that peer is one of `trusted_proxies`, entry by entry from the
//! right: the first address that is not itself a trusted proxy is the
//! client ([`client_ip`]).
//! The peer address comes from axum's `ConnectInfo<SocketAddr>`
//! (`serve` uses `into_make_service_with_connect_info`); an embedding
//! application that serves the router without it gets no per-IP limit
//! (the per-session limit still applies).

use super::session::{self, CookieSigner, Purpose, SessionData};
use crate::apiv3::Clock;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use governor::clock::{Clock as LimiterClock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::Quota;
use serde_json::json;
use sha2::Digest;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// An IP network (`10.0.0.0/8`); `trusted_proxies` entries are read with
/// [`parse_ip_net`], which also takes plain addresses.
pub use ipnet::IpNet;

/// Default largest request body on the public routes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// Reads a `trusted_proxies` entry: a CIDR network (`10.0.0.0/8`) or a plain
/// address (`192.168.1.7`, `::1`), which is one host (/32 or /128).
/// Surrounding whitespace is ignored. An IPv4-mapped IPv6 address is taken
/// as the IPv4 address (its prefix length then counts IPv4 bits), the form
/// [`client_ip`] compares addresses in. Host bits after the prefix are
/// allowed and ignored when matching. The error names the entry.
pub fn parse_ip_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr = addr
        .parse::<IpAddr>()
        .map_err(|_| format!("{s:?} is not an IP address or CIDR network"))?
        .to_canonical();
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => Some(max),
        Some(p) => p.parse::<u8>().ok(),
    };
    // `IpNet::new` refuses a prefix longer than the address.
    prefix
        .and_then(|p| IpNet::new(addr, p).ok())
        .ok_or_else(|| format!("{s:?}: prefix length must be 0–{max}"))
}

/// The abuse-limit settings (configuration keys of the same names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitSettings {
    /// Order creations + pay-params requests per minute per client IP
    /// (`rate_limit_ip_per_minute`; 0: no limit).
    pub ip_per_minute: u32,
    /// The same per payer session (`rate_limit_session_per_minute`; 0: no
    /// limit).
    pub session_per_minute: u32,
    /// Peers whose `X-Forwarded-For` is believed (`trusted_proxies`).
    pub trusted_proxies: Vec<IpNet>,
    /// Origins granted CORS (`cors_allowed_origins`), e.g.
    /// `https://m.shop.example.com`. Empty: none.
    pub cors_allowed_origins: Vec<String>,
    /// Largest request body (`max_body_bytes`).
    pub max_body_bytes: usize,
}

impl Default for LimitSettings {
    /// No rate limits (the library default; `serve` configures them), no
    /// proxies, no CORS, 64 KiB bodies.
    fn default() -> Self {
        Self {
            ip_per_minute: 0,
            session_per_minute: 0,
            trusted_proxies: Vec::new(),
            cors_allowed_origins: Vec::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// A limiter key: the first 16 bytes of the SHA-256 of the caller's key, so
/// the table never holds cookie values or openids.
type Key = [u8; 16];

/// Default most keys one limiter holds (about 3 MB; see
/// docs/operations.md for the measurement).
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// Shards of a limiter's table; each has its own lock.
const SHARDS: usize = 64;

/// Entries looked at to choose one to evict from a full shard.
const EVICTION_SAMPLE: usize = 8;

/// Governor's keyed state, in a bounded table: [`SHARDS`] hash maps behind
/// their own mutex, each holding at most `max_keys / SHARDS` keys. A new
/// key in a full shard evicts, of a few entries sampled from that shard,
/// the one whose bucket is fullest (its theoretical arrival time is the
/// earliest, so it is the least limited; a refilled one is identical to a
/// new key). Every operation is O(1): no sweep, no global lock, and memory
/// stays bounded however many distinct clients come.
#[derive(Debug, Clone)]
struct BoundedStore {
    shards: Arc<[std::sync::Mutex<std::collections::HashMap<Key, u64>>]>,
    per_shard: usize,
}

impl BoundedStore {
    fn new(max_keys: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Default::default()).collect(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, key: &Key) -> std::sync::MutexGuard<'_, std::collections::HashMap<Key, u64>> {
        // Keys are hash digests: their first byte spreads them evenly.
        self.shards[usize::from(key[0]) % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

impl governor::state::StateStore for BoundedStore {
    type Key = Key;

    fn measure_and_replace<T, F, E>(&self, key: &Key, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut map = self.shard(key);
        let prev = map.get(key).copied();
        let (t, next) = f(prev.map(Nanos::new))?;
        if prev.is_none() && map.len() >= self.per_shard {
            let victim = map
                .iter()
                .take(EVICTION_SAMPLE)
                .min_by_key(|(_, tat)| **tat)
                .map(|(k, _)| *k);
            if let Some(v) = victim {
                map.remove(&v);
            }
        }
        map.insert(*key, next.as_u64());
        Ok(t)
    }
}

/// A keyed rate limit: each key may make `N` requests at once and gains one
/// more every `60/N` s, up to `N` — governor's GCRA, which behaves as a
/// token bucket of `N` tokens refilled continuously at `N` per minute, a
/// new key starting full. The keys live in a bounded table
/// ([`DEFAULT_MAX_KEYS`]).
///
/// The clock is governor's monotonic clock; tests use
/// `governor::clock::FakeRelativeClock` with [`Self::per_minute_with_clock`].
pub struct RateLimiter<C: LimiterClock = DefaultClock> {
    inner: governor::RateLimiter<Key, BoundedStore, C, NoOpMiddleware<C::Instant>>,
    store: BoundedStore,
}

impl RateLimiter {
    /// `per_minute` requests per minute per key (bursts up to the same; 0
    /// counts as 1).
    pub fn per_minute(per_minute: u32) -> Self {
        Self::per_minute_with_clock(per_minute, DefaultClock::default())
    }
}

impl<C: LimiterClock> RateLimiter<C> {
    /// [`RateLimiter::per_minute`] reading time from `clock`.
    pub fn per_minute_with_clock(per_minute: u32, clock: C) -> Self {
        Self::bounded(per_minute, DEFAULT_MAX_KEYS, clock)
    }

    /// [`RateLimiter::per_minute_with_clock`] holding at most about
    /// `max_keys` keys.
    pub fn bounded(per_minute: u32, max_keys: usize, clock: C) -> Self {
        let quota = Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN));
        let store = BoundedStore::new(max_keys);
        Self {
            inner: governor::RateLimiter::new(quota, store.clone(), clock),
            store,
        }
    }

    /// Takes a request for `key` now, or says how long until one is allowed.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let digest = sha2::Sha256::digest(key.as_bytes());
        let mut k: Key = [0; 16];
        k.copy_from_slice(&digest[..16]);
        let verdict = self.inner.check_key(&k);
        let now = self.inner.clock().now();
        verdict.map_err(|refused| refused.wait_time_from(now))
    }

    /// Keys currently held.
    pub fn keys(&self) -> usize {
        self.store.len()
    }
}

impl<C: LimiterClock> std::fmt::Debug for RateLimiter<C> {
    // Not the keys: a table of hashes says nothing useful and may be large.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("per_shard", &self.store.per_shard)
            .finish_non_exhaustive()
    }
}

/// The client's IP: the peer, or — when the peer is a trusted proxy — the
/// `X-Forwarded-For` entry found by walking the chain from the right past
/// the trusted proxies. Each entry is read on its own (`1.2.3.4`,
/// `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:443`); an entry that is
/// not an address (`unknown`, garbage) ends the walk there — what is left
/// of it was written by a hop nobody vouches for — and the last trusted hop
/// is taken as the client. One bad entry never discards the entries to its
/// right.
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(&ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    // Several headers count as one list, in order.
    let values: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().unwrap_or(""))
        .collect();
    let mut last_trusted = peer;
    for entry in values.iter().rev().flat_map(|v| v.rsplit(',')) {
        let entry = entry.trim();
        if entry.is_empty() {
            continue; // `a,,b`: a formatting slip, not a hop
        }
        match parse_forwarded_ip(entry) {
            Some(ip) if is_trusted(ip) => last_trusted = ip,
            Some(ip) => return Some(ip),
            None => return Some(last_trusted),
        }
    }
    Some(last_trusted)
}

/// One `X-Forwarded-For` entry as an address: plain IPv4 or IPv6, IPv4
/// with a port, bracketed IPv6 with or without a port. `None` for
/// `unknown` and anything else.
pub fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim().trim_matches('"');
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        let port_ok = after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|p| p.parse::<u16>().is_ok());
        return port_ok
            .then(|| addr.parse::<std::net::Ipv6Addr>().ok())
            .flatten()
            .map(|ip| IpAddr::V6(ip).to_canonical());
    }
    let (addr, port) = entry.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    addr.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// The rate-limit key of a client address: the address for IPv4, its /64
/// for IPv6 (one subscriber usually holds a whole /64, so per-address keys
/// would give one client 2^64 buckets).
pub fn ip_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => format!("ip:{v4}"),
        IpAddr::V6(v6) => {
            let net = ipnet::Ipv6Net::new(v6, 64)
                .map(|n| n.trunc())
                .unwrap_or_else(|_| ipnet::Ipv6Net::from(v6));
            format!("ip:{net}")
        }
    }
}

/// The limiters and what they need, shared by the middleware.
#[derive(Debug, Clone)]
pub struct Limits {
    settings: Arc<LimitSettings>,
    by_ip: Option<Arc<RateLimiter>>,
    by_session: Option<Arc<RateLimiter>>,
    cookies: Arc<CookieSigner>,
    clock: Arc<dyn Clock>,
    /// The server's own origin (`public_base_url`), always allowed to POST.
    own_origin: Option<String>,
}

impl Limits {
    /// Limits with `settings`; sessions are recognised with `cookies`.
    pub fn new(
        settings: LimitSettings,
        cookies: Arc<CookieSigner>,
        clock: Arc<dyn Clock>,
        own_origin: Option<String>,
    ) -> Self {
        let limiter = |n: u32| (n > 0).then(|| Arc::new(RateLimiter::per_minute(n)));
        Self {
            by_ip: limiter(settings.ip_per_minute),
            by_session: limiter(settings.session_per_minute),
            settings: Arc::new(settings),
            cookies,
            clock,
            own_origin,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &LimitSettings {
        &self.settings
    }

    /// The CORS layer: only the listed origins, credentialed GET/POST with
    /// `Content-Type`. With none listed, no layer at all: no response ever
    /// carries an `Access-Control-Allow-*` header.
    pub fn cors_layer(&self) -> Option<CorsLayer> {
        let origins: Vec<HeaderValue> = self
            .settings
            .cors_allowed_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        if origins.is_empty() {
            return None;
        }
        let layer = CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::CONTENT_TYPE])
            .allow_credentials(true)
            .max_age(Duration::from_secs(600));
        Some(layer)
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        self.own_origin.as_deref() == Some(origin)
            || self
                .settings
                .cors_allowed_origins
                .iter()
                .any(|o| o == origin)
    }
}

/// A JSON error in the API's usual shape.
fn refuse(status: StatusCode, code: &str, message: String) -> Response {
    (status, Json(json!({"code": code, "message": message}))).into_response()
}

/// Rate-limits a route per client IP and per payer session.
pub async fn rate_limit(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    let mut wait: Option<Duration> = None;
    if let Some(by_ip) = &limits.by_ip {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if let Some(ip) = client_ip(peer, req.headers(), &limits.settings.trusted_proxies) {
            if let Err(w) = by_ip.check(&ip_key(ip)) {
                wait = Some(w);
            }
        }
    }
    if wait.is_none() {
        if let Some(by_session) = &limits.by_session {
            let payer = session::read_cookie(req.headers(), limits.cookies.session_cookie_name())
                .and_then(|v| {
                    limits
                        .cookies
                        .open::<SessionData>(Purpose::Session, v, limits.clock.now())
                });
            // No valid session: the handler answers 401 anyway.
            if let Some(s) = payer {
                if let Err(w) = by_session.check(&format!("payer:{}", s.openid)) {
                    wait = Some(w);
                }
            }
        }
    }
    match wait {
        None => next.run(req).await,
        Some(w) => {
            let secs = w.as_secs() + u64::from(w.subsec_nanos() > 0);
            tracing::warn!(path = %req.uri().path(), retry_after_secs = secs, "rate limited");
            let mut resp = refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                format!("too many requests; try again in {secs} s"),
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            resp
        }
    }
}

/// Refuses bodies whose `Content-Length` exceeds `max_body_bytes` with the
/// JSON error body ([`super::app`] also wraps every body in
/// `RequestBodyLimitLayer`, which stops longer chunked bodies while read).
pub async fn body_limit(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    let max = limits.settings.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BODY_TOO_LARGE",
            format!("request body too large (limit {max} bytes)"),
        );
    }
    next.run(req).await
}

/// Refuses a cross-site write: a non-GET/HEAD/OPTIONS request whose
/// `Origin` (or, without one, `Referer`) names another site than the
/// server's own or an allowed origin.
pub async fn same_origin_writes(
    State(limits): State<Limits>,
    req: Request,
    next: Next,
) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            req.headers()
                .get(header::REFERER)
                .and_then(|v| v.to_str().ok())
                .and_then(|r| url::Url::parse(r).ok())
                .map(|u| u.origin().ascii_serialization())
        });
    match origin {
        Some(o) if !limits.origin_allowed(&o) => {
            tracing::warn!(path = %req.uri().path(), "cross-site write refused");
            refuse(
                StatusCode::FORBIDDEN,
                "CROSS_ORIGIN_REFUSED",
                "requests from another site cannot change orders".into(),
            )
        }
        _ => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn networks_parse_and_match() {
        let net = |s: &str| parse_ip_net(s).unwrap();
        let n = net("10.0.0.0/8");
        assert!(n.contains(&"10.1.2.3".parse::<IpAddr>().unwrap()));
        assert!(!n.contains(&"11.0.0.1".parse::<IpAddr>().unwrap()));
        let one = net("::1");
        assert_eq!(one, "::1/128".parse().unwrap());
        assert!(one.contains(&"::1".parse::<IpAddr>().unwrap()));
        assert!(!one.contains(&"::2".parse::<IpAddr>().unwrap()));
        assert_eq!(net(" 192.168.1.7 "), "192.168.1.7/32".parse().unwrap());
        let all = net("0.0.0.0/0");
        assert!(all.contains(&"8.8.8.8".parse::<IpAddr>().unwrap()));
        // Host bits are kept but do not matter.
        assert!(net("10.9.9.9/8").contains(&"10.1.2.3".parse::<IpAddr>().unwrap()));
        // IPv4-mapped IPv6 is IPv4, prefix included.
        assert_eq!(net("::ffff:10.0.0.0/8"), net("10.0.0.0/8"));
        assert_eq!(net("::ffff:10.0.0.1"), net("10.0.0.1/32"));
        assert!(parse_ip_net("::ffff:10.0.0.0/104").is_err());
        assert!(parse_ip_net("::/128").is_ok());
        assert!(parse_ip_net("::/129").is_err());
        let err = parse_ip_net("10.0.0.0/33").unwrap_err();
        assert!(
            err.contains("\"10.0.0.0/33\"") && err.contains("0–32"),
            "{err}"
        );
        assert!(parse_ip_net("10.0.0.0/x").is_err());
        assert!(parse_ip_net("10.0.0.0/").is_err());
        let err = parse_ip_net("example.com").unwrap_err();
        assert!(err.contains("\"example.com\""), "{err}");
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "1.2.3.4, 5.6.7.8, 10.0.0.2".parse().unwrap(),
        );
        let peer = Some("10.0.0.1".parse().unwrap());
        assert_eq!(
            client_ip(peer, &h, &trusted),
            Some("5.6.7.8".parse().unwrap())
        );
        let outsider = Some("9.9.9.9".parse().unwrap());
        assert_eq!(client_ip(outsider, &h, &trusted), outsider);
        assert_eq!(client_ip(peer, &h, &[]), peer);
        h.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(client_ip(peer, &h, &trusted), peer);
        assert_eq!(client_ip(None, &h, &trusted), None);
    }

    #[test]
    fn mapped_addresses_count_as_ipv4() {
        let trusted = vec![parse_ip_net("10.0.0.0/8").unwrap()];
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "::ffff:1.2.3.4".parse().unwrap());
        let mapped_proxy = Some("::ffff:10.0.0.1".parse().unwrap());
        assert_eq!(
            client_ip(mapped_proxy, &h, &trusted),
            Some("1.2.3.4".parse().unwrap())
        );
        let mapped_client = Some("::ffff:9.9.9.9".parse().unwrap());
        assert_eq!(
            client_ip(mapped_client, &h, &trusted),
            Some("9.9.9.9".parse().unwrap())
        );
    }

    #[test]
    fn token_bucket_limits_and_refills() {
        let clock = FakeRelativeClock::default();
        let l = RateLimiter::per_minute_with_clock(3, clock.clone());
        for _ in 0..3 {
            assert!(l.check("a").is_ok());
        }
        let wait = l.check("a").unwrap_err();
        assert!(wait > Duration::from_secs(19) && wait <= Duration::from_secs(20));
        assert!(l.check("b").is_ok(), "keys are independent");
        clock.advance(Duration::from_secs(5));
        let wait = l.check("a").unwrap_err();
        assert!(wait > Duration::from_secs(14) && wait <= Duration::from_secs(15));
        clock.advance(Duration::from_secs(15));
        assert!(l.check("a").is_ok());
        assert!(l.check("a").is_err());
        // A full minute refills the whole burst, no more.
        clock.advance(Duration::from_secs(120));
        for _ in 0..3 {
            assert!(l.check("a").is_ok());
        }
        assert!(l.check("a").is_err());
        // 0 per minute means 1.
        let one = RateLimiter::per_minute_with_clock(0, clock.clone());
        assert!(one.check("a").is_ok());
        assert!(one.check("a").unwrap_err() > Duration::from_secs(59));
    }

    #[test]
    fn forwarded_entries_are_read_one_by_one() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(parse_forwarded_ip("1.2.3.4"), ip("1.2.3.4"));
        assert_eq!(parse_forwarded_ip(" 1.2.3.4:5678 "), ip("1.2.3.4"));
        assert_eq!(parse_forwarded_ip("2001:db8::1"), ip("2001:db8::1"));
        assert_eq!(parse_forwarded_ip("[2001:db8::1]"), ip("2001:db8::1"));
        assert_eq!(parse_forwarded_ip("[2001:db8::1]:443"), ip("2001:db8::1"));
        assert_eq!(
            parse_forwarded_ip("\"[2001:db8::1]:443\""),
            ip("2001:db8::1")
        );
        assert_eq!(parse_forwarded_ip("[::ffff:1.2.3.4]"), ip("1.2.3.4"));
        for bad in [
            "unknown",
            "",
            "_hidden",
            "1.2.3.4:99999",
            "1.2.3.4:x",
            "[2001:db8::1",
            "[2001:db8::1]x",
            "[1.2.3.4]",
            "example.com:80",
        ] {
            assert_eq!(parse_forwarded_ip(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_chain_is_walked_from_the_right_within_the_trusted_proxies() {
        let trusted: Vec<IpNet> = vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8:ffff::/48".parse().unwrap(),
        ];
        let peer = Some("10.0.0.1".parse().unwrap());
        let xff = |v: &[&str]| {
            let mut h = HeaderMap::new();
            for v in v {
                h.append("x-forwarded-for", v.parse().unwrap());
            }
            client_ip(peer, &h, &trusted).map(|ip| ip.to_string())
        };
        let some = |s: &str| Some(s.to_string());
        // A bad entry left of the client changes nothing.
        assert_eq!(xff(&["garbage, 5.6.7.8, 10.0.0.2"]), some("5.6.7.8"));
        assert_eq!(xff(&["unknown, 5.6.7.8:4711"]), some("5.6.7.8"));
        assert_eq!(xff(&["5.6.7.8, [2001:db8:ffff::9]:80"]), some("5.6.7.8"));
        assert_eq!(
            xff(&["[2001:db8:1::7]:443, 10.0.0.3"]),
            some("2001:db8:1::7")
        );
        // Several headers are one list; empty entries are skipped.
        assert_eq!(xff(&["1.1.1.1", "5.6.7.8,, 10.0.0.2"]), some("5.6.7.8"));
        assert_eq!(xff(&["5.6.7.8", "10.0.0.2"]), some("5.6.7.8"));
        // A trusted proxy could not tell: the last trusted hop is the client.
        assert_eq!(xff(&["5.6.7.8, unknown, 10.0.0.2"]), some("10.0.0.2"));
        assert_eq!(xff(&["5.6.7.8, unknown"]), some("10.0.0.1"));
        // Only proxies: the left-most of them.
        assert_eq!(xff(&["10.0.0.7, 10.0.0.2"]), some("10.0.0.7"));
        assert_eq!(xff(&[]), some("10.0.0.1"));
    }

    #[test]
    fn ipv6_clients_are_keyed_per_64() {
        let key = |s: &str| ip_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2::1"), "ip:2001:db8:1:2::/64");
        assert_eq!(
            key("2001:db8:1:2:ffff:ffff:ffff:ffff"),
            key("2001:db8:1:2::1")
        );
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
        assert_eq!(key("1.2.3.4"), "ip:1.2.3.4");
        assert_ne!(key("1.2.3.4"), key("1.2.3.5"));
        assert_eq!(key("::ffff:1.2.3.4"), "ip:1.2.3.4");
    }

    #[test]
    fn the_key_table_is_bounded_and_keeps_limited_keys() {
        let clock = FakeRelativeClock::default();
        let max = 6_400;
        let l = RateLimiter::bounded(3, max, clock.clone());
        for _ in 0..3 {
            assert!(l.check("hot").is_ok());
        }
        assert!(l.check("hot").is_err());
        let n = 200_000;
        let t0 = std::time::Instant::now();
        for i in 0..n {
            assert!(
                l.check(&format!("once:{i}")).is_ok(),
                "a new key starts full"
            );
            clock.advance(Duration::from_micros(1));
        }
        let per_check = t0.elapsed() / n;
        assert!(l.keys() <= max + SHARDS, "{} keys", l.keys());
        // Evictions pick the fullest bucket of a sample: the limited key,
        // whose bucket is empty, survives a flood of one-off keys.
        assert!(l.check("hot").is_err(), "a limited key keeps its state");
        println!(
            "figure: {n} distinct keys into a table of {max}: {} held, {per_check:?} per check (debug build)",
            l.keys()
        );
    }
}
