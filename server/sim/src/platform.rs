//! The WeChat Pay side's own keys for one merchant: the "WeChat Pay public
//! key" pair and the platform certificates. These are the simulator's
//! secrets (kept under `DIR/platform/`), never handed to merchants; the
//! merchant gets only the public halves.

use super::config::KeyMode;
use super::error::SimError;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyIdMethod,
    KeyUsagePurpose, PublicKeyData, SerialNumber, SignatureAlgorithm, SigningKey,
};
use sha1::{Digest, Sha1};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use time::OffsetDateTime;
use wxpay_combine_core::apiv3::{Certificate, PrivateKey};
use wxpay_combine_core::atomicfile::{self, Access};

/// Five years, the validity of a platform certificate.
const FIVE_YEARS: i64 = 5 * 365 * 86_400;

/// A platform certificate with its private key.
#[derive(Debug, Clone)]
pub struct PlatformCert {
    /// The certificate.
    pub cert: Certificate,
    /// Its private key.
    pub key: PrivateKey,
}

/// The keys WeChat Pay signs with for one merchant.
#[derive(Debug)]
pub struct PlatformKeys {
    mode: KeyMode,
    public_key: Option<(String, PrivateKey)>,
    certs: Vec<PlatformCert>,
    round_robin: AtomicU64,
}

/// A signing key chosen for one response or notification.
#[derive(Debug, Clone, Copy)]
pub struct SigningChoice<'a> {
    /// `Wechatpay-Serial`.
    pub serial: &'a str,
    /// The key.
    pub key: &'a PrivateKey,
}

impl PlatformKeys {
    /// Loads the merchant's platform keys from `dir`, creating what `mode`
    /// needs. `public_key_id` is the id the merchant was given.
    pub fn load_or_create(
        dir: &Path,
        mode: KeyMode,
        rotation: bool,
        public_key_id: Option<&str>,
        now: i64,
    ) -> Result<Self, SimError> {
        std::fs::create_dir_all(dir).map_err(|e| SimError::io(dir, e))?;
        let public_key = match (mode.has_public_key(), public_key_id) {
            (true, Some(id)) => Some((
                id.to_string(),
                load_or_generate_key(&dir.join("wechatpay_private_key.pem"))?,
            )),
            (true, None) => {
                return Err(SimError::Config(
                    "public-key mode needs a public key id".into(),
                ))
            }
            (false, _) => None,
        };
        let mut certs = Vec::new();
        if mode.has_certificates() {
            let cert_dir = dir.join("certs");
            std::fs::create_dir_all(&cert_dir).map_err(|e| SimError::io(&cert_dir, e))?;
            certs = load_certs(&cert_dir)?;
            let wanted = if rotation { 2 } else { 1 };
            let valid = certs.iter().filter(|c| c.cert.is_valid_at(now)).count();
            if valid < wanted {
                let ca = CaKey::load_or_create(&dir.join("ca_key.pem"), &dir.join("ca_cert.pem"))?;
                let missing = wanted - valid;
                for i in 0..missing {
                    // A rotation starting from nothing: one certificate near the end of
                    // its life and its successor, both valid now.
                    let (nb, na) = if valid == 0 && missing == 2 && i == 0 {
                        (now - FIVE_YEARS + 30 * 86_400, now + 30 * 86_400)
                    } else {
                        (now - 3_600, now + FIVE_YEARS)
                    };
                    certs.push(issue_certificate(&ca, &cert_dir, nb, na)?);
                }
            }
            certs.sort_by_key(|c| c.cert.not_before);
        }
        Ok(Self {
            mode,
            public_key,
            certs,
            round_robin: AtomicU64::new(0),
        })
    }

    /// The key mode.
    pub fn mode(&self) -> KeyMode {
        self.mode
    }

    /// The WeChat Pay public key id and key pair, in public-key mode.
    pub fn public_key(&self) -> Option<(&str, &PrivateKey)> {
        self.public_key.as_ref().map(|(id, k)| (id.as_str(), k))
    }

