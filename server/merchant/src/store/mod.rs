//! Durable order state behind one trait, two backends: embedded SQLite
//! (default, a file) and PostgreSQL (several instances share one database).
//!
//! Every state change happens in one transaction under a row lock and appends
//! to the `order_events` table; a call returns only after the commit is
//! durable, so a notification is acknowledged only after its effect is on disk.

use crate::combine::{ApplyOutcome, CombineOrder, EventSource, OrderEvent, TradeState, Transition};
use crate::events::EventHub;
use async_trait::async_trait;
use std::sync::Arc;

pub mod intake;
pub mod postgres;
pub mod refunds;
pub mod settings;
mod shared;
pub mod sqlite;

pub use intake::{ClaimOutcome, IdempotencyRecord, PayLink, PayLinkStatus};
pub use postgres::PgStore;
pub use refunds::{
    NewRefund, RefundApplied, RefundCreateError, RefundCreated, RefundEvent, RefundRecord,
    RefundSource, RefundUpdate,
};
pub use sqlite::SqliteStore;

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
    /// The order handed to [`Store::create_order`] is not storable (no
    /// sub-orders, an amount below 1 fen, a state other than NOTPAY, a
    /// sub-order listed twice).
    #[error("invalid order: {0}")]
    Invalid(String),
    /// Stored data does not parse (a bug or manual edit).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A plain SQLite connection failed (the group-commit writer's or an
    /// order reader's).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
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
    async fn get_order(
        &self,
        combine_out_trade_no: &str,
    ) -> Result<Option<CombineOrder>, StoreError>;

    /// Stores the prepay_id obtained for an open order and its expiry
    /// (`updated_at`, which tracks state changes, is left alone).
    async fn set_prepay(
        &self,
        combine_out_trade_no: &str,
        prepay_id: &str,
        expires_at: i64,
    ) -> Result<(), StoreError>;

    /// Applies a state change atomically: locks the order row, checks the
    /// transition is legal and not a repeat, updates order and sub-orders,
    /// appends one event, records the notification id (if any), commits.
    ///
    /// - The notification id already recorded with the same body digest, or
    ///   the order already in the requested state →
    ///   [`ApplyOutcome::AlreadyApplied`], nothing written (except that a new
    ///   notification id is recorded, so a later replay of it with another
    ///   body is caught).
    /// - The id recorded with another digest, an illegal transition, a
    ///   payment naming a sub-order the order lacks or replacing a stored
    ///   transaction id → [`ApplyOutcome::Rejected`], nothing written.
    /// - Otherwise → [`ApplyOutcome::Applied`] with the order as stored;
    ///   `notified_at` is set when the source is `notify`, the
    ///   reconciliation lease is cleared, payment facts are filled in (never
    ///   erased).
    ///
    /// No such order → [`StoreError::NotFound`].
    async fn apply_transition(
        &self,
        combine_out_trade_no: &str,
        transition: &Transition,
        now: i64,
    ) -> Result<ApplyOutcome, StoreError>;

    /// Sets `notified_at` without a state change. (The notification handler
    /// does not call it: an applied notification sets `notified_at` itself,
    /// and a refused one changes nothing.)
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

    /// Moves the reconciliation claim of an order to `lease_until`: the
    /// worker spaces out the queries of an order that stays open this way.
    async fn set_lease(
        &self,
        combine_out_trade_no: &str,
        lease_until: i64,
    ) -> Result<(), StoreError>;

    /// The event log of an order, oldest first.
    async fn events(&self, combine_out_trade_no: &str) -> Result<Vec<OrderEvent>, StoreError>;

    /// Whether the database answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    // Intake:
    /// Where this store's committed state changes are announced in-process
    /// ([`crate::events`]). `None` (the default) announces nothing.
    fn event_hub(&self) -> Option<&EventHub> {
        None
    }

    /// Announces a committed change on this store's hub, if it has one.
    /// Called by every path that applies a state change, after the commit.
    fn announce(&self, previous: TradeState, order: &CombineOrder, source: EventSource) {
        if let Some(hub) = self.event_hub() {
            hub.announce(previous, order, source);
        }
    }

    /// Records idempotency key `record.key` unless it is recorded already,
    /// and returns the record as stored: `record` itself the first time, the
    /// earlier one (with its request digest and order number) afterwards.
    /// An order number another key holds → [`StoreError::Duplicate`].
    /// The default (wrapper stores in tests) refuses.
    async fn record_idempotency_key(
        &self,
        record: &IdempotencyRecord,
    ) -> Result<IdempotencyRecord, StoreError> {
        let _ = record;
        Err(StoreError::Invalid(
            "this store does not keep idempotency keys".into(),
        ))
    }

    /// The record of idempotency key `key`, if it was recorded. The default
    /// (wrapper stores in tests) refuses, like
    /// [`Store::record_idempotency_key`].
    async fn idempotency_key(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let _ = key;
        Err(StoreError::Invalid(
            "this store does not keep idempotency keys".into(),
        ))
    }

    /// Marks OAuth state `state_sha256` (hex SHA-256 of the state) used
    /// until `expires_at`, and says whether this call was its first use:
    /// `true` once, `false` for every later call (on any instance sharing
    /// the database). Rows expired at `now` are dropped on the way.
    /// The default (a store that does not keep them, e.g. a wrapper)
    /// records them in this process only, so logins keep working and a
    /// state is still single-use on this instance.
    async fn consume_oauth_state(
        &self,
        state_sha256: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        static USED: std::sync::Mutex<Vec<(String, i64)>> = std::sync::Mutex::new(Vec::new());
        let mut used = USED.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded by the login rate times the state's lifetime (10 minutes).
        used.retain(|(_, x)| *x > now);
        if used.iter().any(|(h, _)| h == state_sha256) {
            return Ok(false);
        }
        used.push((state_sha256.to_string(), expires_at));
        Ok(true)
    }

    /// Stores a new pay link (status open).
    /// The order number already has a link → [`StoreError::Duplicate`].
    async fn create_pay_link(&self, link: &PayLink) -> Result<(), StoreError> {
        let _ = link;
        Err(StoreError::Invalid(
            "this store does not keep pay links".into(),
        ))
    }

    /// The pay link of an order, if it was created with one.
    async fn pay_link_for_order(
        &self,
        combine_out_trade_no: &str,
    ) -> Result<Option<PayLink>, StoreError> {
        let _ = combine_out_trade_no;
        Ok(None)
    }

    /// Claims the open, unexpired link whose token hashes to `token_sha256`
    /// for `openid` (one atomic update: of two concurrent claims one wins).
    async fn claim_pay_link(
        &self,
        token_sha256: &str,
        openid: &str,
        now: i64,
    ) -> Result<ClaimOutcome, StoreError> {
        let _ = (token_sha256, openid, now);
        Ok(ClaimOutcome::Unknown)
    }

    /// Closes the order's link if its order is not stored (nobody claimed
    /// it, or the claim's order creation failed); `true` when it did.
    async fn close_pay_link(&self, combine_out_trade_no: &str) -> Result<bool, StoreError> {
        let _ = combine_out_trade_no;
        Ok(false)
    }

    // Outbox:
    // Webhook events ([`crate::webhook`]). The rows are written by
    // `apply_transition` itself (same transaction as the state change); these
    // methods deliver them. The defaults (for wrapper stores in tests) keep
    // no outbox.

    /// Claims up to `limit` events due at `now` for delivery: only the oldest
    /// undelivered event of each order (so one order's events go out in
    /// sequence), not under another claim; the claim lasts until
    /// `lease_until` (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so two instances
    /// never claim the same event).
    async fn claim_outbox_events(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        let _ = (now, lease_until, limit);
        Ok(Vec::new())
    }

    /// Records a 2xx answer: the event is delivered (attempts + 1, claim
    /// and error cleared).
    async fn mark_outbox_delivered(&self, id: &str, now: i64) -> Result<(), StoreError> {
        let _ = now;
        Err(StoreError::NotFound(id.to_string()))
    }

    /// Records a failed attempt: attempts + 1, `error` kept, next attempt at
    /// `next_attempt_at`, claim released.
    async fn mark_outbox_failed(
        &self,
        id: &str,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        let _ = (next_attempt_at, error);
        Err(StoreError::NotFound(id.to_string()))
    }

    /// Undelivered events, oldest first (at most `limit`).
    async fn pending_outbox_events(&self, limit: i64) -> Result<Vec<OutboxEvent>, StoreError> {
        let _ = limit;
        Ok(Vec::new())
    }

    /// One event by id, delivered or not.
    async fn get_outbox_event(&self, id: &str) -> Result<Option<OutboxEvent>, StoreError> {
        let _ = id;
        Ok(None)
    }

    /// Makes an event due at `at` (claim released). A delivered event
    /// becomes undelivered again, so the worker sends it once more.
    /// No such event → [`StoreError::NotFound`].
    async fn reschedule_outbox_event(&self, id: &str, at: i64) -> Result<(), StoreError> {
        let _ = at;
        Err(StoreError::NotFound(id.to_string()))
    }

    /// How many events wait for delivery, and the creation time of the
    /// oldest (for metrics).
    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        Ok(OutboxStats::default())
    }

    // Refunds:
    // Per sub-order ([`refunds`]). The defaults (for wrapper stores in
    // tests) keep no refunds.

    /// Checks a new refund against the rules with the order row locked and
    /// records it (PROCESSING, not yet sent) with a `create` event; the same
    /// idempotency key with the same request finds the earlier refund.
    async fn create_refund(
        &self,
        new: &NewRefund,
        now: i64,
    ) -> Result<RefundCreated, RefundCreateError> {
        let _ = (new, now);
        Err(RefundCreateError::Store(StoreError::Invalid(
            "this store does not keep refunds".into(),
        )))
    }

    /// One refund.
    async fn get_refund(&self, out_refund_no: &str) -> Result<Option<RefundRecord>, StoreError> {
        let _ = out_refund_no;
        Ok(None)
    }

    /// The refunds of an order's sub-orders, oldest first.
    async fn refunds_of_order(
        &self,
        combine_out_trade_no: &str,
    ) -> Result<Vec<RefundRecord>, StoreError> {
        let _ = combine_out_trade_no;
        Ok(Vec::new())
    }

    /// Records WeChat Pay's view of a refund under its row lock: a legal
    /// status change is written with an event; a repeat only fills in
    /// missing facts; an illegal change writes nothing. No such refund →
    /// [`StoreError::NotFound`].
    async fn update_refund(
        &self,
        out_refund_no: &str,
        update: &RefundUpdate,
        now: i64,
    ) -> Result<RefundApplied, StoreError> {
        let _ = (update, now);
        Err(StoreError::NotFound(out_refund_no.to_string()))
    }

    /// Refunds still PROCESSING, last changed at or before `updated_before`,
    /// oldest first (at most `limit`).
    async fn processing_refunds(
        &self,
        updated_before: i64,
        limit: i64,
    ) -> Result<Vec<RefundRecord>, StoreError> {
        let _ = (updated_before, limit);
        Ok(Vec::new())
    }

    /// Refunds recorded in `[from, to)` (Unix seconds), oldest first (for
    /// bill reconciliation).
    async fn refunds_created_between(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Vec<RefundRecord>, StoreError> {
        let _ = (from, to);
        Ok(Vec::new())
    }

    /// The transition log of a refund, oldest first.
    async fn refund_events(&self, out_refund_no: &str) -> Result<Vec<RefundEvent>, StoreError> {
        let _ = out_refund_no;
        Ok(Vec::new())
    }

    // Bills:
    // Reconciliation of trade bills ([`crate::bill::reconcile`]). The
    // defaults (for wrapper stores in tests) refuse.

    /// Every sub-order whose payment `success_time` lies in `[from, to)`
    /// (Unix seconds), whatever its order's state now, with its order's
    /// facts; ordered by success time.
    async fn paid_sub_orders_between(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Vec<LocalSubOrder>, StoreError> {
        let _ = (from, to);
        Err(StoreError::Invalid(
            "this store cannot list paid sub-orders".into(),
        ))
    }

    /// The sub-order `mchid` + `out_trade_no` (paid or not), with its
    /// order's facts.
    async fn bill_sub_order(
        &self,
        mchid: &str,
        out_trade_no: &str,
    ) -> Result<Option<LocalSubOrder>, StoreError> {
        let _ = (mchid, out_trade_no);
        Err(StoreError::Invalid(
            "this store cannot look up sub-orders".into(),
        ))
    }
}

/// One sub-order as the local database knows it, with its order's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSubOrder {
    /// The combined order's number.
    pub combine_out_trade_no: String,
    /// The combined order's merchant.
    pub combine_mchid: String,
    /// The combined order's state.
    pub order_state: TradeState,
    /// The sub-order's merchant.
    pub mchid: String,
    /// The sub-order's number.
    pub out_trade_no: String,
    /// Order amount, fen.
    pub amount_fen: i64,
    /// What the payer paid, fen (once paid).
    pub payer_amount_fen: Option<i64>,
    /// WeChat Pay's transaction id (once paid).
    pub transaction_id: Option<String>,
    /// The payment's RFC 3339 success time, as stored.
    pub success_time: Option<String>,
}

