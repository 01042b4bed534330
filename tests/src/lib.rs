//! The support library of the integration and end-to-end tests in
//! `tests/*.rs`; each test file imports what it needs from here.
//!
//! - [`binary`]: the workspace on disk and the `wxpay-combine` binary,
//!   built once per test run.
//! - [`wait`]: polling until something happens.
//! - [`database`]: SQLite or a fresh PostgreSQL schema;
//!   [`on_both_databases!`] runs a test on both.
//! - [`demo`]: the demo configuration flows and clusters start from.
//! - [`payer`]: a payer's browser against the merchant server's HTTP API.
//! - [`flow`]: the merchant server in this process (`flow_*.rs`).
//! - [`reliability`]: `wxpay-combine serve` processes sharing one database
//!   (`reliability_*.rs`, `webhook_crash.rs`).
//! - [`sim`]: the simulator on its own, a signing merchant client and a
//!   notification receiver (`sim_*.rs`).
//! - [`chromium`]: the demo in headless Chromium (`e2e_*.rs`).

pub mod binary;
pub mod chromium;
pub mod database;
pub mod demo;
pub mod flow;
pub mod payer;
pub mod reliability;
pub mod sim;
pub mod wait;

/// Whether this runs under `CI=true`, where a missing prerequisite fails a
/// test instead of skipping it.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}
