//! Typed errors of the APIv3 core, one small enum per concern.

use thiserror::Error;

/// Loading or generating key material failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The text holds no PEM block of a kind this function reads.
    #[error("no {expected} PEM block found (found: {found})")]
    NoPemBlock {
        /// What the caller asked for, e.g. `PRIVATE KEY or RSA PRIVATE KEY`.
        expected: &'static str,
        /// The PEM labels that were present, or `none`.
        found: String,
    },
    /// The PEM block was found but its DER contents do not parse.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What was being parsed.
        what: &'static str,
        /// Parser message (never contains key bytes).
        detail: String,
    },
    /// The key is not RSA, or its size is outside what WeChat Pay uses.
    #[error("unsupported key: {0}")]
    Unsupported(String),
    /// The APIv3 key must be exactly 32 bytes.
    #[error("the APIv3 key must be exactly 32 bytes, got {0}")]
    ApiV3KeyLength(usize),
    /// Reading a key file failed.
    #[error("cannot read {path}: {detail}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        detail: String,
    },
}

/// Producing a signature failed (an internal crypto-library failure).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("RSA signing failed: {0}")]
pub struct SignError(pub String);

/// A `Wechatpay-*` signature check failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// A required `Wechatpay-*` header is absent.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// `Wechatpay-Signature-Type` names an algorithm other than RSA-SHA256.
    #[error("unsupported signature type {0:?}")]
    UnsupportedSignatureType(String),
    /// `Wechatpay-Timestamp` is not an integer number of seconds.
    #[error("malformed timestamp {0:?}")]
    BadTimestamp(String),
    /// The timestamp is 300 s or more away from now (replay window).
    #[error("timestamp outside the 300 s window (skew {skew_secs} s)")]
    StaleTimestamp {
        /// `now - timestamp`, in seconds (negative: from the future).
        skew_secs: i64,
    },
    /// `Wechatpay-Serial` names no key this verifier holds. Refreshing the
    /// platform certificates may help.
    #[error("unknown Wechatpay-Serial {0:?}")]
    UnknownSerial(String),
    /// The platform certificate for this serial is expired or not yet valid.
    #[error("platform certificate {serial} is not valid at {at}")]
    CertificateNotValid {
        /// Its serial.
        serial: String,
        /// The unix time checked.
        at: i64,
    },
    /// The signature does not verify (includes `WECHATPAY/SIGNTEST/` probes
    /// and values that are not base64).
    #[error("signature does not verify")]
    BadSignature,
}

/// `AEAD_AES_256_GCM` failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AeadError {
    /// Only `AEAD_AES_256_GCM` exists in APIv3.
    #[error("unsupported algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The nonce must be 12 bytes.
    #[error("nonce must be 12 bytes, got {0}")]
    NonceLength(usize),
    /// The ciphertext is not standard base64.
    #[error("ciphertext is not base64")]
    Base64,
    /// The ciphertext is shorter than the 16-byte tag.
    #[error("ciphertext shorter than the 16-byte tag")]
    Truncated,
    /// Wrong key, wrong associated data, or tampered ciphertext/tag.
    #[error("authentication failed (wrong key, associated data or tag)")]
    Authentication,
}

/// An `Authorization` header could not be parsed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AuthorizationError {
    /// The scheme is not `WECHATPAY2-SHA256-RSA2048`.
    #[error("authorization scheme must be WECHATPAY2-SHA256-RSA2048")]
    Scheme,
    /// A `key="value"` pair is malformed.
    #[error("malformed authorization parameter near {0:?}")]
    Malformed(String),
    /// A field appears twice.
    #[error("duplicate authorization field {0}")]
    Duplicate(String),
    /// A required field is absent.
    #[error("authorization field {0} is missing")]
    Missing(&'static str),
    /// An unknown field is present.
    #[error("unknown authorization field {0}")]
    Unknown(String),
}
