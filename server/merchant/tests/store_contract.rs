//! The `Store` contract, run against SQLite and PostgreSQL alike.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use support::{backend_tests, order, transition, Kind, TestDb, MCHID, SUB_MCHID};
use wxpay_combine::combine::{
    ApplyOutcome, EventSource, NotificationRef, RejectReason, TradeState, Transition,
};
use wxpay_combine::store::{self, Store, StoreError};

const T0: i64 = 1_714_000_000;

fn paid(no: &str, notification: Option<(&str, &str)>) -> Transition {
    let source = if notification.is_some() {
        EventSource::Notify
    } else {
        EventSource::Query
    };
    Transition {
        notification: notification.map(|(id, sha)| NotificationRef {
            id: id.into(),
            body_sha256: sha.into(),
        }),
        ..support::paid(no, source, |i| format!("42000000{i}"))
    }
}

fn to(state: TradeState, source: EventSource) -> Transition {
    transition(state, source, &format!("to {state}"))
}

async fn create_and_get_round_trip(db: &TestDb) {
    let s = &db.store;
    let mut o = order("RT001", T0);
    o.sub_orders[0].description = "商品 — 描述".into();
    s.create_order(&o).await.unwrap();
    let got = s.get_order("RT001").await.unwrap().expect("stored");
    assert_eq!(got, o);
    assert_eq!(got.total_amount(), 350);
    assert_eq!(s.get_order("RT999").await.unwrap(), None);

    s.set_prepay("RT001", "wx201410272009395522657a690389285100", T0 + 7200)
        .await
        .unwrap();
    s.touch_notified("RT001", T0 + 5).await.unwrap();
    let got = s.get_order("RT001").await.unwrap().unwrap();
    assert_eq!(
        got.prepay_id.as_deref(),
        Some("wx201410272009395522657a690389285100")
    );
    assert_eq!(got.prepay_expires_at, Some(T0 + 7200));
    assert_eq!(got.notified_at, Some(T0 + 5));
    assert!(matches!(
        s.set_prepay("RT999", "x", 1).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.touch_notified("RT999", 1).await,
        Err(StoreError::NotFound(_))
    ));

    let events = s.events("RT001").await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].source, EventSource::Create);
    assert_eq!(events[0].from_state, None);
    assert_eq!(events[0].to_state, TradeState::NotPay);
    s.ping().await.unwrap();

    // The data survives reopening (another pool on the same database).
    let again = db.open_another().await;
    assert_eq!(
        again.get_order("RT001").await.unwrap().unwrap().prepay_id,
        got.prepay_id
    );
}

async fn duplicate_order_numbers_are_refused(db: &TestDb) {
    let s = &db.store;
    db.create("DUP01", T0).await;
    let again = s.create_order(&order("DUP01", T0 + 1)).await;
    assert!(
        matches!(again, Err(StoreError::Duplicate(ref n)) if n == "DUP01"),
        "{again:?}"
    );

    // A new order number reusing another order's sub-order number.
    let mut clash = order("DUP02", T0);
    clash.sub_orders[1].out_trade_no = "DUP01-S2".into();
    let r = s.create_order(&clash).await;
    assert!(
        matches!(r, Err(StoreError::Duplicate(ref n)) if n.contains("DUP01-S2")),
        "{r:?}"
    );
    // Nothing of the refused order was stored.
    assert_eq!(s.get_order("DUP02").await.unwrap(), None);
    assert!(s.events("DUP02").await.unwrap().is_empty());

    // Invalid orders never reach the database.
    let mut zero = order("BAD01", T0);
    zero.sub_orders[0].amount = 0;
    assert!(matches!(
        s.create_order(&zero).await,
        Err(StoreError::Invalid(_))
    ));
    let mut paid_already = order("BAD02", T0);
    paid_already.state = TradeState::Success;
    assert!(matches!(
        s.create_order(&paid_already).await,
        Err(StoreError::Invalid(_))
    ));
    let mut twice = order("BAD03", T0);
    twice.sub_orders[1] = twice.sub_orders[0].clone();
    assert!(matches!(
        s.create_order(&twice).await,
        Err(StoreError::Invalid(_))
    ));
    let mut none = order("BAD04", T0);
    none.sub_orders.clear();
    assert!(matches!(
        s.create_order(&none).await,
        Err(StoreError::Invalid(_))
    ));
}

