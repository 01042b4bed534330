//! The committed known-answer fixtures (`tests/fixtures/`), produced by the
//! OpenSSL CLI and Python `cryptography` — never by this crate.

#![allow(dead_code)] // each test binary uses a different part

use serde::Deserialize;
use std::path::PathBuf;
use std::sync::OnceLock;

/// `tests/fixtures/` of the workspace.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// A fixture's path.
pub fn fixture(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}

/// A fixture's text.
pub fn fixture_text(name: &str) -> String {
    std::fs::read_to_string(fixture(name))
        .unwrap_or_else(|e| panic!("cannot read fixture {name}: {e}"))
}

/// `kat.json`, parsed once.
pub fn kat() -> &'static Kat {
    static KAT: OnceLock<Kat> = OnceLock::new();
    KAT.get_or_init(|| serde_json::from_str(&fixture_text("kat.json")).expect("kat.json parses"))
}

#[derive(Debug, Deserialize)]
pub struct Kat {
    pub mchid: String,
    pub merchant_serial: String,
    pub public_key_id: String,
    pub apiv3_key_file: String,
    pub certificates: Vec<CertVector>,
    pub requests: Vec<RequestVector>,
    pub responses: Vec<ResponseVector>,
    pub paysign: Vec<PaySignVector>,
    pub aead: Vec<AeadVector>,
}

impl Kat {
    pub fn request(&self, name: &str) -> &RequestVector {
        self.requests.iter().find(|v| v.name == name).expect(name)
    }
    pub fn response(&self, name: &str) -> &ResponseVector {
        self.responses.iter().find(|v| v.name == name).expect(name)
    }
    pub fn aead(&self, name: &str) -> &AeadVector {
        self.aead.iter().find(|v| v.name == name).expect(name)
    }
    pub fn certificate(&self, file: &str) -> &CertVector {
        self.certificates
            .iter()
            .find(|v| v.file == file)
            .expect(file)
    }
}

#[derive(Debug, Deserialize)]
pub struct CertVector {
    pub file: String,
    pub serial_no: String,
    pub not_before: i64,
    pub not_after: i64,
    pub public_key_file: String,
}

#[derive(Debug, Deserialize)]
pub struct RequestVector {
    pub name: String,
    pub method: String,
    pub url: String,
    pub timestamp: i64,
    pub nonce: String,
    pub body: String,
    pub message: String,
    pub signature: String,
    pub authorization: String,
}

#[derive(Debug, Deserialize)]
pub struct ResponseVector {
    pub name: String,
    pub signer_key_file: String,
    pub public_key_file: String,
    pub serial: String,
    pub timestamp: String,
    pub nonce: String,
    pub body: String,
    pub message: String,
    pub signature: String,
}

impl ResponseVector {
    pub fn timestamp_secs(&self) -> i64 {
        self.timestamp.parse().expect("integer timestamp")
    }
}

#[derive(Debug, Deserialize)]
pub struct PaySignVector {
    pub name: String,
    pub app_id: String,
    pub prepay_id: String,
    pub timestamp: i64,
    pub nonce: String,
    pub message: String,
    pub expected: serde_json::Value,
}

#[derive(Debug, Deserialize)]
pub struct AeadVector {
    pub name: String,
    pub key_file: String,
    pub nonce: String,
    pub associated_data: String,
    pub plaintext: String,
    pub ciphertext: String,
}
