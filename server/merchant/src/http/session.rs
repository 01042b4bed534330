//! Sealed cookies: the payer's session (openid) and the OAuth round trip
//! (state + return path).
//!
//! A cookie value is `base64url(nonce ‖ AES-256-GCM(key, nonce, purpose,
//! payload))`: encrypted and authenticated, so the openid is not readable
//! in the browser or in a proxy's log. The key is derived from the session
//! secret; the purpose label (the associated data) keeps one kind of cookie
//! from being replayed as the other; the payload carries its own expiry.
//! Values of the former signed-only format simply do not open (the payer
//! signs in again).

use crate::apiv3::backend::default_backend;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{KeyInit, Mac};
use http::HeaderMap;
use secrecy::{ExposeSecret, SecretSlice};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// GCM nonce length.
const NONCE_LEN: usize = 12;
/// GCM tag length.
const TAG_LEN: usize = 16;

/// Name of the payer session cookie over plain HTTP (the demo).
pub const SESSION_COOKIE: &str = "wxpay_session";
/// Name of the payer session cookie over HTTPS: the `__Host-` prefix makes
/// the browser refuse it unless `Secure`, `Path=/` and host-only, so a
/// sibling subdomain cannot plant or shadow it.
pub const SECURE_SESSION_COOKIE: &str = "__Host-wxpay_session";
/// Name of the OAuth round-trip cookie.
pub const OAUTH_COOKIE: &str = "wxpay_oauth";

/// What a sealed cookie is for.
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

/// Seals and opens cookie values.
#[derive(Clone)]
pub struct CookieSigner {
    key: SecretSlice<u8>,
    secure: bool,
}

impl std::fmt::Debug for CookieSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieSigner")
            .field("secure", &self.secure)
            .finish_non_exhaustive()
    }
}

impl CookieSigner {
    /// A sealer with a key derived from `secret` (the configuration requires
    /// at least [`super::settings::MIN_SESSION_SECRET_LEN`] bytes);
    /// `secure` (an `https` `public_base_url`) adds the `Secure` attribute
    /// and names the session cookie [`SECURE_SESSION_COOKIE`].
    pub fn new(secret: SecretSlice<u8>, secure: bool) -> Self {
        // A key of its own for cookies, whatever else the secret keys.
        let mut mac =
            HmacSha256::new_from_slice(secret.expose_secret()).expect("HMAC takes any key length");
        mac.update(b"wxpay-combine cookie AEAD key v2");
        let key = mac.finalize().into_bytes().to_vec();
        Self {
            key: SecretSlice::from(key),
            secure,
        }
    }

    fn key(&self) -> &[u8; 32] {
        self.key
            .expose_secret()
            .try_into()
            .expect("HMAC-SHA256 output is 32 bytes")
    }

    /// Whether cookies are `Secure` (served over HTTPS).
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// The session cookie's name: `__Host-wxpay_session` over HTTPS,
    /// `wxpay_session` over plain HTTP (where `__Host-` cookies are refused).
    pub fn session_cookie_name(&self) -> &'static str {
        if self.secure {
            SECURE_SESSION_COOKIE
        } else {
            SESSION_COOKIE
        }
    }

    /// The sealed value for `data`.
    pub fn seal<T: Serialize>(&self, purpose: Purpose, data: &T) -> String {
        let payload = serde_json::to_vec(data).expect("cookie payloads serialise");
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random source works");
        let sealed =
            default_backend().aes256gcm_seal(self.key(), &nonce, purpose.label(), &payload);
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Opens a sealed value: decrypts and authenticates it, parses, and
    /// refuses it once expired.
    pub fn open<T: DeserializeOwned + Expiring>(
        &self,
        purpose: Purpose,
        value: &str,
        now: i64,
    ) -> Option<T> {
        if value.len() > 4096 {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(value).ok()?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce: &[u8; NONCE_LEN] = nonce.try_into().ok()?;
        let payload = default_backend()
            .aes256gcm_open(self.key(), nonce, purpose.label(), sealed)
            .ok()?;
        let data: T = serde_json::from_slice(&payload).ok()?;
        (data.expires_at() > now).then_some(data)
    }

    /// A `Set-Cookie` value: HttpOnly, SameSite=Lax, Secure over HTTPS.
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
        // Any flipped bit (nonce, ciphertext or tag) is refused.
        let raw = URL_SAFE_NO_PAD.decode(&v).unwrap();
        for i in [0, NONCE_LEN, raw.len() - 1] {
            let mut bad = raw.clone();
            bad[i] ^= 0x01;
            assert!(s
                .open::<SessionData>(Purpose::Session, &URL_SAFE_NO_PAD.encode(&bad), 0)
                .is_none());
        }
        assert!(s
            .open::<SessionData>(Purpose::Session, "garbage", 0)
            .is_none());
    }

    #[test]
    fn the_value_does_not_show_the_openid_and_old_signed_values_are_invalid() {
        let s = signer();
        let openid = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";
        let data = SessionData {
            openid: openid.into(),
            expires_at: 1000,
        };
        let v = s.seal(Purpose::Session, &data);
        let decoded = URL_SAFE_NO_PAD.decode(&v).unwrap();
        assert!(!v.contains(openid));
        assert!(!v.contains(&URL_SAFE_NO_PAD.encode(openid)));
        assert!(!String::from_utf8_lossy(&decoded).contains(openid));
        // Two seals of the same data differ (random nonce).
        assert_ne!(v, s.seal(Purpose::Session, &data));
        // The former format: base64url(JSON) "." base64url(HMAC).
        let payload = URL_SAFE_NO_PAD.encode(br#"{"o":"o1","x":1000}"#);
        let old = format!("{payload}.{}", URL_SAFE_NO_PAD.encode([0u8; 32]));
        assert!(s.open::<SessionData>(Purpose::Session, &old, 0).is_none());
    }

    #[test]
    fn cookie_attributes_and_lookup() {
        let s = signer();
        assert_eq!(s.session_cookie_name(), "__Host-wxpay_session");
        let c = s.set_cookie(s.session_cookie_name(), "abc", "/", 60);
        assert_eq!(
            c,
            "__Host-wxpay_session=abc; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure"
        );
        let plain = CookieSigner::new(SecretSlice::from(vec![7u8; 32]), false);
        assert_eq!(plain.session_cookie_name(), "wxpay_session");
        assert!(!plain.set_cookie("a", "b", "/", 1).contains("Secure"));
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
