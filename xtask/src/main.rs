//! Project automation: `cargo xtask <command>`.
//!
//! Every command here is what a newcomer or CI runs; each installs what it
//! needs (idempotently) before doing its job.

mod tools;
mod wasm;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("wasm") => wasm::build().map(|_| ()),
        Some("wasm-size") => wasm::size(),
        Some("wasm-test") => wasm::test(),
        _ => {
            eprintln!("usage: cargo xtask <demo|test|wasm|wasm-size|wasm-test|bench-crypto>");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
