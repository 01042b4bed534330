//! The WeChat Pay APIv3 protocol core of `wxpay-combine`: pure functions
//! and types over bytes, with no async runtime, HTTP stack or database in
//! its dependency tree. The merchant library (`wxpay-combine`), the
//! simulator (`wxpay-combine-sim`) and the fuzz targets all build on it.
//!
//! - [`apiv3`]: request signing, response/notification verification,
//!   `AEAD_AES_256_GCM`, `paySign` and keys, behind one narrow crypto
//!   backend trait.
//! - [`combine`]: the combined-order model and its wire types.
//! - [`notify`]: a notification's raw body to a verified, decrypted
//!   transaction addressed to this merchant (or the refusal).
//! - [`payment`]: a transaction compared with the stored order, to a state
//!   transition or a typed mismatch.
//! - [`refund`]: per-sub-order refunds: statuses, wire types and the
//!   rules a new refund must satisfy.
//! - [`bill`]: the trade-bill file format (parse, format, SHA-1).
//! - [`paydir`]: the 支付授权目录 (pay directory) matching rule.
//! - [`redact`]: masking of personal identifiers for logs.
//! - [`atomicfile`]: atomic, fsynced file replacement (temporary file
//!   and rename), owner-only for secrets; the one module doing I/O,
//!   shared by the crates above.
//! - [`timefmt`]: every timestamp form (RFC 3339, bill times, Beijing
//!   time), on `time`'s format descriptions.
//!
//! ## Layers
//! - `notify`
//! - `payment`
//! - `bill`
//! - `refund`
//! - `combine`, `paydir`
//! - `apiv3`, `atomicfile`, `redact`, `timefmt`
//!
//! Each item may use the items below it, never those above (checked by
//! `cargo xtask layering`, part of `cargo xtask test`).

#![warn(missing_docs)]

pub mod apiv3;
pub mod atomicfile;
pub mod bill;
pub mod combine;
pub mod notify;
pub mod paydir;
pub mod payment;
pub mod redact;
pub mod refund;
pub mod timefmt;
