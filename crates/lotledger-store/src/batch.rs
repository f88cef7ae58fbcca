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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use lotledger_core::{
    Credits, Decision, HistoryRow, IgnoreReason, Lot, Rules, Timestamp, classify,
};

use crate::{
    BatchItem, IngestProgress, LedgerTx, MessageRecord, MessageStatus, Outcome, StoreError, writer,
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
    dirty_lots: BTreeSet<(String, LotKey)>,
    pending_messages: Vec<MessageRecord>,
    /// The stamps the store showed once the batch's addresses were locked.
    stamps: Stamps,
}

impl<'t, T: Commit> BatchTx<'t, T> {
    /// Locks and loads everything the batch's messages touch; the lots and last positions of
    /// addresses the `cache` holds exact are not read again. Also returns each item's
    /// classification (`None` for items that are not posts), made once here.
    pub async fn load(
        inner: &'t mut T,
        items: &[BatchItem],
        rules: &Rules,
        cache: Option<&std::sync::Mutex<BatchCache>>,
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
        inner.lock_many(&hashes, &address_refs).await?;
        let (stamps, cached) = match cache {
            Some(cache) => {
                let stamps = inner.stamps(&address_refs).await?;
                let cached = BatchCache::locked(cache).take(&stamps, &addresses);
                (stamps, cached)
            }
            None => (Stamps::None, HashMap::new()),
        };
        let uncached: Vec<&str> = address_refs
            .iter()
            .copied()
            .filter(|a| !cached.contains_key(*a))
            .collect();
        let mut statuses: HashMap<String, Option<MessageStatus>> =
            hashes.iter().map(|h| ((*h).to_string(), None)).collect();
        for (hash, status) in inner.message_statuses(&hashes).await? {
            statuses.insert(hash, Some(status));
        }
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
        let row_keys = inner
            .existing_row_keys(&hashes)
            .await?
            .into_iter()
            .collect();
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
            dirty_lots: BTreeSet::new(),
            pending_messages: Vec::new(),
            stamps,
        };
        Ok((batch, decisions))
    }
}

