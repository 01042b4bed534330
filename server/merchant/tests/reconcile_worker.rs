//! The reconciliation worker and query-on-read against a fake WeChat Pay
//! (`CombineApi`), on SQLite and PostgreSQL.

mod support;

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{backend_tests, order, txn_in, TestDb};
use wxpay_combine::apiv3::ManualClock;
use wxpay_combine::combine::wire::{CloseRequest, CombineTransaction, PrepayRequest};
use wxpay_combine::combine::{ApiError, CombineApi, CombineOrder, EventSource, TradeState};
use wxpay_combine::reconcile::{
    refresh_from_query, RefreshError, RunSummary, Worker, WorkerConfig,
};

const T0: i64 = 1_714_000_000;

/// What the fake WeChat Pay knows about one order.
#[derive(Debug, Clone)]
struct Remote {
    order: CombineOrder,
    state: TradeState,
    /// Makes the answer disagree with the order (amount of sub-order 0).
    amount_override: Option<i64>,
    /// The close API answers with this error code instead of closing.
    close_error: Option<(u16, &'static str)>,
}

#[derive(Debug, Default)]
struct FakeApi {
    remote: Mutex<HashMap<String, Remote>>,
    queries: Mutex<Vec<String>>,
    closes: Mutex<Vec<(String, CloseRequest)>>,
    delay: Duration,
}

impl FakeApi {
    fn with_delay(delay: Duration) -> Self {
        FakeApi {
            delay,
            ..Default::default()
        }
    }
    fn put(&self, order: &CombineOrder, state: TradeState) {
        self.remote.lock().unwrap().insert(
            order.combine_out_trade_no.clone(),
            Remote {
                order: order.clone(),
                state,
                amount_override: None,
                close_error: None,
            },
        );
    }
    fn edit(&self, no: &str, f: impl FnOnce(&mut Remote)) {
        f(self.remote.lock().unwrap().get_mut(no).unwrap());
    }
    fn queries_of(&self, no: &str) -> usize {
        self.queries
            .lock()
            .unwrap()
            .iter()
            .filter(|q| *q == no)
            .count()
    }
    fn closes_of(&self, no: &str) -> usize {
        self.closes
            .lock()
            .unwrap()
            .iter()
            .filter(|(q, _)| q == no)
            .count()
    }
}

fn service(status: u16, code: &str) -> ApiError {
    ApiError::Service {
        status,
        code: code.into(),
        message: String::new(),
        detail: None,
        request_id: None,
    }
}

fn transaction(r: &Remote) -> CombineTransaction {
    let no = &r.order.combine_out_trade_no;
    let mut t = txn_in(&r.order, r.state, |i| format!("4200{i}{no}"));
    if let Some(amount) = r.amount_override {
        t.sub_orders[0].amount.total_amount = amount;
    }
    t
}

#[async_trait]
impl CombineApi for FakeApi {
    async fn prepay(&self, _request: &PrepayRequest) -> Result<String, ApiError> {
        Err(ApiError::Transport {
            endpoint: "prepay",
            detail: "not used by these tests".into(),
        })
    }

    async fn query(&self, no: &str) -> Result<CombineTransaction, ApiError> {
        self.queries.lock().unwrap().push(no.to_string());
        tokio::time::sleep(self.delay).await;
        let remote = self.remote.lock().unwrap().get(no).cloned();
        remote
            .map(|r| transaction(&r))
            .ok_or_else(|| service(404, "ORDER_NOT_EXIST"))
    }

