//! The PostgreSQL store, for production: row locks on drained lots, advisory locks per message
//! and per address (taken in one sorted order, so writers never deadlock; a batch with more
//! keys than [`LOCK_KEYS_MAX`] takes one exclusive writers' lock instead), instants as
//! `TIMESTAMPTZ`, decimals as `NUMERIC`, text keys in the "C" collation. History rows and
//! message records append under growing integer ids; addresses and references are interned
//! (`addresses`, `refs`: a 64-hex reference as its 32 bytes), and the SQL joins the text back,
//! so the [`LedgerTx`] seen by the writers speaks text as before (migration 0005).
//!
//! Rows are mapped by hand (`wrappers`): core types never see sqlx.
//!
//! Every statement is prepared once per connection. The writers' transactions and the
//! snapshots they plan on run under `keyed_plans!`: each statement keeps one generic plan,
//! made without sequential scans, so its lookups are index probes whatever the tables' sizes
//! when it was planned, and no call pays for planning (W1 ×1.17–1.46, W6 group commit
//! ×1.06–1.53: BENCHMARKS.md, issue 10, twentieth session). References are looked up by one
//! index probe each (`probe_ref!`), and large appends skip `ON CONFLICT` unless they meet a
//! conflict ([`PLAIN_APPEND_MIN_ROWS`]).

// Per-transaction maps keyed by addresses and references: foldhash, as the batch's own maps
// (SipHash was ~2 % of W1's client samples here).
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use lotledger_core::node_json::StoredEnvelope;
use lotledger_core::{BalanceDetail, Credits, HistoryRow, Lot, Timestamp};
use lotledger_store::batch::{BatchCache, Commit, LastRows, Stamps};
use lotledger_store::compact;
use lotledger_store::kept_ids::KeptIds;
use lotledger_store::pooled::lost_connection;
use lotledger_store::sql::OnConflict;
use lotledger_store::transactional::Transactional;
use lotledger_store::{
    AddressRows, Drift, EnvelopeScan, Footprint, HistorySelector, IngestProgress, LedgerTx,
    MessageRecord, MessageStatus, Store, StoreError, distinct, kept_envelopes, non_negative,
};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgQueryResult, PgRow};
use sqlx::{ConnectOptions as _, PgConnection, Postgres, Transaction};

mod balances;
mod databases;
mod packed;
mod reads;
mod scan;
mod wrappers;

