//! Refunds as stored: one row per refund of a sub-order, written before
//! WeChat Pay is called, and an append-only log of its transitions.
//!
//! The rules of a new refund are checked inside the transaction that
//! inserts it, with the order's row locked (PostgreSQL `FOR UPDATE`; SQLite
//! takes the database write lock up front), so two concurrent refunds of
//! one sub-order cannot together exceed it.

use crate::events::{RefundEventKind, RefundEventNotice};
use crate::store::StoreError;
use wxpay_combine_core::refund::{RefundRule, RefundStatus};

/// A refund as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRecord {
    /// The merchant's refund number (generated here, before the call).
    pub out_refund_no: String,
    /// The combined order.
    pub combine_out_trade_no: String,
    /// The sub-order's merchant: it makes the refund, with its credentials.
    pub mchid: String,
    /// The refunded sub-order.
    pub out_trade_no: String,
    /// The sub-order's WeChat Pay transaction id (the refund names it).
    pub transaction_id: String,
    /// Fen refunded.
    pub amount: i64,
    /// The sub-order's amount (`amount.total` of the request).
    pub total: i64,
    /// Shown to the payer.
    pub reason: Option<String>,
    /// Current status. PROCESSING without `refund_id`: not yet accepted by
    /// WeChat Pay (the call failed or is in flight; it is re-sent as is).
    pub status: RefundStatus,
    /// WeChat Pay's refund number, once accepted.
    pub refund_id: Option<String>,
    /// Where the money went, once known.
    pub user_received_account: Option<String>,
    /// RFC 3339, once SUCCESS.
    pub success_time: Option<String>,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Last change, Unix seconds.
    pub updated_at: i64,
}

/// A refund to record (checked against the rules first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefund {
    /// The refund number to use.
    pub out_refund_no: String,
    /// The combined order.
    pub combine_out_trade_no: String,
    /// The sub-order number within it.
    pub out_trade_no: String,
    /// Fen.
    pub amount: i64,
    /// Shown to the payer.
    pub reason: Option<String>,
    /// The caller's idempotency key and the SHA-256 of its request.
    pub idempotency: Option<(String, String)>,
}

/// What [`crate::store::Store::create_refund`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundCreated {
    /// Recorded, PROCESSING, not yet sent.
    Created(RefundRecord),
    /// The idempotency key was used before with the same request: that
    /// refund, unchanged.
    Existing(RefundRecord),
}

/// Why a refund was not recorded. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum RefundCreateError {
    /// No such order.
    #[error("order {0} not found")]
    UnknownOrder(String),
    /// The order has no sub-order of that number.
    #[error("order {order} has no sub-order {out_trade_no}")]
    UnknownSubOrder {
        /// The order.
        order: String,
        /// The number asked for.
        out_trade_no: String,
    },
    /// A refund rule refuses it.
    #[error("{0}")]
    Refused(#[from] RefundRule),
    /// The idempotency key was used with another request.
    #[error("idempotency key already used with another request")]
    KeyReused,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for RefundCreateError {
    fn from(e: sqlx::Error) -> Self {
        RefundCreateError::Store(e.into())
    }
}

/// Who reported a refund's new state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundSource {
    /// The create call's answer.
    Api,
    /// A refund notification.
    Notify,
    /// A refund query.
    Query,
}

impl RefundSource {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RefundSource::Api => "api",
            RefundSource::Notify => "notify",
            RefundSource::Query => "query",
        }
    }
}

/// WeChat Pay's view of a refund, to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundUpdate {
    /// The status reported.
    pub status: RefundStatus,
    /// WeChat Pay's refund number.
    pub refund_id: Option<String>,
    /// Where the money went.
    pub user_received_account: Option<String>,
    /// RFC 3339, when SUCCESS.
    pub success_time: Option<String>,
    /// Who reported it.
    pub source: RefundSource,
    /// The notification id, when a notification reported it.
    pub notification_id: Option<String>,
    /// The event-log text.
    pub detail: String,
}

