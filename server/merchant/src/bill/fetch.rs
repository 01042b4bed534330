//! Fetching one day's trade bill and reconciling it: apply (申请交易账单),
//! download with a verified SHA-1, parse, compare with the stored
//! sub-orders, write the bill and the report atomically. `wxpay-combine
//! bill` and the scheduled run ([`super::schedule`]) both call
//! [`BillFetcher::fetch_and_reconcile`].
//!
//! Each [`BillRunError`] maps to one exit code of `wxpay-combine bill`
//! ([`BillRunError::exit_code`]; also in its `--help` and docs/bills.md).

use crate::apiv3::{Clock, SystemClock};
use crate::bill::{self, BillError, BillKind, LocalSubOrder, Report, TradeBill, VerifiedFile};
use crate::combine::client::{user_agent, Repeat, WechatPayClient};
use crate::combine::settings::ApiSettings;
use crate::combine::wire::ErrorBody;
use crate::combine::ApiError;
use crate::store::{Store, StoreError};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use time::Date;
use url::Url;
use wxpay_combine_core::atomicfile::{self, Access};

/// Reconciled, no discrepancy.
pub const EXIT_OK: u8 = 0;
/// Discrepancies found (the report lists them).
pub const EXIT_DISCREPANCIES: u8 = 1;
/// Usage or configuration error.
pub const EXIT_USAGE: u8 = 2;
/// `NO_STATEMENT_EXIST`: no bill for that day (no trades).
pub const EXIT_NO_STATEMENT: u8 = 3;
/// `STATEMENT_CREATING`: the bill is not ready yet (try after 10:00).
pub const EXIT_NOT_READY: u8 = 4;
/// The downloaded file's SHA-1 is not `hash_value`.
pub const EXIT_HASH_MISMATCH: u8 = 5;
/// WeChat Pay API or network error.
pub const EXIT_API: u8 = 6;
/// The bill file does not parse.
pub const EXIT_MALFORMED: u8 = 7;
/// Database or file-system error.
pub const EXIT_LOCAL: u8 = 8;

/// How many times a bill is applied for when its download URL has expired.
pub const MAX_APPLY_ATTEMPTS: u32 = 3;

/// One bill to fetch and reconcile.
#[derive(Debug, Clone)]
pub struct BillJob {
    /// The day (Beijing time).
    pub date: Date,
    /// The layout.
    pub kind: BillKind,
    /// Download compressed.
    pub gzip: bool,
    /// The bill file.
    pub out: PathBuf,
    /// The JSON report file.
    pub report: Option<PathBuf>,
}

