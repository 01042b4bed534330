//! What both backends share: SQL text (SQLite accepts PostgreSQL's `$N`
//! placeholders), row types, and the pure decision of what a transition does
//! to a locked order. The backends only differ in how they lock and commit.

use super::StoreError;
use crate::combine::{
    CombineOrder, EventSource, NotificationRef, OrderEvent, RejectReason, SubOrder, TradeState,
    Transition,
};
use std::collections::HashSet;

pub(crate) const SELECT_ORDER: &str = "SELECT combine_out_trade_no, combine_mchid, combine_appid, \
     payer_openid, state, prepay_id, prepay_expires_at, time_expire, created_at, updated_at, \
     notified_at FROM combine_orders WHERE combine_out_trade_no = $1";

pub(crate) const SELECT_ORDER_FOR_UPDATE: &str = "SELECT combine_out_trade_no, combine_mchid, \
     combine_appid, payer_openid, state, prepay_id, prepay_expires_at, time_expire, created_at, \
     updated_at, notified_at FROM combine_orders WHERE combine_out_trade_no = $1 FOR UPDATE";

pub(crate) const SELECT_SUBS: &str = "SELECT mchid, out_trade_no, description, attach, amount, \
     transaction_id, payer_amount, bank_type, success_time FROM sub_orders \
     WHERE combine_out_trade_no = $1 ORDER BY position";

pub(crate) const SELECT_NOTIFICATION: &str =
    "SELECT combine_out_trade_no, body_sha256 FROM notifications WHERE id = $1";

pub(crate) const INSERT_ORDER: &str = "INSERT INTO combine_orders (combine_out_trade_no, \
     combine_mchid, combine_appid, payer_openid, state, prepay_id, prepay_expires_at, \
     time_expire, created_at, updated_at, notified_at, lease_until) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL)";

pub(crate) const INSERT_SUB: &str = "INSERT INTO sub_orders (mchid, out_trade_no, \
     combine_out_trade_no, position, description, attach, amount, transaction_id, \
     payer_amount, bank_type, success_time) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

pub(crate) const INSERT_EVENT: &str = "INSERT INTO order_events (combine_out_trade_no, \
     from_state, to_state, source, notification_id, detail, at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// Records the notification that caused a transition. No `ON CONFLICT`: if
/// the id was recorded concurrently (for another order), the whole
/// transition fails and rolls back, and the retry is judged a replay.
pub(crate) const INSERT_NOTIFICATION: &str = "INSERT INTO notifications (id, \
     combine_out_trade_no, body_sha256, outcome, received_at) VALUES ($1, $2, $3, $4, $5)";

/// Records a notification acknowledged as a duplicate (nothing else changes).
pub(crate) const INSERT_DUPLICATE_NOTIFICATION: &str = "INSERT INTO notifications (id, \
     combine_out_trade_no, body_sha256, outcome, received_at) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (id) DO NOTHING";

pub(crate) const UPDATE_ORDER_STATE: &str = "UPDATE combine_orders SET state = $2, \
     updated_at = $3, notified_at = $4, lease_until = NULL WHERE combine_out_trade_no = $1";

pub(crate) const UPDATE_SUB_PAYMENT: &str = "UPDATE sub_orders SET transaction_id = $3, \
     payer_amount = $4, bank_type = $5, success_time = $6 \
     WHERE mchid = $1 AND out_trade_no = $2";

/// `updated_at` tracks state changes only, so a new prepay_id leaves it.
pub(crate) const UPDATE_PREPAY: &str = "UPDATE combine_orders SET prepay_id = $2, \
     prepay_expires_at = $3 WHERE combine_out_trade_no = $1";

pub(crate) const UPDATE_NOTIFIED: &str =
    "UPDATE combine_orders SET notified_at = $2 WHERE combine_out_trade_no = $1";

pub(crate) const UPDATE_LEASE: &str =
    "UPDATE combine_orders SET lease_until = $2 WHERE combine_out_trade_no = $1";