impl LocalSubOrder {
    /// `success_time` as Unix seconds, when present and readable.
    pub fn success_unix(&self) -> Option<i64> {
        let t = self.success_time.as_deref()?;
        wxpay_combine_core::timefmt::parse_rfc3339(t)
    }

    /// Whether the order was paid (SUCCESS, or REFUND: paid, then refunded).
    pub fn is_paid(&self) -> bool {
        matches!(self.order_state, TradeState::Success | TradeState::Refund)
            && self.success_time.is_some()
    }
}

/// One webhook event in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboxEvent {
    /// Stable id (`evt_…`), the receiver's dedupe key.
    pub id: String,
    /// The order.
    pub combine_out_trade_no: String,
    /// 1, 2, … within the order.
    pub seq: i64,
    /// `paid`, `closed` or `payment_error`.
    pub kind: String,
    /// The JSON body sent.
    pub payload: String,
    /// When the state changed (Unix seconds).
    pub created_at: i64,
    /// Attempts so far.
    pub attempts: i64,
    /// When the next attempt is due.
    pub next_attempt_at: i64,
    /// When a 2xx answer was received.
    pub delivered_at: Option<i64>,
    /// The last failure.
    pub last_error: Option<String>,
}

/// Outbox backlog figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Undelivered events.
    pub pending: i64,
    /// Creation time of the oldest undelivered event.
    pub oldest_created_at: Option<i64>,
}

