//! The boundary between the lotledger core and its storage backends.
//!
//! [`Store`] is what the CLI and the API use: one method, one transaction. Both backends
//! implement the lower-level [`LedgerTx`] (the primitive reads and writes inside one open
//! transaction) and run the shared writer logic of [`writer`] on it, so that the rules of
//! applying a message — once, atomically, with the cache always equal to the replay — are
//! written once.

use std::future::Future;
use std::sync::Arc;

use lotledger_core::envelope::Envelope;
use lotledger_core::node_json::StoredEnvelope;
use lotledger_core::{
    BalanceDetail, Credits, HistoryRow, IgnoreReason, Lot, Policy, Post, Rules, Timestamp,
};

pub mod batch;
pub mod compact;
pub mod dry_run;
pub mod kept;
pub mod kept_ids;
pub mod maintenance;
pub mod pooled;
pub mod rows;
pub mod scan;
pub mod sql;
pub mod transactional;
pub mod writer;

/// How the backends have sqlx log a slow statement (with its whole SQL text): at debug level,
/// past a second, so that a long migration or a large batch does not print its SQL among the
/// warnings.
pub const SLOW_STATEMENT_LOG: (log::LevelFilter, std::time::Duration) =
    (log::LevelFilter::Debug, std::time::Duration::from_secs(1));

/// How far `ingest` got in a source file: its first `lines` lines, `bytes` bytes long, whose
/// SHA-256 is `prefix_sha256`. A later run resumes after them only if the file still begins
/// with exactly those bytes, so input that was never applied is never skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestProgress {
    /// The file's canonical path.
    pub source: String,
    pub lines: u64,
    pub bytes: u64,
    /// Lower-case hex.
    pub prefix_sha256: String,
    /// Where a source read by position resumes (`lotledger sync`: `<micros> <item hash>` of
    /// the newest message applied); `None` for a file.
    pub resume_at: Option<String>,
}

impl IngestProgress {
    /// From a stored row; a negative count is corrupt data.
    pub fn from_row(
        source: &str,
        lines: i64,
        bytes: i64,
        prefix_sha256: String,
        resume_at: Option<String>,
    ) -> Result<IngestProgress, StoreError> {
        let count = |n: i64| {
            u64::try_from(n).map_err(|_| {
                StoreError::Corrupt(format!("ingest progress of {source}: negative count {n}"))
            })
        };
        Ok(IngestProgress {
            source: source.to_string(),
            lines: count(lines)?,
            bytes: count(bytes)?,
            prefix_sha256,
            resume_at,
        })
    }

    /// `(lines, bytes)` as the stores' signed 64-bit columns hold them.
    pub fn stored_counts(&self) -> Result<(i64, i64), StoreError> {
        let count = |n: u64| {
            i64::try_from(n).map_err(|_| {
                StoreError::Corrupt(format!(
                    "ingest progress of {}: count {n} beyond i64",
                    self.source
                ))
            })
        };
        Ok((count(self.lines)?, count(self.bytes)?))
    }
}

/// The 32 bytes of a reference (item hash, credit ref) written as 64 lower-case hex digits, as
/// Aleph writes item hashes; the stores keep those in binary. `None` for any other text (names
/// such as `no_expiry_credits`, upper-case hex, CIDs), which the stores keep as text. The
/// mapping is one-to-one and keeps byte order among hashes, but a store must sort references
/// by their text, never by the stored value.
pub fn hash_bytes(reference: &str) -> Option<[u8; 32]> {
    let digits = reference.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (lower_hex_digit(pair[0])? << 4) | lower_hex_digit(pair[1])?;
    }
    Some(out)
}

/// The value of a lower-case hex digit: the one rule behind both stored forms of hex
/// ([`hash_bytes`] for references, [`compact`] for history's texts).
pub(crate) fn lower_hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Distinct values in order of first appearance (what a store interns, once each).
pub fn distinct<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = foldhash::HashSet::default();
    values.into_iter().filter(|v| seen.insert(*v)).collect()
}

