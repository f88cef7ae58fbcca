//! The embedded SQLite store: one file, WAL, `BEGIN IMMEDIATE` write transactions.
//!
//! Instants are stored as INTEGER microseconds, decimals as TEXT in PostgreSQL `NUMERIC` form.
//! History rows and message records append under INTEGER row ids; addresses and references are
//! interned (`addresses`, `refs`), a 64-hex reference as its 32 bytes (migration 0005). The
//! SQL joins them back, so the [`LedgerTx`] seen by the writers speaks text as before.
//! Rows are mapped by hand (`wrappers`): core types never see sqlx.

use std::str::FromStr;
use std::time::Duration;

use lotledger_core::{
    BalanceDetail, Credits, HistoryRow, Lot, Timestamp, balance_details_from_sums,
};
use lotledger_store::batch::{BatchCache, Commit, LastRows, Stamps};
use lotledger_store::compact;
use lotledger_store::maintenance::BatchLimit;
use lotledger_store::transactional::Transactional;
use lotledger_store::{
    BalancesQuery, Drift, Footprint, HistorySelector, IngestProgress, LedgerTx, MessageRecord,
    MessageStatus, Store, StoreError, TableCounts, distinct, non_negative,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions as _, QueryBuilder, Sqlite, Transaction};

mod scan;
mod wrappers;
pub use scan::{Access, PASS_ROWS, SCAN_FRACTION, ScanFile};
use wrappers::{StoredRef, db_err, history_row, lot, message_record};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Rows per multi-row INSERT (17 columns each, well under SQLite's variable limit).
const INSERT_CHUNK_ROWS: usize = 500;
/// Values per `IN (…)` list.
const IN_CHUNK: usize = 500;

/// A stored reference (`refs.ref` of the row aliased `r`) as text: a BLOB (a 64-hex hash) as
/// lower-case hex. References sort by this text, never by the stored value.
macro_rules! ref_text {
    () => {
        "CASE WHEN typeof(r.ref) = 'blob' THEN lower(hex(r.ref)) ELSE r.ref END"
    };
}

/// History rows with the columns `wrappers::history_row` reads; `h` the history row.
macro_rules! history_select {
    () => {
        lotledger_store::sql_history_select!(ref_text, "h.price", "h.expense_size_mib")
    };
}

/// Lots with the columns `wrappers::lot` reads; `l` the lot.
macro_rules! lot_select {
    () => {
        lotledger_store::sql_lot_select!(ref_text)
    };
}

/// Message records with the columns `wrappers::message_record` reads; `m` the record.
macro_rules! message_select {
    () => {
        lotledger_store::sql_message_select!(ref_text)
    };
}

/// Emission (replay) order of lots `l` / history rows `h`.
macro_rules! lot_order {
    () => {
        lotledger_store::sql_emission_order!(ref_text, "l")
    };
}
macro_rules! history_order {
    () => {
        lotledger_store::sql_emission_order!(ref_text, "h")
    };
}

/// The interned id of the address bound next (NULL if never interned).
macro_rules! address_id {
    () => {
        "(SELECT id FROM addresses WHERE address = ?)"
    };
}
/// A lotledger store in one SQLite file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The addresses the last batch left, for the next one (valid while the file's generation
    /// is the one that batch committed).
    cache: std::sync::Arc<std::sync::Mutex<BatchCache>>,
    /// Whole-table verify and rebuild on a connection of their own (none in memory).
    scan: Option<ScanFile>,
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
        let scan = (!in_memory(url)).then(|| ScanFile::new(options.get_filename()));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        let store = SqliteStore {
            pool,
            cache: Default::default(),
            scan,
        };
        store.migrate().await?;
        Ok(store)
    }
}

impl Transactional for SqliteStore {
    type Tx = SqliteTx;

    /// By the scans when the store is a file: only the addresses whose cache differs from the
    /// replay are written, with the lots the replay gives, as `rederive_many` would write them.
    async fn rebuild_addresses(&self, addresses: &[String]) -> Result<(), StoreError> {
        match &self.scan {
            Some(scan) => {
                let scan = scan.clone();
                let addresses = addresses.to_vec();
                blocking(move || scan.rebuild(&addresses, Access::Auto).map(drop)).await
            }
            None => lotledger_store::transactional::rebuild(self, addresses).await,
        }
    }