    async fn close(&self, no: &str, request: &CloseRequest) -> Result<(), ApiError> {
        self.closes
            .lock()
            .unwrap()
            .push((no.to_string(), request.clone()));
        let mut remote = self.remote.lock().unwrap();
        let r = remote
            .get_mut(no)
            .ok_or_else(|| service(404, "ORDER_NOT_EXIST"))?;
        if let Some((status, code)) = r.close_error {
            if code == "ORDER_PAID" {
                r.state = TradeState::Success; // paid at the last moment
            }
            return Err(service(status, code));
        }
        match r.state {
            TradeState::Success | TradeState::Refund => Err(service(400, "ORDER_PAID")),
            _ => {
                r.state = TradeState::Closed;
                Ok(())
            }
        }
    }
}

fn config() -> WorkerConfig {
    WorkerConfig {
        interval: Duration::from_millis(20),
        query_after: Duration::from_secs(120),
        lease: Duration::from_secs(60),
        max_requery: Duration::from_secs(3600),
        batch: 10,
        concurrency: 4,
        default_ttl: Duration::from_secs(7 * 24 * 3600),
        min_close_age: Duration::from_secs(300),
    }
}

fn worker(db: &TestDb, api: &Arc<FakeApi>, clock: &Arc<ManualClock>) -> Worker {
    Worker::new(db.store.clone(), api.clone(), config(), clock.clone())
}

/// Where the last recorded change of order `no` came from.
async fn last_source(db: &TestDb, no: &str) -> EventSource {
    let events = db.store.events(no).await.unwrap();
    events.last().expect("the order has events").source
}

/// A worker over `db` and a fresh fake WeChat Pay, its clock at `now`.
fn setup(db: &TestDb, now: i64) -> (Arc<FakeApi>, Arc<ManualClock>, Worker) {
    let api = Arc::new(FakeApi::default());
    let clock = Arc::new(ManualClock::new(now));
    let w = worker(db, &api, &clock);
    (api, clock, w)
}

/// Order `no`, created at `T0` and expiring at `time_expire`, stored and
/// open (NOTPAY) at WeChat Pay.
async fn open_order(db: &TestDb, api: &FakeApi, no: &str, time_expire: i64) -> CombineOrder {
    let mut o = order(no, T0);
    o.time_expire = Some(time_expire);
    db.store.create_order(&o).await.unwrap();
    api.put(&o, TradeState::NotPay);
    o
}

async fn dropped_notification_is_recovered_by_query(db: &TestDb) {
    let (api, clock, w) = setup(db, T0 + 30);
    let o = db.create("RQ001", T0).await;
    api.put(&o, TradeState::Success);

    // Too young: left to the notification.
    assert_eq!(w.run_once().await.unwrap(), RunSummary::default());
    assert_eq!(api.queries_of("RQ001"), 0);

    clock.set(T0 + 121);
    let s = w.run_once().await.unwrap();
    assert_eq!((s.claimed, s.applied, s.errors), (1, 1, 0), "{s:?}");
    let stored = db.store.get_order("RQ001").await.unwrap().unwrap();
    assert_eq!(stored.state, TradeState::Success);
    assert_eq!(
        stored.sub_orders[1].transaction_id.as_deref(),
        Some("42001RQ001")
    );
    assert_eq!(stored.notified_at, None, "a query is not a notification");
    let events = db.store.events("RQ001").await.unwrap();
    assert_eq!(events.last().unwrap().source, EventSource::Query);
    assert_eq!(events.len(), 2);

    // Paid orders are not queried again.
    clock.advance(3600);
    assert_eq!(w.run_once().await.unwrap().claimed, 0);
    assert_eq!(api.queries_of("RQ001"), 1);
}

async fn open_orders_are_requeried_with_backoff(db: &TestDb) {
    let (api, clock, w) = setup(db, T0 + 200);
    open_order(db, &api, "RB001", T0 + 10 * 3600).await;

    let s = w.run_once().await.unwrap();
    assert_eq!((s.claimed, s.unchanged), (1, 1), "{s:?}");
    // Within the lease: not claimed again.
    clock.advance(30);
    assert_eq!(w.run_once().await.unwrap().claimed, 0);
    clock.advance(31);
    assert_eq!(w.run_once().await.unwrap().claimed, 1);
    assert_eq!(api.queries_of("RB001"), 2);

    // Older orders are queried less often (a quarter of their age).
    clock.set(T0 + 4000);
    assert_eq!(w.run_once().await.unwrap().claimed, 1);
    clock.set(T0 + 4000 + 61);
    assert_eq!(
        w.run_once().await.unwrap().claimed,
        0,
        "spacing is now ~1000 s, not the 60 s lease"
    );
    clock.set(T0 + 5001);
    assert_eq!(w.run_once().await.unwrap().claimed, 1);

    // The payer starts paying: USERPAYING is recorded (still open).
    api.edit("RB001", |r| r.state = TradeState::UserPaying);
    clock.set(T0 + 7000);
    let s = w.run_once().await.unwrap();
    assert_eq!(s.applied, 1, "{s:?}");
    assert_eq!(
        db.store.get_order("RB001").await.unwrap().unwrap().state,
        TradeState::UserPaying
    );
    assert_eq!(api.closes_of("RB001"), 0);
}

async fn expired_orders_are_closed(db: &TestDb) {
    let (api, clock, w) = setup(db, T0 + 200);
    let o = open_order(db, &api, "RX001", T0 + 600).await;

    // Before expiry: queried, not closed.
    let s = w.run_once().await.unwrap();
    assert_eq!((s.unchanged, s.closed), (1, 0));
    assert_eq!(api.closes_of("RX001"), 0);

    // The next query is not later than the expiry.
    clock.set(T0 + 600);
    let s = w.run_once().await.unwrap();
    assert_eq!((s.claimed, s.closed), (1, 1), "{s:?}");
    assert_eq!(api.closes_of("RX001"), 1);
    let (_, req) = api.closes.lock().unwrap()[0].clone();
    assert_eq!(req.combine_appid, o.combine_appid);
    let sent: Vec<_> = req
        .sub_orders
        .iter()
        .map(|s| (s.mchid.clone(), s.out_trade_no.clone()))
        .collect();
    let expected: Vec<_> = o
        .sub_orders
        .iter()
        .map(|s| (s.mchid.clone(), s.out_trade_no.clone()))
        .collect();
    assert_eq!(sent, expected, "close names every sub-order");
    let stored = db.store.get_order("RX001").await.unwrap().unwrap();
    assert_eq!(stored.state, TradeState::Closed);
    let last = db.store.events("RX001").await.unwrap().pop().unwrap();
    assert_eq!(
        (last.from_state, last.to_state, last.source),
        (
            Some(TradeState::NotPay),
            TradeState::Closed,
            EventSource::Expiry
        )
    );

    // Never closed younger than 5 minutes, even with an earlier time_expire.
    let mut young = order("RX002", T0 + 1000);
    young.time_expire = Some(T0 + 1060);
    db.store.create_order(&young).await.unwrap();
    api.put(&young, TradeState::NotPay);
    clock.set(T0 + 1000 + 121);
    let s = w.run_once().await.unwrap();
    assert_eq!((s.claimed, s.closed), (1, 0));
    clock.set(T0 + 1000 + 300);
    assert_eq!(w.run_once().await.unwrap().closed, 1);

    // Without time_expire the default lifetime applies.
    let mut forever = order("RX003", T0);
    forever.time_expire = None;
    db.store.create_order(&forever).await.unwrap();
    api.put(&forever, TradeState::NotPay);
    clock.set(T0 + 3 * 24 * 3600);
    assert_eq!(w.run_once().await.unwrap().closed, 0);
    clock.set(T0 + 7 * 24 * 3600);
    assert_eq!(w.run_once().await.unwrap().closed, 1);
}

async fn close_answers_are_handled(db: &TestDb) {
    let (api, _clock, w) = setup(db, T0 + 1000);
    let mk = |no: &str| {
        let mut o = order(no, T0);
        o.time_expire = Some(T0 + 600);
        o
    };
    // Paid at the last moment: close says ORDER_PAID, the re-query applies SUCCESS.
    let paid = mk("RC001");
    // Already closed at WeChat Pay.
    let closed = mk("RC002");
    // The payer is paying: keep it open.
    let paying = mk("RC003");
    // Never created at WeChat Pay: closed here without calling close.
    let ghost = mk("RC004");
    // WeChat Pay answers about a different amount: alert, unchanged, not closed.
    let odd = mk("RC005");
    for o in [&paid, &closed, &paying, &ghost, &odd] {
        db.store.create_order(o).await.unwrap();
    }
    api.put(&paid, TradeState::NotPay);
    api.edit("RC001", |r| r.close_error = Some((400, "ORDER_PAID")));
    api.put(&closed, TradeState::NotPay);
    api.edit("RC002", |r| r.close_error = Some((400, "ORDER_CLOSED")));
    api.put(&paying, TradeState::NotPay);
    api.edit("RC003", |r| r.close_error = Some((202, "USERPAYING")));
    api.put(&odd, TradeState::NotPay);
    api.edit("RC005", |r| r.amount_override = Some(1));

    let s = w.run_once().await.unwrap();
    assert_eq!(s.claimed, 5, "{s:?}");
    let state = |no: &'static str| {
        let store = db.store.clone();
        async move { store.get_order(no).await.unwrap().unwrap().state }
    };
    assert_eq!(state("RC001").await, TradeState::Success);
    assert_eq!(last_source(db, "RC001").await, EventSource::Query);
    // ORDER_CLOSED from close while the query says NOTPAY: a refusal alone
    // records nothing (the confirming query disagrees).
    assert_eq!(state("RC002").await, TradeState::NotPay);
    assert_eq!(
        api.queries_of("RC002"),
        2,
        "the refusal was checked by a query"
    );
    assert_eq!(state("RC003").await, TradeState::NotPay);
    assert_eq!(state("RC004").await, TradeState::Closed);
    assert_eq!(api.closes_of("RC004"), 0);
    assert_eq!(last_source(db, "RC004").await, EventSource::Expiry);
    assert_eq!(state("RC005").await, TradeState::NotPay);
    assert_eq!(api.closes_of("RC005"), 0);
    assert_eq!(db.store.events("RC005").await.unwrap().len(), 1);
    assert_eq!((s.applied, s.closed, s.alerts), (1, 1, 1), "{s:?}");
}

