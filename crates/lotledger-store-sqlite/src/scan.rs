//! Verify and rebuild (`repair`) on a connection of their own (rusqlite, on a blocking thread),
//! reading the tables front to back into a [`lotledger_store::scan::Pass`].
//!
//! The reads of [`crate::SqliteTx`] fetch an address's history through the address index: a
//! descent of the history b-tree per row, another into `refs`, and every value copied across
//! sqlx's worker channel — some 3 µs a row. Whole-ledger maintenance reads far more than that
//! index is worth: scanning `credit_history`, `credit_lots` and `refs` in storage order and
//! keeping the rows of the addresses asked for costs a tenth of it (BENCHMARKS.md, W4). A
//! batch holding less than [`SCAN_FRACTION`] of the history is read through the indexes
//! instead, one prepared statement per address. Either way each pass holds at most
//! [`PASS_ROWS`] history rows in memory, in one deferred transaction (one snapshot). Rebuild
//! first verifies so, without the write lock; only if some address drifted does it take the
//! lock (`BEGIN IMMEDIATE`), check those addresses again and rewrite the lots of each whose
//! cache differs from the replay, advancing the file's generation as every write transaction
//! does. A healthy ledger is repaired without a write.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lotledger_store::scan::{Entry, IdMap, Pass, SlotTable, Slotted, cores};
use lotledger_store::{AddressRows, Drift, StoreError, addresses_of, compact};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::wrappers::{open_connection, sqlite_err as err};

pub use lotledger_store::scan::{PASS_ROWS, SCAN_FRACTION};

/// Where the scans read: the database file.
#[derive(Debug, Clone)]
pub struct ScanFile {
    path: PathBuf,
    pass_rows: u64,
}

/// How a pass reads its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Decide by the pass's share of the history.
    Auto,
    /// Whole tables, front to back.
    Scan,
    /// One index seek per address.
    Seek,
}

impl ScanFile {
    /// The scans of the database file at `path` (an in-memory database has none: see
    /// `SqliteStore::open`).
    pub fn new(path: &Path) -> ScanFile {
        ScanFile {
            path: path.to_path_buf(),
            pass_rows: PASS_ROWS,
        }
    }

    /// The same scans with at most `rows` history rows per pass (at least one address each).
    pub fn with_pass_rows(self, rows: u64) -> ScanFile {
        ScanFile {
            pass_rows: rows,
            ..self
        }
    }

    fn open(&self, write: bool) -> Result<Connection, StoreError> {
        let flags = if write {
            OpenFlags::SQLITE_OPEN_READ_WRITE
        } else {
            OpenFlags::SQLITE_OPEN_READ_ONLY
        } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        open_connection(
            &self.path,
            flags,
            "PRAGMA synchronous = FULL; PRAGMA cache_size = -65536; PRAGMA temp_store = MEMORY; \
             PRAGMA mmap_size = 17179869184;",
        )
    }

    /// The drifts among the addresses of `batch` (any order; reported in that order).
    pub fn verify(&self, batch: &[AddressRows], access: Access) -> Result<Vec<Drift>, StoreError> {
        let mut conn = self.open(false)?;
        let tx = conn.transaction().map_err(err)?;
        let mut drifts = Vec::new();
        for_each_pass(&tx, batch, access, self.pass_rows, |pass| {
            drifts.extend(pass.drifts()?);
            Ok(())
        })?;
        tx.rollback().map_err(err)?;
        Ok(drifts)
    }

