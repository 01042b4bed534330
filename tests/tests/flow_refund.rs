//! Refunds over the wire, against the simulator, on SQLite and PostgreSQL:
//! a sub-order refunded by its own merchant, completed by the refund
//! notification; the combined query's REFUND state read as paid; a refund
//! the initiator signs for another merchant's sub-order refused as the real
//! service does; and a refund whose answer was lost re-sent with the same
//! number, so the simulator holds one refund.

use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use wxpay_combine::apiv3::{Clock, SystemClock};
use wxpay_combine::bill::fetch::{BillJob, MerchantOutcome};
use wxpay_combine::bill::BillKind;
use wxpay_combine::combine::{ApplyOutcome, CombineApi, CombineOrder, EventSource, TradeState};
use wxpay_combine::kit::{bill_fetchers, prepare_client, prepare_merchant_clients};
use wxpay_combine::refund::wire::{RefundRequest, RefundRequestAmount};
use wxpay_combine::refund::{
    MerchantClients, RefundApi, RefundError, RefundOrder, RefundRule, RefundStatus,
};
use wxpay_combine_sim::{FaultScope, Faults};
use wxpay_combine_tests::database::Db;
use wxpay_combine_tests::flow::{transitions_to, Flow};
use wxpay_combine_tests::on_both_databases;
use wxpay_combine_tests::payer::{order_no, pay_params};
use wxpay_combine_tests::wait::wait_for;

on_both_databases!(
    refund_a_sub_order_end_to_end,
    timed_out_refund_is_resent_with_the_same_number,
    partly_refunded_order_is_settled_by_the_worker,
    dropped_refund_notification_recovered_by_the_sweep,
);

/// An order over three sub-merchants, paid.
async fn paid_order(f: &Flow) -> (String, CombineOrder) {
    let alice = f.login("alice").await;
    let created = alice.create_order(3).await;
    let no = order_no(&created);
    let outcome = f.sim.pay(&pay_params(&created)).await;
    assert_eq!(outcome.err_msg, "get_brand_wcpay_request:ok", "{outcome:?}");
    let order = f
        .wait_state(&no, TradeState::Success, Duration::from_secs(10))
        .await;
    (no, order)
}

fn refund_of(no: &str, out_trade_no: &str, amount: i64, key: Option<&str>) -> RefundOrder {
    RefundOrder {
        combine_out_trade_no: no.into(),
        out_trade_no: out_trade_no.into(),
        amount,
        reason: Some("退货".into()),
        idempotency: key.map(|k| (k.to_string(), format!("{no}/{out_trade_no}/{amount}"))),
    }
}

