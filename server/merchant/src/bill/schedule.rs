//! The daily bill run inside `serve`: at a configured Beijing time it
//! fetches and reconciles the previous day's trade bill through the same
//! code path as `wxpay-combine bill` ([`super::fetch::BillFetcher`]),
//! keeping `DIR/YYYY-MM-DD.csv` and `DIR/YYYY-MM-DD.json`.
//!
//! A day is done once its report exists (a `NO_STATEMENT_EXIST` day gets a
//! small report saying so). `STATEMENT_CREATING` and failures are retried
//! every [`RETRY_AFTER_SECS`] until the day is done or the next day is due.
//! The clock is injected, so a test can move it to the run time.

use super::fetch::{BillFetcher, BillJob, BillRunError};
use super::BillKind;
use crate::apiv3::Clock;
use crate::settings::{ConfigError, FieldKind, FieldTable};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use time::{Date, Time};
use wxpay_combine_core::atomicfile::{self, Access};

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
    /// The day's bill was fetched and reconciled (`ok`: no discrepancy).
    Reconciled {
        /// The day.
        date: Date,
        /// No discrepancy.
        ok: bool,
    },
    /// WeChat Pay has no bill for the day; recorded as done.
    NoStatement(Date),
    /// Not ready or failed; retried after [`RETRY_AFTER_SECS`].
    RetryLater {
        /// The day.
        date: Date,
        /// The error's kind (`not_ready`, `api_error`, …).
        reason: &'static str,
    },
}

/// The daily bill job.
#[derive(Debug)]
pub struct BillScheduler {
    fetcher: BillFetcher,
    config: BillScheduleConfig,
    clock: Arc<dyn Clock>,
    tick: Duration,
    retry_at: Option<(Date, i64)>,
}

impl BillScheduler {
    /// A scheduler fetching with `fetcher`, reading time from `clock`.
    pub fn new(fetcher: BillFetcher, config: BillScheduleConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            fetcher,
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

    /// `DIR/YYYY-MM-DD.json`.
    pub fn report_path(&self, date: Date) -> PathBuf {
        self.config.dir.join(format!("{date}.json"))
    }

    /// `DIR/YYYY-MM-DD.csv`.
    pub fn bill_path(&self, date: Date) -> PathBuf {
        self.config.dir.join(format!("{date}.csv"))
    }

    /// The day due at `now`: the previous Beijing day once the run time
    /// has passed, unless its report exists.
    pub fn due_day(&self, now: i64) -> Option<Date> {
        let local = wxpay_combine_core::timefmt::beijing(now)?;
        if local.time() < self.config.at {
            return None;
        }
        let day = local.date().previous_day()?;
        (!self.report_path(day).exists()).then_some(day)
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
        let job = BillJob {
            date,
            kind: self.config.kind,
            gzip: true,
            out: self.bill_path(date),
            report: Some(self.report_path(date)),
        };
        match self.fetcher.fetch_and_reconcile(&job).await {
            Ok(outcome) => {
                self.retry_at = None;
                let r = &outcome.report;
                if r.ok {
                    tracing::info!(%date, matched = r.matched, "trade bill reconciled: no discrepancies");
                } else {
                    tracing::warn!(%date, discrepancies = r.discrepancies.len(), total_mismatches = r.total_mismatches.len(), report = %self.report_path(date).display(), "trade bill reconciled with discrepancies");
                }
                StepOutcome::Reconciled { date, ok: r.ok }
            }
            Err(BillRunError::NoStatement { .. }) => {
                self.retry_at = None;
                let marker = serde_json::json!({
                    "bill_date": date.to_string(),
                    "bill_type": self.config.kind.as_str(),
                    "status": "NO_STATEMENT_EXIST",
                });
                // Atomic: the report's existence marks the day done.
                let path = self.report_path(date);
                if let Err(e) =
                    atomicfile::write(&path, marker.to_string().as_bytes(), Access::Shared)
                {
                    tracing::error!(error = %e, path = %path.display(), "cannot write the bill report");
                }
                tracing::info!(%date, "no trade bill for the day (NO_STATEMENT_EXIST)");
                StepOutcome::NoStatement(date)
            }
            Err(e) => {
                self.retry_at = Some((date, now + RETRY_AFTER_SECS));
                if matches!(e, BillRunError::NotReady { .. }) {
                    tracing::info!(%date, "trade bill not ready yet (STATEMENT_CREATING); retrying in 30 min");
                } else {
                    tracing::error!(%date, error = %e, "trade bill run failed; retrying in 30 min");
                }
                StepOutcome::RetryLater {
                    date,
                    reason: e.kind(),
                }
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
