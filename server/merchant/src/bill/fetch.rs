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
    #[error("NO_STATEMENT_EXIST: WeChat Pay has no {kind} bill of merchant {mchid} for {date} (no trades that day){}",
        if *local_paid > 0 { format!(", although {local_paid} of its sub-orders were paid locally that day") } else { String::new() })]
    NoStatement {
        /// The merchant.
        mchid: String,
        /// The day.
        date: Date,
        /// The layout.
        kind: BillKind,
        /// The merchant's sub-orders paid locally that day (0 when not counted).
        local_paid: usize,
    },
    /// `STATEMENT_CREATING`.
    #[error("STATEMENT_CREATING: the {kind} bill for {date} is not ready, retry later (WeChat Pay makes a day's bill after it ends; fetch after 10:00 the next day)")]
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
    /// The merchant's WeChat Pay client could not be prepared.
    #[error("cannot prepare the client of merchant {mchid}: {detail}")]
    Client {
        /// The merchant.
        mchid: String,
        /// Why.
        detail: String,
    },
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
            | BillRunError::Api(_)
            | BillRunError::Client { .. } => EXIT_API,
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
            BillRunError::Client { .. } => "client_error",
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

/// How one merchant's run ended without error.
#[derive(Debug, Clone)]
pub enum MerchantOutcome {
    /// The bill was fetched and reconciled.
    Reconciled(Box<BillOutcome>),
    /// `NO_STATEMENT_EXIST` while none of the merchant's sub-orders was paid
    /// locally that day (an initiator without own sub-orders): nothing to
    /// reconcile, a clean result.
    Empty,
}

/// Fetches and reconciles one merchant's bills: the merchant whose
/// credentials `client` signs with (each merchant's bill holds only its own
/// sub-orders).
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

    /// The merchant whose bills this fetches.
    pub fn mchid(&self) -> &str {
        self.client.signer().mchid()
    }

    /// The merchant's sub-orders paid locally on `date`.
    pub async fn local_paid(&self, date: Date) -> Result<Vec<LocalSubOrder>, BillRunError> {
        let (from, to) = bill::reconcile::beijing_day_bounds(date);
        let mut paid = self.store.paid_sub_orders_between(from, to).await?;
        paid.retain(|l| l.mchid == self.mchid());
        Ok(paid)
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
                        mchid: self.mchid().to_string(),
                        date: job.date,
                        kind: job.kind,
                        local_paid: 0,
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
        let paid = self.local_paid(date).await?;
        let known: HashSet<(&str, &str)> = paid
            .iter()
            .map(|l| (l.mchid.as_str(), l.out_trade_no.as_str()))
            .collect();
        let mut others: Vec<LocalSubOrder> = Vec::new();
        let mut looked_up: HashSet<(&str, &str)> = HashSet::new();
        for r in &bill.details {
            let key = (r.mchid.as_str(), r.out_trade_no.as_str());
            // Another merchant's row is reported as such, not looked up.
            if key.0 != self.mchid() || known.contains(&key) || !looked_up.insert(key) {
                continue;
            }
            if let Some(l) = self.store.bill_sub_order(key.0, key.1).await? {
                others.push(l);
            }
        }
        // The local refunds: those recorded on the day, and those the
        // bill's refund rows name (recorded late on the day before, say).
        let (from, to) = wxpay_combine_core::timefmt::beijing_day_bounds(date);
        let mut refunds = self.store.refunds_created_between(from, to).await?;
        for r in &bill.details {
            let Some(rf) = r.refund_id().and(r.refund.as_ref()) else {
                continue;
            };
            if !refunds.iter().any(|l| l.out_refund_no == rf.out_refund_no) {
                if let Some(l) = self.store.get_refund(&rf.out_refund_no).await? {
                    refunds.push(l);
                }
            }
        }
        Ok(bill::reconcile::reconcile_for(
            bill,
            date,
            Some(self.mchid()),
            &paid,
            &others,
            &refunds,
        ))
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

    /// [`Self::fetch_and_reconcile`], except that `NO_STATEMENT_EXIST` for a
    /// merchant with no sub-order paid locally that day is
    /// [`MerchantOutcome::Empty`]; with some, the error counts them.
    pub async fn fetch_merchant(&self, job: &BillJob) -> Result<MerchantOutcome, BillRunError> {
        match self.fetch_and_reconcile(job).await {
            Ok(o) => Ok(MerchantOutcome::Reconciled(Box::new(o))),
            Err(BillRunError::NoStatement {
                mchid, date, kind, ..
            }) => {
                let local_paid = self.local_paid(date).await?.len();
                if local_paid == 0 {
                    Ok(MerchantOutcome::Empty)
                } else {
                    Err(BillRunError::NoStatement {
                        mchid,
                        date,
                        kind,
                        local_paid,
                    })
                }
            }
            Err(e) => Err(e),
        }
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
    // The same permissions as before (fs::write's): only the bill is private.
    write_json(path, &report_value(report, file))
}

/// The file name stem of merchant `mchid`'s bill of `date` and `kind`:
/// `YYYY-MM-DD-TYPE-MCHID` (the bill is `STEM.csv`, its report `STEM.json`).
pub fn bill_file_stem(date: Date, kind: BillKind, mchid: &str) -> String {
    format!("{date}-{}-{mchid}", kind.as_str())
}

/// A merchant whose bill is not fetched for lack of credentials here.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SkippedMerchant {
    /// The merchant.
    pub mchid: String,
    /// Why (`no_credentials`).
    pub reason: &'static str,
    /// Listed in `[[merchants]]` (else only seen on paid sub-orders).
    pub listed: bool,
    /// Its sub-orders paid locally that day (left unreconciled).
    pub paid_sub_orders: usize,
    /// Their amounts, fen.
    pub paid_amount_fen: i64,
}

