//! The merchant server's HTTP surface for the H5 page: JSON API, OAuth
//! sessions and the static pay directory.
//!
//! [`app`] builds the router from an [`AppState`]; the notification endpoint
//! ([`crate::notify::router`]) is merged in by [`crate::kit`].
//!
//! | route | what |
//! |---|---|
//! | `GET /api/config` | `{demo, app_id, pay_directory, login_url, simulator_bridge_url?}` |
//! | `GET /api/session` | the signed-in payer (masked) or 401 |
//! | `GET /api/catalog` | items with prices and merchants |
//! | `POST /api/combine-orders` | price, store, prepay, sign pay params |
//! | `GET /api/combine-orders/{no}` | the order (query-on-read when overdue) |
//! | `POST /api/combine-orders/{no}/pay-params` | fresh pay params |
//! | `POST /api/combine-orders/{no}/close` | close an unpaid order |
//! | `GET /oauth/start`, `GET /oauth/callback` | 网页授权 (snsapi_base) |
//! | `GET {pay_directory}…` | the page (`www_dir`), `{pay_directory}pkg/…` the wasm package |
//! | `GET /healthz`, `GET /readyz` | liveness, database readiness |

pub mod error;
pub mod internal;
pub mod internal_settings;
pub mod limits;
pub mod listener;
pub mod oauth;
pub mod orders;
pub mod session;
pub mod settings;

pub use error::AppError;
pub use oauth::{HttpOAuthClient, OAuthClient, OAuthExchangeError, OAuthIdentity};
pub use settings::{OrderPolicy, ServerSettings};

use crate::apiv3::{Clock, PrivateKey, Verifier};
use crate::catalog::Catalog;
use crate::combine::settings::WechatPaySettings;
use crate::combine::CombineApi;
use crate::notify::settings::NotifySettings;
use crate::redact::mask_openid;
use crate::store::Store;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use secrecy::SecretSlice;
use serde_json::json;
use session::{CookieSigner, Purpose, SessionData};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tower::ServiceExt;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use url::Url;

/// Largest JSON body the API accepts.
pub const MAX_API_BODY_BYTES: usize = 64 * 1024;

/// What the HTTP layer needs from the configuration.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// combine_appid (also the OAuth appid and the pay params' appId).
    pub appid: String,
    /// combine_mchid.
    pub mchid: String,
    /// notify_url sent with prepay.
    pub notify_url: String,
    /// Pay directory, e.g. `/pay/`.
    pub pay_directory: String,
    /// The authorize page.
    pub oauth_authorize_url: Url,
    /// `{public_base_url}/oauth/callback`.
    pub oauth_redirect_uri: String,
    /// The page's files.
    pub www_dir: PathBuf,
    /// The wasm package, served at `{pay_directory}pkg/`.
    pub wasm_pkg_dir: Option<PathBuf>,
    /// Demo mode.
    pub demo: bool,
    /// Demo: the simulator's base URL.
    pub simulator_base_url: Option<String>,
    /// Cookie key.
    pub session_secret: SecretSlice<u8>,
    /// `Secure` cookies, and the session cookie named `__Host-…`: whether
    /// `public_base_url` is `https` (a browser drops `Secure` cookies set
    /// over plain HTTP, so this follows the URL, not the demo flag).
    pub secure_cookies: bool,
    /// Session lifetime.
    pub session_ttl_secs: i64,
    /// Order policy.
    pub orders: OrderPolicy,
}

impl HttpSettings {
    /// The HTTP settings of the validated server, client and notification
    /// settings.
    pub fn from_settings(
        server: &ServerSettings,
        wechatpay: &WechatPaySettings,
        notify: &NotifySettings,
        demo: bool,
    ) -> Self {
        Self {
            appid: wechatpay.appid.clone(),
            mchid: wechatpay.merchant.mchid.clone(),
            notify_url: notify.notify_url.to_string(),
            pay_directory: server.pay_directory.clone(),
            oauth_authorize_url: server.oauth.authorize_url.clone(),
            oauth_redirect_uri: server.oauth_redirect_uri(),
            www_dir: server.www_dir.clone(),
            wasm_pkg_dir: server.wasm_pkg_dir.clone(),
            demo,
            simulator_base_url: server
                .simulator_base_url
                .as_ref()
                .map(|u| u.as_str().trim_end_matches('/').to_string()),
            session_secret: server.session_secret.clone(),
            secure_cookies: secure_cookies_for(&server.public_base_url),
            session_ttl_secs: server.oauth.session_ttl_secs,
            orders: server.orders,
        }
    }
}