/// Opens the order database named by `url`, creating it (SQLite) and
/// applying migrations:
/// - `sqlite:PATH`, `sqlite://PATH` or a bare file path → [`SqliteStore`]
///   (file and parent directories created if missing); `sqlite::memory:`
///   → a throwaway SQLite database (a temporary file removed with the last
///   handle);
/// - `postgres://…` / `postgresql://…` → [`PgStore`] (a schema can be chosen
///   with `?options[search_path]=NAME`);
/// - anything else → [`StoreError::UnsupportedUrl`].
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    match classify_url(url)? {
        Backend::Sqlite => Ok(Arc::new(SqliteStore::connect(url).await?)),
        Backend::Postgres => Ok(Arc::new(PgStore::connect(url).await?)),
    }
}

/// What [`connect`] would refuse, found without creating or migrating
/// anything (`serve --check`): SQLite's file and directory, or a PostgreSQL
/// server that answers. Returns a note worth printing (a directory that
/// will be created).
pub async fn check(url: &str) -> Result<Option<String>, StoreError> {
    match classify_url(url)? {
        Backend::Sqlite => SqliteStore::check(url),
        Backend::Postgres => {
            use sqlx::Connection;
            let connect = sqlx::postgres::PgConnection::connect(url.trim());
            let mut conn = tokio::time::timeout(std::time::Duration::from_secs(10), connect)
                .await
                .map_err(|_| StoreError::Database(sqlx::Error::PoolTimedOut))??;
            sqlx::query("SELECT 1").execute(&mut conn).await?;
            let _ = conn.close().await;
            Ok(None)
        }
    }
}

