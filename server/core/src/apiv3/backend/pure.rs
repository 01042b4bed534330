//! Pure Rust (RustCrypto `rsa` + `aes-gcm`), for targets where AWS-LC cannot build.

use super::{CryptoBackend, RsaSigningKey, RsaVerifyingKey};
use crate::apiv3::error::{AeadError, KeyError, SignError};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rsa::pkcs1v15::{Signature, SigningKey as Pkcs1SigningKey, VerifyingKey as Pkcs1VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::{PrivateKey as RsaPrivateKey, PublicKey as RsaPublicKey};
use sha2::Sha256;
use zeroize::Zeroizing;

#[derive(Debug)]
pub(super) struct PureRust;

struct SigningKey(Pkcs1SigningKey<Sha256>);

impl RsaSigningKey for SigningKey {
    fn sign_pkcs1_sha256(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let sig = self
            .0
            .try_sign(message)
            .map_err(|e| SignError(e.to_string()))?;
        Ok(sig.to_vec())
    }
}

struct VerifyingKey(Pkcs1VerifyingKey<Sha256>);

impl RsaVerifyingKey for VerifyingKey {
    fn verify_pkcs1_sha256(&self, message: &[u8], signature: &[u8]) -> bool {
        match Signature::try_from(signature) {
            Ok(sig) => self.0.verify(message, &sig).is_ok(),
            Err(_) => false,
        }
    }
}

impl CryptoBackend for PureRust {
    fn name(&self) -> &'static str {
        "pure-rust"
    }

    fn signing_key(&self, pkcs8_der: &[u8]) -> Result<Box<dyn RsaSigningKey>, KeyError> {
        let key = RsaPrivateKey::from_pkcs8_der(pkcs8_der).map_err(|e| KeyError::Malformed {
            what: "RSA private key",
            detail: e.to_string(),
        })?;
        Ok(Box::new(SigningKey(Pkcs1SigningKey::<Sha256>::new(key))))
    }

    fn verifying_key(&self, spki_der: &[u8]) -> Result<Box<dyn RsaVerifyingKey>, KeyError> {
        let key = RsaPublicKey::from_public_key_der(spki_der).map_err(|e| KeyError::Malformed {
            what: "RSA public key",
            detail: e.to_string(),
        })?;
        Ok(Box::new(VerifyingKey(Pkcs1VerifyingKey::<Sha256>::new(
            key,
        ))))
    }

    fn generate_rsa_2048(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let key = RsaPrivateKey::new(&mut crypto_common::getrandom::SysRng, 2048)
            .map_err(|e| KeyError::Unsupported(format!("RSA key generation failed: {e}")))?;
        let der = key
            .to_pkcs8_der()
            .map_err(|e| KeyError::Unsupported(format!("PKCS#8 encoding failed: {e}")))?;
        Ok(Zeroizing::new(der.as_bytes().to_vec()))
    }

    fn aes256gcm_seal(
        &self,
        key: &[u8; 32],
        nonce: &[u8; 12],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Vec<u8> {
        let cipher = Aes256Gcm::new(key.into());
        cipher
            .encrypt(
                &Nonce::from(*nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("AES-GCM sealing of an in-memory buffer cannot fail")
    }

    fn aes256gcm_open(
        &self,
        key: &[u8; 32],
        nonce: &[u8; 12],
        aad: &[u8],
        ciphertext_and_tag: &[u8],
    ) -> Result<Vec<u8>, AeadError> {
        let cipher = Aes256Gcm::new(key.into());
        cipher
            .decrypt(
                &Nonce::from(*nonce),
                Payload {
                    msg: ciphertext_and_tag,
                    aad,
                },
            )
            .map_err(|_| AeadError::Authentication)
    }
}