/// Whether cookies for a site at `public_base_url` are `Secure`: exactly
/// when it is served over HTTPS.
pub fn secure_cookies_for(public_base_url: &str) -> bool {
    Url::parse(public_base_url).is_ok_and(|u| u.scheme() == "https")
}

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Settings.
    pub settings: Arc<HttpSettings>,
    /// The order database.
    pub store: Arc<dyn Store>,
    /// WeChat Pay (the real client, the simulator, or a fake in tests).
    pub api: Arc<dyn CombineApi>,
    /// The OAuth code exchange.
    pub oauth: Arc<dyn OAuthClient>,
    /// Prices.
    pub catalog: Arc<Catalog>,
    /// Merchant API private key (signs paySign).
    pub pay_key: PrivateKey,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Cookie signing.
    pub cookies: Arc<CookieSigner>,
    /// Last query-on-read per order (throttle).
    pub(crate) query_throttle: Arc<Mutex<HashMap<String, i64>>>,
    /// The verifier of WeChat Pay's signatures, when readiness should
    /// include "a usable WeChat Pay key or platform certificate is loaded".
    pub(crate) verifier: Option<Arc<Verifier>>,
    /// Abuse limits ([`limits`]): rate limits, body size, CORS.
    pub(crate) limits: Arc<limits::LimitSettings>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("settings", &self.settings)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Assembles the state.
    pub fn new(
        settings: HttpSettings,
        store: Arc<dyn Store>,
        api: Arc<dyn CombineApi>,
        oauth: Arc<dyn OAuthClient>,
        catalog: Arc<Catalog>,
        pay_key: PrivateKey,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let cookies = Arc::new(CookieSigner::new(
            settings.session_secret.clone(),
            settings.secure_cookies,
        ));
        Self {
            settings: Arc::new(settings),
            store,
            api,
            oauth,
            catalog,
            pay_key,
            clock,
            cookies,
            query_throttle: Arc::new(Mutex::new(HashMap::new())),
            verifier: None,
            limits: Arc::new(limits::LimitSettings::default()),
        }
    }

    /// Sets the abuse limits (the default has no rate limits).
    pub fn with_limits(mut self, settings: limits::LimitSettings) -> Self {
        self.limits = Arc::new(settings);
        self
    }

    /// Makes `/readyz` also require that `verifier` holds the WeChat Pay
    /// public key or a platform certificate valid now (certificate mode:
    /// the download or the refresh has worked).
    pub fn with_readiness_verifier(mut self, verifier: Arc<Verifier>) -> Self {
        self.verifier = Some(verifier);
        self
    }
}

/// The signed-in payer, from the session cookie. Handlers that take it
/// answer 401 `NO_SESSION` (with a `login_url`) without one.
#[derive(Debug, Clone)]
pub struct Session {
    /// The payer's openid under the configured appid.
    pub openid: String,
}

impl FromRequestParts<AppState> for Session {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, AppError> {
        session::read_cookie(&parts.headers, st.cookies.session_cookie_name())
            .and_then(|v| {
                st.cookies
                    .open::<SessionData>(Purpose::Session, v, st.clock.now())
            })
            .map(|s| Session { openid: s.openid })
            .ok_or_else(|| AppError::NoSession {
                login_url: oauth::login_url(&st.settings.pay_directory),
            })
    }
}

