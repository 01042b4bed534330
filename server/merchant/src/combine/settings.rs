//! The WeChat Pay client's settings: the merchant's credentials (in a type
//! of their own, so that a list of participating merchants can each carry
//! theirs), how WeChat Pay's signatures are verified, and the outbound API
//! hosts and timeouts. Keys: `appid`, `mchid`, `merchant_*`,
//! `apiv3_key_file`, `wechatpay_public_key_*`, `platform_certificates`,
//! `api_*`, `*_timeout_ms`, `max_attempts`, and the `[[merchants]]` list.
//!
//! The top-level credential keys are the initiator's (`combine_mchid`).
//! Every other participating merchant is a `[[merchants]]` entry with the
//! same credential keys: a sub-order is refunded, and its trade bill
//! fetched, by its own merchant with its own credentials. An entry with only
//! `mchid` is a merchant that receives sub-orders but has no API access
//! here; its refunds and bills are refused with an error naming it.

use crate::apiv3::{ApiV3Key, Certificate, PrivateKey, PublicKey};
use crate::settings::{Bounded, FieldKind, FieldTable, Validator};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

/// WeChat Pay's primary API host.
pub const DEFAULT_API_BASE_URL: &str = "https://api.mch.weixin.qq.com";
/// WeChat Pay's backup ("异地接入点") API host, used when the primary fails.
pub const DEFAULT_API_BACKUP_URL: &str = "https://api2.mch.weixin.qq.com";

/// The keys of this subsystem.
pub const FIELDS: FieldTable = &[
    ("appid", FieldKind::Str),
    ("mchid", FieldKind::Str),
    ("merchant_serial_no", FieldKind::Str),
    ("merchant_private_key_file", FieldKind::Str),
    ("merchant_cert_file", FieldKind::Str),
    ("apiv3_key_file", FieldKind::Str),
    ("wechatpay_public_key_id", FieldKind::Str),
    ("wechatpay_public_key_file", FieldKind::Str),
    ("platform_certificates", FieldKind::Bool),
    ("api_base_url", FieldKind::Str),
    ("api_backup_url", FieldKind::Str),
    ("connect_timeout_ms", FieldKind::Int),
    ("request_timeout_ms", FieldKind::Int),
    ("max_attempts", FieldKind::Int),
];

const CONNECT_TIMEOUT_MS: Bounded = Bounded::new("connect_timeout_ms", 5_000, 100, 60_000);
const REQUEST_TIMEOUT_MS: Bounded = Bounded::new("request_timeout_ms", 15_000, 500, 300_000);
const MAX_ATTEMPTS: Bounded = Bounded::new("max_attempts", 3, 1, 10);

/// The raw values of the merchant-credential keys, as written.
#[derive(Debug, Clone, Copy, Default)]
pub struct CredentialsRaw<'a> {
    /// `mchid`.
    pub mchid: Option<&'a str>,
    /// `merchant_serial_no`.
    pub merchant_serial_no: Option<&'a str>,
    /// `merchant_private_key_file`.
    pub merchant_private_key_file: Option<&'a Path>,
    /// `merchant_cert_file`.
    pub merchant_cert_file: Option<&'a Path>,
    /// `apiv3_key_file`.
    pub apiv3_key_file: Option<&'a Path>,
    /// `wechatpay_public_key_id`.
    pub wechatpay_public_key_id: Option<&'a str>,
    /// `wechatpay_public_key_file`.
    pub wechatpay_public_key_file: Option<&'a Path>,
    /// `platform_certificates`.
    pub platform_certificates: Option<bool>,
}

/// One `[[merchants]]` entry as written: a participating merchant and,
/// optionally, its API credentials (all of them, or none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantEntry {
    /// The merchant id.
    pub mchid: String,
    /// `merchant_serial_no`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_serial_no: Option<String>,
    /// `merchant_private_key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_private_key_file: Option<PathBuf>,
    /// `merchant_cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_cert_file: Option<PathBuf>,
    /// `apiv3_key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apiv3_key_file: Option<PathBuf>,
    /// `wechatpay_public_key_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wechatpay_public_key_id: Option<String>,
    /// `wechatpay_public_key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wechatpay_public_key_file: Option<PathBuf>,
    /// `platform_certificates`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_certificates: Option<bool>,
}

