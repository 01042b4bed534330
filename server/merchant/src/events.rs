//! In-process order events: how code embedding the kit learns that an order
//! was paid, closed or failed, or that a refund succeeded, closed or became
//! abnormal.
//!
//! Every committed state change of an order (from a notification, a query,
//! the close API or the expiry sweep) is announced on the store's
//! [`EventHub`] right after the commit, and so is every change of a refund
//! into SUCCESS, CLOSED or ABNORMAL ([`RefundEventNotice`]; a repeated
//! report of the same status changes nothing and announces nothing). Two
//! ways to listen:
//!
//! - an [`OrderEventHandler`], registered with
//!   [`KitBuilder::on_event`](crate::kit::KitBuilder::on_event) (or
//!   [`EventHub::add_handler`]): called once per event, in commit order, on a
//!   background task of its own, so a slow handler never delays the answer to
//!   WeChat Pay. Order events go to [`OrderEventHandler::on_event`], refund
//!   events to [`OrderEventHandler::on_refund`] (which does nothing unless
//!   implemented; closures `Fn(&OrderEventNotice)` see order events only,
//!   [`KitBuilder::on_refund_event`](crate::kit::KitBuilder::on_refund_event)
//!   takes a closure for refund events);
//! - a [`tokio::sync::broadcast`] receiver from [`EventHub::subscribe`]
//!   (order events) or [`EventHub::subscribe_refunds`] (refund events).
//!
//! **Delivery is at most once.** The announcement happens after the commit
//! and lives only in memory: a crash between the commit and the handler,
//! a panicking handler, or a receiver lagging behind the broadcast buffer
//! loses the event. Use the in-process events to update caches or wake up
//! work quickly; for anything that must not be missed (shipping goods), use
//! the webhook outbox (written in the same transaction as the state change,
//! delivered at least once; see `docs/webhooks.md`) or read the order's state
//! from the store.
//!
//! ```no_run
//! use wxpay_combine::events::{
//!     OrderEventHandler, OrderEventKind, OrderEventNotice, RefundEventKind, RefundEventNotice,
//! };
//!
//! struct Fulfil;
//!
//! #[async_trait::async_trait]
//! impl OrderEventHandler for Fulfil {
//!     async fn on_event(&self, e: &OrderEventNotice) {
//!         if e.kind == OrderEventKind::Paid {
//!             println!("order {} paid: {} fen", e.combine_out_trade_no, e.order.total_amount());
//!         }
//!     }
//!
//!     async fn on_refund(&self, e: &RefundEventNotice) {
//!         if e.kind == RefundEventKind::Succeeded {
//!             println!("refund {} of {}: {} fen", e.out_refund_no, e.out_trade_no, e.amount);
//!         }
//!     }
//! }
//! ```

use crate::combine::{CombineOrder, EventSource, TradeState};
use async_trait::async_trait;
use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::{broadcast, mpsc};
use wxpay_combine_core::refund::RefundStatus;

/// How many announced events may wait for the handlers before new ones are
/// dropped (with a warning), and the broadcast buffer per receiver.
pub const EVENT_BUFFER: usize = 1024;

/// What happened to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderEventKind {
    /// The order is paid (`SUCCESS`).
    Paid,
    /// The order was closed (close API, prepay refused, or expiry).
    Closed,
    /// WeChat Pay reports the payment failed (`PAYERROR`).
    PaymentError,
    /// The payer is paying (`USERPAYING`).
    Paying,
    /// The paid order moved to refund (`REFUND`).
    Refunded,
}

impl OrderEventKind {
    /// The kind of a change into `state` (`None` for `NOTPAY`, which is
    /// never reached by a change).
    pub fn of(state: TradeState) -> Option<Self> {
        match state {
            TradeState::Success => Some(Self::Paid),
            TradeState::Closed => Some(Self::Closed),
            TradeState::PayError => Some(Self::PaymentError),
            TradeState::UserPaying => Some(Self::Paying),
            TradeState::Refund => Some(Self::Refunded),
            TradeState::NotPay => None,
        }
    }

    /// `order.paid`, `order.closed`, `order.payment_error`, `order.paying`,
    /// `order.refunded`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Paid => "order.paid",
            Self::Closed => "order.closed",
            Self::PaymentError => "order.payment_error",
            Self::Paying => "order.paying",
            Self::Refunded => "order.refunded",
        }
    }
}

