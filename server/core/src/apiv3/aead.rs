//! `AEAD_AES_256_GCM` with the APIv3 key: notification resources and
//! platform certificates.

use super::backend::{default_backend, CryptoBackend};
use super::error::AeadError;
use super::keys::ApiV3Key;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// The algorithm name APIv3 uses.
pub const ALGORITHM: &str = "AEAD_AES_256_GCM";

/// Tag length appended to the ciphertext.
const TAG_LEN: usize = 16;

fn nonce12(nonce: &str) -> Result<[u8; 12], AeadError> {
    nonce
        .as_bytes()
        .try_into()
        .map_err(|_| AeadError::NonceLength(nonce.len()))
}

/// Decrypts base64 `ciphertext` (ciphertext ‖ 16-byte tag) with the default
/// backend.
pub fn decrypt(
    key: &ApiV3Key,
    nonce: &str,
    associated_data: &str,
    ciphertext_b64: &str,
) -> Result<Vec<u8>, AeadError> {
    decrypt_with(
        default_backend(),
        key,
        nonce,
        associated_data,
        ciphertext_b64,
    )
}

/// [`decrypt`] on a chosen backend.
pub fn decrypt_with(
    backend: &dyn CryptoBackend,
    key: &ApiV3Key,
    nonce: &str,
    associated_data: &str,
    ciphertext_b64: &str,
) -> Result<Vec<u8>, AeadError> {
    let nonce = nonce12(nonce)?;
    let ct = STANDARD
        .decode(ciphertext_b64.as_bytes())
        .map_err(|_| AeadError::Base64)?;
    if ct.len() < TAG_LEN {
        return Err(AeadError::Truncated);
    }
    backend.aes256gcm_open(key.as_bytes(), &nonce, associated_data.as_bytes(), &ct)
}

/// Encrypts `plaintext`, returning base64 of ciphertext ‖ tag (the simulator
/// uses this to build notifications and certificate lists).
pub fn encrypt(
    key: &ApiV3Key,
    nonce: &str,
    associated_data: &str,
    plaintext: &[u8],
) -> Result<String, AeadError> {
    encrypt_with(default_backend(), key, nonce, associated_data, plaintext)
}

/// [`encrypt`] on a chosen backend.
pub fn encrypt_with(
    backend: &dyn CryptoBackend,
    key: &ApiV3Key,
    nonce: &str,
    associated_data: &str,
    plaintext: &[u8],
) -> Result<String, AeadError> {
    let nonce = nonce12(nonce)?;
    let ct = backend.aes256gcm_seal(
        key.as_bytes(),
        &nonce,
        associated_data.as_bytes(),
        plaintext,
    );
    Ok(STANDARD.encode(ct))
}

/// An encrypted `resource` object (notifications) or `encrypt_certificate`
/// (platform certificate list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedResource {
    /// Always `AEAD_AES_256_GCM`.
    pub algorithm: String,
    /// Base64 of ciphertext ‖ tag.
    pub ciphertext: String,
    /// Associated data; may be empty (absent is read as empty).
    #[serde(default)]
    pub associated_data: String,
    /// The 12-character GCM nonce.
    pub nonce: String,
    /// `transaction` for payment notifications; absent on certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_type: Option<String>,
}

impl EncryptedResource {
    /// Encrypts `plaintext` under a fresh random 12-character nonce.
    pub fn seal(
        key: &ApiV3Key,
        associated_data: &str,
        original_type: Option<&str>,
        plaintext: &[u8],
    ) -> Self {
        let nonce: String = super::nonce::generate_nonce().chars().take(12).collect();
        let ciphertext =
            encrypt(key, &nonce, associated_data, plaintext).expect("12-character nonce");
        Self {
            algorithm: ALGORITHM.into(),
            ciphertext,
            associated_data: associated_data.into(),
            nonce,
            original_type: original_type.map(str::to_string),
        }
    }

    /// Checks the algorithm and decrypts.
    pub fn open(&self, key: &ApiV3Key) -> Result<Vec<u8>, AeadError> {
        if self.algorithm != ALGORITHM {
            return Err(AeadError::UnsupportedAlgorithm(
                self.algorithm.chars().take(32).collect(),
            ));
        }
        decrypt(key, &self.nonce, &self.associated_data, &self.ciphertext)
    }
}