/// The merchants of a day that are skipped: `listed_without_credentials`
/// (from `[[merchants]]`) and the mchids of sub-orders paid locally that
/// day that are not in `credentialed`. Sorted by mchid.
pub async fn skipped_merchants(
    store: &dyn Store,
    date: Date,
    credentialed: &[String],
    listed_without_credentials: &[String],
) -> Result<Vec<SkippedMerchant>, BillRunError> {
    let (from, to) = bill::reconcile::beijing_day_bounds(date);
    let paid = store.paid_sub_orders_between(from, to).await?;
    let mut out: std::collections::BTreeMap<String, SkippedMerchant> = listed_without_credentials
        .iter()
        .filter(|m| !credentialed.contains(m))
        .map(|m| {
            let s = SkippedMerchant {
                mchid: m.clone(),
                reason: "no_credentials",
                listed: true,
                paid_sub_orders: 0,
                paid_amount_fen: 0,
            };
            (m.clone(), s)
        })
        .collect();
    for l in paid.iter().filter(|l| l.is_paid()) {
        if credentialed.contains(&l.mchid) {
            continue;
        }
        let s = out
            .entry(l.mchid.clone())
            .or_insert_with(|| SkippedMerchant {
                mchid: l.mchid.clone(),
                reason: "no_credentials",
                listed: false,
                paid_sub_orders: 0,
                paid_amount_fen: 0,
            });
        s.paid_sub_orders += 1;
        s.paid_amount_fen = s.paid_amount_fen.saturating_add(l.amount_fen);
    }
    Ok(out.into_values().collect())
}

/// One merchant's part of a run.
#[derive(Debug)]
pub struct MerchantRun {
    /// The merchant.
    pub mchid: String,
    /// Where its report was written, if anywhere.
    pub report_path: Option<PathBuf>,
    /// How it ended.
    pub result: Result<MerchantOutcome, BillRunError>,
}

/// Every merchant's result of one day's run, and the merchants skipped.
#[derive(Debug)]
pub struct RunSummary {
    /// The day.
    pub date: Date,
    /// The layout.
    pub kind: BillKind,
    /// The merchants fetched, in order.
    pub merchants: Vec<MerchantRun>,
    /// The merchants not fetched.
    pub skipped: Vec<SkippedMerchant>,
}