impl MerchantEntry {
    fn credentials_raw(&self) -> CredentialsRaw<'_> {
        CredentialsRaw {
            mchid: Some(&self.mchid),
            merchant_serial_no: self.merchant_serial_no.as_deref(),
            merchant_private_key_file: self.merchant_private_key_file.as_deref(),
            merchant_cert_file: self.merchant_cert_file.as_deref(),
            apiv3_key_file: self.apiv3_key_file.as_deref(),
            wechatpay_public_key_id: self.wechatpay_public_key_id.as_deref(),
            wechatpay_public_key_file: self.wechatpay_public_key_file.as_deref(),
            platform_certificates: self.platform_certificates,
        }
    }

    /// Whether any credential key is set.
    fn has_credentials(&self) -> bool {
        self.merchant_serial_no.is_some()
            || self.merchant_private_key_file.is_some()
            || self.merchant_cert_file.is_some()
            || self.apiv3_key_file.is_some()
            || self.wechatpay_public_key_id.is_some()
            || self.wechatpay_public_key_file.is_some()
            || self.platform_certificates.is_some()
    }
}

/// The raw values of this subsystem's keys, as written.
#[derive(Debug, Clone, Copy, Default)]
pub struct WechatPayRaw<'a> {
    /// `appid`.
    pub appid: Option<&'a str>,
    /// The initiating merchant's credentials (the top-level keys).
    pub credentials: CredentialsRaw<'a>,
    /// `[[merchants]]`.
    pub merchants: &'a [MerchantEntry],
    /// `api_base_url`.
    pub api_base_url: Option<&'a str>,
    /// `api_backup_url`.
    pub api_backup_url: Option<&'a str>,
    /// `connect_timeout_ms`.
    pub connect_timeout_ms: Option<u64>,
    /// `request_timeout_ms`.
    pub request_timeout_ms: Option<u64>,
    /// `max_attempts`.
    pub max_attempts: Option<u32>,
}

/// One merchant's identity and keys, and how WeChat Pay's signatures on
/// its behalf are verified.
#[derive(Debug, Clone)]
pub struct MerchantCredentials {
    /// The merchant id (combine_mchid).
    pub mchid: String,
    /// Merchant API certificate serial, upper-case hex.
    pub serial_no: String,
    /// Merchant API private key (signs requests and paySign).
    pub private_key: PrivateKey,
    /// APIv3 key (decrypts notifications and certificates).
    pub apiv3_key: ApiV3Key,
    /// Signature verification.
    pub verification: VerificationSettings,
}

/// How WeChat Pay's signatures are checked.
#[derive(Debug, Clone)]
pub struct VerificationSettings {
    /// The WeChat Pay public key and its id (`PUB_KEY_ID_…`).
    pub public_key: Option<(String, PublicKey)>,
    /// Download platform certificates (certificate mode, or both during migration).
    pub platform_certificates: bool,
}

/// The outbound API client's settings.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Primary base URL, without trailing slash.
    pub base_url: Url,
    /// Failover base URL.
    pub backup_url: Option<Url>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Attempts for repeatable calls.
    pub max_attempts: u32,
}

/// Everything the WeChat Pay clients are built from.
#[derive(Debug, Clone)]
pub struct WechatPaySettings {
    /// The 公众号 appid (combine_appid).
    pub appid: String,
    /// The initiating merchant's credentials.
    pub merchant: MerchantCredentials,
    /// The other participating merchants (`[[merchants]]`), in file order;
    /// `None` credentials: listed without API access.
    pub merchants: Vec<(String, Option<MerchantCredentials>)>,
    /// The outbound API client.
    pub api: ApiSettings,
}

impl WechatPaySettings {
    /// The credentials of merchant `mchid`: the initiator's or a listed
    /// merchant's; `None` when it has none here.
    pub fn credentials_for(&self, mchid: &str) -> Option<&MerchantCredentials> {
        if self.merchant.mchid == mchid {
            return Some(&self.merchant);
        }
        self.merchants
            .iter()
            .find(|(m, _)| m == mchid)
            .and_then(|(_, c)| c.as_ref())
    }

    /// Every merchant with credentials, the initiator first.
    pub fn credentialed(&self) -> impl Iterator<Item = &MerchantCredentials> {
        std::iter::once(&self.merchant).chain(self.merchants.iter().filter_map(|(_, c)| c.as_ref()))
    }