pub use balances::BalanceCacheCounts;
pub use databases::{create_database, drop_database, unique_database_name, with_database};
/// The packed history a replay reads (`Store::replay_history`), for plan checks.
pub use packed::SQL as REPLAY_HISTORY_SQL;
use wrappers::{
    WRITERS_LOCK_KEY, db_err, history_row, lock_key, lot, message_record, odt, opt_odt, ref_arrays,
    ref_parts, ref_text, stored_message,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long a pooled connection may sit idle before it is pinged on acquire, and how long
/// every acquire pings after a connection was found dead.
const PING_AFTER_IDLE: Duration = Duration::from_secs(10);

/// The pool's connections.
const MAX_CONNECTIONS: u32 = 8;

/// Write transactions worth running at once: `serve`'s committers, one pool connection each
/// (half the pool: reads keep the rest). A committer's transaction is a chain of round trips,
/// each side waiting on the other: with two, 0.55–0.8 of the two cores stayed idle. Four
/// measured W6 ×0.97–1.22 group commit and ×1.31–1.82 one message per transaction; six no
/// better than four (BENCHMARKS.md, issue 10, twentieth session).
const CONCURRENT_WRITERS: usize = 4;

/// The settings of the writers' transactions and of the snapshots they plan on (`SET LOCAL`:
/// they end with the transaction). Every statement these transactions run looks rows up by
/// keys (arrays of addresses, references, ids) or appends, for which index probes are right at
/// any table size. Left to itself, PostgreSQL plans a prepared statement afresh for its first
/// five calls and then keeps a generic plan if it looks no dearer; on a young ledger that
/// plan scans whole tables that keep growing under it (W6 on a fresh database, ×1.8–2.0
/// slower, eighth session), and planning each call afresh instead cost as much as running the
/// statements. A generic plan made with sequential scans priced out probes the indexes
/// whatever the tables' sizes when it was made, and is made once per connection.
macro_rules! keyed_plans {
    () => {
        "SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL enable_seqscan = off"
    };
}

/// Opens a read-only transaction whose reads all see one snapshot (`REPEATABLE READ`), taken
/// at its first read.
macro_rules! begin_snapshot {
    () => {
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
    };
}

/// Rows from which an append (history rows, new references, message records) is first sent
/// without its `ON CONFLICT` clause, under a savepoint, and sent again with it only if it met
/// a unique violation. PostgreSQL's `ON CONFLICT` checks every unique index before each row's
/// insert and confirms the row after: on W1's final rows, ×1.6 the time of a plain insert for
/// the history and ×2.1 for `refs` (BENCHMARKS.md). A conflict is rare on these appends (the
/// batch has read which rows exist; only a concurrent writer of the same message meets one),
/// and the savepoint costs two round trips: below this many rows, the guarded form is sent
/// at once. Each append is one statement under one savepoint, so a transaction opens only a
/// few subtransactions whatever its size (PostgreSQL caches 64 per backend; past that, every
/// snapshot taken meanwhile, on the primary and on standbys, looks them up on disk).
pub const PLAIN_APPEND_MIN_ROWS: usize = 64;

/// A stored reference (the `refs` row aliased `r`) as text in the "C" collation: a hash as
/// lower-case hex. References sort by this text, never by the stored value.
macro_rules! ref_text {
    () => {
        "(COALESCE(encode(r.hash, 'hex'), r.name) COLLATE \"C\")"
    };
}

lotledger_store::sql_selects!(ref_text, "h.price::text", "h.expense_size_mib::text");

/// The `(id, address)` rows of the interned addresses among `$1`.
macro_rules! read_addresses {
    () => {
        "SELECT id, address FROM addresses WHERE address = ANY($1)"
    };
}

/// The `(id, address)` rows of the addresses `$1` (distinct), interning those not stored yet
/// in order of first appearance. The CTE's insert is invisible to the `SELECT` beside it (one
/// snapshot): each address comes once, new or old. One interned meanwhile by a concurrent
/// transaction is in neither.
macro_rules! intern_addresses {
    () => {
        concat!(
            "WITH made AS (INSERT INTO addresses (address) \
             SELECT u.address FROM UNNEST($1::text[]) WITH ORDINALITY AS u(address, n) \
             WHERE NOT EXISTS (SELECT 1 FROM addresses a WHERE a.address = u.address) \
             ORDER BY u.n ON CONFLICT DO NOTHING RETURNING id, address) \
             SELECT id, address FROM made UNION ALL ",
            read_addresses!()
        )
    };
}

/// The lots of the addresses `$1` a debit at `$2` may drain (granted at or before it, not
/// expired at it), locked `FOR UPDATE` in primary-key order (address ids ascending, then each
/// address's lots in key order: one order for every writer), handed back in emission order.
/// Each address's lots are an index range read through `LATERAL`, and each lot's reference
/// an index probe (`ref_by_id!`), whatever the statistics the generic plan was made with: as a join, PostgreSQL planned it on a young
/// ledger as a scan of every lot granted before `$2`, whoever holds it (1–3 ms a lone
/// message's drain in W6, and growing with the table).
macro_rules! drainable_lots {
    () => {
        concat!(
            "SELECT a.address, l.message_timestamp, ",
            ref_text!(),
            " AS credit_ref, l.credit_index, l.amount_remaining, l.expiration_date \
             FROM (SELECT id, address FROM addresses WHERE address = ANY($1::text[]) \
                   ORDER BY id) a \
             CROSS JOIN LATERAL (SELECT * FROM credit_lots l WHERE l.address_id = a.id \
                   AND l.message_timestamp <= $2 \
                   AND (l.expiration_date IS NULL OR l.expiration_date > $2) \
                   ORDER BY l.message_timestamp, l.ref_id, l.credit_index FOR UPDATE) l ",
            ref_by_id!("l.ref_id"),
            " ORDER BY 1, 2, 3, 4"
        )
    };
}

/// Whether the address `$1` has history rows after the position `($2, $3)` in replay order,
/// and whether one of them is a debit. The rows are an index range from `$2` (the plain
/// `>=` lets the range bound the scan: an `OR` alone did not, and the whole address's history
/// was read), each row's reference an index probe (`ref_by_id!`), whatever the statistics the
/// generic plan was made with.
macro_rules! rows_after {
    () => {
        concat!(
            "SELECT COUNT(*) > 0, COALESCE(bool_or(h.amount < 0), false) FROM credit_history h ",
            ref_by_id!("h.ref_id"),
            " WHERE h.address_id = (SELECT id FROM addresses WHERE address = $1) \
             AND h.message_timestamp >= $2 \
             AND (h.message_timestamp > $2 OR ",
            ref_text!(),
            " > $3)"
        )
    };
}

/// The lots of the addresses `$1` (a batch's load).
macro_rules! lots_of_addresses {
    () => {
        concat!(
            lot_select!(),
            " WHERE l.address_id IN (SELECT id FROM addresses WHERE address = ANY($1::text[]))"
        )
    };
}

/// The records and history row keys of the references `$1` / `$2` (hashes, names): each
/// reference probed once, then a row per record (`credit_index` NULL) and per history row.
macro_rules! statuses_and_row_keys {
    () => {
        concat!(
            "WITH r AS MATERIALIZED (",
            read_refs!(),
            ") SELECT ",
            ref_text!(),
            " AS item_hash, m.status, m.ignored, m.error, m.recorded_at, \
             NULL::int AS credit_index FROM r JOIN credit_messages m ON m.ref_id = r.id \
             UNION ALL SELECT ",
            ref_text!(),
            ", NULL, NULL, NULL, NULL, h.credit_index FROM r \
             CROSS JOIN LATERAL (SELECT credit_index FROM credit_history \
             WHERE ref_id = r.id OFFSET 0) h"
        )
    };
}

/// The `refs` row whose id is `$id`, as `r`: one index probe per row. The `OFFSET 0` keeps
/// the subquery from being flattened into a join, which a generic plan could make a hash join
/// over the whole `refs` index.
macro_rules! ref_by_id {
    ($id:literal) => {
        concat!(
            "CROSS JOIN LATERAL (SELECT hash, name FROM refs WHERE id = ",
            $id,
            " OFFSET 0) r"
        )
    };
}

/// The `refs` row of the reference `u` (`u.hash`, `u.name`), as `r`: one index probe per
/// reference. The `OFFSET 0` keeps the subquery from being flattened into a join, which
/// PostgreSQL would plan, for a few thousand references, as a scan of the whole table
/// (×2–3 the time on W1's 200 000 references, and growing with the table).
macro_rules! probe_ref {
    () => {
        "CROSS JOIN LATERAL (SELECT id, hash, name FROM refs WHERE hash = u.hash UNION ALL \
         SELECT id, hash, name FROM refs WHERE name = u.name OFFSET 0) r"
    };
}

/// The `(id, hash, name)` rows of the interned references among the hashes `$1` and the
/// names `$2` (parallel arrays, as [`ref_arrays`] makes them), each once.
macro_rules! read_refs {
    () => {
        concat!(
            "SELECT r.id, r.hash, r.name FROM (SELECT DISTINCT hash, name \
             FROM UNNEST($1::bytea[], $2::text[]) AS u(hash, name)) u ",
            probe_ref!()
        )
    };
}

/// The start of the statement interning the references `$1` / `$2` (hashes, names; distinct)
/// not stored yet, in order of first appearance: up to the `made` CTE's conflict clause.
/// Known references are probed once and consume no id.
macro_rules! intern_refs {
    () => {
        concat!(
            "WITH u AS (SELECT hash, name, n FROM UNNEST($1::bytea[], $2::text[]) \
             WITH ORDINALITY AS u(hash, name, n)), \
             old AS (SELECT u.n, r.id, r.hash, r.name FROM u ",
            probe_ref!(),
            "), made AS (INSERT INTO refs (hash, name) SELECT u.hash, u.name FROM u \
             WHERE u.n NOT IN (SELECT n FROM old) ORDER BY u.n"
        )
    };
}

/// The end of [`intern_refs`]'s statement: the rows it made and those stored before.
macro_rules! made_and_read_refs {
    () => {
        "SELECT id, hash, name FROM made UNION ALL SELECT id, hash, name FROM old"
    };
}

/// The interned id of the address bound as `$1`.
macro_rules! address_id_1 {
    () => {
        "(SELECT id FROM addresses WHERE address = $1)"
    };
}

/// `INSERT INTO credit_history … SELECT` over the arrays `$1`–`$19` (`$6` the instant of
/// `last_update`), in the arrays' order; no `ON CONFLICT` clause (see [`PgTx::append`]).
macro_rules! insert_history {
    () => {
        "INSERT INTO credit_history (ref_id, credit_index, address_id, message_timestamp, \
         amount, expiration_date, last_update, price, bonus_amount, tx_hash, token, chain, \
         provider, origin, origin_ref, payment_method, expense_count, expense_size_mib, \
         policy) \
         SELECT u.ref_id, u.credit_index, u.address_id, u.message_timestamp, u.amount, \
         u.expiration_date, $6, u.price::numeric, u.bonus_amount, u.tx_hash, u.token, \
         u.chain, u.provider, u.origin, u.origin_ref, u.payment_method, u.expense_count, \
         u.expense_size_mib::numeric, u.policy \
         FROM UNNEST($1::bigint[], $2::int[], $3::bigint[], $4::timestamptz[], \
         $5::bigint[], $7::timestamptz[], $8::text[], $9::bigint[], $10::bytea[], \
         $11::text[], $12::text[], $13::text[], $14::bytea[], $15::bytea[], $16::text[], \
         $17::bigint[], $18::text[], $19::int[]) WITH ORDINALITY AS u(ref_id, credit_index, \
         address_id, message_timestamp, amount, expiration_date, price, bonus_amount, \
         tx_hash, token, chain, provider, origin, origin_ref, payment_method, \
         expense_count, expense_size_mib, policy, n) \
         ORDER BY u.n"
    };
}

/// `INSERT INTO credit_messages … SELECT` over the arrays `$1`–`$5` (ref ids, statuses,
/// `ignored`, errors, instants), in the arrays' order; no `ON CONFLICT` clause.
macro_rules! insert_records {
    () => {
        "INSERT INTO credit_messages (ref_id, status, ignored, error, recorded_at) \
         SELECT u.ref_id, u.status, u.ignored, u.error, u.recorded_at \
         FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::timestamptz[]) \
         WITH ORDINALITY AS u(ref_id, status, ignored, error, recorded_at, n) ORDER BY u.n"
    };
}

/// `INSERT INTO message_envelopes … SELECT` over the arrays `$1`–`$9` (record ids, times,
/// types, senders, chains, channels, item types, compact signatures, packed contents), in the
/// arrays' order; no `ON CONFLICT` clause.
macro_rules! insert_envelopes {
    () => {
        concat!(
            "INSERT INTO message_envelopes (",
            lotledger_store::sql_envelope_columns!(),
            ") SELECT u.ref_id, u.time, u.type, u.sender, u.chain, u.channel, u.item_type, \
             u.signature, u.item_content \
             FROM UNNEST($1::bigint[], $2::float8[], $3::text[], $4::text[], $5::text[], \
             $6::text[], $7::text[], $8::bytea[], $9::bytea[]) WITH ORDINALITY AS u(ref_id, \
             time, type, sender, chain, channel, item_type, signature, item_content, n) \
             ORDER BY u.n"
        )
    };
}

/// `INSERT INTO credit_lots … SELECT` over the arrays `$1` address ids, `$2` instants, `$3`
/// reference ids, `$4` indexes, `$5` remainders, `$6` expiries.
macro_rules! put_lots_select {
    () => {
        "INSERT INTO credit_lots (address_id, message_timestamp, ref_id, credit_index, \
         amount_remaining, expiration_date) \
         SELECT * FROM UNNEST($1::bigint[], $2::timestamptz[], $3::bigint[], $4::int[], \
         $5::bigint[], $6::timestamptz[])"
    };
}

/// A column of texts kept by [`compact`], as the `bytea[]` an `UNNEST` insert binds.
fn compact_column(
    rows: &[HistoryRow],
    text: impl Fn(&HistoryRow) -> Option<&str>,
) -> Vec<Option<Vec<u8>>> {
    rows.iter().map(|r| text(r).map(compact::encode)).collect()
}

/// `addresses` rows of the text array bound as `$1`.
const ADDRESS_IDS_1: &str = "(SELECT id FROM addresses WHERE address = ANY($1::text[]))";

/// The store's kept ids, locked; a lock poisoned by a panic elsewhere is recovered emptied.
fn kept_ids(kept: &std::sync::Mutex<KeptIds>) -> std::sync::MutexGuard<'_, KeptIds> {
    kept.lock().unwrap_or_else(|poisoned| {
        let mut guard = poisoned.into_inner();
        *guard = KeptIds::default();
        guard
    })
}

/// A lotledger store in a PostgreSQL database.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    /// The addresses the last batches left, for the next ones (each valid while its version in
    /// `addresses` is the one that batch committed).
    cache: std::sync::Arc<std::sync::Mutex<BatchCache>>,
    /// How the batches planned ahead on a snapshot ended.
    ahead: std::sync::Arc<lotledger_store::batch::AheadCounters>,
    /// Interned ids that committed transactions resolved, for the next ones.
    ids: std::sync::Arc<std::sync::Mutex<KeptIds>>,
    /// What opening the store did to its schema.
    migrated: lotledger_store::Migrated,
    /// Connections for balance reads, without sqlx's ping after each call (`reads`).
    reads: std::sync::Arc<reads::ReadConns>,
    /// Addresses' lots summed by expiry, for balance reads while their versions hold
    /// (`balances`).
    balances: std::sync::Arc<balances::BalanceCache>,
}

impl PgStore {
    /// How balance reads used the addresses' kept sums since the store opened.
    pub fn balance_cache_counts(&self) -> BalanceCacheCounts {
        self.balances.counts()
    }

    /// Drops the sums kept for balance reads, and the lots the last batches left of
    /// `written_elsewhere`: the next read of each address is then as the first after a write
    /// of it by this process, and that of `written_elsewhere` as after a write by another one
    /// (summed by the server). The bench times both reads this way.
    pub fn forget_kept_balances(&self, written_elsewhere: Option<&str>) {
        self.balances.forget();
        if let Some(address) = written_elsewhere {
            BatchCache::forget(&self.cache, address);
        }
    }

