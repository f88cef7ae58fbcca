//! Whole-ledger maintenance on top of [`Store`]: repair (rebuild every address's lots from
//! history, resumable) and verify (compare without writing).

use std::collections::HashMap;

use lotledger_core::{HistoryRow, Lot, replay};

use crate::{Drift, Store, StoreError};

/// Addresses rebuilt or checked per transaction.
pub const BATCH_ADDRESSES: usize = 500;

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
    let all = store.addresses().await?;
    let todo: Vec<String> = match &resumed_after {
        Some(last) => all.into_iter().filter(|a| a > last).collect(),
        None => all,
    };
    let total = todo.len();
    let mut done = 0;
    for batch in todo.chunks(BATCH_ADDRESSES) {
        store.rebuild(batch).await?;
        if let Some(last) = batch.last() {
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
    let all = store.addresses().await?;
    let total = all.len();
    let mut drifts = Vec::new();
    let mut done = 0;
    for batch in all.chunks(BATCH_ADDRESSES) {
        drifts.extend(store.verify(batch).await?);
        done += batch.len();
        progress(done, total);
    }
    Ok(drifts)
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
        let mut have = cached.remove(address).unwrap_or_default();
        have.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        let want = replayed.remove(address.as_str()).unwrap_or_default();
        if have != want {
            out.push(Drift {
                address: address.clone(),
                cached: have,
                replayed: want,
            });
        }
    }
    Ok(out)
}
