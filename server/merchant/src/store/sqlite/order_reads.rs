//! `get_order`, the store's hottest read — every notification, query and
//! order page looks the order up — on plain synchronous connections, run
//! on the calling thread. Through sqlx each read was a round trip to a
//! connection's worker thread with every row handed back through a
//! channel; a WAL reader never waits for the writer, and the read is two
//! indexed lookups, so doing it in place costs less than the hand-offs.
//! The group-commit thread loads orders with the same [`load_order`].

use super::super::shared::{self, OrderRow, SubRow};
use super::super::StoreError;
use crate::combine::CombineOrder;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Idle connections kept for reuse (one per thread reading at once).
const MAX_IDLE: usize = 8;

/// Read-only connections to the store's file, opened on demand.
#[derive(Debug)]
pub(super) struct OrderReaders {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
}

impl OrderReaders {
    pub(super) fn new(path: &Path, busy_timeout: Duration) -> Self {
        Self {
            path: path.to_path_buf(),
            busy_timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The order and its sub-orders, from one snapshot.
    pub(super) fn get_order(&self, no: &str) -> Result<Option<CombineOrder>, StoreError> {
        let reused = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match reused {
            Some(conn) => conn,
            None => self.open()?,
        };
        let loaded = read_order(&conn, no);
        if conn.is_autocommit() {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
        match loaded? {
            Some((row, subs)) => shared::assemble(row, subs).map(Some),
            None => Ok(None),
        }
    }

    fn open(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open(&self.path)?;
        conn.busy_timeout(self.busy_timeout)?;
        conn.execute_batch("PRAGMA query_only = ON;")?;
        conn.set_prepared_statement_cache_capacity(8);
        Ok(conn)
    }
}

/// [`load_order`] in its own read transaction (one snapshot for both
/// statements).
fn read_order(conn: &Connection, no: &str) -> rusqlite::Result<Option<(OrderRow, Vec<SubRow>)>> {
    let tx = conn.unchecked_transaction()?;
    let loaded = load_order(&tx, no)?;
    tx.commit()?;
    Ok(loaded)
}

/// The order row and its sub-order rows, inside the caller's transaction.
pub(super) fn load_order(
    conn: &Connection,
    no: &str,
) -> rusqlite::Result<Option<(OrderRow, Vec<SubRow>)>> {
    let mut stmt = conn.prepare_cached(shared::SELECT_ORDER)?;
    let mut rows = stmt.query([no])?;
    let Some(r) = rows.next()? else {
        return Ok(None);
    };
    let row = OrderRow {
        combine_out_trade_no: r.get(0)?,
        combine_mchid: r.get(1)?,
        combine_appid: r.get(2)?,
        payer_openid: r.get(3)?,
        state: r.get(4)?,
        prepay_id: r.get(5)?,
        prepay_expires_at: r.get(6)?,
        time_expire: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
        notified_at: r.get(10)?,
    };
    drop(rows);
    let mut stmt = conn.prepare_cached(shared::SELECT_SUBS)?;
    let subs = stmt
        .query_map([no], |r| {
            Ok(SubRow {
                mchid: r.get(0)?,
                out_trade_no: r.get(1)?,
                description: r.get(2)?,
                attach: r.get(3)?,
                amount: r.get(4)?,
                transaction_id: r.get(5)?,
                payer_amount: r.get(6)?,
                bank_type: r.get(7)?,
                success_time: r.get(8)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some((row, subs)))
}
