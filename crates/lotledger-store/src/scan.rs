//! Verify and rebuild on ids: a batch's history rows and lots read in bulk as interned ids and
//! integers ([`Entry`]), each address replayed by [`lotledger_core::replay_rows`] on borrowed
//! reference texts and compared with its cache by ids. Texts are built only for the addresses
//! that drifted. Each store reads its tables its own way (SQLite: whole-table scans on a
//! connection of its own; PostgreSQL: `= ANY` over the batch's ids) and hands the rows here.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use lotledger_core::{Credits, Lot, ReplayRow, replay_rows};

use crate::maintenance::BatchLimit;
use crate::rows::instant_from_micros;
use crate::{Drift, StoreError};

/// History rows one maintenance batch holds in memory at most (about 60 bytes each, plus the
/// texts of the references they name).
pub const PASS_ROWS: u64 = 2_000_000;

/// The maintenance batches of a store that reads them by ids: up to [`PASS_ROWS`] history rows,
/// any number of addresses.
pub const BATCH: BatchLimit = BatchLimit {
    addresses: usize::MAX,
    rows: PASS_ROWS,
};

/// A batch reads whole tables when it holds at least this fraction (1 / N) of the ledger, and
/// seeks its addresses through the indexes otherwise.
pub const SCAN_FRACTION: u64 = 20;

/// One history row or lot, by ids: instants in µs, `amount` a row's amount or a lot's
/// remainder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Entry {
    pub ts: i64,
    pub ref_id: i64,
    pub index: i32,
    pub amount: i64,
    pub expiry: Option<i64>,
}

/// An entry under the position of its address in the pass.
pub type Slotted = (usize, Entry);

/// Hashes a row id (already well spread) by one multiplication.
#[derive(Default)]
pub struct IdHasher(u64);

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
pub type IdMap<V> = HashMap<i64, V, BuildHasherDefault<IdHasher>>;

/// The position in a pass of each address id (ids are dense row ids: a table, not a hash).
pub struct SlotTable(Vec<usize>);

impl SlotTable {
    /// The table of `ids` (by position; none: an address never interned).
    pub fn new(ids: &[Option<i64>]) -> SlotTable {
        let top = ids.iter().flatten().copied().max().unwrap_or(0);
        let mut slots = vec![usize::MAX; usize::try_from(top).unwrap_or(0).saturating_add(1)];
        for (slot, id) in ids.iter().enumerate() {
            if let Some(place) = id
                .and_then(|id| usize::try_from(id).ok())
                .and_then(|i| slots.get_mut(i))
            {
                *place = slot;
            }
        }
        SlotTable(slots)
    }

    /// The position of `address_id`, if the pass holds it.
    pub fn get(&self, address_id: i64) -> Option<usize> {
        usize::try_from(address_id)
            .ok()
            .and_then(|i| self.0.get(i))
            .copied()
            .filter(|slot| *slot != usize::MAX)
    }
}

/// The rows and lots of a batch of addresses, each under the position of its address.
pub struct Pass<'a> {
    addresses: &'a [String],
    ids: Vec<Option<i64>>,
    rows: Vec<Slotted>,
    lots: Vec<Slotted>,
    refs: IdMap<Option<String>>,
}

/// The threads a pass's replay may use: the machine's cores.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
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

/// The entries of `slot` and after (`entries` sorted by slot).
fn from_slot(entries: &[Slotted], slot: usize) -> &[Slotted] {
    entries
        .get(entries.partition_point(|(s, _)| *s < slot)..)
        .unwrap_or_default()
}

/// The leading entries of `slot`, taken off the front of `entries` (sorted by slot).
fn take_slot<'e>(entries: &mut &'e [Slotted], slot: usize) -> &'e [Slotted] {
    let n = entries.iter().take_while(|(s, _)| *s == slot).count();
    let (mine, rest) = entries.split_at(n);
    *entries = rest;
    mine
}

