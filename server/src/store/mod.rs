//! Durable order state behind one trait, two backends: embedded SQLite
//! (default, a file) and PostgreSQL (several instances share one database).
//!
//! Every state change happens in one transaction under a row lock and appends
//! to the `order_events` table; a call returns only after the commit is
//! durable, so a notification is acknowledged only after its effect is on disk.

use crate::combine::{ApplyOutcome, CombineOrder, OrderEvent, Transition};
use async_trait::async_trait;
use std::sync::Arc;

pub mod postgres;
mod shared;
pub mod sqlite;

pub use postgres::PgStore;
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
}

/// Opens the order database named by `url`, creating it (SQLite) and
/// applying migrations:
/// - `sqlite:PATH`, `sqlite://PATH`, `sqlite::memory:` or a bare file path →
///   [`SqliteStore`] (file and parent directories created if missing);
/// - `postgres://…` / `postgresql://…` → [`PgStore`] (a schema can be chosen
///   with `?options[search_path]=NAME`);
/// - anything else → [`StoreError::UnsupportedUrl`].
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    match classify_url(url)? {
        Backend::Sqlite => Ok(Arc::new(SqliteStore::connect(url).await?)),
        Backend::Postgres => Ok(Arc::new(PgStore::connect(url).await?)),
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
