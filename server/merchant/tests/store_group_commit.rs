//! Concurrent writes: the SQLite backend commits them in groups (one
//! transaction; a savepoint per request once one of them fails);
//! PostgreSQL commits each on its own connection. Either way every request
//! is applied exactly once, a failing request changes nothing while its
//! neighbours are applied, and an answer means the change survives
//! reopening the database.
//!
//! `WXPAY_GROUP_COMMIT_ORDERS` makes the concurrent runs larger (default 200).

mod support;

use std::sync::Arc;
use support::{backend_tests, order, transition, Kind, TestDb};
use wxpay_combine::combine::{ApplyOutcome, EventSource, NotificationRef, TradeState, Transition};
use wxpay_combine::store::{self, StoreError};

const T0: i64 = 1_714_000_000;

fn orders_count() -> usize {
    std::env::var("WXPAY_GROUP_COMMIT_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

fn paid(no: &str, notification_id: &str) -> Transition {
    Transition {
        notification: Some(NotificationRef {
            id: notification_id.into(),
            body_sha256: format!("sha-{notification_id}"),
        }),
        detail: "group commit test".into(),
        ..support::paid(no, EventSource::Notify, |i| format!("4200{no}{i}"))
    }
}

fn closed() -> Transition {
    transition(TradeState::Closed, EventSource::Close, "closed")
}

/// Holds SQLite's write lock from another connection until dropped, so the
/// requests fired meanwhile pile up and reach the writer together.
struct WriteLockHolder {
    release: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl WriteLockHolder {
    async fn take(db: &TestDb) -> Option<WriteLockHolder> {
        use sqlx::Connection;
        if db.kind != Kind::Sqlite {
            return None;
        }
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.url))
            .await
            .expect("raw connection");
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut c)
            .await
            .expect("take the write lock");
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = released.await;
            sqlx::query("ROLLBACK")
                .execute(&mut c)
                .await
                .expect("rollback");
            c.close().await.expect("close");
        });
        Some(WriteLockHolder {
            release: Some(release),
            task: Some(task),
        })
    }

    async fn release(mut self) {
        if let Some(r) = self.release.take() {
            let _ = r.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("lock holder");
        }
    }
}

async fn release(holder: Option<WriteLockHolder>) {
    if let Some(h) = holder {
        // Let the queued requests reach the store first.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        h.release().await;
    }
}

async fn concurrent_transitions_apply_once_and_survive_reopening(db: &TestDb) {
    let n = orders_count();
    let s = &db.store;
    let creates: Vec<_> = (0..n)
        .map(|i| {
            let s = Arc::clone(s);
            tokio::spawn(async move { s.create_order(&order(&format!("GC{i:05}"), T0)).await })
        })
        .collect();
    for c in creates {
        c.await.unwrap().expect("create");
    }

    let holder = WriteLockHolder::take(db).await;
    let applies: Vec<_> = (0..n)
        .map(|i| {
            let s = Arc::clone(s);
            tokio::spawn(async move {
                let no = format!("GC{i:05}");
                s.apply_transition(&no, &paid(&no, &format!("N{i}")), T0 + 10)
                    .await
            })
        })
        .collect();
    release(holder).await;
    for (i, a) in applies.into_iter().enumerate() {
        match a.await.unwrap().expect("apply") {
            ApplyOutcome::Applied(o) => assert_eq!(o.state, TradeState::Success, "GC{i:05}"),
            other => panic!("GC{i:05}: {other:?}"),
        }
    }

    // Every answered change is on disk: a fresh store on the same database
    // (a restarted server) sees each order paid, with one transition each.
    let again = store::connect(&db.url).await.expect("reopen");
    for i in 0..n {
        let no = format!("GC{i:05}");
        let o = again.get_order(&no).await.unwrap().expect("stored");
        assert_eq!(o.state, TradeState::Success, "{no}");
        assert_eq!(o.notified_at, Some(T0 + 10), "{no}");
        let events = again.events(&no).await.unwrap();
        let sources: Vec<_> = events.iter().map(|e| e.source).collect();
        assert_eq!(sources, [EventSource::Create, EventSource::Notify], "{no}");
    }
}