    /// Platform certificates valid at `now`, oldest first.
    pub fn valid_certificates(&self, now: i64) -> Vec<&PlatformCert> {
        self.certs
            .iter()
            .filter(|c| c.cert.is_valid_at(now))
            .collect()
    }

    fn newest_cert(&self, now: i64) -> Option<&PlatformCert> {
        self.valid_certificates(now)
            .into_iter()
            .max_by_key(|c| c.cert.not_before)
    }

    /// The key for a synchronous response: the public key when the request's
    /// `Wechatpay-Serial` names it (or in public-key-only mode), a platform
    /// certificate the request names, else the newest valid certificate.
    pub fn response_key(
        &self,
        requested_serial: Option<&str>,
        now: i64,
    ) -> Option<SigningChoice<'_>> {
        if let Some((id, key)) = &self.public_key {
            if self.mode == KeyMode::PublicKey || requested_serial == Some(id.as_str()) {
                return Some(SigningChoice { serial: id, key });
            }
        }
        if let Some(serial) = requested_serial {
            if let Some(c) = self
                .valid_certificates(now)
                .into_iter()
                .find(|c| c.cert.serial_no == serial)
            {
                return Some(choice(c));
            }
        }
        self.newest_cert(now).map(choice)
    }

    /// The key for a notification: in rotation or migration every valid key
    /// takes its turn, so a merchant must accept each of them.
    pub fn notification_key(&self, now: i64) -> Option<SigningChoice<'_>> {
        let mut candidates: Vec<SigningChoice<'_>> = Vec::new();
        if let Some((id, key)) = &self.public_key {
            candidates.push(SigningChoice { serial: id, key });
        }
        candidates.extend(self.valid_certificates(now).into_iter().map(choice));
        if candidates.is_empty() {
            return None;
        }
        let turn = self.round_robin.fetch_add(1, Ordering::Relaxed) as usize;
        Some(candidates[turn % candidates.len()])
    }
}

fn choice(c: &PlatformCert) -> SigningChoice<'_> {
    SigningChoice {
        serial: &c.cert.serial_no,
        key: &c.key,
    }
}

/// Reads a PKCS#8 key, or generates and writes one (mode 0600).
pub fn load_or_generate_key(path: &Path) -> Result<PrivateKey, SimError> {
    if path.exists() {
        // Kept from an earlier run: owner-only whatever mode it has now.
        atomicfile::restrict_to_owner(path).map_err(|e| SimError::io(path, e))?;
        return Ok(PrivateKey::from_pem_file(path)?);
    }
    let key = PrivateKey::generate()?;
    write_secret(path, key.to_pkcs8_pem().as_bytes())?;
    Ok(key)
}

/// Replaces `path` atomically with a file readable only by its owner.
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), SimError> {
    atomicfile::write(path, bytes, Access::Private).map_err(|e| SimError::io(path, e))
}

/// Replaces `path` atomically with a file readable as `std::fs::write`
/// makes it (certificates, public keys).
pub fn write_shared(path: &Path, bytes: &[u8]) -> Result<(), SimError> {
    atomicfile::write(path, bytes, Access::Shared).map_err(|e| SimError::io(path, e))
}

fn load_certs(dir: &Path) -> Result<Vec<PlatformCert>, SimError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| SimError::io(dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| SimError::io(dir, e))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let Some(serial) = name.strip_suffix(".cert.pem") else {
            continue;
        };
        let cert = Certificate::from_pem_file(&path)?;
        let key_path = dir.join(format!("{serial}.key.pem"));
        atomicfile::restrict_to_owner(&key_path).map_err(|e| SimError::io(&key_path, e))?;
        let key = PrivateKey::from_pem_file(&key_path)?;
        if cert.public_key != *key.public_key() {
            return Err(SimError::Config(format!(
                "{}: key does not match certificate",
                path.display()
            )));
        }
        out.push(PlatformCert { cert, key });
    }
    Ok(out)
}