async fn refund_a_sub_order_end_to_end(db: Db) {
    let Some(f) = Flow::start(db, |_| {}).await else {
        return;
    };
    let (no, order) = paid_order(&f).await;
    let sub = &order.sub_orders[1];
    let sixty = sub.amount * 6 / 10;
    let r = f
        .refunds
        .refund(refund_of(&no, &sub.out_trade_no, sixty, None))
        .await
        .expect("refund accepted");
    assert_eq!(
        (r.mchid.as_str(), r.amount, r.total),
        (sub.mchid.as_str(), sixty, sub.amount)
    );
    assert_eq!(r.transaction_id, sub.transaction_id.clone().unwrap());
    assert!(r.refund_id.is_some(), "accepted by the simulator: {r:?}");

    // A second 60 % is refused before any call, and stores nothing.
    let second = f
        .refunds
        .refund(refund_of(&no, &sub.out_trade_no, sixty, None))
        .await;
    assert!(
        matches!(
            second,
            Err(RefundError::Rule(RefundRule::ExceedsRefundable { .. }))
        ),
        "{second:?}"
    );
    assert_eq!(f.store.refunds_of_order(&no).await.unwrap().len(), 1);

    // The simulator completes it and notifies the sub-merchant's endpoint.
    let done = wait_for(
        Duration::from_secs(15),
        Duration::from_millis(100),
        || async {
            let r = f.store.get_refund(&r.out_refund_no).await.unwrap().unwrap();
            (r.status == RefundStatus::Success).then_some(r)
        },
    )
    .await
    .expect("the refund notification settles the refund");
    assert!(done.success_time.is_some());
    let events = f.store.refund_events(&r.out_refund_no).await.unwrap();
    assert_eq!(events.last().unwrap().source, "notify", "{events:?}");

    // WeChat Pay now reports the refunded sub-order as REFUND and the
    // others as SUCCESS: read as paid, nothing to change, no alert.
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let initiator = prepare_client(&f.config, clock.clone()).await.unwrap();
    let txn = initiator.query(&no).await.unwrap();
    for s in &txn.sub_orders {
        let expected = if s.out_trade_no == sub.out_trade_no {
            "REFUND"
        } else {
            "SUCCESS"
        };
        assert_eq!(s.trade_state, expected, "{}", s.out_trade_no);
    }
    let applied = wxpay_combine::payment::apply_transaction(
        &*f.store,
        &txn,
        EventSource::Query,
        None,
        clock.now(),
    )
    .await
    .expect("a partly refunded order is not a mismatch");
    assert!(
        matches!(applied, ApplyOutcome::AlreadyApplied(_)),
        "{applied:?}"
    );
    assert_eq!(f.order(&no).await.state, TradeState::Success);

    // The initiator signing a refund of another merchant's sub-order is
    // refused by the simulator, as by the real service.
    let as_initiator = MerchantClients::new([(sub.mchid.clone(), initiator.clone())]);
    let refused = as_initiator
        .create(
            &sub.mchid,
            &RefundRequest {
                sub_mchid: None,
                transaction_id: sub.transaction_id.clone(),
                out_trade_no: None,
                out_refund_no: "RFWRONGMERCHANT1".into(),
                reason: None,
                notify_url: None,
                funds_account: None,
                amount: RefundRequestAmount {
                    refund: 1,
                    total: sub.amount,
                    currency: "CNY".into(),
                    from: None,
                },
                goods_detail: None,
            },
        )
        .await
        .expect_err("refused");
    let text = refused.to_string();
    assert!(text.contains("INVALID_REQUEST"), "{text}");

    // Today's bills reconcile clean per merchant: the refunded merchant's
    // has its payment and its refund row; every merchant's has only its own.
    let today = wxpay_combine_core::timefmt::beijing(clock.now())
        .unwrap()
        .date();
    let dir = tempfile::tempdir().unwrap();
    let clients = prepare_merchant_clients(&f.config, initiator, clock.clone())
        .await
        .unwrap();
    let fetchers = bill_fetchers(&f.config, &clients, f.store.clone()).unwrap();
    let mut reconciled = 0;
    for fetcher in &fetchers {
        let job = BillJob {
            date: today,
            kind: BillKind::All,
            gzip: false,
            out: dir.path().join(format!("{}.csv", fetcher.mchid())),
            report: None,
        };
        match fetcher.fetch_merchant(&job).await.unwrap() {
            MerchantOutcome::Empty => continue,
            MerchantOutcome::Reconciled(o) => {
                reconciled += 1;
                assert!(
                    o.report.ok,
                    "{}: {:#?}",
                    fetcher.mchid(),
                    o.report.discrepancies
                );
                let own = order
                    .sub_orders
                    .iter()
                    .filter(|s| s.mchid == fetcher.mchid())
                    .count();
                assert_eq!(o.report.matched, own, "{}", fetcher.mchid());
                let refunds = usize::from(fetcher.mchid() == sub.mchid);
                assert_eq!(o.report.bill.refund_rows, refunds, "{}", fetcher.mchid());
            }
        }
    }
    assert_eq!(reconciled, 3, "one bill per sub-merchant");
    f.stop().await;
}

