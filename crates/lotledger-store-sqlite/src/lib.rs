//! The embedded SQLite store: one file, WAL, `BEGIN IMMEDIATE` write transactions.
//!
//! Instants are stored as INTEGER microseconds, decimals as TEXT in PostgreSQL `NUMERIC` form.
//! History rows and message records append under INTEGER row ids; addresses and references are
//! interned (`addresses`, `refs`), a 64-hex reference as its 32 bytes (migration 0005). The
//! SQL joins them back, so the [`LedgerTx`] seen by the writers speaks text as before.
//! Rows are mapped by hand (`wrappers`): core types never see sqlx.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use lotledger_core::node_json::StoredEnvelope;
use lotledger_core::{BalanceDetail, Credits, HistoryRow, Lot, Timestamp};
use lotledger_store::batch::BatchCache;
use lotledger_store::maintenance::BatchLimit;
use lotledger_store::transactional::Transactional;
use lotledger_store::{
    AddressRows, Drift, EnvelopeScan, Footprint, HistorySelector, LedgerTx, MessageRecord, Store,
    StoreError, addresses_of, kept_envelopes, non_negative,
};
use sqlx::ConnectOptions as _;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

mod checkpoint;
mod scan;
mod wrappers;
pub use scan::{Access, PASS_ROWS, SCAN_FRACTION, ScanFile};
use wrappers::{StoredRef, db_err, history_row, lot, stored_message};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A stored reference (`refs.ref` of the row aliased `r`) as text: a BLOB (a 64-hex hash) as
/// lower-case hex. References sort by this text, never by the stored value.
macro_rules! ref_text {
    () => {
        "CASE WHEN typeof(r.ref) = 'blob' THEN lower(hex(r.ref)) ELSE r.ref END"
    };
}

/// The key migration 0008's `ix_refs_key` indexes, of the reference `$value` (a column or a
/// parameter): a hash BLOB's first and last 4 bytes, a TEXT whole. The index's own expression,
/// so that SQLite uses the index for an equality on it.
macro_rules! ref_key {
    ($value:literal) => {
        concat!(
            "(CASE WHEN typeof(",
            $value,
            ") = 'blob' THEN substr(",
            $value,
            ", 1, 4) || substr(",
            $value,
            ", 29, 4) ELSE ",
            $value,
            " END)"
        )
    };
}

/// The `refs` row aliased `r` is the reference bound as `?1` (a [`StoredRef`]): its key
/// ([`ref_key`]), then its value. Every lookup of a reference by value goes through this, one
/// probe of `ix_refs_key`.
macro_rules! ref_is {
    () => {
        concat!(ref_key!("r.ref"), " = ", ref_key!("?1"), " AND r.ref = ?1")
    };
}

lotledger_store::sql_selects!(ref_text, "h.price", "h.expense_size_mib");

/// The balance of the address whose id `$address` gives, at the instant bound after it.
macro_rules! balance_sum {
    ($address:expr) => {
        concat!(
            "SELECT SUM(amount_remaining) FROM credit_lots WHERE address_id = ",
            $address,
            " AND (expiration_date IS NULL OR expiration_date > ?)"
        )
    };
}

/// The interned id of the address bound next (NULL if never interned).
macro_rules! address_id {
    () => {
        "(SELECT id FROM addresses WHERE address = ?)"
    };
}

mod quick;
pub use quick::REPLAY_ROWS;
mod write;
pub use write::SqliteTx;
/// A lotledger store in one SQLite file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The one connection that writes (rusqlite: see `write`).
    writer: write::Writer,
    /// A connection whose snapshots batches are planned ahead on (none in memory).
    reader: Option<write::Writer>,
    /// How batches planned ahead ended.
    ahead: std::sync::Arc<lotledger_store::batch::AheadCounters>,
    /// The addresses the last batch left, for the next one (valid while the file's generation
    /// is the one that batch committed).
    cache: std::sync::Arc<std::sync::Mutex<BatchCache>>,
    /// Whole-table verify and rebuild on a connection of their own (none in memory).
    scan: Option<ScanFile>,
    /// Balances read on the calling thread (none in memory: see `quick`).
    quick: Option<std::sync::Arc<quick::QuickReads>>,
    /// What opening the store did to its schema.
    migrated: lotledger_store::Migrated,
}

