//! Group commit: many messages in one transaction, each applied by the unchanged
//! [`writer::apply`] / [`writer::reject`], over [`BatchTx`] — a [`LedgerTx`] that answers from an
//! in-memory copy of the batch's state (loaded in a few set-based queries) and buffers every
//! write until one flush. A message is still atomic (the batch commits or rolls back as a whole;
//! on any store error the caller replays the batch one transaction per message) and applied
//! once (the status map sees the batch's own records).
//!
//! [`BatchCache`] carries the lots and last history positions of the addresses a batch loaded
//! into the next batch, so that an address is read from the database once, not once per batch.
//! An address's state is used only while the database holds it exactly as the last committed
//! batch left it, which the store tells by [`Stamps`]: a generation of the whole store that
//! every write transaction advances (SQLite, whose writers are strictly ordered), or a version
//! per address that every transaction writing the address advances (PostgreSQL, whose writers
//! of different addresses run concurrently).
//!
//! [`apply_batches_ahead`] pipelines a stream of batches on a store with read snapshots: a batch
//! is planned ([`Basis::Ahead`]) while the one before is written on another task, and written
//! only on the exact state it was planned from ([`Expect`]): on SQLite, the store generation
//! the plan expects; on PostgreSQL, under the batch's locks, the versions of its addresses and
//! the statuses and history rows of its hashes as the plan read them.

use std::collections::{BTreeMap, BTreeSet};

// Per-batch maps keyed by addresses and hashes: foldhash (seeded per map) instead of SipHash,
// which the W1 profile put at ~3 % of the samples.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use lotledger_core::plan::covering;
use lotledger_core::{
    Credits, Decision, HistoryRow, IgnoreReason, Lot, Policy, Rules, Timestamp, classify,
};

use crate::{
    BatchItem, BatchJob, IngestProgress, LedgerTx, MessageRecord, MessageStatus, Outcome,
    StoreError, writer,
};

/// A lot's primary key in emission order: `(message_timestamp, credit_ref, credit_index)`.
type LotKey = (Timestamp, String, i32);

/// Replay-order position of an address's last history row: `(message_timestamp, credit_ref)`.
type Position = (Timestamp, String);

/// The last history positions of an address, overall and among debits (negative rows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastRows {
    pub any: Option<Position>,
    pub debit: Option<Position>,
}

impl LastRows {
    fn note(&mut self, row: &HistoryRow) {
        let pos = (row.message_timestamp, row.credit_ref.clone());
        if self.any.as_ref().is_none_or(|p| pos > *p) {
            self.any = Some(pos.clone());
        }
        if row.amount.0 < 0 && self.debit.as_ref().is_none_or(|p| pos > *p) {
            self.debit = Some(pos);
        }
    }
}

/// Lots held by the cache, at most: past it, the cache is emptied and refills from the next
/// batches (about 200 bytes a lot).
const CACHE_MAX_LOTS: usize = 500_000;

/// What a batch knows of an address: all its lots and its last history positions.
type AddressState = (BTreeMap<LotKey, Lot>, LastRows);

/// What tells a [`BatchCache`] whether the state of an address it holds is still exact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Stamps {
    /// Nothing: the transaction uses no cache.
    #[default]
    None,
    /// One generation for the whole store, advanced by every write transaction, where no two
    /// write transactions run concurrently.
    Store(i64),
    /// A version per address, advanced by every transaction that writes the address's history
    /// or lots while holding the address's lock. Addresses the store has no version of are
    /// absent.
    Addresses(HashMap<String, i64>),
}

/// The state of addresses as the last committed batch left them; see the module docs.
#[derive(Debug, Default)]
pub struct BatchCache {
    /// The store generation the cache is exact for ([`Stamps::Store`] only).
    generation: Option<i64>,
    /// Each address's state, with its version when it was left ([`Stamps::Addresses`] only).
    addresses: HashMap<String, (Option<i64>, AddressState)>,
    lots: usize,
}

