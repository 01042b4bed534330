//! `wxpay-combine bill`: apply for a day's trade bill of every merchant
//! with credentials (each with its own credentials: a merchant's bill holds
//! only its own sub-orders), download it with a verified SHA-1, parse it and
//! reconcile it against that merchant's sub-orders in the order database.
//! The scheduled run inside `serve` (`wxpay_combine::bill::schedule`) calls
//! the same `BillFetcher::fetch_merchant`.
//!
//! Exit codes (also in `--help` and docs/bills.md):
//! 0 reconciled, no discrepancy; 1 discrepancies found (report written);
//! 2 usage or configuration error; 3 `NO_STATEMENT_EXIST`;
//! 4 `STATEMENT_CREATING`; 5 SHA-1 mismatch (nothing written at `--out`);
//! 6 WeChat Pay API or network error (including an expired download URL
//! after the retries, and a `download_url` on a foreign host);
//! 7 the bill file is malformed; 8 local error (database, file system).
//! With several merchants, the first merchant's error decides.

use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use wxpay_combine::apiv3::{Clock, SystemClock};
use wxpay_combine::bill::fetch::{
    bill_file_stem, parse_date, skipped_merchants, write_run_report, BillFetcher, BillJob,
    BillRunError, MerchantRun, RunSummary, EXIT_LOCAL, EXIT_USAGE,
};
use wxpay_combine::bill::BillKind;
use wxpay_combine::combine::settings::MerchantCredentials;
use wxpay_combine::config::Config;
use wxpay_combine::kit::{
    merchants_without_credentials, prepare_merchant_client, redact_database_url,
};

