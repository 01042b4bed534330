//! WeChat Pay combined-order (合单支付) JSAPI payments.
//!
//! The crate is organised the way the protocol is:
//! - [`apiv3`]: request signing, response/notification verification,
//!   AEAD_AES_256_GCM and `paySign` — pure functions over bytes, no HTTP
//!   framework inside.

pub mod apiv3;
pub mod app;
pub mod bill;
pub mod catalog;
pub mod cli;
pub mod sim;
pub mod combine;
pub mod notify;
pub mod payment;
pub mod reconcile;
pub mod config;
pub mod http;
pub mod paydir;
pub mod redact;
pub mod store;