/// What [`crate::store::Store::update_refund`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundApplied {
    /// The status changed (from the first field); the refund as stored.
    Changed(RefundStatus, RefundRecord),
    /// Already in that status (facts such as `refund_id` filled in if they
    /// were missing); nothing else written.
    Unchanged(RefundRecord),
    /// The stored status cannot become the reported one (e.g. SUCCESS →
    /// CLOSED); nothing written.
    Illegal(RefundRecord),
}

/// One refund transition from the log.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RefundEvent {
    /// The status before (`None` at creation).
    pub from_status: Option<String>,
    /// The status after.
    pub to_status: String,
    /// `create`, `api`, `notify` or `query`.
    pub source: String,
    /// The notification that reported it.
    pub notification_id: Option<String>,
    /// Text.
    pub detail: String,
    /// Unix seconds.
    pub at: i64,
}

/// The event a change of `refund` from `previous` announces (in-process and
/// in the outbox), if its status is one that has an event.
pub(crate) fn refund_notice(
    previous: RefundStatus,
    refund: &RefundRecord,
    source: RefundSource,
) -> Option<RefundEventNotice> {
    Some(RefundEventNotice {
        kind: RefundEventKind::of(refund.status)?,
        combine_out_trade_no: refund.combine_out_trade_no.clone(),
        out_trade_no: refund.out_trade_no.clone(),
        mchid: refund.mchid.clone(),
        out_refund_no: refund.out_refund_no.clone(),
        refund_id: refund.refund_id.clone(),
        amount: refund.amount,
        status: refund.status,
        previous,
        source: source.as_str(),
        success_time: refund.success_time.clone(),
        user_received_account: refund.user_received_account.clone(),
        at: refund.updated_at,
    })
}

/// Announces a committed change in-process (only a change announces, so a
/// repeated report never announces twice).
pub(crate) fn announce(
    hub: &crate::events::EventHub,
    applied: &RefundApplied,
    source: RefundSource,
) {
    if let RefundApplied::Changed(previous, refund) = applied {
        if let Some(notice) = refund_notice(*previous, refund, source) {
            hub.publish_refund(notice);
        }
    }
}

/// `SELECT <every refund column> FROM refunds <tail>`, as a literal (the
/// query functions take static SQL only).
macro_rules! select_refunds {
    ($tail:literal) => {
        concat!(
            "SELECT out_refund_no, combine_out_trade_no, mchid, out_trade_no, transaction_id, \
             amount, total, reason, status, refund_id, user_received_account, success_time, \
             created_at, updated_at FROM refunds ",
            $tail
        )
    };
}
pub(crate) use select_refunds;

#[derive(sqlx::FromRow)]
pub(crate) struct RefundRow {
    out_refund_no: String,
    combine_out_trade_no: String,
    mchid: String,
    out_trade_no: String,
    transaction_id: String,
    amount: i64,
    total: i64,
    reason: Option<String>,
    status: String,
    refund_id: Option<String>,
    user_received_account: Option<String>,
    success_time: Option<String>,
    created_at: i64,
    updated_at: i64,
}

pub(crate) fn record(r: RefundRow) -> Result<RefundRecord, StoreError> {
    let status = r
        .status
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("refund {}: {e}", r.out_refund_no)))?;
    Ok(RefundRecord {
        out_refund_no: r.out_refund_no,
        combine_out_trade_no: r.combine_out_trade_no,
        mchid: r.mchid,
        out_trade_no: r.out_trade_no,
        transaction_id: r.transaction_id,
        amount: r.amount,
        total: r.total,
        reason: r.reason,
        status,
        refund_id: r.refund_id,
        user_received_account: r.user_received_account,
        success_time: r.success_time,
        created_at: r.created_at,
        updated_at: r.updated_at,
    })
}

