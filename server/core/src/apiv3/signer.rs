//! Merchant request signing and the `Authorization` header.

use super::clock::Clock;
use super::error::{AuthorizationError, SignError};
use super::keys::PrivateKey;
use super::nonce::generate_nonce;

/// The only authorization scheme APIv3 defines.
pub const AUTH_SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";

/// The string a merchant signs: `METHOD\nPATH[?QUERY]\nTIMESTAMP\nNONCE\nBODY\n`.
/// `path_and_query` is the URL without scheme and host, exactly as sent.
pub fn request_message(
    method: &str,
    path_and_query: &str,
    timestamp: i64,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut m =
        Vec::with_capacity(method.len() + path_and_query.len() + nonce.len() + body.len() + 20);
    m.extend_from_slice(method.to_ascii_uppercase().as_bytes());
    m.push(b'\n');
    m.extend_from_slice(path_and_query.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(timestamp.to_string().as_bytes());
    m.push(b'\n');
    m.extend_from_slice(nonce.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

/// WeChat Pay refuses request timestamps more than this far from its clock. The
/// boundary itself is accepted (clients disagree on it; see reference §1.5).
pub const MAX_REQUEST_SKEW_SECS: i64 = 300;

/// Parses an `Authorization` timestamp (Unix seconds in canonical decimal)
/// and returns it with its distance from `now` (`now - ts`, saturated: any
/// text, e.g. `-9223372036854775808`, is safe).
pub fn timestamp_skew(now: i64, timestamp: &str) -> Option<(i64, i64)> {
    let ts: i64 = timestamp
        .parse()
        .ok()
        .filter(|t: &i64| t.to_string() == timestamp)?;
    Some((ts, now.saturating_sub(ts)))
}

/// The five fields of an `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// Merchant id.
    pub mchid: String,
    /// Request nonce.
    pub nonce_str: String,
    /// Unix seconds, as sent (kept as text so a bad value can be reported).
    pub timestamp: String,
    /// Serial of the merchant API certificate.
    pub serial_no: String,
    /// Base64 signature.
    pub signature: String,
}

impl Authorization {
    /// The header value, fields in the order the official SDKs use.
    pub fn to_header_value(&self) -> String {
        format!(
            "{AUTH_SCHEME} mchid=\"{}\",nonce_str=\"{}\",timestamp=\"{}\",serial_no=\"{}\",signature=\"{}\"",
            self.mchid, self.nonce_str, self.timestamp, self.serial_no, self.signature
        )
    }

    /// Parses a header value. Field order is free (the documentation says so
    /// and SDKs differ); spaces around commas are tolerated.
    pub fn parse(header: &str) -> Result<Self, AuthorizationError> {
        let rest = header
            .trim()
            .strip_prefix(AUTH_SCHEME)
            .filter(|r| r.starts_with(' '))
            .ok_or(AuthorizationError::Scheme)?;
        let mut fields: [Option<String>; 5] = Default::default();
        const NAMES: [&str; 5] = ["mchid", "nonce_str", "timestamp", "serial_no", "signature"];
        let mut s = rest.trim_start();
        while !s.is_empty() {
            let eq = s
                .find('=')
                .ok_or_else(|| AuthorizationError::Malformed(truncate(s)))?;
            let key = s[..eq].trim();
            let after = &s[eq + 1..];
            let value_body = after
                .strip_prefix('"')
                .ok_or_else(|| AuthorizationError::Malformed(truncate(s)))?;
            let close = value_body
                .find('"')
                .ok_or_else(|| AuthorizationError::Malformed(truncate(s)))?;
            let value = &value_body[..close];
            let idx = NAMES
                .iter()
                .position(|n| *n == key)
                .ok_or_else(|| AuthorizationError::Unknown(truncate(key)))?;
            if fields[idx].replace(value.to_string()).is_some() {
                return Err(AuthorizationError::Duplicate(key.to_string()));
            }
            s = value_body[close + 1..].trim_start();
            if let Some(next) = s.strip_prefix(',') {
                s = next.trim_start();
                if s.is_empty() {
                    return Err(AuthorizationError::Malformed(",".into()));
                }
            } else if !s.is_empty() {
                return Err(AuthorizationError::Malformed(truncate(s)));
            }
        }
        let [mchid, nonce_str, timestamp, serial_no, signature] = fields;
        Ok(Self {
            mchid: mchid.ok_or(AuthorizationError::Missing("mchid"))?,
            nonce_str: nonce_str.ok_or(AuthorizationError::Missing("nonce_str"))?,
            timestamp: timestamp.ok_or(AuthorizationError::Missing("timestamp"))?,
            serial_no: serial_no.ok_or(AuthorizationError::Missing("serial_no"))?,
            signature: signature.ok_or(AuthorizationError::Missing("signature"))?,
        })
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(24).collect()
}

/// Signs merchant requests: holds the merchant id, the API certificate serial
/// and the private key.
#[derive(Debug, Clone)]
pub struct RequestSigner {
    mchid: String,
    serial_no: String,
    key: PrivateKey,
}

impl RequestSigner {
    /// A signer for merchant `mchid` whose API certificate has `serial_no`.
    pub fn new(mchid: impl Into<String>, serial_no: impl Into<String>, key: PrivateKey) -> Self {
        Self {
            mchid: mchid.into(),
            serial_no: serial_no.into(),
            key,
        }
    }

    /// The merchant id.
    pub fn mchid(&self) -> &str {
        &self.mchid
    }

    /// The merchant API certificate serial.
    pub fn serial_no(&self) -> &str {
        &self.serial_no
    }

    /// The private key (also signs `paySign`).
    pub fn private_key(&self) -> &PrivateKey {
        &self.key
    }

    /// The `Authorization` header value for a request, with the current time
    /// from `clock` and a fresh nonce.
    pub fn authorization(
        &self,
        clock: &dyn Clock,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<String, SignError> {
        self.authorization_at(method, path_and_query, clock.now(), &generate_nonce(), body)
    }

    /// The `Authorization` header value with a given timestamp and nonce.
    pub fn authorization_at(
        &self,
        method: &str,
        path_and_query: &str,
        timestamp: i64,
        nonce: &str,
        body: &[u8],
    ) -> Result<String, SignError> {
        let message = request_message(method, path_and_query, timestamp, nonce, body);
        Ok(Authorization {
            mchid: self.mchid.clone(),
            nonce_str: nonce.to_string(),
            timestamp: timestamp.to_string(),
            serial_no: self.serial_no.clone(),
            signature: self.key.sign_base64(&message)?,
        }
        .to_header_value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_matches_the_documented_get_example() {
        let m = request_message(
            "GET",
            "/v3/pay/transactions/id/1217752501201407033233368018?mchid=1230000109",
            1652750623,
            "eBYqCOxa0QudMnPvVilkTzOg3gHh5Z3u",
            b"",
        );
        assert_eq!(
            m,
            b"GET\n/v3/pay/transactions/id/1217752501201407033233368018?mchid=1230000109\n1652750623\neBYqCOxa0QudMnPvVilkTzOg3gHh5Z3u\n\n"
        );
    }

    #[test]
    fn parse_accepts_any_field_order() {
        let orders = [
            r#"WECHATPAY2-SHA256-RSA2048 mchid="1900007291",nonce_str="N",signature="S==",timestamp="1554208460",serial_no="408B"#,
            r#"WECHATPAY2-SHA256-RSA2048 mchid="1900007291",serial_no="408B",timestamp="1554208460",nonce_str="N",signature="S==""#,
            r#"WECHATPAY2-SHA256-RSA2048 mchid="1900007291", nonce_str="N", timestamp="1554208460", serial_no="408B", signature="S==""#,
        ];
        // The first lacks its closing quote on purpose.
        assert!(Authorization::parse(orders[0]).is_err());
        for h in &orders[1..] {
            let a = Authorization::parse(h).unwrap();
            assert_eq!(a.mchid, "1900007291");
            assert_eq!(a.signature, "S==");
            assert_eq!(a.serial_no, "408B");
        }
    }

    #[test]
    fn parse_rejects_bad_headers() {
        assert_eq!(
            Authorization::parse("Bearer x"),
            Err(AuthorizationError::Scheme)
        );
        assert_eq!(
            Authorization::parse(r#"WECHATPAY2-SHA256-RSA2048 mchid="1",mchid="2""#),
            Err(AuthorizationError::Duplicate("mchid".into()))
        );
        assert_eq!(
            Authorization::parse(r#"WECHATPAY2-SHA256-RSA2048 mchid="1""#),
            Err(AuthorizationError::Missing("nonce_str"))
        );
        assert!(Authorization::parse(r#"WECHATPAY2-SHA256-RSA2048 foo="1""#).is_err());
    }
}
