//! Abuse limits on the public side:
//!
//! - **rate limits** on order creation and pay params, per client IP and per
//!   payer session (a keyed token bucket each: `N` requests per minute,
//!   bursts of up to `N`), answered `429` with `Retry-After` and the usual
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
//! only when that peer is one of `trusted_proxies` (then the right-most
//! address that is not itself a trusted proxy is the client).
//! The peer address comes from axum's `ConnectInfo<SocketAddr>`
//! (`serve` uses `into_make_service_with_connect_info`); an embedding
//! application that serves the router without it gets no per-IP limit
//! (the per-session limit still applies).

use super::session::{self, CookieSigner, Purpose, SessionData, SESSION_COOKIE};
use crate::apiv3::Clock;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sha2::Digest;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Default largest request body on the public routes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// Buckets kept per limiter before idle ones are dropped.
const MAX_BUCKETS: usize = 100_000;

/// An IP network (`10.0.0.0/8`, `::1`, `192.168.1.7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is inside the network (IPv4-mapped IPv6 addresses count
    /// as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr = canonical(
            addr.parse::<IpAddr>()
                .map_err(|_| format!("{s:?} is not an IP address or CIDR network"))?,
        );
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0–{max}"))?,
        };
        Ok(Self { addr, prefix })
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
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

/// A keyed token bucket: each key holds up to `capacity` tokens and gains
/// `capacity` per minute; a request takes one.
#[derive(Debug)]
pub struct RateLimiter {
    capacity: f64,
    per_sec: f64,
    buckets: Mutex<HashMap<[u8; 16], (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_minute` requests per minute per key (bursts up to the same).
    pub fn per_minute(per_minute: u32) -> Self {
        Self {
            capacity: f64::from(per_minute.max(1)),
            per_sec: f64::from(per_minute.max(1)) / 60.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key` at `now`, or says how long until one is
    /// available.
    pub fn check_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        // Keys are hashed: the table never holds cookie values or openids.
        let digest = sha2::Sha256::digest(key.as_bytes());
        let mut k = [0u8; 16];
        k.copy_from_slice(&digest[..16]);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS {
            // Drop buckets that have refilled completely: they are
            // indistinguishable from new ones.
            let full_after = self.capacity / self.per_sec;
            buckets.retain(|_, (_, t)| now.duration_since(*t).as_secs_f64() < full_after);
        }
        let (tokens, last) = buckets.entry(k).or_insert((self.capacity, now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * self.per_sec).min(self.capacity);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.per_sec))
        }
    }
}

/// The client's IP: the peer, or — when the peer is a trusted proxy — the
/// right-most `X-Forwarded-For` entry that is not a trusted proxy.
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = canonical(peer?);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().parse::<IpAddr>().map(canonical))
        .collect::<Result<_, _>>()
        .unwrap_or_default();
    Some(
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !is_trusted(*ip))
            .unwrap_or(peer),
    )
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
    let now = Instant::now();
    let mut wait: Option<Duration> = None;
    if let Some(by_ip) = &limits.by_ip {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if let Some(ip) = client_ip(peer, req.headers(), &limits.settings.trusted_proxies) {
            if let Err(w) = by_ip.check_at(&format!("ip:{ip}"), now) {
                wait = Some(w);
            }
        }
    }
    if wait.is_none() {
        if let Some(by_session) = &limits.by_session {
            let payer = session::read_cookie(req.headers(), SESSION_COOKIE).and_then(|v| {
                limits
                    .cookies
                    .open::<SessionData>(Purpose::Session, v, limits.clock.now())
            });
            // No valid session: the handler answers 401 anyway.
            if let Some(s) = payer {
                if let Err(w) = by_session.check_at(&format!("payer:{}", s.openid), now) {
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

    #[test]
    fn networks_parse_and_match() {
        let n: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        let one: IpNet = "::1".parse().unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(!one.contains("::2".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("example.com".parse::<IpNet>().is_err());
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
    fn token_bucket_limits_and_refills() {
        let l = RateLimiter::per_minute(3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check_at("a", t0).is_ok());
        }
        let wait = l.check_at("a", t0).unwrap_err();
        assert!(wait > Duration::from_secs(19) && wait <= Duration::from_secs(20));
        assert!(l.check_at("b", t0).is_ok(), "keys are independent");
        assert!(l.check_at("a", t0 + Duration::from_secs(20)).is_ok());
        assert!(l.check_at("a", t0 + Duration::from_secs(20)).is_err());
    }
}
