//! `cargo xtask bench-load [--db sqlite|postgres] [--notifications N] [--orders M]`:
//! the load benchmark of BENCHMARKS.md ("Load").
//!
//! Builds the release binary and the `bench_load` example (the load
//! generator, `server/merchant/examples/bench_load.rs`), then runs the generator,
//! which starts the simulator and the merchant server as separate processes
//! on loopback, fires the notifications and the prepays, checks the database
//! and times the crypto floor in-process. Its last line is the result:
//! `notify_per_s=<n> prepay_per_s=<n> prepay_p99_ms=<x> prepay_vs_crypto_floor=<x.xx>`.
//!
//! With `--db sqlite` the command fails when `notify_per_s < 5000` or
//! `prepay_vs_crypto_floor < 0.6` (the requirements); PostgreSQL figures
//! are reported only. `--db postgres` needs `WXPAY_TEST_DATABASE_URL`
//! (a fresh schema is created for the run).

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    if target.is_absolute() {
        target
    } else {
        workspace_root().join(target)
    }
}

const USAGE: &str = "usage: cargo xtask bench-load [--db sqlite|postgres] [--notifications N] \
                     [--orders M] [--in-flight K] [--clients C]";

/// Runs the benchmark with the command-line `args`.
pub fn run(args: &[String]) -> Result<()> {
    let mut db = "sqlite".to_string();
    let mut pass = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--db" | "--notifications" | "--orders" | "--in-flight" | "--clients"
            | "--floor-seconds" | "--database-url" => {
                let value = it
                    .next()
                    .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
                if flag == "--db" {
                    db = value.clone();
                }
                pass.push(flag.clone());
                pass.push(value.clone());
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    if db != "sqlite" && db != "postgres" {
        bail!("--db must be sqlite or postgres\n{USAGE}");
    }

    let root = workspace_root();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "-p",
            "wxpay-combine-cli",
            "--bin",
            "wxpay-combine",
            "-p",
            "wxpay-combine",
            "--example",
            "bench_load",
        ])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("the release build failed");
    }
    let target = target_dir();
    let bin = target.join("release/wxpay-combine");
    let generator = target.join("release/examples/bench_load");
    let dir = target.join(format!("bench-load/{db}"));
    let out = Command::new(&generator)
        .current_dir(&root)
        .arg("--bin")
        .arg(&bin)
        .arg("--dir")
        .arg(&dir)
        .args(&pass)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", generator.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    if !out.status.success() {
        bail!("the load generator failed ({})", out.status);
    }
    let last = text.lines().last().unwrap_or_default();
    let field = |name: &str| -> Result<f64> {
        last.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .with_context(|| format!("no {name} in the last line {last:?}"))?
            .parse::<f64>()
            .with_context(|| format!("{name} in {last:?}"))
    };
    let notify = field("notify_per_s")?;
    let ratio = field("prepay_vs_crypto_floor")?;
    if db == "sqlite" {
        let mut missed = Vec::new();
        if notify < 5000.0 {
            missed.push(format!("notify_per_s {notify:.0} < 5000"));
        }
        if ratio < 0.6 {
            missed.push(format!("prepay_vs_crypto_floor {ratio:.2} < 0.6"));
        }
        if !missed.is_empty() {
            bail!("requirement missed: {}", missed.join(", "));
        }
    }
    Ok(())
}
