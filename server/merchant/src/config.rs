//! Merchant-server configuration: one TOML file, `WXPAY_*` environment
//! overrides, secrets read from files. Everything is checked once, at start,
//! and every problem is reported with the key it concerns — a server that
//! starts is a server whose configuration made sense.
//!
//! Relative paths in the file are resolved against the file's directory.
//! `wxpay.example.toml` at the repository root documents every key.

use crate::apiv3::{ApiV3Key, Certificate, PrivateKey, PublicKey};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;
use zeroize::Zeroizing;

/// WeChat Pay's primary API host.
pub const DEFAULT_API_BASE_URL: &str = "https://api.mch.weixin.qq.com";
/// WeChat Pay's backup ("异地接入点") API host, used when the primary fails.
pub const DEFAULT_API_BACKUP_URL: &str = "https://api2.mch.weixin.qq.com";
/// The 公众号 web-authorization page.
pub const DEFAULT_OAUTH_AUTHORIZE_URL: &str = "https://open.weixin.qq.com/connect/oauth2/authorize";
/// Where an OAuth `code` is exchanged for an openid.
pub const DEFAULT_OAUTH_API_BASE_URL: &str = "https://api.weixin.qq.com";

/// The configuration file as written, every key optional so environment
/// overrides and defaults compose. Unknown keys are refused (a typo must not
/// silently fall back to a default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Socket address to listen on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Origin the payer's browser uses, e.g. `https://shop.example.com`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_base_url: Option<String>,
    /// URL path of the pay page directory, e.g. `/pay/`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pay_directory: Option<String>,
    /// The 支付授权目录 registered in the merchant platform (for a start-up check).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pay_directory_registered: Option<String>,
    /// Directory holding the H5 page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub www_dir: Option<PathBuf>,
    /// Directory of the built wasm package, served under `{pay_directory}pkg/`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wasm_pkg_dir: Option<PathBuf>,
    /// Demo mode: plain http allowed, the page is told it talks to the simulator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub demo: Option<bool>,
    /// Demo only: the simulator's base URL (for the page's bridge script).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simulator_base_url: Option<String>,
    /// `sqlite:PATH` or `postgres://…`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// The 公众号 appid (combine_appid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appid: Option<String>,
    /// The initiating merchant id (combine_mchid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mchid: Option<String>,
    /// Serial of the merchant API certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant_serial_no: Option<String>,
    /// PEM file of the merchant API private key (`apiclient_key.pem`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant_private_key_file: Option<PathBuf>,
    /// Optional PEM file of the merchant API certificate, to check the key and serial.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant_cert_file: Option<PathBuf>,
    /// File holding the 32-character APIv3 key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apiv3_key_file: Option<PathBuf>,
    /// File holding the 公众号 AppSecret (for the OAuth code exchange).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_secret_file: Option<PathBuf>,
    /// File holding at least 32 random bytes that sign session cookies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_secret_file: Option<PathBuf>,
    /// The WeChat Pay public-key id (`PUB_KEY_ID_…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wechatpay_public_key_id: Option<String>,
    /// PEM file of the WeChat Pay public key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wechatpay_public_key_file: Option<PathBuf>,
    /// Download and refresh platform certificates (`GET /v3/certificates`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform_certificates: Option<bool>,
    /// API base URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_base_url: Option<String>,
    /// Backup API base URL (empty string: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_backup_url: Option<String>,
    /// TCP/TLS connect timeout, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    /// Whole-request timeout, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_timeout_ms: Option<u64>,
    /// Attempts for calls that are safe to repeat (query, prepay, close).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// The notify_url sent with every order (https, no query string).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    /// The OAuth authorize page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth_authorize_url: Option<String>,
    /// Base URL of `/sns/oauth2/access_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth_api_base_url: Option<String>,
    /// Lifetime of a payer session cookie, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_ttl_secs: Option<u64>,
    /// The product catalog (TOML or JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalog_file: Option<PathBuf>,
    /// `time_expire` of new orders, seconds after creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_expire_secs: Option<u64>,
    /// Query WeChat Pay on read when no notification came within this delay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_after_secs: Option<u64>,
    /// Orders younger than this cannot be closed (product rule: 5 minutes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_min_age_secs: Option<u64>,
    /// A stored prepay_id is reused only while it has this much life left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepay_reuse_margin_secs: Option<u64>,
    /// Reconciliation worker: seconds between sweeps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconcile_interval_secs: Option<u64>,
    /// Reconciliation worker: query open orders older than this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconcile_after_secs: Option<u64>,
    /// `text` or `json` log lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
    /// Bills: fetch and reconcile the previous day's trade bill daily in `serve`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bill_schedule: Option<bool>,
    /// Bills: when, `HH:MM` Beijing time (default `10:00`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bill_schedule_time: Option<String>,
    /// Bills: `ALL`, `SUCCESS` or `REFUND` (default `ALL`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bill_schedule_type: Option<String>,
    /// Bills: where `YYYY-MM-DD.csv` and `YYYY-MM-DD.json` are kept (default `bills`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bill_schedule_dir: Option<PathBuf>,
    /// Webhooks: where paid/closed/payment-error events are POSTed (off when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Webhooks: file holding the HMAC-SHA256 signing secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Webhooks: timeout of one delivery attempt, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_timeout_ms: Option<u64>,
    /// Webhooks: delay after the first failed attempt, seconds (doubles after each).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_initial_backoff_secs: Option<u64>,
    /// Webhooks: longest delay between attempts, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_max_backoff_secs: Option<u64>,
    /// Abuse limits: order creations + pay-params calls per minute per client IP (0: off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_ip_per_minute: Option<u64>,
    /// Abuse limits: the same per payer session (0: off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_session_per_minute: Option<u64>,
    /// Abuse limits: comma-separated proxy IPs/CIDRs whose X-Forwarded-For is believed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_proxies: Option<String>,
    /// Abuse limits: comma-separated origins granted CORS (none by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors_allowed_origins: Option<String>,
    /// Abuse limits: largest request body on the public routes, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// Metrics: a separate listen address for `GET /metrics` (off when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// Metrics: also serve `GET /metrics` on the public listener (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_on_public_listener: Option<bool>,
    /// Internal API: file holding the bearer token of `/internal/…` (off when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal_token_file: Option<PathBuf>,
    /// Internal API: a separate listen address for `/internal/…`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal_listen: Option<String>,
    /// Internal API: also serve `/internal/…` on the public listener (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal_on_public_listener: Option<bool>,
    /// Internal API: lifetime of a one-time pay link, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pay_link_ttl_secs: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Int,
    Bool,
}

