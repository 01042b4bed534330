//! Merchant identities: what a merchant is given (`merchant.json`, the
//! merchant API private key, the WeChat Pay public key) and how the
//! simulator loads them again on the next start.

use super::config::{KeyMode, MerchantConfig};
use super::error::SimError;
use super::ids;
use super::platform::{load_or_generate_key, write_secret, write_shared, PlatformKeys};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use wxpay_combine_core::apiv3::{
    generate_nonce, ApiV3Key, Certificate, PrivateKey, PublicKey, RequestSigner,
};

/// The file names a merchant directory holds.
pub const MERCHANT_JSON: &str = "merchant.json";
/// PKCS#8 merchant API private key.
pub const MERCHANT_KEY: &str = "merchant_key.pem";
/// SPKI WeChat Pay public key.
pub const WECHATPAY_PUBLIC_KEY: &str = "wechatpay_public_key.pem";

/// Everything a merchant needs to talk to the simulator; `merchant.json`
/// holds the serialisable part, the paths point at the key files beside it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MerchantCredentials {
    /// Merchant id (商户号); the `combine_mchid` of orders.
    pub mchid: String,
    /// The official-account appid bound to the merchant (`combine_appid`).
    pub appid: String,
    /// The official account's AppSecret, for the OAuth code exchange.
    pub app_secret: String,
    /// Serial of the merchant API certificate (`serial_no` in Authorization).
    pub serial_no: String,
    /// The 32-character APIv3 key.
    pub apiv3_key: String,
    /// `PUB_KEY_ID_…`, in public-key (or migration) mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wechatpay_public_key_id: Option<String>,
    /// Sub-merchant mchids accepted in `sub_orders` (besides `mchid`).
    pub sub_mchids: Vec<String>,
    /// Name the cashier shows.
    pub merchant_name: String,
    /// The openid of the fixed demo user under `appid`.
    pub demo_openid: String,
    /// How responses and notifications are signed.
    pub key_mode: KeyMode,
    /// Every merchant of the simulator with its own credentials (the
    /// initiators and the sub-merchants), key files relative to the data
    /// directory; written into the primary merchant's `merchant.json` only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merchants: Vec<MerchantEntry>,
    /// The directory holding this merchant's files.
    #[serde(skip)]
    pub dir: PathBuf,
    /// `merchant_key.pem`, unless the merchant brought its own key.
    #[serde(skip)]
    pub private_key_path: Option<PathBuf>,
    /// `wechatpay_public_key.pem`, in public-key mode.
    #[serde(skip)]
    pub wechatpay_public_key_path: Option<PathBuf>,
}

impl MerchantCredentials {
    /// Reads `dir/merchant.json` and notes which key files exist beside it.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, SimError> {
        let dir = dir.as_ref();
        let path = dir.join(MERCHANT_JSON);
        let text = std::fs::read_to_string(&path).map_err(|e| SimError::io(&path, e))?;
        let mut c: Self = serde_json::from_str(&text)
            .map_err(|e| SimError::Config(format!("{}: {e}", path.display())))?;
        c.dir = dir.to_path_buf();
        c.private_key_path = Some(dir.join(MERCHANT_KEY)).filter(|p| p.exists());
        c.wechatpay_public_key_path = Some(dir.join(WECHATPAY_PUBLIC_KEY))
            .filter(|p| p.exists() && c.wechatpay_public_key_id.is_some());
        Ok(c)
    }

    /// The merchant API private key.
    pub fn private_key(&self) -> Result<PrivateKey, SimError> {
        let path = self.private_key_path.as_ref().ok_or_else(|| {
            SimError::Config(format!(
                "merchant {} brought its own key; the simulator has no private key",
                self.mchid
            ))
        })?;
        Ok(PrivateKey::from_pem_file(path)?)
    }

    /// A request signer for this merchant.
    pub fn signer(&self) -> Result<RequestSigner, SimError> {
        Ok(RequestSigner::new(
            &self.mchid,
            &self.serial_no,
            self.private_key()?,
        ))
    }

    /// The APIv3 key.
    pub fn apiv3_key(&self) -> Result<ApiV3Key, SimError> {
        Ok(ApiV3Key::from_text(&self.apiv3_key)?)
    }

    /// The WeChat Pay public key (public-key mode).
    pub fn wechatpay_public_key(&self) -> Result<PublicKey, SimError> {
        let path = self.wechatpay_public_key_path.as_ref().ok_or_else(|| {
            SimError::Config(format!("merchant {} is not in public-key mode", self.mchid))
        })?;
        Ok(PublicKey::from_pem_file(path)?)
    }

    /// Replaces the `merchants` list and rewrites `merchant.json`.
    pub(crate) fn set_roster(&mut self, entries: Vec<MerchantEntry>) -> Result<(), SimError> {
        self.merchants = entries;
        self.write()
    }

    fn write(&self) -> Result<(), SimError> {
        let text =
            serde_json::to_string_pretty(self).map_err(|e| SimError::Config(e.to_string()))?;
        write_secret(
            &self.dir.join(MERCHANT_JSON),
            format!("{text}\n").as_bytes(),
        )
    }
}

