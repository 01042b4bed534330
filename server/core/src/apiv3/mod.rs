//! The WeChat Pay APIv3 cryptographic core.
//!
//! Small single-purpose pieces, composed by the HTTP client and by the
//! notification handler (which share one verification path):
//! - [`RequestSigner`] builds the `Authorization` header of a merchant request.
//! - [`Verifier`] checks `Wechatpay-*` signature headers over a raw body,
//!   holding the WeChat Pay public key and/or platform certificates.
//! - [`aead`] opens and seals `AEAD_AES_256_GCM` resources with the APIv3 key.
//! - [`JsapiPayParams`] is the signed object for `getBrandWCPayRequest`.
//!
//! RSA and AES-GCM run through one narrow trait, [`backend::CryptoBackend`]:
//! AWS-LC by default (OpenSSL speed), pure Rust with the `pure-rust` feature.

pub mod aead;
pub mod backend;
mod clock;
mod error;
mod keys;
mod nonce;
mod paysign;
mod signer;
mod verifier;

pub use aead::EncryptedResource;
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{AeadError, AuthorizationError, KeyError, SignError, VerifyError};
pub use keys::{ApiV3Key, Certificate, PrivateKey, PublicKey};
pub use nonce::generate_nonce;
pub use paysign::JsapiPayParams;
pub use signer::{
    request_message, timestamp_skew, Authorization, RequestSigner, AUTH_SCHEME,
    MAX_REQUEST_SKEW_SECS,
};
pub use verifier::{
    response_message, SignatureHeaders, Verifier, MAX_CLOCK_SKEW_SECS, SIGNATURE_TYPE,
};