async fn transitions_follow_the_state_machine(db: &TestDb) {
    let s = &db.store;
    db.create("TR001", T0).await;

    let t = paid("TR001", None);
    let first = s.apply_transition("TR001", &t, T0 + 10).await.unwrap();
    let ApplyOutcome::Applied(o) = first else {
        panic!("{first:?}")
    };
    assert_eq!(o.state, TradeState::Success);
    assert_eq!(o.updated_at, T0 + 10);
    assert_eq!(o.sub_orders[0].transaction_id.as_deref(), Some("420000000"));
    assert_eq!(o.sub_orders[1].transaction_id.as_deref(), Some("420000001"));
    assert_eq!(o.sub_orders[1].payer_amount, Some(250));
    assert_eq!(
        s.get_order("TR001").await.unwrap().unwrap(),
        o,
        "returned order = stored order"
    );

    let again = s.apply_transition("TR001", &t, T0 + 11).await.unwrap();
    assert!(
        matches!(again, ApplyOutcome::AlreadyApplied(ref a) if a == &o),
        "{again:?}"
    );

    // SUCCESS → CLOSED is refused.
    let r = s
        .apply_transition(
            "TR001",
            &to(TradeState::Closed, EventSource::Close),
            T0 + 12,
        )
        .await
        .unwrap();
    assert!(
        matches!(
            r,
            ApplyOutcome::Rejected {
                reason: RejectReason::IllegalTransition {
                    from: TradeState::Success,
                    to: TradeState::Closed
                },
                ..
            }
        ),
        "{r:?}"
    );

    // A different transaction id for a paid sub-order is refused.
    let mut other = paid("TR001", None);
    other.to = TradeState::Refund;
    other.payments[0].transaction_id = Some("499999".into());
    let r = s.apply_transition("TR001", &other, T0 + 13).await.unwrap();
    assert!(
        matches!(
            r,
            ApplyOutcome::Rejected {
                reason: RejectReason::TransactionIdChanged { .. },
                ..
            }
        ),
        "{r:?}"
    );

    // SUCCESS → REFUND is legal.
    let r = s
        .apply_transition(
            "TR001",
            &to(TradeState::Refund, EventSource::Query),
            T0 + 14,
        )
        .await
        .unwrap();
    assert!(matches!(r, ApplyOutcome::Applied(ref o) if o.state == TradeState::Refund));
    // Facts are kept when a later answer omits them.
    assert_eq!(
        r.order().sub_orders[0].transaction_id.as_deref(),
        Some("420000000")
    );

    // CLOSED → SUCCESS is refused and changes nothing.
    db.create("TR002", T0).await;
    let r = s
        .apply_transition(
            "TR002",
            &to(TradeState::UserPaying, EventSource::Query),
            T0 + 1,
        )
        .await
        .unwrap();
    assert!(matches!(r, ApplyOutcome::Applied(_)));
    let r = s
        .apply_transition(
            "TR002",
            &to(TradeState::Closed, EventSource::Expiry),
            T0 + 2,
        )
        .await
        .unwrap();
    assert!(matches!(r, ApplyOutcome::Applied(_)));
    let before = s.get_order("TR002").await.unwrap().unwrap();
    let r = s
        .apply_transition("TR002", &paid("TR002", Some(("N-TR002", "aa"))), T0 + 3)
        .await
        .unwrap();
    assert!(
        matches!(
            r,
            ApplyOutcome::Rejected {
                reason: RejectReason::IllegalTransition {
                    from: TradeState::Closed,
                    to: TradeState::Success
                },
                ..
            }
        ),
        "{r:?}"
    );
    assert_eq!(s.get_order("TR002").await.unwrap().unwrap(), before);
    // The refused notification was not recorded: the same id can still be
    // delivered (and is refused the same way).
    let r = s
        .apply_transition("TR002", &paid("TR002", Some(("N-TR002", "bb"))), T0 + 4)
        .await
        .unwrap();
    assert!(matches!(
        r,
        ApplyOutcome::Rejected {
            reason: RejectReason::IllegalTransition { .. },
            ..
        }
    ));

    // A payment for a sub-order the order does not have.
    db.create("TR003", T0).await;
    let mut stranger = paid("TR003", None);
    stranger.payments[1].mchid = "1900000999".into();
    let r = s
        .apply_transition("TR003", &stranger, T0 + 1)
        .await
        .unwrap();
    assert!(matches!(
        r,
        ApplyOutcome::Rejected {
            reason: RejectReason::UnknownSubOrder { .. },
            ..
        }
    ));
    assert_eq!(
        s.get_order("TR003").await.unwrap().unwrap().state,
        TradeState::NotPay
    );

    // Unknown order.
    let r = s.apply_transition("TR404", &paid("TR404", None), T0).await;
    assert!(matches!(r, Err(StoreError::NotFound(_))), "{r:?}");

    let kinds: Vec<_> = s
        .events("TR002")
        .await
        .unwrap()
        .iter()
        .map(|e| (e.from_state, e.to_state, e.source))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (None, TradeState::NotPay, EventSource::Create),
            (
                Some(TradeState::NotPay),
                TradeState::UserPaying,
                EventSource::Query
            ),
            (
                Some(TradeState::UserPaying),
                TradeState::Closed,
                EventSource::Expiry
            ),
        ]
    );
    assert_eq!(
        s.events("TR001").await.unwrap().len(),
        3,
        "create, success, refund"
    );
}