/// A storage failure. Never a validation problem: those are [`Outcome::Rejected`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("database unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("planning failed: {0}")]
    Plan(#[from] lotledger_core::PlanError),
    #[error("arithmetic overflow: {0}")]
    Overflow(String),
    #[error("invalid database URL: {0}")]
    Config(String),
    /// A batch planned ahead on a snapshot needed more than it could read there; it is
    /// applied the usual way instead (never reported by a `Store` method).
    #[error("batch not planned ahead: {0}")]
    NotAhead(String),
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied: history rows written, lots updated.
    Processed,
    /// Accepted and recorded, but changes nothing (not a credit post, other channel, …).
    Ignored(IgnoreReason),
    /// Refused; nothing changed. The text is the reference's.
    Rejected(String),
    /// This item hash was processed before: nothing happens again.
    AlreadyApplied,
}

/// Status of a message as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageStatus {
    Processed,
    Rejected { error: String },
}

/// A recorded message.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRecord {
    pub item_hash: String,
    pub status: MessageStatus,
    /// Set when the message was accepted without any credit effect.
    pub ignored: Option<String>,
    pub recorded_at: Timestamp,
    /// The envelope the message came in, as received; `None` for a message recorded without
    /// one (imports, tests, records written before migration 0010).
    pub envelope: Option<Arc<StoredEnvelope>>,
}

/// One chunk of the kept envelopes of processed messages, in the order of the reference's
/// message list (NODE-API §2.3): envelope time, oldest or newest first, ties in ascending item
/// hash either way. Messages recorded without an envelope are not in it.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvelopeScan {
    pub ascending: bool,
    /// Only messages after this `(time, item_hash)` in the scan's order.
    pub after: Option<(f64, String)>,
    /// `time >= start`.
    pub start: Option<f64>,
    /// `time < end`.
    pub end: Option<f64>,
    /// At most this many.
    pub limit: u32,
}

/// The envelopes of the records a [`sql_kept_scan`] read, each row mapped by `map` (a store's
/// `stored_message`).
pub fn kept_envelopes<R>(
    rows: &[R],
    map: impl Fn(&R) -> Result<MessageRecord, StoreError>,
) -> Result<Vec<Arc<StoredEnvelope>>, StoreError> {
    rows.iter()
        .map(|row| {
            map(row)?.envelope.ok_or_else(|| {
                StoreError::Corrupt("a kept message was read without its envelope".into())
            })
        })
        .collect()
}

/// `(sum, count)` as a store's `sql_expiring_total!` row holds them.
pub fn expiring_totals(sum: i64, count: i64) -> Result<(Credits, u64), StoreError> {
    let count =
        u64::try_from(count).map_err(|_| StoreError::Corrupt(format!("negative count {count}")))?;
    Ok((Credits(sum), count))
}

/// `(offset, limit)` as SQL's signed integers.
pub fn page_bounds(offset: u64, limit: u64) -> (i64, i64) {
    (
        i64::try_from(offset).unwrap_or(i64::MAX),
        i64::try_from(limit).unwrap_or(i64::MAX),
    )
}

impl EnvelopeScan {
    /// The scan as `(lo, hi, t, h)` for [`sql_kept_scan`]: `time` within `[lo, hi)` (the
    /// resume point folded into the range, so that an index on `time` starts there), and at
    /// the instant `t` only hashes above `h`. Without a resume point, `t` is an instant no
    /// kept message has.
    pub fn bounds(&self) -> (f64, f64, f64, &str) {
        let mut lo = self.start.unwrap_or(f64::MIN);
        let mut hi = self.end.unwrap_or(f64::MAX);
        match &self.after {
            None => (lo, hi, f64::MIN, ""),
            Some((t, h)) => {
                if self.ascending {
                    lo = lo.max(*t);
                } else {
                    hi = hi.min(t.next_up());
                }
                (lo, hi, *t, h)
            }
        }
    }
}

/// Which history rows to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistorySelector {
    Address(String),
    CreditRef(String),
}

/// A page of per-address balances (see [`Store::credit_balances`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalancesQuery<'a> {
    pub at: Timestamp,
    pub min_balance: i64,
    pub after: Option<&'a str>,
    pub limit: Option<u64>,
    pub offset: u64,
}

/// An address whose cache differs from the replay of its history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub address: String,
    /// Lots (remainder > 0) in the cache.
    pub cached: Vec<Lot>,
    /// Lots the replay gives.
    pub replayed: Vec<Lot>,
}