    fn batch_cache(&self) -> Option<&std::sync::Mutex<BatchCache>> {
        Some(&self.cache)
    }

    /// Opens a write transaction and advances the file's generation (`PRAGMA user_version`),
    /// which every write transaction of every process does: a cache of what the last batch
    /// left is exact only while the generation is the one that batch committed.
    async fn write(&self) -> Result<SqliteTx, StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let before: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
        let after = next_generation(before);
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA user_version = {after}"
        )))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        Ok(SqliteTx {
            tx,
            generations: Some((before, after)),
        })
    }
}

/// One open transaction: `BEGIN IMMEDIATE` for writes (with the generations it advanced), or a
/// deferred read transaction (none).
pub struct SqliteTx {
    tx: Transaction<'static, Sqlite>,
    generations: Option<(i64, i64)>,
}

impl Commit for SqliteTx {
    async fn commit_stamped(self) -> Result<Stamps, StoreError> {
        self.tx.commit().await.map_err(db_err)?;
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

    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Database(Box::new(e)))
    }

    async fn ingest_progress(&self, source: &str) -> Result<Option<IngestProgress>, StoreError> {
        let row: Option<(i64, i64, String)> = sqlx::query_as(
            "SELECT lines, bytes, prefix_sha256 FROM ingest_progress WHERE source = ? AND bytes IS NOT NULL AND prefix_sha256 IS NOT NULL",
        )
        .bind(source)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.map(|(lines, bytes, prefix_sha256)| {
            IngestProgress::from_row(source, lines, bytes, prefix_sha256)
        })
        .transpose()
    }

    async fn balance(&self, address: &str, at: Timestamp) -> Result<Credits, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        balance(&mut conn, address, at).await
    }

    async fn balance_details(
        &self,
        address: &str,
        at: Timestamp,
    ) -> Result<(Credits, Vec<BalanceDetail>), StoreError> {
        // Grouped in SQL: one row per expiry, not one per lot.
        let groups: Vec<(Option<i64>, i64)> = sqlx::query_as(concat!(
            "SELECT expiration_date, SUM(amount_remaining) FROM credit_lots \
             WHERE address_id = ",
            address_id!(),
            " AND (expiration_date IS NULL OR expiration_date > ?) GROUP BY expiration_date"
        ))
        .bind(address)
        .bind(at.as_micros())
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        let sums = groups
            .into_iter()
            .map(|(expiry, sum)| {
                let expiry = expiry
                    .map(Timestamp::from_micros)
                    .transpose()
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                Ok((expiry, Credits(sum)))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        balance_details_from_sums(sums)
            .ok_or_else(|| StoreError::Overflow(format!("balance of {address}")))
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
                " WHERE h.ref_id = (SELECT id FROM refs WHERE ref = ?) ORDER BY h.credit_index"
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

    async fn addresses(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT address FROM addresses a \
             WHERE EXISTS (SELECT 1 FROM credit_history WHERE address_id = a.id) \
             OR EXISTS (SELECT 1 FROM credit_lots WHERE address_id = a.id) ORDER BY address",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)
    }

    async fn address_rows(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query_as(lotledger_store::sql::ADDRESS_ROWS)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(lotledger_store::sql::address_rows(rows))
    }

    fn maintenance_batch(&self) -> BatchLimit {
        if self.scan.is_some() {
            lotledger_store::scan::BATCH
        } else {
            BatchLimit::default()
        }
    }

    async fn verify(&self, addresses: &[String]) -> Result<Vec<Drift>, StoreError> {
        if let Some(scan) = &self.scan {
            let scan = scan.clone();
            let addresses = addresses.to_vec();
            return blocking(move || scan.verify(&addresses, Access::Auto)).await;
        }
        // A deferred read transaction: in WAL mode every read of the batch sees the snapshot
        // taken at its first read, so history and lots are compared consistently.
        let mut tx = SqliteTx {
            tx: self.pool.begin().await.map_err(db_err)?,
            generations: None,
        };
        let refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
        let rows = tx.replay_histories(&refs).await?;
        let lots = tx.load_lots(&refs).await?;
        tx.tx.rollback().await.map_err(db_err)?;
        lotledger_store::maintenance::drifts(addresses, &rows, lots)
    }

    async fn repair_checkpoint(&self) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT last_address FROM repair_checkpoint WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)
    }

    async fn set_repair_checkpoint(&self, last_address: Option<&str>) -> Result<(), StoreError> {
        let query = match last_address {
            Some(a) => sqlx::query(
                "INSERT INTO repair_checkpoint (id, last_address) VALUES (1, ?) \
                 ON CONFLICT (id) DO UPDATE SET last_address = excluded.last_address",
            )
            .bind(a),
            None => sqlx::query("DELETE FROM repair_checkpoint"),
        };
        query.execute(&self.pool).await.map_err(db_err)?;
        Ok(())
    }

    async fn credit_balances(
        &self,
        q: &BalancesQuery<'_>,
    ) -> Result<Vec<(String, Credits)>, StoreError> {
        // Addresses in text order off their unique index, each summing its own lots.
        let mut b = QueryBuilder::<Sqlite>::new(
            "SELECT a.address, COALESCE(SUM(CASE WHEN l.expiration_date IS NULL OR l.expiration_date > ",
        );
        b.push_bind(q.at.as_micros()).push(
            " THEN l.amount_remaining ELSE 0 END), 0) AS balance \
             FROM addresses a JOIN credit_lots l ON l.address_id = a.id",
        );
        if let Some(after) = q.after {
            b.push(" WHERE a.address > ").push_bind(after);
        }
        b.push(" GROUP BY a.address HAVING balance >= ")
            .push_bind(q.min_balance)
            .push(" ORDER BY a.address LIMIT ")
            .push_bind(q.limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX)))
            .push(" OFFSET ")
            .push_bind(i64::try_from(q.offset).unwrap_or(i64::MAX));
        let rows: Vec<(String, i64)> = b
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(rows.into_iter().map(|(a, c)| (a, Credits(c))).collect())
    }

    async fn count_credit_balances(
        &self,
        at: Timestamp,
        min_balance: i64,
    ) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT address_id FROM credit_lots GROUP BY address_id \
             HAVING COALESCE(SUM(CASE WHEN expiration_date IS NULL OR expiration_date > ? \
             THEN amount_remaining ELSE 0 END), 0) >= ?)",
        )
        .bind(at.as_micros())
        .bind(min_balance)
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn consumed_credits(
        &self,
        address: Option<&str>,
        resource: Option<&str>,
    ) -> Result<Credits, StoreError> {
        let mut b = QueryBuilder::<Sqlite>::new(
            "SELECT COALESCE(SUM(ABS(amount)), 0) FROM credit_history \
             WHERE payment_method = 'credit_expense'",
        );
        if let Some(a) = address {
            b.push(" AND address_id = (SELECT id FROM addresses WHERE address = ")
                .push_bind(a)
                .push(")");
        }
        if let Some(r) = resource {
            // Stored compactly: '' is x'00' (see migration 0007).
            b.push(" AND COALESCE(NULLIF(origin, x'00'), origin_ref) = ")
                .push_bind(compact::encode(r));
        }
        let sum: i64 = b
            .build_query_scalar()
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(Credits(sum))
    }

    async fn message(&self, item_hash: &str) -> Result<Option<MessageRecord>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        message(&mut conn, item_hash).await
    }

    async fn table_counts(&self) -> Result<TableCounts, StoreError> {
        let row: (i64, i64, i64) = sqlx::query_as(lotledger_store::sql_table_counts!())
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(TableCounts::from_row(row))
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
    let row = sqlx::query(concat!(message_select!(), " WHERE r.ref = ?"))
        .bind(StoredRef::of(item_hash))
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
    row.as_ref().map(message_record).transpose()
}

