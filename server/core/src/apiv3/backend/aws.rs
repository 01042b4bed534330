//! AWS-LC through `aws-lc-rs`.

use super::{CryptoBackend, RsaSigningKey, RsaVerifyingKey};
use crate::apiv3::error::{AeadError, KeyError, SignError};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256};
use zeroize::Zeroizing;

#[derive(Debug)]
pub(super) struct AwsLc;

struct SigningKey {
    pair: KeyPair,
    rng: SystemRandom,
}

impl RsaSigningKey for SigningKey {
    fn sign_pkcs1_sha256(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let mut sig = vec![0u8; self.pair.public_modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &self.rng, message, &mut sig)
            .map_err(|e| SignError(e.to_string()))?;
        Ok(sig)
    }
}

struct VerifyingKey(ParsedPublicKey);

impl RsaVerifyingKey for VerifyingKey {
    fn verify_pkcs1_sha256(&self, message: &[u8], signature: &[u8]) -> bool {
        self.0.verify_sig(message, signature).is_ok()
    }
}

fn aead_key(key: &[u8; 32]) -> LessSafeKey {
    // AES_256_GCM accepts exactly 32 bytes, which the type guarantees.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("32-byte AES-256 key"))
}

impl CryptoBackend for AwsLc {
    fn name(&self) -> &'static str {
        "aws-lc-rs"
    }

    fn signing_key(&self, pkcs8_der: &[u8]) -> Result<Box<dyn RsaSigningKey>, KeyError> {
        let pair = KeyPair::from_pkcs8(pkcs8_der).map_err(|e| KeyError::Malformed {
            what: "RSA private key",
            detail: e.to_string(),
        })?;
        Ok(Box::new(SigningKey {
            pair,
            rng: SystemRandom::new(),
        }))
    }

    fn verifying_key(&self, spki_der: &[u8]) -> Result<Box<dyn RsaVerifyingKey>, KeyError> {
        let key = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, spki_der).map_err(|e| {
            KeyError::Malformed {
                what: "RSA public key",
                detail: e.to_string(),
            }
        })?;
        Ok(Box::new(VerifyingKey(key)))
    }

    fn generate_rsa_2048(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let pair = KeyPair::generate(KeySize::Rsa2048)
            .map_err(|e| KeyError::Unsupported(format!("RSA key generation failed: {e}")))?;
        let der = pair
            .as_der()
            .map_err(|e| KeyError::Unsupported(format!("PKCS#8 encoding failed: {e}")))?;
        Ok(Zeroizing::new(der.as_ref().to_vec()))
    }

    fn aes256gcm_seal(
        &self,
        key: &[u8; 32],
        nonce: &[u8; 12],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Vec<u8> {
        let mut buf = plaintext.to_vec();
        aead_key(key)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                &mut buf,
            )
            .expect("AES-GCM sealing of an in-memory buffer cannot fail");
        buf
    }

    fn aes256gcm_open(
        &self,
        key: &[u8; 32],
        nonce: &[u8; 12],
        aad: &[u8],
        ciphertext_and_tag: &[u8],
    ) -> Result<Vec<u8>, AeadError> {
        let mut buf = ciphertext_and_tag.to_vec();
        let len = aead_key(key)
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| AeadError::Authentication)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}
