//! Graceful shutdown of `wxpay_combine::kit::serve`: notifications in flight when the
//! shutdown signal comes finish and commit (every 2xx answer is in the
//! database), and the reconciliation worker stops claiming work at the
//! signal, not after the in-flight requests are done.
//!
//! The notification handler runs over a store that holds every
//! notification's state change for a moment (so they are provably in flight
//! at the signal), and the worker over one that records each claim.

mod ops_support;

use async_trait::async_trait;
use ops_support::support::{HookedStore, StoreHooks};
use ops_support::{demo, order_no, pay_params, Browser, TempDir};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wxpay_combine::apiv3::{Clock, SystemClock};
use wxpay_combine::combine::{CombineApi, EventSource, TradeState, Transition};
use wxpay_combine::kit::{Kit, Workers};
use wxpay_combine::reconcile::{Worker, WorkerConfig};
use wxpay_combine::store::Store;

/// Orders paid while the server shuts down (`WXPAY_OPS_SHUTDOWN_ORDERS`).
fn order_count() -> usize {
    std::env::var("WXPAY_OPS_SHUTDOWN_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

/// Hooks over the real store: hold notification state changes for `delay`
/// (recording which orders entered), count finished changes, record claim
/// times.
#[derive(Debug)]
struct Observer {
    delay: Duration,
    entered: Mutex<Vec<String>>,
    finished: AtomicUsize,
    claims: Mutex<Vec<Instant>>,
}

#[async_trait]
impl StoreHooks for Observer {
    async fn before_apply(&self, no: &str, transition: &Transition) {
        if transition.source == EventSource::Notify {
            self.entered.lock().unwrap().push(no.to_string());
            tokio::time::sleep(self.delay).await;
        }
    }
    fn after_apply(&self) {
        self.finished.fetch_add(1, Ordering::SeqCst);
    }
    fn on_claim(&self) {
        self.claims.lock().unwrap().push(Instant::now());
    }
}

impl Observer {
    fn claims_after(&self, t: Instant) -> usize {
        self.claims
            .lock()
            .unwrap()
            .iter()
            .filter(|c| **c > t)
            .count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_flight_notifications_commit_and_the_worker_stops_claiming() {
    let dir = TempDir::new("wxops-shutdown");
    let demo = demo(&dir, |_| {}).await;
    let config = demo.config.clone();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let real_store = wxpay_combine::store::connect(&config.store.database_url)
        .await
        .unwrap();
    let observed = Arc::new(HookedStore {
        inner: real_store.clone(),
        hooks: Observer {
            delay: Duration::from_millis(800),
            entered: Mutex::new(Vec::new()),
            finished: AtomicUsize::new(0),
            claims: Mutex::new(Vec::new()),
        },
    });
    let store: Arc<dyn Store> = observed.clone();
    let observed = &observed.hooks;
    let mut server = Kit::builder(config.clone())
        .store(store.clone())
        .clock(clock.clone())
        .build()
        .await
        .unwrap();
    // The reconciliation worker over the observed store, claiming every
    // 20 ms (none due: orders are queried after an hour).
    let api: Arc<dyn CombineApi> = server.client.clone();
    let worker = Worker::new(
        store.clone(),
        api,
        WorkerConfig {
            interval: Duration::from_millis(20),
            query_after: Duration::from_secs(3600),
            ..WorkerConfig::default()
        },
        clock,
    );
    let mut workers = Workers::new();
    workers.add("reconcile", move |stop| async move {
        worker.run(stop.cancelled_owned()).await
    });
    server.workers = workers;
    let base = config.http.public_base_url.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(wxpay_combine::kit::serve(server, demo.listener, async {
        let _ = rx.await;
    }));

    // Orders, then payments: the simulator delivers the notifications at once.
    let alice = Browser::new(&base);
    alice.login("alice").await;
    let mut created = Vec::new();
    for _ in 0..order_count() {
        created.push(alice.create_order(2).await);
    }
    // The worker is claiming.
    let t = Instant::now();
    while observed.claims_after(t) < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for c in &created {
        let paid = demo.sim.pay(&pay_params(c)).await;
        assert_eq!(paid.err_msg, "get_brand_wcpay_request:ok");
    }
    // Shut down while at least one notification's state change is held.
    let deadline = Instant::now() + Duration::from_secs(30);
    while observed.entered.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no notification arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let in_flight: Vec<String> = observed.entered.lock().unwrap().clone();
    let finished_at_signal = observed.finished.load(Ordering::SeqCst);
    let signal = Instant::now();
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("server stops within the grace period")
        .unwrap()
        .expect("served cleanly");
    let stopped = Instant::now();

    // The held state changes were in flight at the signal and completed.
    assert!(
        observed.finished.load(Ordering::SeqCst) > finished_at_signal,
        "nothing finished after the signal"
    );
    // The worker stopped claiming at the signal: at most a claim already
    // under way, although the in-flight notifications took 800 ms more
    // (at 20 ms intervals it would otherwise have claimed dozens of times).
    assert!(stopped - signal >= Duration::from_millis(500));
    assert!(
        observed.claims_after(signal) <= 1,
        "{} claims after the shutdown signal",
        observed.claims_after(signal)
    );
    let claims = observed.claims.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        observed.claims.lock().unwrap().len(),
        claims,
        "claims after stop"
    );

    // Every notification the server acknowledged (2xx) is committed, and
    // every one in flight at the signal was acknowledged.
    let numbers: Vec<String> = created.iter().map(order_no).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut acknowledged = Vec::new();
    for no in &numbers {
        loop {
            let log = demo.sim.notifications(Some(no)).await.unwrap();
            let answered: Vec<i64> = log
                .attempts
                .iter()
                .filter(|a| a.kind == "delivery" || a.kind == "duplicate")
                .filter_map(|a| a.http_status)
                .collect();
            let pending = in_flight.contains(no) && answered.is_empty();
            if !pending || Instant::now() > deadline {
                if answered.iter().any(|s| (200..300).contains(s)) {
                    acknowledged.push(no.clone());
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for no in &in_flight {
        assert!(
            acknowledged.contains(no),
            "notification of {no} was in flight at the signal but not acknowledged"
        );
    }
    for no in &acknowledged {
        let o = real_store.get_order(no).await.unwrap().unwrap();
        assert_eq!(
            o.state,
            TradeState::Success,
            "{no} acknowledged but not stored"
        );
        let events = real_store.events(no).await.unwrap();
        let to_success = events
            .iter()
            .filter(|e| e.to_state == TradeState::Success && e.from_state.is_some())
            .count();
        assert_eq!(to_success, 1, "{no}: {events:?}");
    }
    demo.sim.shutdown().await;
}