/// The router: API, OAuth, pages, health.
pub fn app(state: AppState) -> Router {
    let dir = state.settings.pay_directory.clone();
    let own_origin = Url::parse(&state.settings.oauth_redirect_uri)
        .ok()
        .map(|u| u.origin().ascii_serialization());
    let limits = limits::Limits::new(
        (*state.limits).clone(),
        state.cookies.clone(),
        state.clock.clone(),
        own_origin,
    );
    let max_body = limits.settings().max_body_bytes;
    let rate_limited = || axum::middleware::from_fn_with_state(limits.clone(), limits::rate_limit);
    let api = Router::new()
        .route("/api/config", get(api_config))
        .route("/api/session", get(api_session))
        .route("/api/catalog", get(api_catalog))
        .route(
            "/api/combine-orders",
            post(orders::create).layer(rate_limited()),
        )
        .route("/api/combine-orders/{no}", get(orders::get))
        .route(
            "/api/combine-orders/{no}/pay-params",
            post(orders::pay_params).layer(rate_limited()),
        )
        // Each close reaches WeChat Pay: limited like creation.
        .route(
            "/api/combine-orders/{no}/close",
            post(orders::close).layer(rate_limited()),
        )
        .route(
            "/api/pay-links/claim",
            post(internal::claim).layer(rate_limited()),
        )
        .route("/api/{*rest}", axum::routing::any(api_not_found))
        .layer(DefaultBodyLimit::max(max_body.min(MAX_API_BODY_BYTES)))
        .layer(axum::middleware::from_fn_with_state(
            limits.clone(),
            limits::same_origin_writes,
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ));
    let csp = content_security_policy(state.settings.simulator_base_url.as_deref());
    let router = Router::new()
        .merge(api)
        // Each callback costs a code exchange at WeChat (a quota shared with
        // real logins): per-IP limited like order creation.
        .route("/oauth/start", get(oauth::start).layer(rate_limited()))
        .route(
            "/oauth/callback",
            get(oauth::callback).layer(rate_limited()),
        )
        .route("/", get(to_pay_directory))
        .route(dir.trim_end_matches('/'), get(to_pay_directory))
        .route(&dir, get(static_file))
        .route(&format!("{dir}{{*path}}"), get(static_file))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            csp,
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(max_body))
        .layer(axum::middleware::from_fn_with_state(
            limits.clone(),
            limits::body_limit,
        ))
        .layer(tower::util::option_layer(limits.cors_layer()))
        .with_state(state);
    traced(router)
}

/// The Content-Security-Policy of every answer (the pages' scripts and
/// styles are files of the pay directory; the wasm package needs
/// `'wasm-unsafe-eval'`; nothing may frame the pages). In demo mode the
/// simulator's bridge script and its cashier calls come from the
/// simulator's origin.
pub fn content_security_policy(simulator_base_url: Option<&str>) -> HeaderValue {
    let sim = simulator_base_url
        .and_then(|u| Url::parse(u).ok())
        .map(|u| u.origin())
        .filter(|o| o.is_tuple())
        .map(|o| format!(" {}", o.ascii_serialization()))
        .unwrap_or_default();
    let policy = format!(
        "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'{sim}; \
         style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'{sim}; \
         manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    );
    HeaderValue::from_str(&policy).unwrap_or_else(|_| {
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
             connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        )
    })
}

/// The request header carrying a request id (honoured when well-formed,
/// else replaced by a generated one; echoed in the response).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Wraps `router` in the request tracing layers: an `http` span per request
/// with `method`, `path` (never the query: it carries OAuth codes),
/// `request_id` and, once a handler knows it, `combine_out_trade_no`
/// ([`record_order`]); an incoming `X-Request-Id` is kept only when it is
/// 1–64 characters of `[A-Za-z0-9._:-]`, else a UUID is generated; the id
/// is echoed in the response.
pub fn traced<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    let header = axum::http::HeaderName::from_static(REQUEST_ID_HEADER);
    router
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req
                .headers()
                .get(REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!(
                "http",
                method = %req.method(),
                path = %req.uri().path(),
                request_id = %id,
                combine_out_trade_no = tracing::field::Empty,
            )
        }))
        .layer(PropagateRequestIdLayer::new(header.clone()))
        .layer(SetRequestIdLayer::new(header, MakeUuidRequestId))
        .layer(axum::middleware::map_request(drop_malformed_request_id))
}

/// Puts a combined order's number on the current request span, so every
/// line logged while handling the request carries it.
pub fn record_order(combine_out_trade_no: &str) {
    let no: String = combine_out_trade_no.chars().take(64).collect();
    tracing::Span::current().record("combine_out_trade_no", no.as_str());
}

