//! Whole flows over HTTP: OAuth through the simulator, a combined order
//! with three sub-merchants, payment in the simulator's cashier (the same
//! path as its page), the notification, cancel, close, lost notifications
//! and lost responses — on SQLite and on PostgreSQL.

use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use wxpay_combine::apiv3::{Clock, SystemClock};
use wxpay_combine::bill::fetch::{BillJob, MerchantOutcome};
use wxpay_combine::bill::BillKind;
use wxpay_combine::combine::{EventSource, TradeState};
use wxpay_combine_sim::CashierAction;
use wxpay_combine_tests::database::Db;
use wxpay_combine_tests::flow::{transitions_to, Flow};
use wxpay_combine_tests::on_both_databases;
use wxpay_combine_tests::payer::{order_no, pay_params};

const OK: &str = "get_brand_wcpay_request:ok";

on_both_databases!(
    pay_three_merchants,
    cancel_then_pay_reuses_the_prepay_id,
    close_an_unpaid_order,
    dropped_notification_recovered_by_query_on_read,
    dropped_notification_recovered_by_the_worker,
    duplicate_concurrent_and_probe_notifications_apply_once,
    lost_prepay_answer_is_repeated_identically,
    pay_with_a_coupon,
);

async fn pay_three_merchants(db: Db) {
    let Some(f) = Flow::start(db, |_| {}).await else {
        return;
    };
    let alice = f.login("alice").await;
    let created = alice.create_order(3).await;
    let no = order_no(&created);
    assert_eq!(created["state"], json!("NOTPAY"));
    assert_eq!(created["sub_orders"].as_array().unwrap().len(), 3);
    let total: i64 = created["sub_orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(created["total_amount"].as_i64().unwrap(), total);

    let outcome = f.sim.pay(&pay_params(&created)).await;
    assert_eq!(outcome.err_msg, OK, "{outcome:?}");
    let order = f
        .wait_state(&no, TradeState::Success, Duration::from_secs(10))
        .await;
    assert!(order
        .sub_orders
        .iter()
        .all(|s| s.transaction_id.is_some() && s.success_time.is_some()));
    assert_eq!(
        transitions_to(&f.events(&no).await, TradeState::Success),
        vec![EventSource::Notify]
    );

    // The page reads the paid order (no query needed: the notification came).
    let view = alice.get(&format!("/api/combine-orders/{no}")).await;
    assert_eq!(view.status, 200);
    assert_eq!(view.body["state"], json!("SUCCESS"));
    for s in view.body["sub_orders"].as_array().unwrap() {
        assert_eq!(s["trade_state"], json!("SUCCESS"));
        assert!(s["transaction_id"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(s["merchant_name"].as_str().is_some());
    }
    let log = f.sim.notifications(Some(&no)).await.unwrap();
    assert_eq!(log.notifications.len(), 1);
    assert_eq!(log.notifications[0].status, "delivered");

    // Another payer cannot see it; a paid order has no pay params and cannot be closed.
    let bob = f.login("bob").await;
    assert_eq!(
        bob.get(&format!("/api/combine-orders/{no}")).await.status,
        404
    );
    let a = alice
        .post(&format!("/api/combine-orders/{no}/pay-params"), None)
        .await;
    assert_eq!(
        (a.status, a.body["code"].clone()),
        (409, json!("ORDER_FINAL"))
    );
    let a = alice
        .post(&format!("/api/combine-orders/{no}/close"), None)
        .await;
    assert_eq!(
        (a.status, a.body["code"].clone()),
        (409, json!("ORDER_PAID"))
    );
    f.stop().await;
}

async fn cancel_then_pay_reuses_the_prepay_id(db: Db) {
    let Some(f) = Flow::start(db, |_| {}).await else {
        return;
    };
    let alice = f.login("alice").await;
    let created = alice.create_order(3).await;
    let no = order_no(&created);
    let outcome = f
        .sim
        .confirm(&pay_params(&created), CashierAction::Cancel)
        .await;
    assert_eq!(outcome.err_msg, "get_brand_wcpay_request:cancel");
    assert_eq!(f.order(&no).await.state, TradeState::NotPay);

    let again = alice
        .post(&format!("/api/combine-orders/{no}/pay-params"), None)
        .await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    let params = pay_params(&again.body);
    assert_eq!(
        params.package,
        pay_params(&created).package,
        "the stored prepay_id is reused"
    );
    assert_eq!(f.sim.prepay_calls(&no).await.unwrap(), 1);
    assert_eq!(f.sim.pay(&params).await.err_msg, OK);
    f.wait_state(&no, TradeState::Success, Duration::from_secs(10))
        .await;
    f.stop().await;
}

async fn close_an_unpaid_order(db: Db) {
    let Some(f) = Flow::start(db, |o| o.close_min_age_secs = 2).await else {
        return;
    };
    let alice = f.login("alice").await;
    let created = alice.create_order(3).await;
    let no = order_no(&created);
    let early = alice
        .post(&format!("/api/combine-orders/{no}/close"), None)
        .await;
    assert_eq!(
        (early.status, early.body["code"].clone()),
        (409, json!("TOO_EARLY_TO_CLOSE"))
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let closed = alice
        .post(&format!("/api/combine-orders/{no}/close"), None)
        .await;
    assert_eq!(closed.status, 200, "{:?}", closed.body);
    assert_eq!(closed.body["state"], json!("CLOSED"));
    assert_eq!(
        transitions_to(&f.events(&no).await, TradeState::Closed),
        vec![EventSource::Close]
    );
    // The simulator agrees: the old pay params no longer pay.
    let outcome = f.sim.pay(&pay_params(&created)).await;
    assert_ne!(
        outcome.err_msg, OK,
        "a closed order must not be payable: {outcome:?}"
    );
    let a = alice
        .post(&format!("/api/combine-orders/{no}/pay-params"), None)
        .await;
    assert_eq!(a.status, 409);
    assert_eq!(f.order(&no).await.state, TradeState::Closed);
    f.stop().await;
}

async fn dropped_notification_recovered_by_query_on_read(db: Db) {
    let Some(f) = Flow::start(db, |_| {}).await else {
        return;
    };
    f.sim
        .control(json!({"drop_notifications": true}))
        .await
        .unwrap();
    let alice = f.login("alice").await;
    let created = alice.create_order(3).await;
    let no = order_no(&created);
    assert_eq!(f.sim.pay(&pay_params(&created)).await.err_msg, OK);
    // The page polls; after query_after_secs the server asks WeChat Pay.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = alice.get(&format!("/api/combine-orders/{no}")).await.body;
        if v["state"] == json!("SUCCESS") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {}", v["state"]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        transitions_to(&f.events(&no).await, TradeState::Success),
        vec![EventSource::Query]
    );
    let log = f.sim.notifications(Some(&no)).await.unwrap();
    assert!(
        log.notifications.iter().all(|n| n.status == "dropped"),
        "{log:?}"
    );
    f.stop().await;
}

async fn dropped_notification_recovered_by_the_worker(db: Db) {
    let Some(f) = Flow::start(db, |o| {
        o.reconcile_interval_secs = 1;
        o.reconcile_after_secs = 1;
    })
    .await
    else {
        return;
    };
    f.sim
        .control(json!({"drop_notifications": true}))
        .await
        .unwrap();
    let alice = f.login("alice").await;
    let created = alice.create_order(2).await;
    let no = order_no(&created);
    assert_eq!(f.sim.pay(&pay_params(&created)).await.err_msg, OK);
    // Nobody reads the order: the reconciliation worker finds the payment.
    f.wait_state(&no, TradeState::Success, Duration::from_secs(15))
        .await;
    assert_eq!(
        transitions_to(&f.events(&no).await, TradeState::Success),
        vec![EventSource::Query]
    );
    f.stop().await;
}

async fn duplicate_concurrent_and_probe_notifications_apply_once(db: Db) {
    let Some(f) = Flow::start(db, |_| {}).await else {
        return;
    };
    f.sim
        .control(json!({"duplicate_notifications": 4, "signtest_probe": true}))
        .await
        .unwrap();
    let alice = f.login("alice").await;
    let created = alice.create_order(3).await;
    let no = order_no(&created);
    assert_eq!(f.sim.pay(&pay_params(&created)).await.err_msg, OK);
    f.wait_state(&no, TradeState::Success, Duration::from_secs(10))
        .await;
    // Let every copy arrive and be answered.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = f.sim.notifications(Some(&no)).await.unwrap();
        if log.attempts.len() >= 6 || std::time::Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        log.attempts.len() >= 6,
        "probe + original + 4 copies: {log:?}"
    );
    assert_eq!(log.notifications[0].status, "delivered");
    let events = f.events(&no).await;
    assert_eq!(
        transitions_to(&events, TradeState::Success),
        vec![EventSource::Notify],
        "applied exactly once: {events:?}"
    );
    assert_eq!(events.len(), 2, "create + one state change: {events:?}");
    f.stop().await;
}

async fn lost_prepay_answer_is_repeated_identically(db: Db) {
    let Some(f) = Flow::start_with_config(
        db,
        |_| {},
        |c| {
            c.wechatpay.api.request_timeout = Duration::from_millis(700);
            c.wechatpay.api.max_attempts = 2;
        },
    )
    .await
    else {
        return;
    };
    let alice = f.login("alice").await;
    // Processed by WeChat Pay, but every answer is lost.
    f.sim
        .control(json!({"api_timeout_share": 1.0, "api_timeout_ms": 1500}))
        .await
        .unwrap();
    let a = alice
        .post(
            "/api/combine-orders",
            Some(json!({"items": [{"sku": "book-3body", "qty": 1}, {"sku": "coldbrew", "qty": 2}, {"sku": "succulent", "qty": 1}]})),
        )
        .await;
    assert_eq!(a.status, 503, "{:?}", a.body);
    assert_eq!(a.body["code"], json!("PREPAY_PENDING"));
    let no = order_no(&a.body);
    assert_eq!(
        f.order(&no).await.state,
        TradeState::NotPay,
        "kept open, not abandoned"
    );
    assert_eq!(f.sim.prepay_calls(&no).await.unwrap(), 2);

    // The network recovers; the page asks again and the same prepay goes out.
    f.sim.control(json!({"reset_faults": true})).await.unwrap();
    let again = alice
        .post(&format!("/api/combine-orders/{no}/pay-params"), None)
        .await;
    assert_eq!(
        again.status, 200,
        "the repeated prepay was accepted as identical: {:?}",
        again.body
    );
    assert_eq!(f.sim.prepay_calls(&no).await.unwrap(), 3);
    assert_eq!(f.sim.pay(&pay_params(&again.body)).await.err_msg, OK);
    f.wait_state(&no, TradeState::Success, Duration::from_secs(10))
        .await;
    f.stop().await;
}

/// A coupon: the payer pays less than the order amount. Both amounts are
/// stored, the page shows what the payer paid, and the sub-merchant's bill
/// (代金券金额) reconciles clean against the stored payer amount.
async fn pay_with_a_coupon(db: Db) {
    let Some(f) = Flow::start(db, |_| {}).await else {
        return;
    };
    let alice = f.login("alice").await;
    let created = alice.create_order(2).await;
    let no = order_no(&created);
    let first_amount = created["sub_orders"][0]["amount"].as_i64().unwrap();
    assert!(first_amount > 50, "room for the coupon: {first_amount}");
    f.sim.control(json!({"coupon_fen": 50})).await.unwrap();
    let outcome = f.sim.pay(&pay_params(&created)).await;
    f.sim.control(json!({"coupon_fen": 0})).await.unwrap();
    assert_eq!(outcome.err_msg, OK, "{outcome:?}");
    let order = f
        .wait_state(&no, TradeState::Success, Duration::from_secs(10))
        .await;
    let s0 = &order.sub_orders[0];
    assert_eq!(
        (s0.amount, s0.payer_amount),
        (first_amount, Some(first_amount - 50))
    );
    let s1 = &order.sub_orders[1];
    assert_eq!(s1.payer_amount, Some(s1.amount), "no coupon on the second");

    // The page shows what the payer paid where it differs.
    let view = alice.get(&format!("/api/combine-orders/{no}")).await;
    assert_eq!(view.status, 200);
    let subs = view.body["sub_orders"].as_array().unwrap();
    assert_eq!(subs[0]["amount"], json!(first_amount));
    assert_eq!(subs[0]["payer_amount"], json!(first_amount - 50));
    assert!(subs[1].get("payer_amount").is_none());

    // Today's bill of the first sub-merchant: 代金券金额 0.50, matched clean.
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let initiator = wxpay_combine::kit::prepare_client(&f.config, clock.clone())
        .await
        .unwrap();
    let clients = wxpay_combine::kit::prepare_merchant_clients(&f.config, initiator, clock.clone())
        .await
        .unwrap();
    let fetchers = wxpay_combine::kit::bill_fetchers(&f.config, &clients, f.store.clone()).unwrap();
    let fetcher = fetchers
        .iter()
        .find(|x| x.mchid() == s0.mchid)
        .expect("the sub-merchant's fetcher");
    let dir = tempfile::tempdir().unwrap();
    let job = BillJob {
        date: wxpay_combine_core::timefmt::beijing(clock.now())
            .unwrap()
            .date(),
        kind: BillKind::All,
        gzip: false,
        out: dir.path().join("bill.csv"),
        report: None,
    };
    let MerchantOutcome::Reconciled(o) = fetcher.fetch_merchant(&job).await.unwrap() else {
        panic!("a bill with the paid sub-order");
    };
    assert!(o.report.ok, "{:#?}", o.report.discrepancies);
    assert!(o.report.matched >= 1);
    let bill = wxpay_combine::bill::parse(&std::fs::read(&job.out).unwrap()).unwrap();
    let row = bill
        .details
        .iter()
        .find(|d| d.out_trade_no == s0.out_trade_no)
        .expect("the coupon sub-order's row");
    assert_eq!(
        (row.order_amount_fen, row.coupon_amount_fen),
        (first_amount, 50)
    );
    f.stop().await;
}