async fn concurrent_identical_applies_change_once(db: &TestDb) {
    db.create("CC001", T0).await;
    let t = Arc::new(paid("CC001", Some(("EV-CC001", "sha-1"))));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (s, t) = (db.store.clone(), t.clone());
            tokio::spawn(async move { s.apply_transition("CC001", &t, T0 + 20).await })
        })
        .collect();
    let mut applied = 0;
    let mut repeats = 0;
    for task in tasks {
        match task
            .await
            .unwrap()
            .expect("no database error (no SQLITE_BUSY, no deadlock)")
        {
            ApplyOutcome::Applied(_) => applied += 1,
            ApplyOutcome::AlreadyApplied(_) => repeats += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((applied, repeats), (1, 49));
    let events = db.store.events("CC001").await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.source == EventSource::Notify)
            .count(),
        1
    );
    assert_eq!(events.len(), 2);

    // The same with different notification ids (WeChat Pay and a query
    // racing): still one transition.
    db.create("CC002", T0).await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let s = db.store.clone();
            let t = if i % 2 == 0 {
                paid("CC002", None)
            } else {
                paid("CC002", Some((&format!("EV-{i}"), "x")))
            };
            tokio::spawn(async move { s.apply_transition("CC002", &t, T0 + 20).await })
        })
        .collect();
    let mut applied = 0;
    for task in tasks {
        if matches!(task.await.unwrap().unwrap(), ApplyOutcome::Applied(_)) {
            applied += 1;
        }
    }
    assert_eq!(applied, 1);
    assert_eq!(db.store.events("CC002").await.unwrap().len(), 2);
}

