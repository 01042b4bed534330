//! Shared fixtures and input decoding for the fuzz targets: the committed
//! test keys (`tests/fixtures/`, public test data), a fixed clock, the
//! merchant the notification endpoint serves, and the stored order the
//! decrypted notifications are matched against.

use std::sync::Arc;
use wxpay_combine_core::apiv3::{ApiV3Key, Certificate, ManualClock, PrivateKey, Verifier};
use wxpay_combine_core::combine::{CombineOrder, SubOrder, TradeState};

/// The fuzzers' "now" (Unix seconds). Seeds are signed with this timestamp.
pub const NOW: i64 = 1_714_000_000;
/// The WeChat Pay public-key id of `tests/fixtures/wechatpay_key.pem`.
pub const PUB_KEY_ID: &str = "PUB_KEY_ID_0112345678901234567890123456789012";
/// The merchant (combine_mchid) the endpoint serves.
pub const MCHID: &str = "1900000109";
/// A second merchant with a sub-order.
pub const SUB_MCHID: &str = "1900000110";
/// The combine_appid the endpoint serves.
pub const APPID: &str = "wxd678efh567hg6787";
/// The stored order's number.
pub const ORDER_NO: &str = "FZ20240425001";
/// The nonce the target seals plaintexts with (12 characters).
pub const AEAD_NONCE: &str = "fuzz0nonce00";
/// The request nonce the target signs with.
pub const SIGN_NONCE: &str = "593BEC0C930BF1AFEB40B4A08C8FB242";

/// The WeChat Pay private key (signs the notifications).
pub fn wechatpay_key() -> PrivateKey {
    PrivateKey::from_pem(include_str!("../../tests/fixtures/wechatpay_key.pem"))
        .expect("fixture key")
}

/// The APIv3 key.
pub fn apiv3_key() -> ApiV3Key {
    ApiV3Key::from_text(include_str!("../../tests/fixtures/apiv3_key.txt").trim())
        .expect("fixture APIv3 key")
}

/// A verifier holding the WeChat Pay public key and the platform
/// certificate (both schemes, as during the migration), reading `clock`.
pub fn verifier(clock: Arc<ManualClock>) -> Verifier {
    let cert = Certificate::from_pem(include_str!("../../tests/fixtures/platform_cert.pem"))
        .expect("fixture certificate");
    Verifier::new(clock)
        .with_public_key(PUB_KEY_ID, wechatpay_key().public_key().clone())
        .with_certificates([cert])
}

/// The stored NOTPAY order: two sub-orders of 100 and 250 fen.
pub fn order() -> CombineOrder {
    let sub = |mchid: &str, n: &str, amount| SubOrder {
        mchid: mchid.into(),
        out_trade_no: format!("{ORDER_NO}-{n}"),
        description: format!("goods {n}"),
        attach: format!("attach-{n}"),
        amount,
        transaction_id: None,
        payer_amount: None,
        bank_type: None,
        success_time: None,
    };
    CombineOrder {
        combine_out_trade_no: ORDER_NO.into(),
        combine_mchid: MCHID.into(),
        combine_appid: APPID.into(),
        payer_openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
        state: TradeState::NotPay,
        sub_orders: vec![sub(MCHID, "S1", 100), sub(SUB_MCHID, "S2", 250)],
        prepay_id: None,
        prepay_expires_at: None,
        time_expire: Some(NOW + 1800),
        created_at: NOW - 60,
        updated_at: NOW - 60,
        notified_at: None,
    }
}

/// Parsed `Name: value` lines (the raw-header modes). Invalid UTF-8 is
/// replaced, as an HTTP library would refuse or replace it.
#[derive(Debug, Default)]
pub struct HeaderBlock(pub Vec<(String, String)>);

impl HeaderBlock {
    /// Splits `text` into lines; a line without `:` is ignored.
    pub fn parse(text: &[u8]) -> Self {
        let text = String::from_utf8_lossy(text);
        let lines = text.split('\n').filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((
                name.trim().to_string(),
                value.trim_end_matches('\r').to_string(),
            ))
        });
        HeaderBlock(lines.collect())
    }

    /// The first value named `name` (case-insensitive), like `HeaderMap::get`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Splits `data` at the first blank line (`\n\n`): header block, body.
pub fn split_head(data: &[u8]) -> (&[u8], &[u8]) {
    match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[]),
    }
}