impl BatchCache {
    /// The cache, locked. A lock poisoned by a panic elsewhere is recovered emptied: the cache
    /// may be dropped at any time, and its state after a panic is not to be trusted.
    fn locked(cache: &std::sync::Mutex<BatchCache>) -> std::sync::MutexGuard<'_, BatchCache> {
        cache.lock().unwrap_or_else(|poisoned| {
            let mut guard = poisoned.into_inner();
            guard.clear();
            guard
        })
    }

    /// The lots of `address` as the last committed batch left them, summed by expiry (`None`:
    /// never expires), with the address's version they are exact at, if that version is past
    /// `newer_than`; `None` when the cache holds no state of it at a version of its own
    /// (per-address [`Stamps::Addresses`] only; a batch that holds the address has taken its
    /// state out until it commits). For balance reads, which check the version against the
    /// store's before they use the sums.
    #[allow(clippy::type_complexity)]
    pub fn committed_sums(
        cache: &std::sync::Mutex<BatchCache>,
        address: &str,
        newer_than: i64,
    ) -> Option<(i64, Vec<(Option<Timestamp>, i128)>)> {
        let cache = BatchCache::locked(cache);
        let (version, (lots, _)) = cache.addresses.get(address)?;
        let version = (*version).filter(|v| *v > newer_than)?;
        let mut sums: BTreeMap<Option<Timestamp>, i128> = BTreeMap::new();
        for lot in lots.values() {
            *sums.entry(lot.expiration_date).or_default() += i128::from(lot.amount_remaining.0);
        }
        Some((version, sums.into_iter().collect()))
    }

    /// Drops the state of `address`: the next batch and balance read of it read it from the
    /// store.
    pub fn forget(cache: &std::sync::Mutex<BatchCache>, address: &str) {
        let mut cache = BatchCache::locked(cache);
        if let Some((_, (lots, _))) = cache.addresses.remove(address) {
            cache.lots -= lots.len();
        }
    }

    /// The states of `addresses` the cache holds exact at `stamps` (the stamps the store shows
    /// now, to a transaction holding the addresses' locks), removed from it: the batch owns
    /// them until it commits. States no longer exact are dropped.
    fn take(
        &mut self,
        stamps: &Stamps,
        addresses: &BTreeSet<String>,
    ) -> HashMap<String, AddressState> {
        let exact: &dyn Fn(&str, Option<i64>) -> bool = match stamps {
            Stamps::None => {
                self.clear();
                return HashMap::new();
            }
            Stamps::Store(generation) => {
                if self.generation != Some(*generation) {
                    self.clear();
                    return HashMap::new();
                }
                // Until this batch commits, the store is past the cache's generation.
                self.generation = None;
                &|_, _| true
            }
            Stamps::Addresses(versions) => &|address: &str, version: Option<i64>| {
                version.is_some() && versions.get(address).copied() == version
            },
        };
        self.remove(addresses, exact)
    }

    /// The states of `addresses` the cache holds, removed from it, if the cache is exact at
    /// store generation `at`; otherwise the cache is emptied. For a batch planned ahead: the
    /// cache keeps its generation, being still exact for every address it keeps.
    fn take_at(&mut self, at: i64, addresses: &BTreeSet<String>) -> HashMap<String, AddressState> {
        if self.generation != Some(at) {
            self.clear();
            return HashMap::new();
        }
        self.remove(addresses, &|_, _| true)
    }

    /// Removes the states of `addresses`, and gives those `exact` keeps (by address and the
    /// version it was kept at).
    fn remove(
        &mut self,
        addresses: &BTreeSet<String>,
        exact: &dyn Fn(&str, Option<i64>) -> bool,
    ) -> HashMap<String, AddressState> {
        let mut out = HashMap::new();
        for a in addresses {
            if let Some((version, state)) = self.addresses.remove(a) {
                self.lots -= state.0.len();
                if exact(a, version) {
                    out.insert(a.clone(), state);
                }
            }
        }
        out
    }

    /// Keeps a committed batch's states: `before` the stamps its transaction found (see
    /// [`BatchCache::take`]), `after` those its commit left.
    fn put(&mut self, before: &Stamps, after: &Stamps, states: HashMap<String, AddressState>) {
        for (address, state) in states {
            let version = match (before, after) {
                (Stamps::Store(_), Stamps::Store(_)) => None,
                (Stamps::Addresses(before), Stamps::Addresses(after)) => {
                    match after.get(&address).or_else(|| before.get(&address)) {
                        Some(v) => Some(*v),
                        // Never written and unknown to the store: nothing to check it by.
                        None => continue,
                    }
                }
                _ => return self.clear(),
            };
            self.lots += state.0.len();
            if let Some((_, old)) = self.addresses.insert(address, (version, state)) {
                self.lots -= old.0.len();
            }
        }
        if self.lots > CACHE_MAX_LOTS {
            self.clear();
        }
        if let Stamps::Store(generation) = after {
            self.generation = Some(*generation);
        }
    }

    fn clear(&mut self) {
        self.generation = None;
        self.addresses.clear();
        self.lots = 0;
    }
}

/// A [`LedgerTx`] over an in-memory copy of the batch's state; see the module docs.
pub struct BatchTx<'t, T: LedgerTx> {
    inner: &'t mut T,
    statuses: HashMap<String, Option<MessageStatus>>,
    lots: HashMap<String, BTreeMap<LotKey, Lot>>,
    last: HashMap<String, LastRows>,
    row_keys: HashSet<(String, i32)>,
    locked_hashes: HashSet<String>,
    locked_addresses: HashSet<String>,
    pending_rows: Vec<HistoryRow>,
    last_update: Timestamp,
    /// Each lot the batch wrote, and whether the store lacks it (created by the batch).
    dirty_lots: BTreeMap<(String, LotKey), bool>,
    pending_messages: Vec<MessageRecord>,
    /// The stamps the store showed once the batch's addresses were locked (planned ahead:
    /// the stamps of the snapshot it read).
    stamps: Stamps,
    /// Planned ahead on a store with address versions: what the batch read, for its
    /// transaction to find again.
    grounds: Option<Grounds>,
    /// Planned ahead on a read snapshot: everything it needs was loaded up front, and any
    /// other read or write of the store fails with [`StoreError::NotAhead`].
    ahead: bool,
}

/// What a batch planned ahead on a store with address versions ([`Stamps::Addresses`]) read:
/// its transaction must find the same under the batch's locks for the plan to hold (see
/// [`Expect::Exact`]).
#[derive(Debug, Clone, Default)]
struct Grounds {
    hashes: Vec<String>,
    addresses: Vec<String>,
    /// The versions of the batch's addresses (absent: unknown to the store). Planned, those
    /// the snapshot showed, without the addresses carried over from the prior batch; once
    /// expected ([`Planned::expect`]), all of them.
    versions: HashMap<String, i64>,
    /// The addresses whose state came from the prior batch's plan: their versions are those
    /// its commit leaves.
    from_prior: Vec<String>,
    /// The recorded statuses and the history row keys of the batch's hashes, sorted.
    found: crate::StatusesAndRowKeys,
}

impl Grounds {
    fn new(
        hashes: &[&str],
        addresses: &[&str],
        versions: &HashMap<String, i64>,
        from_prior: Vec<String>,
        statuses: &HashMap<String, Option<MessageStatus>>,
        row_keys: &HashSet<(String, i32)>,
    ) -> Grounds {
        let mut versions = versions.clone();
        for a in &from_prior {
            versions.remove(a);
        }
        let mut recorded: Vec<(String, MessageStatus)> = statuses
            .iter()
            .filter_map(|(h, s)| Some((h.clone(), s.clone()?)))
            .collect();
        recorded.sort_by(|a, b| a.0.cmp(&b.0));
        let mut rows: Vec<(String, i32)> = row_keys.iter().cloned().collect();
        rows.sort();
        Grounds {
            hashes: hashes.iter().map(|h| (*h).to_string()).collect(),
            addresses: addresses.iter().map(|a| (*a).to_string()).collect(),
            versions,
            from_prior,
            found: (recorded, rows),
        }
    }

    /// Whether `tx`, once it holds the batch's locks (taken here), finds what the plan read.
    async fn found_again<T: Commit>(&self, tx: &mut T) -> Result<bool, StoreError> {
        let hashes: Vec<&str> = self.hashes.iter().map(String::as_str).collect();
        let addresses: Vec<&str> = self.addresses.iter().map(String::as_str).collect();
        tx.lock_many(&hashes, &addresses).await?;
        match tx.stamps(&addresses).await? {
            Stamps::Addresses(versions) if versions == self.versions => {}
            _ => return Ok(false),
        }
        let (mut recorded, mut rows) = tx.statuses_and_row_keys(&hashes).await?;
        recorded.sort_by(|a, b| a.0.cmp(&b.0));
        rows.sort();
        Ok(recorded == self.found.0 && rows == self.found.1)
    }
}

