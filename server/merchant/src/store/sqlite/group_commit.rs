//! The SQLite group commit. `create_order`, `set_prepay` and
//! `apply_transition` queue here; one thread takes every request queued
//! meanwhile (at most [`MAX_BATCH`]), runs them in one `BEGIN IMMEDIATE`
//! transaction — a request that fails is rolled back alone (see [`batch`])
//! — commits once, and only then answers each caller.
//! One fsync covers the batch; nobody hears "done" before the `COMMIT`
//! covering their change returned, and when the `COMMIT` fails every caller
//! of the batch gets the error.
//!
//! The thread owns a plain synchronous connection (rusqlite, on the same
//! SQLite library sqlx links) with prepared statements cached: through
//! sqlx every statement would be a round trip to a worker thread — its
//! result handed over through a channel, a thread switch each — and under
//! load this writer is the one serial step. It holds the store's write lock
//! for each batch, so the store's other (sqlx) writes take turns with it
//! instead of meeting `SQLITE_BUSY`.

use super::super::shared::{self, Decision, PriorNotification};
use super::super::StoreError;
use super::{is_unique_violation, MAX_BATCH};
use crate::combine::{ApplyOutcome, CombineOrder, Transition};
use rusqlite::{Connection, ToSql};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Mutex};

/// A write the group-commit thread runs for one caller.
#[derive(Debug)]
pub(super) enum WriteOp {
    Create(Box<CombineOrder>),
    SetPrepay {
        no: String,
        prepay_id: String,
        expires_at: i64,
    },
    Apply {
        no: String,
        transition: Box<Transition>,
        now: i64,
    },
}

/// What a write returns.
#[derive(Debug)]
pub(super) enum WriteDone {
    Unit,
    Outcome(Box<ApplyOutcome>),
}

/// A queued write and where its answer goes.
#[derive(Debug)]
pub(super) struct Job {
    pub op: WriteOp,
    pub reply: oneshot::Sender<Answer>,
}

type Answer = Result<WriteDone, StoreError>;

/// The writer's connection to the (already migrated) database at `path`,
/// with the settings of the store's other connections.
pub(super) fn open(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(busy_timeout)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
         PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;",
    )?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// The group-commit loop: runs until every store handle is dropped.
pub(super) fn run(mut conn: Connection, mut queue: mpsc::Receiver<Job>, lock: &Arc<Mutex<()>>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while let Some(job) = queue.blocking_recv() {
        jobs.push(job);
        while jobs.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        // A caller that went away (cancelled request) gets nothing done,
        // as if its own transaction had never started.
        jobs.retain(|j| !j.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        let result = {
            let _turn = lock.blocking_lock();
            let result = batch(&mut conn, &jobs);
            if result.is_err() && !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            result
        };
        tracing::trace!(
            requests = jobs.len(),
            micros = started.elapsed().as_micros() as u64,
            ok = result.is_ok(),
            "group commit"
        );
        match result {
            Ok(answers) => {
                for (job, answer) in jobs.drain(..).zip(answers) {
                    let _ = job.reply.send(answer);
                }
            }
            Err(e) => {
                // Nothing of the batch is known to be on disk: everyone fails.
                tracing::error!(error = %e, requests = jobs.len(), "group commit failed");
                let message = format!("group commit failed: {e}");
                for job in jobs.drain(..) {
                    let _ = job.reply.send(Err(StoreError::Database(sqlx::Error::Io(
                        std::io::Error::other(message.clone()),
                    ))));
                }
            }
        }
    }
}

/// One transaction for all of `jobs`. The outer error is a failure of the
/// transaction itself (BEGIN, savepoint bookkeeping, COMMIT); a job's own
/// failure is in its slot and its changes are undone.
///
/// Jobs almost never fail, so the batch first runs without savepoints
/// (each one copies every page it touches into a sub-journal — an eighth
/// of this thread's time when they were always on). If any job fails, that
/// attempt is rolled back whole and the batch runs again with a savepoint
/// per job, so the failing one is undone alone.
fn batch(conn: &mut Connection, jobs: &[Job]) -> rusqlite::Result<Vec<Answer>> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let mut answers = Vec::with_capacity(jobs.len());
    for job in jobs {
        match op(conn, &job.op) {
            Ok(Ok(done)) => answers.push(Ok(done)),
            _ => {
                if !conn.is_autocommit() {
                    conn.execute_batch("ROLLBACK")?;
                }
                return batch_with_savepoints(conn, jobs);
            }
        }
    }
    conn.execute_batch("COMMIT")?;
    Ok(answers)
}

