//! Signed cookies: the payer's session (openid) and the OAuth round trip
//! (state + return path).
//!
//! A cookie value is `base64url(payload) "." base64url(HMAC-SHA256(key,
//! purpose "\n" payload))`. The purpose label keeps one kind of cookie from
//! being replayed as the other; the payload carries its own expiry.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{KeyInit, Mac};
use http::HeaderMap;
use secrecy::{ExposeSecret, SecretSlice};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Name of the payer session cookie.
pub const SESSION_COOKIE: &str = "wxpay_session";
/// Name of the OAuth round-trip cookie.
pub const OAUTH_COOKIE: &str = "wxpay_oauth";

/// What a signed cookie is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The payer session.
    Session,
    /// The OAuth state.
    OAuth,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Session => b"wxpay-session-v1",
            Purpose::OAuth => b"wxpay-oauth-v1",
        }
    }
}

/// The payer session: who is paying.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionData {
    /// The payer's openid under the configured appid.
    #[serde(rename = "o")]
    pub openid: String,
    /// Expiry, Unix seconds.
    #[serde(rename = "x")]
    pub expires_at: i64,
}

/// The OAuth round trip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthData {
    /// The `state` sent to the authorize page.
    #[serde(rename = "s")]
    pub state: String,
    /// Where to go afterwards (a path under the pay directory).
    #[serde(rename = "r")]
    pub return_to: String,
    /// Expiry, Unix seconds.
    #[serde(rename = "x")]
    pub expires_at: i64,
}

/// Something with an expiry.
pub trait Expiring {
    /// Unix seconds after which it is void.
    fn expires_at(&self) -> i64;
}

impl Expiring for SessionData {
    fn expires_at(&self) -> i64 {
        self.expires_at
    }
}

impl Expiring for OAuthData {
    fn expires_at(&self) -> i64 {
        self.expires_at
    }
}

/// Signs and opens cookie values.
#[derive(Debug, Clone)]
pub struct CookieSigner {
    secret: SecretSlice<u8>,
    secure: bool,
}

impl CookieSigner {
    /// A signer with the key `secret` (the configuration requires at least
    /// [`super::settings::MIN_SESSION_SECRET_LEN`] bytes); `secure` adds the
    /// `Secure` attribute (everywhere but demo).
    pub fn new(secret: SecretSlice<u8>, secure: bool) -> Self {
        Self { secret, secure }
    }

    fn mac(&self, purpose: Purpose, payload: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(self.secret.expose_secret())
            .expect("HMAC takes any key length");
        mac.update(purpose.label());
        mac.update(b"\n");
        mac.update(payload);
        mac
    }

    /// The signed value for `data`.
    pub fn seal<T: Serialize>(&self, purpose: Purpose, data: &T) -> String {
        let payload = serde_json::to_vec(data).expect("cookie payloads serialise");
        let tag = self.mac(purpose, &payload).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// Opens a signed value: checks the MAC (constant time), parses, and
    /// refuses it once expired.
    pub fn open<T: DeserializeOwned + Expiring>(
        &self,
        purpose: Purpose,
        value: &str,
        now: i64,
    ) -> Option<T> {
        let (payload_b64, tag_b64) = value.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload_b64).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag_b64).ok()?;
        self.mac(purpose, &payload).verify_slice(&tag).ok()?;
        let data: T = serde_json::from_slice(&payload).ok()?;
        (data.expires_at() > now).then_some(data)
    }

    /// A `Set-Cookie` value: HttpOnly, SameSite=Lax, Secure outside demo.
    pub fn set_cookie(&self, name: &str, value: &str, path: &str, max_age_secs: i64) -> String {
        format!(
            "{name}={value}; Path={path}; Max-Age={max_age_secs}; HttpOnly; SameSite=Lax{}",
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// A `Set-Cookie` value that deletes the cookie.
    pub fn clear_cookie(&self, name: &str, path: &str) -> String {
        self.set_cookie(name, "", path, 0)
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn read_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> CookieSigner {
        CookieSigner::new(SecretSlice::from(vec![7u8; 32]), true)
    }

    #[test]
    fn seal_open_round_trip_and_expiry() {
        let s = signer();
        let data = SessionData {
            openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
            expires_at: 1000,
        };
        let v = s.seal(Purpose::Session, &data);
        assert_eq!(s.open::<SessionData>(Purpose::Session, &v, 999), Some(data));
        assert_eq!(s.open::<SessionData>(Purpose::Session, &v, 1000), None);
    }

    #[test]
    fn tampering_wrong_key_and_wrong_purpose_are_refused() {
        let s = signer();
        let data = SessionData {
            openid: "o1".into(),
            expires_at: 1000,
        };
        let v = s.seal(Purpose::Session, &data);
        assert!(s.open::<SessionData>(Purpose::OAuth, &v, 0).is_none());
        let other = CookieSigner::new(SecretSlice::from(vec![8u8; 32]), true);
        assert!(other.open::<SessionData>(Purpose::Session, &v, 0).is_none());
        let forged_payload = URL_SAFE_NO_PAD.encode(br#"{"o":"o2","x":1000}"#);
        let tag = v.split_once('.').unwrap().1;
        assert!(s
            .open::<SessionData>(Purpose::Session, &format!("{forged_payload}.{tag}"), 0)
            .is_none());
        assert!(s
            .open::<SessionData>(Purpose::Session, "garbage", 0)
            .is_none());
    }

    #[test]
    fn cookie_attributes_and_lookup() {
        let s = signer();
        let c = s.set_cookie(SESSION_COOKIE, "abc", "/", 60);
        assert_eq!(
            c,
            "wxpay_session=abc; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure"
        );
        let demo = CookieSigner::new(SecretSlice::from(vec![7u8; 32]), false);
        assert!(!demo.set_cookie("a", "b", "/", 1).contains("Secure"));
        let mut h = HeaderMap::new();
        h.append(
            http::header::COOKIE,
            "a=1; wxpay_session=xyz".parse().unwrap(),
        );
        h.append(http::header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(read_cookie(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(read_cookie(&h, "b"), Some("2"));
        assert_eq!(read_cookie(&h, "c"), None);
    }
}