async fn two_workers_do_not_double_process(db: &TestDb) {
    let api = Arc::new(FakeApi::with_delay(Duration::from_millis(15)));
    let clock = Arc::new(ManualClock::new(T0 + 200));
    let mut orders = Vec::new();
    for i in 0..30 {
        let o = order(&format!("RW{i:03}"), T0 + i);
        db.store.create_order(&o).await.unwrap();
        api.put(
            &o,
            if i % 3 == 0 {
                TradeState::Success
            } else {
                TradeState::NotPay
            },
        );
        orders.push(o);
    }
    // Two instances: separate stores (pools) on one database.
    let second = db.open_another().await;
    let a = Worker::new(db.store.clone(), api.clone(), config(), clock.clone());
    let b = Worker::new(second, api.clone(), config(), clock.clone());
    let mut totals = RunSummary::default();
    loop {
        let (x, y) = tokio::join!(a.run_once(), b.run_once());
        let (x, y) = (x.unwrap(), y.unwrap());
        if x.claimed + y.claimed == 0 {
            break;
        }
        for s in [x, y] {
            totals.claimed += s.claimed;
            totals.applied += s.applied;
            totals.unchanged += s.unchanged;
        }
    }
    assert_eq!(totals.claimed, 30, "{totals:?}");
    assert_eq!((totals.applied, totals.unchanged), (10, 20));
    for o in &orders {
        assert_eq!(
            api.queries_of(&o.combine_out_trade_no),
            1,
            "{} queried once",
            o.combine_out_trade_no
        );
        let events = db.store.events(&o.combine_out_trade_no).await.unwrap();
        assert!(events.len() <= 2);
    }
}

