//! Reliability 3 — upstream faults: the simulator fails about 30 % of the
//! APIv3 calls (15 % answered 500 `SYSTEM_ERROR` unprocessed, and 18 % of
//! the rest processed but answered too late: a lost response) and drops
//! every payment notification. Then:
//!
//! * each order is created (201) or fails with a clear error (503
//!   `PREPAY_PENDING` naming the order); asking again for its pay params
//!   repeats the identical prepay, so WeChat Pay never holds two different
//!   prepay ids for one order and a paid order cannot be paid again;
//! * queries converge: the payer's page reads its paid orders as SUCCESS
//!   (query-on-read, retried through the faults);
//! * the reconciliation worker applies every payment nobody reads (the
//!   library's `reconcile::Worker` on the server's store and client, with
//!   its 60 s minimum spacing between two queries of one order shortened to
//!   2 s so the test takes seconds);
//! * unpaid orders stay unpaid; every paid order changed state exactly once.
//!
//! On SQLite and on PostgreSQL. Size: `WXPAY_RELIABILITY_FAULT_ORDERS`
//! (default 30 × `WXPAY_RELIABILITY_SCALE`).

use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wxpay_combine::apiv3::SystemClock;
use wxpay_combine::combine::{EventSource, TradeState};
use wxpay_combine::reconcile::{Worker, WorkerConfig};
use wxpay_combine_tests::database::Db;
use wxpay_combine_tests::flow::{transitions_to, Flow};
use wxpay_combine_tests::on_both_databases;
use wxpay_combine_tests::payer::{order_no, pay_params, prepay_id, three_shop_items};
use wxpay_combine_tests::reliability::count;
use wxpay_combine_tests::wait::wait_for;

const OK: &str = "get_brand_wcpay_request:ok";

on_both_databases!(thirty_percent_api_faults_and_dropped_notifications);

/// The prepay ids the simulator issued for an order (its own records).
async fn sim_prepay_ids(sim_db: &sqlx::SqlitePool, no: &str) -> BTreeSet<String> {
    sqlx::query_scalar::<_, String>("SELECT prepay_id FROM prepays WHERE combine_out_trade_no = ?")
        .bind(no.to_string())
        .fetch_all(sim_db)
        .await
        .expect("the simulator's prepays")
        .into_iter()
        .collect()
}

/// A create answer must be a created order or a clear, retryable error.
fn check_create_answer(k: usize, status: u16, body: &Value) -> bool {
    match status {
        201 => {
            assert_eq!(body["state"], json!("NOTPAY"), "order {k}: {body}");
            true
        }
        503 => {
            assert_eq!(body["code"], json!("PREPAY_PENDING"), "order {k}: {body}");
            assert!(
                body["message"].as_str().is_some_and(|m| !m.is_empty()),
                "order {k}: a failure says what happened: {body}"
            );
            false
        }
        _ => panic!("order {k}: neither created nor a clear retryable error: {status} {body}"),
    }
}