pub(crate) const SELECT_EVENTS: &str = "SELECT id, combine_out_trade_no, from_state, to_state, \
     source, detail, at FROM order_events WHERE combine_out_trade_no = $1 ORDER BY id";

// Outbox:

/// The next per-order sequence number (under the order's lock).
pub(crate) const NEXT_OUTBOX_SEQ: &str = "SELECT COALESCE(MAX(seq), 0) + 1 FROM outbox_events \
     WHERE combine_out_trade_no = $1";

pub(crate) const INSERT_OUTBOX: &str = "INSERT INTO outbox_events (id, combine_out_trade_no, \
     seq, kind, payload, created_at, attempts, next_attempt_at) \
     VALUES ($1, $2, $3, $4, $5, $6, 0, $6)";

pub(crate) const MARK_OUTBOX_DELIVERED: &str = "UPDATE outbox_events SET delivered_at = $2, \
     attempts = attempts + 1, last_error = NULL, lease_until = NULL WHERE id = $1";

pub(crate) const MARK_OUTBOX_FAILED: &str = "UPDATE outbox_events SET attempts = attempts + 1, \
     next_attempt_at = $2, last_error = $3, lease_until = NULL WHERE id = $1";

pub(crate) const RESCHEDULE_OUTBOX: &str = "UPDATE outbox_events SET delivered_at = NULL, \
     next_attempt_at = $2, lease_until = NULL WHERE id = $1";

pub(crate) const PENDING_OUTBOX: &str = "SELECT id, combine_out_trade_no, seq, kind, payload, \
     created_at, attempts, next_attempt_at, delivered_at, last_error FROM outbox_events \
     WHERE delivered_at IS NULL ORDER BY created_at, combine_out_trade_no, seq LIMIT $1";

pub(crate) const GET_OUTBOX: &str = "SELECT id, combine_out_trade_no, seq, kind, payload, \
     created_at, attempts, next_attempt_at, delivered_at, last_error FROM outbox_events \
     WHERE id = $1";

pub(crate) const OUTBOX_STATS: &str = "SELECT COUNT(*), MIN(created_at) FROM outbox_events \
     WHERE delivered_at IS NULL";

// Bills:

/// Sub-orders with their order's facts whose `success_time` date part
/// (`YYYY-MM-DD`, in whatever offset it was written) is in `[$1, $2]`; the
/// caller narrows to the exact instant range (see `bill_window_dates`).
/// The expression matches the `sub_orders_success_day` index (0004).
pub(crate) const BILL_SUBS_BY_DAY: &str = "SELECT s.combine_out_trade_no, o.combine_mchid, \
     o.state, s.mchid, s.out_trade_no, s.amount, s.payer_amount, s.transaction_id, \
     s.success_time FROM sub_orders s \
     JOIN combine_orders o ON o.combine_out_trade_no = s.combine_out_trade_no \
     WHERE s.success_time IS NOT NULL AND substr(s.success_time, 1, 10) >= $1 \
       AND substr(s.success_time, 1, 10) <= $2 \
     ORDER BY s.success_time, s.mchid, s.out_trade_no";

/// One sub-order (paid or not) by its key, with its order's facts.
pub(crate) const BILL_SUB_BY_KEY: &str = "SELECT s.combine_out_trade_no, o.combine_mchid, \
     o.state, s.mchid, s.out_trade_no, s.amount, s.payer_amount, s.transaction_id, \
     s.success_time FROM sub_orders s \
     JOIN combine_orders o ON o.combine_out_trade_no = s.combine_out_trade_no \
     WHERE s.mchid = $1 AND s.out_trade_no = $2";

/// A row of [`BILL_SUBS_BY_DAY`] / [`BILL_SUB_BY_KEY`].
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct BillSubRow {
    combine_out_trade_no: String,
    combine_mchid: String,
    state: String,
    mchid: String,
    out_trade_no: String,
    amount: i64,
    payer_amount: Option<i64>,
    transaction_id: Option<String>,
    success_time: Option<String>,
}

