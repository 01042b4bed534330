//! Refunds in the store, on SQLite and PostgreSQL alike: the rules are
//! checked with the order locked (two concurrent refunds cannot together
//! exceed a sub-order), a refusal stores nothing, idempotency keys find the
//! same refund, transitions follow the refund state machine and are logged;
//! a change into SUCCESS, CLOSED or ABNORMAL writes one outbox event (in the
//! same transaction, sequenced with the order's events) and is announced
//! in-process once.

mod support;

use std::sync::Arc;
use support::{backend_tests, order, TestDb};
use wxpay_combine::combine::EventSource;
use wxpay_combine::events::{
    OrderEventHandler, OrderEventNotice, RefundEventKind, RefundEventNotice,
};
use wxpay_combine::store::{
    NewRefund, RefundApplied, RefundCreateError, RefundCreated, RefundSource, RefundUpdate, Store,
};
use wxpay_combine_core::refund::{RefundRule, RefundStatus};

// 2024-04-25T10:00:00+08:00 (the support payments' success time) + 1 h.
const PAID_AT: i64 = 1_714_010_400;
const NOW: i64 = PAID_AT + 3600;

async fn paid_order(s: &Arc<dyn Store>, no: &str) {
    s.create_order(&order(no, PAID_AT - 60)).await.unwrap();
    let t = support::paid(no, EventSource::Query, |i| format!("4200000{i}{no}"));
    s.apply_transition(no, &t, PAID_AT).await.unwrap();
}

fn new_refund(no: &str, refund_no: &str, amount: i64) -> NewRefund {
    NewRefund {
        out_refund_no: refund_no.into(),
        combine_out_trade_no: no.into(),
        out_trade_no: format!("{no}-S2"), // 250 fen
        amount,
        reason: Some("退货".into()),
        idempotency: None,
    }
}

async fn concurrent_refunds_cannot_exceed_the_sub_order(db: &TestDb) {
    let s = &db.store;
    paid_order(s, "RF001").await;
    // Two refunds of 60 % each, at once: exactly one is accepted.
    let (ra, rb) = (
        new_refund("RF001", "RFA", 150),
        new_refund("RF001", "RFB", 150),
    );
    let (a, b) = tokio::join!(s.create_refund(&ra, NOW), s.create_refund(&rb, NOW));
    let accepted = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Ok(RefundCreated::Created(_))))
        .count();
    let refused = [&a, &b]
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(RefundCreateError::Refused(
                    RefundRule::ExceedsRefundable { .. }
                ))
            )
        })
        .count();
    assert_eq!((accepted, refused), (1, 1), "{a:?} {b:?}");
    let stored = s.refunds_of_order("RF001").await.unwrap();
    assert_eq!(stored.len(), 1, "a refusal stores nothing");
    let r = &stored[0];
    assert_eq!(
        (r.status, r.amount, r.total, r.mchid.as_str()),
        (RefundStatus::Processing, 150, 250, support::SUB_MCHID)
    );
    assert_eq!(r.transaction_id, "42000001RF001");
    assert_eq!(r.refund_id, None, "not yet accepted by WeChat Pay");
}

async fn rules_refuse_and_store_nothing(db: &TestDb) {
    let s = &db.store;
    // Unpaid.
    s.create_order(&order("RF002", NOW)).await.unwrap();
    assert!(matches!(
        s.create_refund(&new_refund("RF002", "RFC", 1), NOW).await,
        Err(RefundCreateError::Refused(RefundRule::NotPaid))
    ));
    paid_order(s, "RF003").await;
    assert!(matches!(
        s.create_refund(&new_refund("RF003", "RFD", 0), NOW).await,
        Err(RefundCreateError::Refused(RefundRule::AmountTooSmall(0)))
    ));
    assert!(matches!(
        s.create_refund(&new_refund("RF003", "RFE", 251), NOW).await,
        Err(RefundCreateError::Refused(
            RefundRule::ExceedsRefundable { .. }
        ))
    ));
    assert!(matches!(
        s.create_refund(&new_refund("RF003", "RFF", 1), PAID_AT + 366 * 86400)
            .await,
        Err(RefundCreateError::Refused(RefundRule::WindowExpired))
    ));
    let mut unknown = new_refund("RF003", "RFG", 1);
    unknown.out_trade_no = "nope".into();
    assert!(matches!(
        s.create_refund(&unknown, NOW).await,
        Err(RefundCreateError::UnknownSubOrder { .. })
    ));
    assert!(matches!(
        s.create_refund(&new_refund("RF404", "RFH", 1), NOW).await,
        Err(RefundCreateError::UnknownOrder(_))
    ));
    assert!(s.refunds_of_order("RF002").await.unwrap().is_empty());
    assert!(s.refunds_of_order("RF003").await.unwrap().is_empty());
}