/// Why a run did not produce a report.
#[derive(Debug, thiserror::Error)]
pub enum BillRunError {
    /// `NO_STATEMENT_EXIST`.
    #[error("NO_STATEMENT_EXIST: WeChat Pay has no {kind} bill for {date} (no trades that day)")]
    NoStatement {
        /// The day.
        date: Date,
        /// The layout.
        kind: BillKind,
    },
    /// `STATEMENT_CREATING`.
    #[error("STATEMENT_CREATING: the {kind} bill for {date} is still being generated; try again later (bills are ready after 10:00 the next day)")]
    NotReady {
        /// The day.
        date: Date,
        /// The layout.
        kind: BillKind,
    },
    /// The download's SHA-1 differs from `hash_value`.
    #[error("SHA-1 mismatch: hash_value {expected} but the downloaded bill hashes to {actual}; nothing was written at {out}")]
    HashMismatch {
        /// `hash_value`.
        expected: String,
        /// What was received.
        actual: String,
        /// The `--out` path.
        out: String,
    },
    /// `download_url` is not on the configured API host.
    #[error("refusing download_url on {found}: it is not the configured API host {expected}; no request was sent")]
    ForeignDownloadUrl {
        /// The URL's origin.
        found: String,
        /// The configured origin(s).
        expected: String,
    },
    /// The download URL kept expiring.
    #[error("the download URL was refused as expired or invalid {attempts} times: {last}")]
    Expired {
        /// Applications made.
        attempts: u32,
        /// The last answer.
        last: ApiError,
    },
    /// Another API or network failure.
    #[error("{0}")]
    Api(#[from] ApiError),
    /// The bill does not parse, or the download failed locally.
    #[error("{0}")]
    Bill(BillError),
    /// The database failed.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// A file could not be written.
    #[error("{0}")]
    Io(String),
}

impl BillRunError {
    /// The process exit code of this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            BillRunError::NoStatement { .. } => EXIT_NO_STATEMENT,
            BillRunError::NotReady { .. } => EXIT_NOT_READY,
            BillRunError::HashMismatch { .. } => EXIT_HASH_MISMATCH,
            BillRunError::ForeignDownloadUrl { .. }
            | BillRunError::Expired { .. }
            | BillRunError::Api(_) => EXIT_API,
            BillRunError::Bill(
                BillError::Body(_) | BillError::Gzip(_) | BillError::InvalidExpectedHash(_),
            ) => EXIT_API,
            BillRunError::Bill(BillError::Io { .. }) => EXIT_LOCAL,
            BillRunError::Bill(_) => EXIT_MALFORMED,
            BillRunError::Store(_) | BillRunError::Io(_) => EXIT_LOCAL,
        }
    }

    /// A short stable name (logs, metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            BillRunError::NoStatement { .. } => "no_statement",
            BillRunError::NotReady { .. } => "not_ready",
            BillRunError::HashMismatch { .. } => "hash_mismatch",
            BillRunError::ForeignDownloadUrl { .. } => "foreign_download_url",
            BillRunError::Expired { .. } => "expired",
            BillRunError::Api(_) => "api_error",
            BillRunError::Bill(BillError::Io { .. }) => "io_error",
            BillRunError::Bill(_) => "malformed",
            BillRunError::Store(_) => "store_error",
            BillRunError::Io(_) => "io_error",
        }
    }
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct BillOutcome {
    /// The verified file.
    pub file: VerifiedFile,
    /// The reconciliation.
    pub report: Report,
    /// Applications made (1 unless the URL expired).
    pub attempts: u32,
}

#[derive(serde::Deserialize)]
struct TradeBillAnswer {
    hash_type: String,
    hash_value: String,
    download_url: String,
}

/// Fetches and reconciles bills with one configuration's client and store.
#[derive(Clone)]
pub struct BillFetcher {
    client: Arc<WechatPayClient>,
    store: Arc<dyn Store>,
    http: reqwest::Client,
    api_origins: Vec<Url>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for BillFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BillFetcher")
            .field("api_origins", &self.api_origins)
            .finish_non_exhaustive()
    }
}

impl BillFetcher {
    /// A fetcher for the API host(s) and timeouts of `api` (the client's
    /// settings), with `client` (signing and verifying) and `store`.
    pub fn new(
        api: &ApiSettings,
        client: Arc<WechatPayClient>,
        store: Arc<dyn Store>,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .user_agent(user_agent())
            .connect_timeout(api.connect_timeout)
            .read_timeout(api.request_timeout)
            // Following a redirect would send the Authorization elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let mut api_origins = vec![api.base_url.clone()];
        api_origins.extend(api.backup_url.clone());
        Ok(Self {
            client,
            store,
            http,
            api_origins,
            clock: Arc::new(SystemClock),
        })
    }