/// [`batch`]'s careful path: each job in its own savepoint.
fn batch_with_savepoints(conn: &mut Connection, jobs: &[Job]) -> rusqlite::Result<Vec<Answer>> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let mut answers = Vec::with_capacity(jobs.len());
    for job in jobs {
        conn.execute_batch("SAVEPOINT job")?;
        let answer = match op(conn, &job.op) {
            Ok(answer) => answer,
            Err(e) => Err(e.into()),
        };
        if answer.is_ok() {
            conn.execute_batch("RELEASE job")?;
        } else {
            conn.execute_batch("ROLLBACK TO job; RELEASE job")?;
        }
        answers.push(answer);
    }
    conn.execute_batch("COMMIT")?;
    Ok(answers)
}

/// Runs `sql` (shared with PostgreSQL, so its placeholders are `$1…$n`,
/// which SQLite treats as names) with `$k` bound to `args[k - 1]`.
/// A statement and argument list that do not match is a bug, refused
/// rather than run with NULLs.
fn exec(conn: &Connection, sql: &str, args: &[&dyn ToSql]) -> rusqlite::Result<usize> {
    let mut stmt = conn.prepare_cached(sql)?;
    if stmt.parameter_count() != args.len() {
        return Err(rusqlite::Error::InvalidParameterCount(
            args.len(),
            stmt.parameter_count(),
        ));
    }
    // SQLite numbers parameters by first appearance, so `$2` may be
    // parameter 1. Distinct names have distinct indexes, so with the counts
    // equal and every name one of `$1…$n` (no leading zeros), each `$k` is
    // bound exactly once.
    for idx in 1..=args.len() {
        let k = stmt
            .parameter_name(idx)
            .and_then(|name| name.strip_prefix('$'))
            .filter(|k| !k.starts_with('0'))
            .and_then(|k| k.parse::<usize>().ok())
            .filter(|k| (1..=args.len()).contains(k));
        let Some(k) = k else {
            let name = stmt.parameter_name(idx).unwrap_or("?").to_string();
            return Err(rusqlite::Error::InvalidParameterName(name));
        };
        stmt.raw_bind_parameter(idx, args[k - 1])?;
    }
    stmt.raw_execute()
}

/// One job's statements. The outer error is the database's; the inner one
/// a refusal (unknown order, number taken). Either way [`batch`] undoes
/// what the job wrote.
fn op(conn: &Connection, op: &WriteOp) -> rusqlite::Result<Answer> {
    match op {
        WriteOp::Create(order) => create(conn, order),
        WriteOp::SetPrepay {
            no,
            prepay_id,
            expires_at,
        } => {
            let n = exec(conn, shared::UPDATE_PREPAY, &[no, prepay_id, expires_at])?;
            Ok(if n == 0 {
                Err(StoreError::NotFound(no.clone()))
            } else {
                Ok(WriteDone::Unit)
            })
        }
        WriteOp::Apply {
            no,
            transition,
            now,
        } => apply(conn, no, transition, *now),
    }
}

/// The order, its sub-orders and the `create` event.
fn create(conn: &Connection, o: &CombineOrder) -> rusqlite::Result<Answer> {
    let no = &o.combine_out_trade_no;
    let r = exec(
        conn,
        shared::INSERT_ORDER,
        &[
            no,
            &o.combine_mchid,
            &o.combine_appid,
            &o.payer_openid,
            &o.state.as_str(),
            &o.prepay_id,
            &o.prepay_expires_at,
            &o.time_expire,
            &o.created_at,
            &o.updated_at,
            &o.notified_at,
        ],
    );
    match r {
        Err(e) if is_unique_violation(&e) => return Ok(Err(StoreError::Duplicate(no.clone()))),
        r => r?,
    };
    for (i, s) in o.sub_orders.iter().enumerate() {
        let r = exec(
            conn,
            shared::INSERT_SUB,
            &[
                &s.mchid,
                &s.out_trade_no,
                no,
                &(i as i64),
                &s.description,
                &s.attach,
                &s.amount,
                &s.transaction_id,
                &s.payer_amount,
                &s.bank_type,
                &s.success_time,
            ],
        );
        match r {
            Err(e) if is_unique_violation(&e) => {
                return Ok(Err(StoreError::Duplicate(format!(
                    "{}/{}",
                    s.mchid, s.out_trade_no
                ))))
            }
            r => r?,
        };
    }
    exec(
        conn,
        shared::INSERT_EVENT,
        &[
            no,
            &None::<String>,
            &o.state.as_str(),
            &"create",
            &None::<String>,
            &shared::create_detail(o),
            &o.created_at,
        ],
    )?;
    Ok(Ok(WriteDone::Unit))
}

