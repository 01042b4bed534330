//! WeChat Pay combined-order (合单支付) JSAPI payments.
//!
//! The crate is organised the way the protocol is:
//! - [`apiv3`]: request signing, response/notification verification,
//!   AEAD_AES_256_GCM and `paySign` — pure functions over bytes, no HTTP
//!   framework inside.

pub mod apiv3;
pub mod cli;
pub mod combine;
pub mod store;