/// One committed state change.
#[derive(Debug, Clone)]
pub struct OrderEventNotice {
    /// What happened.
    pub kind: OrderEventKind,
    /// The order number.
    pub combine_out_trade_no: String,
    /// The state before the change.
    pub previous: TradeState,
    /// What caused it (notification, query, close, expiry).
    pub source: EventSource,
    /// The order as committed (sub-orders with transaction ids when paid).
    pub order: CombineOrder,
}

/// What happened to a refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundEventKind {
    /// The money is back with the payer (`SUCCESS`).
    Succeeded,
    /// The refund was closed; no money moved and its amount is free again
    /// (`CLOSED`).
    Closed,
    /// The refund's route failed (`ABNORMAL`); it needs handling and may
    /// still succeed or close.
    Abnormal,
}

impl RefundEventKind {
    /// The kind of a change into `status` (`None` for `PROCESSING`).
    pub fn of(status: RefundStatus) -> Option<Self> {
        match status {
            RefundStatus::Success => Some(Self::Succeeded),
            RefundStatus::Closed => Some(Self::Closed),
            RefundStatus::Abnormal => Some(Self::Abnormal),
            RefundStatus::Processing => None,
        }
    }

    /// `refund.succeeded`, `refund.closed`, `refund.abnormal` (the webhook
    /// event's `type` too).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "refund.succeeded",
            Self::Closed => "refund.closed",
            Self::Abnormal => "refund.abnormal",
        }
    }
}

/// One committed change of a refund's status into SUCCESS, CLOSED or
/// ABNORMAL: the refund as stored after the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundEventNotice {
    /// What happened.
    pub kind: RefundEventKind,
    /// The combined order the refunded sub-order belongs to.
    pub combine_out_trade_no: String,
    /// The refunded sub-order.
    pub out_trade_no: String,
    /// The sub-order's merchant (it made the refund).
    pub mchid: String,
    /// The merchant's refund number.
    pub out_refund_no: String,
    /// WeChat Pay's refund number, once accepted.
    pub refund_id: Option<String>,
    /// Fen refunded.
    pub amount: i64,
    /// The status now.
    pub status: RefundStatus,
    /// The status before the change.
    pub previous: RefundStatus,
    /// Who reported the change: `api`, `notify` or `query` (as in the
    /// refund's event log).
    pub source: &'static str,
    /// RFC 3339, when SUCCESS.
    pub success_time: Option<String>,
    /// Where the money went, once known.
    pub user_received_account: Option<String>,
    /// When the change was committed, Unix seconds.
    pub at: i64,
}

/// Receives in-process order and refund events (at most once; see the
/// [module documentation](self)).
#[async_trait]
pub trait OrderEventHandler: Send + Sync + 'static {
    /// Called once per committed state change, in commit order. A panic is
    /// caught and logged; the event is then lost for this handler.
    async fn on_event(&self, e: &OrderEventNotice);

    /// Called once per committed refund change into SUCCESS, CLOSED or
    /// ABNORMAL, in commit order with the order events. Does nothing unless
    /// implemented. A panic is caught and logged like `on_event`'s.
    async fn on_refund(&self, e: &RefundEventNotice) {
        let _ = e;
    }
}

/// A handler that sees refund events only: a closure
/// `Fn(&RefundEventNotice)` (see
/// [`KitBuilder::on_refund_event`](crate::kit::KitBuilder::on_refund_event)).
pub struct RefundHandlerFn<F>(pub F);

#[async_trait]
impl<F> OrderEventHandler for RefundHandlerFn<F>
where
    F: Fn(&RefundEventNotice) + Send + Sync + 'static,
{
    async fn on_event(&self, _: &OrderEventNotice) {}

    async fn on_refund(&self, e: &RefundEventNotice) {
        (self.0)(e)
    }
}

#[async_trait]
impl<F> OrderEventHandler for F
where
    F: Fn(&OrderEventNotice) + Send + Sync + 'static,
{
    async fn on_event(&self, e: &OrderEventNotice) {
        self(e)
    }
}

/// Where committed state changes are announced. Cheap to clone (clones
/// share the handlers and receivers); each store backend holds one.
#[derive(Clone)]
pub struct EventHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    handlers: RwLock<Vec<Arc<dyn OrderEventHandler>>>,
    // One queue for both kinds, so handlers see them in commit order.
    queue: Mutex<Option<mpsc::Sender<Notice>>>,
    broadcast: broadcast::Sender<OrderEventNotice>,
    refunds: broadcast::Sender<RefundEventNotice>,
}