/// Every key and how an environment value for it is read. A unit test keeps
/// this list in step with [`RawConfig`].
const FIELDS: &[(&str, Kind)] = &[
    ("listen", Kind::Str),
    ("public_base_url", Kind::Str),
    ("pay_directory", Kind::Str),
    ("pay_directory_registered", Kind::Str),
    ("www_dir", Kind::Str),
    ("wasm_pkg_dir", Kind::Str),
    ("demo", Kind::Bool),
    ("simulator_base_url", Kind::Str),
    ("database_url", Kind::Str),
    ("appid", Kind::Str),
    ("mchid", Kind::Str),
    ("merchant_serial_no", Kind::Str),
    ("merchant_private_key_file", Kind::Str),
    ("merchant_cert_file", Kind::Str),
    ("apiv3_key_file", Kind::Str),
    ("app_secret_file", Kind::Str),
    ("session_secret_file", Kind::Str),
    ("wechatpay_public_key_id", Kind::Str),
    ("wechatpay_public_key_file", Kind::Str),
    ("platform_certificates", Kind::Bool),
    ("api_base_url", Kind::Str),
    ("api_backup_url", Kind::Str),
    ("connect_timeout_ms", Kind::Int),
    ("request_timeout_ms", Kind::Int),
    ("max_attempts", Kind::Int),
    ("notify_url", Kind::Str),
    ("oauth_authorize_url", Kind::Str),
    ("oauth_api_base_url", Kind::Str),
    ("session_ttl_secs", Kind::Int),
    ("catalog_file", Kind::Str),
    ("order_expire_secs", Kind::Int),
    ("query_after_secs", Kind::Int),
    ("close_min_age_secs", Kind::Int),
    ("prepay_reuse_margin_secs", Kind::Int),
    ("reconcile_interval_secs", Kind::Int),
    ("reconcile_after_secs", Kind::Int),
    ("log_format", Kind::Str),
    ("bill_schedule", Kind::Bool),
    ("bill_schedule_time", Kind::Str),
    ("bill_schedule_type", Kind::Str),
    ("bill_schedule_dir", Kind::Str),
    ("webhook_url", Kind::Str),
    ("webhook_secret_file", Kind::Str),
    ("webhook_timeout_ms", Kind::Int),
    ("webhook_initial_backoff_secs", Kind::Int),
    ("webhook_max_backoff_secs", Kind::Int),
    ("rate_limit_ip_per_minute", Kind::Int),
    ("rate_limit_session_per_minute", Kind::Int),
    ("trusted_proxies", Kind::Str),
    ("cors_allowed_origins", Kind::Str),
    ("max_body_bytes", Kind::Int),
    ("metrics_listen", Kind::Str),
    ("metrics_on_public_listener", Kind::Bool),
    ("internal_token_file", Kind::Str),
    ("internal_listen", Kind::Str),
    ("internal_on_public_listener", Kind::Bool),
    ("pay_link_ttl_secs", Kind::Int),
];

/// `WXPAY_*` variables that belong to other tools (tests, logging) and are
/// not configuration keys.
const FOREIGN_ENV: &[&str] = &["WXPAY_TEST_DATABASE_URL", "WXPAY_LOG"];

/// The environment variable that overrides `key`.
pub fn env_var_name(key: &str) -> String {
    format!("WXPAY_{}", key.to_ascii_uppercase())
}

/// One configuration problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {path}: {detail}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        detail: String,
    },
    /// The file is not valid TOML or has unknown keys or wrong types.
    #[error("config file {path}: {detail}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (with line and column).
        detail: String,
    },
    /// An environment override does not parse.
    #[error("environment variable {var}: {detail}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        detail: String,
    },
    /// A required key is absent.
    #[error("{key} is required ({hint})")]
    Missing {
        /// The key.
        key: &'static str,
        /// What to put there.
        hint: &'static str,
    },
    /// A key has an unacceptable value.
    #[error("{key}: {detail}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong and what would be right.
        detail: String,
    },
}

impl ConfigError {
    /// The configuration key concerned, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Missing { key, .. } | ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// Every problem found, so one start attempt reports them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problem(s)):", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// A secret string (AppSecret). Zeroized on drop; `Debug` prints nothing.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(Zeroizing::new(s.into()))
    }
    /// The secret text (only for the one place that must send it).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// Key material for signing session cookies (≥ 32 bytes).
#[derive(Clone)]
pub struct SessionSecret(Zeroizing<Vec<u8>>);

impl SessionSecret {
    /// Minimum length in bytes.
    pub const MIN_LEN: usize = 32;

    /// Checks the length.
    pub fn new(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < Self::MIN_LEN {
            return Err(format!(
                "the session secret must be at least {} bytes, got {}",
                Self::MIN_LEN,
                bytes.len()
            ));
        }
        Ok(Self(Zeroizing::new(bytes.to_vec())))
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionSecret(redacted)")
    }
}

/// The merchant's identity and keys.
#[derive(Debug, Clone)]
pub struct MerchantConfig {
    /// combine_appid.
    pub appid: String,
    /// combine_mchid.
    pub mchid: String,
    /// Merchant API certificate serial, upper-case hex.
    pub serial_no: String,
    /// Merchant API private key (signs requests and paySign).
    pub private_key: PrivateKey,
    /// APIv3 key (decrypts notifications and certificates).
    pub apiv3_key: ApiV3Key,
    /// 公众号 AppSecret.
    pub app_secret: Secret,
}

/// How WeChat Pay's signatures are checked.
#[derive(Debug, Clone)]
pub struct VerificationConfig {
    /// The WeChat Pay public key and its id (`PUB_KEY_ID_…`).
    pub public_key: Option<(String, PublicKey)>,
    /// Download platform certificates (certificate mode, or both during migration).
    pub platform_certificates: bool,
}

