//! The one narrow seam to the cryptographic library.
//!
//! Everything above this module works with [`CryptoBackend`] and never names
//! a crate. AWS-LC is the default (it signs and verifies RSA-2048 at OpenSSL
//! speed); the `pure-rust` feature swaps in RustCrypto for targets where AWS-LC
//! cannot build. With both features enabled both are compiled and
//! [`all_backends`] returns both, so the known-answer tests cover each.

#[cfg(feature = "aws-lc")]
mod aws;
#[cfg(feature = "pure-rust")]
mod pure;

#[cfg(not(any(feature = "aws-lc", feature = "pure-rust")))]
compile_error!("enable a crypto backend: feature `aws-lc` (default) or `pure-rust`");

use super::error::{AeadError, KeyError, SignError};
use zeroize::Zeroizing;

/// An RSA private key loaded into a backend.
pub trait RsaSigningKey: Send + Sync {
    /// RSASSA-PKCS1-v1_5 with SHA-256 over `message`.
    fn sign_pkcs1_sha256(&self, message: &[u8]) -> Result<Vec<u8>, SignError>;
}

/// An RSA public key loaded into a backend.
pub trait RsaVerifyingKey: Send + Sync {
    /// Whether `signature` is RSASSA-PKCS1-v1_5 with SHA-256 over `message`.
    fn verify_pkcs1_sha256(&self, message: &[u8], signature: &[u8]) -> bool;
}

/// RSA-2048 and AES-256-GCM, as APIv3 uses them.
pub trait CryptoBackend: Send + Sync + std::fmt::Debug {
    /// A short name for reports and test output.
    fn name(&self) -> &'static str;
    /// Loads a private key from PKCS#8 DER.
    fn signing_key(&self, pkcs8_der: &[u8]) -> Result<Box<dyn RsaSigningKey>, KeyError>;
    /// Loads a public key from SubjectPublicKeyInfo DER.
    fn verifying_key(&self, spki_der: &[u8]) -> Result<Box<dyn RsaVerifyingKey>, KeyError>;
    /// Generates a fresh RSA-2048 key, returned as PKCS#8 DER.
    fn generate_rsa_2048(&self) -> Result<Zeroizing<Vec<u8>>, KeyError>;
    /// AES-256-GCM encryption; returns ciphertext with the 16-byte tag appended.
    fn aes256gcm_seal(
        &self,
        key: &[u8; 32],
        nonce: &[u8; 12],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Vec<u8>;
    /// AES-256-GCM decryption of ciphertext with the tag appended.
    fn aes256gcm_open(
        &self,
        key: &[u8; 32],
        nonce: &[u8; 12],
        aad: &[u8],
        ciphertext_and_tag: &[u8],
    ) -> Result<Vec<u8>, AeadError>;
}

/// The backend used unless a caller picks one: AWS-LC when compiled in.
pub fn default_backend() -> &'static dyn CryptoBackend {
    #[cfg(feature = "aws-lc")]
    {
        &aws::AwsLc
    }
    #[cfg(all(not(feature = "aws-lc"), feature = "pure-rust"))]
    {
        &pure::PureRust
    }
}

/// Every backend compiled into this build (for tests and benchmarks).
pub fn all_backends() -> Vec<&'static dyn CryptoBackend> {
    vec![
        #[cfg(feature = "aws-lc")]
        &aws::AwsLc,
        #[cfg(feature = "pure-rust")]
        &pure::PureRust,
    ]
}