/// Which backend a database URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// Picks the backend for `url` without connecting (see [`connect`]).
pub fn classify_url(url: &str) -> Result<Backend, StoreError> {
    let url = url.trim();
    if url.is_empty() {
        return Err(StoreError::UnsupportedUrl(String::new()));
    }
    match url_scheme(url) {
        None => Ok(Backend::Sqlite),
        Some(s) if s.eq_ignore_ascii_case("sqlite") => Ok(Backend::Sqlite),
        Some(s) if s.eq_ignore_ascii_case("postgres") || s.eq_ignore_ascii_case("postgresql") => {
            Ok(Backend::Postgres)
        }
        Some(s) => Err(StoreError::UnsupportedUrl(s.chars().take(32).collect())),
    }
}

/// The URL scheme, if `url` has one. A single letter before `:` is a Windows
/// drive (`C:\data\wxpay.db`), i.e. a bare path.
fn url_scheme(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    let valid = first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (valid && scheme.len() > 1).then_some(scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_the_backend() {
        for u in [
            "sqlite:data.db",
            "sqlite://data.db",
            "sqlite::memory:",
            "data.db",
            "/var/lib/wxpay/x.db",
            "./x.db",
            "C:\\x.db",
        ] {
            assert_eq!(classify_url(u).unwrap(), Backend::Sqlite, "{u}");
        }
        for u in [
            "postgres://u@h/db",
            "postgresql://u@h:5432/db?sslmode=disable",
        ] {
            assert_eq!(classify_url(u).unwrap(), Backend::Postgres, "{u}");
        }
        for u in ["mysql://u@h/db", "http://x", "", "redis:foo"] {
            assert!(
                matches!(classify_url(u), Err(StoreError::UnsupportedUrl(_))),
                "{u}"
            );
        }
    }
}
