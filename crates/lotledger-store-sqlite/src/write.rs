//! Write transactions on the store's one write connection (rusqlite), with prepared statements
//! and interned ids resolved once per transaction, and kept across the transactions that
//! commit ([`KeptIds`]).
//!
//! Through sqlx every statement crossed to a worker thread with its values copied as owned
//! arguments, and every insert resolved its address and reference ids by subqueries (index
//! seeks per row); W1's profile put half the time there (BENCHMARKS.md, issue 10, fifth
//! session). Here each statement is prepared once per connection, bound by reference and
//! stepped on the calling thread; ids are looked up (or interned) once and bound as
//! integers. SQLite admits one writer at a time anyway (`BEGIN IMMEDIATE`), so one
//! connection serialises nothing that was not serial.
//!
//! The work is synchronous: on a multi-threaded Tokio runtime each call runs under
//! [`tokio::task::block_in_place`], so the worker's other tasks move to another thread while
//! SQLite works; elsewhere (a current-thread runtime, no runtime) it runs in place.

use std::path::Path;
use std::sync::Arc;

use foldhash::HashMap;
use lotledger_core::{Credits, HistoryRow, Lot, Timestamp};
use lotledger_store::batch::{Commit, LastRows, Stamps};
use lotledger_store::kept_ids::KeptIds;
use lotledger_store::rows::{self, Columns};
use lotledger_store::sql::OnConflict;
use lotledger_store::{IngestProgress, LedgerTx, MessageRecord, MessageStatus, StoreError};
use lotledger_store::{compact, distinct};
use rusqlite::{Connection, OpenFlags, OptionalExtension, ToSql, params};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::checkpoint::{self, Checkpoint, Checkpointer};
use crate::wrappers::{StoredRef, open_connection, sqlite_err as err, ts as instant};

/// Prepared statements a connection keeps (more than the write path uses).
const STATEMENT_CACHE: usize = 64;

/// Logs work called at `at` that took `took`, if that is `threshold` or more (at debug level,
/// where sqlx logs its slow statements); returns whether it did.
fn note_if_slow(
    at: &std::panic::Location<'_>,
    took: std::time::Duration,
    threshold: std::time::Duration,
) -> bool {
    let slow = took >= threshold;
    if slow {
        tracing::debug!(
            at = %at,
            elapsed_ms = took.as_millis(),
            "slow work on the SQLite write connection"
        );
    }
    slow
}

/// Runs synchronous SQLite work from async code: under `block_in_place` on a multi-threaded
/// runtime, in place otherwise.
fn in_place<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// The store's write connection.
#[derive(Debug, Clone)]
pub(crate) struct Writer(Arc<Mutex<WriteConn>>);

#[derive(Debug)]
pub(crate) struct WriteConn {
    conn: Connection,
    /// Interned ids seen by the open transaction (`None`: not interned when looked up).
    address_ids: HashMap<String, Option<i64>>,
    ref_ids: HashMap<String, Option<i64>>,
    /// Ids that committed transactions of this connection resolved, for the next ones.
    kept: KeptIds,
    /// The thread checkpointing the file's WAL (none for an in-memory database or a reader).
    checkpointer: Option<Checkpointer>,
}

impl Writer {
    /// Opens the write connection to the database sqlx opened as `filename` (an in-memory one
    /// by its shared-cache name). A file's WAL is checkpointed by a thread of its own
    /// ([`Checkpointer`]).
    pub(crate) fn open(filename: &Path, in_memory: bool) -> Result<Writer, StoreError> {
        let mut conn = WriteConn::open(filename, in_memory, "")?;
        if !in_memory {
            conn.checkpointer = Some(Checkpointer::start(&conn.conn, filename)?);
        }
        Ok(Writer(Arc::new(Mutex::new(conn))))
    }

    /// A connection to the file that only reads (`PRAGMA query_only`): its transactions are
    /// snapshots to plan batches ahead on while the write connection writes.
    pub(crate) fn open_reader(filename: &Path) -> Result<Writer, StoreError> {
        let conn = WriteConn::open(filename, false, "PRAGMA query_only = ON;")?;
        Ok(Writer(Arc::new(Mutex::new(conn))))
    }

