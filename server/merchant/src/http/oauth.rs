//! 公众号 web authorization (snsapi_base): how the server learns the payer's
//! openid under the configured appid.
//!
//! `GET /oauth/start?return=PATH` → 302 to the authorize page with a random
//! `state` bound to a sealed cookie; `GET /oauth/callback?code&state` checks
//! the state, consumes it (single use, recorded in the store), exchanges
//! the code server-side and sets the session cookie. Both routes are
//! rate-limited per client IP ([`super::limits`]).

use super::error::AppError;
use super::session::{OAuthData, Purpose, SessionData, OAUTH_COOKIE, SESSION_COOKIE};
use super::AppState;
use crate::apiv3::generate_nonce;
use crate::redact::mask_openid;
use async_trait::async_trait;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::Digest;
use std::time::Duration;
use url::Url;

/// How long the OAuth round trip may take (WeChat's code lives 5 minutes).
const OAUTH_COOKIE_TTL_SECS: i64 = 600;
/// Longest accepted `return` path.
const MAX_RETURN_LEN: usize = 512;

/// The payer's identity from a code exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthIdentity {
    /// openid under the configured appid.
    pub openid: String,
    /// `is_snapshotuser == 1`: a virtual user on a snapshot page, who cannot pay.
    pub is_snapshot_user: bool,
}

/// A failed code exchange.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthExchangeError {
    /// WeChat answered `{"errcode","errmsg"}`.
    #[error("errcode {errcode}: {errmsg}")]
    Service {
        /// The error code.
        errcode: i64,
        /// The message.
        errmsg: String,
    },
    /// Network failure.
    #[error("cannot reach the OAuth API: {0}")]
    Transport(String),
    /// An answer without openid or not JSON.
    #[error("unexpected answer from the OAuth API: {0}")]
    Decode(String),
}

/// Exchanges an OAuth `code` for the payer's openid.
#[async_trait]
pub trait OAuthClient: Send + Sync {
    /// `GET /sns/oauth2/access_token?appid&secret&code&grant_type=authorization_code`.
    async fn exchange_code(&self, code: &str) -> Result<OAuthIdentity, OAuthExchangeError>;
}

/// The real exchange over HTTPS.
pub struct HttpOAuthClient {
    http: reqwest::Client,
    api_base: Url,
    appid: String,
    secret: SecretString,
}

impl std::fmt::Debug for HttpOAuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpOAuthClient")
            .field("api_base", &self.api_base.as_str())
            .field("appid", &self.appid)
            .finish_non_exhaustive()
    }
}

impl HttpOAuthClient {
    /// A client for `appid` with its AppSecret.
    pub fn new(
        api_base: Url,
        appid: String,
        secret: SecretString,
        timeout: Duration,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .user_agent(crate::combine::client::user_agent())
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            http,
            api_base,
            appid,
            secret,
        })
    }
}

#[async_trait]
impl OAuthClient for HttpOAuthClient {
    async fn exchange_code(&self, code: &str) -> Result<OAuthIdentity, OAuthExchangeError> {
        let mut url = self.api_base.clone();
        url.set_path(&format!(
            "{}/sns/oauth2/access_token",
            self.api_base.path().trim_end_matches('/')
        ));
        url.query_pairs_mut()
            .append_pair("appid", &self.appid)
            .append_pair("secret", self.secret.expose_secret())
            .append_pair("code", code)
            .append_pair("grant_type", "authorization_code");
        // The URL carries the AppSecret: strip it from any error text.
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| OAuthExchangeError::Transport(e.without_url().to_string()))?;
        let body = resp
            .bytes()
            .await
            .map_err(|e| OAuthExchangeError::Transport(e.without_url().to_string()))?;
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            errcode: i64,
            #[serde(default)]
            errmsg: String,
            #[serde(default)]
            openid: String,
            #[serde(default)]
            is_snapshotuser: i64,
        }
        let a: Answer =
            serde_json::from_slice(&body).map_err(|e| OAuthExchangeError::Decode(e.to_string()))?;
        if a.errcode != 0 {
            return Err(OAuthExchangeError::Service {
                errcode: a.errcode,
                errmsg: a.errmsg.chars().take(200).collect(),
            });
        }
        if a.openid.is_empty() || a.openid.len() > 128 {
            return Err(OAuthExchangeError::Decode("no openid in the answer".into()));
        }
        Ok(OAuthIdentity {
            openid: a.openid,
            is_snapshot_user: a.is_snapshotuser == 1,
        })
    }
}

