//! `cargo xtask fuzz [--minutes N | --seconds N] [--target NAME] [--asan]`
//! (default: every target for a minute) and `cargo xtask fuzz --quick`:
//! bounded, coverage-guided fuzzing of the targets in `fuzz/fuzz_targets/`
//! with cargo-fuzz (libFuzzer).
//!
//! The machine has only a stable toolchain; cargo-fuzz's `-Z` flags work on
//! it with `RUSTC_BOOTSTRAP=1`, which this sets for the fuzz build only.
//!
//! Timed runs use one build for every target: release with debug assertions
//! (overflow checks), no sanitizer (the fuzzed code is safe Rust on the
//! pure-Rust crypto backend; `--asan` adds AddressSanitizer for a separate
//! build), 16 codegen units (cargo-fuzz defaults to 1, which serialises the
//! biggest crates on a 2-core machine). The `--quick` smoke run inside
//! `cargo xtask test` uses an unoptimised (`--dev`) build instead: it costs
//! about half the CPU time to compile cold (≈390 CPU-s against ≈800 on this
//! machine), which matters far more than execution speed over a few seconds.
//! Artifacts live in `fuzz/target/` (shared by all targets and runs).
//!
//! The committed seed corpus `fuzz/corpus/<target>/` is read, never written:
//! new inputs go to `fuzz/target/work-corpus/<target>/` (kept between runs,
//! ignored by git) and crashes to `fuzz/artifacts/<target>/`. A dictionary
//! `fuzz/dict/<target>.dict` is used when present. After the runs a table
//! gives executions, new inputs and coverage per target; a crash fails the
//! command, naming the reproducer file.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Seconds per target for [`quick`] (the `cargo xtask test` smoke run).
const QUICK_SECONDS: u64 = 8;

/// How the fuzz targets are compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Build {
    /// Release with debug assertions, no sanitizer (timed runs).
    Release,
    /// Release with AddressSanitizer (`--asan`).
    ReleaseAsan,
    /// Unoptimised, no sanitizer: cheapest to compile (the quick run).
    Dev,
}

/// What one bounded run of one target did.
#[derive(Debug, Default)]
struct Report {
    target: String,
    seconds: u64,
    executions: u64,
    new_units: u64,
    coverage: u64,
    corpus: u64,
    crash: Option<String>,
}

/// Entry point of `cargo xtask fuzz`.
pub fn cli(args: &[String]) -> Result<()> {
    let mut seconds = 60;
    let mut target = None;
    let mut build = Build::Release;
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
            "--target" => {
                target = Some(it.next().context("--target needs a name")?.to_string());
            }
            "--asan" => build = Build::ReleaseAsan,
            "--quick" => return quick(),
            "-h" | "--help" => {
                println!(
                    "usage: cargo xtask fuzz [--quick | --minutes N | --seconds N] [--target NAME] [--asan]"
                );
                println!("targets: {}", targets()?.join(", "));
                return Ok(());
            }
            other if other.starts_with('-') => bail!("unknown option {other}"),
            other => target = Some(other.to_string()),
        }
    }
    let names = match target {
        Some(t) => vec![t],
        None => targets()?,
    };
    run_targets(&names, seconds, build)
}

