//! Reliability 2 — crash: a `wxpay-combine serve` process is killed with
//! SIGKILL in the middle of a notification storm and started again on the
//! same port (same database); the simulator keeps retrying on its scaled
//! schedule. Every paid order ends SUCCESS, every notification acknowledged
//! before the crash has its effect in the database (checked while the server
//! is down, and again at the end), and no order changes state twice — on
//! SQLite and on PostgreSQL.
//!
//! Size: `WXPAY_RELIABILITY_CRASH_ORDERS` (default 200 ×
//! `WXPAY_RELIABILITY_SCALE`) orders, each notification delivered twice at
//! once.

use futures_util::stream::{self, StreamExt};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use wxpay_combine::combine::{EventSource, TradeState};
use wxpay_combine_tests::database::Db;
use wxpay_combine_tests::flow::transitions_to;
use wxpay_combine_tests::on_both_databases;
use wxpay_combine_tests::payer::{create_order, order_no, pay_params, three_shop_items};
use wxpay_combine_tests::reliability::{acked, answers_by_notification, count, Cluster};
use wxpay_combine_tests::wait::wait_for;

const OK: &str = "get_brand_wcpay_request:ok";

on_both_databases!(kill9_in_a_notification_storm_loses_and_repeats_nothing);

/// Notification id → order, and the ids with at least one 2xx answer.
async fn acknowledged(c: &Cluster) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let log = c.sim.notifications(None).await.unwrap();
    let orders = log
        .notifications
        .iter()
        .map(|n| (n.id.clone(), n.combine_out_trade_no.clone()))
        .collect();
    let acks = answers_by_notification(&log)
        .into_iter()
        .filter(|(_, answers)| answers.iter().any(|s| acked(*s)))
        .map(|(id, _)| id)
        .collect();
    (orders, acks)
}

async fn kill9_in_a_notification_storm_loses_and_repeats_nothing(db: Db) {
    let orders = count("WXPAY_RELIABILITY_CRASH_ORDERS", 200);
    let started = Instant::now();
    // Retries after 45 ms, 45 ms, 90 ms, 0.5 s, 1.8 s, 3.6 s, …
    let Some(c) = Cluster::start(db, 1, |o| o.time_scale = 0.003).await else {
        return;
    };
    let up_s = started.elapsed().as_secs_f64();
    c.sim
        .control(json!({"duplicate_notifications": 1}))
        .await
        .unwrap();
    let alice = c.login(0, "alice").await;
    let items = three_shop_items();
    let created: Vec<(String, wxpay_combine::apiv3::JsapiPayParams)> = stream::iter(0..orders)
        .map(|k| {
            let (alice, items) = (&alice, &items);
            async move {
                let (status, body) = create_order(alice, items).await;
                assert_eq!(status, 201, "order {k}: {body}");
                (order_no(&body), pay_params(&body))
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let created_s = started.elapsed().as_secs_f64();

    // Pay everything while a watcher kills the server once a quarter of the
    // notifications are acknowledged, checks the database while it is down,
    // and starts it again.
    let pay = async {
        stream::iter(&created)
            .map(|(no, params)| {
                let sim = &c.sim;
                async move {
                    let outcome = sim.pay(params).await;
                    assert_eq!(outcome.err_msg, OK, "paying {no}: {outcome:?}");
                }
            })
            .buffer_unordered(8)
            .collect::<Vec<()>>()
            .await;
    };
    let crash = async {
        let threshold = (orders / 4).max(1);
        let seen = wait_for(
            Duration::from_secs(120),
            Duration::from_millis(25),
            || async {
                let stats = c.sim.stats().await.unwrap();
                let delivered = stats.notifications.get("delivered").copied().unwrap_or(0) as usize;
                (delivered >= threshold).then_some(delivered)
            },
        )
        .await
        .unwrap_or_else(|| panic!("{threshold} notifications not delivered within 120 s"));
        c.kill9(0);
        let killed_s = started.elapsed().as_secs_f64();
        // Attempts cut off by the kill end at once (connection reset).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (by_id, acks) = acknowledged(&c).await;
        assert!(
            acks.len() < orders,
            "the storm was over before the kill ({} of {orders} acknowledged): nothing tested",
            acks.len()
        );
        let mut missing = Vec::new();
        for id in &acks {
            let no = &by_id[id];
            let o = c.order(no).await;
            if o.state != TradeState::Success {
                missing.push(format!("{id} for {no}: order is {}", o.state));
            }
        }
        assert!(
            missing.is_empty(),
            "acknowledged before the crash but not in the database: {missing:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.restart(0).await;
        let restarted_s = started.elapsed().as_secs_f64();
        (seen, acks, killed_s, restarted_s)
    };
    let ((), (seen_at_kill, acked_before_kill, killed_s, restarted_s)) = tokio::join!(pay, crash);

    let within = Duration::from_secs(90);
    let settled = wait_for(within, Duration::from_millis(100), || async {
        let stats = c.sim.stats().await.unwrap();
        let delivered = stats.notifications.get("delivered").copied().unwrap_or(0) as usize;
        (delivered >= orders).then_some(())
    })
    .await;
    let stats = c.sim.stats().await.unwrap();
    assert!(
        settled.is_some(),
        "after the restart not every notification was delivered within {within:?}: {:?}\n{}",
        stats.notifications,
        c.logs(40)
    );
    let settled_s = started.elapsed().as_secs_f64();

    // Every notification acknowledged (before or after the crash) is in the
    // database, every order changed state exactly once, and the crash did
    // hit deliveries that the simulator then retried.
    let log = c.sim.notifications(None).await.unwrap();
    let answers = answers_by_notification(&log);
    let retried = log.notifications.iter().filter(|n| n.attempts > 1).count();
    let failed_answers = answers.values().flatten().filter(|s| !acked(**s)).count();
    let mut bad = Vec::new();
    for n in &log.notifications {
        let no = &n.combine_out_trade_no;
        let order = c.order(no).await;
        let events = c.events(no).await;
        let changes = events.iter().filter(|e| e.from_state.is_some()).count();
        if n.status != "delivered"
            || order.state != TradeState::Success
            || changes != 1
            || transitions_to(&events, TradeState::Success) != vec![EventSource::Notify]
        {
            bad.push(format!(
                "{no}: notification {} {}, order {}, events {events:?}",
                n.id, n.status, order.state
            ));
        }
    }
    assert_eq!(log.notifications.len(), orders);
    assert!(
        bad.is_empty(),
        "{} of {orders} orders wrong, e.g. {:#?}\n{}",
        bad.len(),
        &bad[..bad.len().min(5)],
        c.logs(40)
    );
    assert!(
        retried > 0 && failed_answers > 0,
        "no delivery met the dead server ({retried} retried, {failed_answers} failed answers): \
         the crash tested nothing"
    );
    eprintln!(
        "reliability_crash ({db:?}): {orders} orders; killed after {seen_at_kill} deliveries \
         ({} acknowledged), {retried} notifications retried, {failed_answers} failed answers; \
         server up at {up_s:.1} s, created by {created_s:.1} s, killed at {killed_s:.1} s, ready again at {restarted_s:.1} s, \
         all delivered by {settled_s:.1} s, checked by {:.1} s",
        acked_before_kill.len(),
        started.elapsed().as_secs_f64()
    );
    c.stop().await;
}
