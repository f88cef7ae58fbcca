//! Whole-ledger maintenance on top of [`Store`]: repair (rebuild every address's lots from
//! history, resumable), verify (compare without writing) and the integrity checks of the ids
//! that tie the tables together.

use std::collections::HashMap;

use lotledger_core::{HistoryRow, Lot, replay};

use crate::{AddressRows, Dangling, Drift, IdCheck, Store, StoreError};

/// Addresses rebuilt or checked per transaction, unless the store asks for another
/// [`Store::maintenance_batch`].
pub const BATCH_ADDRESSES: usize = 500;

/// Where maintenance closes a batch: at this many addresses or history rows, whichever comes
/// first (a batch holds at least one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimit {
    pub addresses: usize,
    pub rows: u64,
}

impl Default for BatchLimit {
    fn default() -> BatchLimit {
        BatchLimit {
            addresses: BATCH_ADDRESSES,
            rows: u64::MAX,
        }
    }
}

/// `all` (addresses with their history rows) cut into batches within `limit`.
fn batches(all: &[AddressRows], limit: BatchLimit) -> Vec<Vec<AddressRows>> {
    let mut out = Vec::new();
    let mut batch: Vec<AddressRows> = Vec::new();
    let mut rows = 0u64;
    for (address, n) in all {
        let full = batch.len() >= limit.addresses || rows.saturating_add(*n) > limit.rows;
        if full && !batch.is_empty() {
            out.push(std::mem::take(&mut batch));
            rows = 0;
        }
        batch.push((address.clone(), *n));
        rows = rows.saturating_add(*n);
    }
    if !batch.is_empty() {
        out.push(batch);
    }
    out
}

/// What a repair did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    pub addresses: usize,
    /// The address an interrupted run was resumed after, if any.
    pub resumed_after: Option<String>,
}

/// Rebuilds every address from history by replay, one transaction per batch of addresses in
/// address order. A checkpoint after each batch lets an interrupted run resume where it stopped;
/// `restart` ignores it. `progress(done, total)` is called after each batch.
pub async fn repair<S: Store>(
    store: &S,
    restart: bool,
    mut progress: impl FnMut(usize, usize),
) -> Result<RepairReport, StoreError> {
    let resumed_after = if restart {
        None
    } else {
        store.repair_checkpoint().await?
    };
    let all = store.address_rows().await?;
    let todo: Vec<AddressRows> = match &resumed_after {
        Some(last) => all.into_iter().filter(|(a, _)| a > last).collect(),
        None => all,
    };
    let total = todo.len();
    let mut done = 0;
    for batch in batches(&todo, store.maintenance_batch()) {
        store.rebuild(&batch).await?;
        if let Some((last, _)) = batch.last() {
            store.set_repair_checkpoint(Some(last)).await?;
        }
        done += batch.len();
        progress(done, total);
    }
    store.set_repair_checkpoint(None).await?;
    Ok(RepairReport {
        addresses: total,
        resumed_after,
    })
}

/// Compares the cache with the replay of history for every address; writes nothing.
pub async fn verify<S: Store>(
    store: &S,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<Drift>, StoreError> {
    let all = store.address_rows().await?;
    let total = all.len();
    let mut drifts = Vec::new();
    let mut done = 0;
    for batch in batches(&all, store.maintenance_batch()) {
        drifts.extend(store.verify(&batch).await?);
        done += batch.len();
        progress(done, total);
    }
    Ok(drifts)
}

/// Runs every [`IdCheck`]; returns those that found rows naming nothing. `progress(done,
/// total)` is called after each check.
pub async fn integrity<S: Store>(
    store: &S,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<Dangling>, StoreError> {
    let mut out = Vec::new();
    for (done, check) in IdCheck::ALL.into_iter().enumerate() {
        let rows = store.dangling(check).await?;
        if rows > 0 {
            out.push(Dangling { check, rows });
        }
        progress(done + 1, IdCheck::ALL.len());
    }
    Ok(out)
}

/// The drifts among `addresses`, given all their history rows (sorted by address then replay
/// order) and all their cached lots (any order): cache against replay, address by address.
pub fn drifts(
    addresses: &[String],
    rows: &[HistoryRow],
    lots: Vec<Lot>,
) -> Result<Vec<Drift>, StoreError> {
    let mut cached: HashMap<String, Vec<Lot>> = HashMap::new();
    for lot in lots {
        cached.entry(lot.address.clone()).or_default().push(lot);
    }
    let mut replayed: HashMap<&str, Vec<Lot>> = HashMap::new();
    for group in rows.chunk_by(|a, b| a.address == b.address) {
        if let Some(first) = group.first() {
            replayed.insert(first.address.as_str(), replay(group)?);
        }
    }
    let mut out = Vec::new();
    for address in addresses {
        let have = cached.remove(address).unwrap_or_default();
        let want = replayed.remove(address.as_str()).unwrap_or_default();
        if let Some(drift) = compare(address, have, want) {
            out.push(drift);
        }
    }
    Ok(out)
}

fn compare(address: &str, mut have: Vec<Lot>, want: Vec<Lot>) -> Option<Drift> {
    have.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    (have != want).then(|| Drift {
        address: address.to_string(),
        cached: have,
        replayed: want,
    })
}