/// The error code and an explanation naming the likely cause, for the
/// authorize-page and code-exchange error codes.
pub fn explain_errcode(errcode: i64) -> (&'static str, &'static str) {
    match errcode {
        10003 => (
            "OAUTH_REDIRECT_DOMAIN",
            "redirect_uri域名与后台配置不一致 (10003): the host of redirect_uri is not the 网页授权域名 configured \
             for this 公众号 (公众平台 → 设置与开发 → 公众号设置 → 功能设置 → 网页授权域名; host only, no port), or the \
             AppID used for login differs from the AppID used to order",
        ),
        10004 => ("OAUTH_ACCOUNT_BANNED", "此公众号被封禁 (10004): the 公众号 is banned"),
        10005 => (
            "OAUTH_NO_SCOPE",
            "此公众号并没有这些scope的权限 (10005): the 公众号 has no web-authorization permission — subscription \
             accounts (订阅号) and unverified accounts cannot use it; use a verified service account (认证服务号), \
             check the AppID and that its verification has not expired",
        ),
        10006 => ("OAUTH_MUST_FOLLOW", "必须关注此测试号 (10006): follow the test account first"),
        10009 => ("OAUTH_TOO_FREQUENT", "操作太频繁了 (10009): too many authorizations; wait and retry"),
        10010..=10013 => (
            "OAUTH_BAD_REQUEST",
            "the authorize URL is missing scope, redirect_uri, appid or state (1001x); check appid in the configuration",
        ),
        10015 => ("OAUTH_NOT_AUTHORIZED", "公众号未授权第三方平台 (10015)"),
        10016 => ("OAUTH_BAD_APPID", "不支持微信开放平台的Appid (10016): use the 公众号 AppID, not an Open Platform AppID"),
        40029 | 40163 => (
            "OAUTH_CODE_INVALID",
            "the authorization code is invalid, already used or expired (codes are single-use and live 5 minutes); \
             start the login again",
        ),
        40125 => ("OAUTH_BAD_SECRET", "invalid appsecret (40125): app_secret_file does not hold this 公众号's AppSecret"),
        40013 => ("OAUTH_BAD_APPID", "invalid appid (40013): check appid in the configuration"),
        41008 => ("OAUTH_CODE_MISSING", "missing code (41008): start the login again"),
        _ => ("OAUTH_FAILED", "WeChat refused the authorization"),
    }
}

/// Checks a `return` value: a same-site relative path under the pay
/// directory, so the callback can never redirect elsewhere.
pub fn validate_return(pay_directory: &str, value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Ok(pay_directory.to_string());
    }
    if value.len() > MAX_RETURN_LEN {
        return Err(format!("return is longer than {MAX_RETURN_LEN} characters"));
    }
    if !value.starts_with('/') || value.starts_with("//") {
        return Err("return must be a path on this site, starting with a single /".into());
    }
    if value
        .chars()
        .any(|c| c.is_control() || c == '\\' || c.is_whitespace())
    {
        return Err("return must not contain backslashes, whitespace or control characters".into());
    }
    // Resolve against a dummy origin: anything that leaves it, or lands
    // outside the pay directory after normalisation (`..`, `%2e%2e`), fails.
    let base = Url::parse("https://same.invalid/").expect("static URL");
    let resolved = base
        .join(value)
        .map_err(|_| "return is not a valid path".to_string())?;
    if resolved.origin() != base.origin() {
        return Err("return must stay on this site".into());
    }
    let path = resolved.path();
    let lower = path.to_ascii_lowercase();
    if !path.starts_with(pay_directory)
        || lower.contains("%2e")
        || lower.contains("%2f")
        || lower.contains("%5c")
    {
        return Err(format!(
            "return must be under the pay directory {pay_directory}"
        ));
    }
    let mut out = path.to_string();
    if let Some(q) = resolved.query() {
        out.push('?');
        out.push_str(q);
    }
    if let Some(f) = resolved.fragment() {
        out.push('#');
        out.push_str(f);
    }
    Ok(out)
}

/// The authorize URL, parameters in the order the service insists on.
pub fn authorize_url(authorize_base: &Url, appid: &str, redirect_uri: &str, state: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "{}?appid={}&redirect_uri={}&response_type=code&scope=snsapi_base&state={}#wechat_redirect",
        authorize_base.as_str().trim_end_matches('?'),
        enc(appid),
        enc(redirect_uri),
        enc(state)
    )
}

