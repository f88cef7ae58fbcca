//! Short reads (a balance, with or without its split by expiry) on rusqlite connections, on
//! the calling thread.
//!
//! A read through sqlx's SQLite pool crosses threads twice: the query goes to the connection's
//! worker thread and its row comes back to the task. For a balance (one `SUM` over an address's
//! lots, ~10–200 µs) those hand-offs cost as much as the query: a `perf record` of W3's HTTP
//! reads put 41 % of the samples on sqlx's worker threads and ~25 % in the kernel's task
//! switching (BENCHMARKS.md, issue 10, twelfth session). Here the statement runs where the
//! request is, on a read-only connection taken from a small idle list. Each statement is its
//! own read transaction, so it sees every commit made before it began, as a pooled read does.
//!
//! The query blocks its thread for as long as it runs, like any synchronous SQLite call. A
//! balance reads one address's lots through the lots table's primary key: it stays short unless
//! an address holds tens of thousands of live lots.

use lotledger_core::{BalanceDetail, Credits, HistoryRow, Timestamp, balance_details_from_sums};
use lotledger_store::StoreError;
use lotledger_store::pooled::Dialect;
use rusqlite::{Connection, OpenFlags};
use std::path::PathBuf;
use std::sync::Mutex;

use crate::wrappers::{open_connection, sqlite_err as err, ts};

/// Idle connections kept; more are opened when more readers run at once, and closed after.
pub(crate) const IDLE_MAX: usize = 8;

/// The read-only connections of one database file.
#[derive(Debug)]
pub(crate) struct QuickReads {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// The rows a replay reads of the address bound to its parameter, with their references' ids:
/// every column is in `ix_credit_history_address` (migration 0014), so the rows are read from
/// the index alone.
pub const REPLAY_ROWS: &str = concat!(
    "SELECT ref_id, credit_index, amount, expiration_date, message_timestamp, policy \
     FROM credit_history WHERE address_id = ",
    address_id!()
);

impl QuickReads {
    pub(crate) fn new(path: PathBuf) -> QuickReads {
        QuickReads {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The balance of `address` at `at`: the same statement as the pooled read.
    pub(crate) fn balance(&self, address: &str, at: Timestamp) -> Result<Credits, StoreError> {
        self.with(|conn| {
            let mut statement = conn
                .prepare_cached(balance_sum!(address_id!()))
                .map_err(err)?;
            let sum: Option<i64> = statement
                .query_row(rusqlite::params![address, at.as_micros()], |r| r.get(0))
                .map_err(err)?;
            Ok(lotledger_store::balance_from_sum(sum))
        })
    }

    /// The balance of `address` at `at` and its split by expiry: the pooled read's statement
    /// (`Dialect::BALANCE_GROUPS`).
    pub(crate) fn balance_details(
        &self,
        address: &str,
        at: Timestamp,
    ) -> Result<(Credits, Vec<BalanceDetail>), StoreError> {
        let sums = self.with(|conn| {
            let mut statement = conn
                .prepare_cached(<sqlx::Sqlite as Dialect>::BALANCE_GROUPS)
                .map_err(err)?;
            let rows = statement
                .query_map(rusqlite::params![address, at.as_micros()], |r| {
                    Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, i64>(1)?))
                })
                .map_err(err)?;
            let mut sums = Vec::new();
            for row in rows {
                let (expiry, sum) = row.map_err(err)?;
                let expiry = expiry.map(ts).transpose()?;
                sums.push((expiry, Credits(sum)));
            }
            Ok(sums)
        })?;
        balance_details_from_sums(sums)
            .ok_or_else(|| StoreError::Overflow(format!("balance of {address}")))
    }

    /// `address`'s history rows as a replay reads them ([`lotledger_store::Store::replay_history`]):
    /// the rows by reference id, then each distinct reference's text read once.
    pub(crate) fn replay_history(&self, address: &str) -> Result<Vec<HistoryRow>, StoreError> {
        self.with(|conn| {
            let mut rows = conn.prepare_cached(REPLAY_ROWS).map_err(err)?;
            let mut found = rows.query(rusqlite::params![address]).map_err(err)?;
            // The rows and their reference ids side by side, each text set in place: no second
            // vector of rows (~360 bytes each) to copy them into.
            let mut rows_out: Vec<HistoryRow> = Vec::new();
            let mut ids: Vec<i64> = Vec::new();
            while let Some(r) = found.next().map_err(err)? {
                let mut row = HistoryRow::bare(
                    address,
                    Credits(r.get(2).map_err(err)?),
                    "",
                    r.get(1).map_err(err)?,
                    ts(r.get(4).map_err(err)?)?,
                );
                row.expiration_date = r
                    .get::<_, Option<i64>>(3)
                    .map_err(err)?
                    .map(ts)
                    .transpose()?;
                row.policy = lotledger_store::rows::policy(r.get(5).map_err(err)?)?;
                ids.push(r.get(0).map_err(err)?);
                rows_out.push(row);
            }
            let mut text = conn
                .prepare_cached(concat!(
                    "SELECT ",
                    ref_text!(),
                    " FROM refs r WHERE r.id = ?1"
                ))
                .map_err(err)?;
            let mut texts: foldhash::HashMap<i64, String> = foldhash::HashMap::default();
            for (row, id) in rows_out.iter_mut().zip(ids) {
                row.credit_ref = match texts.get(&id) {
                    Some(name) => name.clone(),
                    None => {
                        let name: String = text
                            .query_row(rusqlite::params![id], |r| r.get(0))
                            .map_err(err)?;
                        texts.insert(id, name.clone());
                        name
                    }
                };
            }
            Ok(rows_out)
        })
    }

    /// Runs `read` on an idle connection (or a new one), then keeps the connection if the idle
    /// list has room. A connection whose read failed is closed, not kept.
    fn with<T>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match idle {
            Some(conn) => conn,
            None => self.open()?,
        };
        let out = read(&conn)?;
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < IDLE_MAX
        {
            idle.push(conn);
        }
        Ok(out)
    }

    /// How many connections wait in the idle list.
    #[cfg(test)]
    pub(crate) fn idle_count(&self) -> usize {
        self.idle.lock().map(|idle| idle.len()).unwrap_or(0)
    }

    fn open(&self) -> Result<Connection, StoreError> {
        open_connection(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            "PRAGMA cache_size = -16384; PRAGMA temp_store = MEMORY;",
        )
    }
}