    /// Opens a transaction: `BEGIN IMMEDIATE` advancing the file's generation (`write`), or a
    /// read transaction on a snapshot, whose generation it reads first (the snapshot is taken
    /// by that first read).
    pub(crate) async fn begin(&self, write: bool) -> Result<SqliteTx, StoreError> {
        let mut conn = self.0.clone().lock_owned().await;
        let generations = in_place(|| -> Result<_, StoreError> {
            conn.reset();
            if !write {
                conn.conn.execute_batch("BEGIN").map_err(err)?;
                let snapshot = conn
                    .conn
                    .query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                        r.get::<_, i64>(0)
                    })
                    .and_then(|_| conn.conn.query_row("PRAGMA user_version", [], |r| r.get(0)));
                return match snapshot {
                    Ok(generation) => Ok(Some((generation, generation))),
                    Err(e) => {
                        conn.rollback();
                        Err(err(e))
                    }
                };
            }
            conn.conn.execute_batch("BEGIN IMMEDIATE").map_err(err)?;
            let advanced = (|| {
                let before: i64 = conn
                    .conn
                    .query_row("PRAGMA user_version", [], |r| r.get(0))?;
                let after = crate::next_generation(before);
                conn.conn
                    .execute_batch(&format!("PRAGMA user_version = {after}"))?;
                Ok((before, after))
            })();
            match advanced {
                Ok(g) => Ok(Some(g)),
                Err(e) => {
                    conn.rollback();
                    Err(err(e))
                }
            }
        })?;
        Ok(SqliteTx { conn, generations })
    }
}

impl WriteConn {
    /// Opens a connection to the database sqlx opened as `filename` (an in-memory one by its
    /// shared-cache name), then runs `pragmas` on it.
    fn open(filename: &Path, in_memory: bool, pragmas: &str) -> Result<WriteConn, StoreError> {
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if in_memory {
            flags |= OpenFlags::SQLITE_OPEN_MEMORY | OpenFlags::SQLITE_OPEN_SHARED_CACHE;
        }
        // As the pool's connections (`SqliteStore::open`): a 64 MiB page cache, so a batch's
        // pages stay in memory until its commit.
        let conn = open_connection(
            filename,
            flags,
            "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA cache_size = -65536; \
             PRAGMA temp_store = MEMORY;",
        )?;
        conn.execute_batch(pragmas).map_err(err)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(WriteConn {
            conn,
            address_ids: HashMap::default(),
            ref_ids: HashMap::default(),
            kept: KeptIds::default(),
            checkpointer: None,
        })
    }

    /// Forgets what a transaction left (and ends one left open).
    fn reset(&mut self) {
        if !self.conn.is_autocommit() {
            self.rollback();
        }
        self.address_ids.clear();
        self.ref_ids.clear();
    }

    /// Keeps the ids the transaction that has just committed resolved.
    fn keep_ids(&mut self) {
        // Known absent (`None`) is true of this transaction only.
        let found = |(key, id): (String, Option<i64>)| Some((key, id?));
        let addresses = std::mem::take(&mut self.address_ids);
        let refs = std::mem::take(&mut self.ref_ids);
        self.kept.keep(
            addresses.into_iter().filter_map(found),
            refs.into_iter().filter_map(found),
        );
    }

    fn rollback(&mut self) {
        if let Err(e) = self.conn.execute_batch("ROLLBACK") {
            tracing::warn!(error = %e, "SQLite rollback failed");
        }
        self.address_ids.clear();
        self.ref_ids.clear();
    }

    /// The id of `address` (`intern`: created if missing).
    fn address_id(&mut self, address: &str, intern: bool) -> Result<Option<i64>, StoreError> {
        let known = self.address_ids.get(address).copied();
        if let Some(Some(id)) = known {
            return Ok(Some(id));
        }
        if let (None, Some(id)) = (known, self.kept.address(address)) {
            return Ok(Some(id));
        }
        let id = interned(&self.conn, Interned::Address, known, &address, intern)?;
        if known != Some(id) {
            self.address_ids.insert(address.to_string(), id);
        }
        Ok(id)
    }

