//! WeChat Pay combined-order (合单支付) JSAPI payments.
//!
//! The crate is organised the way the protocol is:
//! - [`apiv3`]: request signing, response/notification verification,
//!   AEAD_AES_256_GCM and `paySign` — pure functions over bytes, no HTTP
//!   framework inside.
//! - [`combine`]: the order model, the wire format and the outbound client.
//! - [`store`]: durable order state (SQLite or PostgreSQL).
//! - [`payment`]: the one path that turns what WeChat Pay reports into a
//!   state change, shared by [`notify`] and [`reconcile`].
//! - [`http`]: the H5 page's API, OAuth sessions and the pay directory,
//!   and the server-to-server API ([`http::internal`]).
//! - [`kit`]: the library entry point — [`kit::Kit::builder`] wires
//!   everything into a router and background workers, for a merchant's own
//!   axum service and for `serve`/`demo` ([`app`]) alike; [`events`] tells
//!   the embedding code in-process that an order was paid or closed.
//! - [`bill`]: trade-bill files: parse, format, verified download.
//! - [`sim`]: the WeChat Pay simulator (never started by `serve`).

#![warn(missing_docs)]

pub mod apiv3;
pub mod app;
pub mod bill;
pub mod catalog;
pub mod cli;
pub mod combine;
pub mod config;
pub mod events;
pub mod http;
pub mod kit;
pub mod metrics;
pub mod notify;
pub mod paydir;
pub mod payment;
pub mod reconcile;
pub mod redact;
pub mod sim;
pub mod store;
pub mod webhook;
