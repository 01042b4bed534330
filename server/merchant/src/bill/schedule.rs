//! The daily bill run inside `serve`: at a configured Beijing time it
//! fetches and reconciles the previous day's trade bill of every merchant
//! with credentials through the same code path as `wxpay-combine bill`
//! ([`super::fetch::BillFetcher`], one per merchant), keeping
//! `DIR/YYYY-MM-DD-TYPE-MCHID.csv` and `.json` per merchant and the day's
//! summary `DIR/YYYY-MM-DD.json` (which also lists the merchants skipped
//! for lack of credentials).
//!
//! A merchant's day is done once its report exists (`NO_STATEMENT_EXIST`
//! gets a small report saying so); the day is done once its summary exists,
//! written when every merchant is done. `STATEMENT_CREATING` and failures
//! are retried, for the merchants not done, every [`RETRY_AFTER_SECS`]
//! until the day is done or the next day is due. The clock is injected, so
//! a test can move it to the run time.

use super::fetch::{
    bill_file_stem, skipped_merchants, write_json, BillFetcher, BillJob, BillRunError,
    MerchantOutcome,
};
use super::BillKind;
use crate::apiv3::Clock;
use crate::settings::{ConfigError, FieldKind, FieldTable};
use crate::store::Store;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use time::{Date, Time};

/// Wait before asking again after `STATEMENT_CREATING` or a failure (the
/// documented advice for a bill still being generated is every 30 min).
pub const RETRY_AFTER_SECS: i64 = 30 * 60;

/// The keys of the bill schedule.
pub const FIELDS: FieldTable = &[
    ("bill_schedule", FieldKind::Bool),
    ("bill_schedule_time", FieldKind::Str),
    ("bill_schedule_type", FieldKind::Str),
    ("bill_schedule_dir", FieldKind::Str),
];

/// `bill_schedule*` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillScheduleConfig {
    /// Whether `serve` runs the daily bill job.
    pub enabled: bool,
    /// Beijing time of day to fetch the previous day's bill.
    pub at: Time,
    /// Bill type.
    pub kind: BillKind,
    /// Where bills and reports are kept.
    pub dir: PathBuf,
}

impl BillScheduleConfig {
    /// Validates the raw keys (`bill_schedule`, `bill_schedule_time`,
    /// `bill_schedule_type`, `bill_schedule_dir`); a relative directory is
    /// resolved against `base_dir`. Every problem is returned, named by key.
    pub fn from_raw(
        enabled: Option<bool>,
        at: Option<&str>,
        kind: Option<&str>,
        dir: Option<&Path>,
        base_dir: &Path,
    ) -> Result<Self, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let at_text = at.unwrap_or("10:00").trim();
        let parsed_at = parse_hh_mm(at_text);
        if parsed_at.is_none() {
            errors.push(ConfigError::Invalid {
                key: "bill_schedule_time",
                detail: format!("{at_text:?} is not HH:MM (Beijing time, e.g. \"10:00\")"),
            });
        }
        let kind_text = kind.unwrap_or("ALL").trim();
        let parsed_kind = kind_text.parse::<BillKind>();
        if parsed_kind.is_err() {
            errors.push(ConfigError::Invalid {
                key: "bill_schedule_type",
                detail: format!("{kind_text:?}: use ALL, SUCCESS or REFUND"),
            });
        }
        let dir = dir.unwrap_or(Path::new("bills"));
        if dir.as_os_str().is_empty() {
            errors.push(ConfigError::Invalid {
                key: "bill_schedule_dir",
                detail: "must not be empty".into(),
            });
        }
        match (parsed_at, parsed_kind) {
            (Some(at), Ok(kind)) if errors.is_empty() => Ok(Self {
                enabled: enabled.unwrap_or(false),
                at,
                kind,
                dir: if dir.is_absolute() {
                    dir.to_path_buf()
                } else {
                    base_dir.join(dir)
                },
            }),
            _ => Err(errors),
        }
    }
}

impl Default for BillScheduleConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            at: Time::from_hms(10, 0, 0).expect("10:00 is a time"),
            kind: BillKind::All,
            dir: PathBuf::from("bills"),
        }
    }
}

fn parse_hh_mm(text: &str) -> Option<Time> {
    let (h, m) = text.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let h: u8 = h.parse().ok()?;
    let m: u8 = m.parse().ok()?;
    Time::from_hms(h, m, 0).ok()
}

/// What one step of the scheduler did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// Nothing due (before the run time, day done, or waiting to retry).
    Idle,
    /// Every merchant's bill of the day was fetched and reconciled, or had
    /// none (`ok`: no discrepancy anywhere).
    Reconciled {
        /// The day.
        date: Date,
        /// No discrepancy.
        ok: bool,
    },
    /// No merchant has a bill for the day; recorded as done.
    NoStatement(Date),
    /// A merchant's bill is not ready or failed; retried after
    /// [`RETRY_AFTER_SECS`] (the others done are kept).
    RetryLater {
        /// The day.
        date: Date,
        /// The first error's kind (`not_ready`, `api_error`, …).
        reason: &'static str,
    },
}