    /// The id of `reference` (`intern`: created if missing).
    fn ref_id(&mut self, reference: &str, intern: bool) -> Result<Option<i64>, StoreError> {
        let known = self.ref_ids.get(reference).copied();
        if let Some(Some(id)) = known {
            return Ok(Some(id));
        }
        if let (None, Some(id)) = (known, self.kept.reference(reference)) {
            return Ok(Some(id));
        }
        let id = interned(
            &self.conn,
            Interned::Ref,
            known,
            &StoredRef::of(reference),
            intern,
        )?;
        if known != Some(id) {
            self.ref_ids.insert(reference.to_string(), id);
        }
        Ok(id)
    }

    /// Both ids of a lot's key, interned.
    fn lot_ids(&mut self, lot: &Lot) -> Result<(i64, i64), StoreError> {
        let address = self.address_id(&lot.address, true)?;
        let reference = self.ref_id(&lot.credit_ref, true)?;
        match (address, reference) {
            (Some(a), Some(r)) => Ok((a, r)),
            _ => Err(StoreError::Corrupt(format!(
                "interning {} / {}",
                lot.address, lot.credit_ref
            ))),
        }
    }

    /// Every row `sql` gives for `params`, mapped.
    fn rows<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl Fn(&rusqlite::Row<'_>) -> Result<T, StoreError>,
        out: &mut Vec<T>,
    ) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(err)?;
        let mut rows = stmt.query(params).map_err(err)?;
        while let Some(row) = rows.next().map_err(err)? {
            out.push(map(row)?);
        }
        Ok(())
    }

    fn execute(&self, sql: &str, params: impl rusqlite::Params) -> Result<usize, StoreError> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute(params))
            .map_err(err)
    }

    fn put_lots(&mut self, lots: &[Lot], conflict: OnConflict) -> Result<(), StoreError> {
        macro_rules! insert_lot {
            ($conflict:literal) => {
                concat!(
                    "INSERT INTO credit_lots (address_id, message_timestamp, ref_id, \
                     credit_index, amount_remaining, expiration_date) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ",
                    $conflict
                )
            };
        }
        let sql = match conflict {
            OnConflict::Fail => insert_lot!(""),
            OnConflict::Skip => insert_lot!("ON CONFLICT DO NOTHING"),
            OnConflict::Update => insert_lot!(
                "ON CONFLICT (address_id, message_timestamp, ref_id, credit_index) \
                 DO UPDATE SET amount_remaining = excluded.amount_remaining"
            ),
        };
        let ids = lots
            .iter()
            .map(|lot| self.lot_ids(lot))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let mut insert = self.conn.prepare_cached(sql).map_err(err)?;
        for (lot, (address_id, ref_id)) in lots.iter().zip(ids) {
            insert
                .execute(params![
                    address_id,
                    lot.message_timestamp.as_micros(),
                    ref_id,
                    lot.credit_index,
                    lot.amount_remaining.0,
                    lot.expiration_date.map(Timestamp::as_micros),
                ])
                .map_err(err)?;
        }
        Ok(())
    }

    fn delete_lot(&mut self, lot: &Lot) -> Result<(), StoreError> {
        let (address_id, ref_id) = self.lot_ids(lot)?;
        self.execute(
            "DELETE FROM credit_lots WHERE address_id = ?1 AND message_timestamp = ?2 \
             AND ref_id = ?3 AND credit_index = ?4",
            params![
                address_id,
                lot.message_timestamp.as_micros(),
                ref_id,
                lot.credit_index
            ],
        )?;
        Ok(())
    }

    fn lots_of(
        &mut self,
        address: &str,
        valid_at: Option<Timestamp>,
        out: &mut Vec<Lot>,
    ) -> Result<(), StoreError> {
        let Some(id) = self.address_id(address, false)? else {
            return Ok(());
        };
        match valid_at {
            None => self.rows(
                concat!(lot_select!(), " WHERE l.address_id = ?1"),
                [id],
                |r| rows::lot(&RowCols(r)),
                out,
            ),
            Some(ts) => self.rows(
                concat!(
                    lot_select!(),
                    " WHERE l.address_id = ?1 AND l.message_timestamp <= ?2 \
                     AND (l.expiration_date IS NULL OR l.expiration_date > ?2)",
                    lot_order!()
                ),
                params![id, ts.as_micros()],
                |r| rows::lot(&RowCols(r)),
                out,
            ),
        }
    }

    fn message_record(&mut self, item_hash: &str) -> Result<Option<MessageRecord>, StoreError> {
        let Some(id) = self.ref_id(item_hash, false)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        self.rows(
            concat!(message_select!(), " WHERE m.ref_id = ?1"),
            [id],
            |r| rows::message_record(&RowCols(r)),
            &mut out,
        )?;
        Ok(out.pop())
    }

    /// The last row of `address` (any, or debits only) in emission order.
    fn last_row(
        &self,
        address_id: i64,
        debits: bool,
    ) -> Result<Option<(Timestamp, String)>, StoreError> {
        macro_rules! last_row {
            ($filter:literal) => {
                concat!(
                    "SELECT h.message_timestamp, ",
                    ref_text!(),
                    " FROM credit_history h JOIN refs r ON r.id = h.ref_id \
                     WHERE h.address_id = ?1",
                    $filter,
                    " ORDER BY h.message_timestamp DESC, ",
                    ref_text!(),
                    " DESC LIMIT 1"
                )
            };
        }
        let sql = if debits {
            last_row!(" AND h.amount < 0")
        } else {
            last_row!("")
        };
        let mut out = Vec::new();
        self.rows(
            sql,
            [address_id],
            |r| {
                let micros: i64 = r.get(0).map_err(err)?;
                Ok((instant(micros)?, r.get::<_, String>(1).map_err(err)?))
            },
            &mut out,
        )?;
        Ok(out.pop())
    }
}

