//! `cargo xtask fuzz [--minutes N | --seconds N] [TARGET]` (default: every
//! target for a minute) and `cargo xtask fuzz --quick`: bounded,
//! coverage-guided fuzzing of the targets in `fuzz/fuzz_targets/` with
//! cargo-fuzz (libFuzzer + AddressSanitizer).
//!
//! The machine has only a stable toolchain; cargo-fuzz's `-Z` flags work on
//! it with `RUSTC_BOOTSTRAP=1`, which this sets for the fuzz build only.
//! The committed seed corpus `fuzz/corpus/<target>/` is read, never written:
//! new inputs go to `fuzz/target/work-corpus/<target>/` (kept between runs,
//! ignored by git) and crashes to `fuzz/artifacts/<target>/`. A dictionary
//! `fuzz/dict/<target>.dict` is used when present.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Seconds per target for [`quick`] (the `cargo xtask test` smoke run).
const QUICK_SECONDS: u64 = 10;

/// Entry point of `cargo xtask fuzz`.
pub fn cli(args: &[String]) -> Result<()> {
    let mut seconds = 60;
    let mut target = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--minutes" | "--seconds" => {
                let n: u64 = it
                    .next()
                    .with_context(|| format!("{arg} needs a number"))?
                    .parse()
                    .with_context(|| format!("{arg} needs a whole number"))?;
                seconds = if arg == "--minutes" { n * 60 } else { n };
            }
            "--quick" => return quick(),
            "-h" | "--help" => {
                println!("usage: cargo xtask fuzz [--quick | --minutes N | --seconds N] [TARGET]");
                println!("targets: {}", targets()?.join(", "));
                return Ok(());
            }
            other if other.starts_with('-') => bail!("unknown option {other}"),
            other => target = Some(other.to_string()),
        }
    }
    match target {
        Some(t) => run(&t, seconds),
        None => {
            for t in targets()? {
                run(&t, seconds)?;
            }
            Ok(())
        }
    }
}

/// Every target for a few seconds: proves the harnesses build and run, and
/// replays the seed corpus through them.
pub fn quick() -> Result<()> {
    for t in targets()? {
        run(&t, QUICK_SECONDS)?;
    }
    Ok(())
}

/// Fuzzes `target` for `seconds`, failing if libFuzzer finds a crash.
pub fn run(target: &str, seconds: u64) -> Result<()> {
    let root = repo_root();
    let fuzz_dir = root.join("fuzz");
    if !targets()?.iter().any(|t| t == target) {
        bail!(
            "no fuzz target {target:?} (have: {})",
            targets()?.join(", ")
        );
    }
    ensure_cargo_fuzz()?;

    let seeds = fuzz_dir.join("corpus").join(target);
    let work = fuzz_dir.join("target").join("work-corpus").join(target);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let artifacts = fuzz_dir.join("artifacts").join(target);
    std::fs::create_dir_all(&artifacts)?;

    println!("xtask fuzz: {target} for {seconds} s");
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&root)
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", "run", target])
        .arg(&work)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-timeout=10")
        .arg("-print_final_stats=1");
    // Header cells and typical values help the mutator past the header check.
    let dict = fuzz_dir.join("dict").join(format!("{target}.dict"));
    if dict.exists() {
        cmd.arg(format!("-dict={}", dict.display()));
    }
    let status = cmd.status().context("running cargo fuzz")?;
    if !status.success() {
        bail!(
            "fuzz target {target} failed ({status}); reproducer in {}",
            artifacts.display()
        );
    }
    Ok(())
}

/// Target names: the files in `fuzz/fuzz_targets/`.
fn targets() -> Result<Vec<String>> {
    let dir = repo_root().join("fuzz").join("fuzz_targets");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs") {
            if let Some(stem) = path.file_stem() {
                names.push(stem.to_string_lossy().into_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Installs cargo-fuzz from crates.io when it is missing.
fn ensure_cargo_fuzz() -> Result<()> {
    let present = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    println!("xtask fuzz: installing cargo-fuzz");
    let status = Command::new("cargo")
        .args(["install", "cargo-fuzz", "--locked"])
        .status()
        .context("running cargo install cargo-fuzz")?;
    if !status.success() {
        bail!("cargo install cargo-fuzz failed ({status})");
    }
    Ok(())
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the repository root")
        .to_path_buf()
}