async fn refresh_from_query_applies_through_the_same_path(db: &TestDb) {
    let api = FakeApi::default();
    let o = db.create("RR001", T0).await;
    api.put(&o, TradeState::NotPay);

    let got = refresh_from_query(&*db.store, &api, "RR001", T0 + 5)
        .await
        .unwrap();
    assert_eq!(got.state, TradeState::NotPay);
    assert_eq!(
        db.store.events("RR001").await.unwrap().len(),
        1,
        "no change, no event"
    );

    api.edit("RR001", |r| r.state = TradeState::Success);
    let got = refresh_from_query(&*db.store, &api, "RR001", T0 + 6)
        .await
        .unwrap();
    assert_eq!(got.state, TradeState::Success);
    assert_eq!(got, db.store.get_order("RR001").await.unwrap().unwrap());
    assert_eq!(last_source(db, "RR001").await, EventSource::Query);

    // Final orders are returned without asking WeChat Pay.
    let before = api.queries_of("RR001");
    refresh_from_query(&*db.store, &api, "RR001", T0 + 7)
        .await
        .unwrap();
    assert_eq!(api.queries_of("RR001"), before);

    assert!(matches!(
        refresh_from_query(&*db.store, &api, "RR404", T0).await,
        Err(RefreshError::NotFound(_))
    ));

    db.create("RR002", T0).await;
    let e = refresh_from_query(&*db.store, &api, "RR002", T0)
        .await
        .unwrap_err();
    assert!(
        matches!(e, RefreshError::Api(ref a) if a.code() == Some("ORDER_NOT_EXIST")),
        "{e:?}"
    );

    let odd = db.create("RR003", T0).await;
    api.put(&odd, TradeState::Success);
    api.edit("RR003", |r| r.amount_override = Some(99));
    let e = refresh_from_query(&*db.store, &api, "RR003", T0)
        .await
        .unwrap_err();
    assert!(matches!(e, RefreshError::Mismatch { .. }), "{e:?}");
    assert_eq!(
        db.store.get_order("RR003").await.unwrap().unwrap().state,
        TradeState::NotPay
    );
}

async fn run_stops_on_shutdown(db: &TestDb) {
    let api = Arc::new(FakeApi::default());
    let clock = Arc::new(ManualClock::new(T0 + 200));
    let o = db.create("RS001", T0).await;
    api.put(&o, TradeState::Success);
    let w = worker(db, &api, &clock);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        w.run(async {
            let _ = rx.await;
        })
        .await
    });
    // The first round runs at once.
    for _ in 0..200 {
        if db.store.get_order("RS001").await.unwrap().unwrap().state == TradeState::Success {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        db.store.get_order("RS001").await.unwrap().unwrap().state,
        TradeState::Success
    );
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("worker stops")
        .unwrap();
}

backend_tests!(
    dropped_notification_is_recovered_by_query,
    open_orders_are_requeried_with_backoff,
    expired_orders_are_closed,
    close_answers_are_handled,
    two_workers_do_not_double_process,
    refresh_from_query_applies_through_the_same_path,
    run_stops_on_shutdown,
);
