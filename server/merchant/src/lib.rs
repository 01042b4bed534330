//! WeChat Pay combined-order (合单支付) JSAPI payments: the merchant
//! library.
//!
//! Built on the protocol core ([`wxpay_combine_core`]: signing,
//! verification, AEAD, `paySign`, wire types, the bill format), whose
//! modules [`apiv3`], [`paydir`] and [`redact`] are re-exported here, and
//! whose [`combine`], [`notify`], [`payment`] and [`bill`] modules this
//! crate's modules of the same name extend. The `wxpay-combine` binary
//! (crate `wxpay-combine-cli`) and the simulator (`wxpay-combine-sim`) are
//! separate crates: this one never depends on either.
//!
//! - [`kit`]: the library entry point — [`kit::Kit::builder`] wires
//!   everything into a router and background workers, for a merchant's own
//!   axum service and for `serve`/`demo` alike; [`kit::serve`] runs it with
//!   graceful shutdown.
//! - [`config`]: the validated configuration (TOML + `WXPAY_*`).
//! - [`http`]: the H5 page's API, OAuth sessions and the pay directory,
//!   and the server-to-server API ([`http::internal`]).
//! - [`notify`]: the payment-notification endpoint.
//! - [`reconcile`]: the worker that queries open orders.
//! - [`webhook`]: signed outbox webhooks to the merchant's backend.
//! - [`bill`]: verified bill download, reconciliation and the schedule.
//! - [`refund`]: refunds per sub-order, by each sub-order's own merchant.
//! - [`payment`]: the one path that turns what WeChat Pay reports into a
//!   state change, shared by [`notify`] and [`reconcile`].
//! - [`store`]: durable order state (SQLite or PostgreSQL).
//! - [`events`]: tells the embedding code in-process that an order was
//!   paid or closed, or that a refund succeeded, closed or became abnormal.
//! - [`outbox`]: the webhook events the store writes with each change.
//! - [`combine`]: the outbound WeChat Pay client and its seam.
//! - [`catalog`]: the merchant's goods and sub-merchants.
//! - [`metrics`]: the process's Prometheus metrics.
//! - [`settings`]: what every subsystem's settings share (the validator
//!   that names each problem's key, secret files, the `WXPAY_*` field tables).
//!
//! ## Layers
//! - `kit`
//! - `config`
//! - `http`
//! - `notify`, `reconcile`, `bill`
//! - `webhook`, `payment`, `refund`
//! - `store`
//! - `events`, `outbox`
//! - `combine`, `catalog`
//! - `metrics`
//! - `settings`
//!
//! Each item may use the items below it, never those above (checked by
//! `cargo xtask layering`, part of `cargo xtask test`).

#![warn(missing_docs)]

/// Secrets in settings ([`secrecy::SecretString`]: the internal API token,
/// the webhook and OAuth secrets; the session key as a [`secrecy::SecretSlice`]).
pub use secrecy;
pub use wxpay_combine_core::{apiv3, paydir, redact};

pub mod bill;
pub mod catalog;
pub mod combine;
pub mod config;
pub mod events;
pub mod http;
pub mod kit;
pub mod metrics;
pub mod notify;
pub mod outbox;
pub mod payment;
pub mod reconcile;
pub mod refund;
pub mod settings;
pub mod store;
pub mod webhook;
