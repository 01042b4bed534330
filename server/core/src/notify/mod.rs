//! Payment and refund notifications before any database: verify the raw body's
//! signature, decrypt the resource, parse the transaction and check it is
//! addressed to this merchant ([`verify_notification`]), and the outcome
//! vocabulary the merchant's endpoint answers with ([`NotifyOutcome`]).
//!
//! The merchant library's endpoint (`wxpay_combine::notify`) runs exactly
//! this, then matches the transaction against the stored order; the fuzz
//! target `notify_path` runs it too.

mod outcome;
mod verify;

pub use outcome::NotifyOutcome;
pub use verify::{
    check_signature, open_notification, open_refund_notification, verify_notification, Refusal,
    VerifiedNotification, VerifiedRefundNotice, MAX_ID_LEN,
};

/// The prefix of `Wechatpay-Signature` on WeChat Pay's signature probes.
pub const SIGNTEST_PREFIX: &str = "WECHATPAY/SIGNTEST/";
