//! Verify and rebuild (`repair`) on a connection of their own (rusqlite, on a blocking thread),
//! reading the tables front to back.
//!
//! The reads of [`crate::SqliteTx`] fetch an address's history through the address index: a
//! descent of the history b-tree per row, another into `refs`, and every value copied across
//! sqlx's worker channel — some 3 µs a row. Whole-ledger maintenance reads far more than that
//! index is worth: scanning `credit_history`, `credit_lots` and `refs` in storage order and
//! keeping the rows of the addresses asked for costs a tenth of it (BENCHMARKS.md, W4). A
//! batch holding less than [`SCAN_FRACTION`] of the history is read through the indexes
//! instead, one prepared statement per address. Either way each pass holds at most
//! [`PASS_ROWS`] history rows in memory, and everything happens in one transaction: a
//! deferred one (one snapshot) for verify, `BEGIN IMMEDIATE` for rebuild, which rewrites the
//! lots of the addresses whose cache differs from the replay and advances the file's
//! generation as every write transaction does.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use lotledger_core::{Credits, Lot, ReplayRow, Timestamp, replay_rows};
use lotledger_store::{Drift, StoreError, compact};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

/// History rows one pass holds in memory at most (about 60 bytes each, plus the reference
/// texts of the pass).
pub const PASS_ROWS: u64 = 2_000_000;
/// A pass reads whole tables when its rows are at least this fraction of the history (1 / N),
/// and seeks each address through the indexes otherwise.
pub const SCAN_FRACTION: u64 = 20;

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

/// One history row or lot of a pass, by ids: `amount` is a row's amount or a lot's remainder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Entry {
    ts: i64,
    ref_id: i64,
    index: i32,
    amount: i64,
    expiry: Option<i64>,
}

/// An entry under the position of its address in the pass.
type Slotted = (usize, Entry);

/// Hashes a row id (already well spread over its low bits) by one multiplication.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_i64(&mut self, id: i64) {
        self.0 = u64::from_ne_bytes(id.to_ne_bytes()).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A map keyed by row ids.
type IdMap<V> = HashMap<i64, V, BuildHasherDefault<IdHasher>>;

/// The rows and lots of one pass, each under the position of its address in `addresses`,
/// sorted by it.
struct Pass<'a> {
    addresses: &'a [String],
    /// The address's interned id, by position in `addresses` (none: never interned).
    ids: Vec<Option<i64>>,
    rows: Vec<Slotted>,
    lots: Vec<Slotted>,
    /// The text of every reference the pass names.
    refs: IdMap<String>,
}

fn err(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(ref f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            StoreError::Unavailable(Box::new(e))
        }
        other => StoreError::Database(Box::new(other)),
    }
}

fn ts(micros: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_micros(micros)
        .map_err(|e| StoreError::Corrupt(format!("instant {micros}: {e}")))
}

