//! Identifiers in the shapes the real service uses.

use super::clock;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the operating system's random source failed");
    b
}

/// `n` random decimal digits.
pub fn digits(n: usize) -> String {
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in random_bytes::<32>() {
            // 250 = 25 * 10: rejection keeps digits uniform.
            if b < 250 && out.len() < n {
                out.push(char::from(b'0' + b % 10));
            }
        }
    }
    out
}

/// `n` random lower-case hex characters.
pub fn hex_lower(n: usize) -> String {
    let mut out = String::with_capacity(n);
    while out.len() < n {
        out.push_str(&hex::encode(random_bytes::<16>()));
    }
    out.truncate(n);
    out
}

/// A fresh 10-digit merchant id (`19xxxxxxxx`, like real ones).
pub fn mchid() -> String {
    format!("19{}", digits(8))
}

/// A fresh official-account appid: `wx` + 16 hex.
pub fn appid() -> String {
    format!("wx{}", hex_lower(16))
}

/// A certificate-style serial: 40 upper-case hex characters.
pub fn serial() -> String {
    hex_lower(40).to_ascii_uppercase()
}

/// A WeChat Pay public-key id: `PUB_KEY_ID_` + 28 digits, embedding the mchid.
pub fn public_key_id(mchid: &str) -> String {
    let mut tail = format!("01{mchid}");
    tail.push_str(&digits(28usize.saturating_sub(tail.len())));
    tail.truncate(28);
    format!("PUB_KEY_ID_{tail}")
}

/// `wx` + `yyyyMMddHHmmss` + 20 hex: the 36-character shape of real prepay ids.
pub fn prepay_id(now: i64) -> String {
    format!("wx{}{}", clock::compact(now), hex_lower(20))
}

/// A 28-digit WeChat Pay transaction id (`4200…`).
pub fn transaction_id(now: i64) -> String {
    let date: String = clock::compact(now).chars().take(8).collect();
    format!("4200{}{date}{}", digits(6), digits(10))
}

/// A refund id (`5030…`, 29 digits).
pub fn refund_id(now: i64) -> String {
    let date: String = clock::compact(now).chars().take(8).collect();
    format!("5030{}{date}{}", digits(7), digits(10))
}

/// `Request-ID`: opaque hex, then `-` and the numeric internal code.
pub fn request_id(internal: u32) -> String {
    format!("{}-{internal}", hex_lower(44).to_ascii_uppercase())
}

/// The openid of user `name` under `appid`: stable, and different per appid
/// (as on the real platform). 28 characters starting with `o`.
pub fn openid(appid: &str, name: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"wxsim-openid\0");
    h.update(appid.as_bytes());
    h.update(b"\0");
    h.update(name.as_bytes());
    let enc = URL_SAFE_NO_PAD.encode(h.finalize());
    format!("o{}", &enc[..27])
}

/// The fixed demo user every appid has.
pub const DEMO_USER: &str = "demo";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(mchid().len(), 10);
        assert_eq!(appid().len(), 18);
        assert_eq!(serial().len(), 40);
        let id = public_key_id("1900000109");
        assert!(id.starts_with("PUB_KEY_ID_011900000109"));
        assert_eq!(id.len(), 11 + 28);
        assert_eq!(prepay_id(1_700_000_000).len(), 36);
        assert_eq!(transaction_id(1_700_000_000).len(), 28);
        assert!(digits(50).bytes().all(|b| b.is_ascii_digit()));
    }

    #[test]
    fn openids_are_stable_and_per_appid() {
        let a = openid("wx1", "alice");
        assert_eq!(a, openid("wx1", "alice"));
        assert_ne!(a, openid("wx2", "alice"));
        assert_ne!(a, openid("wx1", "bob"));
        assert_eq!(a.len(), 28);
        assert!(a.starts_with('o'));
    }
}