/// What a batch planned ahead must find when its transaction begins, for its plan to hold.
#[derive(Debug, Clone)]
enum Expect {
    /// The store at this generation: nobody wrote since the plan's basis (SQLite, whose
    /// writers are strictly ordered).
    Generation(i64),
    /// Under the batch's locks, its addresses at these versions and its hashes' statuses and
    /// history rows as the plan read them (PostgreSQL, where writers of other addresses and
    /// messages commit meanwhile).
    Exact(Grounds),
}

impl Expect {
    fn generation(&self) -> Option<i64> {
        match self {
            Expect::Generation(generation) => Some(*generation),
            Expect::Exact(_) => None,
        }
    }

    /// The stamps the plan was made from, as [`BatchCache::put`] takes them.
    fn stamps(&self) -> Stamps {
        match self {
            Expect::Generation(generation) => Stamps::Store(*generation),
            Expect::Exact(grounds) => Stamps::Addresses(grounds.versions.clone()),
        }
    }

    /// Whether `tx`, a write transaction just opened, finds the store as the plan expects.
    async fn holds<T: Commit>(&self, tx: &mut T) -> Result<bool, StoreError> {
        match self {
            Expect::Generation(expected) => {
                Ok(matches!(tx.stamps(&[]).await?, Stamps::Store(found) if found == *expected))
            }
            Expect::Exact(grounds) => grounds.found_again(tx).await,
        }
    }
}

/// Where a batch finds the state its transaction does not read.
pub enum Basis<'a> {
    /// A write transaction holding the batch's locks, and the store's cache if it keeps one.
    Locked(Option<&'a std::sync::Mutex<BatchCache>>),
    /// A read snapshot, while `prior` (the batch before, planned and not yet committed) may
    /// still be writing: the prior batch's hashes and addresses are taken from what it planned,
    /// other addresses from the cache where it is exact (at the store generation `cache_at`,
    /// or at the versions the snapshot shows), the rest from the snapshot. Whether the plan
    /// holds is decided once the prior batch has committed (see [`apply_batches_ahead`]).
    Ahead {
        cache: Option<&'a std::sync::Mutex<BatchCache>>,
        cache_at: Option<i64>,
        prior: Option<&'a mut Planned>,
    },
}

impl<'t, T: Commit> BatchTx<'t, T> {
    /// Locks and loads everything the batch's messages touch; the lots and last positions of
    /// addresses the cache holds exact are not read again. Also returns each item's
    /// classification (`None` for items that are not posts), made once here.
    pub async fn load(
        inner: &'t mut T,
        items: &[BatchItem],
        rules: &Rules,
        basis: Basis<'_>,
    ) -> Result<(BatchTx<'t, T>, Vec<Option<Decision>>), StoreError> {
        let mut hashes: BTreeSet<&str> = BTreeSet::new();
        let mut addresses: BTreeSet<String> = BTreeSet::new();
        let mut decisions = Vec::with_capacity(items.len());
        for item in items {
            decisions.push(match item {
                BatchItem::Apply(post) => {
                    hashes.insert(&post.item_hash);
                    let decision = classify(post, rules);
                    if let Decision::Apply(op) = &decision {
                        addresses.extend(op.touched_addresses().into_iter().map(str::to_string));
                    }
                    Some(decision)
                }
                BatchItem::Reject { item_hash, .. } => {
                    hashes.insert(item_hash);
                    None
                }
                BatchItem::Ignore => None,
            });
        }
        let hashes: Vec<&str> = hashes.into_iter().collect();
        let address_refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
        let ahead = matches!(basis, Basis::Ahead { .. });
        let (stamps, cached, prior, from_prior) = match basis {
            Basis::Locked(cache) => {
                inner.lock_many(&hashes, &address_refs).await?;
                match cache {
                    Some(cache) => {
                        let stamps = inner.stamps(&address_refs).await?;
                        let cached = BatchCache::locked(cache).take(&stamps, &addresses);
                        (stamps, cached, None, Vec::new())
                    }
                    None => (Stamps::None, HashMap::new(), None, Vec::new()),
                }
            }
            Basis::Ahead {
                cache,
                cache_at,
                mut prior,
            } => {
                let stamps = inner.stamps(&address_refs).await?;
                if stamps == Stamps::None {
                    return Err(StoreError::NotAhead("the store has no stamps".into()));
                }
                let mut cached = HashMap::new();
                let mut rest = addresses.clone();
                let mut from_prior = Vec::new();
                if let Some(prior) = prior.as_deref_mut() {
                    for a in &addresses {
                        if let Some(state) = prior.states.remove(a) {
                            rest.remove(a);
                            from_prior.push(a.clone());
                            cached.insert(a.clone(), state);
                        }
                    }
                }
                if let Some(cache) = cache {
                    let mut cache = BatchCache::locked(cache);
                    cached.extend(match &stamps {
                        Stamps::Store(snapshot) => {
                            cache.take_at(cache_at.unwrap_or(*snapshot), &rest)
                        }
                        // Exact where the cache kept the version the snapshot shows.
                        _ => cache.take(&stamps, &rest),
                    });
                }
                (stamps, cached, prior, from_prior)
            }
        };

        let uncached: Vec<&str> = address_refs
            .iter()
            .copied()
            .filter(|a| !cached.contains_key(*a))
            .collect();
        // The prior batch's hashes are as it left them; only the others are read.
        let (known, unknown): (Vec<&str>, Vec<&str>) = hashes
            .iter()
            .partition(|h| prior.as_ref().is_some_and(|p| p.statuses.contains_key(**h)));
        let mut statuses: HashMap<String, Option<MessageStatus>> =
            hashes.iter().map(|h| ((*h).to_string(), None)).collect();
        let (found, existing) = inner.statuses_and_row_keys(&unknown).await?;
        for (hash, status) in found {
            statuses.insert(hash, Some(status));
        }
        let mut row_keys: HashSet<(String, i32)> = existing.into_iter().collect();
        if let Some(prior) = prior {
            let known: HashSet<&str> = known.iter().copied().collect();
            for h in &known {
                if let Some(status) = prior.statuses.get(*h) {
                    statuses.insert((*h).to_string(), status.clone());
                }
            }
            row_keys.extend(
                prior
                    .row_keys
                    .iter()
                    .filter(|(r, _)| known.contains(r.as_str()))
                    .cloned(),
            );
        }
        let grounds = match &stamps {
            Stamps::Addresses(versions) if ahead => Some(Grounds::new(
                &hashes,
                &address_refs,
                versions,
                from_prior,
                &statuses,
                &row_keys,
            )),
            _ => None,
        };
        let mut lots: HashMap<String, BTreeMap<LotKey, Lot>> = addresses
            .iter()
            .map(|a| (a.clone(), BTreeMap::new()))
            .collect();
        for lot in inner.load_lots(&uncached).await? {
            lots.entry(lot.address.clone())
                .or_default()
                .insert(lot_key(&lot), lot);
        }
        let mut last: HashMap<String, LastRows> = addresses
            .iter()
            .map(|a| (a.clone(), LastRows::default()))
            .collect();
        for (address, rows) in inner.last_rows(&uncached).await? {
            last.insert(address, rows);
        }
        for (address, (address_lots, address_last)) in cached {
            lots.insert(address.clone(), address_lots);
            last.insert(address, address_last);
        }
        let batch = BatchTx {
            inner,
            statuses,
            lots,
            last,
            row_keys,
            locked_hashes: hashes.iter().map(|h| (*h).to_string()).collect(),
            locked_addresses: addresses.into_iter().collect(),
            pending_rows: Vec::new(),
            last_update: Timestamp::UNIX_EPOCH,
            dirty_lots: BTreeMap::new(),
            pending_messages: Vec::new(),
            stamps,
            grounds,
            ahead,
        };
        Ok((batch, decisions))
    }
}