    /// Rewrites the lots of every address of `batch` whose cache differs from the replay of
    /// its history, in one write transaction. Returns how many were rewritten.
    ///
    /// The addresses are first verified in a read snapshot, without the write lock; those
    /// found clean are left alone (every writer keeps the addresses it touches equal to their
    /// replay, so a clean address stays clean), the drifted ones are checked again under the
    /// lock.
    pub fn rebuild(&self, batch: &[AddressRows], access: Access) -> Result<usize, StoreError> {
        let drifts = self.verify(batch, access)?;
        if drifts.is_empty() {
            return Ok(0);
        }
        let rows: HashMap<&str, u64> = batch.iter().map(|(a, n)| (a.as_str(), *n)).collect();
        let drifted: Vec<AddressRows> = drifts
            .into_iter()
            .map(|d| {
                let n = rows.get(d.address.as_str()).copied().unwrap_or(0);
                (d.address, n)
            })
            .collect();
        let mut conn = self.open(true)?;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        advance_generation(&tx)?;
        let mut rewritten = 0;
        {
            let mut delete = tx
                .prepare("DELETE FROM credit_lots WHERE address_id = ?1")
                .map_err(err)?;
            let mut insert = tx
                .prepare(
                    "INSERT INTO credit_lots (address_id, message_timestamp, ref_id, \
                     credit_index, amount_remaining, expiration_date) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(err)?;
            for_each_pass(&tx, &drifted, access, self.pass_rows, |pass| {
                for (slot, _, replayed) in pass.drifted(cores())? {
                    let Some(address_id) = pass.id(slot) else {
                        continue;
                    };
                    delete.execute(params![address_id]).map_err(err)?;
                    for lot in &replayed {
                        insert
                            .execute(params![
                                address_id, lot.ts, lot.ref_id, lot.index, lot.amount, lot.expiry,
                            ])
                            .map_err(err)?;
                    }
                    rewritten += 1;
                }
                Ok(())
            })?;
        }
        tx.commit().map_err(err)?;
        Ok(rewritten)
    }
}

/// Advances `PRAGMA user_version` as [`crate::SqliteStore`]'s write transactions do, so that
/// no batch cache survives this write.
fn advance_generation(conn: &Connection) -> Result<(), StoreError> {
    let before: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err)?;
    let after = crate::next_generation(before);
    conn.execute_batch(&format!("PRAGMA user_version = {after}"))
        .map_err(err)
}

/// Splits `batch` into passes of at most `pass_rows` history rows by its counts (an address
/// larger than that is a pass of its own), loads each and hands it to `each`.
fn for_each_pass(
    conn: &Connection,
    batch: &[AddressRows],
    access: Access,
    pass_rows: u64,
    mut each: impl FnMut(&Pass<'_>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let total: i64 = conn
        .query_row("SELECT count(*) FROM credit_history", [], |r| r.get(0))
        .map_err(err)?;
    let total = u64::try_from(total).unwrap_or(0);
    let mut id_of = conn
        .prepare("SELECT id FROM addresses WHERE address = ?1")
        .map_err(err)?;
    let addresses = addresses_of(batch);
    let counts: Vec<u64> = batch.iter().map(|(_, n)| *n).collect();
    let mut ids = Vec::with_capacity(addresses.len());
    for address in &addresses {
        let id: Option<i64> = id_of
            .query_row(params![address], |r| r.get(0))
            .optional()
            .map_err(err)?;
        ids.push(id);
    }
    let mut start = 0;
    while start < addresses.len() {
        let mut end = start;
        let mut rows = 0u64;
        while end < addresses.len()
            && (end == start || rows.saturating_add(counts[end]) <= pass_rows)
        {
            rows = rows.saturating_add(counts[end]);
            end += 1;
        }
        let scan = match access {
            Access::Scan => true,
            Access::Seek => false,
            Access::Auto => rows.saturating_mul(SCAN_FRACTION) >= total,
        };
        let pass = load(conn, &addresses[start..end], &ids[start..end], rows, scan)?;
        each(&pass)?;
        start = end;
    }
    Ok(())
}

fn entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    Ok(Entry {
        ts: r.get(1)?,
        ref_id: r.get(2)?,
        index: r.get(3)?,
        amount: r.get(4)?,
        expiry: r.get(5)?,
        policy: {
            let code: i64 = r.get(6)?;
            lotledger_core::Policy::from_code(code).ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    6,
                    rusqlite::types::Type::Integer,
                    format!("unknown drain policy number {code}").into(),
                )
            })?
        },
    })
}