async fn balance(
    conn: &mut sqlx::SqliteConnection,
    address: &str,
    at: Timestamp,
) -> Result<Credits, StoreError> {
    let sum: Option<i64> = sqlx::query_scalar(concat!(
        "SELECT SUM(amount_remaining) FROM credit_lots WHERE address_id = ",
        address_id!(),
        " AND (expiration_date IS NULL OR expiration_date > ?)"
    ))
    .bind(address)
    .bind(at.as_micros())
    .fetch_one(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(Credits(sum.unwrap_or(0).max(0)))
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

async fn address_history(
    conn: &mut sqlx::SqliteConnection,
    address: &str,
) -> Result<Vec<HistoryRow>, StoreError> {
    let rows = sqlx::query(concat!(
        history_select!(),
        " WHERE h.address_id = ",
        address_id!(),
        history_order!()
    ))
    .bind(address)
    .fetch_all(&mut *conn)
    .await
    .map_err(db_err)?;
    rows.iter().map(history_row).collect()
}

/// `v1, v2, …` bound as parameters, then `)` (the caller wrote `… IN (`).
fn push_in_list<T>(qb: &mut QueryBuilder<Sqlite>, values: impl IntoIterator<Item = T>)
where
    T: for<'q> sqlx::Encode<'q, Sqlite> + sqlx::Type<Sqlite>,
{
    let mut list = qb.separated(", ");
    for v in values {
        list.push_bind(v);
    }
    qb.push(")");
}

/// `(v1, …), (…), …` bound as parameters: one row of `row`'s values per item, for a
/// `FROM (VALUES …) v` whose columns SQLite names `v.column1`, `v.column2`, ….
fn push_value_rows<I>(
    qb: &mut QueryBuilder<Sqlite>,
    items: impl IntoIterator<Item = I>,
    row: impl Fn(sqlx::query_builder::Separated<'_, Sqlite, &'static str>, I),
) {
    let mut first = true;
    for item in items {
        if !first {
            qb.push(", ");
        }
        first = false;
        qb.push("(");
        row(qb.separated(", "), item);
        qb.push(")");
    }
}

fn opt_micros(t: Option<Timestamp>) -> Option<i64> {
    t.map(Timestamp::as_micros)
}

impl SqliteTx {
    /// Interns addresses (ids in order of first appearance; known ones are kept).
    async fn intern_addresses(&mut self, addresses: &[&str]) -> Result<(), StoreError> {
        for chunk in distinct(addresses.iter().copied()).chunks(IN_CHUNK) {
            let mut qb: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO addresses (address) ");
            qb.push_values(chunk, |mut b, a| {
                b.push_bind(a.to_string());
            });
            qb.push(" ON CONFLICT DO NOTHING");
            qb.build().execute(&mut *self.tx).await.map_err(db_err)?;
        }
        Ok(())
    }

    /// Interns references (binary when 64-hex; ids in order of first appearance).
    async fn intern_refs(&mut self, refs: &[&str]) -> Result<(), StoreError> {
        for chunk in distinct(refs.iter().copied()).chunks(IN_CHUNK) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new("INSERT INTO refs (ref) ");
            qb.push_values(chunk, |mut b, r| {
                b.push_bind(StoredRef::of(r));
            });
            qb.push(" ON CONFLICT DO NOTHING");
            qb.build().execute(&mut *self.tx).await.map_err(db_err)?;
        }
        Ok(())
    }

    /// Inserts lots (`upsert`: or sets the remainder of an existing one; else skips it).
    async fn put_lots(&mut self, lots: &[Lot], upsert: bool) -> Result<(), StoreError> {
        for chunk in lots.chunks(INSERT_CHUNK_ROWS) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO credit_lots (address_id, message_timestamp, ref_id, credit_index, \
                 amount_remaining, expiration_date) \
                 SELECT (SELECT id FROM addresses WHERE address = v.column1), v.column2, \
                 (SELECT id FROM refs WHERE ref = v.column3), v.column4, v.column5, v.column6 \
                 FROM (VALUES ",
            );
            push_value_rows(&mut qb, chunk, |mut b, l| {
                b.push_bind(l.address.clone())
                    .push_bind(l.message_timestamp.as_micros())
                    .push_bind(StoredRef::of(&l.credit_ref))
                    .push_bind(l.credit_index)
                    .push_bind(l.amount_remaining.0)
                    .push_bind(opt_micros(l.expiration_date));
            });
            qb.push(if upsert {
                ") v WHERE true ON CONFLICT (address_id, message_timestamp, ref_id, credit_index) \
                 DO UPDATE SET amount_remaining = excluded.amount_remaining"
            } else {
                ") v WHERE true ON CONFLICT DO NOTHING"
            });
            qb.build().execute(&mut *self.tx).await.map_err(db_err)?;
        }
        Ok(())
    }
}