/// The two interning tables.
#[derive(Clone, Copy)]
enum Interned {
    Address,
    Ref,
}

/// The id of `value` in `table`, given what the open transaction already knows of it
/// (`known`: `Some(None)`, looked up and missing). A value known missing is inserted without
/// another lookup: the transaction holds the write lock, so nobody else interned it since.
///
/// A reference to intern is most often new (each message brings its own hash), so it is
/// inserted first and looked up only if it was there already (`refs_unique`, migration 0008,
/// refuses it then): one probe of the `refs` key index, the trigger's. An address is most
/// often known: looked up first.
fn interned(
    conn: &Connection,
    table: Interned,
    known: Option<Option<i64>>,
    value: &dyn ToSql,
    intern: bool,
) -> Result<Option<i64>, StoreError> {
    let (select, insert, insert_first) = match table {
        Interned::Address => (
            "SELECT id FROM addresses WHERE address = ?1",
            "INSERT INTO addresses (address) VALUES (?1)",
            false,
        ),
        Interned::Ref => (
            concat!("SELECT r.id FROM refs r WHERE ", ref_is!()),
            "INSERT INTO refs (ref) VALUES (?1)",
            true,
        ),
    };
    let missing = match known {
        Some(Some(id)) => return Ok(Some(id)),
        Some(None) => true,
        None => false,
    };
    if !missing {
        if intern && insert_first {
            match conn
                .prepare_cached(insert)
                .and_then(|mut s| s.execute([value]))
            {
                Ok(_) => return Ok(Some(conn.last_insert_rowid())),
                // Interned already: the trigger refused it (the statement alone is undone).
                Err(rusqlite::Error::SqliteFailure(f, _))
                    if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_TRIGGER => {}
                Err(e) => return Err(err(e)),
            }
        }
        let found = conn
            .prepare_cached(select)
            .and_then(|mut s| s.query_row([value], |r| r.get(0)).optional())
            .map_err(err)?;
        if found.is_some() {
            return Ok(found);
        }
    }
    if !intern {
        return Ok(None);
    }
    conn.prepare_cached(insert)
        .and_then(|mut s| s.execute([value]))
        .map_err(err)?;
    Ok(Some(conn.last_insert_rowid()))
}

/// A rusqlite row's columns as [`lotledger_store::rows`] reads them.
struct RowCols<'a, 'r>(&'a rusqlite::Row<'r>);

