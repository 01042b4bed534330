//! Reliability 1 — several instances: two `wxpay-combine serve` processes
//! share one PostgreSQL database (a fresh schema); the simulator delivers
//! every paid order's notification several times at once, spread over both
//! instances. Every order ends SUCCESS with exactly one state change in the
//! events table, and every delivery is answered 2xx.
//!
//! Sizes: `WXPAY_RELIABILITY_INSTANCE_ORDERS` (default 500 ×
//! `WXPAY_RELIABILITY_SCALE`) orders, `WXPAY_RELIABILITY_COPIES` (default 5)
//! concurrent deliveries of each notification, `WXPAY_RELIABILITY_INFLIGHT`
//! (default 32) notifications in delivery at once (the simulator's
//! `notify_max_inflight`; 0 for no limit).

use futures_util::stream::{self, StreamExt};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use wxpay_combine::combine::{EventSource, TradeState};
use wxpay_combine_tests::database::Db;
use wxpay_combine_tests::flow::transitions_to;
use wxpay_combine_tests::payer::{create_order, order_no, pay_params, three_shop_items};
use wxpay_combine_tests::reliability::{acked, answers_by_notification, count, Cluster};
use wxpay_combine_tests::wait::wait_for;

const OK: &str = "get_brand_wcpay_request:ok";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_one_postgres_database_concurrent_duplicate_notifications() {
    let orders = count("WXPAY_RELIABILITY_INSTANCE_ORDERS", 500);
    let copies: usize = std::env::var("WXPAY_RELIABILITY_COPIES")
        .ok()
        .map(|v| v.trim().parse().expect("WXPAY_RELIABILITY_COPIES"))
        .unwrap_or(5);
    assert!((1..=21).contains(&copies), "1 to 21 copies");
    let inflight: u32 = std::env::var("WXPAY_RELIABILITY_INFLIGHT")
        .ok()
        .map(|v| v.trim().parse().expect("WXPAY_RELIABILITY_INFLIGHT"))
        .unwrap_or(32);
    let started = Instant::now();
    let Some(c) = Cluster::start(Db::Postgres, 2, |_| {}).await else {
        return;
    };
    let targets = vec![c.servers[0].notify_url(), c.servers[1].notify_url()];
    c.sim
        .control(json!({
            "duplicate_notifications": copies - 1,
            "notify_targets": targets,
            "notify_max_inflight": (inflight > 0).then_some(inflight),
        }))
        .await
        .unwrap();

    // Orders through the public API of both instances (one payer each).
    let payers = [c.login(0, "alice").await, c.login(1, "bob").await];
    let items = three_shop_items();
    let created: Vec<(String, wxpay_combine::apiv3::JsapiPayParams)> = stream::iter(0..orders)
        .map(|k| {
            let (payers, items) = (&payers, &items);
            async move {
                let (status, body) = create_order(&payers[k % 2], items).await;
                assert_eq!(status, 201, "order {k} on instance {}: {body}", k % 2);
                (order_no(&body), pay_params(&body))
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let created_s = started.elapsed().as_secs_f64();

    // Pay them all in the simulator; the notification storm follows.
    stream::iter(&created)
        .map(|(no, params)| {
            let sim = &c.sim;
            async move {
                let outcome = sim.pay(params).await;
                assert_eq!(outcome.err_msg, OK, "paying {no}: {outcome:?}");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let within = Duration::from_secs(60 + orders as u64 / 5);
    let settled = wait_for(within, Duration::from_millis(200), || async {
        let stats = c.sim.stats().await.unwrap();
        let done = stats.notifications.get("delivered").copied().unwrap_or(0)
            + stats.notifications.get("failed").copied().unwrap_or(0);
        (done as usize >= orders).then_some(stats)
    })
    .await;
    let stats = c.sim.stats().await.unwrap();
    assert!(
        settled.is_some(),
        "notifications not all delivered within {within:?}: {:?}\n{}",
        stats.notifications,
        c.logs(30)
    );
    let stormed_s = started.elapsed().as_secs_f64();

    // The simulator's side: one attempt per notification, every copy 2xx.
    let log = c.sim.notifications(None).await.unwrap();
    assert_eq!(
        log.notifications.len(),
        orders,
        "one notification per order"
    );
    let mut problems = Vec::new();
    for n in &log.notifications {
        if n.status != "delivered" || n.attempts != 1 {
            problems.push(format!(
                "{} ({}): {} after {} attempts",
                n.id, n.combine_out_trade_no, n.status, n.attempts
            ));
        }
    }
    let answers = answers_by_notification(&log);
    for n in &log.notifications {
        let a = answers.get(&n.id).cloned().unwrap_or_default();
        if a.len() != copies || !a.iter().all(|s| acked(*s)) {
            problems.push(format!(
                "{} ({}): answers {a:?}",
                n.id, n.combine_out_trade_no
            ));
        }
    }
    let errors: Vec<_> = log
        .attempts
        .iter()
        .filter(|a| !acked(a.http_status))
        .take(5)
        .collect();
    assert!(
        problems.is_empty(),
        "{} delivery problems, e.g. {:#?}\nfailed attempts, e.g. {errors:#?}\n{}",
        problems.len(),
        &problems[..problems.len().min(10)],
        c.logs(30)
    );

    // The database's side: SUCCESS, exactly one state change, by a notification.
    let mut bad = Vec::new();
    for (no, _) in &created {
        let order = c.order(no).await;
        let events = c.events(no).await;
        let changes: Vec<_> = events.iter().filter(|e| e.from_state.is_some()).collect();
        let ok = order.state == TradeState::Success
            && order
                .sub_orders
                .iter()
                .all(|s| s.transaction_id.is_some() && s.success_time.is_some())
            && changes.len() == 1
            && transitions_to(&events, TradeState::Success) == vec![EventSource::Notify];
        if !ok {
            bad.push(format!("{no}: {} with events {events:?}", order.state));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {orders} orders wrong, e.g. {:#?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );

    // Both instances took their share: copy i of every notification went to
    // instance i mod 2, and exactly one copy per order was applied.
    let mut handled = BTreeMap::new();
    let mut applied = 0;
    for s in &c.servers {
        let a = s.log_count("notification applied");
        let d = s.log_count("duplicate notification acknowledged");
        applied += a;
        handled.insert(s.index, (a, d));
    }
    let expected = [orders * copies.div_ceil(2), orders * (copies / 2)];
    for (i, (a, d)) in &handled {
        assert_eq!(
            a + d,
            expected[*i],
            "instance {i} answered {a} applied + {d} duplicate notifications; \
             expected {} copies: {handled:?}",
            expected[*i]
        );
    }
    assert_eq!(
        applied, orders,
        "exactly one application per order across both instances: {handled:?}"
    );
    eprintln!(
        "reliability_instances: {orders} orders × {copies} deliveries over 2 instances \
         ({inflight} notifications in flight): \
         created in {created_s:.1} s, all delivered by {stormed_s:.1} s, checked by {:.1} s; \
         per instance (applied, duplicate): {handled:?}",
        started.elapsed().as_secs_f64()
    );
    c.stop().await;
}