/// Converts a [`BillSubRow`].
pub(crate) fn bill_sub(row: BillSubRow) -> Result<crate::store::LocalSubOrder, StoreError> {
    Ok(crate::store::LocalSubOrder {
        order_state: parse_state(&row.state)?,
        combine_out_trade_no: row.combine_out_trade_no,
        combine_mchid: row.combine_mchid,
        mchid: row.mchid,
        out_trade_no: row.out_trade_no,
        amount_fen: row.amount,
        payer_amount_fen: row.payer_amount,
        transaction_id: row.transaction_id,
        success_time: row.success_time,
    })
}

/// The date strings bounding `[from, to)` for [`BILL_SUBS_BY_DAY`]: an
/// RFC 3339 time's written date is within a day of its UTC date (offsets
/// span −12 h … +14 h), so one day is added on each side.
pub(crate) fn bill_window_dates(from: i64, to: i64) -> (String, String) {
    let date = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t.clamp(-377_705_116_800, 253_402_300_799))
            .map(|d| d.date())
            .unwrap_or(time::Date::MIN)
    };
    let lo = date(from).previous_day().unwrap_or(time::Date::MIN);
    let hi = date(to).next_day().unwrap_or(time::Date::MAX);
    let fmt = |d: time::Date| {
        format!(
            "{:04}-{:02}-{:02}",
            d.year().max(0),
            u8::from(d.month()),
            d.day()
        )
    };
    (fmt(lo), fmt(hi))
}

