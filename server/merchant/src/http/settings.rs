//! The public HTTP surface's keys: the listener and the page (`listen`,
//! `public_base_url`, `pay_directory*`, `www_dir`, `wasm_pkg_dir`,
//! `simulator_base_url`), OAuth and payer sessions (`oauth_*`,
//! `app_secret_file`, `session_*`), the order policy (`order_expire_secs`,
//! `query_after_secs`, `close_min_age_secs`, `prepay_reuse_margin_secs`)
//! the abuse limits (`rate_limit_*`, `trusted_proxies`,
//! `cors_allowed_origins`, `max_body_bytes`) and the connection limits
//! (`header_read_timeout_secs`, `keep_alive_idle_secs`, `max_connections`).

use super::limits::{parse_ip_net, LimitSettings, DEFAULT_MAX_BODY_BYTES};
use super::listener::{
    ConnectionSettings, DEFAULT_HEADER_READ_TIMEOUT_SECS, DEFAULT_KEEP_ALIVE_IDLE_SECS,
    DEFAULT_MAX_CONNECTIONS,
};
use crate::settings::{Bounded, FieldKind, FieldTable, Validator};
use secrecy::{SecretSlice, SecretString};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

/// The 公众号 web-authorization page.
pub const DEFAULT_OAUTH_AUTHORIZE_URL: &str = "https://open.weixin.qq.com/connect/oauth2/authorize";
/// Where an OAuth `code` is exchanged for an openid.
pub const DEFAULT_OAUTH_API_BASE_URL: &str = "https://api.weixin.qq.com";
/// Shortest accepted session-cookie key, bytes.
pub const MIN_SESSION_SECRET_LEN: usize = 32;

/// The keys of this subsystem.
pub const FIELDS: FieldTable = &[
    ("listen", FieldKind::Str),
    ("public_base_url", FieldKind::Str),
    ("pay_directory", FieldKind::Str),
    ("pay_directory_registered", FieldKind::Str),
    ("www_dir", FieldKind::Str),
    ("wasm_pkg_dir", FieldKind::Str),
    ("simulator_base_url", FieldKind::Str),
    ("app_secret_file", FieldKind::Str),
    ("session_secret_file", FieldKind::Str),
    ("oauth_authorize_url", FieldKind::Str),
    ("oauth_api_base_url", FieldKind::Str),
    ("session_ttl_secs", FieldKind::Int),
    ("order_expire_secs", FieldKind::Int),
    ("query_after_secs", FieldKind::Int),
    ("close_min_age_secs", FieldKind::Int),
    ("prepay_reuse_margin_secs", FieldKind::Int),
    ("rate_limit_ip_per_minute", FieldKind::Int),
    ("rate_limit_session_per_minute", FieldKind::Int),
    ("trusted_proxies", FieldKind::Str),
    ("cors_allowed_origins", FieldKind::Str),
    ("max_body_bytes", FieldKind::Int),
    ("header_read_timeout_secs", FieldKind::Int),
    ("keep_alive_idle_secs", FieldKind::Int),
    ("max_connections", FieldKind::Int),
];

/// The raw values of this subsystem's keys, as written.
#[derive(Debug, Clone, Copy, Default)]
#[allow(missing_docs)] // each field is the key of the same name
pub struct ServerRaw<'a> {
    pub listen: Option<&'a str>,
    pub public_base_url: Option<&'a str>,
    pub pay_directory: Option<&'a str>,
    pub pay_directory_registered: Option<&'a str>,
    pub www_dir: Option<&'a Path>,
    pub wasm_pkg_dir: Option<&'a Path>,
    pub simulator_base_url: Option<&'a str>,
    pub app_secret_file: Option<&'a Path>,
    pub session_secret_file: Option<&'a Path>,
    pub oauth_authorize_url: Option<&'a str>,
    pub oauth_api_base_url: Option<&'a str>,
    pub session_ttl_secs: Option<u64>,
    pub order_expire_secs: Option<u64>,
    pub query_after_secs: Option<u64>,
    pub close_min_age_secs: Option<u64>,
    pub prepay_reuse_margin_secs: Option<u64>,
    pub rate_limit_ip_per_minute: Option<u64>,
    pub rate_limit_session_per_minute: Option<u64>,
    pub trusted_proxies: Option<&'a str>,
    pub cors_allowed_origins: Option<&'a str>,
    pub max_body_bytes: Option<u64>,
    pub header_read_timeout_secs: Option<u64>,
    pub keep_alive_idle_secs: Option<u64>,
    pub max_connections: Option<u64>,
}