    /// Every listed merchant, the initiator first, each once.
    pub fn mchids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.merchant.mchid.as_str()).chain(
            self.merchants
                .iter()
                .map(|(m, _)| m.as_str())
                .filter(|m| *m != self.merchant.mchid),
        )
    }
}

/// Validates this subsystem's keys; plain http API hosts only in `demo`.
pub fn validate(
    raw: &WechatPayRaw<'_>,
    demo: bool,
    v: &mut Validator<'_>,
) -> Option<WechatPaySettings> {
    let appid = v
        .required_str(
            raw.appid,
            "appid",
            "the 公众号 AppID, e.g. wxd678efh567hg6787",
        )
        .and_then(|s| v.ident("appid", s));
    let merchant = validate_credentials(&raw.credentials, v);
    let merchants = validate_merchants(raw, v);
    let api = validate_api(raw, demo, v);
    Some(WechatPaySettings {
        appid: appid?,
        merchant: merchant?,
        merchants: merchants?,
        api: api?,
    })
}

/// Validates the `[[merchants]]` entries. An entry's problems are reported
/// under the key `merchants`, naming the entry's mchid and the inner key.
fn validate_merchants(
    raw: &WechatPayRaw<'_>,
    v: &mut Validator<'_>,
) -> Option<Vec<(String, Option<MerchantCredentials>)>> {
    let mut out: Vec<(String, Option<MerchantCredentials>)> = Vec::new();
    let mut ok = true;
    for (i, entry) in raw.merchants.iter().enumerate() {
        let label = format!("entry {} (mchid {:?})", i + 1, entry.mchid);
        let mchid = entry.mchid.trim();
        if mchid.is_empty() || mchid.len() > 32 || !mchid.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            ok = false;
            v.invalid::<()>(
                "merchants",
                format!("{label}: mchid must be 1–32 letters or digits"),
            );
            continue;
        }
        if out.iter().any(|(m, _)| m == mchid) {
            ok = false;
            v.invalid::<()>("merchants", format!("{label}: merchant listed twice"));
            continue;
        }
        if raw.credentials.mchid == Some(mchid) {
            if entry.has_credentials() {
                ok = false;
                v.invalid::<()>(
                    "merchants",
                    format!("{label}: this is the initiator (mchid); its credentials are the top-level keys"),
                );
            }
            continue;
        }
        let credentials = if entry.has_credentials() {
            let mut sub = Validator::new(v.base_dir());
            let creds = validate_credentials(&entry.credentials_raw(), &mut sub);
            match sub.finish() {
                Ok(warnings) => warnings
                    .into_iter()
                    .for_each(|w| v.warn(format!("merchants {label}: {w}"))),
                Err(errors) => {
                    ok = false;
                    for e in errors.0 {
                        v.invalid::<()>("merchants", format!("{label}: {e}"));
                    }
                }
            }
            creds
        } else {
            None
        };
        out.push((mchid.to_string(), credentials));
    }
    ok.then_some(out)
}

/// Validates one merchant's credentials.
pub fn validate_credentials(
    raw: &CredentialsRaw<'_>,
    v: &mut Validator<'_>,
) -> Option<MerchantCredentials> {
    let mchid = v
        .required_str(raw.mchid, "mchid", "the merchant id, e.g. 1230000109")
        .and_then(|s| v.ident("mchid", s));
    let serial_no = v
        .required_str(
            raw.merchant_serial_no,
            "merchant_serial_no",
            "the merchant API certificate serial (40 hex digits, 商户平台 → API安全)",
        )
        .and_then(|s| {
            if !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
                Some(s.to_ascii_uppercase())
            } else {
                v.invalid(
                    "merchant_serial_no",
                    format!("{s:?} is not a hex certificate serial"),
                )
            }
        });

    let private_key = v
        .required_path(
            raw.merchant_private_key_file,
            "merchant_private_key_file",
            "apiclient_key.pem",
        )
        .and_then(|p| match PrivateKey::from_pem_file(&p) {
            Ok(k) => Some(k),
            Err(e) => v.invalid("merchant_private_key_file", format!("{}: {e}", p.display())),
        });

    if let Some(cert_path) = raw.merchant_cert_file.filter(|p| !p.as_os_str().is_empty()) {
        let cert_path = v.path(cert_path);
        match Certificate::from_pem_file(&cert_path) {
            Err(e) => {
                v.invalid::<()>(
                    "merchant_cert_file",
                    format!("{}: {e}", cert_path.display()),
                );
            }
            Ok(cert) => {
                if let Some(serial) = &serial_no {
                    if cert.serial_no != *serial {
                        v.invalid::<()>(
                            "merchant_serial_no",
                            format!(
                                "{serial} is not the serial of the merchant certificate {} ({})",
                                cert_path.display(),
                                cert.serial_no
                            ),
                        );
                    }
                }
                if let Some(key) = &private_key {
                    if cert.public_key != *key.public_key() {
                        v.invalid::<()>(
                            "merchant_private_key_file",
                            format!(
                                "the private key does not match the merchant certificate {} (serial {}); \
                                 use the apiclient_key.pem issued with that certificate",
                                cert_path.display(),
                                cert.serial_no
                            ),
                        );
                    }
                }
            }
        }
    }

    let apiv3_key = v
        .required_path(
            raw.apiv3_key_file,
            "apiv3_key_file",
            "a file holding the 32-character APIv3 key",
        )
        .and_then(|p| match ApiV3Key::from_file(&p) {
            Ok(k) => Some(k),
            Err(e) => v.invalid("apiv3_key_file", format!("{}: {e}", p.display())),
        });

    let verification = validate_verification(raw, v);
    Some(MerchantCredentials {
        mchid: mchid?,
        serial_no: serial_no?,
        private_key: private_key?,
        apiv3_key: apiv3_key?,
        verification: verification?,
    })
}

