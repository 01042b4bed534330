//! The optional `--config` TOML file: merchants and the OAuth domain.
//!
//! ```toml
//! [oauth]
//! domains = ["127.0.0.1", "localhost", "shop.example.com"]
//!
//! [[merchant]]
//! mchid = "1900000109"
//! name = "Demo Shop"
//! mode = "both"                 # public_key | certificate | both
//! certificate_rotation = true   # two platform certificates valid at once
//! sub_mchids = ["1900000110", "1900000111", "1900000112"]
//! pay_directories = ["https://shop.example.com/pay/"]
//! ```

use super::error::SimError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How WeChat Pay signs this merchant's responses and notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KeyMode {
    /// The WeChat Pay public key (`PUB_KEY_ID_…`), the current scheme.
    #[default]
    PublicKey,
    /// Platform certificates downloaded from `/v3/certificates`.
    Certificate,
    /// Both, as during the migration: responses use the public key when the
    /// request's `Wechatpay-Serial` names it; notifications use either.
    Both,
}

impl KeyMode {
    /// Whether the WeChat Pay public key is in use.
    pub fn has_public_key(self) -> bool {
        matches!(self, Self::PublicKey | Self::Both)
    }
    /// Whether platform certificates are in use.
    pub fn has_certificates(self) -> bool {
        matches!(self, Self::Certificate | Self::Both)
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// OAuth settings.
    #[serde(default)]
    pub oauth: OAuthConfig,
    /// Merchants; the first is the primary one (files at the data dir root).
    #[serde(default, rename = "merchant")]
    pub merchants: Vec<MerchantConfig>,
}

/// `[oauth]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    /// Authorised web domains (网页授权域名): host names without port.
    pub domains: Option<Vec<String>>,
}

/// One `[[merchant]]`. Values left out are generated on first start and then
/// kept in the data directory.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantConfig {
    /// Merchant id (required: it names the merchant's files).
    pub mchid: String,
    /// The official-account appid bound to the merchant.
    pub appid: Option<String>,
    /// The official account's AppSecret (OAuth exchange).
    pub app_secret: Option<String>,
    /// The 32-character APIv3 key.
    pub apiv3_key: Option<String>,
    /// Name shown on the cashier.
    pub name: Option<String>,
    /// Key mode; default `public_key`.
    pub mode: Option<KeyMode>,
    /// Keep two platform certificates valid at once (a rotation).
    #[serde(default)]
    pub certificate_rotation: bool,
    /// Sub-merchant mchids accepted in `sub_orders` (at least three are
    /// generated when left out).
    pub sub_mchids: Option<Vec<String>>,
    /// Your own merchant API certificate or public key (PEM). When set, the
    /// simulator generates no merchant private key.
    pub merchant_public_key: Option<PathBuf>,
    /// Merchant API certificate serial; taken from the certificate when
    /// `merchant_public_key` is one.
    pub serial_no: Option<String>,
    /// Registered pay directories (支付授权目录, at most 5): the cashier
    /// refuses a page outside them with 当前页面的URL未注册. Left out: pages
    /// are not checked.
    pub pay_directories: Option<Vec<String>>,
}

impl SimConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, SimError> {
        let text = std::fs::read_to_string(path).map_err(|e| SimError::io(path, e))?;
        let mut cfg: SimConfig = toml::from_str(&text)
            .map_err(|e| SimError::Config(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut seen = std::collections::HashSet::new();
        for m in &mut cfg.merchants {
            if m.mchid.is_empty()
                || !m.mchid.bytes().all(|b| b.is_ascii_digit())
                || m.mchid.len() > 32
            {
                return Err(SimError::Config(format!(
                    "merchant mchid {:?} must be 1-32 digits",
                    m.mchid
                )));
            }
            if !seen.insert(m.mchid.clone()) {
                return Err(SimError::Config(format!(
                    "merchant {} declared twice",
                    m.mchid
                )));
            }
            if let Some(k) = &m.apiv3_key {
                if k.len() != 32 {
                    return Err(SimError::Config(format!(
                        "merchant {}: apiv3_key must be 32 bytes",
                        m.mchid
                    )));
                }
            }
            if let Some(dirs) = &m.pay_directories {
                check_pay_directories(dirs)
                    .map_err(|e| SimError::Config(format!("merchant {}: {e}", m.mchid)))?;
            }
            if let Some(p) = &m.merchant_public_key {
                if p.is_relative() {
                    m.merchant_public_key = Some(base.join(p));
                }
            }
        }
        Ok(cfg)
    }
}

/// The merchant platform's rules for registered pay directories: at most
/// five, each an http(s) directory ending with `/`.
pub fn check_pay_directories(dirs: &[String]) -> Result<(), String> {
    if dirs.len() > 5 {
        return Err(format!(
            "pay_directories lists {} directories; the merchant platform registers at most 5",
            dirs.len()
        ));
    }
    for d in dirs {
        wxpay_combine_core::paydir::parse_registered(d)
            .map_err(|e| format!("pay_directories: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_merchants_and_rejects_typos() {
        let cfg: SimConfig = toml::from_str(
            r#"
            [oauth]
            domains = ["shop.test"]
            [[merchant]]
            mchid = "1900000109"
            mode = "both"
            certificate_rotation = true
            "#,
        )
        .unwrap();
        assert_eq!(cfg.merchants[0].mode, Some(KeyMode::Both));
        assert!(cfg.merchants[0].certificate_rotation);
        assert!(toml::from_str::<SimConfig>("[[merchant]]\nmchid=\"1\"\nmod=\"both\"").is_err());
        assert!(check_pay_directories(&["https://shop.test/pay/".into()]).is_ok());
        assert!(check_pay_directories(&["https://shop.test/pay/index.html".into()]).is_err());
        assert!(check_pay_directories(&vec!["https://shop.test/".to_string(); 6]).is_err());
    }
}
