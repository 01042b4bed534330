//! Debugging tools: `sign`, `verify`, `decrypt`.

use clap::{Args, Subcommand};
use std::process::ExitCode;

/// `wxpay-combine sign …`
#[derive(Debug, Subcommand)]
pub enum SignCommand {}

/// `wxpay-combine verify …`
#[derive(Debug, Args)]
pub struct VerifyArgs {}

/// `wxpay-combine decrypt …`
#[derive(Debug, Args)]
pub struct DecryptArgs {}

/// Runs `sign`.
pub fn sign(_c: SignCommand) -> ExitCode {
    ExitCode::FAILURE
}
/// Runs `verify`.
pub fn verify(_a: VerifyArgs) -> ExitCode {
    ExitCode::FAILURE
}
/// Runs `decrypt`.
pub fn decrypt(_a: DecryptArgs) -> ExitCode {
    ExitCode::FAILURE
}