impl LedgerTx for SqliteTx {
    async fn message_status(
        &mut self,
        item_hash: &str,
    ) -> Result<Option<MessageStatus>, StoreError> {
        Ok(message(&mut self.tx, item_hash).await?.map(|r| r.status))
    }

    async fn record_message(&mut self, record: &MessageRecord) -> Result<(), StoreError> {
        self.record_messages(std::slice::from_ref(record)).await
    }

    async fn lock(&mut self, _item_hash: &str, _addresses: &[&str]) -> Result<(), StoreError> {
        // BEGIN IMMEDIATE already excludes every other writer.
        Ok(())
    }

    async fn balance(&mut self, address: &str, at: Timestamp) -> Result<Credits, StoreError> {
        balance(&mut self.tx, address, at).await
    }

    async fn drainable_lots(
        &mut self,
        demand: &[(&str, i128)],
        ts: Timestamp,
    ) -> Result<Vec<Lot>, StoreError> {
        let mut out = Vec::new();
        for (address, _) in demand {
            let rows = sqlx::query(concat!(
                lot_select!(),
                " WHERE l.address_id = ",
                address_id!(),
                " AND l.message_timestamp <= ? \
                 AND (l.expiration_date IS NULL OR l.expiration_date > ?)",
                lot_order!()
            ))
            .bind(*address)
            .bind(ts.as_micros())
            .bind(ts.as_micros())
            .fetch_all(&mut *self.tx)
            .await
            .map_err(db_err)?;
            for row in &rows {
                out.push(lot(row)?);
            }
        }
        Ok(out)
    }