/// One of the ties between the ledger's tables that `verify --integrity` checks. The schema
/// declares no foreign keys (the writers intern every address and reference before the rows
/// that name it, in the same transaction, and checking each insert against a parent table
/// would cost every append a probe); a row whose id names nothing would drop out of every
/// joined read without a word, so this is how an operator finds one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdCheck {
    /// `credit_history.address_id` → `addresses`.
    HistoryAddress,
    /// `credit_history.ref_id` → `refs`.
    HistoryRef,
    /// `credit_lots.address_id` → `addresses`.
    LotAddress,
    /// `credit_lots.ref_id` → `refs`.
    LotRef,
    /// `credit_messages.ref_id` → `refs`.
    MessageRef,
}

impl IdCheck {
    pub const ALL: [IdCheck; 5] = [
        IdCheck::HistoryAddress,
        IdCheck::HistoryRef,
        IdCheck::LotAddress,
        IdCheck::LotRef,
        IdCheck::MessageRef,
    ];

    /// The column checked, as `table.column`.
    pub fn column(self) -> &'static str {
        self.parts().0
    }

    /// The table its ids must name.
    pub fn target(self) -> &'static str {
        self.parts().1
    }

    /// How many rows name an id missing from [`IdCheck::target`]: one statement, the same in
    /// both dialects, a primary-key probe per row.
    pub fn count_sql(self) -> &'static str {
        self.parts().2
    }

    /// [`IdCheck::column`], [`IdCheck::target`] and [`IdCheck::count_sql`], each written once
    /// from the table, the column and the target.
    fn parts(self) -> (&'static str, &'static str, &'static str) {
        macro_rules! check {
            ($table:literal, $column:literal, $target:literal) => {
                (
                    concat!($table, ".", $column),
                    $target,
                    concat!(
                        "SELECT COUNT(*) FROM ",
                        $table,
                        " c WHERE NOT EXISTS (SELECT 1 FROM ",
                        $target,
                        " t WHERE t.id = c.",
                        $column,
                        ")"
                    ),
                )
            };
        }
        match self {
            IdCheck::HistoryAddress => check!("credit_history", "address_id", "addresses"),
            IdCheck::HistoryRef => check!("credit_history", "ref_id", "refs"),
            IdCheck::LotAddress => check!("credit_lots", "address_id", "addresses"),
            IdCheck::LotRef => check!("credit_lots", "ref_id", "refs"),
            IdCheck::MessageRef => check!("credit_messages", "ref_id", "refs"),
        }
    }
}

/// Rows that failed one [`IdCheck`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dangling {
    pub check: IdCheck,
    pub rows: u64,
}

/// Rows in the ledger's three tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableCounts {
    pub history_rows: u64,
    pub lots: u64,
    pub messages: u64,
}

/// On-disk bytes of the ledger's tables, indexes included, and how they were measured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Footprint {
    /// `credit_history` with its indexes.
    pub history_bytes: u64,
    /// `credit_history`'s indexes alone.
    pub history_index_bytes: u64,
    pub lots_bytes: u64,
    pub messages_bytes: u64,
    /// The envelopes messages were received in (`message_envelopes`).
    pub envelopes_bytes: u64,
    /// Interned addresses and references (`addresses`, `refs`).
    pub interned_bytes: u64,
    /// The whole database (SQLite: the file's pages; PostgreSQL: the database).
    pub database_bytes: u64,
    /// How the sizes were obtained.
    pub method: String,
}

impl TableCounts {
    /// The counts of [`sql_table_counts!`]'s row.
    pub fn from_row((history_rows, lots, messages): (i64, i64, i64)) -> TableCounts {
        TableCounts {
            history_rows: non_negative(history_rows),
            lots: non_negative(lots),
            messages: non_negative(messages),
        }
    }
}

/// An address and its number of history rows, as [`Store::address_rows`] lists them. Handed
/// to [`Store::verify`] and [`Store::rebuild`], the count only sizes their reads (how many
/// addresses one pass holds, whole tables or seeks): a stale count costs time, never a wrong
/// answer.
pub type AddressRows = (String, u64);

/// The addresses of `batch`, without their counts.
pub fn addresses_of(batch: &[AddressRows]) -> Vec<String> {
    batch.iter().map(|(address, _)| address.clone()).collect()
}