/// Whether `url` names a database no other connection can open: in memory (`sqlite::memory:`,
/// `mode=memory`; sqlx names those files `file:sqlx-in-memory-N`, so the URL decides) or a
/// private temporary one (no path).
fn in_memory(url: &str) -> bool {
    let (database, params) = url.split_once('?').unwrap_or((url, ""));
    let database = database
        .trim_start_matches("sqlite:")
        .trim_start_matches("//");
    database.is_empty() || database == ":memory:" || params.split('&').any(|p| p == "mode=memory")
}

/// The generation a write transaction leaves after `before` (a 32-bit header field: it wraps
/// around; only equality is ever asked of it).
fn next_generation(before: i64) -> i64 {
    if before >= i64::from(i32::MAX) || before < 0 {
        0
    } else {
        before + 1
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://path`) and migrates it.
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // A 64 MiB page cache per connection, so a batch's pages stay in memory until its
            // commit instead of spilling to the WAL mid-transaction; temporary b-trees (sorts,
            // statement journals) in memory.
            .pragma("cache_size", "-65536")
            .pragma("temp_store", "MEMORY")
            .log_slow_statements(
                lotledger_store::SLOW_STATEMENT_LOG.0,
                lotledger_store::SLOW_STATEMENT_LOG.1,
            );
        let memory = in_memory(url);
        let filename = options.get_filename().to_path_buf();
        if filename.as_os_str().is_empty() {
            return Err(StoreError::Config(format!(
                "{url}: no database file (give a path, or sqlite::memory: for a database in memory)"
            )));
        }
        let scan = (!memory).then(|| ScanFile::new(&filename));
        let quick =
            (!memory).then(|| std::sync::Arc::new(quick::QuickReads::new(filename.clone())));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // A file connection cannot drop like a socket: no ping (a round trip through the
            // connection's worker thread) before each read and transaction.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        // Opened once the pool has created the file (or the in-memory database it keeps).
        let writer = write::Writer::open(&filename, memory)?;
        let store = SqliteStore {
            pool,
            writer,
            reader: None,
            ahead: Default::default(),
            cache: Default::default(),
            scan,
            quick,
            migrated: Default::default(),
        };
        let migrated = store.migrate().await?;
        // Opened once the schema is there (a reader cannot create it).
        let reader = if memory {
            None
        } else {
            Some(write::Writer::open_reader(&filename)?)
        };
        Ok(SqliteStore {
            reader,
            migrated,
            ..store
        })
    }
}

impl Transactional for SqliteStore {
    type Tx = SqliteTx;
    type Snapshot = SqliteTx;

    /// A read transaction on the reader connection (files only): in WAL mode it sees the
    /// snapshot of its first read while the write connection writes.
    async fn snapshot(&self) -> Result<Option<SqliteTx>, StoreError> {
        match &self.reader {
            Some(reader) => reader.begin(false).await.map(Some),
            None => Ok(None),
        }
    }

    /// By the scans when the store is a file: only the addresses whose cache differs from the
    /// replay are written, with the lots the replay gives, as `rederive_many` would write them.
    async fn rebuild_addresses(&self, batch: &[AddressRows]) -> Result<(), StoreError> {
        match &self.scan {
            Some(scan) => {
                let scan = scan.clone();
                let batch = batch.to_vec();
                blocking(move || scan.rebuild(&batch, Access::Auto).map(drop)).await
            }
            None => lotledger_store::transactional::rebuild(self, &addresses_of(batch)).await,
        }
    }

    fn batch_cache(&self) -> Option<&std::sync::Mutex<BatchCache>> {
        Some(&self.cache)
    }