    /// Applies for the bill (`GET /v3/bill/tradebill`, verified).
    async fn apply(&self, job: &BillJob) -> Result<TradeBillAnswer, BillRunError> {
        let mut path = format!(
            "/v3/bill/tradebill?bill_date={}&bill_type={}",
            job.date,
            job.kind.as_str()
        );
        if job.gzip {
            path.push_str("&tar_type=GZIP");
        }
        let resp = match self.client.get("tradebill", &path, Repeat::Safe).await {
            Ok(r) => r,
            Err(e) => {
                return Err(match e.code() {
                    Some("NO_STATEMENT_EXIST") => BillRunError::NoStatement {
                        date: job.date,
                        kind: job.kind,
                    },
                    Some("STATEMENT_CREATING") => BillRunError::NotReady {
                        date: job.date,
                        kind: job.kind,
                    },
                    _ => BillRunError::Api(e),
                })
            }
        };
        let answer: TradeBillAnswer = resp.json("tradebill")?;
        if !answer.hash_type.eq_ignore_ascii_case("SHA1") {
            return Err(BillRunError::Api(ApiError::Decode {
                endpoint: "tradebill",
                detail: format!("unsupported hash_type {:?}", answer.hash_type),
            }));
        }
        Ok(answer)
    }

    /// Checks that `download_url` is on a configured API host.
    fn check_download_url(&self, download_url: &str) -> Result<Url, BillRunError> {
        let url = Url::parse(download_url).map_err(|e| {
            BillRunError::Api(ApiError::Decode {
                endpoint: "tradebill",
                detail: format!("download_url is not a URL: {e}"),
            })
        })?;
        if !self.api_origins.iter().any(|b| b.origin() == url.origin()) {
            return Err(BillRunError::ForeignDownloadUrl {
                found: url.origin().ascii_serialization(),
                expected: self
                    .api_origins
                    .iter()
                    .map(|u| u.origin().ascii_serialization())
                    .collect::<Vec<_>>()
                    .join(" or "),
            });
        }
        Ok(url)
    }