    async fn insert_rows(
        &mut self,
        rows: &[HistoryRow],
        last_update: Timestamp,
    ) -> Result<u64, StoreError> {
        let addresses: Vec<&str> = rows.iter().map(|r| r.address.as_str()).collect();
        self.intern_addresses(&addresses).await?;
        let refs: Vec<&str> = rows.iter().map(|r| r.credit_ref.as_str()).collect();
        self.intern_refs(&refs).await?;
        let mut inserted = 0;
        for chunk in rows.chunks(INSERT_CHUNK_ROWS) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO credit_history (ref_id, credit_index, address_id, message_timestamp, \
                 amount, expiration_date, last_update, price, bonus_amount, tx_hash, token, chain, \
                 provider, origin, origin_ref, payment_method, expense_count, expense_size_mib) \
                 SELECT (SELECT id FROM refs WHERE ref = v.column1), v.column2, \
                 (SELECT id FROM addresses WHERE address = v.column3), v.column4, v.column5, \
                 v.column6, v.column7, v.column8, v.column9, v.column10, v.column11, v.column12, \
                 v.column13, v.column14, v.column15, v.column16, v.column17, v.column18 \
                 FROM (VALUES ",
            );
            push_value_rows(&mut qb, chunk, |mut b, r| {
                b.push_bind(StoredRef::of(&r.credit_ref))
                    .push_bind(r.credit_index)
                    .push_bind(r.address.clone())
                    .push_bind(r.message_timestamp.as_micros())
                    .push_bind(r.amount.0)
                    .push_bind(opt_micros(r.expiration_date))
                    .push_bind(last_update.as_micros())
                    .push_bind(r.price.clone())
                    .push_bind(r.bonus_amount)
                    .push_bind(r.tx_hash.as_deref().map(compact::encode))
                    .push_bind(r.token.clone())
                    .push_bind(r.chain.clone())
                    .push_bind(r.provider.clone())
                    .push_bind(r.origin.as_deref().map(compact::encode))
                    .push_bind(r.origin_ref.as_deref().map(compact::encode))
                    .push_bind(r.payment_method.clone())
                    .push_bind(r.expense_count)
                    .push_bind(r.expense_size_mib.clone());
            });
            qb.push(") v WHERE true ON CONFLICT (ref_id, credit_index) DO NOTHING");
            inserted += qb
                .build()
                .execute(&mut *self.tx)
                .await
                .map_err(db_err)?
                .rows_affected();
        }
        Ok(inserted)
    }

    async fn insert_lots(&mut self, lots: &[Lot]) -> Result<(), StoreError> {
        self.put_lots(lots, false).await
    }

    async fn update_lots(&mut self, lots: &[Lot]) -> Result<(), StoreError> {
        for l in lots {
            let query = if l.amount_remaining.is_positive() {
                sqlx::query(concat!(
                    "UPDATE credit_lots SET amount_remaining = ? WHERE address_id = ",
                    address_id!(),
                    " AND message_timestamp = ? \
                     AND ref_id = (SELECT id FROM refs WHERE ref = ?) AND credit_index = ?"
                ))
                .bind(l.amount_remaining.0)
            } else {
                sqlx::query(concat!(
                    "DELETE FROM credit_lots WHERE address_id = ",
                    address_id!(),
                    " AND message_timestamp = ? \
                     AND ref_id = (SELECT id FROM refs WHERE ref = ?) AND credit_index = ?"
                ))
            };
            query
                .bind(l.address.clone())
                .bind(l.message_timestamp.as_micros())
                .bind(StoredRef::of(&l.credit_ref))
                .bind(l.credit_index)
                .execute(&mut *self.tx)
                .await
                .map_err(db_err)?;
        }
        Ok(())
    }

    async fn rows_after(
        &mut self,
        address: &str,
        ts: Timestamp,
        credit_ref: &str,
    ) -> Result<(bool, bool), StoreError> {
        let row: (i64, i64) = sqlx::query_as(concat!(
            "SELECT COUNT(*) > 0, COALESCE(MAX(h.amount < 0), 0) FROM credit_history h \
             JOIN refs r ON r.id = h.ref_id \
             WHERE h.address_id = (SELECT id FROM addresses WHERE address = ?1) \
             AND (h.message_timestamp > ?2 OR (h.message_timestamp = ?2 AND ",
            ref_text!(),
            " > ?3))"
        ))
        .bind(address)
        .bind(ts.as_micros())
        .bind(credit_ref)
        .fetch_one(&mut *self.tx)
        .await
        .map_err(db_err)?;
        Ok((row.0 != 0, row.1 != 0))
    }

    async fn address_history(&mut self, address: &str) -> Result<Vec<HistoryRow>, StoreError> {
        address_history(&mut self.tx, address).await
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
        let mut out = Vec::new();
        for chunk in addresses.chunks(IN_CHUNK) {
            let mut qb: QueryBuilder<Sqlite> =
                QueryBuilder::new(concat!(lot_select!(), " WHERE a.address IN ("));
            push_in_list(&mut qb, chunk.iter().map(|a| a.to_string()));
            for row in qb.build().fetch_all(&mut *self.tx).await.map_err(db_err)? {
                out.push(lot(&row)?);
            }
        }
        Ok(out)
    }

    async fn last_rows(
        &mut self,
        addresses: &[&str],
    ) -> Result<Vec<(String, LastRows)>, StoreError> {
        // Index seeks on (address_id, message_timestamp) read backwards: the last row of each
        // address, and its last debit (ties on the instant broken by the reference's text).
        let mut out = Vec::new();
        for chunk in addresses.chunks(IN_CHUNK) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new("WITH q(address) AS (VALUES ");
            push_value_rows(&mut qb, chunk, |mut b, a| {
                b.push_bind(a.to_string());
            });
            qb.push(concat!(
                ") SELECT q.address, \
                 (SELECT h.message_timestamp || ' ' || ",
                ref_text!(),
                " FROM credit_history h JOIN refs r ON r.id = h.ref_id WHERE h.address_id = x.id \
                 ORDER BY h.message_timestamp DESC, ",
                ref_text!(),
                " DESC LIMIT 1), \
                 (SELECT h.message_timestamp || ' ' || ",
                ref_text!(),
                " FROM credit_history h JOIN refs r ON r.id = h.ref_id WHERE h.address_id = x.id \
                 AND h.amount < 0 ORDER BY h.message_timestamp DESC, ",
                ref_text!(),
                " DESC LIMIT 1) FROM q JOIN addresses x ON x.address = q.address"
            ));
            let rows: Vec<(String, Option<String>, Option<String>)> = qb
                .build_query_as()
                .fetch_all(&mut *self.tx)
                .await
                .map_err(db_err)?;
            for (address, any, debit) in rows {
                let position =
                    |text: Option<String>| -> Result<Option<(Timestamp, String)>, StoreError> {
                        let Some(text) = text else { return Ok(None) };
                        let (micros, credit_ref) = text.split_once(' ').ok_or_else(|| {
                            StoreError::Corrupt(format!("history position {text:?}"))
                        })?;
                        let micros: i64 = micros.parse().map_err(|_| {
                            StoreError::Corrupt(format!("history position {text:?}"))
                        })?;
                        let at = Timestamp::from_micros(micros)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                        Ok(Some((at, credit_ref.to_string())))
                    };
                let rows = LastRows {
                    any: position(any)?,
                    debit: position(debit)?,
                };
                if rows.any.is_some() {
                    out.push((address, rows));
                }
            }
        }
        Ok(out)
    }

    async fn message_statuses(
        &mut self,
        item_hashes: &[&str],
    ) -> Result<Vec<(String, MessageStatus)>, StoreError> {
        let mut out = Vec::new();
        for chunk in item_hashes.chunks(IN_CHUNK) {
            let mut qb: QueryBuilder<Sqlite> =
                QueryBuilder::new(concat!(message_select!(), " WHERE r.ref IN ("));
            push_in_list(&mut qb, chunk.iter().map(|h| StoredRef::of(h)));
            for row in qb.build().fetch_all(&mut *self.tx).await.map_err(db_err)? {
                let r = message_record(&row)?;
                out.push((r.item_hash, r.status));
            }
        }
        Ok(out)
    }

    async fn existing_row_keys(
        &mut self,
        credit_refs: &[&str],
    ) -> Result<Vec<(String, i32)>, StoreError> {
        let mut out = Vec::new();
        for chunk in credit_refs.chunks(IN_CHUNK) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(concat!(
                "SELECT ",
                ref_text!(),
                ", h.credit_index FROM credit_history h JOIN refs r ON r.id = h.ref_id \
                 WHERE r.ref IN ("
            ));
            push_in_list(&mut qb, chunk.iter().map(|r| StoredRef::of(r)));
            let rows: Vec<(String, i32)> = qb
                .build_query_as()
                .fetch_all(&mut *self.tx)
                .await
                .map_err(db_err)?;
            out.extend(rows);
        }
        Ok(out)
    }

    async fn write_lots(&mut self, upserts: &[Lot], deletes: &[Lot]) -> Result<(), StoreError> {
        for chunk in deletes.chunks(IN_CHUNK / 4) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "DELETE FROM credit_lots WHERE (address_id, message_timestamp, ref_id, credit_index) \
                 IN (SELECT (SELECT id FROM addresses WHERE address = v.column1), v.column2, \
                 (SELECT id FROM refs WHERE ref = v.column3), v.column4 FROM (VALUES ",
            );
            push_value_rows(&mut qb, chunk, |mut b, l| {
                b.push_bind(l.address.clone())
                    .push_bind(l.message_timestamp.as_micros())
                    .push_bind(StoredRef::of(&l.credit_ref))
                    .push_bind(l.credit_index);
            });
            qb.push(") v)");
            qb.build().execute(&mut *self.tx).await.map_err(db_err)?;
        }
        self.put_lots(upserts, true).await
    }

    async fn replay_histories(
        &mut self,
        addresses: &[&str],
    ) -> Result<Vec<HistoryRow>, StoreError> {
        // One row per address: SQLite builds the records, so rows do not cross sqlx's worker
        // channel one by one.
        let mut out = Vec::new();
        for chunk in addresses.chunks(IN_CHUNK) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(concat!(
                "SELECT a.address, group_concat(h.message_timestamp || ',' || h.amount || ',' || \
                 IFNULL(h.expiration_date, '') || ',' || h.credit_index || ',' || \
                 length(CAST(",
                ref_text!(),
                " AS BLOB)) || ':' || ",
                ref_text!(),
                " || ';', ''",
                history_order!(),
                ") FROM credit_history h JOIN addresses a ON a.id = h.address_id \
                 JOIN refs r ON r.id = h.ref_id WHERE a.address IN ("
            ));
            push_in_list(&mut qb, chunk.iter().map(|a| a.to_string()));
            qb.push(" GROUP BY a.address ORDER BY a.address");
            let rows: Vec<(String, String)> = qb
                .build_query_as()
                .fetch_all(&mut *self.tx)
                .await
                .map_err(db_err)?;
            for (address, text) in rows {
                lotledger_store::decode_replay_rows(&address, &text, &mut out)?;
            }
        }
        Ok(out)
    }

    async fn delete_lots_of(&mut self, addresses: &[&str]) -> Result<(), StoreError> {
        for chunk in addresses.chunks(IN_CHUNK) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "DELETE FROM credit_lots WHERE address_id IN \
                 (SELECT id FROM addresses WHERE address IN (",
            );
            push_in_list(&mut qb, chunk.iter().map(|a| a.to_string()));
            qb.push(")");
            qb.build().execute(&mut *self.tx).await.map_err(db_err)?;
        }
        Ok(())
    }

    async fn set_ingest_progress(&mut self, progress: &IngestProgress) -> Result<(), StoreError> {
        let (lines, bytes) = progress.stored_counts()?;
        sqlx::query("INSERT INTO ingest_progress (source, lines, bytes, prefix_sha256) VALUES (?, ?, ?, ?) ON CONFLICT (source) DO UPDATE SET lines = excluded.lines, bytes = excluded.bytes, prefix_sha256 = excluded.prefix_sha256")
            .bind(&progress.source)
            .bind(lines)
            .bind(bytes)
            .bind(&progress.prefix_sha256)
            .execute(&mut *self.tx)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn record_messages(&mut self, records: &[MessageRecord]) -> Result<(), StoreError> {
        let hashes: Vec<&str> = records.iter().map(|r| r.item_hash.as_str()).collect();
        self.intern_refs(&hashes).await?;
        for chunk in records.chunks(INSERT_CHUNK_ROWS) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO credit_messages (ref_id, status, ignored, error, recorded_at) \
                 SELECT (SELECT id FROM refs WHERE ref = v.column1), v.column2, v.column3, \
                 v.column4, v.column5 FROM (VALUES ",
            );
            push_value_rows(&mut qb, chunk, |mut b, r| {
                let (status, error) = match &r.status {
                    MessageStatus::Processed => ("processed", None),
                    MessageStatus::Rejected { error } => ("rejected", Some(error.clone())),
                };
                b.push_bind(StoredRef::of(&r.item_hash))
                    .push_bind(status)
                    .push_bind(r.ignored.clone())
                    .push_bind(error)
                    .push_bind(r.recorded_at.as_micros());
            });
            qb.push(
                ") v WHERE true ON CONFLICT (ref_id) DO UPDATE SET status = excluded.status, \
                 ignored = excluded.ignored, error = excluded.error, recorded_at = excluded.recorded_at",
            );
            qb.build().execute(&mut *self.tx).await.map_err(db_err)?;
        }
        Ok(())
    }
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
}