    fn ahead_counters(&self) -> Option<&lotledger_store::batch::AheadCounters> {
        Some(&self.ahead)
    }

    /// Opens a write transaction and advances the file's generation (`PRAGMA user_version`),
    /// which every write transaction of every process does: a cache of what the last batch
    /// left is exact only while the generation is the one that batch committed.
    async fn write(&self) -> Result<SqliteTx, StoreError> {
        self.writer.begin(true).await
    }
}

/// Runs blocking SQLite work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Database(Box::new(e)))?
}

impl Store for SqliteStore {
    lotledger_store::transactional_writes!();
    lotledger_store::pooled_reads!(MIGRATOR);

    async fn balance(&self, address: &str, at: Timestamp) -> Result<Credits, StoreError> {
        if let Some(quick) = &self.quick {
            return quick.balance(address, at);
        }
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        balance(&mut conn, address, at).await
    }

    async fn balance_details(
        &self,
        address: &str,
        at: Timestamp,
    ) -> Result<(Credits, Vec<BalanceDetail>), StoreError> {
        match &self.quick {
            Some(quick) => quick.balance_details(address, at),
            None => {
                lotledger_store::pooled::Reads::of(&self.pool)
                    .balance_details(address, at)
                    .await
            }
        }
    }

    async fn history(&self, selector: &HistorySelector) -> Result<Vec<HistoryRow>, StoreError> {
        let query = match selector {
            HistorySelector::Address(a) => sqlx::query(concat!(
                history_select!(),
                " WHERE h.address_id = ",
                address_id!(),
                " ORDER BY credit_ref, h.credit_index"
            ))
            .bind(a.clone()),
            HistorySelector::CreditRef(r) => sqlx::query(concat!(
                history_select!(),
                " WHERE h.ref_id = (SELECT r.id FROM refs r WHERE ",
                ref_is!(),
                ") ORDER BY h.credit_index"
            ))
            .bind(StoredRef::of(r)),
        };
        let rows = query.fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter().map(history_row).collect()
    }