/// The outbound API client's settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Primary base URL, without trailing slash.
    pub base_url: Url,
    /// Failover base URL.
    pub backup_url: Option<Url>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Attempts for repeatable calls.
    pub max_attempts: u32,
}

/// OAuth (网页授权) settings.
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    /// The authorize page (without query).
    pub authorize_url: Url,
    /// Base of `/sns/oauth2/access_token`.
    pub api_base_url: Url,
    /// Payer session lifetime.
    pub session_ttl_secs: i64,
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

impl Default for OrderPolicy {
    fn default() -> Self {
        Self {
            expire_secs: 1800,
            query_after_secs: 30,
            close_min_age_secs: 300,
            prepay_reuse_margin_secs: 600,
        }
    }
}

/// Reconciliation worker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileConfig {
    /// Seconds between sweeps.
    pub interval_secs: u64,
    /// Open orders older than this are queried.
    pub after_secs: i64,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was loaded from.
    pub source: Option<PathBuf>,
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
    /// Demo mode.
    pub demo: bool,
    /// Demo: the simulator's base URL.
    pub simulator_base_url: Option<Url>,
    /// Database URL.
    pub database_url: String,
    /// Merchant identity and keys.
    pub merchant: MerchantConfig,
    /// Signature verification.
    pub verification: VerificationConfig,
    /// Outbound client.
    pub api: ApiConfig,
    /// notify_url.
    pub notify_url: Url,
    /// The path part of notify_url, where the notification handler is mounted.
    pub notify_path: String,
    /// OAuth.
    pub oauth: OAuthConfig,
    /// Session cookie key.
    pub session_secret: SessionSecret,
    /// Catalog file (None in demo: built in).
    pub catalog_file: Option<PathBuf>,
    /// Order policy.
    pub orders: OrderPolicy,
    /// Reconciliation.
    pub reconcile: ReconcileConfig,
    /// Log format.
    pub log_format: LogFormat,
    /// Bills: the daily trade-bill run.
    pub bill_schedule: crate::bill::schedule::BillScheduleConfig,
    /// Webhooks: delivery settings (None: no webhook_url, nothing is sent).
    pub webhook: Option<crate::webhook::WebhookSettings>,
    /// Abuse limits on the public routes.
    pub limits: crate::http::limits::LimitSettings,
    /// Metrics: separate listener for `GET /metrics`.
    pub metrics_listen: Option<SocketAddr>,
    /// Metrics: `GET /metrics` on the public listener too.
    pub metrics_on_public_listener: bool,
    /// Internal (server-to-server) API (None: no `internal_token_file`, off).
    pub internal: Option<InternalApiConfig>,
    /// Non-fatal findings to log at start.
    pub warnings: Vec<String>,
}

impl Config {
    /// Loads `path` with overrides from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Self::load_with_env(path, &|k| std::env::var(k).ok())
    }

    /// Loads `path` with overrides from `env`.
    pub fn load_with_env(
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let raw = RawConfig::parse(&text, &path.display().to_string(), env)?;
        let mut cfg = raw.validate(&base)?;
        cfg.source = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// The page URL the payer opens (`public_base_url` + `pay_directory`).
    pub fn page_url(&self) -> String {
        format!("{}{}", self.public_base_url, self.pay_directory)
    }

    /// The OAuth `redirect_uri`.
    pub fn oauth_redirect_uri(&self) -> String {
        format!("{}/oauth/callback", self.public_base_url)
    }

    /// Names of `WXPAY_*` variables in `vars` that are not configuration keys
    /// (probably typos), for a start-up warning.
    pub fn unknown_env_vars(vars: impl IntoIterator<Item = String>) -> Vec<String> {
        vars.into_iter()
            .filter(|v| v.starts_with("WXPAY_"))
            .filter(|v| !FOREIGN_ENV.contains(&v.as_str()))
            .filter(|v| !FIELDS.iter().any(|(k, _)| env_var_name(k) == *v))
            .collect()
    }
}