impl<T: LedgerTx> BatchTx<'_, T> {
    async fn ensure_lots(&mut self, address: &str) -> Result<(), StoreError> {
        if !self.lots.contains_key(address) {
            let mut map = BTreeMap::new();
            for lot in self.store()?.load_lots(&[address]).await? {
                map.insert(lot_key(&lot), lot);
            }
            self.lots.insert(address.to_string(), map);
        }
        Ok(())
    }

    async fn ensure_last(&mut self, address: &str) -> Result<(), StoreError> {
        if !self.last.contains_key(address) {
            let found = self.store()?.last_rows(&[address]).await?;
            let rows = found.into_iter().next().map(|(_, r)| r).unwrap_or_default();
            self.last.insert(address.to_string(), rows);
        }
        Ok(())
    }

    /// The transaction, where the batch may use it: planned ahead, the batch holds everything
    /// it may read (see [`Basis::Ahead`]) and writes nothing until it is written for real.
    fn store(&mut self) -> Result<&mut T, StoreError> {
        if self.ahead {
            Err(StoreError::NotAhead(
                "the batch needs a read or write beyond what it loaded".into(),
            ))
        } else {
            Ok(&mut *self.inner)
        }
    }

    async fn flush_rows(&mut self) -> Result<(), StoreError> {
        if !self.pending_rows.is_empty() {
            let rows = std::mem::take(&mut self.pending_rows);
            let last_update = self.last_update;
            self.store()?.insert_rows(&rows, last_update).await?;
        }
        Ok(())
    }
}

/// A batch's writes, buffered until one flush.
#[derive(Debug)]
struct Writes {
    rows: Vec<HistoryRow>,
    last_update: Timestamp,
    /// Lots the store lacks, the lots it holds with a new remainder, and those it must drop.
    created: Vec<Lot>,
    changed: Vec<Lot>,
    deletes: Vec<Lot>,
    records: Vec<MessageRecord>,
    progress: Option<IngestProgress>,
}

impl Default for Writes {
    fn default() -> Writes {
        Writes {
            rows: Vec::new(),
            last_update: Timestamp::UNIX_EPOCH,
            created: Vec::new(),
            changed: Vec::new(),
            deletes: Vec::new(),
            records: Vec::new(),
            progress: None,
        }
    }
}

impl Writes {
    async fn write<T: LedgerTx>(&self, tx: &mut T) -> Result<(), StoreError> {
        if !self.rows.is_empty() {
            tx.insert_rows(&self.rows, self.last_update).await?;
        }
        tx.write_lots(&self.created, &self.changed, &self.deletes)
            .await?;
        tx.record_messages(&self.records).await?;
        if let Some(progress) = &self.progress {
            tx.set_ingest_progress(progress).await?;
        }
        Ok(())
    }
}

/// A batch planned, not yet written: its outcomes and writes, and what it leaves for the next
/// batch (the state of its addresses, the statuses and history keys of its hashes).
#[derive(Debug)]
pub struct Planned {
    outcomes: Vec<Outcome>,
    writes: Writes,
    /// The stamps found at load (planned ahead: the snapshot's).
    stamps: Stamps,
    /// Planned ahead on a store with address versions: what it read.
    grounds: Option<Grounds>,
    states: HashMap<String, AddressState>,
    statuses: HashMap<String, Option<MessageStatus>>,
    row_keys: HashSet<(String, i32)>,
}

impl Planned {
    /// What this batch, planned ahead, must find when its transaction begins; `None` if its
    /// plan cannot hold. `prior`: the batch that was in flight when it was planned, with what
    /// that one expected and the stamps its commit left (`None`: it did not commit its own
    /// plan, so nothing carried over from it can be trusted).
    fn expect(&mut self, prior: Option<(&Expect, Option<&Stamps>)>) -> Option<Expect> {
        match (&self.stamps, self.grounds.take()) {
            (Stamps::Store(snapshot), _) => match prior {
                None => Some(Expect::Generation(*snapshot)),
                // Planned on the generation the prior batch started from or left, and that
                // batch committed its own plan: the store must be at the generation it left.
                Some((started, Some(Stamps::Store(after)))) => {
                    (started.generation() == Some(*snapshot) || snapshot == after)
                        .then_some(Expect::Generation(*after))
                }
                Some(_) => None,
            },
            (Stamps::Addresses(_), Some(mut grounds)) => {
                match prior {
                    None => {}
                    Some((Expect::Exact(before), Some(Stamps::Addresses(after)))) => {
                        for a in &grounds.from_prior {
                            let version = after.get(a).or_else(|| before.versions.get(a));
                            if let Some(v) = version {
                                grounds.versions.insert(a.clone(), *v);
                            }
                        }
                    }
                    Some(_) => return None,
                }
                Some(Expect::Exact(grounds))
            }
            _ => None,
        }
    }
}