    async fn lots(&self, address: &str) -> Result<Vec<Lot>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        address_lots(&mut conn, address).await
    }

    fn maintenance_batch(&self) -> BatchLimit {
        if self.scan.is_some() {
            lotledger_store::scan::BATCH
        } else {
            BatchLimit::default()
        }
    }

    async fn verify(&self, batch: &[AddressRows]) -> Result<Vec<Drift>, StoreError> {
        if let Some(scan) = &self.scan {
            let scan = scan.clone();
            let batch = batch.to_vec();
            return blocking(move || scan.verify(&batch, Access::Auto)).await;
        }
        let addresses = &addresses_of(batch);
        // A deferred read transaction: in WAL mode every read of the batch sees the snapshot
        // taken at its first read, so history and lots are compared consistently.
        let mut tx = self.writer.begin(false).await?;
        let refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
        let rows = tx.replay_histories(&refs).await?;
        let lots = tx.load_lots(&refs).await?;
        tx.rollback();
        lotledger_store::maintenance::drifts(addresses, &rows, lots)
    }

    async fn message(&self, item_hash: &str) -> Result<Option<MessageRecord>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        message(&mut conn, item_hash).await
    }

    async fn replay_history(&self, address: &str) -> Result<Vec<HistoryRow>, StoreError> {
        if let Some(quick) = &self.quick {
            return quick.replay_history(address);
        }
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        let rows = sqlx::query(replay_select!("?1"))
            .bind(address)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| wrappers::replay_row(address, r))
            .collect()
    }

    async fn expiring_lots(
        &self,
        now: Timestamp,
        before: Timestamp,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<Lot>, StoreError> {
        let (offset, limit) = lotledger_store::page_bounds(offset, limit);
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        let rows = sqlx::query(expiring_lots!("?1", "?2", "?3", "?4"))
            .bind(now.as_micros())
            .bind(before.as_micros())
            .bind(limit)
            .bind(offset)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?;
        rows.iter().map(lot).collect()
    }

    async fn expiring_total(
        &self,
        now: Timestamp,
        before: Timestamp,
    ) -> Result<(Credits, u64), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        let (sum, count): (i64, i64) =
            sqlx::query_as(lotledger_store::sql_expiring_total!("?1", "?2"))
                .bind(now.as_micros())
                .bind(before.as_micros())
                .fetch_one(&mut *conn)
                .await
                .map_err(db_err)?;
        lotledger_store::expiring_totals(sum, count)
    }

    async fn kept_messages(
        &self,
        scan: &EnvelopeScan,
    ) -> Result<Vec<Arc<StoredEnvelope>>, StoreError> {
        let sql = if scan.ascending {
            kept_scan!("ASC", "?1", "?2", "?3", "?4", "?5")
        } else {
            kept_scan!("DESC", "?1", "?2", "?3", "?4", "?5")
        };
        let (lo, hi, t, h) = scan.bounds();
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        let rows = sqlx::query(sql)
            .bind(lo)
            .bind(hi)
            .bind(t)
            .bind(h)
            .bind(i64::from(scan.limit))
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?;
        kept_envelopes(&rows, stored_message)
    }

    /// `dbstat` (the pages of each table's b-trees, indexes included, WAL content seen through
    /// the pager), else `page_count × page_size` split by row counts.
    async fn footprint(&self) -> Result<Footprint, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        let by_table: Result<Vec<(String, String, i64)>, sqlx::Error> = sqlx::query_as(
            "SELECT m.tbl_name, m.name, SUM(s.pgsize) FROM dbstat AS s \
             JOIN sqlite_master AS m ON s.name = m.name GROUP BY m.tbl_name, m.name",
        )
        .fetch_all(&mut *conn)
        .await;
        let (page_count, page_size): (i64, i64) = sqlx::query_as(
            "SELECT page_count, page_size FROM pragma_page_count(), pragma_page_size()",
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err)?;
        drop(conn);
        let database_bytes = non_negative(page_count.saturating_mul(page_size));
        let rows = match by_table {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!("dbstat unavailable ({e}): splitting the file size by row counts");
                let counts = self.table_counts().await?;
                let all = counts.history_rows + counts.lots + counts.messages;
                let share = |n: u64| {
                    let bytes = u128::from(database_bytes) * u128::from(n) / u128::from(all.max(1));
                    u64::try_from(bytes).unwrap_or(u64::MAX)
                };
                return Ok(Footprint {
                    history_bytes: share(counts.history_rows),
                    lots_bytes: share(counts.lots),
                    messages_bytes: share(counts.messages),
                    database_bytes,
                    method: "page_count × page_size split by row counts (dbstat unavailable)"
                        .into(),
                    ..Footprint::default()
                });
            }
        };
        let mut f = Footprint {
            database_bytes,
            method: "sqlite dbstat".into(),
            ..Footprint::default()
        };
        for (table, name, bytes) in rows {
            let bytes = non_negative(bytes);
            match table.as_str() {
                "credit_history" => {
                    f.history_bytes += bytes;
                    if name != table {
                        f.history_index_bytes += bytes;
                    }
                }
                "credit_lots" => f.lots_bytes += bytes,
                "credit_messages" => f.messages_bytes += bytes,
                "message_envelopes" => f.envelopes_bytes += bytes,
                "addresses" | "refs" => f.interned_bytes += bytes,
                _ => {}
            }
        }
        Ok(f)
    }

    async fn engine_settings(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        let (version,): (String,) = sqlx::query_as("SELECT sqlite_version()")
            .fetch_one(&mut *conn)
            .await
            .map_err(db_err)?;
        let (journal_mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .map_err(db_err)?;
        let (synchronous,): (i64,) = sqlx::query_as("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .map_err(db_err)?;
        let synchronous = match synchronous {
            0 => "off".to_string(),
            1 => "normal".to_string(),
            2 => "full".to_string(),
            3 => "extra".to_string(),
            n => n.to_string(),
        };
        Ok(vec![
            ("version".into(), version),
            ("journal_mode".into(), journal_mode),
            ("synchronous".into(), synchronous),
        ])
    }
}

async fn message(
    conn: &mut sqlx::SqliteConnection,
    item_hash: &str,
) -> Result<Option<MessageRecord>, StoreError> {
    let row = sqlx::query(concat!(stored_message_select!(), " WHERE ", ref_is!()))
        .bind(StoredRef::of(item_hash))
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
    row.as_ref().map(stored_message).transpose()
}

async fn balance(
    conn: &mut sqlx::SqliteConnection,
    address: &str,
    at: Timestamp,
) -> Result<Credits, StoreError> {
    let sum: Option<i64> = sqlx::query_scalar(balance_sum!(address_id!()))
        .bind(address)
        .bind(at.as_micros())
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err)?;
    Ok(lotledger_store::balance_from_sum(sum))
}