impl RawConfig {
    /// Parses TOML text and applies `WXPAY_*` overrides read through `env`.
    pub fn parse(
        text: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<RawConfig, ConfigErrors> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            detail: e.to_string().trim().to_string(),
        })?;
        let mut errors = Vec::new();
        for (key, kind) in FIELDS {
            let var = env_var_name(key);
            let Some(value) = env(&var) else { continue };
            let parsed = match kind {
                Kind::Str => Ok(toml::Value::String(value)),
                Kind::Int => value
                    .trim()
                    .parse::<i64>()
                    .map(toml::Value::Integer)
                    .map_err(|_| format!("expected an integer, got {:?}", value)),
                Kind::Bool => match value.trim() {
                    "true" | "1" | "yes" => Ok(toml::Value::Boolean(true)),
                    "false" | "0" | "no" => Ok(toml::Value::Boolean(false)),
                    other => Err(format!("expected true or false, got {other:?}")),
                },
            };
            match parsed {
                Ok(v) => {
                    table.insert((*key).to_string(), v);
                }
                Err(detail) => errors.push(ConfigError::Env { var, detail }),
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        RawConfig::deserialize(table).map_err(|e| {
            ConfigErrors(vec![ConfigError::Parse {
                path: origin.to_string(),
                detail: e.to_string().trim().to_string(),
            }])
        })
    }

    /// Renders the file (the demo writes the configuration it runs with).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a flat struct of strings, integers and booleans serialises")
    }

    /// Checks everything, reads the secret files, and returns the
    /// configuration or every problem found.
    pub fn validate(&self, base_dir: &Path) -> Result<Config, ConfigErrors> {
        let mut v = Validator {
            errors: Vec::new(),
            warnings: Vec::new(),
            base_dir,
        };
        let demo = self.demo.unwrap_or(false);

        let listen = match self.listen.as_deref().unwrap_or("127.0.0.1:8080").parse() {
            Ok(a) => Some(a),
            Err(_) => v.invalid(
                "listen",
                format!(
                    "{:?} is not a socket address (e.g. 127.0.0.1:8080)",
                    self.listen.as_deref().unwrap_or_default()
                ),
            ),
        };

        let public_base_url = v
            .required_str(
                &self.public_base_url,
                "public_base_url",
                "the origin payers open, e.g. https://shop.example.com",
            )
            .and_then(|s| v.origin("public_base_url", s, demo));

        let pay_directory = self.pay_directory.as_deref().unwrap_or("/pay/").to_string();
        let pay_directory = match check_pay_directory(&pay_directory) {
            Ok(()) => Some(pay_directory),
            Err(detail) => v.invalid("pay_directory", detail),
        };

        let pay_directory_registered = self
            .pay_directory_registered
            .as_deref()
            .filter(|s| !s.is_empty());
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
                v.warnings.push(format!(
                    "the pay page {page} does not match the registered 支付授权目录 {reg}: {}",
                    mismatch.explain()
                ));
            }
        }

        let www_dir = v.path(self.www_dir.as_deref().unwrap_or(Path::new("www")));
        if !www_dir.is_dir() {
            v.warnings.push(format!(
                "www_dir {} is not a directory; the pay page will answer 404",
                www_dir.display()
            ));
        }
        let wasm_pkg_dir = self
            .wasm_pkg_dir
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty())
            .map(|p| v.path(p));

        let simulator_base_url = match self.simulator_base_url.as_deref().filter(|s| !s.is_empty())
        {
            None => None,
            Some(_) if !demo => v.invalid(
                "simulator_base_url",
                "only allowed with demo = true (a production server never talks to the simulator)"
                    .into(),
            ),
            Some(s) => v.base_url("simulator_base_url", s, true),
        };

        let database_url = v.required_str(
            &self.database_url,
            "database_url",
            "sqlite:/var/lib/wxpay/wxpay.db or postgres://user@host/db",
        );
        let database_url = database_url.and_then(|u| match database_scheme(u) {
            Ok(()) => Some(resolve_sqlite_path(u, base_dir)),
            Err(detail) => v.invalid("database_url", detail),
        });

        let appid = v
            .required_str(
                &self.appid,
                "appid",
                "the 公众号 AppID, e.g. wxd678efh567hg6787",
            )
            .and_then(|s| v.ident("appid", s));
        let mchid = v
            .required_str(&self.mchid, "mchid", "the merchant id, e.g. 1230000109")
            .and_then(|s| v.ident("mchid", s));
        let serial_no = v
            .required_str(
                &self.merchant_serial_no,
                "merchant_serial_no",
                "the merchant API certificate serial (40 hex digits, 商户平台 → API安全)",
            )
            .and_then(|s| {
                if !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
                    Some(s.to_ascii_uppercase())
                } else {
                    v.invalid(
                        "merchant_serial_no",
                        format!("{s:?} is not a hex certificate serial"),
                    )
                }
            });

        let private_key = v
            .required_path(
                &self.merchant_private_key_file,
                "merchant_private_key_file",
                "apiclient_key.pem",
            )
            .and_then(|p| match PrivateKey::from_pem_file(&p) {
                Ok(k) => Some(k),
                Err(e) => v.invalid("merchant_private_key_file", format!("{}: {e}", p.display())),
            });

        if let Some(cert_path) = self
            .merchant_cert_file
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty())
        {
            let cert_path = v.path(cert_path);
            match Certificate::from_pem_file(&cert_path) {
                Err(e) => {
                    v.invalid::<()>(
                        "merchant_cert_file",
                        format!("{}: {e}", cert_path.display()),
                    );
                }
                Ok(cert) => {
                    if let Some(serial) = &serial_no {
                        if cert.serial_no != *serial {
                            v.invalid::<()>(
                                "merchant_serial_no",
                                format!(
                                    "{serial} is not the serial of the merchant certificate {} ({})",
                                    cert_path.display(),
                                    cert.serial_no
                                ),
                            );
                        }
                    }
                    if let Some(key) = &private_key {
                        if cert.public_key != *key.public_key() {
                            v.invalid::<()>(
                                "merchant_private_key_file",
                                format!(
                                    "the private key does not match the merchant certificate {} (serial {}); \
                                     use the apiclient_key.pem issued with that certificate",
                                    cert_path.display(),
                                    cert.serial_no
                                ),
                            );
                        }
                    }
                }
            }
        }

        let apiv3_key = v
            .required_path(
                &self.apiv3_key_file,
                "apiv3_key_file",
                "a file holding the 32-character APIv3 key",
            )
            .and_then(|p| match ApiV3Key::from_file(&p) {
                Ok(k) => Some(k),
                Err(e) => v.invalid("apiv3_key_file", format!("{}: {e}", p.display())),
            });

        let app_secret = v
            .required_path(
                &self.app_secret_file,
                "app_secret_file",
                "a file holding the 公众号 AppSecret",
            )
            .and_then(|p| match std::fs::read_to_string(&p) {
                Ok(s) => {
                    let s = Zeroizing::new(s);
                    let t = s.trim();
                    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
                        v.invalid(
                            "app_secret_file",
                            format!(
                                "{}: expected the AppSecret (printable ASCII, no spaces)",
                                p.display()
                            ),
                        )
                    } else {
                        Some(Secret::new(t))
                    }
                }
                Err(e) => v.invalid(
                    "app_secret_file",
                    format!("cannot read {}: {e}", p.display()),
                ),
            });

        let session_secret = v
            .required_path(
                &self.session_secret_file,
                "session_secret_file",
                "a file holding ≥ 32 random bytes, e.g. `head -c 48 /dev/urandom | base64 > session.key`",
            )
            .and_then(|p| match std::fs::read(&p) {
                Ok(bytes) => {
                    let bytes = Zeroizing::new(bytes);
                    match SessionSecret::new(bytes.trim_ascii()) {
                        Ok(s) => Some(s),
                        Err(detail) => v.invalid("session_secret_file", format!("{}: {detail}", p.display())),
                    }
                }
                Err(e) => v.invalid("session_secret_file", format!("cannot read {}: {e}", p.display())),
            });

        let key_id = self
            .wechatpay_public_key_id
            .as_deref()
            .filter(|s| !s.is_empty());
        let key_file = self
            .wechatpay_public_key_file
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty());
        let public_key = match (key_id, key_file) {
            (None, None) => None,
            (Some(_), None) => v.invalid(
                "wechatpay_public_key_file",
                "required with wechatpay_public_key_id (the PEM downloaded with the key id)".into(),
            ),
            (None, Some(_)) => v.invalid(
                "wechatpay_public_key_id",
                "required with wechatpay_public_key_file (PUB_KEY_ID_…, shown next to the key)"
                    .into(),
            ),
            (Some(id), Some(file)) => {
                if !id.starts_with("PUB_KEY_ID_") || id.len() > 64 {
                    v.invalid(
                        "wechatpay_public_key_id",
                        format!("{id:?} does not look like PUB_KEY_ID_…"),
                    )
                } else {
                    let file = v.path(file);
                    match PublicKey::from_pem_file(&file) {
                        Ok(k) => Some((id.to_string(), k)),
                        Err(e) => v.invalid(
                            "wechatpay_public_key_file",
                            format!("{}: {e}", file.display()),
                        ),
                    }
                }
            }
        };
        let platform_certificates = self.platform_certificates.unwrap_or(public_key.is_none());
        if public_key.is_none() && !platform_certificates {
            v.invalid::<()>(
                "platform_certificates",
                "no way to verify WeChat Pay's signatures: configure wechatpay_public_key_id and \
                 wechatpay_public_key_file, or set platform_certificates = true"
                    .into(),
            );
        }

        let api_base = self.api_base_url.as_deref().unwrap_or(DEFAULT_API_BASE_URL);
        let api_base_url = v.base_url("api_base_url", api_base, demo);
        let backup_default = (api_base == DEFAULT_API_BASE_URL).then_some(DEFAULT_API_BACKUP_URL);
        let api_backup_url = match self.api_backup_url.as_deref().or(backup_default) {
            None | Some("") => None,
            Some(s) => v.base_url("api_backup_url", s, demo),
        };
        let connect_timeout_ms = v.range(
            "connect_timeout_ms",
            self.connect_timeout_ms.unwrap_or(5_000),
            100,
            60_000,
        );
        let request_timeout_ms = v.range(
            "request_timeout_ms",
            self.request_timeout_ms.unwrap_or(15_000),
            500,
            300_000,
        );
        let max_attempts = v.range(
            "max_attempts",
            u64::from(self.max_attempts.unwrap_or(3)),
            1,
            10,
        );

        let notify_url = v
            .required_str(&self.notify_url, "notify_url", "the public https URL WeChat Pay posts results to, e.g. https://shop.example.com/wxpay/notify")
            .and_then(|s| match check_notify_url(s, demo) {
                Ok(u) => Some(u),
                Err(detail) => v.invalid("notify_url", detail),
            });
        let notify_path = notify_url.as_ref().map(|u| u.path().to_string());
        if let (Some(path), Some(dir)) = (&notify_path, &pay_directory) {
            if path.starts_with(dir.as_str())
                || path.starts_with("/api/")
                || path.starts_with("/oauth/")
            {
                v.invalid::<()>(
                    "notify_url",
                    format!("its path {path} collides with the page or API routes; use e.g. /wxpay/notify"),
                );
            }
        }

        let oauth_authorize_url = v.base_url(
            "oauth_authorize_url",
            self.oauth_authorize_url
                .as_deref()
                .unwrap_or(DEFAULT_OAUTH_AUTHORIZE_URL),
            demo,
        );
        let oauth_api_base_url = v.base_url(
            "oauth_api_base_url",
            self.oauth_api_base_url
                .as_deref()
                .unwrap_or(DEFAULT_OAUTH_API_BASE_URL),
            demo,
        );
        let session_ttl_secs = v.range(
            "session_ttl_secs",
            self.session_ttl_secs.unwrap_or(7200),
            60,
            30 * 86400,
        );

        let catalog_file = self
            .catalog_file
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty())
            .map(|p| v.path(p));
        if catalog_file.is_none() && !demo {
            v.errors.push(ConfigError::Missing {
                key: "catalog_file",
                hint: "a TOML or JSON file listing merchants and items; see wxpay.example.toml",
            });
        }

        let defaults = OrderPolicy::default();
        // WeChat Pay requires time_expire at least one minute ahead; prepay_id
        // lives 2 hours, so longer expiries need fresh prepay calls (handled).
        let expire_secs = v.range(
            "order_expire_secs",
            self.order_expire_secs
                .unwrap_or(defaults.expire_secs as u64),
            60,
            7 * 86400,
        );
        let query_after_secs = v.range(
            "query_after_secs",
            self.query_after_secs.unwrap_or(if demo {
                5
            } else {
                defaults.query_after_secs as u64
            }),
            1,
            3600,
        );
        let close_min_age_secs = v.range(
            "close_min_age_secs",
            self.close_min_age_secs.unwrap_or(300),
            0,
            86400,
        );
        if close_min_age_secs < 300 && !demo {
            v.warnings.push(format!(
                "close_min_age_secs = {close_min_age_secs}: the product document forbids closing an order within 5 minutes of creation"
            ));
        }
        let prepay_reuse_margin_secs = v.range(
            "prepay_reuse_margin_secs",
            self.prepay_reuse_margin_secs.unwrap_or(600),
            0,
            3600,
        );
        let reconcile_interval_secs = v.range(
            "reconcile_interval_secs",
            self.reconcile_interval_secs
                .unwrap_or(if demo { 5 } else { 30 }),
            1,
            3600,
        );
        let reconcile_after_secs = v.range(
            "reconcile_after_secs",
            self.reconcile_after_secs
                .unwrap_or(if demo { 10 } else { 60 }),
            0,
            86400,
        );

        let bill_schedule = match crate::bill::schedule::BillScheduleConfig::from_raw(
            self.bill_schedule,
            self.bill_schedule_time.as_deref(),
            self.bill_schedule_type.as_deref(),
            self.bill_schedule_dir.as_deref(),
            base_dir,
        ) {
            Ok(b) => Some(b),
            Err(errors) => {
                v.errors.extend(errors);
                None
            }
        };

        let log_format = match self.log_format.as_deref().unwrap_or("text") {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            other => v.invalid("log_format", format!("{other:?}: use \"text\" or \"json\"")),
        };
        let metrics_listen = match self.metrics_listen.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(a) => match a.parse::<SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => v.invalid(
                    "metrics_listen",
                    format!("{a:?} is not a socket address (e.g. 127.0.0.1:9464)"),
                ),
            },
        };

        // Webhooks:
        let webhook = self.validate_webhook(&mut v, demo);
        // Abuse limits:
        let limits = self.validate_limits(&mut v, demo);
        // Intake:
        let internal = self.validate_internal(&mut v);

        if !v.errors.is_empty() {
            return Err(ConfigErrors(v.errors));
        }
        // Every Option below is Some: each None pushed an error above.
        let missing = || ConfigErrors(vec![]);
        Ok(Config {
            source: None,
            listen: listen.ok_or_else(missing)?,
            public_base_url: public_base_url.ok_or_else(missing)?,
            pay_directory: pay_directory.ok_or_else(missing)?,
            pay_directory_registered: pay_directory_registered.map(str::to_string),
            www_dir,
            wasm_pkg_dir,
            demo,
            simulator_base_url,
            database_url: database_url.ok_or_else(missing)?,
            merchant: MerchantConfig {
                appid: appid.ok_or_else(missing)?,
                mchid: mchid.ok_or_else(missing)?,
                serial_no: serial_no.ok_or_else(missing)?,
                private_key: private_key.ok_or_else(missing)?,
                apiv3_key: apiv3_key.ok_or_else(missing)?,
                app_secret: app_secret.ok_or_else(missing)?,
            },
            verification: VerificationConfig {
                public_key,
                platform_certificates,
            },
            api: ApiConfig {
                base_url: api_base_url.ok_or_else(missing)?,
                backup_url: api_backup_url,
                connect_timeout: Duration::from_millis(connect_timeout_ms),
                request_timeout: Duration::from_millis(request_timeout_ms),
                max_attempts: max_attempts as u32,
            },
            notify_url: notify_url.ok_or_else(missing)?,
            notify_path: notify_path.ok_or_else(missing)?,
            oauth: OAuthConfig {
                authorize_url: oauth_authorize_url.ok_or_else(missing)?,
                api_base_url: oauth_api_base_url.ok_or_else(missing)?,
                session_ttl_secs: session_ttl_secs as i64,
            },
            session_secret: session_secret.ok_or_else(missing)?,
            catalog_file,
            orders: OrderPolicy {
                expire_secs: expire_secs as i64,
                query_after_secs: query_after_secs as i64,
                close_min_age_secs: close_min_age_secs as i64,
                prepay_reuse_margin_secs: prepay_reuse_margin_secs as i64,
            },
            reconcile: ReconcileConfig {
                interval_secs: reconcile_interval_secs,
                after_secs: reconcile_after_secs as i64,
            },
            log_format: log_format.ok_or_else(missing)?,
            bill_schedule: bill_schedule.ok_or_else(missing)?,
            webhook,
            limits,
            metrics_listen,
            metrics_on_public_listener: self.metrics_on_public_listener.unwrap_or(false),
            internal,
            warnings: v.warnings,
        })
    }
}