async fn replayed_notification_id_with_other_body_is_refused(db: &TestDb) {
    let s = &db.store;
    db.create("RP001", T0).await;
    let r = s
        .apply_transition("RP001", &paid("RP001", Some(("EV-1", "digest-a"))), T0 + 1)
        .await
        .unwrap();
    assert!(matches!(r, ApplyOutcome::Applied(_)));
    let before = s.get_order("RP001").await.unwrap().unwrap();

    let same = s
        .apply_transition("RP001", &paid("RP001", Some(("EV-1", "digest-a"))), T0 + 2)
        .await
        .unwrap();
    assert!(matches!(same, ApplyOutcome::AlreadyApplied(_)));
    // The same id with another body but the same transaction (WeChat Pay
    // re-encrypting a retry) is acknowledged without writing.
    let reencrypted = s
        .apply_transition("RP001", &paid("RP001", Some(("EV-1", "digest-b"))), T0 + 3)
        .await
        .unwrap();
    assert!(
        matches!(reencrypted, ApplyOutcome::AlreadyApplied(_)),
        "{reencrypted:?}"
    );
    // With another transaction it is a replay.
    let other_txn = Transition {
        notification: Some(NotificationRef {
            id: "EV-1".into(),
            body_sha256: "digest-c".into(),
        }),
        ..support::paid("RP001", EventSource::Notify, |i| format!("43000000{i}"))
    };
    let other = s
        .apply_transition("RP001", &other_txn, T0 + 3)
        .await
        .unwrap();
    assert!(
        matches!(other, ApplyOutcome::Rejected { reason: RejectReason::NotificationReplayed { ref id }, .. } if id == "EV-1"),
        "{other:?}"
    );

    // The id used for another order is a replay too.
    db.create("RP002", T0).await;
    let cross = s
        .apply_transition("RP002", &paid("RP002", Some(("EV-1", "digest-a"))), T0 + 4)
        .await
        .unwrap();
    assert!(matches!(
        cross,
        ApplyOutcome::Rejected {
            reason: RejectReason::NotificationReplayed { .. },
            ..
        }
    ));
    assert_eq!(
        s.get_order("RP002").await.unwrap().unwrap().state,
        TradeState::NotPay
    );

    // A new id for a state already reached is acknowledged, and then
    // guarded against replays like the first.
    let dup = s
        .apply_transition("RP001", &paid("RP001", Some(("EV-2", "digest-c"))), T0 + 5)
        .await
        .unwrap();
    assert!(matches!(dup, ApplyOutcome::AlreadyApplied(_)));
    let dup2 = Transition {
        notification: Some(NotificationRef {
            id: "EV-2".into(),
            body_sha256: "digest-d".into(),
        }),
        ..support::paid("RP001", EventSource::Notify, |i| format!("43000000{i}"))
    };
    let dup2 = s.apply_transition("RP001", &dup2, T0 + 6).await.unwrap();
    assert!(matches!(
        dup2,
        ApplyOutcome::Rejected {
            reason: RejectReason::NotificationReplayed { .. },
            ..
        }
    ));

    assert_eq!(s.get_order("RP001").await.unwrap().unwrap(), before);
    assert_eq!(s.events("RP001").await.unwrap().len(), 2);
}