async fn idempotency_keys_find_the_same_refund(db: &TestDb) {
    let s = &db.store;
    paid_order(s, "RF004").await;
    let mut first = new_refund("RF004", "RFI", 100);
    first.idempotency = Some(("key-1".into(), "digest-1".into()));
    let created = s.create_refund(&first, NOW).await.unwrap();
    assert!(matches!(created, RefundCreated::Created(_)));
    // A retry generates another number but finds the first refund.
    let mut again = first.clone();
    again.out_refund_no = "RFJ".into();
    match s.create_refund(&again, NOW + 5).await.unwrap() {
        RefundCreated::Existing(r) => assert_eq!(r.out_refund_no, "RFI"),
        other => panic!("{other:?}"),
    }
    let mut other = again.clone();
    other.idempotency = Some(("key-1".into(), "digest-2".into()));
    assert!(matches!(
        s.create_refund(&other, NOW).await,
        Err(RefundCreateError::KeyReused)
    ));
    assert_eq!(s.refunds_of_order("RF004").await.unwrap().len(), 1);
}

fn update(status: RefundStatus, source: RefundSource) -> RefundUpdate {
    RefundUpdate {
        status,
        refund_id: Some("50300000000000000001".into()),
        user_received_account: Some("支付用户零钱".into()),
        success_time: (status == RefundStatus::Success).then(|| "2024-04-25T12:00:00+08:00".into()),
        source,
        notification_id: None,
        detail: format!("{} reports {status}", source.as_str()),
    }
}

async fn transitions_follow_the_refund_state_machine(db: &TestDb) {
    let s = &db.store;
    paid_order(s, "RF005").await;
    s.create_refund(&new_refund("RF005", "RFK", 200), NOW)
        .await
        .unwrap();
    // Accepted: refund_id filled in, still PROCESSING.
    let r = s
        .update_refund(
            "RFK",
            &update(RefundStatus::Processing, RefundSource::Api),
            NOW + 1,
        )
        .await
        .unwrap();
    assert!(matches!(r, RefundApplied::Unchanged(ref r) if r.refund_id.is_some()));
    // CLOSED frees the amount.
    let r = s
        .update_refund(
            "RFK",
            &update(RefundStatus::Closed, RefundSource::Notify),
            NOW + 2,
        )
        .await
        .unwrap();
    assert!(
        matches!(r, RefundApplied::Changed(RefundStatus::Processing, ref r) if r.status == RefundStatus::Closed)
    );
    assert!(matches!(
        s.create_refund(&new_refund("RF005", "RFL", 250), NOW + 3)
            .await,
        Ok(RefundCreated::Created(_))
    ));
    // SUCCESS is final; CLOSED after it is illegal and writes nothing.
    s.update_refund(
        "RFL",
        &update(RefundStatus::Success, RefundSource::Query),
        NOW + 4,
    )
    .await
    .unwrap();
    let r = s
        .update_refund(
            "RFL",
            &update(RefundStatus::Closed, RefundSource::Notify),
            NOW + 5,
        )
        .await
        .unwrap();
    assert!(matches!(r, RefundApplied::Illegal(ref r) if r.status == RefundStatus::Success));
    // A repeat is unchanged.
    let r = s
        .update_refund(
            "RFL",
            &update(RefundStatus::Success, RefundSource::Notify),
            NOW + 6,
        )
        .await
        .unwrap();
    assert!(matches!(r, RefundApplied::Unchanged(_)));
    let events = s.refund_events("RFL").await.unwrap();
    let seen: Vec<(Option<&str>, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e.from_status.as_deref(),
                e.to_status.as_str(),
                e.source.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (None, "PROCESSING", "create"),
            (Some("PROCESSING"), "SUCCESS", "query")
        ]
    );
    assert!(s
        .update_refund(
            "RF-none",
            &update(RefundStatus::Success, RefundSource::Query),
            NOW
        )
        .await
        .is_err());
    // Only RFL's sibling is gone from the PROCESSING list.
    assert!(s
        .processing_refunds(NOW + 100, 10)
        .await
        .unwrap()
        .iter()
        .all(|r| r.combine_out_trade_no != "RF005"));
}