/// The login URL that returns to `return_to` (the pay directory by default).
pub fn login_url(return_to: &str) -> String {
    format!(
        "/oauth/start?return={}",
        url::form_urlencoded::byte_serialize(return_to.as_bytes()).collect::<String>()
    )
}

/// Query of `/oauth/start`.
#[derive(Debug, Deserialize)]
pub struct StartQuery {
    /// Where to go after login.
    #[serde(rename = "return", default)]
    pub return_to: String,
}

/// Query of `/oauth/callback`.
#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    /// The code (absent when the user refused).
    #[serde(default)]
    pub code: Option<String>,
    /// The state echoed back.
    #[serde(default)]
    pub state: Option<String>,
    /// Some test doubles report authorize-page errors here.
    #[serde(default)]
    pub errcode: Option<i64>,
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

fn respond(headers: &HeaderMap, result: Result<Response, AppError>) -> Response {
    match result {
        Ok(r) => r,
        Err(e) if wants_html(headers) => e.into_html_response(),
        Err(e) => e.into_response(),
    }
}

fn redirect(location: &str, cookies: &[String]) -> Response {
    let mut resp = (
        StatusCode::FOUND,
        [(http::header::LOCATION, location.to_string())],
    )
        .into_response();
    for c in cookies {
        if let Ok(v) = c.parse() {
            resp.headers_mut().append(http::header::SET_COOKIE, v);
        }
    }
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp
}

/// `GET /oauth/start?return=PATH`.
pub async fn start(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<StartQuery>,
) -> Response {
    let result = (|| {
        let s = &st.settings;
        let return_to =
            validate_return(&s.pay_directory, &q.return_to).map_err(|detail| AppError::OAuth {
                status: StatusCode::BAD_REQUEST,
                code: "OAUTH_BAD_RETURN",
                message: detail,
                login_url: Some(login_url(&s.pay_directory)),
            })?;
        let state = generate_nonce();
        let data = OAuthData {
            state: state.clone(),
            return_to,
            expires_at: st.clock.now() + OAUTH_COOKIE_TTL_SECS,
        };
        let cookie = st.cookies.set_cookie(
            OAUTH_COOKIE,
            &st.cookies.seal(Purpose::OAuth, &data),
            "/oauth/",
            OAUTH_COOKIE_TTL_SECS,
        );
        let target = authorize_url(
            &s.oauth_authorize_url,
            &s.appid,
            &s.oauth_redirect_uri,
            &state,
        );
        Ok(redirect(&target, &[cookie]))
    })();
    respond(&headers, result)
}

/// `GET /oauth/callback?code&state`.
pub async fn callback(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let result = callback_inner(&st, &headers, q).await;
    respond(&headers, result)
}