/// What the dispatch task hands to the handlers.
enum Notice {
    Order(OrderEventNotice),
    Refund(RefundEventNotice),
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub")
            .field("handlers", &self.handler_count())
            .field("receivers", &self.inner.broadcast.receiver_count())
            .field("refund_receivers", &self.inner.refunds.receiver_count())
            .finish()
    }
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new()
    }
}

impl EventHub {
    /// A hub with no listeners.
    pub fn new() -> Self {
        let (broadcast, _) = broadcast::channel(EVENT_BUFFER);
        let (refunds, _) = broadcast::channel(EVENT_BUFFER);
        Self {
            inner: Arc::new(HubInner {
                handlers: RwLock::new(Vec::new()),
                queue: Mutex::new(None),
                broadcast,
                refunds,
            }),
        }
    }

    /// Registers a handler. The first one starts the dispatch task, so this
    /// must be called inside a Tokio runtime.
    pub fn add_handler(&self, handler: Arc<dyn OrderEventHandler>) {
        self.inner
            .handlers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(handler);
        let mut queue = self.inner.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.is_none() {
            let (tx, rx) = mpsc::channel(EVENT_BUFFER);
            *queue = Some(tx);
            tokio::spawn(dispatch(Arc::downgrade(&self.inner), rx));
        }
    }

    /// How many handlers are registered.
    pub fn handler_count(&self) -> usize {
        self.inner
            .handlers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// A receiver of every event announced from now on. A receiver more
    /// than [`EVENT_BUFFER`] events behind loses the oldest
    /// ([`broadcast::error::RecvError::Lagged`]).
    pub fn subscribe(&self) -> broadcast::Receiver<OrderEventNotice> {
        self.inner.broadcast.subscribe()
    }

    /// A receiver of every refund event announced from now on (lagging
    /// like [`EventHub::subscribe`]'s).
    pub fn subscribe_refunds(&self) -> broadcast::Receiver<RefundEventNotice> {
        self.inner.refunds.subscribe()
    }

    /// Announces a committed change (never blocks, never fails: without
    /// listeners nothing happens; a full queue drops the event with a
    /// warning).
    pub fn publish(&self, notice: OrderEventNotice) {
        if self.inner.broadcast.receiver_count() > 0 {
            let _ = self.inner.broadcast.send(notice.clone());
        }
        self.enqueue(Notice::Order(notice));
    }

    /// Announces a committed refund change, like [`EventHub::publish`].
    pub fn publish_refund(&self, notice: RefundEventNotice) {
        if self.inner.refunds.receiver_count() > 0 {
            let _ = self.inner.refunds.send(notice.clone());
        }
        self.enqueue(Notice::Refund(notice));
    }

    fn enqueue(&self, notice: Notice) {
        let queue = self.inner.queue.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = queue.as_ref() {
            if let Err(e) = tx.try_send(notice) {
                let (order, kind) = match &e {
                    mpsc::error::TrySendError::Full(n) | mpsc::error::TrySendError::Closed(n) => {
                        n.describe()
                    }
                };
                tracing::warn!(%order, kind, "in-process event dropped: handlers are too slow");
            }
        }
    }

    /// Announces that `order` (as committed) changed from `previous` because
    /// of `source`; does nothing when the new state has no event kind.
    pub fn announce(&self, previous: TradeState, order: &CombineOrder, source: EventSource) {
        if let Some(kind) = OrderEventKind::of(order.state) {
            self.publish(OrderEventNotice {
                kind,
                combine_out_trade_no: order.combine_out_trade_no.clone(),
                previous,
                source,
                order: order.clone(),
            });
        }
    }
}

impl Notice {
    /// The order number and the event type, for logs.
    fn describe(&self) -> (&str, &'static str) {
        match self {
            Notice::Order(n) => (&n.combine_out_trade_no, n.kind.as_str()),
            Notice::Refund(n) => (&n.combine_out_trade_no, n.kind.as_str()),
        }
    }
}

async fn dispatch(hub: std::sync::Weak<HubInner>, mut rx: mpsc::Receiver<Notice>) {
    while let Some(notice) = rx.recv().await {
        let Some(inner) = hub.upgrade() else { return };
        let handlers = inner
            .handlers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        drop(inner);
        for h in handlers {
            let call = match &notice {
                Notice::Order(n) => h.on_event(n),
                Notice::Refund(n) => h.on_refund(n),
            };
            if AssertUnwindSafe(call).catch_unwind().await.is_err() {
                let (order, kind) = notice.describe();
                tracing::error!(%order, kind, "event handler panicked; event lost for it");
            }
        }
    }
}