impl Columns for RowCols<'_, '_> {
    fn text(&self, column: &str) -> Result<String, StoreError> {
        self.0.get(column).map_err(err)
    }
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        self.0.get(column).map_err(err)
    }
    fn int(&self, column: &str) -> Result<i64, StoreError> {
        self.0.get(column).map_err(err)
    }
    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        self.0.get(column).map_err(err)
    }
    fn int32(&self, column: &str) -> Result<i32, StoreError> {
        self.0.get(column).map_err(err)
    }
    fn instant(&self, column: &str) -> Result<Timestamp, StoreError> {
        instant(self.int(column)?)
    }
    fn opt_instant(&self, column: &str) -> Result<Option<Timestamp>, StoreError> {
        self.opt_int(column)?.map(instant).transpose()
    }
    fn opt_float(&self, column: &str) -> Result<Option<f64>, StoreError> {
        self.0.get(column).map_err(err)
    }
    fn kept_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        let value = self.0.get_ref(column).map_err(err)?;
        let bytes = value
            .as_bytes_or_null()
            .map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))?;
        bytes.map(lotledger_store::kept::unpack).transpose()
    }
    fn compact_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        let value = self.0.get_ref(column).map_err(err)?;
        let bytes = value
            .as_bytes_or_null()
            .map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))?;
        compact::decode_opt(bytes)
    }
}

/// One open transaction on a connection: `BEGIN IMMEDIATE` for writes (with the generations it
/// advanced), or a read transaction (the generation it sees, twice). Dropped without a commit,
/// it rolls back.
pub struct SqliteTx {
    conn: OwnedMutexGuard<WriteConn>,
    generations: Option<(i64, i64)>,
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        if !self.conn.conn.is_autocommit() {
            self.conn.rollback();
        }
    }
}

impl SqliteTx {
    /// Runs `work` on the connection (see [`in_place`]). Work that takes longer than the
    /// pooled connections' slow-statement threshold is logged as sqlx logs a slow statement
    /// (at [`lotledger_store::SLOW_STATEMENT_LOG`]'s level), named by where it was called.
    #[track_caller]
    fn with<T>(
        &mut self,
        work: impl FnOnce(&mut WriteConn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let at = std::panic::Location::caller();
        let conn = &mut *self.conn;
        let started = std::time::Instant::now();
        let out = in_place(|| work(conn));
        note_if_slow(at, started.elapsed(), lotledger_store::SLOW_STATEMENT_LOG.1);
        out
    }

    /// Ends the transaction without writing.
    pub(crate) fn rollback(mut self) {
        in_place(|| self.conn.rollback());
    }
}

impl Commit for SqliteTx {
    async fn commit_stamped(mut self) -> Result<Stamps, StoreError> {
        self.with(|c| {
            Checkpointer::before_commit();
            c.conn.execute_batch("COMMIT").map_err(err)?;
            c.keep_ids();
            let wanted = c.checkpointer.as_ref().map(Checkpointer::after_commit);
            if wanted == Some(Checkpoint::InPlace) {
                // Committed already: a checkpoint that fails is logged, not the commit's error.
                if let Err(e) = checkpoint::checkpoint_in_place(&c.conn) {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
            }
            Ok(())
        })?;
        Ok(self
            .generations
            .map_or(Stamps::None, |(_, after)| Stamps::Store(after)))
    }

    async fn stamps(&mut self, _addresses: &[&str]) -> Result<Stamps, StoreError> {
        Ok(self
            .generations
            .map_or(Stamps::None, |(before, _)| Stamps::Store(before)))
    }
}

impl LedgerTx for SqliteTx {
    async fn message_status(
        &mut self,
        item_hash: &str,
    ) -> Result<Option<MessageStatus>, StoreError> {
        self.with(|c| Ok(c.message_record(item_hash)?.map(|r| r.status)))
    }

    async fn record_message(&mut self, record: &MessageRecord) -> Result<(), StoreError> {
        self.record_messages(std::slice::from_ref(record)).await
    }

    async fn lock(&mut self, _item_hash: &str, _addresses: &[&str]) -> Result<(), StoreError> {
        // BEGIN IMMEDIATE already excludes every other writer.
        Ok(())
    }

    async fn balance(&mut self, address: &str, at: Timestamp) -> Result<Credits, StoreError> {
        self.with(|c| {
            let Some(id) = c.address_id(address, false)? else {
                return Ok(Credits::ZERO);
            };
            let sum: Option<i64> = c
                .conn
                .prepare_cached(balance_sum!("?"))
                .and_then(|mut s| s.query_row(params![id, at.as_micros()], |r| r.get(0)))
                .map_err(err)?;
            Ok(lotledger_store::balance_from_sum(sum))
        })
    }

