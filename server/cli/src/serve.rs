//! `wxpay-combine serve --config wxpay.toml`: the production merchant server.

use crate::app;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use wxpay_combine::config::{Config, LogFormat};

/// `wxpay-combine serve …`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The configuration file (see wxpay.example.toml); `WXPAY_*` variables override its keys.
    #[arg(long, short, env = "WXPAY_CONFIG", default_value = "wxpay.toml")]
    pub config: PathBuf,
    /// Validate the configuration (keys, files, URLs, the catalog, the database) and exit.
    #[arg(long)]
    pub check: bool,
    /// Log line format, overriding `log_format` of the configuration.
    #[arg(long, value_parser = ["text", "json"])]
    pub log_format: Option<String>,
}

/// Runs `serve`.
pub fn run(args: ServeArgs) -> ExitCode {
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wxpay-combine serve: {e}");
            return ExitCode::FAILURE;
        }
    };
    app::init_tracing(match args.log_format.as_deref() {
        Some("json") => LogFormat::Json,
        Some(_) => LogFormat::Text,
        None => config.log_format,
    });
    for var in Config::unknown_env_vars(std::env::vars().map(|(k, _)| k)) {
        tracing::warn!(variable = %var, "unknown WXPAY_ environment variable ignored (typo?)");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wxpay-combine serve: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.check {
        // Everything `serve` would refuse at start, without starting: the
        // keys (above), the catalog and the database.
        let notes = match runtime.block_on(wxpay_combine::kit::check(&config)) {
            Ok(notes) => notes,
            Err(e) => {
                eprintln!("wxpay-combine serve: {e}");
                return ExitCode::FAILURE;
            }
        };
        for w in &config.warnings {
            println!("warning: {w}");
        }
        for n in notes {
            println!("note: {n}");
        }
        println!("configuration OK: {}", args.config.display());
        return ExitCode::SUCCESS;
    }
    match runtime.block_on(app::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wxpay-combine serve: {e}");
            ExitCode::FAILURE
        }
    }
}
