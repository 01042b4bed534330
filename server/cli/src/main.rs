//! `wxpay-combine`: the merchant server, the WeChat Pay simulator and the
//! debugging tools, in one binary.

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use wxpay_combine_cli as cli;

// glibc's allocator: +15 % notifications/s with mimalloc, measured A/B with
// the same build of everything else (BENCHMARKS.md "Load", session 5).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "wxpay-combine",
    version,
    about = "WeChat Pay combined-order (合单支付) JSAPI payments"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sign a getBrandWCPayRequest object or a merchant API request.
    #[command(subcommand)]
    Sign(cli::tools::SignCommand),
    /// Check a Wechatpay-Signature over a body (signature only).
    Verify(cli::tools::VerifyArgs),
    /// Decrypt an AEAD_AES_256_GCM resource with the APIv3 key.
    Decrypt(cli::tools::DecryptArgs),
    /// Run the WeChat Pay APIv3 simulator (offline sandbox).
    Sim(wxpay_combine_sim::SimArgs),
    /// Run the merchant server (production) from a TOML configuration.
    Serve(cli::serve::ServeArgs),
    /// Run the whole demo: simulator + merchant server + page, on this machine.
    Demo(cli::demo::DemoArgs),
    /// Check a page URL against a registered 支付授权目录 (pay directory).
    CheckPayDir(cli::paydir::CheckPayDirArgs),
    /// Webhook outbox: list pending events or re-send one.
    Events(cli::events::EventsArgs),
    /// Download a day's trade bill (SHA-1 verified) and reconcile it with the orders.
    Bill(cli::bill::BillArgs),
    /// Refund a sub-order (by its own merchant) or look a refund up.
    Refund(cli::refund::RefundArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Sign(c) => cli::tools::sign(c),
        Command::Verify(a) => cli::tools::verify(a),
        Command::Decrypt(a) => cli::tools::decrypt(a),
        Command::Sim(a) => wxpay_combine_sim::run(a),
        Command::Refund(a) => cli::refund::run(a),
        Command::Serve(a) => cli::serve::run(a),
        Command::Demo(a) => cli::demo::run(a),
        Command::CheckPayDir(a) => cli::paydir::run(a),
        Command::Events(a) => cli::events::run(a),
        Command::Bill(a) => cli::bill::run(a),
    }
}
