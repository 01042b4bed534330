//! `cargo xtask test`: install what is missing, then run every check and
//! every test the project has. CI runs exactly this.

use crate::tools::{self, run};
use anyhow::Result;
use std::process::Command;

/// PostgreSQL on the CI machine (trust auth). Tests that need PostgreSQL read
/// `WXPAY_TEST_DATABASE_URL`; they fail under `CI=true` when it is missing and
/// skip with a printed reason elsewhere.
const CI_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn run_all() -> Result<()> {
    let root = tools::repo_root();
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");

    // 1. Tools (idempotent; quick when present).
    tools::ensure_wasm_target()?;
    tools::ensure_wasm_bindgen_cli()?;
    tools::ensure_node_modules()?;
    tools::ensure_python_cryptography()?;
    if let Err(e) = tools::ensure_chromium() {
        if ci {
            return Err(e.context("Chromium is required under CI=true"));
        }
        eprintln!("xtask: browser tests will skip: {e:#}");
    }

    // 2. Formatting and lints, host and wasm.
    run(Command::new("cargo")
        .current_dir(&root)
        .args(["fmt", "--all", "--check"]))?;
    run(Command::new("cargo").current_dir(&root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(Command::new("cargo").current_dir(&root).args([
        "clippy",
        "-p",
        "wxpay-combine-jsapi",
        "--target",
        "wasm32-unknown-unknown",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The server crates' API documentation builds without a warning (broken
    // links, missing docs); their examples compile in the test step below.
    run(Command::new("cargo")
        .current_dir(&root)
        .env("RUSTDOCFLAGS", "-D warnings")
        .args([
            "doc",
            "--no-deps",
            "-p",
            "wxpay-combine-core",
            "-p",
            "wxpay-combine-sim",
            "-p",
            "wxpay-combine",
            "-p",
            "wxpay-combine-cli",
        ]))?;

    // 2b. Module layering: no module cycle, no upward import against a
    // crate's declared layers (see layering.rs).
    crate::layering::run()?;

    // 3. The wasm package (the demo page and the browser tests load it).
    crate::wasm::build()?;

    // 4. Every Rust test, with both crypto backends compiled in; every
    // test binary runs even after one fails, so one run reports them all.
    let mut test = Command::new("cargo");
    test.current_dir(&root).args([
        "test",
        "--no-fail-fast",
        "--workspace",
        "--all-features",
        "--exclude",
        "wxpay-combine-jsapi",
    ]);
    if ci && std::env::var_os("WXPAY_TEST_DATABASE_URL").is_none() {
        test.env("WXPAY_TEST_DATABASE_URL", CI_DATABASE_URL);
    }
    run(&mut test)?;

    // 4b. A few seconds of fuzzing per target (an unoptimised instrumented
    // build: ≈390 CPU-s cold; see BENCHMARKS.md "Fuzzing"). Longer runs:
    // `cargo xtask fuzz --minutes N`.
    crate::fuzz::quick()?;

    // 5. The npm package in a real browser.
    crate::wasm::test()?;

    println!("xtask test: all checks passed");
    Ok(())
}