impl<T: LedgerTx> BatchTx<'_, T> {
    async fn ensure_lots(&mut self, address: &str) -> Result<(), StoreError> {
        if !self.lots.contains_key(address) {
            let mut map = BTreeMap::new();
            for lot in self.inner.load_lots(&[address]).await? {
                map.insert(lot_key(&lot), lot);
            }
            self.lots.insert(address.to_string(), map);
        }
        Ok(())
    }

    async fn ensure_last(&mut self, address: &str) -> Result<(), StoreError> {
        if !self.last.contains_key(address) {
            let found = self.inner.last_rows(&[address]).await?;
            let rows = found.into_iter().next().map(|(_, r)| r).unwrap_or_default();
            self.last.insert(address.to_string(), rows);
        }
        Ok(())
    }

    async fn flush_rows(&mut self) -> Result<(), StoreError> {
        if !self.pending_rows.is_empty() {
            let rows = std::mem::take(&mut self.pending_rows);
            self.inner.insert_rows(&rows, self.last_update).await?;
        }
        Ok(())
    }

    /// Writes everything buffered and hands back the state of every address the batch holds
    /// completely, with the stamps found at load (for a [`BatchCache`]). The caller commits.
    pub async fn flush(mut self) -> Result<(Stamps, HashMap<String, AddressState>), StoreError> {
        self.flush_rows().await?;
        let mut upserts = Vec::new();
        let mut deletes = Vec::new();
        for (address, key) in &self.dirty_lots {
            match self.lots.get(address).and_then(|m| m.get(key)) {
                Some(lot) => upserts.push(lot.clone()),
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
        self.inner.write_lots(&upserts, &deletes).await?;
        // The last record of a hash wins (a rejection later processed, …).
        let mut seen = HashSet::new();
        let mut records: Vec<MessageRecord> = Vec::new();
        for m in self.pending_messages.iter().rev() {
            if seen.insert(m.item_hash.as_str()) {
                records.push(m.clone());
            }
        }
        records.reverse();
        self.inner.record_messages(&records).await?;
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
        Ok((self.stamps, states))
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
        let s = self.inner.message_status(item_hash).await?;
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
            self.inner.lock(item_hash, addresses).await
        }
    }

    async fn lock_many(
        &mut self,
        item_hashes: &[&str],
        addresses: &[&str],
    ) -> Result<(), StoreError> {
        self.inner.lock_many(item_hashes, addresses).await
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
        ts: Timestamp,
    ) -> Result<Vec<Lot>, StoreError> {
        let mut out = Vec::new();
        for (address, need) in demand {
            self.ensure_lots(address).await?;
            let mut covered: i128 = 0;
            for lot in self.lots.get(*address).into_iter().flat_map(|m| m.values()) {
                if covered >= *need {
                    break;
                }
                if lot.message_timestamp <= ts
                    && valid_at(lot, ts)
                    && lot.amount_remaining.is_positive()
                {
                    covered += i128::from(lot.amount_remaining.0);
                    out.push(lot.clone());
                }
            }
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
                self.dirty_lots.insert((lot.address.clone(), key));
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
                self.dirty_lots.insert((lot.address.clone(), key));
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
        self.inner.address_history(address).await
    }

    async fn replace_lots(&mut self, address: &str, lots: &[Lot]) -> Result<(), StoreError> {
        self.ensure_lots(address).await?;
        let old = self.lots.remove(address).unwrap_or_default();
        for key in old.into_keys() {
            self.dirty_lots.insert((address.to_string(), key));
        }
        let mut map = BTreeMap::new();
        for lot in lots {
            let key = lot_key(lot);
            self.dirty_lots.insert((address.to_string(), key.clone()));
            map.insert(key, lot.clone());
        }
        self.lots.insert(address.to_string(), map);
        Ok(())
    }

    async fn load_lots(&mut self, addresses: &[&str]) -> Result<Vec<Lot>, StoreError> {
        self.inner.load_lots(addresses).await
    }

    async fn last_rows(
        &mut self,
        addresses: &[&str],
    ) -> Result<Vec<(String, LastRows)>, StoreError> {
        self.inner.last_rows(addresses).await
    }

    async fn message_statuses(
        &mut self,
        item_hashes: &[&str],
    ) -> Result<Vec<(String, MessageStatus)>, StoreError> {
        self.inner.message_statuses(item_hashes).await
    }

    async fn existing_row_keys(
        &mut self,
        credit_refs: &[&str],
    ) -> Result<Vec<(String, i32)>, StoreError> {
        self.inner.existing_row_keys(credit_refs).await
    }

    async fn write_lots(&mut self, upserts: &[Lot], deletes: &[Lot]) -> Result<(), StoreError> {
        self.inner.write_lots(upserts, deletes).await
    }

    async fn record_messages(&mut self, records: &[MessageRecord]) -> Result<(), StoreError> {
        self.inner.record_messages(records).await
    }

    async fn replay_histories(
        &mut self,
        addresses: &[&str],
    ) -> Result<Vec<HistoryRow>, StoreError> {
        self.flush_rows().await?;
        self.inner.replay_histories(addresses).await
    }

    async fn delete_lots_of(&mut self, addresses: &[&str]) -> Result<(), StoreError> {
        for address in addresses {
            self.replace_lots(address, &[]).await?;
        }
        Ok(())
    }

    async fn set_ingest_progress(&mut self, progress: &IngestProgress) -> Result<(), StoreError> {
        self.inner.set_ingest_progress(progress).await
    }
}

/// Runs a batch on an open transaction: every item through the writer over [`BatchTx`], then
/// one flush; with a [`BatchCache`], the states it holds exact are not read again. Returns the
/// outcomes, and the stamps and states to put back into the cache once committed. The caller
/// commits, or on error rolls back and replays one message at a time.
async fn apply_batch<T: Commit>(
    tx: &mut T,
    items: &[BatchItem],
    rules: &Rules,
    now: Timestamp,
    progress: Option<&IngestProgress>,
    cache: Option<&std::sync::Mutex<BatchCache>>,
) -> Result<(Vec<Outcome>, Stamps, HashMap<String, AddressState>), StoreError> {
    let (mut batch, decisions) = BatchTx::load(tx, items, rules, cache).await?;
    let mut outcomes = Vec::with_capacity(items.len());
    for (item, decision) in items.iter().zip(decisions) {
        outcomes.push(match (item, decision) {
            (BatchItem::Apply(post), Some(decision)) => {
                writer::apply_classified(&mut batch, post, decision, now).await?
            }
            (BatchItem::Apply(post), None) => writer::apply(&mut batch, post, rules, now).await?,
            (BatchItem::Reject { item_hash, error }, _) => {
                writer::reject(&mut batch, item_hash, error, now).await?
            }
            (BatchItem::Ignore, _) => Outcome::Ignored(IgnoreReason::NotCreditType),
        });
    }
    let (stamps, states) = batch.flush().await?;
    if let Some(progress) = progress {
        tx.set_ingest_progress(progress).await?;
    }
    Ok((outcomes, stamps, states))
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
        Ok((outcomes, before, states)) => {
            let after = tx.commit_stamped().await?;
            if let Some(cache) = cache {
                BatchCache::locked(cache).put(&before, &after, states);
            }
            Ok(outcomes)
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
