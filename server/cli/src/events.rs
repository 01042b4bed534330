//! `wxpay-combine events --config FILE --pending | --redeliver ID`: the
//! webhook outbox seen from the command line.
//!
//! - `--pending` lists undelivered events (id, order, type, attempts, next
//!   attempt, last error), oldest first.
//! - `--redeliver ID` sends that event **now, synchronously**, signed like
//!   the worker does, prints the receiver's answer and records it: a 2xx
//!   marks the event delivered; a failure is recorded like a failed
//!   attempt (next attempt after the usual backoff, picked up by the
//!   running server's worker). An already delivered event can be re-sent
//!   (receivers dedupe by id). A pending event that is not the oldest
//!   pending one of its order is refused: events of an order go out in order.

use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use wxpay_combine::apiv3::{Clock, SystemClock};
use wxpay_combine::config::Config;
use wxpay_combine::store::{self, OutboxEvent};
use wxpay_combine::webhook::{Delivery, WebhookWorker};

/// `wxpay-combine events …`
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("action").required(true).args(["pending", "redeliver"])))]
pub struct EventsArgs {
    /// The server's configuration file; `WXPAY_*` variables override its keys.
    #[arg(long, short, env = "WXPAY_CONFIG", default_value = "wxpay.toml")]
    pub config: PathBuf,
    /// List undelivered webhook events, oldest first.
    #[arg(long)]
    pub pending: bool,
    /// Send the event with this id now and record the answer.
    #[arg(long, value_name = "ID")]
    pub redeliver: Option<String>,
    /// At most this many rows with --pending.
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
}

/// Runs `events`.
pub fn run(args: EventsArgs) -> ExitCode {
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wxpay-combine events: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The delivery's log line (with its order number) like the server's.
    crate::app::init_tracing(config.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wxpay-combine events: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_async(args, config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wxpay-combine events: {e}");
            ExitCode::FAILURE
        }
    }
}

fn time(unix: i64) -> String {
    wxpay_combine_core::timefmt::utc_table(unix).unwrap_or_else(|| unix.to_string())
}

/// The `--pending` table.
pub fn pending_table(events: &[OutboxEvent]) -> String {
    let mut rows = vec![[
        "ID".to_string(),
        "ORDER".into(),
        "TYPE".into(),
        "ATTEMPTS".into(),
        "NEXT ATTEMPT".into(),
        "LAST ERROR".into(),
    ]];
    for e in events {
        rows.push([
            e.id.clone(),
            e.combine_out_trade_no.clone(),
            e.kind.clone(),
            e.attempts.to_string(),
            time(e.next_attempt_at),
            e.last_error
                .as_deref()
                .unwrap_or("-")
                .chars()
                .take(60)
                .collect(),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

async fn run_async(args: EventsArgs, config: Config) -> Result<ExitCode, String> {
    let store = store::connect(&config.store.database_url)
        .await
        .map_err(|e| format!("database: {e}"))?;
    if args.pending {
        let events = store
            .pending_outbox_events(args.limit.max(1))
            .await
            .map_err(|e| e.to_string())?;
        let stats = store.outbox_stats().await.map_err(|e| e.to_string())?;
        print!("{}", pending_table(&events));
        println!(
            "{} pending event(s){}",
            stats.pending,
            if config.webhook.is_none() {
                " (webhook_url is not set: nothing is being delivered)"
            } else {
                ""
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    let id = args.redeliver.unwrap_or_default();
    let Some(settings) = config.webhook.clone() else {
        return Err("webhook_url is not set in the configuration: nowhere to deliver".into());
    };
    let event = store
        .get_outbox_event(&id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no event {id:?}"))?;
    if event.delivered_at.is_none() {
        let earlier = store
            .pending_outbox_events(i64::MAX)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|p| p.combine_out_trade_no == event.combine_out_trade_no && p.seq < event.seq);
        if let Some(p) = earlier {
            return Err(format!(
                "event {} of the same order is still pending; redeliver it first (events of an order are delivered in order)",
                p.id
            ));
        }
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let worker = WebhookWorker::new(store, settings, clock)?;
    let outcome = worker.deliver(&event).await.map_err(|e| e.to_string())?;
    match outcome {
        Delivery::Delivered(status) => {
            println!("{id}: delivered (HTTP {status})");
            Ok(ExitCode::SUCCESS)
        }
        other => {
            println!(
                "{id}: not delivered ({}); recorded as a failed attempt, the server retries it",
                other.describe()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_table_aligns_columns() {
        let e = OutboxEvent {
            id: "evt_1".into(),
            combine_out_trade_no: "C1".into(),
            seq: 1,
            kind: "paid".into(),
            payload: "{}".into(),
            created_at: 0,
            attempts: 2,
            next_attempt_at: 1_700_000_000,
            delivered_at: None,
            last_error: Some("HTTP 500".into()),
        };
        let t = pending_table(&[e]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("ID     ORDER  TYPE  ATTEMPTS"));
        assert!(lines[1].contains("2023-11-14 22:13:20Z"));
        assert!(lines[1].ends_with("HTTP 500"));
    }
}