/// A balance from the SQL `SUM` of its lots' remainders (NULL: no lot), never negative.
pub fn balance_from_sum(sum: Option<i64>) -> Credits {
    Credits(sum.unwrap_or(0).max(0))
}

/// A count or size from SQL (`BIGINT`), never negative.
pub fn non_negative(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// What migrating a store's schema did (`Store::migrate`, kept by `Store::migrated`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Migrated {
    /// The schema version found (the last migration applied before), `None` for a database
    /// without the schema.
    pub from: Option<i64>,
    /// The migrations applied, oldest first: version and description.
    pub applied: Vec<(i64, String)>,
}

impl Migrated {
    /// The schema version now.
    pub fn version(&self) -> Option<i64> {
        self.applied.last().map(|(v, _)| *v).or(self.from)
    }
}

/// A lotledger store. Every method is one transaction (or a read).
pub trait Store: Send + Sync {
    /// Creates or upgrades the schema; says what it applied.
    fn migrate(&self) -> impl Future<Output = Result<Migrated, StoreError>> + Send;

    /// What opening the store did to its schema (stores that migrate when they open).
    fn migrated(&self) -> Migrated {
        Migrated::default()
    }

    /// How many write transactions are worth running at once (SQLite: one writer at a time;
    /// PostgreSQL: writers of different addresses run side by side).
    fn concurrent_writers(&self) -> usize {
        1
    }

    /// Applies one post, once: validation, funds check at `now`, drains, history, lots, and the
    /// re-derivation of out-of-order addresses, in one transaction.
    fn apply(
        &self,
        post: &Post,
        rules: &Rules,
        now: Timestamp,
    ) -> impl Future<Output = Result<Outcome, StoreError>> + Send;