/// The daily bill job.
#[derive(Debug)]
pub struct BillScheduler {
    fetchers: Vec<BillFetcher>,
    store: Arc<dyn Store>,
    listed_without_credentials: Vec<String>,
    config: BillScheduleConfig,
    clock: Arc<dyn Clock>,
    tick: Duration,
    retry_at: Option<(Date, i64)>,
}

impl BillScheduler {
    /// A scheduler fetching each merchant's bill with its fetcher (one per
    /// merchant with credentials), reading the local orders from `store`
    /// and time from `clock`. `listed_without_credentials`: the
    /// `[[merchants]]` without credentials, listed as skipped.
    pub fn new(
        fetchers: Vec<BillFetcher>,
        store: Arc<dyn Store>,
        listed_without_credentials: Vec<String>,
        config: BillScheduleConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            fetchers,
            store,
            listed_without_credentials,
            config,
            clock,
            tick: Duration::from_secs(30),
            retry_at: None,
        }
    }

    /// How often [`Self::run`] reads the clock (default 30 s).
    pub fn with_tick(mut self, tick: Duration) -> Self {
        self.tick = tick;
        self
    }

    /// The day's summary, `DIR/YYYY-MM-DD.json` (its existence marks the
    /// day done).
    pub fn report_path(&self, date: Date) -> PathBuf {
        self.config.dir.join(format!("{date}.json"))
    }

    /// Merchant `mchid`'s bill, `DIR/YYYY-MM-DD-TYPE-MCHID.csv`.
    pub fn bill_path(&self, date: Date, mchid: &str) -> PathBuf {
        let stem = bill_file_stem(date, self.config.kind, mchid);
        self.config.dir.join(format!("{stem}.csv"))
    }

    /// Merchant `mchid`'s report, `DIR/YYYY-MM-DD-TYPE-MCHID.json`.
    pub fn merchant_report_path(&self, date: Date, mchid: &str) -> PathBuf {
        let stem = bill_file_stem(date, self.config.kind, mchid);
        self.config.dir.join(format!("{stem}.json"))
    }

    /// The day due at `now`: the previous Beijing day once the run time
    /// has passed, unless its summary exists.
    pub fn due_day(&self, now: i64) -> Option<Date> {
        let local = wxpay_combine_core::timefmt::beijing(now)?;
        if local.time() < self.config.at {
            return None;
        }
        let day = local.date().previous_day()?;
        (!self.report_path(day).exists()).then_some(day)
    }

    /// Fetches merchant `f`'s bill of `date` unless its report exists.
    /// `Err`: retry later.
    async fn step_merchant(&self, f: &BillFetcher, date: Date) -> Result<(), BillRunError> {
        let report = self.merchant_report_path(date, f.mchid());
        if report.exists() {
            return Ok(());
        }
        let job = BillJob {
            date,
            kind: self.config.kind,
            gzip: true,
            out: self.bill_path(date, f.mchid()),
            report: Some(report.clone()),
        };
        let no_statement = |local_paid: usize| {
            serde_json::json!({
                "mchid": f.mchid(),
                "bill_date": date.to_string(),
                "bill_type": self.config.kind.as_str(),
                "status": "NO_STATEMENT_EXIST",
                "local_paid_sub_orders": local_paid,
                "ok": local_paid == 0,
            })
        };
        match f.fetch_merchant(&job).await {
            Ok(MerchantOutcome::Reconciled(o)) => {
                let r = &o.report;
                if r.ok {
                    tracing::info!(%date, mchid = f.mchid(), matched = r.matched, "trade bill reconciled: no discrepancies");
                } else {
                    tracing::warn!(%date, mchid = f.mchid(), discrepancies = r.discrepancies.len(), total_mismatches = r.total_mismatches.len(), report = %report.display(), "trade bill reconciled with discrepancies");
                }
                Ok(())
            }
            Ok(MerchantOutcome::Empty) => {
                tracing::info!(%date, mchid = f.mchid(), "no trade bill and nothing paid locally (NO_STATEMENT_EXIST)");
                write_json(&report, &no_statement(0))
            }
            Err(BillRunError::NoStatement { local_paid, .. }) => {
                // Recorded as done, like a day without trades, but not ok.
                tracing::warn!(%date, mchid = f.mchid(), local_paid, "no trade bill (NO_STATEMENT_EXIST) although sub-orders were paid locally");
                write_json(&report, &no_statement(local_paid))
            }
            Err(e) => {
                if matches!(e, BillRunError::NotReady { .. }) {
                    tracing::info!(%date, mchid = f.mchid(), "trade bill not ready yet (STATEMENT_CREATING); retrying in 30 min");
                } else {
                    tracing::error!(%date, mchid = f.mchid(), error = %e, "trade bill run failed; retrying in 30 min");
                }
                Err(e)
            }
        }
    }

    /// Writes the day's summary from the merchants' reports.
    async fn finish_day(&self, date: Date) -> Result<StepOutcome, BillRunError> {
        let credentialed: Vec<String> = self
            .fetchers
            .iter()
            .map(|f| f.mchid().to_string())
            .collect();
        let skipped = skipped_merchants(
            self.store.as_ref(),
            date,
            &credentialed,
            &self.listed_without_credentials,
        )
        .await?;
        for k in &skipped {
            tracing::warn!(%date, mchid = %k.mchid, paid_sub_orders = k.paid_sub_orders, "trade bill skipped: no credentials for this merchant");
        }
        let mut merchants = Vec::new();
        let (mut ok, mut all_empty) = (true, true);
        for mchid in &credentialed {
            let path = self.merchant_report_path(date, mchid);
            let text = std::fs::read(&path)
                .map_err(|e| BillRunError::Io(format!("cannot read {}: {e}", path.display())))?;
            let report: serde_json::Value = serde_json::from_slice(&text)
                .map_err(|e| BillRunError::Io(format!("{}: {e}", path.display())))?;
            let empty = report["status"] == "NO_STATEMENT_EXIST";
            let merchant_ok = report["ok"] == true;
            ok &= merchant_ok;
            all_empty &= empty;
            merchants.push(serde_json::json!({
                "mchid": mchid,
                "status": if empty { "no_statement" } else { "reconciled" },
                "ok": merchant_ok,
                "report_path": path.display().to_string(),
                "report": report,
            }));
        }
        let summary = serde_json::json!({
            "bill_date": date.to_string(),
            "bill_type": self.config.kind.as_str(),
            "ok": ok,
            "merchants": merchants,
            "skipped": skipped,
        });
        // Atomic: the summary's existence marks the day done.
        write_json(&self.report_path(date), &summary)?;
        Ok(if all_empty {
            StepOutcome::NoStatement(date)
        } else {
            StepOutcome::Reconciled { date, ok }
        })
    }

    /// Runs the job if it is due at the clock's time.
    pub async fn step(&mut self) -> StepOutcome {
        let now = self.clock.now();
        let Some(date) = self.due_day(now) else {
            return StepOutcome::Idle;
        };
        if let Some((d, at)) = self.retry_at {
            if d == date && now < at {
                return StepOutcome::Idle;
            }
        }
        if let Err(e) = std::fs::create_dir_all(&self.config.dir) {
            tracing::error!(dir = %self.config.dir.display(), error = %e, "cannot create the bill directory");
            self.retry_at = Some((date, now + RETRY_AFTER_SECS));
            return StepOutcome::RetryLater {
                date,
                reason: "io_error",
            };
        }
        let mut first_error = None;
        for f in &self.fetchers {
            if let Err(e) = self.step_merchant(f, date).await {
                first_error.get_or_insert(e.kind());
            }
        }
        let outcome = match first_error {
            Some(reason) => Err(reason),
            None => self.finish_day(date).await.map_err(|e| {
                tracing::error!(%date, error = %e, "cannot write the day's bill summary");
                e.kind()
            }),
        };
        match outcome {
            Ok(o) => {
                self.retry_at = None;
                o
            }
            Err(reason) => {
                self.retry_at = Some((date, now + RETRY_AFTER_SECS));
                StepOutcome::RetryLater { date, reason }
            }
        }
    }

    /// Steps every tick until `stop` completes.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                _ = self.step() => {}
                _ = &mut stop => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(self.tick) => {}
                _ = &mut stop => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated_by_name() {
        let base = Path::new("/srv/wxpay");
        let c = BillScheduleConfig::from_raw(None, None, None, None, base).unwrap();
        assert_eq!(
            (c.enabled, c.at, c.kind, c.dir.clone()),
            (
                false,
                Time::from_hms(10, 0, 0).unwrap(),
                BillKind::All,
                base.join("bills")
            )
        );
        let c = BillScheduleConfig::from_raw(
            Some(true),
            Some("9:30"),
            Some("SUCCESS"),
            Some(Path::new("/b")),
            base,
        )
        .unwrap();
        assert_eq!(
            (c.at, c.kind, c.dir),
            (
                Time::from_hms(9, 30, 0).unwrap(),
                BillKind::Success,
                PathBuf::from("/b")
            )
        );
        let errs = BillScheduleConfig::from_raw(
            Some(true),
            Some("25:00"),
            Some("DAILY"),
            Some(Path::new("")),
            base,
        )
        .unwrap_err();
        let keys: Vec<_> = errs.iter().filter_map(|e| e.key()).collect();
        assert_eq!(
            keys,
            [
                "bill_schedule_time",
                "bill_schedule_type",
                "bill_schedule_dir"
            ]
        );
        for bad in ["10", "10:0", "10:000", "ab:cd", "-1:00"] {
            assert!(parse_hh_mm(bad).is_none(), "{bad}");
        }
    }
}