impl<'a> Pass<'a> {
    /// The pass of `addresses`, whose interned ids are `ids` (by position), with their history
    /// `rows` and `lots` in any order, each under its address's position.
    pub fn new(
        addresses: &'a [String],
        ids: Vec<Option<i64>>,
        rows: Vec<Slotted>,
        lots: Vec<Slotted>,
    ) -> Pass<'a> {
        Pass {
            addresses,
            ids,
            rows: by_slot(rows, addresses.len()),
            lots: by_slot(lots, addresses.len()),
            refs: IdMap::default(),
        }
    }

    /// The interned id of the address at `slot`.
    pub fn id(&self, slot: usize) -> Option<i64> {
        self.ids.get(slot).copied().flatten()
    }

    /// Every reference the pass's rows and lots name, each waiting for its text.
    pub fn wanted_refs(&self) -> IdMap<Option<String>> {
        let mut wanted = IdMap::default();
        for (_, e) in self.rows.iter().chain(&self.lots) {
            wanted.entry(e.ref_id).or_insert(None);
        }
        wanted
    }

    /// Takes the texts of [`Pass::wanted_refs`], refusing any left without one.
    pub fn set_refs(&mut self, texts: IdMap<Option<String>>) -> Result<(), StoreError> {
        let missing = texts.values().filter(|t| t.is_none()).count();
        if missing > 0 {
            return Err(StoreError::Corrupt(format!(
                "{missing} references named by history or lots are not interned"
            )));
        }
        self.refs = texts;
        Ok(())
    }

    fn text(&self, ref_id: i64) -> Result<&str, StoreError> {
        self.refs
            .get(&ref_id)
            .and_then(Option::as_deref)
            .ok_or_else(|| StoreError::Corrupt(format!("reference {ref_id} not loaded")))
    }

    /// The addresses at positions `from..to` (with their rows and lots), in order.
    fn range(
        &self,
        from: usize,
        to: usize,
    ) -> impl Iterator<Item = (usize, &[Slotted], &[Slotted])> {
        let (mut rows, mut lots) = (from_slot(&self.rows, from), from_slot(&self.lots, from));
        (from..to.min(self.addresses.len()))
            .map(move |slot| (slot, take_slot(&mut rows, slot), take_slot(&mut lots, slot)))
    }

    /// Every address of the pass whose cache differs from its replay, in order: its position,
    /// its drift and the lots the replay gives. The addresses are checked on up to `threads`
    /// threads, each a contiguous share of them.
    pub fn drifted(&self, threads: usize) -> Result<Vec<(usize, Drift, Vec<Entry>)>, StoreError> {
        let n = self.addresses.len();
        let threads = threads.clamp(1, n.max(1));
        let check_range = |from: usize, to: usize| {
            let mut out = Vec::new();
            for (slot, rows, lots) in self.range(from, to) {
                if let Some((drift, replayed)) = self.check(slot, rows, lots)? {
                    out.push((slot, drift, replayed));
                }
            }
            Ok::<_, StoreError>(out)
        };
        if threads == 1 {
            return check_range(0, n);
        }
        let share = n.div_ceil(threads);
        let parts: Vec<Result<Vec<_>, StoreError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let check_range = &check_range;
                    scope.spawn(move || check_range(t * share, ((t + 1) * share).min(n)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(StoreError::Corrupt("a replay thread panicked".into()))
                    })
                })
                .collect()
        });
        let mut out = Vec::new();
        for part in parts {
            out.extend(part?);
        }
        Ok(out)
    }

    /// The drifts of the pass, in the order of its addresses, checked on all cores.
    pub fn drifts(&self) -> Result<Vec<Drift>, StoreError> {
        Ok(self
            .drifted(cores())?
            .into_iter()
            .map(|(_, drift, _)| drift)
            .collect())
    }

    /// The address at `slot`, given its rows and lots: if its cache differs from the replay of
    /// its rows, the drift and the lots the replay gives (in replay order).
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
                    expiration_date: e.expiry.map(instant_from_micros).transpose()?,
                    message_timestamp: instant_from_micros(e.ts)?,
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
                        expiration_date: e.expiry.map(instant_from_micros).transpose()?,
                        message_timestamp: instant_from_micros(e.ts)?,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ts: i64, ref_id: i64, amount: i64) -> Entry {
        Entry {
            ts,
            ref_id,
            index: 0,
            amount,
            expiry: None,
        }
    }

    /// Five addresses, two of them drifted: any number of threads finds the same drifts in the
    /// same order, with the replay's lots.
    #[test]
    fn drifts_are_the_same_on_any_number_of_threads() {
        let addresses: Vec<String> = (0..5).map(|i| format!("0x{i}")).collect();
        let ids = (1..=5).map(Some).collect();
        let mut rows = Vec::new();
        let mut lots = Vec::new();
        for slot in (0..5).rev() {
            let base = i64::try_from(slot).unwrap() * 10;
            rows.push((slot, entry(1, base + 1, 50)));
            rows.push((slot, entry(2, base + 2, -20)));
            // Slots 1 and 3 hold a wrong remainder; the others the replay's 30.
            let left = if slot % 2 == 1 { 31 } else { 30 };
            lots.push((slot, entry(1, base + 1, left)));
        }
        let mut pass = Pass::new(&addresses, ids, rows, lots);
        let mut texts = pass.wanted_refs();
        for (id, text) in texts.iter_mut() {
            *text = Some(format!("ref-{id}"));
        }
        pass.set_refs(texts).unwrap();
        let one = pass.drifted(1).unwrap();
        assert_eq!(
            one.iter()
                .map(|(slot, d, _)| (*slot, d.address.as_str()))
                .collect::<Vec<_>>(),
            [(1, "0x1"), (3, "0x3")]
        );
        assert_eq!(one[0].2, [entry(1, 11, 30)]);
        for threads in [2, 3, 5, 64] {
            assert_eq!(pass.drifted(threads).unwrap(), one, "{threads} threads");
        }
        let mut missing = Pass::new(&addresses, vec![Some(1)], vec![(0, entry(1, 9, 5))], vec![]);
        missing.set_refs(missing.wanted_refs()).unwrap_err();
    }
}
