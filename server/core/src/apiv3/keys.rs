//! Key material: merchant private keys, WeChat Pay public keys, platform
//! certificates and the APIv3 key.
//!
//! PEM and DER are parsed here with RustCrypto (`rsa`, `x509-cert`); the
//! parsed DER is then handed to the [`CryptoBackend`] that does the math.

use super::backend::{default_backend, CryptoBackend, RsaSigningKey, RsaVerifyingKey};
use super::error::{KeyError, SignError};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{PrivateKey as RsaPrivateKey, PublicKey as RsaPublicKey};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// One `-----BEGIN label-----` block, decoded.
struct PemBlock {
    label: String,
    der: Zeroizing<Vec<u8>>,
}

/// Every PEM block in `text`, in order. Text outside blocks is ignored
/// (OpenSSL writes "Bag Attributes" and comments there).
fn pem_blocks(text: &str) -> Result<Vec<PemBlock>, KeyError> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + 11..];
        let label_end = after.find("-----").ok_or_else(|| KeyError::Malformed {
            what: "PEM",
            detail: "unterminated BEGIN line".into(),
        })?;
        let label = after[..label_end].to_string();
        let body_start = &after[label_end + 5..];
        let end_marker = format!("-----END {label}-----");
        let body_end = body_start
            .find(&end_marker)
            .ok_or_else(|| KeyError::Malformed {
                what: "PEM",
                detail: format!("no END line for {label}"),
            })?;
        let mut b64: Zeroizing<String> = Zeroizing::new(
            body_start[..body_end]
                .chars()
                .filter(|c| !c.is_ascii_whitespace())
                .collect(),
        );
        if b64.contains(':') {
            return Err(KeyError::Unsupported(format!(
                "encrypted PEM ({label}) is not supported; decrypt it with openssl first"
            )));
        }
        let der = STANDARD
            .decode(b64.as_bytes())
            .map_err(|_| KeyError::Malformed {
                what: "PEM",
                detail: format!("{label} body is not base64"),
            })?;
        b64.zeroize();
        blocks.push(PemBlock {
            label,
            der: Zeroizing::new(der),
        });
        rest = &body_start[body_end + end_marker.len()..];
    }
    Ok(blocks)
}

fn labels(blocks: &[PemBlock]) -> String {
    if blocks.is_empty() {
        "none".into()
    } else {
        blocks
            .iter()
            .map(|b| b.label.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn read_file(path: &Path) -> Result<Zeroizing<String>, KeyError> {
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|e| KeyError::Io {
            path: path.display().to_string(),
            detail: e.to_string(),
        })
}

fn check_rsa_size(bits: usize) -> Result<(), KeyError> {
    if (2048..=4096).contains(&bits) {
        Ok(())
    } else {
        Err(KeyError::Unsupported(format!(
            "RSA key of {bits} bits; WeChat Pay uses 2048-bit keys"
        )))
    }
}

/// A merchant API private key (RSA). The key bytes are zeroized on drop and
/// `Debug` prints no secret.
#[derive(Clone)]
pub struct PrivateKey {
    pkcs8_der: Arc<Zeroizing<Vec<u8>>>,
    public: PublicKey,
    signer: Arc<dyn RsaSigningKey>,
}

impl PrivateKey {
    /// Reads a PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`) PEM key.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        Self::from_pem_with(pem, default_backend())
    }

    /// [`PrivateKey::from_pem`] on a chosen backend.
    pub fn from_pem_with(pem: &str, backend: &'static dyn CryptoBackend) -> Result<Self, KeyError> {
        let blocks = pem_blocks(pem)?;
        for block in &blocks {
            let parsed = match block.label.as_str() {
                "PRIVATE KEY" => {
                    RsaPrivateKey::from_pkcs8_der(&block.der).map_err(|e| KeyError::Malformed {
                        what: "PKCS#8 private key",
                        detail: e.to_string(),
                    })?
                }
                "RSA PRIVATE KEY" => {
                    RsaPrivateKey::from_pkcs1_der(&block.der).map_err(|e| KeyError::Malformed {
                        what: "PKCS#1 private key",
                        detail: e.to_string(),
                    })?
                }
                _ => continue,
            };
            let pkcs8 = parsed.to_pkcs8_der().map_err(|e| KeyError::Malformed {
                what: "RSA private key",
                detail: e.to_string(),
            })?;
            return Self::from_pkcs8_der_with(pkcs8.as_bytes(), backend);
        }
        Err(KeyError::NoPemBlock {
            expected: "PRIVATE KEY or RSA PRIVATE KEY",
            found: labels(&blocks),
        })
    }

    /// Reads a PEM private key file.
    pub fn from_pem_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        Self::from_pem(&read_file(path.as_ref())?)
    }

    /// Loads PKCS#8 DER on a chosen backend.
    pub fn from_pkcs8_der_with(
        der: &[u8],
        backend: &'static dyn CryptoBackend,
    ) -> Result<Self, KeyError> {
        let parsed = RsaPrivateKey::from_pkcs8_der(der).map_err(|e| KeyError::Malformed {
            what: "PKCS#8 private key",
            detail: e.to_string(),
        })?;
        check_rsa_size(parsed.size() * 8)?;
        let spki = parsed
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| KeyError::Malformed {
                what: "RSA public key",
                detail: e.to_string(),
            })?;
        Ok(Self {
            pkcs8_der: Arc::new(Zeroizing::new(der.to_vec())),
            public: PublicKey::from_spki_der_with(spki.as_bytes(), backend)?,
            signer: Arc::from(backend.signing_key(der)?),
        })
    }

    /// Generates a fresh RSA-2048 key (the simulator and the demo use this).
    pub fn generate() -> Result<Self, KeyError> {
        let backend = default_backend();
        let der = backend.generate_rsa_2048()?;
        Self::from_pkcs8_der_with(&der, backend)
    }

    /// The key as PKCS#8 PEM, for writing a freshly generated key to disk.
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(pem_encode("PRIVATE KEY", &self.pkcs8_der))
    }

    /// The matching public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// RSASSA-PKCS1-v1_5 / SHA-256 over `message`, base64-encoded.
    pub fn sign_base64(&self, message: &[u8]) -> Result<String, SignError> {
        Ok(STANDARD.encode(self.signer.sign_pkcs1_sha256(message)?))
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(RSA, redacted)")
    }
}