impl<'t, T: LedgerTx> BatchTx<'t, T> {
    /// Everything the batch buffered, and the state of every address it holds completely;
    /// with the transaction, for the caller to write them on.
    fn finish(
        self,
        outcomes: Vec<Outcome>,
        progress: Option<IngestProgress>,
    ) -> (&'t mut T, Planned) {
        let mut created = Vec::new();
        let mut changed = Vec::new();
        let mut deletes = Vec::new();
        for ((address, key), &fresh) in &self.dirty_lots {
            match self.lots.get(address).and_then(|m| m.get(key)) {
                Some(lot) if fresh => created.push(lot.clone()),
                Some(lot) => changed.push(lot.clone()),
                // Created and drained within the batch: nothing to write.
                None if fresh => {}
                None => deletes.push(Lot {
                    address: address.clone(),
                    message_timestamp: key.0,
                    credit_ref: key.1.clone(),
                    credit_index: key.2,
                    amount_remaining: Credits::ZERO,
                    expiration_date: None,
                }),
            }
        }
        // The last record of a hash wins (a rejection later processed, …).
        let mut seen = HashSet::new();
        let mut records: Vec<MessageRecord> = Vec::new();
        for m in self.pending_messages.into_iter().rev() {
            if seen.insert(m.item_hash.clone()) {
                records.push(m);
            }
        }
        records.reverse();
        // An address has both maps only when it was loaded whole (lots and last positions).
        let mut last = self.last;
        let states = self
            .lots
            .into_iter()
            .filter_map(|(address, lots)| {
                let rows = last.remove(&address)?;
                Some((address, (lots, rows)))
            })
            .collect();
        let writes = Writes {
            rows: self.pending_rows,
            last_update: self.last_update,
            created,
            changed,
            deletes,
            records,
            progress,
        };
        let planned = Planned {
            outcomes,
            writes,
            stamps: self.stamps,
            grounds: self.grounds,
            states,
            statuses: self.statuses,
            row_keys: self.row_keys,
        };
        (self.inner, planned)
    }

    /// Writes everything buffered and hands back the state of every address the batch holds
    /// completely, with the stamps found at load (for a [`BatchCache`]). The caller commits.
    pub async fn flush(self) -> Result<(Stamps, HashMap<String, AddressState>), StoreError> {
        let (inner, planned) = self.finish(Vec::new(), None);
        planned.writes.write(inner).await?;
        Ok((planned.stamps, planned.states))
    }
}

fn lot_key(lot: &Lot) -> LotKey {
    (
        lot.message_timestamp,
        lot.credit_ref.clone(),
        lot.credit_index,
    )
}

fn valid_at(lot: &Lot, at: Timestamp) -> bool {
    lot.expiration_date.is_none_or(|e| e > at)
}