/// The server-to-server order API (`/internal/…`), see `docs/internal-api.md`.
#[derive(Debug, Clone)]
pub struct InternalApiConfig {
    /// The bearer token callers present.
    pub token: Secret,
    /// A separate listener for the internal API.
    pub listen: Option<SocketAddr>,
    /// Also mount the internal API on the public listener (explicit opt-in).
    pub on_public_listener: bool,
    /// Lifetime of a one-time pay link, seconds.
    pub pay_link_ttl_secs: i64,
}

/// Shortest accepted internal API token.
pub const MIN_INTERNAL_TOKEN_LEN: usize = 32;

// Intake:
impl RawConfig {
    fn validate_internal(&self, v: &mut Validator<'_>) -> Option<InternalApiConfig> {
        let listen = match self.internal_listen.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(a) => match a.parse::<SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => v.invalid(
                    "internal_listen",
                    format!("{a:?} is not a socket address (e.g. 127.0.0.1:8081)"),
                ),
            },
        };
        let on_public = self.internal_on_public_listener.unwrap_or(false);
        let ttl = v.range(
            "pay_link_ttl_secs",
            self.pay_link_ttl_secs.unwrap_or(3600),
            60,
            7 * 86400,
        );
        let Some(file) = self
            .internal_token_file
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty())
        else {
            if listen.is_some() || on_public {
                v.invalid::<()>(
                    "internal_token_file",
                    "required with internal_listen / internal_on_public_listener (a file holding \
                     a random token of ≥ 32 characters, e.g. `head -c 32 /dev/urandom | base64 > internal.token`)"
                        .into(),
                );
            }
            return None;
        };
        let p = v.path(file);
        let token = match std::fs::read_to_string(&p) {
            Ok(s) => {
                let s = Zeroizing::new(s);
                let t = s.trim();
                if t.len() < MIN_INTERNAL_TOKEN_LEN || !t.bytes().all(|b| b.is_ascii_graphic()) {
                    v.invalid(
                        "internal_token_file",
                        format!(
                            "{}: the token must be at least {MIN_INTERNAL_TOKEN_LEN} printable ASCII characters",
                            p.display()
                        ),
                    )
                } else {
                    Some(Secret::new(t))
                }
            }
            Err(e) => v.invalid(
                "internal_token_file",
                format!("cannot read {}: {e}", p.display()),
            ),
        }?;
        if listen.is_none() && !on_public {
            v.warnings.push(
                "internal_token_file is set but neither internal_listen nor internal_on_public_listener: \
                 `serve` does not expose the internal API (an embedding app can mount Kit::internal_router)"
                    .into(),
            );
        }
        Some(InternalApiConfig {
            token,
            listen,
            on_public_listener: on_public,
            pay_link_ttl_secs: ttl as i64,
        })
    }
}