/// Reads the order and the notification id's record, lets
/// [`shared::decide`] judge, and writes what `apply_locked` writes for
/// PostgreSQL: order, changed sub-orders, event, outbox event (the webhook
/// commits with the change), notification id.
fn apply(conn: &Connection, no: &str, t: &Transition, now: i64) -> rusqlite::Result<Answer> {
    let Some((row, subs)) = super::order_reads::load_order(conn, no)? else {
        return Ok(Err(StoreError::NotFound(no.to_string())));
    };
    let order = match shared::assemble(row, subs) {
        Ok(o) => o,
        Err(e) => return Ok(Err(e)),
    };
    let prior = match &t.notification {
        Some(n) => {
            let mut stmt = conn.prepare_cached(shared::SELECT_NOTIFICATION)?;
            let mut rows = stmt.query([&n.id])?;
            match rows.next()? {
                Some(r) => Some(PriorNotification {
                    combine_out_trade_no: r.get(0)?,
                    body_sha256: r.get(1)?,
                }),
                None => None,
            }
        }
        None => None,
    };
    let new = match shared::decide(&order, prior.as_ref(), t, now) {
        Decision::Repeat => {
            return Ok(Ok(WriteDone::Outcome(Box::new(
                ApplyOutcome::AlreadyApplied(order),
            ))))
        }
        Decision::Reject(reason) => {
            return Ok(Ok(WriteDone::Outcome(Box::new(ApplyOutcome::Rejected {
                order,
                reason,
            }))))
        }
        Decision::RecordDuplicate(n) => {
            exec(
                conn,
                shared::INSERT_DUPLICATE_NOTIFICATION,
                &[&n.id, &no, &n.body_sha256, &"duplicate", &now],
            )?;
            return Ok(Ok(WriteDone::Outcome(Box::new(
                ApplyOutcome::AlreadyApplied(order),
            ))));
        }
        Decision::Apply(new) => new,
    };
    exec(
        conn,
        shared::UPDATE_ORDER_STATE,
        &[&no, &new.state.as_str(), &new.updated_at, &new.notified_at],
    )?;
    for s in shared::changed_subs(&order, &new) {
        exec(
            conn,
            shared::UPDATE_SUB_PAYMENT,
            &[
                &s.mchid,
                &s.out_trade_no,
                &s.transaction_id,
                &s.payer_amount,
                &s.bank_type,
                &s.success_time,
            ],
        )?;
    }
    exec(
        conn,
        shared::INSERT_EVENT,
        &[
            &no,
            &order.state.as_str(),
            &new.state.as_str(),
            &t.source.as_str(),
            &t.notification.as_ref().map(|n| n.id.clone()),
            &t.detail,
            &now,
        ],
    )?;
    if let Some(kind) = crate::outbox::EventKind::for_state(new.state) {
        let seq: i64 = conn
            .prepare_cached(shared::NEXT_OUTBOX_SEQ)?
            .query_row([no], |r| r.get(0))?;
        let id = crate::outbox::new_event_id();
        let payload = crate::outbox::payload(&id, kind, seq, &new, now);
        exec(
            conn,
            shared::INSERT_OUTBOX,
            &[&id, &no, &seq, &kind.as_str(), &payload, &now],
        )?;
    }
    if let Some(n) = &t.notification {
        exec(
            conn,
            shared::INSERT_NOTIFICATION,
            &[&n.id, &no, &n.body_sha256, &"applied", &now],
        )?;
    }
    Ok(Ok(WriteDone::Outcome(Box::new(ApplyOutcome::Applied(
        *new,
    )))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `$k` binds `args[k - 1]` wherever `$k` first appears; a statement
    /// whose placeholders do not match the arguments is refused.
    #[test]
    fn exec_binds_by_name_and_refuses_mismatches() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (a TEXT, b TEXT)")
            .unwrap();
        let n = exec(&conn, "INSERT INTO t (b, a) VALUES ($2, $1)", &[&"A", &"B"]).unwrap();
        assert_eq!(n, 1);
        let (a, b): (String, String) = conn
            .query_row("SELECT a, b FROM t", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!((a.as_str(), b.as_str()), ("A", "B"));
        assert!(matches!(
            exec(&conn, "INSERT INTO t (a) VALUES ($1)", &[&"A", &"B"]),
            Err(rusqlite::Error::InvalidParameterCount(2, 1))
        ));
        assert!(matches!(
            exec(&conn, "INSERT INTO t (a, b) VALUES ($1, $3)", &[&"A", &"B"]),
            Err(rusqlite::Error::InvalidParameterName(n)) if n == "$3"
        ));
        assert!(matches!(
            exec(&conn, "INSERT INTO t (a, b) VALUES ($1, $01)", &[&"A", &"B"]),
            Err(rusqlite::Error::InvalidParameterName(n)) if n == "$01"
        ));
        assert!(matches!(
            exec(&conn, "INSERT INTO t (a, b) VALUES ($1, :b)", &[&"A", &"B"]),
            Err(rusqlite::Error::InvalidParameterName(n)) if n == ":b"
        ));
    }
}
