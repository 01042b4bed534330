//! `cargo xtask demo [ARGS…]`: builds what the demo page needs (the wasm
//! package in `wasm/pkg/`), then runs `wxpay-combine demo ARGS…` in release
//! mode from the repository root, so `www/` and `wasm/pkg/` are found.

use crate::tools::{repo_root, run};
use crate::wasm;
use anyhow::{Context, Result};
use std::process::Command;

/// Builds the page's package and runs the demo, passing `args` through
/// (e.g. `--addr 127.0.0.1:8080 --data-dir ./demo-data`).
pub fn run_demo(args: &[String]) -> Result<()> {
    let tarball = wasm::build().context("building the wasm package for the demo page")?;
    eprintln!("xtask: wasm/pkg/ built (packed as {})", tarball.display());
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(Command::new(cargo)
        .current_dir(repo_root())
        .args(["run", "--release", "-p", "wxpay-combine-cli", "--", "demo"])
        .args(args))
}