    async fn drainable_lots(
        &mut self,
        demand: &[(&str, i128)],
        _policy: lotledger_core::Policy,
        ts: Timestamp,
    ) -> Result<Vec<Lot>, StoreError> {
        self.with(|c| {
            let mut out = Vec::new();
            for (address, _) in demand {
                c.lots_of(address, Some(ts), &mut out)?;
            }
            Ok(out)
        })
    }

    async fn insert_rows(
        &mut self,
        rows: &[HistoryRow],
        last_update: Timestamp,
    ) -> Result<u64, StoreError> {
        self.with(|c| {
            // Ids in order of first appearance, addresses first.
            for address in distinct(rows.iter().map(|r| r.address.as_str())) {
                c.address_id(address, true)?;
            }
            for reference in distinct(rows.iter().map(|r| r.credit_ref.as_str())) {
                c.ref_id(reference, true)?;
            }
            let ids = rows
                .iter()
                .map(|r| {
                    Ok((
                        c.address_id(&r.address, true)?,
                        c.ref_id(&r.credit_ref, true)?,
                    ))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            // Prepared once for the batch (a cached statement is looked up by its text).
            let mut insert = c
                .conn
                .prepare_cached(
                    "INSERT INTO credit_history (ref_id, credit_index, address_id, \
                     message_timestamp, amount, expiration_date, last_update, price, \
                     bonus_amount, tx_hash, token, chain, provider, origin, origin_ref, \
                     payment_method, expense_count, expense_size_mib, policy) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, \
                     ?16, ?17, ?18, ?19) ON CONFLICT (ref_id, credit_index) DO NOTHING",
                )
                .map_err(err)?;
            let mut inserted = 0u64;
            for (r, (address_id, ref_id)) in rows.iter().zip(ids) {
                let n = insert
                    .execute(params![
                        ref_id,
                        r.credit_index,
                        address_id,
                        r.message_timestamp.as_micros(),
                        r.amount.0,
                        r.expiration_date.map(Timestamp::as_micros),
                        last_update.as_micros(),
                        r.price,
                        r.bonus_amount,
                        r.tx_hash.as_deref().map(compact::encode),
                        r.token,
                        r.chain,
                        r.provider,
                        r.origin.as_deref().map(compact::encode),
                        r.origin_ref.as_deref().map(compact::encode),
                        r.payment_method,
                        r.expense_count,
                        r.expense_size_mib,
                        r.policy.code(),
                    ])
                    .map_err(err)?;
                inserted += n as u64;
            }
            Ok(inserted)
        })
    }

    async fn insert_lots(&mut self, lots: &[Lot]) -> Result<(), StoreError> {
        self.with(|c| c.put_lots(lots, OnConflict::Skip))
    }

    async fn update_lots(&mut self, lots: &[Lot]) -> Result<(), StoreError> {
        self.with(|c| {
            for lot in lots {
                if lot.amount_remaining.is_positive() {
                    let (address_id, ref_id) = c.lot_ids(lot)?;
                    c.execute(
                        "UPDATE credit_lots SET amount_remaining = ?5 WHERE address_id = ?1 \
                         AND message_timestamp = ?2 AND ref_id = ?3 AND credit_index = ?4",
                        params![
                            address_id,
                            lot.message_timestamp.as_micros(),
                            ref_id,
                            lot.credit_index,
                            lot.amount_remaining.0
                        ],
                    )?;
                } else {
                    c.delete_lot(lot)?;
                }
            }
            Ok(())
        })
    }

    async fn rows_after(
        &mut self,
        address: &str,
        ts: Timestamp,
        credit_ref: &str,
    ) -> Result<(bool, bool), StoreError> {
        self.with(|c| {
            let Some(id) = c.address_id(address, false)? else {
                return Ok((false, false));
            };
            let (any, debit): (i64, i64) = c
                .conn
                .prepare_cached(concat!(
                    "SELECT COUNT(*) > 0, COALESCE(MAX(h.amount < 0), 0) FROM credit_history h \
                     JOIN refs r ON r.id = h.ref_id WHERE h.address_id = ?1 \
                     AND (h.message_timestamp > ?2 OR (h.message_timestamp = ?2 AND ",
                    ref_text!(),
                    " > ?3))"
                ))
                .and_then(|mut s| {
                    s.query_row(params![id, ts.as_micros(), credit_ref], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                })
                .map_err(err)?;
            Ok((any != 0, debit != 0))
        })
    }

    async fn address_history(&mut self, address: &str) -> Result<Vec<HistoryRow>, StoreError> {
        self.with(|c| {
            let mut out = Vec::new();
            if let Some(id) = c.address_id(address, false)? {
                c.rows(
                    concat!(
                        history_select!(),
                        " WHERE h.address_id = ?1",
                        history_order!()
                    ),
                    [id],
                    |r| rows::history_row(&RowCols(r)),
                    &mut out,
                )?;
            }
            Ok(out)
        })
    }

    async fn replace_lots(&mut self, address: &str, lots: &[Lot]) -> Result<(), StoreError> {
        self.delete_lots_of(&[address]).await?;
        self.insert_lots(lots).await
    }

    async fn lock_many(&mut self, _hashes: &[&str], _addresses: &[&str]) -> Result<(), StoreError> {
        // BEGIN IMMEDIATE already excludes every other writer.
        Ok(())
    }

    async fn load_lots(&mut self, addresses: &[&str]) -> Result<Vec<Lot>, StoreError> {
        self.with(|c| {
            let mut out = Vec::new();
            for address in addresses {
                c.lots_of(address, None, &mut out)?;
            }
            Ok(out)
        })
    }

    async fn last_rows(
        &mut self,
        addresses: &[&str],
    ) -> Result<Vec<(String, LastRows)>, StoreError> {
        // Index seeks on (address_id, message_timestamp) read backwards: the last row of each
        // address, and its last debit (ties on the instant broken by the reference's text).
        self.with(|c| {
            let mut out = Vec::new();
            for address in addresses {
                let Some(id) = c.address_id(address, false)? else {
                    continue;
                };
                let any = c.last_row(id, false)?;
                if any.is_some() {
                    let debit = c.last_row(id, true)?;
                    out.push((address.to_string(), LastRows { any, debit }));
                }
            }
            Ok(out)
        })
    }

    async fn statuses_and_row_keys(
        &mut self,
        item_hashes: &[&str],
    ) -> Result<lotledger_store::StatusesAndRowKeys, StoreError> {
        self.with(|c| {
            let (mut statuses, mut row_keys) = (Vec::new(), Vec::new());
            for hash in item_hashes {
                if let Some(record) = c.message_record(hash)? {
                    statuses.push((record.item_hash, record.status));
                }
                let Some(id) = c.ref_id(hash, false)? else {
                    continue;
                };
                c.rows(
                    "SELECT credit_index FROM credit_history WHERE ref_id = ?1",
                    [id],
                    |r| Ok((hash.to_string(), r.get(0).map_err(err)?)),
                    &mut row_keys,
                )?;
            }
            Ok((statuses, row_keys))
        })
    }

    async fn write_lots(
        &mut self,
        created: &[Lot],
        changed: &[Lot],
        deletes: &[Lot],
    ) -> Result<(), StoreError> {
        self.with(|c| {
            for lot in deletes {
                c.delete_lot(lot)?;
            }
            c.put_lots(created, OnConflict::Fail)?;
            c.put_lots(changed, OnConflict::Update)
        })
    }

    async fn replay_histories(
        &mut self,
        addresses: &[&str],
    ) -> Result<Vec<HistoryRow>, StoreError> {
        // The rows the replay reads, per address in text order, each in emission order.
        let mut sorted: Vec<&str> = distinct(addresses.iter().copied());
        sorted.sort_unstable();
        self.with(|c| {
            let mut out = Vec::new();
            for address in sorted {
                let Some(id) = c.address_id(address, false)? else {
                    continue;
                };
                c.rows(
                    concat!(
                        "SELECT h.message_timestamp, h.amount, h.expiration_date, \
                         h.credit_index, h.policy, ",
                        ref_text!(),
                        " FROM credit_history h JOIN refs r ON r.id = h.ref_id \
                         WHERE h.address_id = ?1",
                        history_order!()
                    ),
                    [id],
                    |r| {
                        let mut row = HistoryRow::bare(
                            address,
                            Credits(r.get(1).map_err(err)?),
                            &r.get::<_, String>(5).map_err(err)?,
                            r.get(3).map_err(err)?,
                            instant(r.get(0).map_err(err)?)?,
                        );
                        row.policy = lotledger_store::rows::policy(r.get(4).map_err(err)?)?;
                        row.expiration_date = r
                            .get::<_, Option<i64>>(2)
                            .map_err(err)?
                            .map(instant)
                            .transpose()?;
                        Ok(row)
                    },
                    &mut out,
                )?;
            }
            Ok(out)
        })
    }

    async fn delete_lots_of(&mut self, addresses: &[&str]) -> Result<(), StoreError> {
        self.with(|c| {
            for address in addresses {
                if let Some(id) = c.address_id(address, false)? {
                    c.execute("DELETE FROM credit_lots WHERE address_id = ?1", [id])?;
                }
            }
            Ok(())
        })
    }

    async fn set_ingest_progress(&mut self, progress: &IngestProgress) -> Result<(), StoreError> {
        let (lines, bytes) = progress.stored_counts()?;
        self.with(|c| {
            c.execute(
                "INSERT INTO ingest_progress (source, lines, bytes, prefix_sha256, resume_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (source) DO UPDATE SET \
                 lines = excluded.lines, bytes = excluded.bytes, \
                 prefix_sha256 = excluded.prefix_sha256, resume_at = excluded.resume_at",
                params![
                    progress.source,
                    lines,
                    bytes,
                    progress.prefix_sha256,
                    progress.resume_at
                ],
            )?;
            Ok(())
        })
    }

    async fn record_messages(&mut self, records: &[MessageRecord]) -> Result<(), StoreError> {
        self.with(|c| {
            for record in records {
                let Some(id) = c.ref_id(&record.item_hash, true)? else {
                    return Err(StoreError::Corrupt(format!(
                        "interning {}",
                        record.item_hash
                    )));
                };
                let (status, error) = match &record.status {
                    MessageStatus::Processed => ("processed", None),
                    MessageStatus::Rejected { error } => ("rejected", Some(error.as_str())),
                };
                c.execute(
                    "INSERT INTO credit_messages (ref_id, status, ignored, error, recorded_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (ref_id) DO UPDATE SET \
                     status = excluded.status, ignored = excluded.ignored, \
                     error = excluded.error, recorded_at = excluded.recorded_at",
                    params![
                        id,
                        status,
                        record.ignored,
                        error,
                        record.recorded_at.as_micros()
                    ],
                )?;
                if let Some(e) = &record.envelope {
                    c.execute(
                        concat!(
                            "INSERT INTO message_envelopes (",
                            lotledger_store::sql_envelope_columns!(),
                            ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                            lotledger_store::sql_envelope_upsert!()
                        ),
                        params![
                            id,
                            e.time,
                            e.message_type,
                            e.sender,
                            e.chain,
                            e.channel,
                            e.item_type,
                            e.signature.as_deref().map(compact::encode),
                            e.item_content.as_deref().map(lotledger_store::kept::pack)
                        ],
                    )?;
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A log sink the test reads back.
    #[derive(Clone, Default)]
    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = self.0.lock() {
                v.extend_from_slice(buf);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Slow work on the write connection is logged at debug level with where it was called
    /// (rusqlite has no slow-statement log of its own); quick work is not.
    #[test]
    fn slow_work_is_logged_with_its_call_site() {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let here = std::panic::Location::caller();
        tracing::subscriber::with_default(subscriber, || {
            let second = Duration::from_secs(1);
            assert!(!note_if_slow(here, Duration::from_millis(999), second));
            assert!(note_if_slow(here, Duration::from_millis(1_500), second));
        });
        let logged = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(logged.lines().count(), 1, "{logged}");
        assert!(
            logged.contains("slow work on the SQLite write connection")
                && logged.contains("elapsed_ms=1500")
                && logged.contains(&format!("at={here}")),
            "{logged}"
        );
    }
}
