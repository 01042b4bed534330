//! Who may call the internal API: whoever presents the bearer token (the
//! contents of `internal_token_file`). Every route, unknown paths included,
//! sits behind [`require_bearer`], so a caller without the token learns
//! nothing about which paths exist.

use super::views::ErrorView;
use super::HmacSha256;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hmac::{KeyInit, Mac};
use std::sync::Arc;

/// Checks bearer tokens in constant time: both sides are MACed under a
/// per-process random key and the tags compared with `verify_slice`, so
/// neither the content nor the length of the expected token leaks through
/// timing.
#[derive(Clone)]
pub struct TokenCheck {
    key: [u8; 32],
    expected: Vec<u8>,
}

impl std::fmt::Debug for TokenCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCheck(…)")
    }
}

impl TokenCheck {
    /// A checker accepting exactly `token`.
    pub fn new(token: &str) -> Self {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the OS random source works");
        let expected = Self::tag(&key, token.as_bytes());
        Self { key, expected }
    }

    fn tag(key: &[u8], v: &[u8]) -> Vec<u8> {
        let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
        m.update(v);
        m.finalize().into_bytes().to_vec()
    }

    /// Whether `presented` is the token.
    pub fn verify(&self, presented: &[u8]) -> bool {
        let mut m = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(presented);
        m.verify_slice(&self.expected).is_ok()
    }
}

/// The middleware in front of every route: `Authorization: Bearer <token>`
/// (scheme case-insensitive) with the right token passes; anything else is
/// 401 with a `WWW-Authenticate: Bearer` challenge, which says
/// `error="invalid_token"` only when a token was sent. The token itself is
/// never logged.
pub(super) async fn require_bearer(
    State(auth): State<Arc<TokenCheck>>,
    req: Request,
    next: Next,
) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_string())
        });
    match presented {
        Some(t) if auth.verify(t.as_bytes()) => next.run(req).await,
        Some(_) => {
            tracing::warn!("internal API: wrong bearer token");
            unauthorized(r#"Bearer realm="wxpay-combine", error="invalid_token""#)
        }
        None => unauthorized(r#"Bearer realm="wxpay-combine""#),
    }
}

fn unauthorized(challenge: &'static str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        )],
        Json(ErrorView::new(
            "UNAUTHORIZED",
            "send Authorization: Bearer <internal API token>",
        )),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_check_accepts_only_the_token() {
        let c = TokenCheck::new("0123456789abcdef0123456789abcdef");
        assert!(c.verify(b"0123456789abcdef0123456789abcdef"));
        assert!(!c.verify(b"0123456789abcdef0123456789abcdeF"));
        assert!(!c.verify(b"0123456789abcdef0123456789abcde"));
        assert!(!c.verify(b""));
    }
}