/// Our `PrivateKey` seen by rcgen (which is built without a crypto backend).
struct RcgenKey<'a> {
    key: &'a PrivateKey,
    pkcs1: Vec<u8>,
}

impl<'a> RcgenKey<'a> {
    fn new(key: &'a PrivateKey) -> Result<Self, SimError> {
        use der::Decode;
        let spki = x509_cert::spki::SubjectPublicKeyInfoRef::from_der(key.public_key().spki_der())
            .map_err(|e| SimError::Certificate(e.to_string()))?;
        Ok(Self {
            key,
            pkcs1: spki.subject_public_key.raw_bytes().to_vec(),
        })
    }
}

impl PublicKeyData for RcgenKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.pkcs1
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

impl SigningKey for RcgenKey<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        use base64::Engine;
        let b64 = self
            .key
            .sign_base64(msg)
            .map_err(|_| rcgen::Error::RemoteKeyError)?;
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

fn key_id(key: &PrivateKey) -> Vec<u8> {
    Sha1::digest(key.public_key().spki_der()).to_vec()
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "CN");
    dn.push(DnType::OrganizationName, "WeChat Pay Simulator");
    dn.push(DnType::OrganizationalUnitName, "wxpay-combine sim");
    dn.push(DnType::CommonName, cn);
    dn
}

fn cert_serial() -> SerialNumber {
    let mut b = [0u8; 20];
    getrandom::fill(&mut b).expect("the operating system's random source failed");
    // Positive, no sign padding, 40 hex digits like real serials.
    b[0] = (b[0] & 0x7f).max(0x10);
    SerialNumber::from(b.to_vec())
}

fn at(unix: i64) -> Result<OffsetDateTime, SimError> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|e| SimError::Certificate(e.to_string()))
}

/// The simulator's root that issues platform certificates (as "Tenpay.com
/// Root CA" does for real ones).
struct CaKey {
    key: PrivateKey,
    params: CertificateParams,
}

impl CaKey {
    fn load_or_create(key_path: &Path, cert_path: &Path) -> Result<Self, SimError> {
        let key = load_or_generate_key(key_path)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn("WeChat Pay Simulator Root CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.key_identifier_method = KeyIdMethod::PreSpecified(key_id(&key));
        if !cert_path.exists() {
            let now = super::clock::wall_secs();
            params.not_before = at(now - 86_400)?;
            params.not_after = at(now + 20 * 365 * 86_400)?;
            params.serial_number = Some(cert_serial());
            let signer = RcgenKey::new(&key)?;
            let cert = params
                .self_signed(&signer)
                .map_err(|e| SimError::Certificate(e.to_string()))?;
            write_shared(cert_path, cert.pem().as_bytes())?;
        }
        Ok(Self { key, params })
    }
}

fn issue_certificate(
    ca: &CaKey,
    dir: &Path,
    not_before: i64,
    not_after: i64,
) -> Result<PlatformCert, SimError> {
    let key = PrivateKey::generate()?;
    let subject = RcgenKey::new(&key)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn("WeChat Pay Simulator platform certificate");
    params.serial_number = Some(cert_serial());
    params.not_before = at(not_before)?;
    params.not_after = at(not_after)?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::ContentCommitment,
    ];
    params.key_identifier_method = KeyIdMethod::PreSpecified(key_id(&key));
    params.use_authority_key_identifier_extension = true;
    let ca_signer = RcgenKey::new(&ca.key)?;
    let issuer = Issuer::from_params(&ca.params, ca_signer);
    let der_pem = params
        .signed_by(&subject, &issuer)
        .map_err(|e| SimError::Certificate(e.to_string()))?
        .pem();
    let cert = Certificate::from_pem(&der_pem)?;
    let serial = cert.serial_no.clone();
    let cert_path: PathBuf = dir.join(format!("{serial}.cert.pem"));
    write_secret(
        &dir.join(format!("{serial}.key.pem")),
        key.to_pkcs8_pem().as_bytes(),
    )?;
    write_shared(&cert_path, der_pem.as_bytes())?;
    Ok(PlatformCert { cert, key })
}
