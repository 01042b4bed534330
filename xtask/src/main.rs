//! Project automation: `cargo xtask <command>`.
//!
//! Every command here is what a newcomer or CI runs; each installs what it
//! needs (idempotently) before doing its job.

mod bench;
mod bench_load;
mod demo;
mod fuzz;
mod layering;
mod test;
mod tools;
mod wasm;
mod wasm_readme;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo::run_demo(&args[1..]),
        Some("test") => test::run_all(),
        Some("wasm") => wasm::build().map(|_| ()),
        Some("wasm-size") => wasm::size(),
        Some("wasm-bindings-size") => wasm::bindings_size(),
        Some("wasm-test") => wasm::test(),
        Some("bench-crypto") => bench::crypto(&args[1..]),
        Some("bench-load") => bench_load::run(&args[1..]),
        Some("fuzz") => fuzz::cli(&args[1..]),
        Some("layering") => layering::run(),
        _ => {
            eprintln!("usage: cargo xtask <demo|test|wasm|wasm-size|wasm-bindings-size|wasm-test|bench-crypto|bench-load|fuzz|layering>");
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