impl ScanFile {
    /// The scans of the database at `path`; `None` for an in-memory database, which no other
    /// connection can open.
    pub fn new(path: &Path) -> Option<ScanFile> {
        let name = path.to_string_lossy();
        if name.is_empty() || name == ":memory:" || name.contains("mode=memory") {
            return None;
        }
        Some(ScanFile {
            path: path.to_path_buf(),
            pass_rows: PASS_ROWS,
        })
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
        let conn = Connection::open_with_flags(&self.path, flags).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        conn.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA cache_size = -65536; PRAGMA temp_store = MEMORY; \
             PRAGMA mmap_size = 17179869184;",
        )
        .map_err(err)?;
        Ok(conn)
    }

    /// The drifts among `addresses` (any order; reported in that order).
    pub fn verify(&self, addresses: &[String], access: Access) -> Result<Vec<Drift>, StoreError> {
        let mut conn = self.open(false)?;
        let tx = conn.transaction().map_err(err)?;
        let mut drifts = Vec::new();
        for_each_pass(&tx, addresses, access, self.pass_rows, |pass| {
            for (slot, rows, lots) in pass.addresses() {
                drifts.extend(pass.check(slot, rows, lots)?.map(|(drift, _)| drift));
            }
            Ok(())
        })?;
        tx.rollback().map_err(err)?;
        Ok(drifts)
    }

    /// Rewrites the lots of every address among `addresses` whose cache differs from the
    /// replay of its history, in one write transaction. Returns how many were rewritten.
    pub fn rebuild(&self, addresses: &[String], access: Access) -> Result<usize, StoreError> {
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
            for_each_pass(&tx, addresses, access, self.pass_rows, |pass| {
                for (slot, rows, lots) in pass.addresses() {
                    let (Some((_, replayed)), Some(Some(address_id))) =
                        (pass.check(slot, rows, lots)?, pass.ids.get(slot))
                    else {
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

/// Splits `addresses` into passes of at most `pass_rows` history rows (an address larger than
/// that is a pass of its own), loads each and hands it to `each`.
fn for_each_pass<'a>(
    conn: &Connection,
    addresses: &'a [String],
    access: Access,
    pass_rows: u64,
    mut each: impl FnMut(&Pass<'a>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let total: i64 = conn
        .query_row("SELECT count(*) FROM credit_history", [], |r| r.get(0))
        .map_err(err)?;
    let total = u64::try_from(total).unwrap_or(0);
    let mut id_of = conn
        .prepare("SELECT id FROM addresses WHERE address = ?1")
        .map_err(err)?;
    let mut count_of = conn
        .prepare("SELECT count(*) FROM credit_history WHERE address_id = ?1")
        .map_err(err)?;
    let mut ids = Vec::with_capacity(addresses.len());
    let mut counts = Vec::with_capacity(addresses.len());
    for address in addresses {
        let id: Option<i64> = id_of
            .query_row(params![address], |r| r.get(0))
            .optional()
            .map_err(err)?;
        let count: i64 = match id {
            Some(id) => count_of.query_row(params![id], |r| r.get(0)).map_err(err)?,
            None => 0,
        };
        ids.push(id);
        counts.push(u64::try_from(count).unwrap_or(0));
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
    })
}

/// Reads the pass's history rows (`rows` of them) and lots, by whole-table scans or per
/// address.
fn load<'a>(
    conn: &Connection,
    addresses: &'a [String],
    ids: &[Option<i64>],
    rows: u64,
    scan: bool,
) -> Result<Pass<'a>, StoreError> {
    let mut pass = Pass {
        addresses,
        ids: ids.to_vec(),
        rows: Vec::with_capacity(usize::try_from(rows).unwrap_or(0)),
        lots: Vec::new(),
        refs: IdMap::default(),
    };
    // Columns: address id, then an `Entry`.
    const HISTORY: &str = "SELECT address_id, message_timestamp, ref_id, credit_index, amount, \
                           expiration_date FROM credit_history";
    const LOTS: &str = "SELECT address_id, message_timestamp, ref_id, credit_index, \
                        amount_remaining, expiration_date FROM credit_lots";
    if scan {
        // The pass's slot by address id (ids are dense row ids: a table, not a hash).
        let top = ids.iter().flatten().copied().max().unwrap_or(0);
        let mut slot_of = vec![usize::MAX; usize::try_from(top).unwrap_or(0).saturating_add(1)];
        for (slot, id) in ids.iter().enumerate() {
            if let Some(place) = id
                .and_then(|id| usize::try_from(id).ok())
                .and_then(|i| slot_of.get_mut(i))
            {
                *place = slot;
            }
        }
        for (sql, into) in [(HISTORY, &mut pass.rows), (LOTS, &mut pass.lots)] {
            let mut stmt = conn.prepare(sql).map_err(err)?;
            let mut found = stmt.query([]).map_err(err)?;
            while let Some(r) = found.next().map_err(err)? {
                let address_id: i64 = r.get(0).map_err(err)?;
                let slot = usize::try_from(address_id)
                    .ok()
                    .and_then(|i| slot_of.get(i))
                    .copied()
                    .unwrap_or(usize::MAX);
                if slot != usize::MAX {
                    into.push((slot, entry(r).map_err(err)?));
                }
            }
            *into = by_slot(std::mem::take(into), addresses.len());
        }
    } else {
        let mut history = conn
            .prepare(&format!("{HISTORY} WHERE address_id = ?1"))
            .map_err(err)?;
        let mut lots = conn
            .prepare(&format!("{LOTS} WHERE address_id = ?1"))
            .map_err(err)?;
        for (slot, id) in ids.iter().enumerate() {
            let Some(id) = id else { continue };
            for (stmt, into) in [(&mut history, &mut pass.rows), (&mut lots, &mut pass.lots)] {
                let mut found = stmt.query(params![id]).map_err(err)?;
                while let Some(r) = found.next().map_err(err)? {
                    into.push((slot, entry(r).map_err(err)?));
                }
            }
        }
    }
    load_refs(conn, &mut pass, scan)?;
    Ok(pass)
}

/// The texts of the references the pass's rows and lots name.
fn load_refs(conn: &Connection, pass: &mut Pass<'_>, scan: bool) -> Result<(), StoreError> {
    let mut wanted: IdMap<String> = IdMap::default();
    for (_, e) in pass.rows.iter().chain(&pass.lots) {
        wanted.entry(e.ref_id).or_default();
    }
    let ids: Vec<i64> = wanted.keys().copied().collect();
    let mut found = 0usize;
    let mut keep = |id: i64, value: ValueRef<'_>| -> Result<(), StoreError> {
        if let Some(text) = wanted.get_mut(&id) {
            *text = ref_text(id, value)?;
            found += 1;
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
    if found != wanted.len() {
        return Err(StoreError::Corrupt(format!(
            "{} references named by history or lots are not in refs",
            wanted.len().saturating_sub(found)
        )));
    }
    pass.refs = wanted;
    Ok(())
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

/// `entries` ordered by slot (a counting sort: slots are positions below `slots`).
fn by_slot(entries: Vec<Slotted>, slots: usize) -> Vec<Slotted> {
    let mut start = vec![0usize; slots + 1];
    for (slot, _) in &entries {
        if let Some(n) = start.get_mut(slot + 1) {
            *n += 1;
        }
    }
    for i in 1..start.len() {
        start[i] += start[i - 1];
    }
    let mut out = vec![(0, Entry::default()); entries.len()];
    for (slot, e) in entries {
        if let Some(at) = start.get_mut(slot) {
            if let Some(cell) = out.get_mut(*at) {
                *cell = (slot, e);
            }
            *at += 1;
        }
    }
    out
}

/// The leading entries of `slot`, taken off the front of `entries` (sorted by slot).
fn take_slot<'e>(entries: &mut &'e [Slotted], slot: usize) -> &'e [Slotted] {
    let n = entries.iter().take_while(|(s, _)| *s == slot).count();
    let (mine, rest) = entries.split_at(n);
    *entries = rest;
    mine
}

impl Pass<'_> {
    fn text(&self, ref_id: i64) -> Result<&str, StoreError> {
        self.refs
            .get(&ref_id)
            .map(String::as_str)
            .ok_or_else(|| StoreError::Corrupt(format!("reference {ref_id} not loaded")))
    }

    /// Each address of the pass with its rows and lots, in order.
    fn addresses(&self) -> impl Iterator<Item = (usize, &[Slotted], &[Slotted])> {
        let (mut rows, mut lots) = (self.rows.as_slice(), self.lots.as_slice());
        (0..self.addresses.len())
            .map(move |slot| (slot, take_slot(&mut rows, slot), take_slot(&mut lots, slot)))
    }

    /// The address in `slot`, given its rows and lots: if its cache differs from the replay
    /// of its rows, the drift and the lots the replay gives (in replay order).
    fn check(
        &self,
        slot: usize,
        rows: &[Slotted],
        lots: &[Slotted],
    ) -> Result<Option<(Drift, Vec<Entry>)>, StoreError> {
        let Some(address) = self.addresses.get(slot) else {
            return Ok(None);
        };
        let mut keyed = rows
            .iter()
            .map(|(_, e)| {
                Ok(ReplayRow {
                    key: e,
                    credit_ref: self.text(e.ref_id)?,
                    credit_index: e.index,
                    amount: Credits(e.amount),
                    expiration_date: e.expiry.map(ts).transpose()?,
                    message_timestamp: ts(e.ts)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let replayed: Vec<Entry> = replay_rows(&mut keyed)?
            .into_iter()
            .map(|lot| Entry {
                amount: lot.amount_remaining.0,
                ..*lot.key
            })
            .collect();
        let mut named = lots
            .iter()
            .map(|(_, e)| Ok((self.text(e.ref_id)?, *e)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        named.sort_by(|(a_ref, a), (b_ref, b)| (a.ts, a_ref, a.index).cmp(&(b.ts, b_ref, b.index)));
        let cached: Vec<Entry> = named.into_iter().map(|(_, e)| e).collect();
        if cached == replayed {
            return Ok(None);
        }
        let as_lots = |entries: &[Entry]| {
            entries
                .iter()
                .map(|e| {
                    Ok(Lot {
                        address: address.clone(),
                        credit_ref: self.text(e.ref_id)?.to_string(),
                        credit_index: e.index,
                        amount_remaining: Credits(e.amount),
                        expiration_date: e.expiry.map(ts).transpose()?,
                        message_timestamp: ts(e.ts)?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()
        };
        let drift = Drift {
            address: address.clone(),
            cached: as_lots(&cached)?,
            replayed: as_lots(&replayed)?,
        };
        Ok(Some((drift, replayed)))
    }
}