/// Forwards refund notices (and counts order notices) from the store's hub.
struct Collect {
    refunds: tokio::sync::mpsc::UnboundedSender<RefundEventNotice>,
    orders: Arc<std::sync::atomic::AtomicUsize>,
}

#[async_trait::async_trait]
impl OrderEventHandler for Collect {
    async fn on_event(&self, _: &OrderEventNotice) {
        self.orders
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    async fn on_refund(&self, e: &RefundEventNotice) {
        let _ = self.refunds.send(e.clone());
    }
}

/// The outbox events of an order as (seq, kind, payload), by seq.
async fn outbox_of(s: &Arc<dyn Store>, no: &str) -> Vec<(i64, String, serde_json::Value)> {
    let mut rows: Vec<_> = s
        .pending_outbox_events(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.combine_out_trade_no == no)
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(&e.payload).unwrap();
            assert_eq!(v["id"], e.id.as_str(), "the payload names its row");
            assert_eq!(v["sequence"], e.seq, "the payload's sequence is the row's");
            (e.seq, e.kind, v)
        })
        .collect();
    rows.sort_by_key(|r| r.0);
    rows
}

async fn refund_changes_write_outbox_events_and_announce_once(db: &TestDb) {
    let s = &db.store;
    let hub = s.event_hub().expect("both backends have a hub").clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let orders = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    hub.add_handler(Arc::new(Collect {
        refunds: tx,
        orders: orders.clone(),
    }));
    let mut subscribed = hub.subscribe_refunds();
    let closures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // A plain order closure still compiles and never sees refund events.
    let seen = closures.clone();
    hub.add_handler(Arc::new(move |_: &OrderEventNotice| {
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }));

    paid_order(s, "RF006").await;
    assert_eq!(outbox_of(s, "RF006").await.len(), 1, "the payment's event");
    s.create_refund(&new_refund("RF006", "RFM", 100), NOW)
        .await
        .unwrap();
    // PROCESSING (created, then accepted) writes nothing.
    s.update_refund(
        "RFM",
        &update(RefundStatus::Processing, RefundSource::Api),
        NOW + 1,
    )
    .await
    .unwrap();
    assert_eq!(
        outbox_of(s, "RF006").await.len(),
        1,
        "PROCESSING is no event"
    );

    // SUCCESS: exactly one refund.succeeded, after the payment's event.
    s.update_refund(
        "RFM",
        &update(RefundStatus::Success, RefundSource::Notify),
        NOW + 2,
    )
    .await
    .unwrap();
    let events = outbox_of(s, "RF006").await;
    assert_eq!(events.len(), 2, "{events:?}");
    let (seq, kind, v) = &events[1];
    assert_eq!((*seq, kind.as_str()), (2, "refund_succeeded"));
    assert_eq!(v["type"], "refund.succeeded");
    assert_eq!(v["created_at"], "2024-04-25T03:00:02Z");
    assert_eq!(
        v["refund"],
        serde_json::json!({
            "combine_out_trade_no": "RF006",
            "out_trade_no": "RF006-S2",
            "mchid": support::SUB_MCHID,
            "out_refund_no": "RFM",
            "refund_id": "50300000000000000001",
            "amount": 100,
            "status": "SUCCESS",
            "success_time": "2024-04-25T12:00:00+08:00",
            "user_received_account": "支付用户零钱",
        })
    );
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    // serde_json sorts the keys; the field order is outbox.rs's unit test's.
    assert_eq!(
        keys,
        ["created_at", "id", "refund", "sequence", "type"],
        "the order events' envelope"
    );
    // A repeated SUCCESS (another notification) writes nothing.
    let r = s
        .update_refund(
            "RFM",
            &update(RefundStatus::Success, RefundSource::Notify),
            NOW + 3,
        )
        .await
        .unwrap();
    assert!(matches!(r, RefundApplied::Unchanged(_)));
    assert_eq!(
        outbox_of(s, "RF006").await.len(),
        2,
        "a repeat writes nothing"
    );

    // CLOSED and ABNORMAL write theirs; ABNORMAL may still succeed.
    s.create_refund(&new_refund("RF006", "RFN", 100), NOW + 4)
        .await
        .unwrap();
    s.update_refund(
        "RFN",
        &update(RefundStatus::Closed, RefundSource::Query),
        NOW + 5,
    )
    .await
    .unwrap();
    s.create_refund(&new_refund("RF006", "RFO", 150), NOW + 6)
        .await
        .unwrap();
    for (status, at) in [
        (RefundStatus::Abnormal, NOW + 7),
        (RefundStatus::Abnormal, NOW + 8),
        (RefundStatus::Success, NOW + 9),
    ] {
        s.update_refund("RFO", &update(status, RefundSource::Notify), at)
            .await
            .unwrap();
    }
    let events = outbox_of(s, "RF006").await;
    let summary: Vec<(i64, &str, &str, &str)> = events
        .iter()
        .map(|(seq, kind, v)| {
            (
                *seq,
                kind.as_str(),
                v["type"].as_str().unwrap(),
                v["refund"]["out_refund_no"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "paid", "order.paid", "-"),
            (2, "refund_succeeded", "refund.succeeded", "RFM"),
            (3, "refund_closed", "refund.closed", "RFN"),
            (4, "refund_abnormal", "refund.abnormal", "RFO"),
            (5, "refund_succeeded", "refund.succeeded", "RFO"),
        ]
    );
    assert_eq!(events[2].2["refund"]["status"], "CLOSED");
    assert_eq!(
        events[2].2["refund"]["success_time"],
        serde_json::Value::Null
    );
    assert_eq!(events[3].2["refund"]["status"], "ABNORMAL");

    // In-process: each change once, in commit order, to handlers and
    // subscribers alike.
    let expected = [
        ("RFM", RefundEventKind::Succeeded, RefundStatus::Processing),
        ("RFN", RefundEventKind::Closed, RefundStatus::Processing),
        ("RFO", RefundEventKind::Abnormal, RefundStatus::Processing),
        ("RFO", RefundEventKind::Succeeded, RefundStatus::Abnormal),
    ];
    for (no, kind, previous) in expected {
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .expect("the handler is called")
            .unwrap();
        assert_eq!(
            (got.out_refund_no.as_str(), got.kind, got.previous),
            (no, kind, previous)
        );
        assert_eq!(got.combine_out_trade_no, "RF006");
        let sub = subscribed.try_recv().expect("the subscriber got it too");
        assert_eq!(sub, got);
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(rx.try_recv().is_err(), "a repeat announces nothing");
    assert!(subscribed.try_recv().is_err());
    // Refund events never reach `on_event` (the store itself announces no
    // order change: its callers do, see payment.rs).
    assert_eq!(orders.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(closures.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// Two refunds of one order settled at the same moment: each event gets
/// its own sequence number (the order's lock serialises the numbering).
async fn concurrent_refund_events_are_sequenced(db: &TestDb) {
    let s = &db.store;
    paid_order(s, "RF007").await;
    for no in ["RFP", "RFQ", "RFR"] {
        s.create_refund(&new_refund("RF007", no, 50), NOW)
            .await
            .unwrap();
    }
    let succeed = |no: &'static str| {
        let s = s.clone();
        async move {
            s.update_refund(
                no,
                &update(RefundStatus::Success, RefundSource::Notify),
                NOW + 1,
            )
            .await
        }
    };
    let (a, b, c) = tokio::join!(succeed("RFP"), succeed("RFQ"), succeed("RFR"));
    for r in [a, b, c] {
        assert!(matches!(r, Ok(RefundApplied::Changed(..))), "{r:?}");
    }
    let seqs: Vec<i64> = outbox_of(s, "RF007").await.iter().map(|e| e.0).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
}

backend_tests!(
    concurrent_refunds_cannot_exceed_the_sub_order,
    rules_refuse_and_store_nothing,
    idempotency_keys_find_the_same_refund,
    transitions_follow_the_refund_state_machine,
    refund_changes_write_outbox_events_and_announce_once,
    concurrent_refund_events_are_sequenced,
);