const EXIT_CODES_HELP: &str = "Merchants and files:
  Each merchant's trade bill holds only its own sub-orders, so the bill of every merchant with
  credentials here (the initiator's top-level keys and each [[merchants]] entry with credentials)
  is fetched with that merchant's own credentials and reconciled against its sub-orders only.
  --out-dir DIR   every merchant's bill to DIR/<date>-<type>-<mchid>.csv and its report to
                  DIR/<date>-<type>-<mchid>.json
  --out FILE      the bill to FILE; only when one bill is fetched (--merchant MCHID, or a
                  configuration whose only credentials are the initiator's)
  --report FILE   the run report (JSON): every merchant's result and the merchants skipped
  Merchants without credentials (listed in [[merchants]] without keys, or seen on sub-orders paid
  that day) are skipped and listed as SKIPPED; --merchant for one of them is an error (exit 2).
  A merchant without a bill (NO_STATEMENT_EXIST) and without sub-orders paid that day, such as
  an initiator without own sub-orders, is a clean, empty result.

Exit codes (with several merchants, the first merchant's error decides):
  0  reconciled: no discrepancy, summary totals consistent
  1  discrepancies found (see the report)
  2  usage or configuration error
  3  NO_STATEMENT_EXIST: no bill for that day although sub-orders of that merchant were paid
  4  STATEMENT_CREATING: the bill is not ready yet (bills are ready after 10:00 the next day)
  5  SHA-1 mismatch: the download does not match hash_value; nothing written at --out
  6  WeChat Pay API or network error (also: download URL still expired after 3 applications,
     or a download_url that is not on the configured API host)
  7  the bill file is malformed (the message names the line)
  8  local error (database, file system)";

/// `wxpay-combine bill …`
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES_HELP)]
#[command(group(clap::ArgGroup::new("output").required(true).args(["out", "out_dir"])))]
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
    /// Fetch only this merchant's bill (it must have credentials here).
    #[arg(long, value_name = "MCHID")]
    pub merchant: Option<String>,
    /// Where the verified bill is written (atomically); only when one bill is fetched.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Where every merchant's bill and report are written:
    /// `DIR/<date>-<type>-<mchid>.csv` and `.json`.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// Where the run report (JSON: every merchant's result, the merchants skipped) is written.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

/// The merchants whose bills `args` asks for, or a usage error.
fn targets(args: &BillArgs, config: &Config) -> Result<Vec<MerchantCredentials>, String> {
    let targets: Vec<MerchantCredentials> = match &args.merchant {
        Some(m) => match config.wechatpay.credentials_for(m) {
            Some(c) => vec![c.clone()],
            None => {
                let listed = config.wechatpay.mchids().any(|x| x == m);
                return Err(format!(
                    "merchant {m} has no credentials in this configuration ({}); its bill can only \
                     be fetched with its own keys in its [[merchants]] entry",
                    if listed {
                        "listed in [[merchants]] without keys"
                    } else {
                        "not listed in [[merchants]]"
                    }
                ));
            }
        },
        None => config.wechatpay.credentialed().cloned().collect(),
    };
    if args.out.is_some() && targets.len() > 1 {
        return Err(format!(
            "--out names one file but {} merchants have credentials ({}); use --out-dir DIR, \
             or --merchant MCHID for one of them",
            targets.len(),
            targets
                .iter()
                .map(|c| c.mchid.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(targets)
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
    let targets = match targets(&args, &config) {
        Ok(t) => t,
        Err(e) => return usage(e),
    };
    // The directories written to, before anything is fetched (as the
    // scheduler creates its own): --out-dir, and those of --out and --report.
    let parent = |f: &PathBuf| {
        f.parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(PathBuf::from)
    };
    let dirs = [
        args.out_dir.clone(),
        args.out.as_ref().and_then(parent),
        args.report.as_ref().and_then(parent),
    ];
    for dir in dirs.iter().flatten() {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("wxpay-combine bill: cannot create {}: {e}", dir.display());
            return ExitCode::from(EXIT_LOCAL);
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return usage(format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async move {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
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
        let api = &config.wechatpay.api;
        let mut merchants = Vec::new();
        for creds in &targets {
            let mchid = creds.mchid.clone();
            let (out, report_path) = match (&args.out, &args.out_dir) {
                (Some(file), _) => (file.clone(), None),
                (None, Some(dir)) => {
                    let stem = bill_file_stem(date, kind, &mchid);
                    (
                        dir.join(format!("{stem}.csv")),
                        Some(dir.join(format!("{stem}.json"))),
                    )
                }
                (None, None) => unreachable!("clap requires --out or --out-dir"),
            };
            let job = BillJob {
                date,
                kind,
                gzip: args.gzip,
                out,
                report: report_path.clone(),
            };
            let client_error = |detail: String| BillRunError::Client {
                mchid: mchid.clone(),
                detail,
            };
            let result = match prepare_merchant_client(creds, api, clock.clone()).await {
                Ok(client) => match BillFetcher::new(api, client, store.clone()) {
                    Ok(f) => f.fetch_merchant(&job).await,
                    Err(detail) => Err(client_error(detail)),
                },
                Err(e) => Err(client_error(e.to_string())),
            };
            merchants.push(MerchantRun {
                report_path: report_path.filter(|p| p.exists()),
                mchid,
                result,
            });
        }
        // Only a run over every merchant can tell which ones it left out.
        let skipped = if args.merchant.is_some() {
            Vec::new()
        } else {
            let credentialed: Vec<String> = targets.iter().map(|c| c.mchid.clone()).collect();
            let listed = merchants_without_credentials(&config);
            match skipped_merchants(store.as_ref(), date, &credentialed, &listed).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("wxpay-combine bill: {e}");
                    return ExitCode::from(e.exit_code());
                }
            }
        };
        let summary = RunSummary {
            date,
            kind,
            merchants,
            skipped,
        };
        print!("{}", summary.human_summary());
        for m in &summary.merchants {
            if let Err(e) = &m.result {
                eprintln!("wxpay-combine bill: merchant {}: {e}", m.mchid);
            }
        }
        if let Some(p) = &args.report {
            if let Err(e) = write_run_report(p, &summary) {
                eprintln!("wxpay-combine bill: {e}");
                return ExitCode::from(e.exit_code());
            }
            println!("report: {}", p.display());
        }
        ExitCode::from(summary.exit_code())
    })
}