impl<T: LedgerTx> LedgerTx for BatchTx<'_, T> {
    async fn message_status(
        &mut self,
        item_hash: &str,
    ) -> Result<Option<MessageStatus>, StoreError> {
        if let Some(s) = self.statuses.get(item_hash) {
            return Ok(s.clone());
        }
        let s = self.store()?.message_status(item_hash).await?;
        self.statuses.insert(item_hash.to_string(), s.clone());
        Ok(s)
    }

    async fn record_message(&mut self, record: &MessageRecord) -> Result<(), StoreError> {
        self.statuses
            .insert(record.item_hash.clone(), Some(record.status.clone()));
        self.pending_messages.push(record.clone());
        Ok(())
    }

    async fn lock(&mut self, item_hash: &str, addresses: &[&str]) -> Result<(), StoreError> {
        let covered = (item_hash.is_empty() || self.locked_hashes.contains(item_hash))
            && addresses.iter().all(|a| self.locked_addresses.contains(*a));
        if covered {
            Ok(())
        } else {
            self.store()?.lock(item_hash, addresses).await
        }
    }

    async fn lock_many(
        &mut self,
        item_hashes: &[&str],
        addresses: &[&str],
    ) -> Result<(), StoreError> {
        self.store()?.lock_many(item_hashes, addresses).await
    }

    async fn balance(&mut self, address: &str, at: Timestamp) -> Result<Credits, StoreError> {
        self.ensure_lots(address).await?;
        let mut sum: i64 = 0;
        for lot in self.lots.get(address).into_iter().flat_map(|m| m.values()) {
            if valid_at(lot, at) {
                sum = sum
                    .checked_add(lot.amount_remaining.0)
                    .ok_or_else(|| StoreError::Overflow(format!("balance of {address}")))?;
            }
        }
        Ok(Credits(sum.max(0)))
    }

    async fn drainable_lots(
        &mut self,
        demand: &[(&str, i128)],
        policy: Policy,
        ts: Timestamp,
    ) -> Result<Vec<Lot>, StoreError> {
        let mut out = Vec::new();
        for (address, need) in demand {
            self.ensure_lots(address).await?;
            let lots = self.lots.get(*address).into_iter().flat_map(|m| m.values());
            out.extend(covering(lots, policy, *need, ts).into_iter().cloned());
        }
        Ok(out)
    }

    async fn insert_rows(
        &mut self,
        rows: &[HistoryRow],
        last_update: Timestamp,
    ) -> Result<u64, StoreError> {
        self.last_update = last_update;
        let mut inserted = 0;
        for row in rows {
            if self
                .row_keys
                .insert((row.credit_ref.clone(), row.credit_index))
            {
                self.ensure_last(&row.address).await?;
                if let Some(last) = self.last.get_mut(&row.address) {
                    last.note(row);
                }
                self.pending_rows.push(row.clone());
                inserted += 1;
            }
        }
        Ok(inserted)
    }

    async fn insert_lots(&mut self, lots: &[Lot]) -> Result<(), StoreError> {
        for lot in lots {
            self.ensure_lots(&lot.address).await?;
            let key = lot_key(lot);
            if let Some(map) = self.lots.get_mut(&lot.address)
                && !map.contains_key(&key)
            {
                map.insert(key.clone(), lot.clone());
                // Absent from the exact map and not written before: the store lacks it.
                self.dirty_lots
                    .entry((lot.address.clone(), key))
                    .or_insert(true);
            }
        }
        Ok(())
    }

    async fn update_lots(&mut self, lots: &[Lot]) -> Result<(), StoreError> {
        for lot in lots {
            self.ensure_lots(&lot.address).await?;
            let key = lot_key(lot);
            if let Some(map) = self.lots.get_mut(&lot.address)
                && let Some(existing) = map.get_mut(&key)
            {
                if lot.amount_remaining.is_positive() {
                    existing.amount_remaining = lot.amount_remaining;
                } else {
                    map.remove(&key);
                }
                self.dirty_lots
                    .entry((lot.address.clone(), key))
                    .or_insert(false);
            }
        }
        Ok(())
    }

    async fn rows_after(
        &mut self,
        address: &str,
        ts: Timestamp,
        credit_ref: &str,
    ) -> Result<(bool, bool), StoreError> {
        self.ensure_last(address).await?;
        let after = |p: &Option<Position>| {
            p.as_ref()
                .is_some_and(|(t, r)| (*t, r.as_str()) > (ts, credit_ref))
        };
        Ok(self
            .last
            .get(address)
            .map_or((false, false), |l| (after(&l.any), after(&l.debit))))
    }

    async fn address_history(&mut self, address: &str) -> Result<Vec<HistoryRow>, StoreError> {
        self.flush_rows().await?;
        self.store()?.address_history(address).await
    }

    async fn replace_lots(&mut self, address: &str, lots: &[Lot]) -> Result<(), StoreError> {
        self.ensure_lots(address).await?;
        let old = self.lots.remove(address).unwrap_or_default();
        for key in old.into_keys() {
            self.dirty_lots
                .entry((address.to_string(), key))
                .or_insert(false);
        }
        let mut map = BTreeMap::new();
        for lot in lots {
            let key = lot_key(lot);
            self.dirty_lots
                .entry((address.to_string(), key.clone()))
                .or_insert(true);
            map.insert(key, lot.clone());
        }
        self.lots.insert(address.to_string(), map);
        Ok(())
    }

    async fn load_lots(&mut self, addresses: &[&str]) -> Result<Vec<Lot>, StoreError> {
        self.store()?.load_lots(addresses).await
    }

    async fn last_rows(
        &mut self,
        addresses: &[&str],
    ) -> Result<Vec<(String, LastRows)>, StoreError> {
        self.store()?.last_rows(addresses).await
    }

    async fn statuses_and_row_keys(
        &mut self,
        item_hashes: &[&str],
    ) -> Result<crate::StatusesAndRowKeys, StoreError> {
        self.store()?.statuses_and_row_keys(item_hashes).await
    }

    async fn write_lots(
        &mut self,
        created: &[Lot],
        changed: &[Lot],
        deletes: &[Lot],
    ) -> Result<(), StoreError> {
        self.store()?.write_lots(created, changed, deletes).await
    }

    async fn record_messages(&mut self, records: &[MessageRecord]) -> Result<(), StoreError> {
        self.store()?.record_messages(records).await
    }

    async fn replay_histories(
        &mut self,
        addresses: &[&str],
    ) -> Result<Vec<HistoryRow>, StoreError> {
        self.flush_rows().await?;
        self.store()?.replay_histories(addresses).await
    }

    async fn delete_lots_of(&mut self, addresses: &[&str]) -> Result<(), StoreError> {
        for address in addresses {
            self.replace_lots(address, &[]).await?;
        }
        Ok(())
    }

    async fn set_ingest_progress(&mut self, progress: &IngestProgress) -> Result<(), StoreError> {
        self.store()?.set_ingest_progress(progress).await
    }
}

/// Plans a batch on `tx` from `basis`: every item through the writer over [`BatchTx`], its
/// writes buffered (with `progress`) and nothing written.
async fn plan<'t, T: Commit>(
    tx: &'t mut T,
    items: &[BatchItem],
    rules: &Rules,
    now: Timestamp,
    progress: Option<&IngestProgress>,
    basis: Basis<'_>,
) -> Result<(&'t mut T, Planned), StoreError> {
    let (mut batch, decisions) = BatchTx::load(tx, items, rules, basis).await?;
    let mut outcomes = Vec::with_capacity(items.len());
    for (item, decision) in items.iter().zip(decisions) {
        outcomes.push(match (item, decision) {
            (BatchItem::Apply(post), Some(decision)) => {
                writer::apply_classified(&mut batch, post, decision, now).await?
            }
            (BatchItem::Apply(post), None) => writer::apply(&mut batch, post, rules, now).await?,
            (
                BatchItem::Reject {
                    item_hash,
                    error,
                    envelope,
                },
                _,
            ) => writer::reject(&mut batch, item_hash, error, envelope.clone(), now).await?,
            (BatchItem::Ignore, _) => Outcome::Ignored(IgnoreReason::NotCreditType),
        });
    }
    Ok(batch.finish(outcomes, progress.cloned()))
}

/// Runs a batch on an open write transaction holding its locks: planned, then written. The
/// caller commits, or on error rolls back and replays one message at a time.
async fn apply_batch<T: Commit>(
    tx: &mut T,
    items: &[BatchItem],
    rules: &Rules,
    now: Timestamp,
    progress: Option<&IngestProgress>,
    cache: Option<&std::sync::Mutex<BatchCache>>,
) -> Result<Planned, StoreError> {
    let (tx, planned) = plan(tx, items, rules, now, progress, Basis::Locked(cache)).await?;
    planned.writes.write(tx).await?;
    Ok(planned)
}

/// A write transaction that can be committed (a dropped one rolls back).
pub trait Commit: LedgerTx + Sized {
    /// Commits, and returns the stamps the commit left: [`Stamps::Store`] with the generation
    /// it advanced to, or [`Stamps::Addresses`] with the new version of every address it wrote.
    fn commit_stamped(self)
    -> impl std::future::Future<Output = Result<Stamps, StoreError>> + Send;