    /// Downloads `url` (signed GET; the answer is not signed) into
    /// `job.out`, verifying the SHA-1. `Ok(Err(e))`: the service refused
    /// the URL with `INVALID_REQUEST` (expired or used): apply again.
    async fn download(
        &self,
        job: &BillJob,
        url: Url,
        hash_value: &str,
    ) -> Result<Result<VerifiedFile, ApiError>, BillRunError> {
        const ENDPOINT: &str = "billdownload";
        let mut path_and_query = url.path().to_string();
        if let Some(q) = url.query() {
            path_and_query.push('?');
            path_and_query.push_str(q);
        }
        let authorization = self
            .client
            .signer()
            .authorization(self.clock.as_ref(), "GET", &path_and_query, b"")
            .map_err(ApiError::from)?;
        let resp = self
            .http
            .get(url)
            .header(http::header::AUTHORIZATION, authorization)
            .header(http::header::ACCEPT, "*/*")
            .send()
            .await
            .map_err(|e| ApiError::Transport {
                endpoint: ENDPOINT,
                detail: e.to_string(),
            })?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let request_id = resp
                .headers()
                .get("Request-ID")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = resp.bytes().await.unwrap_or_default();
            let (code, message) = match serde_json::from_slice::<ErrorBody>(&body) {
                Ok(b) => (b.code, b.message),
                Err(_) => (
                    format!("HTTP_{status}"),
                    String::from_utf8_lossy(&body).chars().take(200).collect(),
                ),
            };
            let err = ApiError::Service {
                status,
                code,
                message,
                detail: None,
                request_id,
            };
            return if status == 400 && err.code() == Some("INVALID_REQUEST") {
                Ok(Err(err))
            } else {
                Err(BillRunError::Api(err))
            };
        }
        match bill::download_to(resp.bytes_stream(), job.gzip, &job.out, hash_value).await {
            Ok(f) => Ok(Ok(f)),
            Err(BillError::HashMismatch { expected, actual }) => Err(BillRunError::HashMismatch {
                expected,
                actual,
                out: job.out.display().to_string(),
            }),
            Err(e) => Err(BillRunError::Bill(e)),
        }
    }

    /// Applies for the bill and downloads it, applying again (at most
    /// [`MAX_APPLY_ATTEMPTS`] times) when the download URL has expired.
    pub async fn fetch(&self, job: &BillJob) -> Result<(VerifiedFile, u32), BillRunError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let answer = self.apply(job).await?;
            let url = self.check_download_url(&answer.download_url)?;
            match self.download(job, url, &answer.hash_value).await? {
                Ok(file) => return Ok((file, attempt)),
                Err(e) if attempt < MAX_APPLY_ATTEMPTS => {
                    tracing::warn!(attempt, error = %e, "bill download URL refused; applying again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    return Err(BillRunError::Expired {
                        attempts: attempt,
                        last: e,
                    })
                }
            }
        }
    }

    /// Reads the local side of `bill` (day `date`) and reconciles.
    pub async fn reconcile(&self, bill: &TradeBill, date: Date) -> Result<Report, BillRunError> {
        let (from, to) = bill::reconcile::beijing_day_bounds(date);
        let paid = self.store.paid_sub_orders_between(from, to).await?;
        let known: HashSet<(&str, &str)> = paid
            .iter()
            .map(|l| (l.mchid.as_str(), l.out_trade_no.as_str()))
            .collect();
        let mut others: Vec<LocalSubOrder> = Vec::new();
        let mut looked_up: HashSet<(&str, &str)> = HashSet::new();
        for r in &bill.details {
            let key = (r.mchid.as_str(), r.out_trade_no.as_str());
            if known.contains(&key) || !looked_up.insert(key) {
                continue;
            }
            if let Some(l) = self.store.bill_sub_order(key.0, key.1).await? {
                others.push(l);
            }
        }
        Ok(bill::reconcile(bill, date, &paid, &others))
    }

    /// The whole run: fetch, parse, reconcile, write the report. The result
    /// is counted in `wxpay_bill_results_total` (`matched`, `discrepancies`
    /// or [`BillRunError::kind`]).
    pub async fn fetch_and_reconcile(&self, job: &BillJob) -> Result<BillOutcome, BillRunError> {
        let result = self.run_job(job).await;
        crate::metrics::metrics().bill_result(match &result {
            Ok(o) if o.report.ok => "matched",
            Ok(_) => "discrepancies",
            Err(e) => e.kind(),
        });
        result
    }

    async fn run_job(&self, job: &BillJob) -> Result<BillOutcome, BillRunError> {
        let (file, attempts) = self.fetch(job).await?;
        let path = file.path.clone();
        let parsed = tokio::task::spawn_blocking(move || bill::parse_file(&path))
            .await
            .map_err(|e| BillRunError::Io(format!("parser task failed: {e}")))?
            .map_err(BillRunError::Bill)?;
        let report = self.reconcile(&parsed, job.date).await?;
        if let Some(path) = &job.report {
            write_report(path, &report, &file)?;
        }
        Ok(BillOutcome {
            file,
            report,
            attempts,
        })
    }
}

/// Writes the report as pretty JSON (atomically: temporary file, fsync,
/// rename), with the bill file's path, size and SHA-1 added under `file`.
pub fn write_report(path: &Path, report: &Report, file: &VerifiedFile) -> Result<(), BillRunError> {
    let mut value = serde_json::to_value(report)
        .map_err(|e| BillRunError::Io(format!("cannot serialise the report: {e}")))?;
    value["file"] = serde_json::json!({
        "path": file.path.display().to_string(),
        "sha1": file.sha1_hex,
        "bytes": file.bytes,
    });
    let text = serde_json::to_string_pretty(&value)
        .map_err(|e| BillRunError::Io(format!("cannot serialise the report: {e}")))?;
    // The same permissions as before (fs::write's): only the bill is private.
    atomicfile::write(path, text.as_bytes(), Access::Shared)
        .map_err(|e| BillRunError::Io(format!("cannot write {}: {e}", path.display())))
}

pub use wxpay_combine_core::timefmt::parse_date;
