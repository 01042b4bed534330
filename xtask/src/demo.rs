//! `cargo xtask demo [ARGS…]`: builds what the demo page needs (the wasm
//! package in `wasm/pkg/`), then runs `wxpay-combine demo ARGS…` in release
//! mode from the repository root, so `www/` and `wasm/pkg/` are found.

use crate::tools::{repo_root, run};
use crate::wasm;
use anyhow::{Context, Result};
use std::process::Command;

/// Builds the page's package and runs the demo, passing `args` through
/// (e.g. `--addr 127.0.0.1:8080 --data-dir ./demo-data`, with or without a
/// leading `--`).
pub fn run_demo(args: &[String]) -> Result<()> {
    let args = demo_args(args);
    if let Some(bin) = std::env::var_os("XTASK_DEMO_BIN") {
        // The documentation test (tests/tests/docs.rs) runs the README's
        // demo commands with the binary it built: no package build, no
        // release build. `exec`, so stopping this process stops the demo.
        use std::os::unix::process::CommandExt;
        let err = Command::new(&bin)
            .current_dir(repo_root())
            .arg("demo")
            .args(args)
            .exec();
        return Err(err).with_context(|| format!("running {}", bin.to_string_lossy()));
    }
    let tarball = wasm::build().context("building the wasm package for the demo page")?;
    eprintln!("xtask: wasm/pkg/ built (packed as {})", tarball.display());
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(Command::new(cargo)
        .current_dir(repo_root())
        .args(["run", "--release", "-p", "wxpay-combine-cli", "--", "demo"])
        .args(args))
}

/// The arguments for `wxpay-combine demo`: `cargo xtask demo ARGS` and
/// `cargo xtask demo -- ARGS` mean the same (a `--` reaching clap would make
/// every later option a stray positional argument).
pub fn demo_args(args: &[String]) -> &[String] {
    match args.first().map(String::as_str) {
        Some("--") => &args[1..],
        _ => args,
    }
}

#[cfg(test)]
mod tests {
    use super::demo_args;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_leading_double_dash_is_dropped() {
        let plain = strings(&["--addr", "127.0.0.1:9000"]);
        assert_eq!(demo_args(&plain), plain.as_slice());
        assert_eq!(
            demo_args(&strings(&["--", "--addr", "127.0.0.1:9000"])),
            plain.as_slice()
        );
        assert!(demo_args(&[]).is_empty());
    }
}