    /// Vacuums the history table, as autovacuum does in time: its pages are then marked all
    /// visible, and a replay's read of an address's rows is answered from the index that
    /// covers them without visiting the table (migration 0014). The bench times that read
    /// before and after.
    pub async fn vacuum_history(&self) -> Result<(), StoreError> {
        sqlx::query("VACUUM (ANALYZE) credit_history")
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Connects to `url` (`postgres://…`) and migrates the schema.
    pub async fn open(url: &str) -> Result<PgStore, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(e.to_string()))?
            .log_slow_statements(
                lotledger_store::SLOW_STATEMENT_LOG.0,
                lotledger_store::SLOW_STATEMENT_LOG.1,
            );
        let reads = std::sync::Arc::new(reads::ReadConns::new(options.clone()));
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(3))
            // sqlx pings every idle connection before handing it out: a round trip before each
            // read and each transaction. Ping only a connection idle long enough to have been
            // dropped by the server or a proxy, or any connection shortly after one was found
            // dead (the call that found it fails; the pool then closes it, and the pings weed
            // out its dead siblings). sqlx still pings each connection as it is released,
            // which is why balance reads take their connections from `reads` instead.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_AFTER_IDLE || lost_connection::within(PING_AFTER_IDLE)
                    {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        let store = PgStore {
            pool,
            cache: Default::default(),
            ahead: Default::default(),
            ids: Default::default(),
            migrated: Default::default(),
            reads,
            balances: Default::default(),
        };
        // A hot standby is read-only: its schema comes from the primary, which migrates it.
        let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
            .fetch_one(&store.pool)
            .await
            .map_err(db_err)?;
        let migrated = if standby {
            store.standby_schema().await?
        } else {
            store.migrate().await?
        };
        Ok(PgStore { migrated, ..store })
    }

    /// On a hot standby: the schema found, refused when it lacks a migration this binary
    /// needs (the primary must be migrated first; the standby then replays it).
    async fn standby_schema(&self) -> Result<lotledger_store::Migrated, StoreError> {
        let found = lotledger_store::pooled::Reads::of(&self.pool)
            .applied_versions()
            .await
            .map_err(db_err)?;
        if let Some(missing) = MIGRATOR.iter().find(|m| !found.contains(&m.version)) {
            return Err(StoreError::Config(format!(
                "this database is a read-only standby whose schema lacks migration {:04} ({}): \
                 upgrade the primary (lotledger migrate) and let the standby replay it",
                missing.version, missing.description
            )));
        }
        Ok(lotledger_store::pooled::migrated(&MIGRATOR, &found, &found))
    }

    /// How far this database, when it is a hot standby, is behind its primary: `None` on a
    /// primary. Seconds since the last transaction it replayed was committed on the primary
    /// (0 when it has replayed everything it received), and WAL bytes received but not yet
    /// replayed.
    pub async fn replica_lag(&self) -> Result<Option<ReplicaLag>, StoreError> {
        let row: (bool, Option<f64>, Option<f64>) = sqlx::query_as(
            "SELECT pg_is_in_recovery(), \
             CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 \
                  ELSE EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp()) \
             END::float8, \
             pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::float8",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(match row {
            (false, _, _) => None,
            (true, seconds, bytes) => Some(ReplicaLag {
                seconds: seconds.unwrap_or(0.0).max(0.0),
                bytes: bytes.unwrap_or(0.0).max(0.0),
            }),
        })
    }
}

/// How far a hot standby is behind its primary ([`PgStore::replica_lag`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplicaLag {
    pub seconds: f64,
    pub bytes: f64,
}

impl Transactional for PgStore {
    type Tx = PgTx;
    type Snapshot = PgTx;

    fn batch_cache(&self) -> Option<&std::sync::Mutex<BatchCache>> {
        Some(&self.cache)
    }

    async fn write(&self) -> Result<PgTx, StoreError> {
        PgTx::begin(
            &self.pool,
            Some(&self.ids),
            concat!("BEGIN; ", keyed_plans!()),
        )
        .await
    }

    /// A read-only transaction whose reads all see one snapshot (`REPEATABLE READ`), taken at
    /// its first read.
    async fn snapshot(&self) -> Result<Option<PgTx>, StoreError> {
        PgTx::begin(
            &self.pool,
            None,
            concat!(begin_snapshot!(), "; ", keyed_plans!()),
        )
        .await
        .map(Some)
    }

    fn ahead_counters(&self) -> Option<&lotledger_store::batch::AheadCounters> {
        Some(&self.ahead)
    }

    /// The addresses whose cache differs from the replay (one read-only snapshot, by ids), each
    /// re-derived under its locks as [`lotledger_store::transactional::rebuild`] does; the
    /// others already hold the lots it would write.
    async fn rebuild_addresses(&self, batch: &[AddressRows]) -> Result<(), StoreError> {
        let drifted: Vec<String> = self
            .verify(batch)
            .await?
            .into_iter()
            .map(|d| d.address)
            .collect();
        for chunk in drifted.chunks(lotledger_store::maintenance::BATCH_ADDRESSES) {
            lotledger_store::transactional::rebuild(self, chunk).await?;
        }
        Ok(())
    }
}

/// The advisory locks a transaction holds (see [`PgTx::lock_many`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Locking {
    Nothing,
    /// The writers' lock, shared, and a lock per address and message it named.
    Keys,
    /// The writers' lock, exclusive: no other writer holds any lock.
    Everything,
}

/// A transaction whose first locks would be more keys than this takes the writers' lock
/// exclusively instead: PostgreSQL's lock table holds `max_locks_per_transaction` (64 by
/// default) times `max_connections` (100) entries for all sessions, and a batch of 5 000
/// messages over as many addresses would overflow it ("out of shared memory").
pub const LOCK_KEYS_MAX: usize = 1_000;

/// One open transaction, with the addresses whose history or lots it wrote.
pub struct PgTx {
    tx: Transaction<'static, Postgres>,
    locking: Locking,
    written: HashSet<String>,
    /// Interned ids this transaction has read or made (committed rows' ids never change, and
    /// its own die with it).
    address_ids: HashMap<String, i64>,
    ref_ids: HashMap<String, i64>,
    /// The store's ids of committed rows: read before looking ids up, and given this
    /// transaction's once it commits.
    kept: Option<std::sync::Arc<std::sync::Mutex<KeptIds>>>,
}

impl Commit for PgTx {
    /// Advances the version of every address written, then commits.
    async fn commit_stamped(mut self) -> Result<Stamps, StoreError> {
        let versions: Vec<(String, i64)> = if self.written.is_empty() {
            Vec::new()
        } else {
            // By id: every address written was interned by the write (or, deleted by text, is
            // resolved here; one never interned has no rows).
            let written = std::mem::take(&mut self.written);
            self.intern(
                written.iter().map(String::as_str),
                std::iter::empty(),
                false,
            )
            .await?;
            let ids: Vec<i64> = written
                .iter()
                .filter_map(|a| self.address_ids.get(a).copied())
                .collect();
            sqlx::query_as(
                "UPDATE addresses SET version = version + 1 WHERE id = ANY($1::bigint[]) \
                 RETURNING address, version",
            )
            .bind(ids)
            .fetch_all(&mut *self.tx)
            .await
            .map_err(db_err)?
        };
        self.tx.commit().await.map_err(db_err)?;
        if let Some(kept) = &self.kept {
            let (addresses, refs) = (
                std::mem::take(&mut self.address_ids),
                std::mem::take(&mut self.ref_ids),
            );
            kept_ids(kept).keep(addresses, refs);
        }
        Ok(Stamps::Addresses(versions.into_iter().collect()))
    }

    async fn stamps(&mut self, addresses: &[&str]) -> Result<Stamps, StoreError> {
        let addresses: Vec<String> = addresses.iter().map(|a| (*a).to_string()).collect();
        let versions: Vec<(String, i64)> = sqlx::query_as(
            "SELECT address, version FROM addresses WHERE address = ANY($1::text[])",
        )
        .bind(addresses)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(db_err)?;
        Ok(Stamps::Addresses(versions.into_iter().collect()))
    }
}

impl Store for PgStore {
    lotledger_store::transactional_writes!();
    lotledger_store::pooled_reads!(MIGRATOR);

    fn concurrent_writers(&self) -> usize {
        CONCURRENT_WRITERS
    }

    async fn balance(&self, address: &str, at: Timestamp) -> Result<Credits, StoreError> {
        let mut read = self.reads.acquire().await?;
        let sum = match self
            .balances
            .balance(&mut read.conn, address, at, &self.cache)
            .await?
        {
            Some(sum) => sum,
            None => balance(&mut read.conn, address, at).await?,
        };
        read.keep();
        Ok(sum)
    }

    async fn balance_details(
        &self,
        address: &str,
        at: Timestamp,
    ) -> Result<(Credits, Vec<BalanceDetail>), StoreError> {
        let mut read = self.reads.acquire().await?;
        let details = match self
            .balances
            .balance_details(&mut read.conn, address, at, &self.cache)
            .await?
        {
            Some(details) => details,
            None => {
                lotledger_store::pooled::balance_details_on(&mut read.conn, address, at).await?
            }
        };
        read.keep();
        Ok(details)
    }

    async fn history(&self, selector: &HistorySelector) -> Result<Vec<HistoryRow>, StoreError> {
        let query = match selector {
            HistorySelector::Address(a) => sqlx::query(concat!(
                history_select!(),
                " WHERE h.address_id = ",
                address_id_1!(),
                " \
                 ORDER BY credit_ref, h.credit_index"
            ))
            .bind(a.clone()),
            HistorySelector::CreditRef(r) => {
                let (hash, name) = ref_parts(r);
                sqlx::query(concat!(
                    history_select!(),
                    " WHERE h.ref_id = (SELECT id FROM refs WHERE hash = $1 OR name = $2) \
                     ORDER BY h.credit_index"
                ))
                .bind(hash)
                .bind(name)
            }
        };
        let rows = query.fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter().map(history_row).collect()
    }