/// Keeps the rows whose `success_time` instant is in `[from, to)`.
pub(crate) fn bill_subs_in_window(
    rows: Vec<BillSubRow>,
    from: i64,
    to: i64,
) -> Result<Vec<crate::store::LocalSubOrder>, StoreError> {
    let mut out = Vec::new();
    for row in rows {
        let sub = bill_sub(row)?;
        if sub.success_unix().is_some_and(|t| t >= from && t < to) {
            out.push(sub);
        }
    }
    Ok(out)
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct OrderRow {
    pub combine_out_trade_no: String,
    pub combine_mchid: String,
    pub combine_appid: String,
    pub payer_openid: String,
    pub state: String,
    pub prepay_id: Option<String>,
    pub prepay_expires_at: Option<i64>,
    pub time_expire: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub notified_at: Option<i64>,
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SubRow {
    pub mchid: String,
    pub out_trade_no: String,
    pub description: String,
    pub attach: String,
    pub amount: i64,
    pub transaction_id: Option<String>,
    pub payer_amount: Option<i64>,
    pub bank_type: Option<String>,
    pub success_time: Option<String>,
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct EventRow {
    id: i64,
    combine_out_trade_no: String,
    from_state: Option<String>,
    to_state: String,
    source: String,
    detail: String,
    at: i64,
}

/// A notification id already recorded.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct PriorNotification {
    pub combine_out_trade_no: String,
    pub body_sha256: String,
}

fn parse_state(s: &str) -> Result<TradeState, StoreError> {
    s.parse()
        .map_err(|e| StoreError::Corrupt(format!("state: {e}")))
}

fn parse_source(s: &str) -> Result<EventSource, StoreError> {
    Ok(match s {
        "create" => EventSource::Create,
        "notify" => EventSource::Notify,
        "query" => EventSource::Query,
        "close" => EventSource::Close,
        "expiry" => EventSource::Expiry,
        other => {
            return Err(StoreError::Corrupt(format!(
                "event source {:?}",
                other.chars().take(32).collect::<String>()
            )))
        }
    })
}

/// Builds the model from an order row and its sub-order rows.
pub(crate) fn assemble(row: OrderRow, subs: Vec<SubRow>) -> Result<CombineOrder, StoreError> {
    Ok(CombineOrder {
        state: parse_state(&row.state)?,
        combine_out_trade_no: row.combine_out_trade_no,
        combine_mchid: row.combine_mchid,
        combine_appid: row.combine_appid,
        payer_openid: row.payer_openid,
        sub_orders: subs
            .into_iter()
            .map(|s| SubOrder {
                mchid: s.mchid,
                out_trade_no: s.out_trade_no,
                description: s.description,
                attach: s.attach,
                amount: s.amount,
                transaction_id: s.transaction_id,
                payer_amount: s.payer_amount,
                bank_type: s.bank_type,
                success_time: s.success_time,
            })
            .collect(),
        prepay_id: row.prepay_id,
        prepay_expires_at: row.prepay_expires_at,
        time_expire: row.time_expire,
        created_at: row.created_at,
        updated_at: row.updated_at,
        notified_at: row.notified_at,
    })
}

pub(crate) fn event(row: EventRow) -> Result<OrderEvent, StoreError> {
    Ok(OrderEvent {
        id: row.id,
        combine_out_trade_no: row.combine_out_trade_no,
        from_state: row.from_state.as_deref().map(parse_state).transpose()?,
        to_state: parse_state(&row.to_state)?,
        source: parse_source(&row.source)?,
        detail: row.detail,
        at: row.at,
    })
}

/// Checks an order handed to `create_order`.
/// The detail of an order's `create` event.
pub(crate) fn create_detail(order: &CombineOrder) -> String {
    format!(
        "created with {} sub-orders, total {} fen",
        order.sub_orders.len(),
        order.total_amount()
    )
}

pub(crate) fn validate_new(order: &CombineOrder) -> Result<(), StoreError> {
    if order.state != TradeState::NotPay {
        return Err(StoreError::Invalid(format!(
            "a new order must be NOTPAY, not {}",
            order.state
        )));
    }
    if order.combine_out_trade_no.is_empty() {
        return Err(StoreError::Invalid("empty combine_out_trade_no".into()));
    }
    if order.sub_orders.is_empty() {
        return Err(StoreError::Invalid("no sub-orders".into()));
    }
    let mut seen = HashSet::new();
    for s in &order.sub_orders {
        if s.amount < 1 {
            return Err(StoreError::Invalid(format!(
                "sub-order {} amount {} is below 1 fen",
                s.out_trade_no, s.amount
            )));
        }
        if !seen.insert((s.mchid.as_str(), s.out_trade_no.as_str())) {
            return Err(StoreError::Invalid(format!(
                "sub-order {}/{} listed twice",
                s.mchid, s.out_trade_no
            )));
        }
    }
    Ok(())
}

/// What a transition does to the order as it is under the lock.
#[derive(Debug)]
pub(crate) enum Decision {
    /// A repeat (same notification id and body, or the state already
    /// reached by a query): write nothing.
    Repeat,
    /// The state is already reached; record this new notification id (so a
    /// later replay of it with another body is caught) and nothing else.
    RecordDuplicate(NotificationRef),
    /// Refuse; write nothing.
    Reject(RejectReason),
    /// Write the new order, one event, and the notification id.
    Apply(Box<CombineOrder>),
}

/// Decides a transition against the locked `order`. Pure, so both backends
/// behave identically.
pub(crate) fn decide(
    order: &CombineOrder,
    prior: Option<&PriorNotification>,
    t: &Transition,
    now: i64,
) -> Decision {
    if let Some(n) = &t.notification {
        if let Some(p) = prior {
            let same_order = p.combine_out_trade_no == order.combine_out_trade_no;
            // WeChat Pay may re-encrypt a retry (after a lost 204): another
            // body, the same transaction. Acknowledged when what it says is
            // exactly what is stored; anything else is a real conflict.
            return if same_order
                && (p.body_sha256 == n.body_sha256 || says_what_is_stored(order, t))
            {
                Decision::Repeat
            } else {
                Decision::Reject(RejectReason::NotificationReplayed { id: n.id.clone() })
            };
        }
    }
    if let Err(reason) = check_payments(order, t) {
        return Decision::Reject(reason);
    }
    if order.state == t.to {
        return match &t.notification {
            Some(n) => Decision::RecordDuplicate(n.clone()),
            None => Decision::Repeat,
        };
    }
    if !order.state.can_become(t.to) {
        return Decision::Reject(RejectReason::IllegalTransition {
            from: order.state,
            to: t.to,
        });
    }
    let mut new = order.clone();
    new.state = t.to;
    new.updated_at = now;
    if t.source == EventSource::Notify {
        new.notified_at = Some(now);
    }
    for p in &t.payments {
        if let Some(s) = new
            .sub_orders
            .iter_mut()
            .find(|s| s.mchid == p.mchid && s.out_trade_no == p.out_trade_no)
        {
            // Facts only ever get filled in, never erased by a later answer
            // that omits them.
            s.transaction_id = p.transaction_id.clone().or(s.transaction_id.take());
            s.payer_amount = p.payer_amount.or(s.payer_amount);
            s.bank_type = p.bank_type.clone().or(s.bank_type.take());
            s.success_time = p.success_time.clone().or(s.success_time.take());
        }
    }
    Decision::Apply(Box::new(new))
}

/// Whether `t` reports the stored state and, for every sub-order it names,
/// exactly the stored payment facts (no fact missing or different).
fn says_what_is_stored(order: &CombineOrder, t: &Transition) -> bool {
    order.state == t.to
        && t.payments.iter().all(|p| {
            order
                .sub_orders
                .iter()
                .find(|s| s.mchid == p.mchid && s.out_trade_no == p.out_trade_no)
                .is_some_and(|s| {
                    s.transaction_id == p.transaction_id
                        && s.payer_amount == p.payer_amount
                        && s.bank_type == p.bank_type
                        && s.success_time == p.success_time
                })
        })
}

/// Every payment must name a sub-order of this order, and may not replace a
/// transaction id already stored.
fn check_payments(order: &CombineOrder, t: &Transition) -> Result<(), RejectReason> {
    for p in &t.payments {
        let sub = order
            .sub_orders
            .iter()
            .find(|s| s.mchid == p.mchid && s.out_trade_no == p.out_trade_no)
            .ok_or_else(|| RejectReason::UnknownSubOrder {
                mchid: p.mchid.clone(),
                out_trade_no: p.out_trade_no.clone(),
            })?;
        if let (Some(old), Some(new)) = (&sub.transaction_id, &p.transaction_id) {
            if old != new {
                return Err(RejectReason::TransactionIdChanged {
                    out_trade_no: p.out_trade_no.clone(),
                });
            }
        }
    }
    Ok(())
}

/// The sub-orders whose payment facts differ between `old` and `new`.
pub(crate) fn changed_subs<'a>(
    old: &'a CombineOrder,
    new: &'a CombineOrder,
) -> impl Iterator<Item = &'a SubOrder> {
    new.sub_orders
        .iter()
        .zip(old.sub_orders.iter())
        .filter(|(n, o)| n != o)
        .map(|(n, _)| n)
}