/// The refund operations over one backend's connection type, shared by
/// both stores: `$lock_order` locks the order row (or is a plain read where
/// the transaction already holds the database write lock).
macro_rules! refund_ops {
    ($conn:ty, $lock_order:expr) => {
        use $crate::store::refunds::{
            record, NewRefund, RefundApplied, RefundCreateError, RefundCreated, RefundEvent,
            RefundRecord, RefundRow, RefundUpdate,
        };
        use $crate::store::StoreError;
        use wxpay_combine_core::refund::{check_new_refund, PriorRefund, RefundStatus};

        pub(super) async fn get_refund(
            conn: &mut $conn,
            out_refund_no: &str,
        ) -> Result<Option<RefundRecord>, StoreError> {
            let row: Option<RefundRow> = sqlx::query_as($crate::store::refunds::select_refunds!("WHERE out_refund_no = $1"))
                .bind(out_refund_no)
                .fetch_optional(&mut *conn)
                .await?;
            row.map(record).transpose()
        }

        pub(super) async fn refunds_of_order(
            conn: &mut $conn,
            combine_out_trade_no: &str,
        ) -> Result<Vec<RefundRecord>, StoreError> {
            let rows: Vec<RefundRow> = sqlx::query_as($crate::store::refunds::select_refunds!(
                "WHERE combine_out_trade_no = $1 ORDER BY created_at, out_refund_no"
            ))
                .bind(combine_out_trade_no)
                .fetch_all(&mut *conn)
                .await?;
            rows.into_iter().map(record).collect()
        }

        pub(super) async fn processing_refunds(
            conn: &mut $conn,
            updated_before: i64,
            limit: i64,
        ) -> Result<Vec<RefundRecord>, StoreError> {
            let rows: Vec<RefundRow> = sqlx::query_as($crate::store::refunds::select_refunds!(
                "WHERE status = 'PROCESSING' AND updated_at <= $1 \
                 ORDER BY updated_at, out_refund_no LIMIT $2"
            ))
            .bind(updated_before)
            .bind(limit)
            .fetch_all(&mut *conn)
            .await?;
            rows.into_iter().map(record).collect()
        }

        pub(super) async fn refunds_created_between(
            conn: &mut $conn,
            from: i64,
            to: i64,
        ) -> Result<Vec<RefundRecord>, StoreError> {
            let rows: Vec<RefundRow> = sqlx::query_as($crate::store::refunds::select_refunds!(
                "WHERE created_at >= $1 AND created_at < $2 ORDER BY created_at, out_refund_no"
            ))
            .bind(from)
            .bind(to)
            .fetch_all(&mut *conn)
            .await?;
            rows.into_iter().map(record).collect()
        }

        pub(super) async fn refund_events(
            conn: &mut $conn,
            out_refund_no: &str,
        ) -> Result<Vec<RefundEvent>, StoreError> {
            Ok(sqlx::query_as(
                "SELECT from_status, to_status, source, notification_id, detail, at \
                 FROM refund_events WHERE out_refund_no = $1 ORDER BY id",
            )
            .bind(out_refund_no)
            .fetch_all(&mut *conn)
            .await?)
        }

        // One argument per column of the log row.
        async fn insert_event(
            conn: &mut $conn,
            out_refund_no: &str,
            (from, to): (Option<RefundStatus>, RefundStatus),
            source: &str,
            notification_id: Option<&str>,
            detail: &str,
            at: i64,
        ) -> Result<(), StoreError> {
            sqlx::query(
                "INSERT INTO refund_events (out_refund_no, from_status, to_status, source, \
                 notification_id, detail, at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(out_refund_no)
            .bind(from.map(RefundStatus::as_str))
            .bind(to.as_str())
            .bind(source)
            .bind(notification_id)
            .bind(detail)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        /// Checks and inserts a refund inside the caller's transaction.
        pub(super) async fn create_refund(
            conn: &mut $conn,
            new: &NewRefund,
            now: i64,
        ) -> Result<RefundCreated, RefundCreateError> {
            if let Some((key, digest)) = &new.idempotency {
                let known: Option<(String, Option<String>)> = sqlx::query_as(
                    "SELECT out_refund_no, request_sha256 FROM refunds WHERE idempotency_key = $1",
                )
                .bind(key)
                .fetch_optional(&mut *conn)
                .await?;
                if let Some((no, stored)) = known {
                    if stored.as_deref() != Some(digest.as_str()) {
                        return Err(RefundCreateError::KeyReused);
                    }
                    let existing = get_refund(conn, &no)
                        .await?
                        .ok_or_else(|| StoreError::Corrupt(format!("refund {no} vanished")))?;
                    return Ok(RefundCreated::Existing(existing));
                }
            }
            let state: Option<(String,)> = sqlx::query_as($lock_order)
                .bind(&new.combine_out_trade_no)
                .fetch_optional(&mut *conn)
                .await?;
            let Some((state,)) = state else {
                return Err(RefundCreateError::UnknownOrder(new.combine_out_trade_no.clone()));
            };
            let sub: Option<(String, i64, Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT mchid, amount, transaction_id, success_time FROM sub_orders \
                 WHERE combine_out_trade_no = $1 AND out_trade_no = $2 ORDER BY position LIMIT 1",
            )
            .bind(&new.combine_out_trade_no)
            .bind(&new.out_trade_no)
            .fetch_optional(&mut *conn)
            .await?;
            let Some((mchid, total, transaction_id, success_time)) = sub else {
                return Err(RefundCreateError::UnknownSubOrder {
                    order: new.combine_out_trade_no.clone(),
                    out_trade_no: new.out_trade_no.clone(),
                });
            };
            let paid = matches!(state.as_str(), "SUCCESS" | "REFUND");
            let paid_at = success_time
                .as_deref()
                .and_then(wxpay_combine_core::timefmt::parse_rfc3339)
                .filter(|_| paid && transaction_id.is_some());
            let prior: Vec<(i64, String)> = sqlx::query_as(
                "SELECT amount, status FROM refunds WHERE mchid = $1 AND out_trade_no = $2",
            )
            .bind(&mchid)
            .bind(&new.out_trade_no)
            .fetch_all(&mut *conn)
            .await?;
            let prior = prior
                .into_iter()
                .map(|(amount, status)| {
                    status
                        .parse()
                        .map(|status| PriorRefund { amount, status })
                        .map_err(|e| StoreError::Corrupt(format!("refund status: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            check_new_refund(total, paid_at, &prior, new.amount, now)?;
            let transaction_id = transaction_id.unwrap_or_default();
            let (key, digest) = new.idempotency.clone().unzip();
            sqlx::query(
                "INSERT INTO refunds (out_refund_no, combine_out_trade_no, mchid, out_trade_no, \
                 transaction_id, amount, total, reason, status, idempotency_key, request_sha256, \
                 created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'PROCESSING', $9, $10, $11, $11)",
            )
            .bind(&new.out_refund_no)
            .bind(&new.combine_out_trade_no)
            .bind(&mchid)
            .bind(&new.out_trade_no)
            .bind(&transaction_id)
            .bind(new.amount)
            .bind(total)
            .bind(&new.reason)
            .bind(key)
            .bind(digest)
            .bind(now)
            .execute(&mut *conn)
            .await
            .map_err(|e| {
                if $crate::store::shared::is_unique_violation(&e) {
                    RefundCreateError::Store(StoreError::Duplicate(new.out_refund_no.clone()))
                } else {
                    e.into()
                }
            })?;
            insert_event(
                conn,
                &new.out_refund_no,
                (None, RefundStatus::Processing),
                "create",
                None,
                &format!("refund of {} fen of sub-order {} recorded before the call", new.amount, new.out_trade_no),
                now,
            )
            .await?;
            let created = get_refund(conn, &new.out_refund_no)
                .await?
                .ok_or_else(|| StoreError::Corrupt("refund not readable after insert".into()))?;
            Ok(RefundCreated::Created(created))
        }

        /// The webhook event of a status change (SUCCESS, CLOSED,
        /// ABNORMAL), in the transaction that makes it: sequenced with the
        /// combined order's events, under the order's lock (the same lock
        /// `apply_transition` numbers the order's events under).
        async fn insert_outbox_event(
            conn: &mut $conn,
            previous: RefundStatus,
            stored: &RefundRecord,
            source: $crate::store::RefundSource,
            now: i64,
        ) -> Result<(), StoreError> {
            let Some(notice) = $crate::store::refunds::refund_notice(previous, stored, source) else {
                return Ok(());
            };
            let Some(kind) = $crate::outbox::EventKind::for_refund(stored.status) else {
                return Ok(());
            };
            let no = &stored.combine_out_trade_no;
            let locked: Option<(String,)> = sqlx::query_as($lock_order)
                .bind(no)
                .fetch_optional(&mut *conn)
                .await?;
            if locked.is_none() {
                return Err(StoreError::Corrupt(format!("refund {} names no order", stored.out_refund_no)));
            }
            let seq: i64 = sqlx::query_scalar($crate::store::shared::NEXT_OUTBOX_SEQ)
                .bind(no)
                .fetch_one(&mut *conn)
                .await?;
            let id = $crate::outbox::new_event_id();
            let payload = $crate::outbox::refund_payload(&id, kind, seq, &notice, now);
            sqlx::query($crate::store::shared::INSERT_OUTBOX)
                .bind(&id)
                .bind(no)
                .bind(seq)
                .bind(kind.as_str())
                .bind(payload)
                .bind(now)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }

        /// Records WeChat Pay's view of a refund inside the caller's
        /// transaction (the refund row is read after the caller locked it);
        /// a change into SUCCESS, CLOSED or ABNORMAL writes its outbox event.
        pub(super) async fn update_refund(
            conn: &mut $conn,
            current: RefundRecord,
            update: &RefundUpdate,
            now: i64,
        ) -> Result<RefundApplied, StoreError> {
            let no = current.out_refund_no.clone();
            let changed = current.status != update.status;
            if changed && !current.status.can_become(update.status) {
                return Ok(RefundApplied::Illegal(current));
            }
            let fills = current.refund_id.is_none() && update.refund_id.is_some()
                || current.user_received_account.is_none() && update.user_received_account.is_some()
                || current.success_time.is_none() && update.success_time.is_some();
            if !changed && !fills {
                return Ok(RefundApplied::Unchanged(current));
            }
            sqlx::query(
                "UPDATE refunds SET status = $2, refund_id = COALESCE(refund_id, $3), \
                 user_received_account = COALESCE($4, user_received_account), \
                 success_time = COALESCE(success_time, $5), updated_at = $6 \
                 WHERE out_refund_no = $1",
            )
            .bind(&no)
            .bind(update.status.as_str())
            .bind(&update.refund_id)
            .bind(&update.user_received_account)
            .bind(&update.success_time)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            if changed {
                insert_event(
                    conn,
                    &no,
                    (Some(current.status), update.status),
                    update.source.as_str(),
                    update.notification_id.as_deref(),
                    &update.detail,
                    now,
                )
                .await?;
            }
            let stored = get_refund(conn, &no)
                .await?
                .ok_or_else(|| StoreError::Corrupt(format!("refund {no} vanished")))?;
            if changed {
                insert_outbox_event(conn, current.status, &stored, update.source, now).await?;
            }
            Ok(if changed {
                RefundApplied::Changed(current.status, stored)
            } else {
                RefundApplied::Unchanged(stored)
            })
        }
    };
}
pub(crate) use refund_ops;
