//! The signed parameter object for `WeixinJSBridge.invoke('getBrandWCPayRequest', …)`.

use super::error::SignError;
use super::keys::{PrivateKey, PublicKey};
use serde::{Deserialize, Serialize};

/// Exactly the six keys `getBrandWCPayRequest` takes, with their exact
/// (case-sensitive) names. `timeStamp` is a string of Unix **seconds**.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsapiPayParams {
    /// The appid the order was placed with (for combined orders: `combine_appid`).
    #[serde(rename = "appId")]
    pub app_id: String,
    /// Unix seconds as a string (10 digits).
    #[serde(rename = "timeStamp")]
    pub time_stamp: String,
    /// Random string, at most 32 characters.
    #[serde(rename = "nonceStr")]
    pub nonce_str: String,
    /// `prepay_id=<prepay_id>`.
    pub package: String,
    /// Always `RSA`.
    #[serde(rename = "signType")]
    pub sign_type: String,
    /// Base64 RSA-SHA256 signature of `appId\ntimeStamp\nnonceStr\npackage\n`.
    #[serde(rename = "paySign")]
    pub pay_sign: String,
}

impl JsapiPayParams {
    /// The string that is signed: `appId\ntimeStamp\nnonceStr\npackage\n`.
    pub fn message(app_id: &str, time_stamp: &str, nonce_str: &str, package: &str) -> String {
        format!("{app_id}\n{time_stamp}\n{nonce_str}\n{package}\n")
    }

    /// Builds and signs the parameters with the merchant API private key.
    pub fn sign(
        key: &PrivateKey,
        app_id: &str,
        prepay_id: &str,
        timestamp: i64,
        nonce_str: &str,
    ) -> Result<Self, SignError> {
        let time_stamp = timestamp.to_string();
        let package = format!("prepay_id={prepay_id}");
        let pay_sign =
            key.sign_base64(Self::message(app_id, &time_stamp, nonce_str, &package).as_bytes())?;
        Ok(Self {
            app_id: app_id.into(),
            time_stamp,
            nonce_str: nonce_str.into(),
            package,
            sign_type: "RSA".into(),
            pay_sign,
        })
    }

    /// Whether `paySign` verifies with the merchant's public key (the
    /// simulated cashier checks this).
    pub fn verify(&self, key: &PublicKey) -> bool {
        self.sign_type == "RSA"
            && key.verify_base64(
                Self::message(
                    &self.app_id,
                    &self.time_stamp,
                    &self.nonce_str,
                    &self.package,
                )
                .as_bytes(),
                &self.pay_sign,
            )
    }

    /// The prepay id named by `package`, if it has the `prepay_id=` form.
    pub fn prepay_id(&self) -> Option<&str> {
        self.package.strip_prefix("prepay_id=")
    }
}
