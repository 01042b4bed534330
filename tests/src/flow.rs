//! Flows: the merchant server (`app::build` + `wxpay_combine::kit::serve`, exactly what
//! `wxpay-combine demo` runs) in this process, on a free loopback port
//! against the embedded simulator, driven through a [`Browser`].
//!
//! Each flow runs on SQLite (a temp dir) and, when `WXPAY_TEST_DATABASE_URL`
//! is set, on PostgreSQL in a fresh schema (dropped afterwards). Without the
//! variable the PostgreSQL variant prints why it is skipped — and fails
//! under `CI=true`.

use crate::database::{Db, PgSchema};
use crate::demo::TestDemo;
use crate::payer::Browser;
use crate::wait::wait_for;
use std::sync::Arc;
use std::time::Duration;
use wxpay_combine::apiv3::{Clock, SystemClock};
use wxpay_combine::combine::{CombineOrder, EventSource, OrderEvent, TradeState};
use wxpay_combine::config::Config;
use wxpay_combine::store::Store;
use wxpay_combine_cli::app::DemoOptions;
use wxpay_combine_sim::SimHandle;

/// A running merchant server with its simulator.
pub struct Flow {
    pub sim: SimHandle,
    pub base: String,
    pub config: Config,
    pub store: Arc<dyn Store>,
    /// The server's refund service (`Kit::refunds`).
    pub refunds: Arc<wxpay_combine::refund::RefundService>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), wxpay_combine::kit::StartError>>>,
    _pg: Option<PgSchema>,
    _dir: tempfile::TempDir,
}

impl Flow {
    /// Starts a flow on `db`, or returns `None` when PostgreSQL is not
    /// available (outside CI). `tweak` adjusts the demo options (defaults
    /// here: simulator time scale 0.01, the 5-minute close rule,
    /// query-on-read after 1 s, no reconciliation within the test unless
    /// asked).
    pub async fn start(db: Db, tweak: impl FnOnce(&mut DemoOptions)) -> Option<Flow> {
        Self::start_with_config(db, tweak, |_| {}).await
    }

    /// [`Flow::start`] with a last adjustment of the validated configuration.
    pub async fn start_with_config(
        db: Db,
        tweak: impl FnOnce(&mut DemoOptions),
        adjust: impl FnOnce(&mut Config),
    ) -> Option<Flow> {
        let TestDemo { mut demo, pg, dir } = TestDemo::prepare(db, "flow", "wxflow_", |o| {
            o.query_after_secs = 1;
            tweak(o)
        })
        .await?;
        adjust(&mut demo.config);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let server = wxpay_combine::kit::Kit::builder(demo.config.clone())
            .clock(clock)
            .build()
            .await
            .expect("server builds");
        let store = server.store.clone();
        let refunds = server.refunds.clone();
        let base = demo.config.http.public_base_url.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(wxpay_combine::kit::serve(server, demo.listener, async {
            let _ = rx.await;
        }));
        Some(Flow {
            sim: demo.sim,
            base,
            config: demo.config,
            store,
            refunds,
            shutdown: Some(tx),
            server: Some(task),
            _pg: pg,
            _dir: dir,
        })
    }

    /// Signs `user` in through the simulator's OAuth pages.
    pub async fn login(&self, user: &str) -> Browser {
        Browser::signed_in(&self.base, user).await
    }

    /// The stored order.
    pub async fn order(&self, no: &str) -> CombineOrder {
        stored_order(self.store.as_ref(), no).await
    }

    /// The order's event log.
    pub async fn events(&self, no: &str) -> Vec<OrderEvent> {
        order_events(self.store.as_ref(), no).await
    }

    /// Waits until the stored order reaches `state`.
    pub async fn wait_state(&self, no: &str, state: TradeState, within: Duration) -> CombineOrder {
        let reached = wait_for(within, Duration::from_millis(50), || async {
            let o = self.order(no).await;
            (o.state == state).then_some(o)
        })
        .await;
        if let Some(o) = reached {
            return o;
        }
        let o = self.order(no).await;
        assert_eq!(
            o.state, state,
            "order {no} is {} after {within:?}, expected {state}",
            o.state
        );
        o
    }

    /// Stops the merchant server gracefully: no new connections, in-flight
    /// requests finish, the worker stops.
    pub async fn stop_server(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("server stops within the grace period")
                .expect("server task")
                .expect("server ran cleanly");
        }
    }

    /// Stops the server, then the simulator.
    pub async fn stop(mut self) {
        self.stop_server().await;
        let sim = self.sim;
        sim.shutdown().await;
    }
}

/// The stored order `no`; panics when there is none.
pub async fn stored_order(store: &dyn Store, no: &str) -> CombineOrder {
    store
        .get_order(no)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("order {no} is not stored"))
}

/// The event log of order `no`.
pub async fn order_events(store: &dyn Store, no: &str) -> Vec<OrderEvent> {
    store.events(no).await.unwrap()
}

/// Transitions of an order to `state`, by source.
pub fn transitions_to(events: &[OrderEvent], state: TradeState) -> Vec<EventSource> {
    events
        .iter()
        .filter(|e| e.to_state == state && e.from_state.is_some())
        .map(|e| e.source)
        .collect()
}