/// OAuth (网页授权) settings.
#[derive(Debug, Clone)]
pub struct OAuthSettings {
    /// The authorize page (without query).
    pub authorize_url: Url,
    /// Base of `/sns/oauth2/access_token`.
    pub api_base_url: Url,
    /// Payer session lifetime.
    pub session_ttl_secs: i64,
    /// 公众号 AppSecret (for the code exchange).
    pub app_secret: SecretString,
}

/// Order policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderPolicy {
    /// `time_expire` = creation + this.
    pub expire_secs: i64,
    /// Query-on-read delay.
    pub query_after_secs: i64,
    /// Minimum order age before close.
    pub close_min_age_secs: i64,
    /// Life a stored prepay_id must have left to be reused.
    pub prepay_reuse_margin_secs: i64,
}

// WeChat Pay requires time_expire at least one minute ahead; prepay_id
// lives 2 hours, so longer expiries need fresh prepay calls (handled).
const ORDER_EXPIRE_SECS: Bounded = Bounded::new("order_expire_secs", 1800, 60, 7 * 86400);
const QUERY_AFTER_SECS: Bounded = Bounded::new("query_after_secs", 30, 1, 3600);
const CLOSE_MIN_AGE_SECS: Bounded = Bounded::new("close_min_age_secs", 300, 0, 86400);
const PREPAY_REUSE_MARGIN_SECS: Bounded = Bounded::new("prepay_reuse_margin_secs", 600, 0, 3600);

impl Default for OrderPolicy {
    fn default() -> Self {
        Self {
            expire_secs: ORDER_EXPIRE_SECS.default as i64,
            query_after_secs: QUERY_AFTER_SECS.default as i64,
            close_min_age_secs: CLOSE_MIN_AGE_SECS.default as i64,
            prepay_reuse_margin_secs: PREPAY_REUSE_MARGIN_SECS.default as i64,
        }
    }
}

/// The validated settings of the public HTTP surface.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Listen address.
    pub listen: SocketAddr,
    /// Public origin, e.g. `https://shop.example.com` (no trailing slash).
    pub public_base_url: String,
    /// Pay directory path, starting and ending with `/`.
    pub pay_directory: String,
    /// Registered 支付授权目录, when configured.
    pub pay_directory_registered: Option<String>,
    /// The H5 page directory.
    pub www_dir: PathBuf,
    /// The wasm package directory (served at `{pay_directory}pkg/`).
    pub wasm_pkg_dir: Option<PathBuf>,
    /// Demo: the simulator's base URL.
    pub simulator_base_url: Option<Url>,
    /// OAuth.
    pub oauth: OAuthSettings,
    /// Session cookie key (≥ [`MIN_SESSION_SECRET_LEN`] bytes).
    pub session_secret: SecretSlice<u8>,
    /// Order policy.
    pub orders: OrderPolicy,
    /// Abuse limits on the public routes.
    pub limits: LimitSettings,
    /// Timeouts and the connection cap of the listeners.
    pub connections: ConnectionSettings,
}

impl ServerSettings {
    /// The page URL the payer opens (`public_base_url` + `pay_directory`).
    pub fn page_url(&self) -> String {
        format!("{}{}", self.public_base_url, self.pay_directory)
    }

    /// The OAuth `redirect_uri`.
    pub fn oauth_redirect_uri(&self) -> String {
        format!("{}/oauth/callback", self.public_base_url)
    }
}

/// `pay_directory` as configured (default `/pay/`) when it is valid: other
/// subsystems' routes must stay out of it.
pub fn pay_directory<'a>(raw: &ServerRaw<'a>) -> Option<&'a str> {
    let dir = raw.pay_directory.unwrap_or("/pay/");
    check_pay_directory(dir).is_ok().then_some(dir)
}