async fn timed_out_refund_is_resent_with_the_same_number(db: Db) {
    let Some(f) = Flow::start_with_config(
        db,
        |_| {},
        |c| {
            c.wechatpay.api.request_timeout = Duration::from_millis(1000);
            c.wechatpay.api.max_attempts = 1;
        },
    )
    .await
    else {
        return;
    };
    let (no, order) = paid_order(&f).await;
    let sub = &order.sub_orders[0];
    let part = sub.amount / 10;
    let scope = FaultScope::Merchant {
        mchid: sub.mchid.clone(),
    };
    // The simulator processes the refund but answers after the client gave up.
    // It stays PROCESSING there for now, so no refund notification can settle
    // it before the retry (the retry must be what completes it).
    f.sim
        .set_faults(
            scope.clone(),
            Faults {
                api_timeout_share: Some(1.0),
                api_timeout_ms: Some(2500),
                refund_delay_secs: Some(3600),
                ..Faults::default()
            },
        )
        .await
        .unwrap();
    let lost = f
        .refunds
        .refund(refund_of(
            &no,
            &sub.out_trade_no,
            part,
            Some("refund-key-1"),
        ))
        .await
        .expect("stored, outcome unknown");
    assert_eq!(lost.status, RefundStatus::Processing);
    assert_eq!(lost.refund_id, None, "no answer was received");
    f.sim.set_faults(scope, Faults::default()).await.unwrap();

    // The retry with the same key re-sends the same number and body.
    let again = f
        .refunds
        .refund(refund_of(
            &no,
            &sub.out_trade_no,
            part,
            Some("refund-key-1"),
        ))
        .await
        .unwrap();
    assert_eq!(again.out_refund_no, lost.out_refund_no);
    assert!(again.refund_id.is_some(), "accepted this time: {again:?}");
    assert_eq!(f.store.refunds_of_order(&no).await.unwrap().len(), 1);

    // The simulator holds one refund of `part`: the rest is refundable there.
    let rest = f
        .refunds
        .refund(refund_of(
            &no,
            &sub.out_trade_no,
            sub.amount - part,
            Some("refund-key-2"),
        ))
        .await
        .unwrap();
    assert!(
        rest.refund_id.is_some(),
        "the simulator accepted the rest: {rest:?}"
    );
    let calls = f.sim.api_calls().await.unwrap();
    let refund_calls = calls
        .iter()
        .filter(|c| c.endpoint == "refund" && c.mchid.as_deref() == Some(sub.mchid.as_str()))
        .count();
    assert_eq!(refund_calls, 3, "lost, re-sent, rest");
    f.stop().await;
}

async fn partly_refunded_order_is_settled_by_the_worker(db: Db) {
    let Some(f) = Flow::start(db, |o| {
        o.reconcile_interval_secs = 1;
        o.reconcile_after_secs = 3;
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
    let created = alice.create_order(3).await;
    let no = order_no(&created);
    let outcome = f.sim.pay(&pay_params(&created)).await;
    assert_eq!(outcome.err_msg, "get_brand_wcpay_request:ok", "{outcome:?}");
    // Refunded on the merchant platform before the worker looks: WeChat Pay
    // then reports that sub-order REFUND and the others SUCCESS.
    let sub = created["sub_orders"][0]["out_trade_no"].as_str().unwrap();
    f.sim
        .control(json!({"combine_out_trade_no": no, "refund": {"out_trade_no": sub, "amount": 1, "out_refund_no": "RFPLATFORM1"}}))
        .await
        .unwrap();
    f.wait_state(&no, TradeState::Success, Duration::from_secs(20))
        .await;
    assert_eq!(
        transitions_to(&f.events(&no).await, TradeState::Success),
        vec![EventSource::Query]
    );
    f.stop().await;
}

async fn dropped_refund_notification_recovered_by_the_sweep(db: Db) {
    let Some(f) = Flow::start(db, |o| {
        o.reconcile_interval_secs = 1;
        o.reconcile_after_secs = 1;
    })
    .await
    else {
        return;
    };
    let (no, order) = paid_order(&f).await;
    f.sim
        .control(json!({"drop_notifications": true}))
        .await
        .unwrap();
    let sub = &order.sub_orders[2];
    let r = f
        .refunds
        .refund(refund_of(&no, &sub.out_trade_no, 1, None))
        .await
        .unwrap();
    assert_eq!(r.status, RefundStatus::Processing);
    // No notification comes: the sweep queries the refund.
    let done = wait_for(
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async {
            let r = f.store.get_refund(&r.out_refund_no).await.unwrap().unwrap();
            (r.status == RefundStatus::Success).then_some(r)
        },
    )
    .await
    .expect("the sweep settles the refund");
    let events = f.store.refund_events(&done.out_refund_no).await.unwrap();
    assert_eq!(events.last().unwrap().source, "query", "{events:?}");
    f.stop().await;
}