/// The order reads both backends run inside their transactions, generated
/// for a concrete connection type (sqlx's generic bounds across databases
/// would be longer than the code). The writes differ: PostgreSQL runs them
/// statement by statement under a row lock (`postgres.rs`), SQLite as
/// scripts inside its group commit (`sqlite.rs`).
macro_rules! sql_ops {
    ($conn:ty) => {
        use $crate::combine::CombineOrder;
        use $crate::store::shared;
        use $crate::store::StoreError;

        /// Reads an order with `select_order` (plain or `FOR UPDATE`).
        pub(super) async fn load(
            conn: &mut $conn,
            select_order: &'static str,
            no: &str,
        ) -> Result<Option<CombineOrder>, StoreError> {
            let Some(row) = sqlx::query_as::<_, shared::OrderRow>(select_order)
                .bind(no)
                .fetch_optional(&mut *conn)
                .await?
            else {
                return Ok(None);
            };
            let subs = sqlx::query_as::<_, shared::SubRow>(shared::SELECT_SUBS)
                .bind(no)
                .fetch_all(&mut *conn)
                .await?;
            shared::assemble(row, subs).map(Some)
        }

        /// Reads the orders a claim statement returned, oldest first (the
        /// order the worker handles them in).
        pub(super) async fn load_claimed(
            conn: &mut $conn,
            claimed: &[(String,)],
        ) -> Result<Vec<CombineOrder>, StoreError> {
            let mut orders = Vec::with_capacity(claimed.len());
            for (no,) in claimed {
                if let Some(o) = load(conn, shared::SELECT_ORDER, no).await? {
                    orders.push(o);
                }
            }
            orders.sort_by(|a, b| {
                (a.created_at, &a.combine_out_trade_no)
                    .cmp(&(b.created_at, &b.combine_out_trade_no))
            });
            Ok(orders)
        }
    };
}
pub(crate) use sql_ops;