/// Whether an incoming request id is acceptable as is.
fn well_formed_request_id(v: &[u8]) -> bool {
    (1..=64).contains(&v.len())
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

async fn drop_malformed_request_id(mut req: Request) -> Request {
    if req
        .headers()
        .get(REQUEST_ID_HEADER)
        .is_some_and(|v| !well_formed_request_id(v.as_bytes()))
    {
        req.headers_mut().remove(REQUEST_ID_HEADER);
    }
    req
}

/// Generates request ids: random UUIDs (32 hex digits).
#[derive(Debug, Clone, Copy)]
struct MakeUuidRequestId;

impl MakeRequestId for MakeUuidRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&uuid::Uuid::new_v4().simple().to_string())
            .ok()
            .map(RequestId::new)
    }
}

async fn api_not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"code": "NOT_FOUND", "message": "no such API endpoint"})),
    )
        .into_response()
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

async fn to_pay_directory(State(st): State<AppState>) -> Response {
    (
        StatusCode::FOUND,
        [(header::LOCATION, st.settings.pay_directory.clone())],
    )
        .into_response()
}

/// Serves the pay directory from `www_dir`, and `pkg/` from the wasm package.
/// Dotfiles, empty segments (`//`) and symlinks leading out of the served
/// directory are 404; a directory's redirect stays under the pay directory.
async fn static_file(State(st): State<AppState>, req: Request) -> Response {
    let s = &st.settings;
    let path = req.uri().path();
    let original_path = path.to_string();
    let rel = &path[s.pay_directory.len() - 1..]; // keeps the leading '/'
    let (root, rel) = match (&s.wasm_pkg_dir, rel.strip_prefix("/pkg")) {
        (Some(pkg), Some(rest)) if rest.is_empty() || rest.starts_with('/') => {
            (pkg.clone(), rest.to_string())
        }
        _ => (s.www_dir.clone(), rel.to_string()),
    };
    let rel = if rel.is_empty() { "/".to_string() } else { rel };
    let Some(segments) = served_segments(&rel) else {
        return not_found().await;
    };
    if !stays_inside(&root, &segments).await {
        return not_found().await;
    }
    let (mut parts, body) = req.into_parts();
    let new_uri = match parts.uri.query() {
        Some(q) => format!("{rel}?{q}"),
        None => rel,
    };
    parts.uri = match new_uri.parse::<Uri>() {
        Ok(u) => u,
        Err(_) => return not_found().await,
    };
    let resp = ServeDir::new(root)
        .oneshot(Request::from_parts(parts, body))
        .await
        .map(IntoResponse::into_response)
        .unwrap_or_else(|never| match never {});
    let mut resp = resp;
    if resp.status().is_redirection() {
        // ServeDir saw the path without the pay directory: its `dir` →
        // `dir/` redirect would leave the prefix (and `//x` would name
        // another host). Redirect to the full path instead.
        let location = match directory_redirect(&resp, &original_path) {
            Some(l) => l,
            None => return not_found().await,
        };
        match HeaderValue::from_str(&location) {
            Ok(v) => {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            Err(_) => return not_found().await,
        }
    }
    // The page changes with deployments: always revalidate (ETag/Last-Modified).
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// The directory redirect's target: the request's full path with a
/// trailing slash (and ServeDir's query, if any). `None` if it could be
/// read as another host.
fn directory_redirect(resp: &Response, original_path: &str) -> Option<String> {
    let query = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| l.split_once('?'))
        .map(|(_, q)| q.to_string());
    let mut location = format!("{}/", original_path.trim_end_matches('/'));
    if let Some(q) = query {
        location.push('?');
        location.push_str(&q);
    }
    (location.starts_with('/') && !location.starts_with("//") && !location.contains('\\'))
        .then_some(location)
}

/// The decoded segments of a served path, or `None` when it names a
/// dotfile or dot-directory (`.env`, `.git/`, `..`), has an empty segment
/// (`a//b`), or does not decode.
fn served_segments(rel: &str) -> Option<Vec<String>> {
    let inner = rel.strip_prefix('/')?;
    if inner.is_empty() {
        return Some(Vec::new());
    }
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    let mut out = Vec::new();
    for raw in inner.split('/') {
        let seg = percent_decode(raw)?;
        if seg.is_empty() || seg.starts_with('.') || seg.contains(['/', '\\', '\0']) {
            return None;
        }
        out.push(seg);
    }
    Some(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Whether the file (or the directory's `index.html`) that `segments` name
/// under `root` resolves inside `root`: a symlink out of the directory
/// (`passwd -> /etc/passwd`) is not served. A path that does not exist is
/// left to ServeDir (404).
async fn stays_inside(root: &std::path::Path, segments: &[String]) -> bool {
    let Ok(root) = tokio::fs::canonicalize(root).await else {
        return false;
    };
    let mut path = root.clone();
    path.extend(segments);
    let Ok(mut resolved) = tokio::fs::canonicalize(&path).await else {
        return true;
    };
    if tokio::fs::metadata(&resolved)
        .await
        .is_ok_and(|m| m.is_dir())
    {
        if let Ok(index) = tokio::fs::canonicalize(resolved.join("index.html")).await {
            resolved = index;
        }
    }
    resolved.starts_with(&root)
}

async fn api_config(State(st): State<AppState>) -> Json<serde_json::Value> {
    let s = &st.settings;
    let mut v = json!({
        "demo": s.demo,
        "app_id": s.appid,
        "pay_directory": s.pay_directory,
        "login_url": oauth::login_url(&s.pay_directory),
        "close_min_age_secs": s.orders.close_min_age_secs,
    });
    if s.demo {
        if let Some(base) = &s.simulator_base_url {
            v["simulator_base_url"] = json!(base);
            v["simulator_bridge_url"] = json!(format!("{base}/sim/bridge.js"));
        }
    }
    Json(v)
}

async fn api_session(session: Session) -> Json<serde_json::Value> {
    Json(json!({"signed_in": true, "openid_masked": mask_openid(&session.openid)}))
}

async fn api_catalog(State(st): State<AppState>) -> Json<serde_json::Value> {
    let items: Vec<_> = st
        .catalog
        .items()
        .iter()
        .map(|i| {
            json!({
                "sku": i.sku,
                "name": i.name,
                "price_fen": i.price_fen,
                "merchant": {"mchid": i.merchant.mchid, "name": i.merchant.name},
            })
        })
        .collect();
    Json(json!({ "items": items }))
}

async fn readyz(State(st): State<AppState>) -> Response {
    if let Err(e) = st.store.ping().await {
        tracing::warn!(error = %e, "readiness check failed");
        return (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response();
    }
    // `preferred_serial` is the public-key id, or the newest certificate
    // valid now: without either, no WeChat Pay signature can be verified.
    if let Some(verifier) = &st.verifier {
        if verifier.preferred_serial().is_none() {
            tracing::warn!(
                "readiness check failed: no WeChat Pay public key or valid platform certificate"
            );
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "no WeChat Pay public key or valid platform certificate",
            )
                .into_response();
        }
    }
    (StatusCode::OK, "ready").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_secure_exactly_over_https() {
        assert!(secure_cookies_for("https://shop.example"));
        assert!(secure_cookies_for("https://127.0.0.1:8443"));
        assert!(!secure_cookies_for("http://127.0.0.1:8080"));
        assert!(!secure_cookies_for("http://shop.example"));
    }

    #[test]
    fn the_policy_names_the_simulator_only_in_demo() {
        let prod = content_security_policy(None);
        let prod = prod.to_str().unwrap();
        assert!(
            prod.contains("script-src 'self' 'wasm-unsafe-eval';"),
            "{prod}"
        );
        assert!(prod.contains("frame-ancestors 'none'"), "{prod}");
        let demo = content_security_policy(Some("http://127.0.0.1:9999/"));
        let demo = demo.to_str().unwrap();
        assert!(
            demo.contains("script-src 'self' 'wasm-unsafe-eval' http://127.0.0.1:9999;"),
            "{demo}"
        );
        assert!(
            demo.contains("connect-src 'self' http://127.0.0.1:9999;"),
            "{demo}"
        );
    }

    #[test]
    fn served_paths_refuse_dotfiles_and_empty_segments() {
        assert_eq!(served_segments("/"), Some(vec![]));
        assert_eq!(
            served_segments("/pkg/a%20b.js"),
            Some(vec!["pkg".to_string(), "a b.js".to_string()])
        );
        for bad in [
            "/.env",
            "/%2eenv",
            "/a/.git/config",
            "//x",
            "/a//b",
            "/..",
            "/a%2fb",
            "/%zz",
        ] {
            assert_eq!(served_segments(bad), None, "{bad}");
        }
    }
}