/// An RSA public key: the WeChat Pay public key, or one taken from a
/// certificate.
#[derive(Clone)]
pub struct PublicKey {
    spki_der: Arc<Vec<u8>>,
    verifier: Arc<dyn RsaVerifyingKey>,
}

impl PublicKey {
    /// Reads an SPKI (`PUBLIC KEY`) or PKCS#1 (`RSA PUBLIC KEY`) PEM key, or
    /// takes the key out of an X.509 `CERTIFICATE`.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        Self::from_pem_with(pem, default_backend())
    }

    /// [`PublicKey::from_pem`] on a chosen backend.
    pub fn from_pem_with(pem: &str, backend: &'static dyn CryptoBackend) -> Result<Self, KeyError> {
        let blocks = pem_blocks(pem)?;
        for block in &blocks {
            match block.label.as_str() {
                "PUBLIC KEY" => return Self::from_spki_der_with(&block.der, backend),
                "RSA PUBLIC KEY" => {
                    let key = RsaPublicKey::from_pkcs1_der(&block.der).map_err(|e| {
                        KeyError::Malformed {
                            what: "PKCS#1 public key",
                            detail: e.to_string(),
                        }
                    })?;
                    let spki = key.to_public_key_der().map_err(|e| KeyError::Malformed {
                        what: "RSA public key",
                        detail: e.to_string(),
                    })?;
                    return Self::from_spki_der_with(spki.as_bytes(), backend);
                }
                "CERTIFICATE" => {
                    return Ok(Certificate::from_der_with(&block.der, backend)?.public_key)
                }
                _ => continue,
            }
        }
        Err(KeyError::NoPemBlock {
            expected: "PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE",
            found: labels(&blocks),
        })
    }

    /// Reads a PEM public key or certificate file.
    pub fn from_pem_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        Self::from_pem(&read_file(path.as_ref())?)
    }

    /// Loads SubjectPublicKeyInfo DER on a chosen backend.
    pub fn from_spki_der_with(
        der: &[u8],
        backend: &'static dyn CryptoBackend,
    ) -> Result<Self, KeyError> {
        let parsed = RsaPublicKey::from_public_key_der(der).map_err(|e| KeyError::Malformed {
            what: "RSA public key (SubjectPublicKeyInfo)",
            detail: e.to_string(),
        })?;
        check_rsa_size(parsed.size() * 8)?;
        Ok(Self {
            spki_der: Arc::new(der.to_vec()),
            verifier: Arc::from(backend.verifying_key(der)?),
        })
    }

    /// The key as SPKI PEM (`PUBLIC KEY`).
    pub fn to_pem(&self) -> String {
        pem_encode("PUBLIC KEY", &self.spki_der)
    }

    /// The SubjectPublicKeyInfo DER bytes.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// Whether `signature` is a valid RSA-SHA256 signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.verifier.verify_pkcs1_sha256(message, signature)
    }

    /// Whether `signature_b64` (standard base64) is a valid signature of
    /// `message`. Anything that is not base64 is simply invalid.
    pub fn verify_base64(&self, message: &[u8], signature_b64: &str) -> bool {
        match STANDARD.decode(signature_b64.as_bytes()) {
            Ok(sig) => self.verify(message, &sig),
            Err(_) => false,
        }
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.spki_der == other.spki_der
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey(RSA, {} bytes SPKI)", self.spki_der.len())
    }
}

