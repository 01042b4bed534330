//! OAuth2 web authorisation of the official account (reference §10): the
//! authorize redirect and the code→openid exchange.
//!
//! Inside WeChat the authorize page shows nothing for `snsapi_base`: it
//! redirects at once with a single-use code valid five minutes. Errors are a
//! small page carrying the documented error code.

use super::ids;
use super::SimState;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;
use wxpay_combine_core::apiv3::{generate_nonce, Clock};

/// An authorisation code's lifetime.
pub const CODE_TTL_SECS: i64 = 300;

/// The order the real service insists on.
const PARAM_ORDER: [&str; 5] = ["appid", "redirect_uri", "response_type", "scope", "state"];

fn error_page(code: u32, message: &str) -> Response {
    let body = format!(
        "<!doctype html><meta charset=\"utf-8\"><title>微信授权错误</title>\
         <p id=\"wxsim-error\" data-errcode=\"{code}\">{code} {}</p>",
        message.replace('&', "&amp;").replace('<', "&lt;")
    );
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Whether `host` is one of the authorised domains (ports never count).
fn domain_allowed(st: &SimState, host: &str) -> bool {
    st.oauth_domains
        .iter()
        .any(|d| d.eq_ignore_ascii_case(host))
}

/// `GET /connect/oauth2/authorize`.
pub async fn authorize(State(st): State<Arc<SimState>>, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let positions: Vec<usize> = pairs
        .iter()
        .filter_map(|(n, _)| PARAM_ORDER.iter().position(|p| p == n))
        .collect();
    if positions.windows(2).any(|w| w[0] >= w[1]) {
        return error_page(
            10001,
            "参数错误：参数须按 appid、redirect_uri、response_type、scope、state 的顺序排列",
        );
    }
    let Some(appid) = get("appid").filter(|a| !a.is_empty()) else {
        return error_page(10012, "appid不能为空");
    };
    let Some(redirect) = get("redirect_uri").filter(|r| !r.is_empty()) else {
        return error_page(10011, "redirect_uri不能为空");
    };
    if get("response_type") != Some("code") {
        return error_page(10001, "参数错误：response_type 必须为 code");
    }
    match get("scope") {
        None | Some("") => return error_page(10010, "scope不能为空"),
        Some("snsapi_base" | "snsapi_userinfo") => {}
        Some(_) => return error_page(10005, "此公众号并没有这些scope的权限"),
    }
    if st.merchant_by_appid(appid).is_none() {
        return error_page(10016, "appid无效：模拟器中没有该公众号");
    }
    let state = get("state").unwrap_or("");
    if state.len() > 128 {
        return error_page(10001, "参数错误：state 最多128字节");
    }
    let Ok(mut target) = url::Url::parse(redirect) else {
        return error_page(10003, "redirect_uri参数错误");
    };
    let host_ok = matches!(target.scheme(), "http" | "https")
        && target
            .host_str()
            .map(|h| domain_allowed(&st, h.trim_start_matches('[').trim_end_matches(']')))
            .unwrap_or(false);
    if !host_ok {
        return error_page(10003, "redirect_uri域名与后台配置不一致");
    }
    let user = get("user")
        .filter(|u| !u.is_empty() && u.chars().count() <= 64)
        .unwrap_or(ids::DEMO_USER);
    let openid = ids::openid(appid, user);
    let code = generate_nonce();
    let now = st.clock.now();
    let stored = async {
        st.db.remember_user(appid, &openid, user).await?;
        st.db.insert_code(&code, appid, &openid, now).await
    }
    .await;
    if let Err(e) = stored {
        tracing::error!(error = %e, "could not store an OAuth code");
        return error_page(10001, "系统错误");
    }
    target
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", state);
    (StatusCode::FOUND, [(header::LOCATION, target.to_string())]).into_response()
}

fn wx_error(errcode: i64, errmsg: &str) -> Response {
    let rid = format!(
        "{}-{}-{}",
        ids::hex_lower(8),
        ids::hex_lower(8),
        ids::hex_lower(8)
    );
    wx_json(json!({"errcode": errcode, "errmsg": format!("{errmsg}, rid: {rid}")}))
}

fn wx_json(v: serde_json::Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; encoding=utf-8")],
        v.to_string(),
    )
        .into_response()
}

/// `GET /sns/oauth2/access_token?appid&secret&code&grant_type=authorization_code`.
pub async fn access_token(State(st): State<Arc<SimState>>, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let Some(m) = st.merchant_by_appid(get("appid")).cloned() else {
        return wx_error(40013, "invalid appid");
    };
    if get("secret") != m.creds.app_secret {
        return wx_error(40125, "invalid appsecret");
    }
    if get("grant_type") != "authorization_code" {
        return wx_error(40002, "invalid grant_type");
    }
    let code = get("code");
    if code.is_empty() {
        return wx_error(41008, "missing code");
    }
    let _guard = st.write_lock.lock().await;
    let row = match st.db.take_code(code).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "could not read an OAuth code");
            return wx_error(-1, "system error");
        }
    };
    let now = st.clock.now();
    match row {
        Some(r)
            if r.used == 0 && r.appid == m.creds.appid && now - r.created_at <= CODE_TTL_SECS =>
        {
            wx_json(json!({
                "access_token": format!("{}{}", generate_nonce(), generate_nonce()),
                "expires_in": 7200,
                "refresh_token": format!("{}{}", generate_nonce(), generate_nonce()),
                "openid": r.openid,
                "scope": "snsapi_base",
            }))
        }
        _ => wx_error(40029, "invalid code"),
    }
}
