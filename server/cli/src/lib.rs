//! The `wxpay-combine` command line: one module per command, each parsing
//! its arguments and calling into the merchant library
//! ([`wxpay_combine`]), the simulator ([`wxpay_combine_sim`]) or the
//! protocol core ([`wxpay_combine_core`]); no protocol logic lives here.
//! [`app`] holds what `serve` and `demo` add around the library's `Kit`:
//! logging set-up, the shutdown signal, and the demo's preparation.
//!
//! ## Layers
//! - `bill`, `demo`, `events`, `paydir`, `refund`, `serve`, `tools`
//! - `app`
//!
//! Each item may use the items below it, never those above (checked by
//! `cargo xtask layering`, part of `cargo xtask test`).

#![warn(missing_docs)]

pub mod app;
pub mod bill;
pub mod demo;
pub mod events;
pub mod paydir;
pub mod refund;
pub mod serve;
pub mod tools;