async fn thirty_percent_api_faults_and_dropped_notifications(db: Db) {
    let orders = count("WXPAY_RELIABILITY_FAULT_ORDERS", 30).max(3);
    let started = Instant::now();
    let Some(f) = Flow::start_with_config(
        db,
        |o| {
            o.query_after_secs = 1;
            // The server's own worker idles; the one below runs faster.
            o.reconcile_interval_secs = 3600;
            o.reconcile_after_secs = 3600;
        },
        |c| {
            // One try per call, so the faults reach the page.
            c.wechatpay.api.request_timeout = Duration::from_millis(700);
            c.wechatpay.api.max_attempts = 1;
        },
    )
    .await
    else {
        return;
    };
    let client = wxpay_combine::kit::prepare_client(&f.config, Arc::new(SystemClock))
        .await
        .expect("client");
    let worker = Worker::new(
        f.store.clone(),
        client,
        WorkerConfig {
            interval: Duration::from_millis(500),
            query_after: Duration::from_secs(1),
            lease: Duration::from_secs(2),
            max_requery: Duration::from_secs(2),
            ..WorkerConfig::default()
        },
        Arc::new(SystemClock),
    );
    let (stop_worker, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(async move {
        worker
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    let alice = f.login("alice").await;
    f.sim
        .control(json!({
            "api_error_share": 0.15,
            "api_timeout_share": 0.18,
            "api_timeout_ms": 1500,
            "drop_notifications": true,
        }))
        .await
        .unwrap();

    // Create: every answer is an order or a clear error naming the order.
    let items = three_shop_items();
    let answers: Vec<(String, bool, Option<String>)> = stream::iter(0..orders)
        .map(|k| {
            let (alice, items) = (&alice, &items);
            async move {
                let a = alice
                    .post("/api/combine-orders", Some(json!({ "items": items })))
                    .await;
                let created = check_create_answer(k, a.status, &a.body);
                let prepay = created.then(|| prepay_id(&pay_params(&a.body)));
                (order_no(&a.body), created, prepay)
            }
        })
        .buffer_unordered(6)
        .collect()
        .await;
    let pending = answers.iter().filter(|(_, created, _)| !created).count();
    assert!(
        pending > 0,
        "with 30 % faults and one try per call some creations must fail"
    );

    // Ask again for pay params until each order has them: the same prepay
    // every time, and the one the simulator holds.
    let sim_db = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(f.sim.data_dir().join("sim.db"))
                .read_only(true),
        )
        .await
        .expect("open the simulator's database");
    let mut params = BTreeMap::new();
    for (no, _, first) in &answers {
        let mut seen: BTreeSet<String> = first.iter().cloned().collect();
        let mut last = None;
        for _ in 0..(if first.is_some() { 2 } else { 12 }) {
            let a = alice
                .post(&format!("/api/combine-orders/{no}/pay-params"), None)
                .await;
            match a.status {
                200 => {
                    let p = pay_params(&a.body);
                    seen.insert(prepay_id(&p));
                    last = Some(p);
                }
                503 => assert_eq!(a.body["code"], json!("PREPAY_PENDING"), "{no}: {}", a.body),
                _ => panic!("{no}: pay-params answered {} {}", a.status, a.body),
            }
        }
        let last = last.unwrap_or_else(|| panic!("{no}: no pay params after 12 tries"));
        assert_eq!(
            seen.len(),
            1,
            "{no}: different prepay ids handed out: {seen:?}"
        );
        let held = sim_prepay_ids(&sim_db, no).await;
        assert_eq!(
            held, seen,
            "{no}: WeChat Pay holds {held:?}, the page was given {seen:?}"
        );
        params.insert(no.clone(), last);
    }

    // Pay two thirds; nobody can pay an order twice.
    let nos: Vec<String> = params.keys().cloned().collect();
    let paid: Vec<String> = nos
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 2)
        .map(|(_, n)| n.clone())
        .collect();
    for no in &paid {
        let outcome = f.sim.pay(&params[no]).await;
        assert_eq!(outcome.err_msg, OK, "paying {no}: {outcome:?}");
        let again = f.sim.pay(&params[no]).await;
        assert_ne!(again.err_msg, OK, "{no} was paid twice: {again:?}");
    }

    // Half the paid orders are read by the page (query-on-read through the
    // faults); the others by nobody (the reconciliation worker).
    let read: Vec<&String> = paid.iter().step_by(2).collect();
    let unread: Vec<&String> = paid.iter().skip(1).step_by(2).collect();
    let within = Duration::from_secs(60);
    let converged = wait_for(within, Duration::from_millis(300), || async {
        let mut open = 0;
        for no in &read {
            let v = alice.get(&format!("/api/combine-orders/{no}")).await;
            assert!(
                v.status == 200,
                "{no}: reading the order answered {} {}",
                v.status,
                v.body
            );
            if v.body["state"] != json!("SUCCESS") {
                open += 1;
            }
        }
        for no in &unread {
            if f.order(no).await.state != TradeState::Success {
                open += 1;
            }
        }
        (open == 0).then_some(())
    })
    .await;
    let mut states = BTreeMap::new();
    for no in &nos {
        *states
            .entry(f.order(no).await.state.to_string())
            .or_insert(0) += 1;
    }
    if converged.is_none() {
        let calls = f.sim.api_calls().await.unwrap();
        let mut open = Vec::new();
        for no in &paid {
            let o = f.order(no).await;
            if o.state != TradeState::Success {
                let group = if read.contains(&no) { "read" } else { "unread" };
                let queries: Vec<String> = calls
                    .iter()
                    .filter(|c| c.combine_out_trade_no.as_deref() == Some(no.as_str()))
                    .map(|c| format!("{} {} {}", c.at_ms, c.endpoint, c.status))
                    .collect();
                open.push(format!(
                    "{no} ({group}): {} {:?}; calls {queries:?}",
                    o.state,
                    f.events(no).await
                ));
            }
        }
        panic!("paid orders not all SUCCESS within {within:?}: {states:?}\n{open:#?}");
    }

    // Every payment came in by query (the notifications were dropped), once;
    // unpaid orders are still unpaid.
    for no in &nos {
        let order = f.order(no).await;
        let events = f.events(no).await;
        let changes = events.iter().filter(|e| e.from_state.is_some()).count();
        if paid.contains(no) {
            assert_eq!(order.state, TradeState::Success, "{no}: {events:?}");
            assert_eq!(changes, 1, "{no}: one state change: {events:?}");
            assert_eq!(
                transitions_to(&events, TradeState::Success),
                vec![EventSource::Query],
                "{no}: {events:?}"
            );
        } else {
            assert_eq!(order.state, TradeState::NotPay, "{no}: {events:?}");
            assert_eq!(changes, 0, "{no}: {events:?}");
        }
    }
    let log = f.sim.notifications(None).await.unwrap();
    assert!(
        log.notifications.len() == paid.len()
            && log.notifications.iter().all(|n| n.status == "dropped"),
        "every notification dropped: {:?}",
        log.notifications
    );
    let calls = f.sim.api_calls().await.unwrap();
    let errors = calls.iter().filter(|c| c.status == 500).count();
    assert!(errors > 0, "no call failed: the faults were not in force");
    eprintln!(
        "reliability_faults ({db:?}): {orders} orders, {pending} creations failed cleanly, \
         {} paid ({} read by the page, {} left to the worker), {} API calls ({errors} answered 500); \
         {:.1} s",
        paid.len(),
        read.len(),
        unread.len(),
        calls.len(),
        started.elapsed().as_secs_f64()
    );
    sim_db.close().await;
    let _ = stop_worker.send(());
    let _ = worker.await;
    f.stop().await;
}