/// Validates the keys (plain http only in `demo`, where some defaults
/// differ too).
pub fn validate(raw: &ServerRaw<'_>, demo: bool, v: &mut Validator<'_>) -> Option<ServerSettings> {
    let listen = match raw.listen.unwrap_or("127.0.0.1:8080").parse() {
        Ok(a) => Some(a),
        Err(_) => v.invalid(
            "listen",
            format!(
                "{:?} is not a socket address (e.g. 127.0.0.1:8080)",
                raw.listen.unwrap_or_default()
            ),
        ),
    };

    let public_base_url = v
        .required_str(
            raw.public_base_url,
            "public_base_url",
            "the origin payers open, e.g. https://shop.example.com",
        )
        .and_then(|s| v.origin("public_base_url", s, demo));

    let pay_directory = raw.pay_directory.unwrap_or("/pay/").to_string();
    let pay_directory = match check_pay_directory(&pay_directory) {
        Ok(()) => Some(pay_directory),
        Err(detail) => v.invalid("pay_directory", detail),
    };

    let pay_directory_registered = raw.pay_directory_registered.filter(|s| !s.is_empty());
    if let Some(reg) = pay_directory_registered {
        if let Err(e) = crate::paydir::parse_registered(reg) {
            v.invalid::<()>("pay_directory_registered", e.to_string());
        }
    }
    if let (Some(reg), Some(origin), Some(dir)) =
        (pay_directory_registered, &public_base_url, &pay_directory)
    {
        let page = format!("{origin}{dir}");
        if let Err(mismatch) = crate::paydir::check(reg, &page) {
            v.warn(format!(
                "the pay page {page} does not match the registered 支付授权目录 {reg}: {}",
                mismatch.explain()
            ));
        }
    }

    let www_dir = v.path(raw.www_dir.unwrap_or(Path::new("www")));
    if !www_dir.is_dir() {
        v.warn(format!(
            "www_dir {} is not a directory; the pay page will answer 404",
            www_dir.display()
        ));
    }
    let wasm_pkg_dir = raw
        .wasm_pkg_dir
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| v.path(p));

    let simulator_base_url = match raw.simulator_base_url.filter(|s| !s.is_empty()) {
        None => None,
        Some(_) if !demo => v.invalid(
            "simulator_base_url",
            "only allowed with demo = true (a production server never talks to the simulator)"
                .into(),
        ),
        Some(s) => v.base_url("simulator_base_url", s, true),
    };

    let oauth = validate_oauth(raw, demo, v);
    let session_secret = v
        .required_path(
            raw.session_secret_file,
            "session_secret_file",
            "a file holding ≥ 32 random bytes, e.g. `head -c 48 /dev/urandom | base64 > session.key`",
        )
        .and_then(|p| {
            v.secret_bytes("session_secret_file", &p, |bytes| {
                if bytes.len() < MIN_SESSION_SECRET_LEN {
                    Err(format!(
                        "the session secret must be at least {MIN_SESSION_SECRET_LEN} bytes, got {}",
                        bytes.len()
                    ))
                } else {
                    Ok(())
                }
            })
        });
    let orders = validate_orders(raw, demo, v);
    let limits = validate_limits(raw, demo, v);
    let connections = validate_connections(raw, &limits, v);

    Some(ServerSettings {
        listen: listen?,
        public_base_url: public_base_url?,
        pay_directory: pay_directory?,
        pay_directory_registered: pay_directory_registered.map(str::to_string),
        www_dir,
        wasm_pkg_dir,
        simulator_base_url,
        oauth: oauth?,
        session_secret: session_secret?,
        orders,
        limits,
        connections,
    })
}

const SESSION_TTL_SECS: Bounded = Bounded::new("session_ttl_secs", 7200, 60, 30 * 86400);

fn validate_oauth(raw: &ServerRaw<'_>, demo: bool, v: &mut Validator<'_>) -> Option<OAuthSettings> {
    let authorize_url = v.base_url(
        "oauth_authorize_url",
        raw.oauth_authorize_url
            .unwrap_or(DEFAULT_OAUTH_AUTHORIZE_URL),
        demo,
    );
    let api_base_url = v.base_url(
        "oauth_api_base_url",
        raw.oauth_api_base_url.unwrap_or(DEFAULT_OAUTH_API_BASE_URL),
        demo,
    );
    let session_ttl_secs = v.bounded(raw.session_ttl_secs, SESSION_TTL_SECS);
    let app_secret = v
        .required_path(
            raw.app_secret_file,
            "app_secret_file",
            "a file holding the 公众号 AppSecret",
        )
        .and_then(|p| {
            v.secret_text("app_secret_file", &p, |t| {
                if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
                    Err("expected the AppSecret (printable ASCII, no spaces)".into())
                } else {
                    Ok(())
                }
            })
        });
    Some(OAuthSettings {
        authorize_url: authorize_url?,
        api_base_url: api_base_url?,
        session_ttl_secs: session_ttl_secs as i64,
        app_secret: app_secret?,
    })
}

fn validate_orders(raw: &ServerRaw<'_>, demo: bool, v: &mut Validator<'_>) -> OrderPolicy {
    let expire_secs = v.bounded(raw.order_expire_secs, ORDER_EXPIRE_SECS);
    let query_after = if demo {
        QUERY_AFTER_SECS.default_to(5)
    } else {
        QUERY_AFTER_SECS
    };
    let query_after_secs = v.bounded(raw.query_after_secs, query_after);
    let close_min_age_secs = v.bounded(raw.close_min_age_secs, CLOSE_MIN_AGE_SECS);
    if close_min_age_secs < 300 && !demo {
        v.warn(format!(
            "close_min_age_secs = {close_min_age_secs}: the product document forbids closing an order within 5 minutes of creation"
        ));
    }
    let prepay_reuse_margin_secs =
        v.bounded(raw.prepay_reuse_margin_secs, PREPAY_REUSE_MARGIN_SECS);
    OrderPolicy {
        expire_secs: expire_secs as i64,
        query_after_secs: query_after_secs as i64,
        close_min_age_secs: close_min_age_secs as i64,
        prepay_reuse_margin_secs: prepay_reuse_margin_secs as i64,
    }
}

