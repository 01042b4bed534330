//! Random nonces for request signing and `nonceStr`.

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// 32 characters of `[0-9A-Za-z]` from the operating system's CSPRNG.
///
/// Bytes are drawn with rejection sampling (values ≥ 248 are discarded), so
/// every character is equally likely.
pub fn generate_nonce() -> String {
    let mut out = String::with_capacity(32);
    let mut buf = [0u8; 48];
    while out.len() < 32 {
        getrandom::fill(&mut buf).expect("the operating system's random source failed");
        for &b in &buf {
            if b < 248 && out.len() < 32 {
                out.push(ALPHABET[(b % 62) as usize] as char);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_is_32_alphanumerics_and_varies() {
        let a = generate_nonce();
        let b = generate_nonce();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