async fn claims_are_exclusive_and_leased(db: &TestDb) {
    let a = db.store.clone();
    let b = db.open_another().await;
    let mut all = HashSet::new();
    for i in 0..40 {
        let no = format!("CL{i:03}");
        db.create(&no, T0 + i).await;
        all.insert(no);
    }
    // Not due yet: created after `created_before`.
    db.create("CLNEW", T0 + 500).await;
    // Final orders are never claimed.
    db.create("CLPAID", T0).await;
    a.apply_transition("CLPAID", &paid("CLPAID", None), T0 + 1)
        .await
        .unwrap();

    let now = T0 + 100;
    let claim = |s: Arc<dyn Store>| async move {
        let mut got = Vec::new();
        loop {
            let batch = s
                .claim_open_orders(T0 + 60, now, now + 600, 3)
                .await
                .expect("claim");
            if batch.is_empty() {
                return got;
            }
            got.extend(batch.into_iter().map(|o| o.combine_out_trade_no));
            tokio::task::yield_now().await;
        }
    };
    let (x, y) = tokio::join!(
        tokio::spawn(claim(a.clone())),
        tokio::spawn(claim(b.clone()))
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    let xs: HashSet<_> = x.iter().cloned().collect();
    let ys: HashSet<_> = y.iter().cloned().collect();
    assert_eq!(xs.len(), x.len(), "no order twice to one claimer");
    assert!(
        xs.is_disjoint(&ys),
        "an order claimed by both: {:?}",
        xs.intersection(&ys).collect::<Vec<_>>()
    );
    let union: HashSet<_> = xs.union(&ys).cloned().collect();
    assert_eq!(union, all, "every due open order claimed exactly once");
    if db.kind == Kind::Postgres {
        // Both instances did work (not a guarantee in general, but with 14
        // rounds each side and yields it always happens; a failure here
        // would hint at one side blocking instead of skipping).
        eprintln!("claimer A took {}, claimer B took {}", x.len(), y.len());
    }

    // Claimed orders come back complete, oldest first.
    let mut s = db
        .open_another()
        .await
        .claim_open_orders(T0 + 60, now + 600, now + 1200, 5)
        .await
        .unwrap();
    assert_eq!(s.len(), 5, "leases lapsed at now + 600");
    assert_eq!(s[0].combine_out_trade_no, "CL000");
    assert_eq!(s[0].sub_orders.len(), 2);
    s.sort_by_key(|o| o.created_at);
    assert_eq!(s[4].combine_out_trade_no, "CL004");

    // set_lease postpones one order.
    a.set_lease("CL005", now + 5000).await.unwrap();
    let next = a
        .claim_open_orders(T0 + 60, now + 1200, now + 1300, 100)
        .await
        .unwrap();
    let names: HashSet<_> = next.into_iter().map(|o| o.combine_out_trade_no).collect();
    assert!(!names.contains("CL005") && names.contains("CL006") && names.contains("CL000"));
    assert!(!names.contains("CLPAID") && !names.contains("CLNEW"));
    assert!(matches!(
        a.set_lease("NOPE", 1).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn events_are_append_only_and_ordered(db: &TestDb) {
    let s = &db.store;
    db.create("EV001", T0).await;
    s.apply_transition(
        "EV001",
        &to(TradeState::UserPaying, EventSource::Query),
        T0 + 1,
    )
    .await
    .unwrap();
    s.apply_transition("EV001", &to(TradeState::NotPay, EventSource::Query), T0 + 2)
        .await
        .unwrap();
    s.apply_transition("EV001", &paid("EV001", Some(("EV-X", "d"))), T0 + 3)
        .await
        .unwrap();
    s.apply_transition("EV001", &to(TradeState::Refund, EventSource::Query), T0 + 4)
        .await
        .unwrap();
    let events = s.events("EV001").await.unwrap();
    let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    assert_eq!(
        events.iter().map(|e| e.at).collect::<Vec<_>>(),
        vec![T0, T0 + 1, T0 + 2, T0 + 3, T0 + 4]
    );
    assert_eq!(
        events.iter().map(|e| e.to_state).collect::<Vec<_>>(),
        vec![
            TradeState::NotPay,
            TradeState::UserPaying,
            TradeState::NotPay,
            TradeState::Success,
            TradeState::Refund
        ]
    );
    for w in events.windows(2) {
        assert_eq!(
            w[1].from_state,
            Some(w[0].to_state),
            "each event starts where the last ended"
        );
    }
    assert!(events.iter().all(|e| e.combine_out_trade_no == "EV001"));

    // The database itself refuses to change or remove history.
    let upd = db.raw_execute("UPDATE order_events SET detail = 'x'").await;
    assert!(upd.is_err(), "UPDATE of order_events must fail: {upd:?}");
    let del = db.raw_execute("DELETE FROM order_events").await;
    assert!(del.is_err(), "DELETE from order_events must fail: {del:?}");
    assert_eq!(s.events("EV001").await.unwrap(), events);
}

async fn connect_understands_urls(db: &TestDb) {
    if db.kind == Kind::Sqlite {
        let dir = std::env::temp_dir().join(format!("wxpay-url-{}", uuid::Uuid::new_v4().simple()));
        for (i, url) in [
            format!("sqlite:{}/a/one.db", dir.display()),
            format!("sqlite://{}/b/two.db", dir.display()),
            format!("{}/c/three.db", dir.display()),
        ]
        .iter()
        .enumerate()
        {
            let s = store::connect(url)
                .await
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            s.create_order(&order(&format!("U{i}"), T0)).await.unwrap();
        }
        assert!(
            dir.join("a/one.db").exists()
                && dir.join("b/two.db").exists()
                && dir.join("c/three.db").exists()
        );
        let mem = store::connect("sqlite::memory:").await.unwrap();
        mem.create_order(&order("M1", T0)).await.unwrap();
        assert!(mem.get_order("M1").await.unwrap().is_some());
        let _ = std::fs::remove_dir_all(dir);
    }
    for bad in ["mysql://root@127.0.0.1/x", "http://127.0.0.1/", ""] {
        assert!(
            matches!(
                store::connect(bad).await,
                Err(StoreError::UnsupportedUrl(_))
            ),
            "{bad}"
        );
    }
    // The suite's own store came from store::connect with this backend's URL.
    db.store.ping().await.unwrap();
    let _ = (MCHID, SUB_MCHID);
}

async fn an_oauth_state_is_consumed_once(db: &TestDb) {
    let state = format!("{:064x}", uuid::Uuid::new_v4().as_u128());
    let other = format!("{:064x}", uuid::Uuid::new_v4().as_u128());
    let s = &db.store;
    assert!(s.consume_oauth_state(&state, T0 + 600, T0).await.unwrap());
    assert!(!s
        .consume_oauth_state(&state, T0 + 600, T0 + 1)
        .await
        .unwrap());
    assert!(s
        .consume_oauth_state(&other, T0 + 600, T0 + 1)
        .await
        .unwrap());
    // Concurrent uses of a fresh state: exactly one wins.
    let fresh = format!("{:064x}", uuid::Uuid::new_v4().as_u128());
    let tries = (0..8).map(|_| s.consume_oauth_state(&fresh, T0 + 600, T0));
    let wins = futures_util::future::join_all(tries)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(wins, 1);
    // Once expired, the row is dropped (its cookie is void by then anyway).
    assert!(s
        .consume_oauth_state(&state, T0 + 1800, T0 + 601)
        .await
        .unwrap());
}

async fn an_order_number_belongs_to_one_idempotency_key(db: &TestDb) {
    let s = &db.store;
    let record = |key: &str| store::IdempotencyRecord {
        key: key.into(),
        request_sha256: "ab".repeat(32),
        combine_out_trade_no: "IK001".into(),
        created_at: T0,
    };
    let first = s.record_idempotency_key(&record("key-1")).await.unwrap();
    assert_eq!(first, record("key-1"));
    // The same key again finds its record.
    assert_eq!(
        s.record_idempotency_key(&record("key-1")).await.unwrap(),
        record("key-1")
    );
    // Another key naming the same number is refused and not stored.
    assert!(matches!(
        s.record_idempotency_key(&record("key-2")).await,
        Err(StoreError::Duplicate(no)) if no == "IK001"
    ));
    assert_eq!(s.idempotency_key("key-2").await.unwrap(), None);
    // Racing keys: exactly one holds the number.
    let tries = (0..6).map(|i| {
        let mut r = record(&format!("race-{i}"));
        r.combine_out_trade_no = "IK002".into();
        async move { s.record_idempotency_key(&r).await }
    });
    let held = futures_util::future::join_all(tries)
        .await
        .into_iter()
        .filter(|r| match r {
            Ok(_) => true,
            Err(StoreError::Duplicate(_)) => false,
            Err(e) => panic!("unexpected error: {e}"),
        })
        .count();
    assert_eq!(held, 1);
}

backend_tests!(
    an_order_number_belongs_to_one_idempotency_key,
    an_oauth_state_is_consumed_once,
    create_and_get_round_trip,
    duplicate_order_numbers_are_refused,
    transitions_follow_the_state_machine,
    concurrent_identical_applies_change_once,
    replayed_notification_id_with_other_body_is_refused,
    claims_are_exclusive_and_leased,
    events_are_append_only_and_ordered,
    connect_understands_urls,
);