async fn a_failing_request_leaves_its_batch_applied(db: &TestDb) {
    let n = orders_count().min(100);
    let s = &db.store;
    for i in 0..n {
        s.create_order(&order(&format!("OK{i:04}"), T0))
            .await
            .unwrap();
    }
    db.create("SHUT", T0).await;
    s.apply_transition("SHUT", &closed(), T0 + 1).await.unwrap();

    let holder = WriteLockHolder::take(db).await;
    let mut tasks = Vec::new();
    for i in 0..n {
        let s = Arc::clone(s);
        tasks.push(tokio::spawn(async move {
            let no = format!("OK{i:04}");
            let applied = s
                .apply_transition(&no, &paid(&no, &format!("P{i}")), T0 + 10)
                .await;
            // A new order whose first statement succeeds and whose second
            // (a sub-order number already taken) fails: the order row must
            // not outlive it.
            let mut clash = order(&format!("BAD{i:04}"), T0);
            clash.sub_orders[1].out_trade_no = format!("OK{i:04}-S2");
            let created = s.create_order(&clash).await;
            (applied, created)
        }));
    }
    let rejected = {
        let s = Arc::clone(s);
        tokio::spawn(async move {
            s.apply_transition("SHUT", &paid("SHUT", "X"), T0 + 10)
                .await
        })
    };
    let missing = {
        let s = Arc::clone(s);
        tokio::spawn(async move {
            s.apply_transition("NOPE", &paid("NOPE", "Y"), T0 + 10)
                .await
        })
    };
    release(holder).await;

    for (i, t) in tasks.into_iter().enumerate() {
        let (applied, created) = t.await.unwrap();
        assert!(
            matches!(applied, Ok(ApplyOutcome::Applied(_))),
            "OK{i:04}: {applied:?}"
        );
        assert!(
            matches!(created, Err(StoreError::Duplicate(ref d)) if d.contains("-S2")),
            "BAD{i:04}: {created:?}"
        );
    }
    let rejected = rejected.await.unwrap().expect("a refusal is an answer");
    assert!(
        matches!(rejected, ApplyOutcome::Rejected { .. }),
        "{rejected:?}"
    );
    let missing = missing.await.unwrap();
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );

    let again = store::connect(&db.url).await.expect("reopen");
    for i in 0..n {
        let o = again
            .get_order(&format!("OK{i:04}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(o.state, TradeState::Success);
        assert_eq!(
            again.events(&o.combine_out_trade_no).await.unwrap().len(),
            2
        );
        let bad = format!("BAD{i:04}");
        assert_eq!(again.get_order(&bad).await.unwrap(), None, "{bad}");
        assert!(again.events(&bad).await.unwrap().is_empty(), "{bad}");
    }
    let shut = again.get_order("SHUT").await.unwrap().unwrap();
    assert_eq!(shut.state, TradeState::Closed);
    assert_eq!(again.events("SHUT").await.unwrap().len(), 2);
}

async fn same_order_duplicates_make_one_transition(db: &TestDb) {
    let s = &db.store;
    db.create("DUPS", T0).await;
    let holder = WriteLockHolder::take(db).await;
    // The same notification delivered 20 times, plus 20 other deliveries
    // (new notification ids) of the same payment.
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let s = Arc::clone(s);
            let id = if i % 2 == 0 {
                "SAME".to_string()
            } else {
                format!("OTHER{i}")
            };
            tokio::spawn(async move {
                s.apply_transition("DUPS", &paid("DUPS", &id), T0 + 10)
                    .await
            })
        })
        .collect();
    release(holder).await;
    let mut applied = 0;
    for t in tasks {
        match t.await.unwrap().expect("apply") {
            ApplyOutcome::Applied(_) => applied += 1,
            ApplyOutcome::AlreadyApplied(o) => assert_eq!(o.state, TradeState::Success),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(applied, 1);
    let events = db.open_another().await.events("DUPS").await.unwrap();
    let transitions = events
        .iter()
        .filter(|e| e.to_state == TradeState::Success)
        .count();
    assert_eq!(transitions, 1, "{events:?}");
    assert_eq!(events.len(), 2);
}

backend_tests!(
    concurrent_transitions_apply_once_and_survive_reopening,
    a_failing_request_leaves_its_batch_applied,
    same_order_duplicates_make_one_transition,
);