/// One merchant of `merchant.json`'s `merchants` list: what any APIv3
/// client needs to call the simulator as that merchant. File names are
/// relative to the data directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MerchantEntry {
    /// Merchant id.
    pub mchid: String,
    /// Display name.
    pub name: String,
    /// Merchant API certificate serial (`serial_no` in Authorization).
    pub serial_no: String,
    /// PKCS#8 merchant API private key; absent when the merchant brought
    /// its own key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_file: Option<String>,
    /// The 32-character APIv3 key.
    pub apiv3_key: String,
    /// `PUB_KEY_ID_…`; absent in certificate mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wechatpay_public_key_id: Option<String>,
    /// SPKI WeChat Pay public key; absent in certificate mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wechatpay_public_key_file: Option<String>,
}

impl MerchantEntry {
    /// The entry of `creds`, its file names relative to `root`.
    pub fn of(creds: &MerchantCredentials, root: &Path) -> Self {
        let rel = |p: &Option<PathBuf>| {
            p.as_ref().map(|p| {
                p.strip_prefix(root)
                    .unwrap_or(p)
                    .to_string_lossy()
                    .replace('\\', "/")
            })
        };
        Self {
            mchid: creds.mchid.clone(),
            name: creds.merchant_name.clone(),
            serial_no: creds.serial_no.clone(),
            private_key_file: rel(&creds.private_key_path),
            apiv3_key: creds.apiv3_key.clone(),
            wechatpay_public_key_id: creds
                .wechatpay_public_key_path
                .as_ref()
                .and(creds.wechatpay_public_key_id.clone()),
            wechatpay_public_key_file: rel(&creds.wechatpay_public_key_path),
        }
    }
}

/// A merchant as the simulated service knows it.
#[derive(Debug)]
pub struct Merchant {
    /// What the merchant was given.
    pub creds: MerchantCredentials,
    /// Verifies the merchant's request signatures and `paySign`.
    pub api_public_key: PublicKey,
    /// The merchant's private key when the simulator generated it (lets the
    /// handle pay an order without a browser).
    pub private_key: Option<PrivateKey>,
    /// Encrypts notifications and certificates.
    pub apiv3_key: ApiV3Key,
    /// WeChat Pay's signing keys for this merchant.
    pub platform: PlatformKeys,
    /// Whether it may initiate combined orders (a configured merchant);
    /// sub-merchants may only refund and fetch bills.
    pub initiator: bool,
    /// Registered pay directories (支付授权目录); empty: pages are not
    /// checked. Set from the configuration, `/sim/control` or the handle.
    pub pay_directories: std::sync::RwLock<Vec<String>>,
}

impl Merchant {
    /// Whether `mchid` may appear in this merchant's `sub_orders`.
    pub fn accepts_sub_mchid(&self, mchid: &str) -> bool {
        mchid == self.creds.mchid || self.creds.sub_mchids.iter().any(|m| m == mchid)
    }
}