// Webhooks + abuse limits:
impl RawConfig {
    fn validate_webhook(
        &self,
        v: &mut Validator<'_>,
        demo: bool,
    ) -> Option<crate::webhook::WebhookSettings> {
        let Some(u) = self.webhook_url.as_deref().filter(|s| !s.is_empty()) else {
            if self
                .webhook_secret_file
                .as_deref()
                .is_some_and(|p| !p.as_os_str().is_empty())
            {
                v.warnings.push(
                    "webhook_secret_file is set but webhook_url is not: no webhooks are sent"
                        .into(),
                );
            }
            return None;
        };
        let url = match Url::parse(u) {
            Ok(url) if matches!(url.scheme(), "https" | "http") && url.host().is_some() => {
                if url.scheme() == "http" && !demo && !is_loopback(&url) {
                    v.warnings.push(format!(
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
                &self.webhook_secret_file,
                "webhook_secret_file",
                "a file holding the webhook signing secret (≥ 16 characters), e.g. `head -c 32 /dev/urandom | base64 > webhook.key`",
            )
            .and_then(|p| match std::fs::read_to_string(&p) {
                Ok(s) => {
                    let s = Zeroizing::new(s);
                    let t = s.trim();
                    if t.len() < 16 {
                        v.invalid(
                            "webhook_secret_file",
                            format!("{}: the secret must be at least 16 characters", p.display()),
                        )
                    } else {
                        Some(Secret::new(t))
                    }
                }
                Err(e) => v.invalid(
                    "webhook_secret_file",
                    format!("cannot read {}: {e}", p.display()),
                ),
            });
        let timeout_ms = v.range(
            "webhook_timeout_ms",
            self.webhook_timeout_ms.unwrap_or(10_000),
            100,
            120_000,
        );
        let initial = v.range(
            "webhook_initial_backoff_secs",
            self.webhook_initial_backoff_secs.unwrap_or(5),
            1,
            3600,
        );
        let max = v.range(
            "webhook_max_backoff_secs",
            self.webhook_max_backoff_secs.unwrap_or(3600),
            1,
            7 * 86400,
        );
        let mut w = crate::webhook::WebhookSettings::new(url?, secret?);
        w.timeout = Duration::from_millis(timeout_ms);
        w.initial_backoff_secs = initial;
        w.max_backoff_secs = max.max(initial);
        Some(w)
    }

    fn validate_limits(
        &self,
        v: &mut Validator<'_>,
        demo: bool,
    ) -> crate::http::limits::LimitSettings {
        use crate::http::limits::{parse_ip_net, LimitSettings};
        let list = |s: &Option<String>| -> Vec<String> {
            s.as_deref()
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        // The demo is one tester on one machine: no rate limits unless asked.
        let ip = v.range(
            "rate_limit_ip_per_minute",
            self.rate_limit_ip_per_minute
                .unwrap_or(if demo { 0 } else { 120 }),
            0,
            1_000_000,
        );
        let session = v.range(
            "rate_limit_session_per_minute",
            self.rate_limit_session_per_minute
                .unwrap_or(if demo { 0 } else { 30 }),
            0,
            1_000_000,
        );
        let mut trusted_proxies = Vec::new();
        for p in list(&self.trusted_proxies) {
            match parse_ip_net(&p) {
                Ok(n) => trusted_proxies.push(n),
                Err(e) => {
                    v.invalid::<()>("trusted_proxies", e);
                }
            }
        }
        let mut cors_allowed_origins = Vec::new();
        for o in list(&self.cors_allowed_origins) {
            if let Some(o) = v.origin("cors_allowed_origins", &o, demo) {
                cors_allowed_origins.push(o);
            }
        }
        let max_body_bytes = v.range(
            "max_body_bytes",
            self.max_body_bytes
                .unwrap_or(crate::http::limits::DEFAULT_MAX_BODY_BYTES as u64),
            1024,
            1 << 20,
        );
        LimitSettings {
            ip_per_minute: ip as u32,
            session_per_minute: session as u32,
            trusted_proxies,
            cors_allowed_origins,
            max_body_bytes: max_body_bytes as usize,
        }
    }
}

struct Validator<'a> {
    errors: Vec<ConfigError>,
    warnings: Vec<String>,
    base_dir: &'a Path,
}

impl Validator<'_> {
    fn invalid<T>(&mut self, key: &'static str, detail: String) -> Option<T> {
        self.errors.push(ConfigError::Invalid { key, detail });
        None
    }

    fn required_str<'s>(
        &mut self,
        value: &'s Option<String>,
        key: &'static str,
        hint: &'static str,
    ) -> Option<&'s str> {
        match value.as_deref().map(str::trim) {
            Some(s) if !s.is_empty() => Some(s),
            _ => {
                self.errors.push(ConfigError::Missing { key, hint });
                None
            }
        }
    }

    fn required_path(
        &mut self,
        value: &Option<PathBuf>,
        key: &'static str,
        hint: &'static str,
    ) -> Option<PathBuf> {
        match value.as_deref() {
            Some(p) if !p.as_os_str().is_empty() => Some(self.path(p)),
            _ => {
                self.errors.push(ConfigError::Missing { key, hint });
                None
            }
        }
    }

    fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    fn ident(&mut self, key: &'static str, s: &str) -> Option<String> {
        if s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            Some(s.to_string())
        } else {
            self.invalid(key, format!("{s:?} must be 1–32 ASCII letters or digits"))
        }
    }