/// Reads the pass's history rows (`rows` of them), lots and reference texts, by whole-table
/// scans or per address.
fn load<'a>(
    conn: &Connection,
    addresses: &'a [String],
    ids: &[Option<i64>],
    rows: u64,
    scan: bool,
) -> Result<Pass<'a>, StoreError> {
    // `rows` comes from the caller's counts, a hint: never reserve past a whole pass on it.
    let mut history: Vec<Slotted> =
        Vec::with_capacity(usize::try_from(rows.min(PASS_ROWS)).unwrap_or(0));
    let mut lots: Vec<Slotted> = Vec::new();
    // Columns: address id, then an `Entry`.
    const HISTORY: &str = "SELECT address_id, message_timestamp, ref_id, credit_index, amount, \
                           expiration_date, policy FROM credit_history";
    const LOTS: &str = "SELECT address_id, message_timestamp, ref_id, credit_index, \
                        amount_remaining, expiration_date, 1 FROM credit_lots";
    if scan {
        let slots = SlotTable::new(ids);
        for (sql, into) in [(HISTORY, &mut history), (LOTS, &mut lots)] {
            let mut stmt = conn.prepare(sql).map_err(err)?;
            let mut found = stmt.query([]).map_err(err)?;
            while let Some(r) = found.next().map_err(err)? {
                if let Some(slot) = slots.get(r.get(0).map_err(err)?) {
                    into.push((slot, entry(r).map_err(err)?));
                }
            }
        }
    } else {
        let mut by_history = conn
            .prepare(&format!("{HISTORY} WHERE address_id = ?1"))
            .map_err(err)?;
        let mut by_lots = conn
            .prepare(&format!("{LOTS} WHERE address_id = ?1"))
            .map_err(err)?;
        for (slot, id) in ids.iter().enumerate() {
            let Some(id) = id else { continue };
            for (stmt, into) in [(&mut by_history, &mut history), (&mut by_lots, &mut lots)] {
                let mut found = stmt.query(params![id]).map_err(err)?;
                while let Some(r) = found.next().map_err(err)? {
                    into.push((slot, entry(r).map_err(err)?));
                }
            }
        }
    }
    let mut pass = Pass::new(addresses, ids.to_vec(), history, lots);
    let texts = ref_texts(conn, pass.wanted_refs()?)?;
    pass.set_refs(texts)?;
    Ok(pass)
}

/// Fills in the texts of `wanted`, by a scan of `refs` when they are at least a
/// [`SCAN_FRACTION`] of it, else one seek per reference.
fn ref_texts(
    conn: &Connection,
    mut wanted: IdMap<Option<String>>,
) -> Result<IdMap<Option<String>>, StoreError> {
    if wanted.is_empty() {
        return Ok(wanted);
    }
    let top: Option<i64> = conn
        .query_row("SELECT max(id) FROM refs", [], |r| r.get(0))
        .map_err(err)?;
    let wanted_count = u64::try_from(wanted.len()).unwrap_or(u64::MAX);
    let scan = wanted_count.saturating_mul(SCAN_FRACTION)
        >= top.and_then(|t| u64::try_from(t).ok()).unwrap_or(0);
    let ids: Vec<i64> = wanted.keys().copied().collect();
    let mut keep = |id: i64, value: ValueRef<'_>| -> Result<(), StoreError> {
        if let Some(text) = wanted.get_mut(&id) {
            *text = Some(ref_text(id, value)?);
        }
        Ok(())
    };
    if scan {
        let mut stmt = conn.prepare("SELECT id, ref FROM refs").map_err(err)?;
        let mut rows = stmt.query([]).map_err(err)?;
        while let Some(r) = rows.next().map_err(err)? {
            keep(r.get(0).map_err(err)?, r.get_ref(1).map_err(err)?)?;
        }
    } else {
        let mut stmt = conn
            .prepare("SELECT id, ref FROM refs WHERE id = ?1")
            .map_err(err)?;
        for id in ids {
            let mut rows = stmt.query(params![id]).map_err(err)?;
            if let Some(r) = rows.next().map_err(err)? {
                keep(r.get(0).map_err(err)?, r.get_ref(1).map_err(err)?)?;
            }
        }
    }
    Ok(wanted)
}

/// A stored reference as text: a BLOB (a 64-hex hash) as lower-case hex, a TEXT as it is.
fn ref_text(id: i64, value: ValueRef<'_>) -> Result<String, StoreError> {
    match value {
        ValueRef::Blob(bytes) => Ok(compact::lower_hex("", bytes)),
        ValueRef::Text(text) => String::from_utf8(text.to_vec())
            .map_err(|_| StoreError::Corrupt(format!("reference {id} is not UTF-8"))),
        _ => Err(StoreError::Corrupt(format!(
            "reference {id} is neither a BLOB nor a TEXT"
        ))),
    }
}