/// Every target for a few seconds: proves the harnesses build and run, and
/// replays the seed corpus through them. Part of `cargo xtask test`.
pub fn quick() -> Result<()> {
    let started = Instant::now();
    run_targets(&targets()?, QUICK_SECONDS, Build::Dev)?;
    println!(
        "xtask fuzz: quick run done in {:.0} s (build included)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Builds once, fuzzes each of `names` for `seconds`, prints the table, and
/// fails if any target crashed.
fn run_targets(names: &[String], seconds: u64, profile: Build) -> Result<()> {
    let known = targets()?;
    for t in names {
        if !known.contains(t) {
            bail!("no fuzz target {t:?} (have: {})", known.join(", "));
        }
    }
    ensure_cargo_fuzz()?;
    check_lockfile()?;
    let build_started = Instant::now();
    let mut build = cargo_fuzz("build", profile);
    if let [one] = names {
        build.arg(one);
    }
    let status = build.status().context("running cargo fuzz build")?;
    if !status.success() {
        bail!("cargo fuzz build failed ({status})");
    }
    println!(
        "xtask fuzz: build took {:.0} s",
        build_started.elapsed().as_secs_f64()
    );

    let mut reports = Vec::new();
    for t in names {
        reports.push(run(t, seconds, profile)?);
    }
    println!();
    println!(
        "{:<22} {:>6} {:>12} {:>9} {:>6} {:>7} {:>6} {:>7}",
        "target", "secs", "executions", "exec/s", "new", "corpus", "cov", "crashes"
    );
    for r in &reports {
        println!(
            "{:<22} {:>6} {:>12} {:>9} {:>6} {:>7} {:>6} {:>7}",
            r.target,
            r.seconds,
            r.executions,
            r.executions / r.seconds.max(1),
            r.new_units,
            r.corpus,
            r.coverage,
            u8::from(r.crash.is_some()),
        );
    }
    let crashes: Vec<String> = reports
        .iter()
        .filter_map(|r| r.crash.as_ref().map(|c| format!("{}: {c}", r.target)))
        .collect();
    if !crashes.is_empty() {
        bail!("fuzzing found crashes:\n{}", crashes.join("\n"));
    }
    Ok(())
}

/// The fuzz crate is outside the workspace and has its own committed
/// lockfile; it must be current, so a test run never rewrites a tracked
/// file. `cargo fuzz build` has no `--locked`, so the same resolution is
/// checked here with `cargo metadata --locked` (which fails instead of
/// updating the lockfile).
fn check_lockfile() -> Result<()> {
    let status = Command::new("cargo")
        .current_dir(repo_root())
        .args([
            "metadata",
            "--locked",
            "--format-version",
            "1",
            "--manifest-path",
            "fuzz/Cargo.toml",
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running cargo metadata for the fuzz crate")?;
    if !status.success() {
        bail!("fuzz/Cargo.lock is out of date: run `cargo metadata --manifest-path fuzz/Cargo.toml --format-version 1 >/dev/null` and commit fuzz/Cargo.lock");
    }
    Ok(())
}

/// `cargo fuzz <sub>` with this project's build settings.
fn cargo_fuzz(sub: &str, build: Build) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(repo_root())
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", sub]);
    match build {
        Build::Dev => cmd.args(["--dev", "--sanitizer", "none"]),
        Build::Release | Build::ReleaseAsan => cmd
            .args(["--release", "--debug-assertions", "--codegen-units", "16"])
            .args([
                "--sanitizer",
                if build == Build::ReleaseAsan {
                    "address"
                } else {
                    "none"
                },
            ]),
    };
    cmd
}

/// Fuzzes `target` for `seconds`: libFuzzer's progress is passed through,
/// its final statistics and any crash reproducer are collected.
fn run(target: &str, seconds: u64, build: Build) -> Result<Report> {
    let root = repo_root();
    let fuzz_dir = root.join("fuzz");
    let seeds = fuzz_dir.join("corpus").join(target);
    let work = fuzz_dir.join("target").join("work-corpus").join(target);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let artifacts = fuzz_dir.join("artifacts").join(target);
    std::fs::create_dir_all(&artifacts)?;

    println!("xtask fuzz: {target} for {seconds} s");
    let mut cmd = cargo_fuzz("run", build);
    cmd.arg(target)
        .arg(&work)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1")
        .stderr(Stdio::piped());
    // Header cells and typical values help the mutator past the header check.
    let dict = fuzz_dir.join("dict").join(format!("{target}.dict"));
    if dict.exists() {
        cmd.arg(format!("-dict={}", dict.display()));
    }
    let mut child = cmd.spawn().context("running cargo fuzz run")?;
    let stderr = child.stderr.take().context("libFuzzer output")?;
    let mut report = Report {
        target: target.to_string(),
        seconds,
        ..Report::default()
    };
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading libFuzzer output")?;
        eprintln!("{line}");
        parse_line(&line, &mut report);
    }
    let status = child.wait().context("waiting for cargo fuzz run")?;
    if !status.success() && report.crash.is_none() {
        report.crash = Some(format!(
            "exited with {status}; reproducer (if any) in {}",
            artifacts.display()
        ));
    }
    Ok(report)
}

/// Picks libFuzzer's statistics and the crash artifact out of one line.
fn parse_line(line: &str, r: &mut Report) {
    let number = |key: &str| -> Option<u64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    if let Some(n) = line
        .strip_prefix("stat::number_of_executed_units:")
        .and_then(|v| v.trim().parse().ok())
    {
        r.executions = n;
    } else if let Some(n) = line
        .strip_prefix("stat::new_units_added:")
        .and_then(|v| v.trim().parse().ok())
    {
        r.new_units = n;
    } else if line.starts_with('#') {
        if let Some(c) = number("cov: ") {
            r.coverage = c;
        }
        if let Some(c) = line
            .find("corp: ")
            .and_then(|i| line[i + 6..].split('/').next()?.parse().ok())
        {
            r.corpus = c;
        }
    } else if let Some(i) = line.find("Test unit written to ") {
        r.crash = Some(line[i + "Test unit written to ".len()..].trim().to_string());
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libfuzzer_statistics_and_crashes() {
        let mut r = Report::default();
        for line in [
            "#4096\tpulse  cov: 812 ft: 1900 corp: 120/9Kb lim: 43 exec/s: 2048 rss: 80Mb",
            "#52011\tDONE   cov: 1234 ft: 4321 corp: 345/60Kb lim: 4096 exec/s: 5201 rss: 90Mb",
            "stat::number_of_executed_units: 52011",
            "stat::new_units_added: 77",
        ] {
            parse_line(line, &mut r);
        }
        assert_eq!(
            (r.executions, r.new_units, r.coverage, r.corpus),
            (52011, 77, 1234, 345)
        );
        assert!(r.crash.is_none());
        parse_line(
            "artifact_prefix='fuzz/artifacts/x/'; Test unit written to fuzz/artifacts/x/crash-ab12",
            &mut r,
        );
        assert_eq!(r.crash.as_deref(), Some("fuzz/artifacts/x/crash-ab12"));
    }
}
