//! Merchant-server configuration: one TOML file, `WXPAY_*` environment
//! overrides, secrets read from files. Everything is checked once, at start,
//! and every problem is reported with the key it concerns — a server that
//! starts is a server whose configuration made sense.
//!
//! The file is flat ([`RawConfig`]), but each subsystem owns its keys (a
//! field table), its settings type and its validation (see
//! [`crate::settings`]); this module only parses, applies the environment
//! overrides, calls each subsystem's validation and assembles [`Config`].
//!
//! Relative paths in the file are resolved against the file's directory.
//! `wxpay.example.toml` at the repository root documents every key.

use crate::bill::schedule::BillScheduleConfig;
use crate::combine::settings::{CredentialsRaw, MerchantEntry, WechatPayRaw, WechatPaySettings};
use crate::http::internal_settings::{InternalApiConfig, InternalApiRaw};
use crate::http::settings::{ServerRaw, ServerSettings};
use crate::metrics::settings::MetricsSettings;
use crate::notify::settings::NotifySettings;
use crate::reconcile::settings::ReconcileSettings;
use crate::settings::{FieldKind, FieldTable, Validator};
use crate::store::settings::StoreSettings;
use crate::webhook::settings::WebhookRaw;
use crate::webhook::WebhookSettings;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub use crate::settings::{env_var_name, ConfigError, ConfigErrors};

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
    /// The notify_url sent with every refund (default: notify_url's origin + /wxpay/refund-notify).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund_notify_url: Option<String>,
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
    /// The participating merchants besides the initiator, each with its
    /// own API credentials or none (`[[merchants]]`; no environment
    /// override).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merchants: Vec<MerchantEntry>,
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
    /// Connections: seconds a request's headers may take (default 5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_read_timeout_secs: Option<u64>,
    /// Connections: seconds a kept-alive connection may wait for its next request (default 15).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_alive_idle_secs: Option<u64>,
    /// Connections: most open at once per listener (default 512; more wait in the backlog).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
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

/// The keys this module validates itself: modes of the whole process.
const OWN_FIELDS: FieldTable = &[("demo", FieldKind::Bool), ("log_format", FieldKind::Str)];

/// Every subsystem's keys: together, every key of [`RawConfig`] exactly once
/// (a unit test checks both).
const FIELD_TABLES: &[FieldTable] = &[
    OWN_FIELDS,
    crate::http::settings::FIELDS,
    crate::http::internal_settings::FIELDS,
    crate::combine::settings::FIELDS,
    crate::store::settings::FIELDS,
    crate::notify::settings::FIELDS,
    crate::reconcile::settings::FIELDS,
    crate::bill::schedule::FIELDS,
    crate::webhook::settings::FIELDS,
    crate::metrics::settings::FIELDS,
    crate::catalog::settings::FIELDS,
];

fn fields() -> impl Iterator<Item = &'static (&'static str, FieldKind)> {
    FIELD_TABLES.iter().flat_map(|t| t.iter())
}

