//! Verification of signed responses and notifications.
//!
//! Responses and notifications share this one path: the caller extracts the
//! four `Wechatpay-*` headers and passes the raw body bytes, exactly as
//! received.

use super::clock::Clock;
use super::error::VerifyError;
use super::keys::{Certificate, PublicKey};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Replay window: a timestamp this many seconds or more away from now is
/// refused (`|now - ts| >= 300`).
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// The only `Wechatpay-Signature-Type` APIv3 uses.
pub const SIGNATURE_TYPE: &str = "WECHATPAY2-SHA256-RSA2048";

/// The `Wechatpay-*` headers of a response or notification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignatureHeaders {
    /// `Wechatpay-Timestamp`.
    pub timestamp: String,
    /// `Wechatpay-Nonce`.
    pub nonce: String,
    /// `Wechatpay-Signature` (base64, or a `WECHATPAY/SIGNTEST/` probe).
    pub signature: String,
    /// `Wechatpay-Serial`: a platform certificate serial or `PUB_KEY_ID_…`.
    pub serial: String,
    /// `Wechatpay-Signature-Type`, when sent.
    pub signature_type: Option<String>,
}

impl SignatureHeaders {
    /// Collects the headers through `get`, which looks a header up by its
    /// (case-insensitive) name. Works with any HTTP library's header map.
    pub fn from_lookup<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, VerifyError> {
        let req = |name: &'static str| {
            get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .ok_or(VerifyError::MissingHeader(name))
        };
        Ok(Self {
            timestamp: req("Wechatpay-Timestamp")?,
            nonce: req("Wechatpay-Nonce")?,
            signature: req("Wechatpay-Signature")?,
            serial: req("Wechatpay-Serial")?,
            signature_type: get("Wechatpay-Signature-Type").map(|v| v.trim().to_string()),
        })
    }
}

/// The string WeChat Pay signs: `timestamp\nnonce\nbody\n` (an empty body
/// gives `timestamp\nnonce\n\n`).
pub fn response_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(timestamp.len() + nonce.len() + body.len() + 3);
    m.extend_from_slice(timestamp.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(nonce.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

/// Checks WeChat Pay signatures with the WeChat Pay public key, platform
/// certificates chosen by serial, or both at once (the migration period).
#[derive(Debug)]
pub struct Verifier {
    public_key: Option<(String, PublicKey)>,
    certificates: RwLock<HashMap<String, Certificate>>,
    clock: Arc<dyn Clock>,
}

impl Verifier {
    /// A verifier with no keys yet, reading time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            public_key: None,
            certificates: RwLock::new(HashMap::new()),
            clock,
        }
    }

    /// Adds the WeChat Pay public key with its id (`PUB_KEY_ID_…`).
    pub fn with_public_key(mut self, key_id: impl Into<String>, key: PublicKey) -> Self {
        self.public_key = Some((key_id.into(), key));
        self
    }

    /// Adds platform certificates.
    pub fn with_certificates(self, certs: impl IntoIterator<Item = Certificate>) -> Self {
        self.replace_certificates(certs);
        self
    }

    /// Replaces the platform certificates (after a refresh).
    pub fn replace_certificates(&self, certs: impl IntoIterator<Item = Certificate>) {
        let map = certs
            .into_iter()
            .map(|c| (c.serial_no.clone(), c))
            .collect();
        *self.certificates.write().unwrap_or_else(|e| e.into_inner()) = map;
    }

    /// The serials this verifier can check: the public-key id first, then
    /// the certificate serials (sorted).
    pub fn serials(&self) -> Vec<String> {
        let mut certs: Vec<String> = self
            .certificates
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        certs.sort();
        self.public_key
            .iter()
            .map(|(id, _)| id.clone())
            .chain(certs)
            .collect()
    }

    /// The serial a request should name in `Wechatpay-Serial`: the public-key
    /// id when one is configured, else the newest valid certificate.
    pub fn preferred_serial(&self) -> Option<String> {
        if let Some((id, _)) = &self.public_key {
            return Some(id.clone());
        }
        let now = self.clock.now();
        self.certificates
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|c| c.is_valid_at(now))
            .max_by_key(|c| c.not_after)
            .map(|c| c.serial_no.clone())
    }

    /// The clock this verifier reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Verifies `headers` over the raw `body`. Checks, in order: signature
    /// type, timestamp window, serial, signature.
    pub fn verify(&self, headers: &SignatureHeaders, body: &[u8]) -> Result<(), VerifyError> {
        if let Some(t) = &headers.signature_type {
            if t != SIGNATURE_TYPE {
                return Err(VerifyError::UnsupportedSignatureType(t.clone()));
            }
        }
        let ts: i64 = headers
            .timestamp
            .parse()
            .map_err(|_| VerifyError::BadTimestamp(headers.timestamp.chars().take(32).collect()))?;
        let now = self.clock.now();
        let skew = now.saturating_sub(ts);
        if skew.saturating_abs() >= MAX_CLOCK_SKEW_SECS {
            return Err(VerifyError::StaleTimestamp { skew_secs: skew });
        }
        let message = response_message(&headers.timestamp, &headers.nonce, body);
        if let Some((id, key)) = &self.public_key {
            if *id == headers.serial {
                return check(key, &message, &headers.signature);
            }
        }
        let certs = self.certificates.read().unwrap_or_else(|e| e.into_inner());
        let cert = certs
            .get(&headers.serial)
            .ok_or_else(|| VerifyError::UnknownSerial(headers.serial.chars().take(64).collect()))?;
        if !cert.is_valid_at(now) {
            return Err(VerifyError::CertificateNotValid {
                serial: cert.serial_no.clone(),
                at: now,
            });
        }
        check(&cert.public_key, &message, &headers.signature)
    }
}

fn check(key: &PublicKey, message: &[u8], signature_b64: &str) -> Result<(), VerifyError> {
    // A `WECHATPAY/SIGNTEST/…` probe is not base64 and fails here like any
    // other bad signature.
    if key.verify_base64(message, signature_b64) {
        Ok(())
    } else {
        Err(VerifyError::BadSignature)
    }
}
