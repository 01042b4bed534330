//! The `// Bills:` store queries, on SQLite and PostgreSQL alike: sub-orders
//! paid in an instant range (whatever offset their success time was written
//! in) and the lookup of one sub-order by its key.

mod support;

use support::{backend_tests, paid, TestDb, MCHID, SUB_MCHID};
use wxpay_combine::combine::{EventSource, TradeState, Transition};

/// 2024-01-01 00:00 +08:00.
const DAY: i64 = 1_704_038_400;

/// Paid with 1 fen of discount per sub-order, at `times`.
fn pay(no: &str, times: [&str; 2]) -> Transition {
    let mut t = paid(no, EventSource::Query, |i| format!("4200{no}{i}"));
    for (p, time) in t.payments.iter_mut().zip(times) {
        p.payer_amount = p.payer_amount.map(|a| a - 1);
        p.success_time = Some(time.into());
    }
    t
}

async fn paid_sub_orders_are_listed_by_instant(db: &TestDb) {
    let s = &db.store;
    // In the day, written in +08:00 and in UTC (the same instants).
    db.create("IN", DAY - 3600).await;
    s.apply_transition(
        "IN",
        &pay("IN", ["2024-01-01T00:00:00+08:00", "2024-01-01T15:59:59Z"]),
        DAY,
    )
    .await
    .unwrap();
    // On the edges, outside the day: 1 s before, and the next midnight.
    db.create("OUT", DAY - 3600).await;
    s.apply_transition(
        "OUT",
        &pay("OUT", ["2023-12-31T23:59:59+08:00", "2024-01-01T16:00:00Z"]),
        DAY,
    )
    .await
    .unwrap();
    // Not paid.
    db.create("OPEN", DAY - 3600).await;

    let got = s.paid_sub_orders_between(DAY, DAY + 86_400).await.unwrap();
    let keys: Vec<(&str, &str)> = got
        .iter()
        .map(|l| (l.mchid.as_str(), l.out_trade_no.as_str()))
        .collect();
    assert_eq!(keys, [(MCHID, "IN-S1"), (SUB_MCHID, "IN-S2")]);
    let first = &got[0];
    assert_eq!(first.combine_out_trade_no, "IN");
    assert_eq!(first.combine_mchid, MCHID);
    assert_eq!(first.order_state, TradeState::Success);
    assert_eq!((first.amount_fen, first.payer_amount_fen), (100, Some(99)));
    assert_eq!(first.transaction_id.as_deref(), Some("4200IN0"));
    assert_eq!(first.success_unix(), Some(DAY));

    // The neighbouring days get the edge rows.
    let before = s.paid_sub_orders_between(DAY - 86_400, DAY).await.unwrap();
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].out_trade_no, "OUT-S1");
    let after = s
        .paid_sub_orders_between(DAY + 86_400, DAY + 2 * 86_400)
        .await
        .unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].out_trade_no, "OUT-S2");

    // Lookup by key, paid or not.
    let open = s.bill_sub_order(MCHID, "OPEN-S1").await.unwrap().unwrap();
    assert_eq!(open.order_state, TradeState::NotPay);
    assert!(!open.is_paid());
    assert_eq!(open.success_time, None);
    let out = s
        .bill_sub_order(SUB_MCHID, "OUT-S2")
        .await
        .unwrap()
        .unwrap();
    assert!(out.is_paid());
    assert_eq!(out.success_unix(), Some(DAY + 86_400));
    assert!(s
        .bill_sub_order(SUB_MCHID, "OPEN-S1")
        .await
        .unwrap()
        .is_none());
    assert!(s.bill_sub_order(MCHID, "NOPE").await.unwrap().is_none());
}

backend_tests!(paid_sub_orders_are_listed_by_instant);