/// Loads or creates the merchant living in `dir` (its platform keys under
/// `platform_dir`).
pub fn establish(
    dir: &Path,
    platform_dir: &Path,
    config: Option<&MerchantConfig>,
    now: i64,
) -> Result<Merchant, SimError> {
    std::fs::create_dir_all(dir).map_err(|e| SimError::io(dir, e))?;
    let existing = if dir.join(MERCHANT_JSON).exists() {
        Some(MerchantCredentials::load(dir)?)
    } else {
        None
    };
    if let (Some(e), Some(c)) = (&existing, config) {
        if e.mchid != c.mchid {
            return Err(SimError::Config(format!(
                "{} belongs to merchant {}, but the configuration declares {} here; use a fresh data directory",
                dir.display(),
                e.mchid,
                c.mchid
            )));
        }
    }
    let mchid = existing
        .as_ref()
        .map(|e| e.mchid.clone())
        .or_else(|| config.map(|c| c.mchid.clone()))
        .unwrap_or_else(ids::mchid);
    let pick = |cfg: Option<&String>, old: Option<&String>, make: &dyn Fn() -> String| {
        cfg.or(old).cloned().unwrap_or_else(make)
    };
    let appid = pick(
        config.and_then(|c| c.appid.as_ref()),
        existing.as_ref().map(|e| &e.appid),
        &ids::appid,
    );
    let app_secret = pick(
        config.and_then(|c| c.app_secret.as_ref()),
        existing.as_ref().map(|e| &e.app_secret),
        &|| ids::hex_lower(32),
    );
    let apiv3_key = pick(
        config.and_then(|c| c.apiv3_key.as_ref()),
        existing.as_ref().map(|e| &e.apiv3_key),
        &generate_nonce,
    );
    let merchant_name = pick(
        config.and_then(|c| c.name.as_ref()),
        existing.as_ref().map(|e| &e.merchant_name),
        &|| format!("模拟商户 {mchid}"),
    );
    let sub_mchids = config
        .and_then(|c| c.sub_mchids.clone())
        .or_else(|| existing.as_ref().map(|e| e.sub_mchids.clone()))
        .unwrap_or_else(|| generate_sub_mchids(&mchid));
    let key_mode = config
        .and_then(|c| c.mode)
        .or_else(|| existing.as_ref().map(|e| e.key_mode))
        .unwrap_or_default();

    // The merchant API key: the merchant's own public key, or one we generate.
    let (api_public_key, private_key, private_key_path, serial_no) =
        match config.and_then(|c| c.merchant_public_key.as_ref()) {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| SimError::io(path, e))?;
                let from_cert = Certificate::from_pem(&text).ok();
                let public = PublicKey::from_pem(&text)?;
                let serial = config
                    .and_then(|c| c.serial_no.clone())
                    .or_else(|| from_cert.map(|c| c.serial_no))
                    .ok_or_else(|| {
                        SimError::Config(format!(
                            "merchant {mchid}: serial_no is required with a bare public key"
                        ))
                    })?;
                (public, None, None, serial)
            }
            None => {
                let path = dir.join(MERCHANT_KEY);
                let key = load_or_generate_key(&path)?;
                let serial = pick(
                    config.and_then(|c| c.serial_no.as_ref()),
                    existing.as_ref().map(|e| &e.serial_no),
                    &ids::serial,
                );
                (key.public_key().clone(), Some(key), Some(path), serial)
            }
        };

    let id_path = platform_dir.join("public_key_id");
    let public_key_id = if key_mode.has_public_key() {
        let id = match std::fs::read_to_string(&id_path) {
            Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
            _ => existing
                .as_ref()
                .and_then(|e| e.wechatpay_public_key_id.clone())
                .unwrap_or_else(|| ids::public_key_id(&mchid)),
        };
        std::fs::create_dir_all(platform_dir).map_err(|e| SimError::io(platform_dir, e))?;
        write_shared(&id_path, id.as_bytes())?;
        Some(id)
    } else {
        None
    };
    let rotation = config.map(|c| c.certificate_rotation).unwrap_or(false);
    let platform = PlatformKeys::load_or_create(
        platform_dir,
        key_mode,
        rotation,
        public_key_id.as_deref(),
        now,
    )?;

    let mut wechatpay_public_key_path = None;
    if let Some((_, key)) = platform.public_key() {
        let path = dir.join(WECHATPAY_PUBLIC_KEY);
        let pem = key.public_key().to_pem();
        if std::fs::read_to_string(&path).ok().as_deref() != Some(pem.as_str()) {
            write_shared(&path, pem.as_bytes())?;
        }
        wechatpay_public_key_path = Some(path);
    }

    let creds = MerchantCredentials {
        demo_openid: ids::openid(&appid, ids::DEMO_USER),
        mchid,
        appid,
        app_secret,
        serial_no,
        apiv3_key: apiv3_key.clone(),
        wechatpay_public_key_id: public_key_id,
        sub_mchids,
        merchant_name,
        key_mode,
        merchants: existing.map(|e| e.merchants).unwrap_or_default(),
        dir: dir.to_path_buf(),
        private_key_path,
        wechatpay_public_key_path,
    };
    creds.write()?;
    Ok(Merchant {
        apiv3_key: ApiV3Key::from_text(&apiv3_key)?,
        creds,
        api_public_key,
        private_key,
        platform,
        initiator: true,
        pay_directories: std::sync::RwLock::new(
            config
                .and_then(|c| c.pay_directories.clone())
                .unwrap_or_default(),
        ),
    })
}

fn generate_sub_mchids(mchid: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    while out.len() < 3 {
        let m = ids::mchid();
        if m != mchid && !out.contains(&m) {
            out.push(m);
        }
    }
    out
}