/// Whether a database error is a unique-key violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::combine::SubOrderPayment;

    /// An order with one sub-order (also the SQLite store's tests' fixture).
    pub(crate) fn order(state: TradeState) -> CombineOrder {
        let sub = SubOrder::unpaid("m", "s1", "d", "", 5);
        CombineOrder {
            state,
            ..CombineOrder::unpaid("C1", "1", "wx", "o", vec![sub], None, 0)
        }
    }

    fn success(id: Option<&str>, sha: &str) -> Transition {
        Transition {
            to: TradeState::Success,
            source: EventSource::Notify,
            payments: vec![SubOrderPayment {
                mchid: "m".into(),
                out_trade_no: "s1".into(),
                transaction_id: Some("t1".into()),
                payer_amount: Some(5),
                bank_type: Some("OTHERS".into()),
                success_time: Some("2024-01-01T00:00:00+08:00".into()),
            }],
            notification: id.map(|id| NotificationRef {
                id: id.into(),
                body_sha256: sha.into(),
            }),
            detail: String::new(),
        }
    }

    #[test]
    fn decisions() {
        let t = success(Some("n1"), "aa");
        let Decision::Apply(new) = decide(&order(TradeState::NotPay), None, &t, 9) else {
            panic!()
        };
        assert_eq!(new.state, TradeState::Success);
        assert_eq!(new.notified_at, Some(9));
        assert_eq!(new.sub_orders[0].transaction_id.as_deref(), Some("t1"));

        let prior = PriorNotification {
            combine_out_trade_no: "C1".into(),
            body_sha256: "aa".into(),
        };
        assert!(matches!(
            decide(&new, Some(&prior), &t, 10),
            Decision::Repeat
        ));
        // Another body (re-encrypted retry) saying exactly what is stored.
        let other = success(Some("n1"), "bb");
        assert!(matches!(
            decide(&new, Some(&prior), &other, 10),
            Decision::Repeat
        ));
        // Another body saying something else: a conflict.
        let mut conflicting = success(Some("n1"), "bb");
        conflicting.payments[0].transaction_id = Some("t9".into());
        assert!(matches!(
            decide(&new, Some(&prior), &conflicting, 10),
            Decision::Reject(RejectReason::NotificationReplayed { .. })
        ));
        assert!(matches!(
            decide(&order(TradeState::NotPay), Some(&prior), &other, 10),
            Decision::Reject(RejectReason::NotificationReplayed { .. })
        ));
        assert!(matches!(
            decide(&new, None, &success(Some("n2"), "cc"), 10),
            Decision::RecordDuplicate(_)
        ));
        assert!(matches!(
            decide(&order(TradeState::Closed), None, &t, 10),
            Decision::Reject(RejectReason::IllegalTransition { .. })
        ));
        let mut changed = success(None, "");
        changed.payments[0].transaction_id = Some("t2".into());
        assert!(matches!(
            decide(&new, None, &changed, 10),
            Decision::Reject(RejectReason::TransactionIdChanged { .. })
        ));
        let mut stranger = success(None, "");
        stranger.payments[0].out_trade_no = "zz".into();
        assert!(matches!(
            decide(&order(TradeState::NotPay), None, &stranger, 10),
            Decision::Reject(RejectReason::UnknownSubOrder { .. })
        ));
    }
}
