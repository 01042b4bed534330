//! `wxpay-combine bill`: apply for a day's trade bill, download it with a
//! verified SHA-1, parse it and reconcile it against the order database.
//! The scheduled run inside `serve` (`wxpay_combine::bill::schedule`) calls the
//! same `BillFetcher::fetch_and_reconcile`.
//!
//! Exit codes (also in `--help` and docs/bills.md):
//! 0 reconciled, no discrepancy; 1 discrepancies found (report written);
//! 2 usage or configuration error; 3 `NO_STATEMENT_EXIST`;
//! 4 `STATEMENT_CREATING`; 5 SHA-1 mismatch (nothing written at `--out`);
//! 6 WeChat Pay API or network error (including an expired download URL
//! after the retries, and a `download_url` on a foreign host);
//! 7 the bill file is malformed; 8 local error (database, file system).

use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use wxpay_combine::apiv3::{Clock, SystemClock};
use wxpay_combine::bill::fetch::{
    parse_date, BillFetcher, BillJob, EXIT_API, EXIT_DISCREPANCIES, EXIT_LOCAL, EXIT_OK, EXIT_USAGE,
};
use wxpay_combine::bill::BillKind;
use wxpay_combine::config::Config;
use wxpay_combine::kit::{prepare_client, redact_database_url};

const EXIT_CODES_HELP: &str = "Exit codes:
  0  reconciled: no discrepancy, summary totals consistent
  1  discrepancies found (see the report)
  2  usage or configuration error
  3  NO_STATEMENT_EXIST: no bill for that day (no trades)
  4  STATEMENT_CREATING: the bill is not ready yet (bills are ready after 10:00 the next day)
  5  SHA-1 mismatch: the download does not match hash_value; nothing written at --out
  6  WeChat Pay API or network error (also: download URL still expired after 3 applications,
     or a download_url that is not on the configured API host)
  7  the bill file is malformed (the message names the line)
  8  local error (database, file system)";

/// `wxpay-combine bill …`
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES_HELP)]
pub struct BillArgs {
    /// The configuration file (see wxpay.example.toml); `WXPAY_*` variables override its keys.
    #[arg(long, short, env = "WXPAY_CONFIG", default_value = "wxpay.toml")]
    pub config: PathBuf,
    /// The bill's day, YYYY-MM-DD (Beijing time).
    #[arg(long)]
    pub date: String,
    /// Bill type.
    #[arg(long = "type", default_value = "ALL", value_parser = ["ALL", "SUCCESS", "REFUND"])]
    pub bill_type: String,
    /// Ask for a gzip-compressed download (the file written is uncompressed).
    #[arg(long)]
    pub gzip: bool,
    /// Where the verified bill is written (atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// Where the full reconciliation report (JSON) is written.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

/// Runs `bill`.
pub fn run(args: BillArgs) -> ExitCode {
    let usage = |msg: String| {
        eprintln!("wxpay-combine bill: {msg}");
        ExitCode::from(EXIT_USAGE)
    };
    let Some(date) = parse_date(&args.date) else {
        return usage(format!("--date {:?} is not YYYY-MM-DD", args.date));
    };
    let kind: BillKind = match args.bill_type.parse() {
        Ok(k) => k,
        Err(e) => return usage(format!("--type: {e}")),
    };
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => return usage(e.to_string()),
    };
    crate::app::init_tracing(config.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return usage(format!("cannot start the runtime: {e}")),
    };
    let job = BillJob {
        date,
        kind,
        gzip: args.gzip,
        out: args.out,
        report: args.report,
    };
    runtime.block_on(async move {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let client = match prepare_client(&config, clock).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("wxpay-combine bill: {e}");
                return ExitCode::from(EXIT_API);
            }
        };
        let store = match wxpay_combine::store::connect(&config.store.database_url).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!(
                    "wxpay-combine bill: database {}: {e}",
                    redact_database_url(&config.store.database_url)
                );
                return ExitCode::from(EXIT_LOCAL);
            }
        };
        let fetcher = match BillFetcher::new(&config.wechatpay.api, client, store) {
            Ok(f) => f,
            Err(e) => return usage(e),
        };
        match fetcher.fetch_and_reconcile(&job).await {
            Ok(outcome) => {
                println!(
                    "bill written: {} ({} bytes, SHA-1 {})",
                    outcome.file.path.display(),
                    outcome.file.bytes,
                    outcome.file.sha1_hex
                );
                print!("{}", outcome.report.human_summary());
                if let Some(p) = &job.report {
                    println!("report: {}", p.display());
                }
                ExitCode::from(if outcome.report.ok {
                    EXIT_OK
                } else {
                    EXIT_DISCREPANCIES
                })
            }
            Err(e) => {
                eprintln!("wxpay-combine bill: {e}");
                ExitCode::from(e.exit_code())
            }
        }
    })
}