async fn callback_inner(
    st: &AppState,
    headers: &HeaderMap,
    q: CallbackQuery,
) -> Result<Response, AppError> {
    let s = &st.settings;
    let now = st.clock.now();
    let restart = || Some(login_url(&s.pay_directory));
    let oauth = super::session::read_cookie(headers, OAUTH_COOKIE)
        .and_then(|v| st.cookies.open::<OAuthData>(Purpose::OAuth, v, now))
        .ok_or_else(|| AppError::OAuth {
            status: StatusCode::BAD_REQUEST,
            code: "OAUTH_STATE_MISSING",
            message: "the login took too long or cookies are blocked (no valid login cookie); start the login again"
                .into(),
            login_url: restart(),
        })?;
    let state_ok = q.state.as_deref().is_some_and(|got| {
        // Both are ours or attacker-chosen ASCII; compare without early exit.
        got.len() == oauth.state.len()
            && got
                .bytes()
                .zip(oauth.state.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if !state_ok {
        return Err(AppError::OAuth {
            status: StatusCode::BAD_REQUEST,
            code: "OAUTH_STATE_MISMATCH",
            message: "the login state does not match this browser's login (a stale or forged callback); start the \
                      login again"
                .into(),
            login_url: restart(),
        });
    }
    // Single use, before anything reaches WeChat: a used state (and its
    // cookie) cannot complete a second login, on any instance sharing the
    // database. Only the state's hash is stored, until the cookie expires.
    let state_hash = hex::encode(sha2::Sha256::digest(oauth.state.as_bytes()));
    if !st
        .store
        .consume_oauth_state(&state_hash, oauth.expires_at, now)
        .await?
    {
        tracing::warn!("OAuth callback with an already used state refused");
        return Err(AppError::OAuth {
            status: StatusCode::BAD_REQUEST,
            code: "OAUTH_STATE_USED",
            message:
                "this login was already completed (a login link works once); start the login again"
                    .into(),
            login_url: restart(),
        });
    }
    if let Some(errcode) = q.errcode {
        let (code, message) = explain_errcode(errcode);
        return Err(AppError::OAuth {
            status: StatusCode::BAD_GATEWAY,
            code,
            message: message.into(),
            login_url: restart(),
        });
    }
    let Some(code) = q.code.filter(|c| !c.is_empty() && c.len() <= 512) else {
        return Err(AppError::OAuth {
            status: StatusCode::FORBIDDEN,
            code: "OAUTH_DENIED",
            message: "the authorization was refused (no code); the payer's openid is needed to pay"
                .into(),
            login_url: restart(),
        });
    };
    let identity = st.oauth.exchange_code(&code).await.map_err(|e| match e {
        OAuthExchangeError::Service { errcode, errmsg } => {
            let (code, message) = explain_errcode(errcode);
            tracing::warn!(errcode, errmsg = %errmsg, "OAuth code exchange refused");
            AppError::OAuth {
                status: if matches!(errcode, 40029 | 40163 | 41008) {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::BAD_GATEWAY
                },
                code,
                message: message.into(),
                login_url: restart(),
            }
        }
        other => {
            tracing::warn!(error = %other, "OAuth code exchange failed");
            AppError::OAuth {
                status: StatusCode::BAD_GATEWAY,
                code: "OAUTH_UNAVAILABLE",
                message: "the WeChat login service could not be reached; try again".into(),
                login_url: restart(),
            }
        }
    })?;
    if identity.is_snapshot_user {
        return Err(AppError::OAuth {
            status: StatusCode::FORBIDDEN,
            code: "OAUTH_SNAPSHOT_USER",
            message:
                "the page was opened in WeChat's snapshot mode (快照页); open it normally to pay"
                    .into(),
            login_url: restart(),
        });
    }
    tracing::info!(openid = %mask_openid(&identity.openid), "payer signed in");
    let session = SessionData {
        openid: identity.openid,
        expires_at: now + s.session_ttl_secs,
    };
    let mut cookies = vec![
        st.cookies.set_cookie(
            st.cookies.session_cookie_name(),
            &st.cookies.seal(Purpose::Session, &session),
            "/",
            s.session_ttl_secs,
        ),
        st.cookies.clear_cookie(OAUTH_COOKIE, "/oauth/"),
    ];
    if st.cookies.session_cookie_name() != SESSION_COOKIE {
        // A session cookie of the former name (and format) is dead weight.
        cookies.push(st.cookies.clear_cookie(SESSION_COOKIE, "/"));
    }
    Ok(redirect(&oauth.return_to, &cookies))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_paths() {
        let ok = |v: &str| validate_return("/pay/", v);
        assert_eq!(ok("").unwrap(), "/pay/");
        assert_eq!(ok("/pay/").unwrap(), "/pay/");
        assert_eq!(
            ok("/pay/index.html?o=C1#/orders").unwrap(),
            "/pay/index.html?o=C1#/orders"
        );
        for bad in [
            "https://evil.example/pay/",
            "//evil.example/pay/",
            "/\\evil.example/pay/",
            "pay/",
            "/api/catalog",
            "/pay/../api/",
            "/pay/%2e%2e/api/",
            "/pay/%2E%2E/x",
            "/payx/",
            "/pay",
            "/pay/\n",
            "javascript:alert(1)",
        ] {
            assert!(ok(bad).is_err(), "{bad:?} accepted");
        }
        assert!(ok(&format!("/pay/{}", "a".repeat(600))).is_err());
    }

    #[test]
    fn authorize_url_has_the_exact_parameter_order() {
        let base = Url::parse("https://open.weixin.qq.com/connect/oauth2/authorize").unwrap();
        let u = authorize_url(
            &base,
            "wx123",
            "https://shop.example/oauth/callback",
            "AbC123",
        );
        assert_eq!(
            u,
            "https://open.weixin.qq.com/connect/oauth2/authorize?appid=wx123&redirect_uri=https%3A%2F%2Fshop.example%2Foauth%2Fcallback&response_type=code&scope=snsapi_base&state=AbC123#wechat_redirect"
        );
    }

    #[test]
    fn errcodes_name_the_cause() {
        assert!(explain_errcode(10003).1.contains("网页授权域名"));
        assert!(explain_errcode(10005).1.contains("订阅号"));
        assert!(explain_errcode(40029).1.contains("start the login again"));
        assert_eq!(explain_errcode(40029).0, "OAUTH_CODE_INVALID");
    }
}