fn validate_verification(
    raw: &CredentialsRaw<'_>,
    v: &mut Validator<'_>,
) -> Option<VerificationSettings> {
    let key_id = raw.wechatpay_public_key_id.filter(|s| !s.is_empty());
    let key_file = raw
        .wechatpay_public_key_file
        .filter(|p| !p.as_os_str().is_empty());
    let public_key = match (key_id, key_file) {
        (None, None) => None,
        (Some(_), None) => v.invalid(
            "wechatpay_public_key_file",
            "required with wechatpay_public_key_id (the PEM downloaded with the key id)".into(),
        ),
        (None, Some(_)) => v.invalid(
            "wechatpay_public_key_id",
            "required with wechatpay_public_key_file (PUB_KEY_ID_…, shown next to the key)".into(),
        ),
        (Some(id), Some(file)) => {
            if !id.starts_with("PUB_KEY_ID_") || id.len() > 64 {
                v.invalid(
                    "wechatpay_public_key_id",
                    format!("{id:?} does not look like PUB_KEY_ID_…"),
                )
            } else {
                let file = v.path(file);
                match PublicKey::from_pem_file(&file) {
                    Ok(k) => Some((id.to_string(), k)),
                    Err(e) => v.invalid(
                        "wechatpay_public_key_file",
                        format!("{}: {e}", file.display()),
                    ),
                }
            }
        }
    };
    let platform_certificates = raw.platform_certificates.unwrap_or(public_key.is_none());
    if public_key.is_none() && !platform_certificates {
        return v.invalid(
            "platform_certificates",
            "no way to verify WeChat Pay's signatures: configure wechatpay_public_key_id and \
             wechatpay_public_key_file, or set platform_certificates = true"
                .into(),
        );
    }
    Some(VerificationSettings {
        public_key,
        platform_certificates,
    })
}

fn validate_api(raw: &WechatPayRaw<'_>, demo: bool, v: &mut Validator<'_>) -> Option<ApiSettings> {
    let api_base = raw.api_base_url.unwrap_or(DEFAULT_API_BASE_URL);
    let base_url = v.base_url("api_base_url", api_base, demo);
    let backup_default = (api_base == DEFAULT_API_BASE_URL).then_some(DEFAULT_API_BACKUP_URL);
    let backup_url = match raw.api_backup_url.or(backup_default) {
        None | Some("") => None,
        Some(s) => v.base_url("api_backup_url", s, demo),
    };
    let connect_timeout_ms = v.bounded(raw.connect_timeout_ms, CONNECT_TIMEOUT_MS);
    let request_timeout_ms = v.bounded(raw.request_timeout_ms, REQUEST_TIMEOUT_MS);
    let max_attempts = v.bounded(raw.max_attempts.map(u64::from), MAX_ATTEMPTS);
    Some(ApiSettings {
        base_url: base_url?,
        backup_url,
        connect_timeout: Duration::from_millis(connect_timeout_ms),
        request_timeout: Duration::from_millis(request_timeout_ms),
        max_attempts: max_attempts as u32,
    })
}