impl RunSummary {
    /// Every merchant fetched reconciled without discrepancy (or had no
    /// bill and nothing paid). Skipped merchants do not count.
    pub fn ok(&self) -> bool {
        self.merchants.iter().all(|m| match &m.result {
            Ok(MerchantOutcome::Reconciled(o)) => o.report.ok,
            Ok(MerchantOutcome::Empty) => true,
            Err(_) => false,
        })
    }

    /// The exit code: the first merchant's error, else
    /// [`EXIT_DISCREPANCIES`] when any report has one, else [`EXIT_OK`].
    pub fn exit_code(&self) -> u8 {
        if let Some(e) = self.merchants.iter().find_map(|m| m.result.as_ref().err()) {
            return e.exit_code();
        }
        if self.ok() {
            EXIT_OK
        } else {
            EXIT_DISCREPANCIES
        }
    }

    /// The run report (`--report`, and the scheduled run's day file).
    pub fn to_json(&self) -> serde_json::Value {
        let merchants: Vec<serde_json::Value> = self
            .merchants
            .iter()
            .map(|m| {
                let mut v = serde_json::json!({ "mchid": m.mchid });
                match &m.result {
                    Ok(MerchantOutcome::Reconciled(o)) => {
                        v["status"] = "reconciled".into();
                        v["ok"] = o.report.ok.into();
                        v["report"] = report_value(&o.report, &o.file);
                    }
                    Ok(MerchantOutcome::Empty) => {
                        v["status"] = "no_statement".into();
                        v["ok"] = true.into();
                    }
                    Err(e) => {
                        v["status"] = "error".into();
                        v["ok"] = false.into();
                        v["error"] = serde_json::json!({
                            "kind": e.kind(),
                            "exit_code": e.exit_code(),
                            "message": e.to_string(),
                        });
                    }
                }
                if let Some(p) = &m.report_path {
                    v["report_path"] = p.display().to_string().into();
                }
                v
            })
            .collect();
        serde_json::json!({
            "bill_date": self.date.to_string(),
            "bill_type": self.kind.as_str(),
            "ok": self.ok(),
            "merchants": merchants,
            "skipped": self.skipped,
        })
    }

    /// A few lines per merchant for a terminal.
    pub fn human_summary(&self) -> String {
        let mut s = String::new();
        for m in &self.merchants {
            match &m.result {
                Ok(MerchantOutcome::Reconciled(o)) => {
                    s.push_str(&format!(
                        "merchant {}: bill written: {} ({} bytes, SHA-1 {})\n",
                        m.mchid,
                        o.file.path.display(),
                        o.file.bytes,
                        o.file.sha1_hex
                    ));
                    s.push_str(&o.report.human_summary());
                }
                Ok(MerchantOutcome::Empty) => s.push_str(&format!(
                    "merchant {}: no bill (NO_STATEMENT_EXIST) and no sub-order paid locally: nothing to reconcile\n",
                    m.mchid
                )),
                Err(e) => s.push_str(&format!("merchant {}: FAILED: {e}\n", m.mchid)),
            }
        }
        for k in &self.skipped {
            s.push_str(&format!(
                "SKIPPED merchant {}: no credentials in this configuration ({}); {} sub-orders paid locally that day ({} fen) not reconciled\n",
                k.mchid,
                if k.listed { "listed in [[merchants]]" } else { "not listed in [[merchants]]" },
                k.paid_sub_orders,
                k.paid_amount_fen
            ));
        }
        s
    }
}

fn report_value(report: &Report, file: &VerifiedFile) -> serde_json::Value {
    let mut value = serde_json::to_value(report).unwrap_or_default();
    value["file"] = serde_json::json!({
        "path": file.path.display().to_string(),
        "sha1": file.sha1_hex,
        "bytes": file.bytes,
    });
    value
}

/// Writes [`RunSummary::to_json`] as pretty JSON, atomically.
pub fn write_run_report(path: &Path, summary: &RunSummary) -> Result<(), BillRunError> {
    write_json(path, &summary.to_json())
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), BillRunError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| BillRunError::Io(format!("cannot serialise the report: {e}")))?;
    atomicfile::write(path, text.as_bytes(), Access::Shared)
        .map_err(|e| BillRunError::Io(format!("cannot write {}: {e}", path.display())))
}

pub use wxpay_combine_core::timefmt::parse_date;