    /// Applies a batch of messages in order, each exactly as [`Store::apply`] /
    /// [`Store::reject`] would, with one outcome per item. Backends group them into one
    /// transaction (group commit); a message is still atomic and applied once, and a
    /// rejected message never affects its neighbours.
    fn apply_batch(
        &self,
        items: &[BatchItem],
        rules: &Rules,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<Outcome>, StoreError>> + Send {
        self.apply_batch_with_progress(items, rules, now, None)
    }

    /// [`Store::apply_batch`], also recording `progress` (how far its source file has been
    /// read) in the same transaction.
    fn apply_batch_with_progress(
        &self,
        items: &[BatchItem],
        rules: &Rules,
        now: Timestamp,
        progress: Option<&IngestProgress>,
    ) -> impl Future<Output = Result<Vec<Outcome>, StoreError>> + Send;

    /// Applies the batches `jobs` gives, in order, each exactly as
    /// [`Store::apply_batch_with_progress`] would, and sends each one's outcomes on `done`
    /// once it is committed, in the same order. Stops after the first error, which it sends.
    /// Where the store can, a batch is planned while the one before it is written
    /// ([`batch::apply_batches_ahead`]); by default, one batch after the other.
    fn apply_batches(
        &self,
        rules: &Rules,
        mut jobs: tokio::sync::mpsc::Receiver<BatchJob>,
        done: tokio::sync::mpsc::Sender<Result<Vec<Outcome>, StoreError>>,
    ) -> impl Future<Output = ()> + Send {
        async move {
            while let Some(job) = jobs.recv().await {
                let applied = self
                    .apply_batch_with_progress(&job.items, rules, job.now, job.progress.as_ref())
                    .await;
                if !batch::report(&done, applied).await {
                    return;
                }
            }
        }
    }

    /// The prefix of `source` committed by an earlier ingest. Rows written before migration
    /// 0004 (no prefix length and digest) are not returned: they cannot be verified.
    fn ingest_progress(
        &self,
        source: &str,
    ) -> impl Future<Output = Result<Option<IngestProgress>, StoreError>> + Send;

    /// Records a message rejected before the credit rules (envelope checks), unless this hash
    /// was already processed. Returns the outcome recorded.
    fn reject(
        &self,
        item_hash: &str,
        error: &str,
        envelope: Option<Arc<StoredEnvelope>>,
        now: Timestamp,
    ) -> impl Future<Output = Result<Outcome, StoreError>> + Send;

    /// Inserts raw history rows as they are (existing keys are skipped), then rebuilds the lots
    /// of every touched address by replay. Returns the number of rows inserted.
    fn import_history(
        &self,
        rows: &[HistoryRow],
        now: Timestamp,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Inserts history rows, lots and message records exactly as given, in one transaction,
    /// with no validation, planning or replay (rows and lots of existing keys are skipped,
    /// records overwrite). For the bench's measure of what the layout allows
    /// (`lotledger bench`, the "limit" line) and bulk copies of a verified ledger; a caller that
    /// passes lots other than the replay of the rows breaks the cache invariant.
    fn insert_raw(
        &self,
        rows: &[HistoryRow],
        lots: &[Lot],
        records: &[MessageRecord],
        now: Timestamp,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// `max(0, Σ remaining)` over the address's lots valid at `at`.
    fn balance(
        &self,
        address: &str,
        at: Timestamp,
    ) -> impl Future<Output = Result<Credits, StoreError>> + Send;

    /// The balance at `at` with its per-expiry breakdown.
    fn balance_details(
        &self,
        address: &str,
        at: Timestamp,
    ) -> impl Future<Output = Result<(Credits, Vec<BalanceDetail>), StoreError>> + Send;

    /// History rows sorted by `(credit_ref, credit_index)`.
    fn history(
        &self,
        selector: &HistorySelector,
    ) -> impl Future<Output = Result<Vec<HistoryRow>, StoreError>> + Send;

    /// The address's lots with a remainder above 0, expired or not, in emission order.
    fn lots(&self, address: &str) -> impl Future<Output = Result<Vec<Lot>, StoreError>> + Send;

    /// Every address with history or lots, sorted.
    fn addresses(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Rebuilds the lots of these addresses from history, in one transaction.
    fn rebuild(&self, batch: &[AddressRows])
    -> impl Future<Output = Result<(), StoreError>> + Send;

    /// How much `repair` and `verify` hand to one [`Store::rebuild`] / [`Store::verify`] call.
    fn maintenance_batch(&self) -> maintenance::BatchLimit {
        maintenance::BatchLimit::default()
    }

    /// [`Store::addresses`], each with its number of history rows.
    fn address_rows(&self) -> impl Future<Output = Result<Vec<AddressRows>, StoreError>> + Send;

    /// Compares cache and replay for these addresses without writing.
    fn verify(
        &self,
        batch: &[AddressRows],
    ) -> impl Future<Output = Result<Vec<Drift>, StoreError>> + Send;

    /// The address after which an interrupted `repair` resumes, if one is in progress.
    fn repair_checkpoint(&self) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// Records (or, with `None`, clears) the repair checkpoint.
    fn set_repair_checkpoint(
        &self,
        last_address: Option<&str>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Per-address balances at `at` (`Σ remaining` of valid lots, not clamped), for every
    /// address holding at least one lot, keeping those `>= min_balance`, sorted by address;
    /// only addresses after `after` when given; `limit` rows from `offset`.
    fn credit_balances(
        &self,
        query: &BalancesQuery<'_>,
    ) -> impl Future<Output = Result<Vec<(String, Credits)>, StoreError>> + Send;

    /// How many addresses [`Store::credit_balances`] lists without paging.
    fn count_credit_balances(
        &self,
        at: Timestamp,
        min_balance: i64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// `Σ |amount|` of `credit_expense` rows, of this address and/or paying for this resource
    /// (effective origin), when given.
    fn consumed_credits(
        &self,
        address: Option<&str>,
        resource: Option<&str>,
    ) -> impl Future<Output = Result<Credits, StoreError>> + Send;

    /// The recorded status of a message.
    fn message(
        &self,
        item_hash: &str,
    ) -> impl Future<Output = Result<Option<MessageRecord>, StoreError>> + Send;

    /// An address's history rows with only what a replay reads (reference, index, amount,
    /// expiry, instant; the other columns empty), in no order: for reads that replay it
    /// ([`lotledger_core::as_of`]).
    fn replay_history(
        &self,
        address: &str,
    ) -> impl Future<Output = Result<Vec<HistoryRow>, StoreError>> + Send;

    /// Lots of every holder that still hold credits at `now` and expire before `before`, in
    /// the order of their expiry (then holder, then emission), `limit` of them after the
    /// first `offset`.
    fn expiring_lots(
        &self,
        now: Timestamp,
        before: Timestamp,
        offset: u64,
        limit: u64,
    ) -> impl Future<Output = Result<Vec<Lot>, StoreError>> + Send;

    /// The credits and the count of the lots [`Store::expiring_lots`] lists.
    fn expiring_total(
        &self,
        now: Timestamp,
        before: Timestamp,
    ) -> impl Future<Output = Result<(Credits, u64), StoreError>> + Send;

    /// A chunk of the kept processed messages ([`EnvelopeScan`]).
    fn kept_messages(
        &self,
        scan: &EnvelopeScan,
    ) -> impl Future<Output = Result<Vec<Arc<StoredEnvelope>>, StoreError>> + Send;

    /// How many rows fail `check` (a full scan of the checked table: for `verify
    /// --integrity`, not for a request path).
    fn dangling(&self, check: IdCheck) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Rows in the ledger's tables (full counts: for reports such as the bench's, not for a
    /// request path).
    fn table_counts(&self) -> impl Future<Output = Result<TableCounts, StoreError>> + Send;

    /// The drain-policy schedule the ledger keeps (`None`: never set, which is `v1`).
    fn drain_schedule(
        &self,
    ) -> impl Future<Output = Result<Option<lotledger_core::Schedule>, StoreError>> + Send;

    /// How many history rows record a policy other than the one `schedule` gives at their
    /// instant: the rows a change to `schedule` would plan differently.
    fn policy_conflicts(
        &self,
        schedule: &lotledger_core::Schedule,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Keeps `schedule` as the ledger's. With `relabel`, every history row first gets the
    /// policy `schedule` gives at its instant (returns how many changed); the lots are then
    /// stale until re-derived ([`maintenance::repair`]).
    fn set_drain_schedule(
        &self,
        schedule: &lotledger_core::Schedule,
        relabel: bool,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The ledger's size on disk, table by table.
    fn footprint(&self) -> impl Future<Output = Result<Footprint, StoreError>> + Send;

    /// The engine's version and the settings that decide its durability and speed, as
    /// `(name, value)` pairs, `version` first.
    fn engine_settings(
        &self,
    ) -> impl Future<Output = Result<Vec<(String, String)>, StoreError>> + Send;
}

/// Decodes the per-address aggregate a backend builds for [`LedgerTx::replay_histories`]:
/// records `message_timestamp_micros,amount,expiration_micros_or_empty,credit_index,policy,
/// N:credit_ref` (N = bytes of credit_ref), each followed by `;`, in replay order.
pub fn decode_replay_rows(
    address: &str,
    text: &str,
    out: &mut Vec<HistoryRow>,
) -> Result<(), StoreError> {
    let bad = || StoreError::Corrupt(format!("replay aggregate of {address}"));
    let mut rest = text;
    while !rest.is_empty() {
        let mut fields = rest.splitn(6, ',');
        let mut next = || fields.next().ok_or_else(bad);
        let micros: i64 = next()?.parse().map_err(|_| bad())?;
        let amount: i64 = next()?.parse().map_err(|_| bad())?;
        let expiry = next()?;
        let index: i32 = next()?.parse().map_err(|_| bad())?;
        let policy = rows::policy(next()?.parse().map_err(|_| bad())?)?;
        let tail = next()?;
        let (len, after) = tail.split_once(':').ok_or_else(bad)?;
        let len: usize = len.parse().map_err(|_| bad())?;
        let credit_ref = after.get(..len).ok_or_else(bad)?;
        rest = after.get(len..).ok_or_else(bad)?;
        rest = rest.strip_prefix(';').ok_or_else(bad)?;
        let ts = Timestamp::from_micros(micros).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut row = HistoryRow::bare(address, Credits(amount), credit_ref, index, ts);
        row.policy = policy;
        if !expiry.is_empty() {
            let e: i64 = expiry.parse().map_err(|_| bad())?;
            row.expiration_date =
                Some(Timestamp::from_micros(e).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        }
        out.push(row);
    }
    Ok(())
}

/// A batch for [`Store::apply_batches`]: its items, the instant they are applied at, and the
/// ingest progress committed with them.
#[derive(Debug, Clone)]
pub struct BatchJob {
    pub items: Vec<BatchItem>,
    pub now: Timestamp,
    pub progress: Option<IngestProgress>,
}

/// One message of a batch, after its envelope checks.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchItem {
    /// A POST to apply.
    Apply(Post),
    /// An envelope-level rejection to record under this hash, with the envelope it came in.
    Reject {
        item_hash: String,
        error: String,
        envelope: Option<Arc<StoredEnvelope>>,
    },
    /// Not a POST: nothing to apply or record.
    Ignore,
}

impl BatchItem {
    /// The item an envelope makes, with the envelope checks that need no cryptography.
    pub fn from_envelope(envelope: &Envelope) -> BatchItem {
        match envelope.post() {
            Ok(Some(post)) => BatchItem::Apply(post),
            Ok(None) => BatchItem::Ignore,
            Err(rejection) => BatchItem::rejected(envelope, rejection.0),
        }
    }

    /// The envelope's rejection with `error`, recorded with the envelope.
    pub fn rejected(envelope: &Envelope, error: String) -> BatchItem {
        BatchItem::Reject {
            item_hash: envelope.item_hash.clone(),
            error,
            envelope: envelope.stored().map(Arc::new),
        }
    }
}

/// A batch with one transaction per message (the default [`Store::apply_batch`], and the
/// fallback when a grouped batch fails).
pub async fn apply_one_by_one<S: Store + ?Sized>(
    store: &S,
    items: &[BatchItem],
    rules: &Rules,
    now: Timestamp,
) -> Result<Vec<Outcome>, StoreError> {
    let mut outcomes = Vec::with_capacity(items.len());
    for item in items {
        outcomes.push(match item {
            BatchItem::Apply(post) => store.apply(post, rules, now).await?,
            BatchItem::Reject {
                item_hash,
                error,
                envelope,
            } => {
                store
                    .reject(item_hash, error, envelope.clone(), now)
                    .await?
            }
            BatchItem::Ignore => Outcome::Ignored(IgnoreReason::NotCreditType),
        });
    }
    Ok(outcomes)
}

/// Applies the POST an envelope carries, or records its envelope-level rejection; a message
/// that is not a POST changes nothing. The one way in for a whole message (ingest, tests).
pub async fn apply_envelope<S: Store>(
    store: &S,
    envelope: &Envelope,
    rules: &Rules,
    now: Timestamp,
) -> Result<Outcome, StoreError> {
    match envelope.post() {
        Ok(Some(post)) => store.apply(&post, rules, now).await,
        Ok(None) => Ok(Outcome::Ignored(IgnoreReason::NotCreditType)),
        Err(rejection) => {
            let stored = envelope.stored().map(Arc::new);
            store
                .reject(&envelope.item_hash, &rejection.0, stored, now)
                .await
        }
    }
}

/// The recorded statuses of messages and the keys of history rows stored under their hashes
/// ([`LedgerTx::statuses_and_row_keys`]).
pub type StatusesAndRowKeys = (Vec<(String, MessageStatus)>, Vec<(String, i32)>);

/// The primitive operations of one open write transaction. Implemented by each backend;
/// used by [`writer`].
pub trait LedgerTx: Send {
    fn message_status(
        &mut self,
        item_hash: &str,
    ) -> impl Future<Output = Result<Option<MessageStatus>, StoreError>> + Send;
    fn record_message(
        &mut self,
        record: &MessageRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Serialises writers of the same message and of the same addresses, deadlock-free. Called
    /// once, first, by each write transaction. May be a no-op where the transaction already
    /// excludes every other writer.
    fn lock(
        &mut self,
        item_hash: &str,
        addresses: &[&str],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn balance(
        &mut self,
        address: &str,
        at: Timestamp,
    ) -> impl Future<Output = Result<Credits, StoreError>> + Send;
    /// The lots drainable at `ts` of each `(address, demand)`, in emission order, locked
    /// against other writers. A backend may return only those a drain under `policy` reaches
    /// (`lotledger_core::plan::covering`: under v1 the first that cover the demand, under v2
    /// the soonest-expiring that do, wherever they stand); returning them all is also correct.
    fn drainable_lots(
        &mut self,
        demand: &[(&str, i128)],
        policy: Policy,
        ts: Timestamp,
    ) -> impl Future<Output = Result<Vec<Lot>, StoreError>> + Send;
    /// Inserts rows, skipping existing keys. Returns how many were inserted.
    fn insert_rows(
        &mut self,
        rows: &[HistoryRow],
        last_update: Timestamp,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Inserts lots, skipping existing keys.
    fn insert_lots(&mut self, lots: &[Lot]) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Sets the remainder of existing lots; a lot at 0 is removed.
    fn update_lots(&mut self, lots: &[Lot]) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Whether `address` has history rows sorting after `(ts, credit_ref, ·)` in replay order:
    /// `(any such row, any such row with a negative amount)`.
    fn rows_after(
        &mut self,
        address: &str,
        ts: Timestamp,
        credit_ref: &str,
    ) -> impl Future<Output = Result<(bool, bool), StoreError>> + Send;
    fn address_history(
        &mut self,
        address: &str,
    ) -> impl Future<Output = Result<Vec<HistoryRow>, StoreError>> + Send;
    /// Replaces all lots of `address`.
    fn replace_lots(
        &mut self,
        address: &str,
        lots: &[Lot],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    // Set-based primitives of group commit ([`batch`]).

    /// [`LedgerTx::lock`] for many messages and addresses at once, in the same global order.
    fn lock_many(
        &mut self,
        item_hashes: &[&str],
        addresses: &[&str],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Every stored lot of these addresses.
    fn load_lots(
        &mut self,
        addresses: &[&str],
    ) -> impl Future<Output = Result<Vec<Lot>, StoreError>> + Send;
    /// The last history positions of these addresses (absent: no history).
    fn last_rows(
        &mut self,
        addresses: &[&str],
    ) -> impl Future<Output = Result<Vec<(String, batch::LastRows)>, StoreError>> + Send;
    /// The recorded statuses of these messages (absent: never seen), and the keys of the
    /// history rows already stored under their hashes as credit refs: what a batch loads for
    /// its messages, read at once.
    fn statuses_and_row_keys(
        &mut self,
        item_hashes: &[&str],
    ) -> impl Future<Output = Result<StatusesAndRowKeys, StoreError>> + Send;
    /// Inserts `created` (lots the store does not hold: the caller holds their addresses'
    /// locks and knows all their lots; one already stored is an error), inserts or updates
    /// `changed` (by key), and deletes the lots keyed like `deletes`.
    fn write_lots(
        &mut self,
        created: &[Lot],
        changed: &[Lot],
        deletes: &[Lot],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// [`LedgerTx::record_message`] for many distinct hashes.
    fn record_messages(
        &mut self,
        records: &[MessageRecord],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// History rows of these addresses sorted by `(address, message_timestamp, credit_ref,
    /// credit_index)`, with only the columns replay reads (address, amount, credit_ref,
    /// credit_index, expiration_date, message_timestamp; the others null) — repair and verify,
    /// set-based; a backend may fetch them aggregated per address.
    fn replay_histories(
        &mut self,
        addresses: &[&str],
    ) -> impl Future<Output = Result<Vec<HistoryRow>, StoreError>> + Send;
    /// Deletes every lot of these addresses.
    fn delete_lots_of(
        &mut self,
        addresses: &[&str],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Records how far a source file is committed.
    fn set_ingest_progress(
        &mut self,
        progress: &IngestProgress,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::hash_bytes;

    #[test]
    fn only_lower_case_64_hex_references_are_binary() {
        let hex = "0f".repeat(32);
        assert_eq!(hash_bytes(&hex), Some([0x0f; 32]));
        let mut all = String::new();
        for b in 0u8..32 {
            all.push_str(&format!("{:02x}", b * 8));
        }
        let bytes = hash_bytes(&all).unwrap();
        assert_eq!(
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            all
        );
        for other in [
            "no_expiry_credits".to_string(),
            "0F".repeat(32),
            "0f".repeat(31),
            "0f".repeat(33),
            format!("{}g", "0".repeat(63)),
            format!("{}é", "0".repeat(62)),
        ] {
            assert_eq!(hash_bytes(&other), None, "{other}");
        }
    }

    #[test]
    fn binary_hashes_keep_the_text_order() {
        let a = format!("{}9{}", "a".repeat(10), "0".repeat(53));
        let b = format!("{}a{}", "a".repeat(10), "0".repeat(53));
        assert!(a < b);
        assert!(hash_bytes(&a).unwrap() < hash_bytes(&b).unwrap());
    }
}