/// An X.509 certificate: a WeChat Pay platform certificate, or a merchant API
/// certificate (whose serial is the `serial_no` of requests).
#[derive(Clone, Debug)]
pub struct Certificate {
    /// Upper-case hex serial, as WeChat Pay writes it (`Wechatpay-Serial`).
    pub serial_no: String,
    /// The certified public key.
    pub public_key: PublicKey,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    pem: String,
}

impl Certificate {
    /// Reads the first `CERTIFICATE` block of a PEM text.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let blocks = pem_blocks(pem)?;
        let block = blocks
            .iter()
            .find(|b| b.label == "CERTIFICATE")
            .ok_or_else(|| KeyError::NoPemBlock {
                expected: "CERTIFICATE",
                found: labels(&blocks),
            })?;
        Self::from_der_with(&block.der, default_backend())
    }

    /// Reads a PEM certificate file.
    pub fn from_pem_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        Self::from_pem(&read_file(path.as_ref())?)
    }

    /// Parses DER on a chosen backend.
    pub fn from_der_with(
        der: &[u8],
        backend: &'static dyn CryptoBackend,
    ) -> Result<Self, KeyError> {
        use der::{Decode, Encode};
        let malformed = |e: der::Error| KeyError::Malformed {
            what: "X.509 certificate",
            detail: e.to_string(),
        };
        let cert = x509_cert::Certificate::from_der(der).map_err(malformed)?;
        let tbs = cert.tbs_certificate();
        let serial_no = serial_hex(tbs.serial_number().as_bytes());
        let spki = tbs.subject_public_key_info().to_der().map_err(malformed)?;
        let validity = tbs.validity();
        Ok(Self {
            serial_no,
            public_key: PublicKey::from_spki_der_with(&spki, backend)?,
            not_before: validity.not_before.to_unix_duration().as_secs() as i64,
            not_after: validity.not_after.to_unix_duration().as_secs() as i64,
            pem: pem_encode("CERTIFICATE", der),
        })
    }

    /// The certificate as PEM.
    pub fn to_pem(&self) -> &str {
        &self.pem
    }

    /// Whether `at` (Unix seconds) lies within the validity period.
    pub fn is_valid_at(&self, at: i64) -> bool {
        self.not_before <= at && at <= self.not_after
    }
}

/// Upper-case hex of a DER INTEGER's content, without the sign-padding zero.
fn serial_hex(bytes: &[u8]) -> String {
    let trimmed = match bytes {
        [0, rest @ ..] if !rest.is_empty() => rest,
        other => other,
    };
    trimmed.iter().map(|b| format!("{b:02X}")).collect()
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = Zeroizing::new(STANDARD.encode(der));
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The 32-byte APIv3 key (AEAD_AES_256_GCM key). Zeroized on drop; `Debug`
/// prints no secret.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct ApiV3Key([u8; 32]);

impl ApiV3Key {
    /// The key from its bytes; any length but 32 is a configuration error.
    pub fn new(bytes: &[u8]) -> Result<Self, KeyError> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::ApiV3KeyLength(bytes.len()))?;
        Ok(Self(arr))
    }

    /// The key as set in the merchant platform: 32 ASCII characters.
    /// Surrounding whitespace (a trailing newline in a file) is ignored.
    pub fn from_text(text: &str) -> Result<Self, KeyError> {
        Self::new(text.trim().as_bytes())
    }

    /// Reads the key from a file holding its 32 characters.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        Self::from_text(&read_file(path.as_ref())?)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for ApiV3Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiV3Key(redacted)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apiv3_key_length_is_checked_and_debug_redacts() {
        assert_eq!(ApiV3Key::new(b"short"), Err(KeyError::ApiV3KeyLength(5)));
        let key = ApiV3Key::from_text("0123456789abcdef0123456789abcdef\n").unwrap();
        assert_eq!(format!("{key:?}"), "ApiV3Key(redacted)");
    }

    #[test]
    fn serial_hex_strips_sign_padding() {
        assert_eq!(serial_hex(&[0x00, 0x9A, 0x01]), "9A01");
        assert_eq!(serial_hex(&[0x5D, 0xEA]), "5DEA");
        assert_eq!(serial_hex(&[0x00]), "00");
    }

    #[test]
    fn no_pem_block_names_what_was_found() {
        let err =
            PrivateKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
                .unwrap_err();
        assert_eq!(
            err,
            KeyError::NoPemBlock {
                expected: "PRIVATE KEY or RSA PRIVATE KEY",
                found: "PUBLIC KEY".into()
            }
        );
    }
}