    /// Commits.
    fn commit(self) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        async move { self.commit_stamped().await.map(drop) }
    }

    /// The stamps of `addresses` now, asked once this transaction holds their locks;
    /// [`Stamps::None`] where no [`BatchCache`] can be used.
    fn stamps(
        &mut self,
        addresses: &[&str],
    ) -> impl std::future::Future<Output = Result<Stamps, StoreError>> + Send {
        let _ = addresses;
        async { Ok(Stamps::None) }
    }
}

/// [`crate::Store::apply_batch_with_progress`] for a backend: the batch in one transaction
/// opened by `open`; if it fails, the batch is replayed one transaction per message and the
/// progress recorded in a transaction of its own.
pub async fn apply_batch_committed<S, T, F, Fut>(
    store: &S,
    open: F,
    items: &[BatchItem],
    rules: &Rules,
    now: Timestamp,
    progress: Option<&IngestProgress>,
    cache: Option<&std::sync::Mutex<BatchCache>>,
) -> Result<Vec<Outcome>, StoreError>
where
    S: crate::Store,
    T: Commit,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut tx = open().await?;
    match apply_batch(&mut tx, items, rules, now, progress, cache).await {
        Ok(planned) => {
            let after = tx.commit_stamped().await?;
            if let Some(cache) = cache {
                BatchCache::locked(cache).put(&planned.stamps, &after, planned.states);
            }
            Ok(planned.outcomes)
        }
        Err(e) => {
            drop(tx);
            tracing::warn!(error = %e, "batch failed; applying its messages one by one");
            let outcomes = crate::apply_one_by_one(store, items, rules, now).await?;
            if let Some(progress) = progress {
                let mut tx = open().await?;
                tx.set_ingest_progress(progress).await?;
                tx.commit().await?;
            }
            Ok(outcomes)
        }
    }
}

/// How plans made ahead ended ([`apply_batches_ahead`]), counted per store.
#[derive(Debug, Default)]
pub struct AheadCounters {
    /// Plans made on a snapshot (whatever became of them).
    pub planned: std::sync::atomic::AtomicU64,
    /// Plans written as made.
    pub held: std::sync::atomic::AtomicU64,
    /// Plans dropped because their basis changed: another writer wrote, or the batch before
    /// did not commit its own plan. The batch is planned again or applied the usual way.
    pub stale: std::sync::atomic::AtomicU64,
    /// Batches applied the usual way without a plan (they read beyond what they load, their
    /// planning failed, or the store has no snapshots).
    pub not_ahead: std::sync::atomic::AtomicU64,
    /// Plans whose writing failed (the batch is applied the usual way, which reports any
    /// error).
    pub failed: std::sync::atomic::AtomicU64,
}

impl AheadCounters {
    /// How the plans have ended so far: `(held, stale, not_ahead, failed)`.
    pub fn ended(&self) -> (u64, u64, u64, u64) {
        let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
        (
            load(&self.held),
            load(&self.stale),
            load(&self.not_ahead),
            load(&self.failed),
        )
    }

