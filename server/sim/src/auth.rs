//! Request authentication (the merchant's `Authorization` signature) and
//! response signing (the `Wechatpay-*` headers), as the real service does.

use super::credentials::Merchant;
use super::error::ApiError;
use super::SimState;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use wxpay_combine_core::apiv3::{
    generate_nonce, request_message, response_message, timestamp_skew, Authorization, Clock,
    MAX_REQUEST_SKEW_SECS, SIGNATURE_TYPE,
};

/// 401 `SIGN_ERROR`'s message when `serial_no` is not the merchant's API
/// certificate serial, as the real service words it.
pub const WRONG_SERIAL_MESSAGE: &str = "商户证书序列号有误。";

/// An authenticated merchant request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The merchant that signed.
    pub merchant: Arc<Merchant>,
    /// The request's `Wechatpay-Serial`, if sent.
    pub requested_serial: Option<String>,
}

/// `Accept` and `User-Agent` are required on every APIv3 request.
pub fn check_required_headers(headers: &HeaderMap) -> Result<(), ApiError> {
    let present = |h: HeaderName| {
        headers
            .get(h)
            .map(|v| !v.as_bytes().is_empty())
            .unwrap_or(false)
    };
    if present(header::ACCEPT) && present(header::USER_AGENT) {
        Ok(())
    } else {
        Err(ApiError::invalid_request("Http头缺少Accept或User-Agent"))
    }
}

/// The request's `Wechatpay-Serial` header.
pub fn requested_serial(headers: &HeaderMap) -> Option<String> {
    headers
        .get("wechatpay-serial")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The merchant an `Authorization` header names, even if it does not verify
/// (used to sign error answers).
pub fn claimed_merchant(st: &SimState, headers: &HeaderMap) -> Option<Arc<Merchant>> {
    let h = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    st.account(&Authorization::parse(h).ok()?.mchid).cloned()
}

fn sign_information(method: &str, url: &str, message: &[u8]) -> Value {
    let shown: String = String::from_utf8_lossy(&message[..message.len().min(64)]).into_owned();
    json!({
        "method": method,
        "sign_message_length": message.len(),
        "truncated_sign_message": shown,
        "url": url,
    })
}

/// Verifies `Authorization` over the exact method, path-and-query and body
/// bytes received.
pub fn authenticate(
    st: &SimState,
    method: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Caller, ApiError> {
    let no_info = || sign_information(method, path_and_query, b"");
    let raw = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::sign_error(
                "authorization",
                "Authorization header is missing",
                no_info(),
            )
        })?
        .to_str()
        .map_err(|_| {
            ApiError::sign_error(
                "authorization",
                "Authorization header is not ASCII",
                no_info(),
            )
        })?;
    let auth = Authorization::parse(raw)
        .map_err(|e| ApiError::sign_error("authorization", &e.to_string(), no_info()))?;
    // Any merchant with credentials, verified with its own key.
    let merchant = st
        .account(&auth.mchid)
        .cloned()
        .ok_or_else(|| ApiError::sign_error("mchid", "mchid does not exist", no_info()))?;
    if !auth
        .serial_no
        .eq_ignore_ascii_case(&merchant.creds.serial_no)
    {
        // The real service's own words for a serial that is not the
        // merchant's API certificate (observed: no `detail`).
        return Err(
            ApiError::new(StatusCode::UNAUTHORIZED, "SIGN_ERROR", WRONG_SERIAL_MESSAGE)
                .with_internal(268_443_699),
        );
    }
    let (ts, skew) = timestamp_skew(st.clock.now(), &auth.timestamp).ok_or_else(|| {
        ApiError::sign_error("timestamp", "timestamp must be Unix seconds", no_info())
    })?;
    if skew.saturating_abs() > MAX_REQUEST_SKEW_SECS {
        return Err(ApiError::sign_error(
            "timestamp",
            &format!("timestamp is {skew} s away from the server clock (more than 5 minutes)"),
            no_info(),
        ));
    }
    if auth.nonce_str.is_empty() {
        return Err(ApiError::sign_error(
            "nonce_str",
            "nonce_str is empty",
            no_info(),
        ));
    }
    let message = request_message(method, path_and_query, ts, &auth.nonce_str, body);
    if !merchant
        .api_public_key
        .verify_base64(&message, &auth.signature)
    {
        return Err(ApiError::sign_error(
            "signature",
            "sign not match",
            sign_information(method, path_and_query, &message),
        ));
    }
    Ok(Caller {
        merchant,
        requested_serial: requested_serial(headers),
    })
}

/// The `Wechatpay-*` headers signing `body` for `merchant`, choosing the key
/// the request's serial asks for (migration rule).
pub fn response_signature(
    st: &SimState,
    merchant: &Merchant,
    requested_serial: Option<&str>,
    body: &[u8],
) -> Vec<(HeaderName, HeaderValue)> {
    let now = st.clock.now();
    let Some(choice) = merchant.platform.response_key(requested_serial, now) else {
        return Vec::new();
    };
    signature_headers(now, choice.serial, choice.key, body, None)
}

/// `Wechatpay-Timestamp/-Nonce/-Signature/-Serial/-Signature-Type`. With
/// `probe`, the signature is a `WECHATPAY/SIGNTEST/` probe instead.
pub fn signature_headers(
    now: i64,
    serial: &str,
    key: &wxpay_combine_core::apiv3::PrivateKey,
    body: &[u8],
    probe: Option<&str>,
) -> Vec<(HeaderName, HeaderValue)> {
    let ts = now.to_string();
    let nonce = generate_nonce();
    let signature = match probe {
        Some(p) => p.to_string(),
        None => match key.sign_base64(&response_message(&ts, &nonce, body)) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "response signing failed");
                return Vec::new();
            }
        },
    };
    let pairs = [
        ("wechatpay-timestamp", ts),
        ("wechatpay-nonce", nonce),
        ("wechatpay-signature", signature),
        ("wechatpay-serial", serial.to_string()),
        ("wechatpay-signature-type", SIGNATURE_TYPE.to_string()),
    ];
    pairs
        .into_iter()
        .filter_map(|(n, v)| Some((HeaderName::from_static(n), HeaderValue::from_str(&v).ok()?)))
        .collect()
}