    fn range(&mut self, key: &'static str, value: u64, min: u64, max: u64) -> u64 {
        if value < min || value > max {
            self.invalid::<()>(key, format!("{value} is outside {min}..={max}"));
        }
        value.clamp(min, max)
    }

    /// An origin (scheme + host + port, no path). Plain http only in demo.
    fn origin(&mut self, key: &'static str, s: &str, demo: bool) -> Option<String> {
        let url = self.base_url(key, s, demo)?;
        if url.path() != "/" {
            return self.invalid(
                key,
                format!("{s:?} must be an origin without a path, e.g. https://shop.example.com"),
            );
        }
        Some(url.origin().ascii_serialization())
    }

    /// An http(s) base URL without query or fragment; plain http only in
    /// demo or towards the loopback interface.
    fn base_url(&mut self, key: &'static str, s: &str, demo: bool) -> Option<Url> {
        let url = match Url::parse(s) {
            Ok(u) => u,
            Err(e) => return self.invalid(key, format!("{s:?} is not a URL: {e}")),
        };
        if url.query().is_some() || url.fragment().is_some() {
            return self.invalid(
                key,
                format!("{s:?} must not have a query string or fragment"),
            );
        }
        match url.scheme() {
            "https" => {}
            "http" if demo || is_loopback(&url) => {}
            "http" => {
                return self.invalid(
                    key,
                    format!("{s:?} must use https (plain http is allowed only in demo mode)"),
                )
            }
            other => return self.invalid(key, format!("{s:?}: unsupported scheme {other:?}")),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return self.invalid(key, format!("{s:?} has no host"));
        }
        Some(url)
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

fn database_scheme(url: &str) -> Result<(), String> {
    crate::store::classify_url(url).map(|_| ()).map_err(|_| {
        format!(
            "unknown database URL scheme {:?}; use sqlite:PATH (embedded) or postgres://user@host/db",
            url.split(':').next().unwrap_or_default()
        )
    })
}

/// Resolves a relative SQLite file path against the config file's directory
/// (other URLs are returned unchanged).
fn resolve_sqlite_path(url: &str, base_dir: &Path) -> String {
    if !matches!(
        crate::store::classify_url(url),
        Ok(crate::store::Backend::Sqlite)
    ) {
        return url.to_string();
    }
    let (prefix, rest) = if let Some(r) = url.strip_prefix("sqlite://") {
        ("sqlite://", r)
    } else if let Some(r) = url.strip_prefix("sqlite:") {
        ("sqlite:", r)
    } else {
        ("", url)
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.is_empty() || path.starts_with(':') || Path::new(path).is_absolute() {
        return url.to_string();
    }
    let joined = base_dir.join(path);
    match query {
        Some(q) => format!("{prefix}{}?{q}", joined.display()),
        None => format!("{prefix}{}", joined.display()),
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

/// notify_url rules: absolute, https outside demo, no query string (the
/// service refuses one), no fragment, at most 255 bytes.
pub fn check_notify_url(s: &str, demo: bool) -> Result<Url, String> {
    if s.len() > 255 {
        return Err(format!("{} bytes; WeChat Pay accepts at most 255", s.len()));
    }
    let url = Url::parse(s).map_err(|e| format!("{s:?} is not an absolute URL: {e}"))?;
    if s.contains('?') || url.query().is_some() {
        return Err(format!(
            "{s:?} has a query string; WeChat Pay refuses notify URLs with query parameters"
        ));
    }
    if url.fragment().is_some() {
        return Err(format!("{s:?} has a fragment"));
    }
    match url.scheme() {
        "https" => {}
        "http" if demo => {}
        "http" => {
            return Err(format!(
                "{s:?} must use https (plain http is allowed only in demo mode)"
            ))
        }
        other => return Err(format!("{s:?}: unsupported scheme {other:?}")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{s:?} has no host"));
    }
    if url.path() == "/" {
        return Err(format!("{s:?} needs a path, e.g. /wxpay/notify"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_can_be_overridden_from_the_environment() {
        for (key, kind) in FIELDS {
            let value = match kind {
                Kind::Str => "x",
                Kind::Int => "7",
                Kind::Bool => "true",
            };
            let var = env_var_name(key);
            let raw = RawConfig::parse("", "test", &|k| (k == var).then(|| value.to_string()))
                .unwrap_or_else(|e| panic!("{key}: {e}"));
            assert_ne!(raw, RawConfig::default(), "{key} is not a RawConfig field");
        }
    }

    #[test]
    fn env_overrides_the_file_and_bad_values_are_named() {
        let raw = RawConfig::parse("listen = \"1.2.3.4:1\"\n", "t", &|k| {
            (k == "WXPAY_LISTEN").then(|| "127.0.0.1:9".to_string())
        })
        .unwrap();
        assert_eq!(raw.listen.as_deref(), Some("127.0.0.1:9"));
        let err = RawConfig::parse("", "t", &|k| {
            (k == "WXPAY_MAX_ATTEMPTS").then(|| "many".into())
        })
        .unwrap_err();
        assert!(err.to_string().contains("WXPAY_MAX_ATTEMPTS"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = RawConfig::parse("databse_url = \"sqlite:x\"\n", "t", &|_| None).unwrap_err();
        assert!(err.to_string().contains("databse_url"), "{err}");
    }

    #[test]
    fn unknown_env_vars_are_reported_but_foreign_ones_are_not() {
        let unknown = Config::unknown_env_vars(
            [
                "WXPAY_DATABSE_URL",
                "WXPAY_DATABASE_URL",
                "WXPAY_TEST_DATABASE_URL",
                "PATH",
            ]
            .map(String::from),
        );
        assert_eq!(unknown, vec!["WXPAY_DATABSE_URL".to_string()]);
    }

    #[test]
    fn notify_url_rules() {
        assert!(check_notify_url("https://a.example/wxpay/notify", false).is_ok());
        assert!(check_notify_url("https://a.example/n?x=1", false)
            .unwrap_err()
            .contains("query"));
        assert!(check_notify_url("http://a.example/n", false)
            .unwrap_err()
            .contains("https"));
        assert!(check_notify_url("http://127.0.0.1:8080/wxpay/notify", true).is_ok());
        assert!(
            check_notify_url(&format!("https://a.example/{}", "n".repeat(260)), false)
                .unwrap_err()
                .contains("255")
        );
    }

    #[test]
    fn pay_directory_rules() {
        assert!(check_pay_directory("/pay/").is_ok());
        assert!(check_pay_directory("/shop/pay/").is_ok());
        for bad in ["/", "pay/", "/pay", "/a/../b/", "/api/", "/a b/", "//"] {
            assert!(check_pay_directory(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn database_schemes() {
        assert!(database_scheme("sqlite:/tmp/x.db").is_ok());
        assert!(database_scheme("postgres://u@h/db").is_ok());
        assert!(database_scheme("mysql://u@h/db")
            .unwrap_err()
            .contains("unknown database URL scheme"));
        let base = Path::new("/etc/wxpay");
        assert_eq!(
            resolve_sqlite_path("sqlite:wxpay.db", base),
            "sqlite:/etc/wxpay/wxpay.db"
        );
        assert_eq!(
            resolve_sqlite_path("sqlite:/var/x.db", base),
            "sqlite:/var/x.db"
        );
        assert_eq!(
            resolve_sqlite_path("sqlite::memory:", base),
            "sqlite::memory:"
        );
        assert_eq!(
            resolve_sqlite_path("postgres://u@h/db", base),
            "postgres://u@h/db"
        );
    }
}