/// `WXPAY_*` variables that belong to other tools (tests, logging) and are
/// not configuration keys.
const FOREIGN_ENV: &[&str] = &["WXPAY_TEST_DATABASE_URL", "WXPAY_LOG"];

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// The validated configuration: each subsystem's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was loaded from.
    pub source: Option<PathBuf>,
    /// Demo mode.
    pub demo: bool,
    /// Log format.
    pub log_format: LogFormat,
    /// The public HTTP surface: listener, page, OAuth, sessions, order
    /// policy, abuse limits.
    pub http: ServerSettings,
    /// Internal (server-to-server) API (None: no `internal_token_file`, off).
    pub internal: Option<InternalApiConfig>,
    /// The WeChat Pay client: appid, the merchant's credentials, API hosts.
    pub wechatpay: WechatPaySettings,
    /// The order database.
    pub store: StoreSettings,
    /// The notification endpoint.
    pub notify: NotifySettings,
    /// Reconciliation.
    pub reconcile: ReconcileSettings,
    /// Bills: the daily trade-bill run.
    pub bill_schedule: BillScheduleConfig,
    /// Webhooks: delivery settings (None: no webhook_url, nothing is sent).
    pub webhook: Option<WebhookSettings>,
    /// Metrics listeners.
    pub metrics: MetricsSettings,
    /// Catalog file (None in demo: built in).
    pub catalog_file: Option<PathBuf>,
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
        self.http.page_url()
    }

    /// The OAuth `redirect_uri`.
    pub fn oauth_redirect_uri(&self) -> String {
        self.http.oauth_redirect_uri()
    }

    /// Names of `WXPAY_*` variables in `vars` that are not configuration keys
    /// (probably typos), for a start-up warning.
    pub fn unknown_env_vars(vars: impl IntoIterator<Item = String>) -> Vec<String> {
        vars.into_iter()
            .filter(|v| v.starts_with("WXPAY_"))
            .filter(|v| !FOREIGN_ENV.contains(&v.as_str()))
            .filter(|v| !fields().any(|(k, _)| env_var_name(k) == *v))
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
        for (key, kind) in fields() {
            let var = env_var_name(key);
            let Some(value) = env(&var) else { continue };
            let parsed = match kind {
                FieldKind::Str => Ok(toml::Value::String(value)),
                FieldKind::Int => value
                    .trim()
                    .parse::<i64>()
                    .map(toml::Value::Integer)
                    .map_err(|_| format!("expected an integer, got {:?}", value)),
                FieldKind::Bool => match value.trim() {
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
    /// `merchants` is written as an inline array (`merchants = [{…}, …]`),
    /// not as `[[merchants]]` tables: a key a user appends to the file then
    /// stays a top-level key instead of landing in the last merchant.
    pub fn to_toml(&self) -> String {
        let flat = RawConfig {
            merchants: Vec::new(),
            ..self.clone()
        };
        let mut out =
            toml::to_string(&flat).expect("a flat struct of strings, integers and booleans");
        if !self.merchants.is_empty() {
            out.push_str("merchants = [\n");
            for m in &self.merchants {
                let entry = toml::Value::try_from(m).expect("strings, paths and booleans");
                let toml::Value::Table(t) = entry else {
                    unreachable!("a struct serialises to a table")
                };
                let fields: Vec<String> = t.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                out.push_str(&format!("    {{ {} }},\n", fields.join(", ")));
            }
            out.push_str("]\n");
        }
        out
    }

    /// Checks everything (each subsystem its own keys), reads the secret
    /// files, and returns the configuration or every problem found.
    pub fn validate(&self, base_dir: &Path) -> Result<Config, ConfigErrors> {
        let mut v = Validator::new(base_dir);
        let demo = self.demo.unwrap_or(false);
        let log_format = match self.log_format.as_deref().unwrap_or("text") {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            other => v.invalid("log_format", format!("{other:?}: use \"text\" or \"json\"")),
        };

        let server_raw = self.server_raw();
        let http = crate::http::settings::validate(&server_raw, demo, &mut v);
        let internal = crate::http::internal_settings::validate(&self.internal_raw(), &mut v);
        let wechatpay = crate::combine::settings::validate(&self.wechatpay_raw(), demo, &mut v);
        let store = crate::store::settings::validate(self.database_url.as_deref(), &mut v);
        // The notification route must stay clear of the page's directory.
        let notify = crate::notify::settings::validate(
            self.notify_url.as_deref(),
            self.refund_notify_url.as_deref(),
            demo,
            crate::http::settings::pay_directory(&server_raw),
            &mut v,
        );
        let catalog_file =
            crate::catalog::settings::validate(self.catalog_file.as_deref(), demo, &mut v);
        let reconcile = crate::reconcile::settings::validate(
            self.reconcile_interval_secs,
            self.reconcile_after_secs,
            demo,
            &mut v,
        );
        let bill_schedule = match BillScheduleConfig::from_raw(
            self.bill_schedule,
            self.bill_schedule_time.as_deref(),
            self.bill_schedule_type.as_deref(),
            self.bill_schedule_dir.as_deref(),
            base_dir,
        ) {
            Ok(b) => Some(b),
            Err(errors) => {
                errors.into_iter().for_each(|e| v.error(e));
                None
            }
        };
        let webhook = crate::webhook::settings::validate(&self.webhook_raw(), demo, &mut v);
        let metrics = crate::metrics::settings::validate(
            self.metrics_listen.as_deref(),
            self.metrics_on_public_listener,
            &mut v,
        );

        let warnings = v.finish()?;
        // Every required part is Some: each None recorded an error above.
        let missing = || ConfigErrors(vec![]);
        Ok(Config {
            source: None,
            demo,
            log_format: log_format.ok_or_else(missing)?,
            http: http.ok_or_else(missing)?,
            internal,
            wechatpay: wechatpay.ok_or_else(missing)?,
            store: store.ok_or_else(missing)?,
            notify: notify.ok_or_else(missing)?,
            reconcile,
            bill_schedule: bill_schedule.ok_or_else(missing)?,
            webhook,
            metrics,
            catalog_file: catalog_file.map_err(|()| missing())?,
            warnings,
        })
    }

    fn server_raw(&self) -> ServerRaw<'_> {
        ServerRaw {
            listen: self.listen.as_deref(),
            public_base_url: self.public_base_url.as_deref(),
            pay_directory: self.pay_directory.as_deref(),
            pay_directory_registered: self.pay_directory_registered.as_deref(),
            www_dir: self.www_dir.as_deref(),
            wasm_pkg_dir: self.wasm_pkg_dir.as_deref(),
            simulator_base_url: self.simulator_base_url.as_deref(),
            app_secret_file: self.app_secret_file.as_deref(),
            session_secret_file: self.session_secret_file.as_deref(),
            oauth_authorize_url: self.oauth_authorize_url.as_deref(),
            oauth_api_base_url: self.oauth_api_base_url.as_deref(),
            session_ttl_secs: self.session_ttl_secs,
            order_expire_secs: self.order_expire_secs,
            query_after_secs: self.query_after_secs,
            close_min_age_secs: self.close_min_age_secs,
            prepay_reuse_margin_secs: self.prepay_reuse_margin_secs,
            rate_limit_ip_per_minute: self.rate_limit_ip_per_minute,
            rate_limit_session_per_minute: self.rate_limit_session_per_minute,
            trusted_proxies: self.trusted_proxies.as_deref(),
            cors_allowed_origins: self.cors_allowed_origins.as_deref(),
            max_body_bytes: self.max_body_bytes,
            header_read_timeout_secs: self.header_read_timeout_secs,
            keep_alive_idle_secs: self.keep_alive_idle_secs,
            max_connections: self.max_connections,
        }
    }

    fn internal_raw(&self) -> InternalApiRaw<'_> {
        InternalApiRaw {
            internal_token_file: self.internal_token_file.as_deref(),
            internal_listen: self.internal_listen.as_deref(),
            internal_on_public_listener: self.internal_on_public_listener,
            pay_link_ttl_secs: self.pay_link_ttl_secs,
        }
    }

    fn wechatpay_raw(&self) -> WechatPayRaw<'_> {
        WechatPayRaw {
            appid: self.appid.as_deref(),
            credentials: CredentialsRaw {
                mchid: self.mchid.as_deref(),
                merchant_serial_no: self.merchant_serial_no.as_deref(),
                merchant_private_key_file: self.merchant_private_key_file.as_deref(),
                merchant_cert_file: self.merchant_cert_file.as_deref(),
                apiv3_key_file: self.apiv3_key_file.as_deref(),
                wechatpay_public_key_id: self.wechatpay_public_key_id.as_deref(),
                wechatpay_public_key_file: self.wechatpay_public_key_file.as_deref(),
                platform_certificates: self.platform_certificates,
            },
            merchants: &self.merchants,
            api_base_url: self.api_base_url.as_deref(),
            api_backup_url: self.api_backup_url.as_deref(),
            connect_timeout_ms: self.connect_timeout_ms,
            request_timeout_ms: self.request_timeout_ms,
            max_attempts: self.max_attempts,
        }
    }

    fn webhook_raw(&self) -> WebhookRaw<'_> {
        WebhookRaw {
            webhook_url: self.webhook_url.as_deref(),
            webhook_secret_file: self.webhook_secret_file.as_deref(),
            webhook_timeout_ms: self.webhook_timeout_ms,
            webhook_initial_backoff_secs: self.webhook_initial_backoff_secs,
            webhook_max_backoff_secs: self.webhook_max_backoff_secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_field_can_be_overridden_from_the_environment() {
        for (key, kind) in fields() {
            let value = match kind {
                FieldKind::Str => "x",
                FieldKind::Int => "7",
                FieldKind::Bool => "true",
            };
            let var = env_var_name(key);
            let raw = RawConfig::parse("", "test", &|k| (k == var).then(|| value.to_string()))
                .unwrap_or_else(|e| panic!("{key}: {e}"));
            assert_ne!(raw, RawConfig::default(), "{key} is not a RawConfig field");
        }
    }

    #[test]
    fn the_field_tables_cover_every_key_exactly_once() {
        let mut seen = BTreeSet::new();
        for (key, _) in fields() {
            assert!(seen.insert(*key), "{key} is in two subsystems' tables");
        }
        // serde names every field of RawConfig when refusing an unknown one.
        let err = RawConfig::parse("zz_unknown = 1\n", "t", &|_| None).unwrap_err();
        let text = err.to_string();
        let expected = text
            .split("expected one of")
            .nth(1)
            .expect("serde lists the fields");
        let mut declared: BTreeSet<&str> = expected.split('`').skip(1).step_by(2).collect();
        // The one list (an array of tables, not overridable from the environment).
        assert!(declared.remove("merchants"));
        assert_eq!(declared, seen, "RawConfig and the field tables differ");
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
}