async fn address_lots(
    conn: &mut sqlx::SqliteConnection,
    address: &str,
) -> Result<Vec<Lot>, StoreError> {
    let rows = sqlx::query(concat!(
        lot_select!(),
        " WHERE l.address_id = ",
        address_id!(),
        lot_order!()
    ))
    .bind(address)
    .fetch_all(&mut *conn)
    .await
    .map_err(db_err)?;
    rows.iter().map(lot).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lotledger_store::maintenance;

    #[test]
    fn in_memory_urls_are_told_from_files() {
        for url in [
            "sqlite::memory:",
            "sqlite://ledger?mode=memory&cache=shared",
            "sqlite:",
        ] {
            assert!(in_memory(url), "{url}");
        }
        for url in [
            "sqlite://ledger.db",
            "sqlite:///tmp/a.db?mode=rwc",
            "sqlite://memory.db",
        ] {
            assert!(!in_memory(url), "{url}");
        }
    }

    /// A URL without a path names no database another connection could open (SQLite gives
    /// each connection a private temporary one): refused, not silently split in two.
    #[tokio::test]
    async fn a_url_without_a_path_is_refused() {
        match SqliteStore::open("sqlite:").await {
            Err(StoreError::Config(message)) => assert!(message.contains("no database file")),
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    /// A store on a new file in a directory of its own (`lotledger-{name}-{pid}`, removed by
    /// the caller).
    async fn fresh_file(name: &str) -> (std::path::PathBuf, SqliteStore) {
        let dir = std::env::temp_dir().join(format!("lotledger-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ledger.db");
        let _ = std::fs::remove_file(&path);
        let store = SqliteStore::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        (dir, store)
    }

    /// Ids interned by a transaction that rolls back die with it: the next transaction interns
    /// the same address and reference again and never binds the dead ids.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ids_interned_by_a_rolled_back_transaction_are_not_reused() {
        let (dir, store) = fresh_file("rollback").await;
        let at = Timestamp::from_unix_seconds(1_772_323_200).unwrap();
        // Another address first, so the abandoned ids are not simply the next ones again.
        let seed = [HistoryRow::bare("0xseed", Credits(1), "s", 0, at)];
        store.import_history(&seed, at).await.unwrap();
        let rows = [HistoryRow::bare("0xnew", Credits(10), "g", 0, at)];
        {
            let mut tx = store.write().await.unwrap();
            assert_eq!(tx.insert_rows(&rows, at).await.unwrap(), 1);
            // Dropped without a commit: rolled back.
        }
        let counts = store.table_counts().await.unwrap();
        assert_eq!(counts.history_rows, 1, "the abandoned row is gone");
        // Ids the rolled-back transaction took are taken by others in between.
        let other = [HistoryRow::bare("0xother", Credits(2), "o", 0, at)];
        store.import_history(&other, at).await.unwrap();
        store.import_history(&rows, at).await.unwrap();
        let history = store
            .history(&HistorySelector::Address("0xnew".into()))
            .await
            .unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].credit_ref, "g");
        assert_eq!(store.balance("0xnew", at).await.unwrap(), Credits(10));
        assert_eq!(store.balance("0xother", at).await.unwrap(), Credits(2));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A reference a later transaction interns again (a message record and a lot under a
    /// hash that history already holds) keeps its one id: the insert tried first for
    /// references meets the stored one and the lookup gives its id.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reference_stored_before_keeps_its_id() {
        use lotledger_store::batch::Commit;
        use lotledger_store::{MessageRecord, MessageStatus};
        let (dir, store) = fresh_file("ref-again").await;
        let at = Timestamp::from_unix_seconds(1_772_323_200).unwrap();
        let hash = "ab".repeat(32);
        for name in [hash.as_str(), "a_name"] {
            let first = [HistoryRow::bare("0xa", Credits(10), name, 0, at)];
            store.import_history(&first, at).await.unwrap();
            let mut tx = store.write().await.unwrap();
            let record = MessageRecord {
                item_hash: name.to_string(),
                status: MessageStatus::Processed,
                ignored: None,
                recorded_at: at,
                envelope: None,
            };
            tx.record_message(&record).await.unwrap();
            let second = [HistoryRow::bare("0xb", Credits(5), name, 1, at)];
            assert_eq!(tx.insert_rows(&second, at).await.unwrap(), 1);
            tx.commit().await.unwrap();
            let history = store
                .history(&HistorySelector::CreditRef(name.to_string()))
                .await
                .unwrap();
            assert_eq!(history.len(), 2, "{name}");
            let stored = store.message(name).await.unwrap().unwrap();
            assert_eq!(stored.status, MessageStatus::Processed, "{name}");
        }
        let refs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM refs")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(refs, 2, "one id per reference");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// References whose `ix_refs_key` keys are equal (two hashes alike in their first and last
    /// 4 bytes)
    /// or whose texts begin alike are interned apart and looked up apart, and `refs` refuses
    /// a reference it holds already, and any update, whoever writes (migration 0008's
    /// triggers).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn references_sharing_a_key_stay_apart_and_unique() {
        use lotledger_store::batch::Commit;
        use lotledger_store::{MessageRecord, MessageStatus};
        let (dir, store) = fresh_file("ref-keys").await;
        let at = Timestamp::from_unix_seconds(1_772_323_200).unwrap();
        // Two hashes alike but in their middle bytes: one key.
        let names = [
            format!("01234567{}89abcdef", "a".repeat(48)),
            format!("01234567{}89abcdef", "b".repeat(48)),
            "no_expiry_credits".to_string(),
            "no_expiry_credits_2".to_string(),
        ];
        for (i, name) in names.iter().enumerate() {
            let amount = Credits(10 + i64::try_from(i).unwrap());
            let rows = [HistoryRow::bare("0xa", amount, name, 0, at)];
            let mut tx = store.write().await.unwrap();
            assert_eq!(tx.insert_rows(&rows, at).await.unwrap(), 1);
            let record = MessageRecord {
                item_hash: name.clone(),
                status: if i % 2 == 0 {
                    MessageStatus::Processed
                } else {
                    MessageStatus::Rejected {
                        error: format!("refused {i}"),
                    }
                },
                ignored: None,
                recorded_at: at,
                envelope: None,
            };
            tx.record_message(&record).await.unwrap();
            tx.commit().await.unwrap();
        }
        for (i, name) in names.iter().enumerate() {
            let history = store
                .history(&HistorySelector::CreditRef(name.clone()))
                .await
                .unwrap();
            assert_eq!(history.len(), 1, "{name}");
            assert_eq!(history[0].credit_ref, *name);
            assert_eq!(history[0].amount, Credits(10 + i64::try_from(i).unwrap()));
            let stored = store.message(name).await.unwrap().unwrap();
            assert_eq!(stored.item_hash, *name);
            match (&stored.status, i % 2) {
                (MessageStatus::Processed, 0) => {}
                (MessageStatus::Rejected { error }, 1) => {
                    assert_eq!(*error, format!("refused {i}"))
                }
                (other, _) => panic!("{name}: {other:?}"),
            }
        }
        let unknown = format!("01234567{}89abcdef", "c".repeat(48));
        assert!(store.message(&unknown).await.unwrap().is_none());
        let count = || async {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM refs")
                .fetch_one(&store.pool)
                .await
                .unwrap()
        };
        assert_eq!(count().await, 4, "one id per reference");
        for (sql, value) in [
            (
                "INSERT INTO refs (ref) VALUES (?)",
                StoredRef::of(&names[1]),
            ),
            (
                "INSERT INTO refs (ref) VALUES (?)",
                StoredRef::of(&names[3]),
            ),
            (
                "UPDATE refs SET ref = ? WHERE id = 1",
                StoredRef::of("other"),
            ),
        ] {
            let refused = sqlx::query(sql).bind(value).execute(&store.pool).await;
            assert!(refused.is_err(), "{sql} {value:?}");
        }
        assert_eq!(count().await, 4);
        // Hashes made by counting, padded with zeros on the left or on the right, each get a
        // key of their own.
        let counted: Vec<HistoryRow> = (1..=300u32)
            .flat_map(|i| [format!("{i:064x}"), format!("{i:08x}{}", "0".repeat(56))])
            .map(|name| HistoryRow::bare("0xc", Credits(1), &name, 0, at))
            .collect();
        store.import_history(&counted, at).await.unwrap();
        let keys: i64 = sqlx::query_scalar(concat!(
            "SELECT COUNT(DISTINCT ",
            ref_key!("ref"),
            ") FROM refs"
        ))
        .fetch_one(&store.pool)
        .await
        .unwrap();
        assert_eq!(
            keys,
            3 + 600,
            "the two alike hashes share one key, nothing else does"
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The WAL of a file store is checkpointed while the store stays open, by the store's
    /// thread (the writer no longer checkpoints below 8 000 pages): the database file takes
    /// the pages of a commit that left more than 1 000 in the WAL.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_is_checkpointed_in_the_background() {
        let (dir, store) = fresh_file("checkpoint").await;
        let path = dir.join("ledger.db");
        let at = Timestamp::from_unix_seconds(1_772_323_200).unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        let rows: Vec<HistoryRow> = (0..30_000)
            .map(|i| {
                let mut row =
                    HistoryRow::bare(&format!("0x{:040x}", i % 3_000), Credits(5), "", 0, at);
                row.credit_ref = format!("{i:064x}");
                row.tx_hash = Some(format!("0x{i:064x}"));
                row
            })
            .collect();
        store.import_history(&rows, at).await.unwrap();
        let wal = dir.join("ledger.db-wal");
        assert!(
            std::fs::metadata(&wal).unwrap().len() > 1_000 * 4_096,
            "the commit left more than 1 000 pages in the WAL"
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::fs::metadata(&path).unwrap().len() < before + 1_000 * 4_096 {
            assert!(
                std::time::Instant::now() < deadline,
                "the database file did not take the WAL's pages"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(store.table_counts().await.unwrap().history_rows, 30_000);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A file store reads balances and their details on the calling thread (`quick`): each
    /// read sees every commit made before it, agrees with the pooled read (the split by expiry
    /// too), honours expirations, and readers running at once, more than the idle list keeps,
    /// each get a connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn balances_read_on_the_calling_thread_see_every_commit() {
        let (dir, store) = fresh_file("quick").await;
        assert!(store.quick.is_some());
        let at = Timestamp::from_unix_seconds(1_772_323_200).unwrap();
        let later = Timestamp::from_unix_seconds(1_772_323_200 + 3_600).unwrap();
        let mut expected = (0_i64, 0_i64);
        for i in 0..12_i64 {
            let mut row = HistoryRow::bare("0xq", Credits(i + 1), &format!("g{i}"), 0, at);
            if i % 3 == 0 {
                // Gone by `later`.
                row.expiration_date = Some(Timestamp::from_unix_seconds(1_772_323_260).unwrap());
            } else {
                expected.1 += i + 1;
            }
            expected.0 += i + 1;
            store.import_history(&[row], at).await.unwrap();
            let mut conn = store.pool.acquire().await.unwrap();
            for (instant, want) in [(at, expected.0), (later, expected.1)] {
                let quick = store.balance("0xq", instant).await.unwrap();
                let pooled = balance(&mut conn, "0xq", instant).await.unwrap();
                assert_eq!(quick, Credits(want), "after grant {i}");
                assert_eq!(pooled, quick, "after grant {i}");
                let details = store.balance_details("0xq", instant).await.unwrap();
                let pooled = lotledger_store::pooled::Reads::of(&store.pool)
                    .balance_details("0xq", instant)
                    .await
                    .unwrap();
                assert_eq!(details.0, Credits(want), "after grant {i}");
                assert_eq!(details, pooled, "after grant {i}");
            }
        }
        assert_eq!(store.balance("0xnobody", at).await.unwrap(), Credits(0));
        // Readers at once, past the idle list's size.
        let total = expected.0;
        let readers: Vec<_> = (0..(3 * quick::IDLE_MAX))
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    for _ in 0..50 {
                        assert_eq!(store.balance("0xq", at).await.unwrap(), Credits(total));
                    }
                })
            })
            .collect();
        for reader in readers {
            reader.await.unwrap();
        }
        assert!(store.quick.as_ref().unwrap().idle_count() <= quick::IDLE_MAX);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An in-memory store has no file for the scans: verify and repair take the set-based
    /// path and still find and mend a drift.
    #[tokio::test]
    async fn in_memory_store_verifies_and_repairs_without_scans() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        assert!(store.scan.is_none());
        let at = Timestamp::from_unix_seconds(1_772_323_200).unwrap();
        let rows = [HistoryRow::bare("0xa", Credits(10), "g", 0, at)];
        store.import_history(&rows, at).await.unwrap();
        sqlx::query("UPDATE credit_lots SET amount_remaining = 3")
            .execute(&store.pool)
            .await
            .unwrap();
        assert_eq!(
            maintenance::verify(&store, |_, _| {}).await.unwrap().len(),
            1
        );
        maintenance::repair(&store, true, |_, _| {}).await.unwrap();
        assert!(
            maintenance::verify(&store, |_, _| {})
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.balance("0xa", at).await.unwrap(), Credits(10));
    }

    /// A snapshot (what batches are planned ahead on) sees the generation of the file as it
    /// was when it was taken, and writes nothing: its connection refuses writes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshots_see_their_generation_and_refuse_writes() {
        use lotledger_store::batch::{Commit, Stamps};
        let (dir, store) = fresh_file("snapshot").await;
        let at = Timestamp::from_unix_seconds(1_772_323_200).unwrap();
        let mut snapshot = store.snapshot().await.unwrap().unwrap();
        let seen = snapshot.stamps(&[]).await.unwrap();
        // A write committed after the snapshot was taken: the file's generation moves on, the
        // snapshot's does not, and it does not see the write.
        let rows = [HistoryRow::bare("0xa", Credits(10), "g", 0, at)];
        store.import_history(&rows, at).await.unwrap();
        let mut tx = store.write().await.unwrap();
        let now = tx.stamps(&[]).await.unwrap();
        drop(tx);
        assert_ne!(seen, now);
        assert!(matches!(seen, Stamps::Store(_)), "{seen:?}");
        assert_eq!(snapshot.balance("0xa", at).await.unwrap(), Credits::ZERO);
        let err = snapshot.insert_rows(&rows, at).await.unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
        drop(snapshot);
        let fresh = store
            .snapshot()
            .await
            .unwrap()
            .unwrap()
            .stamps(&[])
            .await
            .unwrap();
        assert_eq!(
            fresh, now,
            "a new snapshot sees the committed write's generation"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