    fn count(
        counters: Option<&AheadCounters>,
        which: fn(&AheadCounters) -> &std::sync::atomic::AtomicU64,
    ) {
        if let Some(counters) = counters {
            which(counters).fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// A batch written on another task while the next one is planned.
struct InFlight {
    job: BatchJob,
    /// What it planned (its writes moved to the writing task).
    planned: Planned,
    /// What its transaction must find for the plan to hold.
    expected: Expect,
    writing: tokio::task::JoinHandle<Written>,
}

/// How a batch's planned writes ended.
enum Written {
    /// Written and committed; the stamps the commit left.
    Committed(Stamps),
    /// Not written: the store was not as the plan expected.
    Stale,
    /// Not written (rolled back).
    Failed(StoreError),
}

/// Writes a batch's planned writes on `tx` and commits, if the store is as `expected` (see
/// [`Expect`]); otherwise rolls back.
async fn write_planned<T: Commit>(mut tx: T, writes: Writes, expected: Expect) -> Written {
    match expected.holds(&mut tx).await {
        Ok(true) => {}
        Ok(false) => return Written::Stale,
        Err(e) => return Written::Failed(e),
    }
    if let Err(e) = writes.write(&mut tx).await {
        return Written::Failed(e);
    }
    match tx.commit_stamped().await {
        Ok(after) => Written::Committed(after),
        Err(e) => Written::Failed(e),
    }
}

fn joined(result: Result<Written, tokio::task::JoinError>) -> Written {
    result.unwrap_or_else(|e| Written::Failed(StoreError::Database(Box::new(e))))
}

impl InFlight {
    /// The batch's outcomes once it is committed, and the stamps its commit left if it
    /// committed its own plan (`None`: it was applied the usual way instead, after its plan
    /// turned out stale or its writing failed). `written`: its writing task's end, if already
    /// known.
    async fn settle<S: crate::transactional::Transactional>(
        self,
        store: &S,
        rules: &Rules,
        written: Option<Written>,
    ) -> Result<(Vec<Outcome>, Option<Stamps>), StoreError> {
        let InFlight {
            job,
            planned,
            expected,
            writing,
        } = self;
        let written = match written {
            Some(written) => written,
            None => joined(writing.await),
        };
        let cache = store.batch_cache();
        let counters = store.ahead_counters();
        match written {
            Written::Committed(after) => {
                AheadCounters::count(counters, |c| &c.held);
                if let Some(cache) = cache {
                    BatchCache::locked(cache).put(&expected.stamps(), &after, planned.states);
                }
                Ok((planned.outcomes, Some(after)))
            }
            Written::Stale | Written::Failed(_) => {
                if let Written::Failed(e) = &written {
                    AheadCounters::count(counters, |c| &c.failed);
                    tracing::warn!(error = %e, "writing a batch planned ahead failed; applying it again");
                } else {
                    AheadCounters::count(counters, |c| &c.stale);
                    tracing::debug!(
                        "a batch planned ahead was stale (another writer); applying it again"
                    );
                }
                if let Some(cache) = cache {
                    BatchCache::locked(cache).clear();
                }
                Ok((apply_usual(store, rules, &job).await?, None))
            }
        }
    }
}

/// Plans `job` on a fresh snapshot of the store, after `prior` (the batch in flight, if any);
/// `None` if the store has no snapshots or the batch cannot be planned ahead (it reads beyond
/// what it loads, or planning failed: it is then applied the usual way, which reports any
/// error as a batch always did).
async fn plan_ahead<S: crate::transactional::Transactional>(
    store: &S,
    rules: &Rules,
    job: &BatchJob,
    prior: Option<&mut InFlight>,
) -> Option<Planned> {
    let mut snapshot = match store.snapshot().await {
        Ok(Some(snapshot)) => snapshot,
        Ok(None) => return None,
        Err(e) => {
            tracing::debug!(error = %e, "no snapshot to plan a batch ahead on");
            return None;
        }
    };
    let cache_at = prior.as_ref().and_then(|p| p.expected.generation());
    let basis = Basis::Ahead {
        cache: store.batch_cache(),
        cache_at,
        prior: prior.map(|p| &mut p.planned),
    };
    let progress = job.progress.as_ref();
    match plan(&mut snapshot, &job.items, rules, job.now, progress, basis).await {
        Ok((_, planned)) => {
            AheadCounters::count(store.ahead_counters(), |c| &c.planned);
            Some(planned)
        }
        Err(e) => {
            tracing::debug!(error = %e, "batch not planned ahead");
            None
        }
    }
}

/// A batch applied the usual way: locked, loaded, planned and written in one transaction.
async fn apply_usual<S: crate::transactional::Transactional>(
    store: &S,
    rules: &Rules,
    job: &BatchJob,
) -> Result<Vec<Outcome>, StoreError> {
    let progress = job.progress.as_ref();
    let cache = store.batch_cache();
    apply_batch_committed(
        store,
        || store.write(),
        &job.items,
        rules,
        job.now,
        progress,
        cache,
    )
    .await
}

/// What the driver does next.
enum Next {
    Job(Option<BatchJob>),
    Written(Written),
}

/// [`crate::Store::apply_batches`] for a backend with read snapshots
/// ([`crate::transactional::Transactional::snapshot`]): each batch is planned on a snapshot
/// while the batch before it is written and committed on another task (see
/// [`Basis::Ahead`]). A plan holds only if the batch before committed its own plan and its
/// transaction finds the store as the plan read it ([`Expect`]: no other write since, by the
/// store's generation; or its addresses, messages and history rows unchanged, under its
/// locks); otherwise the batch is applied the usual way ([`apply_batch_committed`]). Batches commit one after the other, in order, so outcomes and
/// writes are those of [`crate::Store::apply_batch_with_progress`] called for each in turn.
pub async fn apply_batches_ahead<S: crate::transactional::Transactional>(
    store: &S,
    rules: &Rules,
    mut jobs: tokio::sync::mpsc::Receiver<BatchJob>,
    done: tokio::sync::mpsc::Sender<Result<Vec<Outcome>, StoreError>>,
) {
    let mut in_flight: Option<InFlight> = None;
    loop {
        // A batch in flight is settled as soon as it is written, if no batch comes first.
        let next = match in_flight.as_mut() {
            None => Next::Job(jobs.recv().await),
            // A batch waiting is planned first, to keep the writer busy.
            Some(flight) => tokio::select! {
                biased;
                job = jobs.recv() => Next::Job(job),
                written = &mut flight.writing => Next::Written(joined(written)),
            },
        };
        let job = match next {
            Next::Written(written) => {
                if let Some(flight) = in_flight.take() {
                    let settled = flight.settle(store, rules, Some(written)).await;
                    if !report(&done, settled.map(|(outcomes, _)| outcomes)).await {
                        return;
                    }
                }
                continue;
            }
            Next::Job(None) => break,
            Next::Job(Some(job)) => job,
        };
        let mut ahead = plan_ahead(store, rules, &job, in_flight.as_mut()).await;
        // The batch before is settled before this one writes; what this one must then find
        // depends on how that one ended (see `Planned::expect`).
        let mut expected = match in_flight.take() {
            None => ahead.as_mut().and_then(|planned| planned.expect(None)),
            Some(flight) => {
                let started = flight.expected.clone();
                match flight.settle(store, rules, None).await {
                    Ok((outcomes, after)) => {
                        if !report(&done, Ok(outcomes)).await {
                            return;
                        }
                        ahead
                            .as_mut()
                            .and_then(|planned| planned.expect(Some((&started, after.as_ref()))))
                    }
                    Err(e) => {
                        report(&done, Err(e)).await;
                        return;
                    }
                }
            }
        };
        let mut planned = ahead;
        if planned.is_some() && expected.is_none() {
            // Stale: planned again on a snapshot taken now that nothing is in flight. (A batch
            // that could not be planned ahead at all is not tried twice.)
            AheadCounters::count(store.ahead_counters(), |c| &c.stale);
            planned = plan_ahead(store, rules, &job, None).await;
            expected = planned.as_mut().and_then(|planned| planned.expect(None));
        }
        let (Some(mut planned), Some(expected)) = (planned, expected) else {
            AheadCounters::count(store.ahead_counters(), |c| &c.not_ahead);
            if !report(&done, apply_usual(store, rules, &job).await).await {
                return;
            }
            continue;
        };
        let tx = match store.write().await {
            Ok(tx) => tx,
            Err(e) => {
                report(&done, Err(e)).await;
                return;
            }
        };
        let writes = std::mem::take(&mut planned.writes);
        let writing = tokio::spawn(write_planned(tx, writes, expected.clone()));
        in_flight = Some(InFlight {
            job,
            planned,
            expected,
            writing,
        });
    }
    if let Some(flight) = in_flight.take() {
        let settled = flight.settle(store, rules, None).await;
        report(&done, settled.map(|(outcomes, _)| outcomes)).await;
    }
}

/// Sends a batch's result; whether to go on (it was outcomes, and someone still listens).
pub(crate) async fn report(
    done: &tokio::sync::mpsc::Sender<Result<Vec<Outcome>, StoreError>>,
    result: Result<Vec<Outcome>, StoreError>,
) -> bool {
    let failed = result.is_err();
    done.send(result).await.is_ok() && !failed
}
