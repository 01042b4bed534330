//! Durable order state behind one trait, two backends: embedded SQLite
//! (default, a file) and PostgreSQL (several instances share one database).
//!
//! Every state change happens in one transaction under a row lock and appends
//! to the `order_events` table; a call returns only after the commit is
//! durable, so a notification is acknowledged only after its effect is on disk.

use crate::combine::{ApplyOutcome, CombineOrder, OrderEvent, Transition};
use async_trait::async_trait;

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `combine_out_trade_no` (or a sub-order's mchid + out_trade_no) exists.
    #[error("order number already used: {0}")]
    Duplicate(String),
    /// No such order.
    #[error("order {0} not found")]
    NotFound(String),
    /// The database URL scheme is neither `sqlite:` nor `postgres:`.
    #[error("unsupported database URL scheme {0:?} (use sqlite:PATH or postgres://…)")]
    UnsupportedUrl(String),
    /// Stored data does not parse (a bug or manual edit).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// The order database.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Inserts a new NOTPAY order with its sub-orders and a `create` event.
    async fn create_order(&self, order: &CombineOrder) -> Result<(), StoreError>;

    /// Reads an order.
    async fn get_order(&self, combine_out_trade_no: &str) -> Result<Option<CombineOrder>, StoreError>;

    /// Stores the prepay_id obtained for an open order and its expiry.
    async fn set_prepay(
        &self,
        combine_out_trade_no: &str,
        prepay_id: &str,
        expires_at: i64,
    ) -> Result<(), StoreError>;

    /// Applies a state change atomically: locks the order row, checks the
    /// transition is legal and not a repeat, updates order and sub-orders,
    /// appends one event, records the notification id (if any), commits.
    async fn apply_transition(
        &self,
        combine_out_trade_no: &str,
        transition: &Transition,
        now: i64,
    ) -> Result<ApplyOutcome, StoreError>;

    /// Notes that a notification for the order arrived (even if refused), so
    /// the query-on-read delay starts from it.
    async fn touch_notified(&self, combine_out_trade_no: &str, now: i64) -> Result<(), StoreError>;

    /// Claims up to `limit` open orders created before `created_before` whose
    /// claim has lapsed, for the reconciliation worker. A claim lasts until
    /// `lease_until`; with PostgreSQL rows are taken with
    /// `FOR UPDATE SKIP LOCKED`, so two instances never claim the same order.
    async fn claim_open_orders(
        &self,
        created_before: i64,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<CombineOrder>, StoreError>;

    /// The event log of an order, oldest first.
    async fn events(&self, combine_out_trade_no: &str) -> Result<Vec<OrderEvent>, StoreError>;

    /// Whether the database answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;
}
