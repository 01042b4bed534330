//! Refunds in the store, on SQLite and PostgreSQL alike: the rules are
//! checked with the order locked (two concurrent refunds cannot together
//! exceed a sub-order), a refusal stores nothing, idempotency keys find the
//! same refund, transitions follow the refund state machine and are logged.

mod support;

use std::sync::Arc;
use support::{backend_tests, order, TestDb};
use wxpay_combine::combine::EventSource;
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

backend_tests!(
    concurrent_refunds_cannot_exceed_the_sub_order,
    rules_refuse_and_store_nothing,
    idempotency_keys_find_the_same_refund,
    transitions_follow_the_refund_state_machine,
);