    async fn lots(&self, address: &str) -> Result<Vec<Lot>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        address_lots(&mut conn, address).await
    }

    fn maintenance_batch(&self) -> lotledger_store::maintenance::BatchLimit {
        lotledger_store::scan::BATCH
    }

    async fn verify(&self, batch: &[AddressRows]) -> Result<Vec<Drift>, StoreError> {
        let addresses = lotledger_store::addresses_of(batch);
        // One snapshot for the whole batch, so that history and lots are compared consistently.
        let mut tx = PgTx::begin(&self.pool, None, begin_snapshot!()).await?;
        let pass = scan::load(&mut tx.tx, &addresses).await?;
        tx.tx.rollback().await.map_err(db_err)?;
        pass.drifts()
    }

    async fn message(&self, item_hash: &str) -> Result<Option<MessageRecord>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        message(&mut conn, item_hash).await
    }

    /// The rows packed by the server ([`packed`]) with their references' ids, then each
    /// distinct reference's text read once (one query).
    async fn replay_history(&self, address: &str) -> Result<Vec<HistoryRow>, StoreError> {
        let (value,): (Option<Vec<u8>>,) = sqlx::query_as(packed::SQL)
            .bind(address)
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
        let value = value.unwrap_or_default();
        // Sized once: 10 000 rows grown by doubling were copied ~twice over.
        let mut records = Vec::with_capacity(value.len() / packed::RECORD);
        for record in packed::records(&value) {
            records.push(record?);
        }
        let mut ids: Vec<i64> = records.iter().map(|r| r.ref_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let found: Vec<(i64, Option<Vec<u8>>, Option<String>)> =
            sqlx::query_as("SELECT id, hash, name FROM refs WHERE id = ANY($1::bigint[])")
                .bind(ids)
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?;
        let texts: HashMap<i64, String> = found
            .into_iter()
            .filter_map(|(id, hash, name)| Some((id, wrappers::ref_text(hash, name)?)))
            .collect();
        let mut rows = Vec::with_capacity(records.len());
        for record in &records {
            let name = texts
                .get(&record.ref_id)
                .ok_or_else(|| StoreError::Corrupt(format!("reference id {}", record.ref_id)))?;
            rows.push(packed::row(address, record, name)?);
        }
        Ok(rows)
    }

    async fn expiring_lots(
        &self,
        now: Timestamp,
        before: Timestamp,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<Lot>, StoreError> {
        let (offset, limit) = lotledger_store::page_bounds(offset, limit);
        let rows = sqlx::query(expiring_lots!("$1", "$2", "$3", "$4"))
            .bind(odt(now))
            .bind(odt(before))
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(lot).collect()
    }

    async fn expiring_total(
        &self,
        now: Timestamp,
        before: Timestamp,
    ) -> Result<(Credits, u64), StoreError> {
        let (sum, count): (i64, i64) =
            sqlx::query_as(lotledger_store::sql_expiring_total!("$1", "$2"))
                .bind(odt(now))
                .bind(odt(before))
                .fetch_one(&self.pool)
                .await
                .map_err(db_err)?;
        lotledger_store::expiring_totals(sum, count)
    }

    async fn kept_messages(
        &self,
        scan: &EnvelopeScan,
    ) -> Result<Vec<Arc<StoredEnvelope>>, StoreError> {
        let sql = if scan.ascending {
            kept_scan!("ASC", "$1", "$2", "$3", "$4", "$5")
        } else {
            kept_scan!("DESC", "$1", "$2", "$3", "$4", "$5")
        };
        let (lo, hi, t, h) = scan.bounds();
        let rows = sqlx::query(sql)
            .bind(lo)
            .bind(hi)
            .bind(t)
            .bind(h)
            .bind(i64::from(scan.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        kept_envelopes(&rows, stored_message)
    }

    /// `pg_total_relation_size` (heap, indexes, TOAST; dead tuples included).
    async fn footprint(&self) -> Result<Footprint, StoreError> {
        let (h, hi, l, m, e, i, d): (i64, i64, i64, i64, i64, i64, i64) = sqlx::query_as(
            "SELECT pg_total_relation_size('credit_history'), pg_indexes_size('credit_history'), \
             pg_total_relation_size('credit_lots'), pg_total_relation_size('credit_messages'), \
             pg_total_relation_size('message_envelopes'), \
             pg_total_relation_size('addresses') + pg_total_relation_size('refs'), \
             pg_database_size(current_database())",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(Footprint {
            history_bytes: non_negative(h),
            history_index_bytes: non_negative(hi),
            lots_bytes: non_negative(l),
            messages_bytes: non_negative(m),
            envelopes_bytes: non_negative(e),
            interned_bytes: non_negative(i),
            database_bytes: non_negative(d),
            method: "pg_total_relation_size (dead tuples included)".into(),
        })
    }

    async fn engine_settings(&self) -> Result<Vec<(String, String)>, StoreError> {
        const NAMES: [&str; 6] = [
            "server_version",
            "fsync",
            "synchronous_commit",
            "full_page_writes",
            "shared_buffers",
            "wal_level",
        ];
        let values: Vec<(String, String)> = sqlx::query_as(
            "SELECT n, current_setting(n) FROM unnest($1::text[]) WITH ORDINALITY AS s(n, i) \
             ORDER BY i",
        )
        .bind(&NAMES[..])
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(values
            .into_iter()
            .map(|(name, value)| match name.as_str() {
                "server_version" => ("version".to_string(), value),
                _ => (name, value),
            })
            .collect())
    }
}

/// The record of the message `item_hash`, with the envelope it came in.
async fn message(
    conn: &mut PgConnection,
    item_hash: &str,
) -> Result<Option<MessageRecord>, StoreError> {
    message_by(
        conn,
        item_hash,
        concat!(
            stored_message_select!(),
            " WHERE r.hash = $1 OR r.name = $2"
        ),
        stored_message,
    )
    .await
}

/// The record of the message `item_hash` as `sql` (whose `$1` / `$2` are the reference's
/// hash and name) reads it, mapped by `map`.
async fn message_by(
    conn: &mut PgConnection,
    item_hash: &str,
    sql: &'static str,
    map: fn(&PgRow) -> Result<MessageRecord, StoreError>,
) -> Result<Option<MessageRecord>, StoreError> {
    let (hash, name) = ref_parts(item_hash);
    let row = sqlx::query(sql)
        .bind(hash)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
    row.as_ref().map(map).transpose()
}

async fn balance(
    conn: &mut PgConnection,
    address: &str,
    at: Timestamp,
) -> Result<Credits, StoreError> {
    let sum: Option<i64> = sqlx::query_scalar(
        "SELECT SUM(amount_remaining)::bigint FROM credit_lots \
         WHERE address_id = (SELECT id FROM addresses WHERE address = $1) \
         AND (expiration_date IS NULL OR expiration_date > $2)",
    )
    .bind(address)
    .bind(odt(at))
    .fetch_one(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(lotledger_store::balance_from_sum(sum))
}

async fn address_lots(conn: &mut PgConnection, address: &str) -> Result<Vec<Lot>, StoreError> {
    let sql = concat!(
        lot_select!(),
        " WHERE l.address_id = ",
        address_id_1!(),
        lot_order!()
    );
    rows_of_address(conn, sql, address, lot).await
}

async fn address_history(
    conn: &mut PgConnection,
    address: &str,
) -> Result<Vec<HistoryRow>, StoreError> {
    let sql = concat!(
        history_select!(),
        " WHERE h.address_id = ",
        address_id_1!(),
        history_order!()
    );
    rows_of_address(conn, sql, address, history_row).await
}

/// The rows `sql` selects for the address bound as `$1`, each mapped by `map`.
async fn rows_of_address<T>(
    conn: &mut PgConnection,
    sql: &'static str,
    address: &str,
    map: fn(&PgRow) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let rows = sqlx::query(sql)
        .bind(address)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
    rows.iter().map(map).collect()
}

impl LedgerTx for PgTx {
    async fn message_status(
        &mut self,
        item_hash: &str,
    ) -> Result<Option<MessageStatus>, StoreError> {
        let record = message_by(
            &mut self.tx,
            item_hash,
            concat!(message_select!(), " WHERE r.hash = $1 OR r.name = $2"),
            message_record,
        )
        .await?;
        Ok(record.map(|r| r.status))
    }

    async fn record_message(&mut self, record: &MessageRecord) -> Result<(), StoreError> {
        self.record_messages(std::slice::from_ref(record)).await
    }

    async fn lock(&mut self, item_hash: &str, addresses: &[&str]) -> Result<(), StoreError> {
        let hashes: &[&str] = if item_hash.is_empty() {
            &[]
        } else {
            &[item_hash]
        };
        self.lock_many(hashes, addresses).await
    }

    async fn balance(&mut self, address: &str, at: Timestamp) -> Result<Credits, StoreError> {
        balance(&mut self.tx, address, at).await
    }

    async fn drainable_lots(
        &mut self,
        demand: &[(&str, i128)],
        _policy: lotledger_core::Policy,
        ts: Timestamp,
    ) -> Result<Vec<Lot>, StoreError> {
        let addresses: Vec<String> = demand.iter().map(|(a, _)| (*a).to_string()).collect();
        let rows = sqlx::query(drainable_lots!())
            .bind(&addresses)
            .bind(odt(ts))
            .fetch_all(&mut *self.tx)
            .await
            .map_err(db_err)?;
        rows.iter().map(lot).collect()
    }

    async fn insert_rows(
        &mut self,
        rows: &[HistoryRow],
        last_update: Timestamp,
    ) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        self.written.extend(rows.iter().map(|r| r.address.clone()));
        self.intern(
            rows.iter().map(|r| r.address.as_str()),
            rows.iter().map(|r| r.credit_ref.as_str()),
            true,
        )
        .await?;
        let ref_ids = rows
            .iter()
            .map(|r| self.ref_id(&r.credit_ref))
            .collect::<Result<Vec<_>, _>>()?;
        let address_ids = rows
            .iter()
            .map(|r| self.address_id(&r.address))
            .collect::<Result<Vec<_>, _>>()?;
        let statement = |guarded: bool| {
            let sql = if guarded {
                concat!(
                    insert_history!(),
                    " ON CONFLICT (ref_id, credit_index) DO NOTHING"
                )
            } else {
                insert_history!()
            };
            sqlx::query(sql)
                .bind(ref_ids.clone())
                .bind(rows.iter().map(|r| r.credit_index).collect::<Vec<_>>())
                .bind(address_ids.clone())
                .bind(
                    rows.iter()
                        .map(|r| odt(r.message_timestamp))
                        .collect::<Vec<_>>(),
                )
                .bind(rows.iter().map(|r| r.amount.0).collect::<Vec<_>>())
                .bind(odt(last_update))
                .bind(
                    rows.iter()
                        .map(|r| opt_odt(r.expiration_date))
                        .collect::<Vec<_>>(),
                )
                .bind(rows.iter().map(|r| r.price.clone()).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.bonus_amount).collect::<Vec<_>>())
                .bind(compact_column(rows, |r| r.tx_hash.as_deref()))
                .bind(rows.iter().map(|r| r.token.clone()).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.chain.clone()).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.provider.clone()).collect::<Vec<_>>())
                .bind(compact_column(rows, |r| r.origin.as_deref()))
                .bind(compact_column(rows, |r| r.origin_ref.as_deref()))
                .bind(
                    rows.iter()
                        .map(|r| r.payment_method.clone())
                        .collect::<Vec<_>>(),
                )
                .bind(rows.iter().map(|r| r.expense_count).collect::<Vec<_>>())
                .bind(
                    rows.iter()
                        .map(|r| r.expense_size_mib.clone())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    rows.iter()
                        .map(|r| i32::from(r.policy.code()))
                        .collect::<Vec<_>>(),
                )
        };
        Ok(self.append(rows.len(), statement).await?.rows_affected())
    }

    async fn insert_lots(&mut self, lots: &[Lot]) -> Result<(), StoreError> {
        self.put_lots(lots, OnConflict::Skip).await
    }

    async fn update_lots(&mut self, lots: &[Lot]) -> Result<(), StoreError> {
        let (gone, left): (Vec<Lot>, Vec<Lot>) = lots
            .iter()
            .cloned()
            .partition(|l| !l.amount_remaining.is_positive());
        self.write_lots(&[], &left, &gone).await
    }

    async fn rows_after(
        &mut self,
        address: &str,
        ts: Timestamp,
        credit_ref: &str,
    ) -> Result<(bool, bool), StoreError> {
        let row: (bool, bool) = sqlx::query_as(rows_after!())
            .bind(address)
            .bind(odt(ts))
            .bind(credit_ref)
            .fetch_one(&mut *self.tx)
            .await
            .map_err(db_err)?;
        Ok(row)
    }

    async fn address_history(&mut self, address: &str) -> Result<Vec<HistoryRow>, StoreError> {
        address_history(&mut self.tx, address).await
    }

    async fn replace_lots(&mut self, address: &str, lots: &[Lot]) -> Result<(), StoreError> {
        self.delete_lots_of(&[address]).await?;
        self.insert_lots(lots).await
    }

    async fn lock_many(
        &mut self,
        item_hashes: &[&str],
        addresses: &[&str],
    ) -> Result<(), StoreError> {
        if self.locking == Locking::Everything {
            return Ok(());
        }
        // Transaction-scoped advisory locks, always taken in ascending key order (one global
        // order, so writers never deadlock), in one round trip: first the writers' lock,
        // shared, then a lock per key.
        let mut keys: Vec<i64> = addresses.iter().map(|a| lock_key("address", a)).collect();
        keys.extend(item_hashes.iter().map(|h| lock_key("message", h)));
        keys.sort_unstable();
        keys.dedup();
        if keys.is_empty() {
            return Ok(());
        }
        if self.locking == Locking::Nothing && keys.len() > LOCK_KEYS_MAX {
            // More keys than PostgreSQL's lock table is sized for (64 a connection by
            // default): the writers' lock alone, exclusive, holds them all.
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(WRITERS_LOCK_KEY)
                .execute(&mut *self.tx)
                .await
                .map_err(db_err)?;
            self.locking = Locking::Everything;
            return Ok(());
        }
        keys.insert(0, WRITERS_LOCK_KEY);
        sqlx::query(
            "SELECT COUNT(CASE WHEN k = $2 THEN pg_advisory_xact_lock_shared(k) \
             ELSE pg_advisory_xact_lock(k) END) FROM \
             (SELECT k FROM UNNEST($1::bigint[]) AS u(k) ORDER BY k) AS sorted",
        )
        .bind(keys)
        .bind(WRITERS_LOCK_KEY)
        .execute(&mut *self.tx)
        .await
        .map_err(db_err)?;
        self.locking = Locking::Keys;
        Ok(())
    }

    async fn load_lots(&mut self, addresses: &[&str]) -> Result<Vec<Lot>, StoreError> {
        let addresses: Vec<String> = addresses.iter().map(|a| (*a).to_string()).collect();
        let rows = sqlx::query(lots_of_addresses!())
            .bind(addresses)
            .fetch_all(&mut *self.tx)
            .await
            .map_err(db_err)?;
        rows.iter().map(lot).collect()
    }

    async fn last_rows(
        &mut self,
        addresses: &[&str],
    ) -> Result<Vec<(String, LastRows)>, StoreError> {
        // Index seeks on (address_id, message_timestamp) read backwards: the last row of each
        // address, and its last debit (ties on the instant broken by the reference's text).
        let addresses: Vec<String> = addresses.iter().map(|a| (*a).to_string()).collect();
        type Row = (
            String,
            Option<time::OffsetDateTime>,
            Option<String>,
            Option<time::OffsetDateTime>,
            Option<String>,
        );
        let rows: Vec<Row> = sqlx::query_as(concat!(
            "SELECT a.address, l.message_timestamp, l.credit_ref, d.message_timestamp, d.credit_ref \
             FROM addresses a \
             LEFT JOIN LATERAL (SELECT h.message_timestamp, ",
            ref_text!(),
            " AS credit_ref FROM credit_history h JOIN refs r ON r.id = h.ref_id \
               WHERE h.address_id = a.id ORDER BY h.message_timestamp DESC, 2 DESC LIMIT 1) l ON TRUE \
             LEFT JOIN LATERAL (SELECT h.message_timestamp, ",
            ref_text!(),
            " AS credit_ref FROM credit_history h JOIN refs r ON r.id = h.ref_id \
               WHERE h.address_id = a.id AND h.amount < 0 \
               ORDER BY h.message_timestamp DESC, 2 DESC LIMIT 1) d ON TRUE \
             WHERE a.address = ANY($1::text[])"
        ))
        .bind(addresses)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(db_err)?;
        let mut out = Vec::new();
        for (address, any_at, any_ref, debit_at, debit_ref) in rows {
            let position = |at: Option<time::OffsetDateTime>, r: Option<String>| match (at, r) {
                (Some(at), Some(r)) => wrappers::ts(at).map(|t| Some((t, r))),
                _ => Ok(None),
            };
            let rows = LastRows {
                any: position(any_at, any_ref)?,
                debit: position(debit_at, debit_ref)?,
            };
            if rows.any.is_some() {
                out.push((address, rows));
            }
        }
        Ok(out)
    }

    /// One statement: each reference probed once, then its record and its history rows'
    /// keys (a row with a `credit_index` is a history row's key, else the record).
    async fn statuses_and_row_keys(
        &mut self,
        item_hashes: &[&str],
    ) -> Result<lotledger_store::StatusesAndRowKeys, StoreError> {
        let (hashes, names) = ref_arrays(item_hashes.iter().copied());
        let rows = sqlx::query(statuses_and_row_keys!())
            .bind(hashes)
            .bind(names)
            .fetch_all(&mut *self.tx)
            .await
            .map_err(db_err)?;
        let (mut statuses, mut row_keys) = (Vec::new(), Vec::new());
        for row in &rows {
            match sqlx::Row::try_get::<Option<i32>, _>(row, "credit_index").map_err(db_err)? {
                Some(index) => row_keys.push((
                    sqlx::Row::try_get::<String, _>(row, "item_hash").map_err(db_err)?,
                    index,
                )),
                None => {
                    let record = message_record(row)?;
                    statuses.push((record.item_hash, record.status));
                }
            }
        }
        Ok((statuses, row_keys))
    }

    async fn write_lots(
        &mut self,
        created: &[Lot],
        changed: &[Lot],
        deletes: &[Lot],
    ) -> Result<(), StoreError> {
        if !deletes.is_empty() {
            self.written
                .extend(deletes.iter().map(|l| l.address.clone()));
            self.intern(
                deletes.iter().map(|l| l.address.as_str()),
                deletes.iter().map(|l| l.credit_ref.as_str()),
                false,
            )
            .await?;
            // A lot whose address or reference was never interned does not exist.
            let known: Vec<&Lot> = deletes
                .iter()
                .filter(|l| {
                    self.address_ids.contains_key(&l.address)
                        && self.ref_ids.contains_key(&l.credit_ref)
                })
                .collect();
            let (address_ids, ref_ids) = self.lot_ids(known.iter().copied())?;
            sqlx::query(
                "DELETE FROM credit_lots WHERE (address_id, message_timestamp, ref_id, credit_index) IN \
                 (SELECT * FROM UNNEST($1::bigint[], $2::timestamptz[], $3::bigint[], $4::int[]))",
            )
            .bind(address_ids)
            .bind(known.iter().map(|l| odt(l.message_timestamp)).collect::<Vec<_>>())
            .bind(ref_ids)
            .bind(known.iter().map(|l| l.credit_index).collect::<Vec<_>>())
            .execute(&mut *self.tx)
            .await
            .map_err(db_err)?;
        }
        self.put_lots(created, OnConflict::Fail).await?;
        self.put_lots(changed, OnConflict::Update).await
    }

    async fn replay_histories(
        &mut self,
        addresses: &[&str],
    ) -> Result<Vec<HistoryRow>, StoreError> {
        // One row per address, the records built by the server.
        let addresses: Vec<String> = addresses.iter().map(|a| (*a).to_string()).collect();
        let rows: Vec<(String, String)> = sqlx::query_as(concat!(
            "SELECT a.address, string_agg(\
             ((extract(epoch FROM h.message_timestamp) * 1000000)::bigint)::text || ',' || h.amount || ',' || \
             COALESCE(((extract(epoch FROM h.expiration_date) * 1000000)::bigint)::text, '') || ',' || \
             h.credit_index || ',' || h.policy || ',' || octet_length(",
            ref_text!(),
            ") || ':' || ",
            ref_text!(),
            " || ';', ''",
            history_order!(),
            ") FROM credit_history h JOIN addresses a ON a.id = h.address_id \
             JOIN refs r ON r.id = h.ref_id WHERE a.address = ANY($1::text[]) \
             GROUP BY a.address ORDER BY a.address"
        ))
        .bind(addresses)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(db_err)?;
        let mut out = Vec::new();
        for (address, text) in rows {
            lotledger_store::decode_replay_rows(&address, &text, &mut out)?;
        }
        Ok(out)
    }

    async fn delete_lots_of(&mut self, addresses: &[&str]) -> Result<(), StoreError> {
        let addresses: Vec<String> = addresses.iter().map(|a| (*a).to_string()).collect();
        self.written.extend(addresses.iter().cloned());
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM credit_lots WHERE address_id IN {ADDRESS_IDS_1}"
        )))
        .bind(addresses)
        .execute(&mut *self.tx)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn set_ingest_progress(&mut self, progress: &IngestProgress) -> Result<(), StoreError> {
        let (lines, bytes) = progress.stored_counts()?;
        sqlx::query(
            "INSERT INTO ingest_progress (source, lines, bytes, prefix_sha256, resume_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (source) DO UPDATE SET \
             lines = EXCLUDED.lines, bytes = EXCLUDED.bytes, \
             prefix_sha256 = EXCLUDED.prefix_sha256, resume_at = EXCLUDED.resume_at",
        )
        .bind(&progress.source)
        .bind(lines)
        .bind(bytes)
        .bind(&progress.prefix_sha256)
        .bind(&progress.resume_at)
        .execute(&mut *self.tx)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn record_messages(&mut self, records: &[MessageRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        self.intern(
            std::iter::empty(),
            records.iter().map(|r| r.item_hash.as_str()),
            true,
        )
        .await?;
        let ref_ids = records
            .iter()
            .map(|r| self.ref_id(&r.item_hash))
            .collect::<Result<Vec<_>, _>>()?;
        let status = |r: &MessageRecord| match &r.status {
            MessageStatus::Processed => ("processed".to_string(), None),
            MessageStatus::Rejected { error } => ("rejected".to_string(), Some(error.clone())),
        };
        let statement = |guarded: bool| {
            let sql = if guarded {
                concat!(
                    insert_records!(),
                    " ON CONFLICT (ref_id) DO UPDATE SET status = EXCLUDED.status, \
                     ignored = EXCLUDED.ignored, error = EXCLUDED.error, \
                     recorded_at = EXCLUDED.recorded_at"
                )
            } else {
                insert_records!()
            };
            sqlx::query(sql)
                .bind(ref_ids.clone())
                .bind(records.iter().map(|r| status(r).0).collect::<Vec<_>>())
                .bind(
                    records
                        .iter()
                        .map(|r| r.ignored.clone())
                        .collect::<Vec<_>>(),
                )
                .bind(records.iter().map(|r| status(r).1).collect::<Vec<_>>())
                .bind(
                    records
                        .iter()
                        .map(|r| odt(r.recorded_at))
                        .collect::<Vec<_>>(),
                )
        };
        self.append(records.len(), statement).await?;
        let kept: Vec<(i64, &StoredEnvelope)> = ref_ids
            .iter()
            .zip(records)
            .filter_map(|(id, r)| Some((*id, r.envelope.as_deref()?)))
            .collect();
        if kept.is_empty() {
            return Ok(());
        }
        let column = |f: fn(&StoredEnvelope) -> Option<String>| -> Vec<Option<String>> {
            kept.iter().map(|(_, e)| f(e)).collect()
        };
        let statement = |guarded: bool| {
            let sql = if guarded {
                concat!(insert_envelopes!(), lotledger_store::sql_envelope_upsert!())
            } else {
                insert_envelopes!()
            };
            sqlx::query(sql)
                .bind(kept.iter().map(|(id, _)| *id).collect::<Vec<_>>())
                .bind(kept.iter().map(|(_, e)| e.time).collect::<Vec<_>>())
                .bind(column(|e| Some(e.message_type.clone())))
                .bind(column(|e| e.sender.clone()))
                .bind(column(|e| e.chain.clone()))
                .bind(column(|e| e.channel.clone()))
                .bind(column(|e| e.item_type.clone()))
                .bind(
                    kept.iter()
                        .map(|(_, e)| e.signature.as_deref().map(compact::encode))
                        .collect::<Vec<_>>(),
                )
                .bind(
                    kept.iter()
                        .map(|(_, e)| e.item_content.as_deref().map(lotledger_store::kept::pack))
                        .collect::<Vec<_>>(),
                )
        };
        self.append(kept.len(), statement).await?;
        Ok(())
    }
}

/// A `refs` row: `(id, hash, name)`.
type RefRow = (i64, Option<Vec<u8>>, Option<String>);

/// The `refs` rows `sql` gives for the references `$1` / `$2` (hashes, names).
async fn fetch_refs(
    conn: &mut PgConnection,
    sql: &'static str,
    hashes: &[Option<Vec<u8>>],
    names: &[Option<String>],
) -> Result<Vec<RefRow>, sqlx::Error> {
    sqlx::query_as(sql)
        .bind(hashes)
        .bind(names)
        .fetch_all(conn)
        .await
}

impl PgTx {
    /// A transaction that has written nothing yet, opened by the simple query `statement`
    /// (`BEGIN` and its settings, in one round trip); `kept`: the store's id cache, if it is
    /// to use and fill it.
    async fn begin(
        pool: &PgPool,
        kept: Option<&std::sync::Arc<std::sync::Mutex<KeptIds>>>,
        statement: &'static str,
    ) -> Result<PgTx, StoreError> {
        Ok(PgTx {
            tx: pool.begin_with(statement).await.map_err(db_err)?,
            locking: Locking::Nothing,
            written: HashSet::new(),
            address_ids: HashMap::new(),
            ref_ids: HashMap::new(),
            kept: kept.cloned(),
        })
    }

    /// Takes from the store's id cache the ids of these addresses and references this
    /// transaction has not resolved yet.
    fn recall<'a>(
        &mut self,
        addresses: impl Iterator<Item = &'a str>,
        references: impl Iterator<Item = &'a str>,
    ) {
        let Some(kept) = &self.kept else { return };
        let kept = kept_ids(kept);
        for a in addresses {
            if !self.address_ids.contains_key(a)
                && let Some(id) = kept.address(a)
            {
                self.address_ids.insert(a.to_string(), id);
            }
        }
        for r in references {
            if !self.ref_ids.contains_key(r)
                && let Some(id) = kept.reference(r)
            {
                self.ref_ids.insert(r.to_string(), id);
            }
        }
    }

    /// Resolves the ids of addresses and references this transaction has not resolved yet,
    /// interning those not seen before when `create` (ids in order of first appearance; known
    /// ones keep theirs and consume no id); without `create`, unknown ones stay unresolved.
    async fn intern<'a>(
        &mut self,
        addresses: impl Iterator<Item = &'a str>,
        references: impl Iterator<Item = &'a str>,
        create: bool,
    ) -> Result<(), StoreError> {
        let addresses = distinct(addresses);
        let references = distinct(references);
        self.recall(addresses.iter().copied(), references.iter().copied());
        let addresses: Vec<String> = addresses
            .into_iter()
            .filter(|a| !self.address_ids.contains_key(*a))
            .map(str::to_string)
            .collect();
        if !addresses.is_empty() {
            // One interned meanwhile by a concurrent transaction is read again below.
            let sql = if create {
                intern_addresses!()
            } else {
                read_addresses!()
            };
            self.note_addresses(sql, &addresses).await?;
            if create {
                let missing: Vec<String> = addresses
                    .into_iter()
                    .filter(|a| !self.address_ids.contains_key(a))
                    .collect();
                if !missing.is_empty() {
                    self.note_addresses(read_addresses!(), &missing).await?;
                }
            }
        }
        let references: Vec<&str> = references
            .into_iter()
            .filter(|r| !self.ref_ids.contains_key(*r))
            .collect();
        if !references.is_empty() {
            let (hashes, names) = ref_arrays(references.iter().copied());
            let plain = if create && references.len() >= PLAIN_APPEND_MIN_ROWS {
                self.savepoint().await?;
                let sql = concat!(
                    intern_refs!(),
                    " RETURNING id, hash, name) ",
                    made_and_read_refs!()
                );
                let outcome = fetch_refs(&mut self.tx, sql, &hashes, &names).await;
                self.settle(outcome).await?
            } else {
                None
            };
            let rows = match plain {
                Some(rows) => rows,
                None => {
                    let sql = if create {
                        concat!(
                            intern_refs!(),
                            " ON CONFLICT DO NOTHING RETURNING id, hash, name) ",
                            made_and_read_refs!()
                        )
                    } else {
                        read_refs!()
                    };
                    fetch_refs(&mut self.tx, sql, &hashes, &names)
                        .await
                        .map_err(db_err)?
                }
            };
            self.note_refs(rows)?;
            if create {
                let missing: Vec<&str> = references
                    .into_iter()
                    .filter(|r| !self.ref_ids.contains_key(*r))
                    .collect();
                if !missing.is_empty() {
                    let (hashes, names) = ref_arrays(missing);
                    let rows = fetch_refs(&mut self.tx, read_refs!(), &hashes, &names)
                        .await
                        .map_err(db_err)?;
                    self.note_refs(rows)?;
                }
            }
        }
        Ok(())
    }

    /// Runs an append of `rows` rows: `statement(false)` (without its `ON CONFLICT` clause)
    /// under a savepoint from [`PLAIN_APPEND_MIN_ROWS`] rows, else or after a unique
    /// violation `statement(true)` (with it).
    async fn append<'q>(
        &mut self,
        rows: usize,
        statement: impl Fn(bool) -> sqlx::query::Query<'q, Postgres, PgArguments>,
    ) -> Result<PgQueryResult, StoreError> {
        if rows >= PLAIN_APPEND_MIN_ROWS {
            self.savepoint().await?;
            let outcome = statement(false).execute(&mut *self.tx).await;
            if let Some(done) = self.settle(outcome).await? {
                return Ok(done);
            }
        }
        statement(true).execute(&mut *self.tx).await.map_err(db_err)
    }

    /// Opens the savepoint a plain append runs under; [`PgTx::settle`] closes it.
    async fn savepoint(&mut self) -> Result<(), StoreError> {
        sqlx::raw_sql("SAVEPOINT lotledger_plain_append")
            .execute(&mut *self.tx)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Closes the savepoint of a plain append, given its `outcome`: done (released), or `None`
    /// after a unique violation (rolled back to the savepoint: the transaction is as before
    /// the append, which the caller sends again with its `ON CONFLICT` clause); any other
    /// error fails the transaction.
    async fn settle<T>(
        &mut self,
        outcome: Result<T, sqlx::Error>,
    ) -> Result<Option<T>, StoreError> {
        let (done, sql) = match outcome {
            Ok(done) => (Some(done), "RELEASE SAVEPOINT lotledger_plain_append"),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => (
                None,
                "ROLLBACK TO SAVEPOINT lotledger_plain_append; \
                 RELEASE SAVEPOINT lotledger_plain_append",
            ),
            Err(e) => return Err(db_err(e)),
        };
        sqlx::raw_sql(sql)
            .execute(&mut *self.tx)
            .await
            .map_err(db_err)?;
        Ok(done)
    }

    /// Notes the `(id, address)` rows `sql` gives for the addresses `$1`.
    async fn note_addresses(
        &mut self,
        sql: &'static str,
        addresses: &[String],
    ) -> Result<(), StoreError> {
        let rows: Vec<(i64, String)> = sqlx::query_as(sql)
            .bind(addresses)
            .fetch_all(&mut *self.tx)
            .await
            .map_err(db_err)?;
        self.address_ids
            .extend(rows.into_iter().map(|(id, address)| (address, id)));
        Ok(())
    }

    /// Notes the ids of the `refs` rows `rows` (`(id, hash, name)`).
    fn note_refs(&mut self, rows: Vec<RefRow>) -> Result<(), StoreError> {
        for (id, hash, name) in rows {
            let text = ref_text(hash, name)
                .ok_or_else(|| StoreError::Corrupt(format!("refs row {id}")))?;
            self.ref_ids.insert(text, id);
        }
        Ok(())
    }

    /// The id of an address this transaction resolved.
    fn address_id(&self, address: &str) -> Result<i64, StoreError> {
        self.address_ids
            .get(address)
            .copied()
            .ok_or_else(|| StoreError::Corrupt(format!("address {address} not interned")))
    }

    /// The id of a reference this transaction resolved.
    fn ref_id(&self, reference: &str) -> Result<i64, StoreError> {
        self.ref_ids
            .get(reference)
            .copied()
            .ok_or_else(|| StoreError::Corrupt(format!("reference {reference} not interned")))
    }

    /// The address ids and reference ids of `lots`, resolved by this transaction.
    fn lot_ids<'a>(
        &self,
        lots: impl Iterator<Item = &'a Lot>,
    ) -> Result<(Vec<i64>, Vec<i64>), StoreError> {
        lots.map(|l| Ok((self.address_id(&l.address)?, self.ref_id(&l.credit_ref)?)))
            .collect::<Result<Vec<_>, StoreError>>()
            .map(|pairs| pairs.into_iter().unzip())
    }

    /// Inserts lots, doing with one already stored what `conflict` says.
    async fn put_lots(&mut self, lots: &[Lot], conflict: OnConflict) -> Result<(), StoreError> {
        if lots.is_empty() {
            return Ok(());
        }
        self.written.extend(lots.iter().map(|l| l.address.clone()));
        self.intern(
            lots.iter().map(|l| l.address.as_str()),
            lots.iter().map(|l| l.credit_ref.as_str()),
            true,
        )
        .await?;
        let (address_ids, ref_ids) = self.lot_ids(lots.iter())?;
        let query = sqlx::query(match conflict {
            OnConflict::Fail => put_lots_select!(),
            OnConflict::Skip => concat!(put_lots_select!(), " ON CONFLICT DO NOTHING"),
            OnConflict::Update => concat!(
                put_lots_select!(),
                " ON CONFLICT (address_id, message_timestamp, ref_id, credit_index) \
                 DO UPDATE SET amount_remaining = EXCLUDED.amount_remaining"
            ),
        });
        query
            .bind(address_ids)
            .bind(
                lots.iter()
                    .map(|l| odt(l.message_timestamp))
                    .collect::<Vec<_>>(),
            )
            .bind(ref_ids)
            .bind(lots.iter().map(|l| l.credit_index).collect::<Vec<_>>())
            .bind(
                lots.iter()
                    .map(|l| l.amount_remaining.0)
                    .collect::<Vec<_>>(),
            )
            .bind(
                lots.iter()
                    .map(|l| opt_odt(l.expiration_date))
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *self.tx)
            .await
            .map_err(db_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migrated store on a fresh database of the test server (`LOTLEDGER_TEST_PG_URL`, set by
    /// `scripts/with-postgres`), the server's admin URL and the database's name.
    async fn fresh() -> (PgStore, String, String) {
        let admin = std::env::var("LOTLEDGER_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
        let name = unique_database_name("lotledger_test");
        let url = create_database(&admin, &name).await.unwrap_or_else(|e| {
            panic!("creating {name} at {admin} ({e}); run the tests with scripts/test")
        });
        (PgStore::open(&url).await.unwrap(), admin, name)
    }

    async fn setting(conn: &mut PgConnection, name: &str) -> String {
        sqlx::query_scalar("SELECT current_setting($1)")
            .bind(name)
            .fetch_one(conn)
            .await
            .unwrap()
    }

    /// The plan the connection keeps for the writers' interning of addresses, run as the
    /// writers run it (prepared, bound, executed); EXPLAIN runs nothing.
    async fn kept_plan(conn: &mut PgConnection) -> String {
        sqlx::query(concat!("PREPARE intern(text[]) AS ", intern_addresses!()))
            .execute(&mut *conn)
            .await
            .unwrap();
        let lines: Vec<String> = sqlx::query_scalar("EXPLAIN EXECUTE intern('{a,b}')")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        sqlx::query("DEALLOCATE intern")
            .execute(&mut *conn)
            .await
            .unwrap();
        lines.join("\n")
    }

    /// On a young ledger (a few hundred addresses, never analyzed) the writers' and their
    /// snapshots' statements keep one generic plan that probes the indexes (PostgreSQL's own
    /// generic plan would scan the table), and the settings that make it so end with the
    /// transaction: the pool's other users get PostgreSQL's defaults back.
    #[tokio::test]
    async fn writers_keep_index_probe_plans_for_their_transaction_only() {
        let (store, admin, name) = fresh().await;
        sqlx::query(
            "INSERT INTO addresses (address) SELECT md5(g::text) FROM generate_series(1, 200) g",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        let mut write = store.write().await.unwrap();
        let mut snapshot = store.snapshot().await.unwrap().unwrap();
        for tx in [&mut write, &mut snapshot] {
            let plan = kept_plan(&mut tx.tx).await;
            assert!(plan.contains("Index"), "{plan}");
            assert!(!plan.contains("Seq Scan"), "{plan}");
            assert!(
                plan.contains("$1"),
                "a generic plan names its parameter: {plan}"
            );
            assert_eq!(
                setting(&mut tx.tx, "plan_cache_mode").await,
                "force_generic_plan"
            );
            assert_eq!(setting(&mut tx.tx, "enable_seqscan").await, "off");
        }
        drop(snapshot);
        write.commit_stamped().await.unwrap();
        // Outside the writers' transactions: the defaults, and a plan made for the call's
        // values.
        let mut others = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let mut conn = store.pool.acquire().await.unwrap();
            assert_eq!(setting(&mut conn, "plan_cache_mode").await, "auto");
            assert_eq!(setting(&mut conn, "enable_seqscan").await, "on");
            let plan = kept_plan(&mut conn).await;
            assert!(!plan.contains("$1"), "a custom plan: {plan}");
            others.push(conn);
        }
        drop(others);
        finish(store, &admin, &name).await;
    }

    /// A ledger of 200 holders (`holder-1` … `holder-200`), each with 10 recorded grants
    /// (`holder-N-0` … `holder-N-9`, in time order) and their whole lots.
    const HOLDERS: [&str; 5] = [
        "INSERT INTO addresses (address) SELECT 'holder-' || g FROM generate_series(1, 200) g",
        "INSERT INTO refs (name) SELECT a.address || '-' || k FROM addresses a \
         CROSS JOIN generate_series(0, 9) k ORDER BY a.id, k",
        "INSERT INTO credit_history (ref_id, credit_index, address_id, message_timestamp, \
         amount) SELECT r.id, 0, a.id, timestamptz '2026-01-01 00:00:00Z' + r.id * interval \
         '1 minute', 5 FROM addresses a JOIN refs r ON r.name LIKE a.address || '-_'",
        "INSERT INTO credit_lots (address_id, message_timestamp, ref_id, credit_index, \
         amount_remaining, expiration_date) SELECT address_id, message_timestamp, ref_id, \
         credit_index, amount, NULL FROM credit_history",
        "INSERT INTO credit_messages (ref_id, status, recorded_at) \
         SELECT id, 'processed', now() FROM refs",
    ];

    /// Closes the store of a test and drops its database.
    async fn finish(store: PgStore, admin: &str, name: &str) {
        store.pool.close().await;
        drop_database(admin, name).await.unwrap();
    }

    /// The most rows any node of the plan `node` (EXPLAIN ANALYZE's JSON) read: those it gave
    /// and those its filters removed, per loop.
    fn most_rows(node: &serde_json::Value) -> f64 {
        let own: f64 = [
            "Actual Rows",
            "Rows Removed by Filter",
            "Rows Removed by Index Recheck",
            "Rows Removed by Join Filter",
        ]
        .iter()
        .filter_map(|k| node[*k].as_f64())
        .sum();
        node["Plans"]
            .as_array()
            .map(|plans| plans.iter().map(most_rows).fold(own, f64::max))
            .unwrap_or(own)
    }

    /// The plan a writer keeps for `statement` (prepared as `kept` with `parameters`), made at
    /// its first call (`first`, on an empty ledger), run as `call` once `fill` has filled the
    /// ledger, all in the write transaction `write`: EXPLAIN ANALYZE's JSON.
    async fn kept_plan_once_filled(
        write: &mut PgTx,
        statement: &str,
        parameters: &str,
        first: &str,
        fill: &[&str],
        call: &str,
    ) -> serde_json::Value {
        let prepare = format!("PREPARE kept({parameters}) AS {statement}");
        let steps = [prepare.as_str(), &format!("EXECUTE kept({first})")];
        for sql in steps.iter().copied().chain(fill.iter().copied()) {
            sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                .execute(&mut *write.tx)
                .await
                .unwrap();
        }
        let plan: serde_json::Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE kept({call})"
        )))
        .fetch_one(&mut *write.tx)
        .await
        .unwrap();
        sqlx::query("DEALLOCATE kept")
            .execute(&mut *write.tx)
            .await
            .unwrap();
        // The writers' transactions make every plan generic: the one made at the first call.
        assert_eq!(
            setting(&mut write.tx, "plan_cache_mode").await,
            "force_generic_plan"
        );
        plan
    }

    /// A debit's drain reads the lots of the addresses it drains and no others, with the
    /// generic plan the writers keep from their first drain on an empty ledger: once it has
    /// 200 holders of 10 lots each, one holder drained.
    #[tokio::test]
    async fn a_drain_reads_only_its_own_addresses_lots() {
        let (store, admin, name) = fresh().await;
        let mut write = store.write().await.unwrap();
        let plan = kept_plan_once_filled(
            &mut write,
            drainable_lots!(),
            "text[], timestamptz",
            "ARRAY['nobody'], '2026-09-21'",
            &HOLDERS,
            "ARRAY['holder-7'], '2026-09-21'",
        )
        .await;
        let root = &plan[0]["Plan"];
        assert_eq!(root["Actual Rows"].as_f64(), Some(10.0), "{plan}");
        assert_eq!(
            most_rows(root),
            10.0,
            "no node reads other holders' lots: {plan}"
        );
        // The writers' own call: the holder's ten lots, in emission order.
        let at = Timestamp::from_unix_seconds(1_790_000_000).unwrap();
        let lots = write
            .drainable_lots(&[("holder-7", 1)], lotledger_core::Policy::V1, at)
            .await
            .unwrap();
        let refs: Vec<String> = lots.iter().map(|l| l.credit_ref.clone()).collect();
        let expected: Vec<String> = (0..10).map(|k| format!("holder-7-{k}")).collect();
        assert_eq!(refs, expected);
        assert!(lots.iter().all(|l| l.address == "holder-7"));
        drop(write);
        finish(store, &admin, &name).await;
    }

    /// Whether rows follow a message's position reads the rows from that position on, not
    /// the address's whole history, with the generic plan the writers keep from their first
    /// call on an empty ledger: once one address has 2 000 rows (every third a debit), the
    /// last few asked about.
    #[tokio::test]
    async fn rows_after_a_position_read_only_the_rows_from_it() {
        let (store, admin, name) = fresh().await;
        let mut write = store.write().await.unwrap();
        let plan = kept_plan_once_filled(
            &mut write,
            rows_after!(),
            "text, timestamptz, text",
            "'nobody', '2026-09-21', ''",
            &[
                "INSERT INTO addresses (address) VALUES ('hot')",
                "INSERT INTO refs (name) SELECT 'row-' || lpad(g::text, 4, '0') \
                 FROM generate_series(1, 2000) g ORDER BY g",
                "INSERT INTO credit_history (ref_id, credit_index, address_id, message_timestamp, \
                 amount) SELECT r.id, 0, a.id, timestamptz '2026-01-01 00:00:00Z' \
                 + (substr(r.name, 5)::int / 2) * interval '1 minute', \
                 CASE WHEN substr(r.name, 5)::int % 3 = 0 THEN -1 ELSE 5 END \
                 FROM refs r CROSS JOIN addresses a",
            ],
            // Row 1996's instant, which row 1997 shares.
            "'hot', timestamptz '2026-01-01 00:00:00Z' + 998 * interval '1 minute', 'row-1996'",
        )
        .await;
        let root = &plan[0]["Plan"];
        assert!(
            most_rows(root) <= 6.0,
            "the rows from row 1996 on, not the whole history: {plan}"
        );
        // The writers' own call, at positions around the end.
        let minute = |m: i64| Timestamp::from_unix_seconds(1_767_225_600 + 60 * m).unwrap();
        for (at, reference, expected) in [
            // Rows 1997 (same instant, later reference; 1997 is no multiple of 3)..2000,
            // of which 1998 is a debit.
            (minute(998), "row-1996", (true, true)),
            // Row 2000 only (same instant as 2001 would be): a credit.
            (minute(1000), "row-1999", (true, false)),
            // Nothing after the last row.
            (minute(1000), "row-2000", (false, false)),
            (minute(1001), "", (false, false)),
        ] {
            assert_eq!(
                write.rows_after("hot", at, reference).await.unwrap(),
                expected,
                "after ({at:?}, {reference})"
            );
        }
        drop(write);
        finish(store, &admin, &name).await;
    }

    /// A batch's loads under its locks (its addresses' lots, its references' records and
    /// history rows) read what the batch names and no more, with the generic plans the writers
    /// keep from their first call on an empty ledger: once it has 200 holders of 10 lots and
    /// 10 recorded history rows each, two holders and three references asked about.
    #[tokio::test]
    async fn a_batchs_loads_read_only_what_it_names() {
        let (store, admin, name) = fresh().await;
        let mut write = store.write().await.unwrap();
        let plan = kept_plan_once_filled(
            &mut write,
            lots_of_addresses!(),
            "text[]",
            "ARRAY['nobody']",
            &HOLDERS,
            "ARRAY['holder-7', 'holder-9']",
        )
        .await;
        let root = &plan[0]["Plan"];
        assert_eq!(root["Actual Rows"].as_f64(), Some(20.0), "{plan}");
        assert!(
            most_rows(root) <= 20.0,
            "only the two holders' lots: {plan}"
        );
        drop(write);
        let mut write = store.write().await.unwrap();
        let plan = kept_plan_once_filled(
            &mut write,
            statuses_and_row_keys!(),
            "bytea[], text[]",
            "ARRAY[NULL::bytea], ARRAY['nothing']",
            &HOLDERS,
            "ARRAY[NULL::bytea, NULL, NULL], ARRAY['holder-7-3', 'holder-9-0', 'unknown']",
        )
        .await;
        let root = &plan[0]["Plan"];
        // A record and a history row key for each of the two known references.
        assert_eq!(root["Actual Rows"].as_f64(), Some(4.0), "{plan}");
        assert!(
            most_rows(root) <= 4.0,
            "only the three references' rows: {plan}"
        );
        let (statuses, keys) = write
            .statuses_and_row_keys(&["holder-7-3", "holder-9-0", "unknown"])
            .await
            .unwrap();
        let mut hashes: Vec<&str> = statuses.iter().map(|(h, _)| h.as_str()).collect();
        hashes.sort_unstable();
        assert_eq!(hashes, ["holder-7-3", "holder-9-0"]);
        let mut keys = keys;
        keys.sort();
        assert_eq!(
            keys,
            [("holder-7-3".to_string(), 0), ("holder-9-0".to_string(), 0)]
        );
        drop(write);
        finish(store, &admin, &name).await;
    }
}