const RATE_LIMIT_IP: Bounded = Bounded::new("rate_limit_ip_per_minute", 120, 0, 1_000_000);
const RATE_LIMIT_SESSION: Bounded = Bounded::new("rate_limit_session_per_minute", 30, 0, 1_000_000);
const MAX_BODY_BYTES: Bounded = Bounded::new(
    "max_body_bytes",
    DEFAULT_MAX_BODY_BYTES as u64,
    1024,
    1 << 20,
);

fn validate_limits(raw: &ServerRaw<'_>, demo: bool, v: &mut Validator<'_>) -> LimitSettings {
    let list = |s: Option<&str>| -> Vec<String> {
        s.unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    // The demo is one tester on one machine: no rate limits unless asked.
    let (ip, session) = if demo {
        (
            RATE_LIMIT_IP.default_to(0),
            RATE_LIMIT_SESSION.default_to(0),
        )
    } else {
        (RATE_LIMIT_IP, RATE_LIMIT_SESSION)
    };
    let ip = v.bounded(raw.rate_limit_ip_per_minute, ip);
    let session = v.bounded(raw.rate_limit_session_per_minute, session);
    let mut trusted_proxies = Vec::new();
    for p in list(raw.trusted_proxies) {
        match parse_ip_net(&p) {
            Ok(n) => trusted_proxies.push(n),
            Err(e) => {
                v.invalid::<()>("trusted_proxies", e);
            }
        }
    }
    let mut cors_allowed_origins = Vec::new();
    for o in list(raw.cors_allowed_origins) {
        if let Some(o) = v.origin("cors_allowed_origins", &o, demo) {
            cors_allowed_origins.push(o);
        }
    }
    let max_body_bytes = v.bounded(raw.max_body_bytes, MAX_BODY_BYTES);
    LimitSettings {
        ip_per_minute: ip as u32,
        session_per_minute: session as u32,
        trusted_proxies,
        cors_allowed_origins,
        max_body_bytes: max_body_bytes as usize,
    }
}

const HEADER_READ_TIMEOUT_SECS: Bounded = Bounded::new(
    "header_read_timeout_secs",
    DEFAULT_HEADER_READ_TIMEOUT_SECS,
    1,
    60,
);
const KEEP_ALIVE_IDLE_SECS: Bounded =
    Bounded::new("keep_alive_idle_secs", DEFAULT_KEEP_ALIVE_IDLE_SECS, 1, 600);
const MAX_CONNECTIONS: Bounded =
    Bounded::new("max_connections", DEFAULT_MAX_CONNECTIONS, 1, 1_000_000);

fn validate_connections(
    raw: &ServerRaw<'_>,
    limits: &LimitSettings,
    v: &mut Validator<'_>,
) -> ConnectionSettings {
    ConnectionSettings {
        header_read_timeout: Duration::from_secs(
            v.bounded(raw.header_read_timeout_secs, HEADER_READ_TIMEOUT_SECS),
        ),
        keep_alive_idle: Duration::from_secs(
            v.bounded(raw.keep_alive_idle_secs, KEEP_ALIVE_IDLE_SECS),
        ),
        max_connections: v.bounded(raw.max_connections, MAX_CONNECTIONS) as usize,
        max_drain_bytes: limits.max_body_bytes,
    }
}

/// A pay directory path: `/`-delimited, starts and ends with `/`, plain
/// segments, not the root and not under the API or OAuth routes.
pub fn check_pay_directory(dir: &str) -> Result<(), String> {
    if !dir.starts_with('/') || !dir.ends_with('/') || dir == "/" {
        return Err(format!(
            "{dir:?} must start and end with / and not be the root, e.g. /pay/"
        ));
    }
    let ok_segment = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
    };
    if !dir[1..dir.len() - 1].split('/').all(ok_segment) {
        return Err(format!(
            "{dir:?} must consist of plain path segments ([A-Za-z0-9._~-])"
        ));
    }
    if dir.starts_with("/api/") || dir.starts_with("/oauth/") {
        return Err(format!("{dir:?} collides with the /api/ or /oauth/ routes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pay_directory_rules() {
        assert!(check_pay_directory("/pay/").is_ok());
        assert!(check_pay_directory("/shop/pay/").is_ok());
        for bad in ["/", "pay/", "/pay", "/a/../b/", "/api/", "/a b/", "//"] {
            assert!(check_pay_directory(bad).is_err(), "{bad}");
        }
    }
}
