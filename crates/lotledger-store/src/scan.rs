//! Verify and rebuild on ids: a batch's history rows and lots read in bulk as interned ids and
//! integers ([`Entry`]), each address replayed by [`lotledger_core::replay_rows`] and compared
//! with its cache by ids. Reference texts only break ties: an address none of whose rows or
//! lots share an instant with another reference's is replayed and compared by ids alone
//! ([`Pass::wanted_refs`] screens them all); texts are read only for the others and for the
//! addresses that drifted (to report them). Each store reads its tables its own way (SQLite:
//! whole-table scans on a connection of its own; PostgreSQL: `= ANY` over the batch's ids) and
//! hands the rows here.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use lotledger_core::{Credits, Lot, Policy, ReplayRow, replay_rows};

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
    /// A history row's drain policy (a lot: always the default, as both scans read lots).
    pub policy: Policy,
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
    /// The positions still to check with texts, in order (none: every position).
    pending: Option<Vec<usize>>,
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

/// Runs `each` on every one of `slots` on up to `threads` threads (each a contiguous share of
/// them) and keeps what it returns, in the order of `slots`.
fn on_threads<T: Send>(
    slots: &[usize],
    threads: usize,
    each: impl Fn(usize) -> Result<Option<T>, StoreError> + Sync,
) -> Result<Vec<T>, StoreError> {
    let share_of = |part: &[usize]| {
        let mut out = Vec::new();
        for slot in part {
            out.extend(each(*slot)?);
        }
        Ok::<_, StoreError>(out)
    };
    let threads = threads.clamp(1, slots.len().max(1));
    if threads == 1 {
        return share_of(slots);
    }
    let parts: Vec<Result<Vec<T>, StoreError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = slots
            .chunks(slots.len().div_ceil(threads))
            .map(|part| {
                let share_of = &share_of;
                scope.spawn(move || share_of(part))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(StoreError::Corrupt("a replay thread panicked".into())))
            })
            .collect()
    });
    let mut out = Vec::new();
    for part in parts {
        out.extend(part?);
    }
    Ok(out)
}

/// `entries` in the order of `(instant, reference id, index)`, or none if two of different
/// references share an instant (their order would be that of the references' texts).
fn in_id_order(entries: &[Slotted]) -> Option<Vec<&Entry>> {
    let mut sorted: Vec<&Entry> = entries.iter().map(|(_, e)| e).collect();
    // Stable, as the replay's own sort: equal keys keep the order they were read in.
    sorted.sort_by_key(|e| (e.ts, e.ref_id, e.index));
    let tied = sorted
        .windows(2)
        .any(|w| w[0].ts == w[1].ts && w[0].ref_id != w[1].ref_id);
    (!tied).then_some(sorted)
}

/// The lots the replay of `rows` leaves, in replay order, each as its granting row's entry
/// with what remains of it; `text` gives each reference's text.
fn replay_entries<'e, 't>(
    rows: impl Iterator<Item = &'e Entry>,
    text: impl Fn(i64) -> Result<&'t str, StoreError>,
) -> Result<Vec<Entry>, StoreError> {
    let mut keyed = rows
        .map(|e| {
            Ok(ReplayRow {
                key: e,
                credit_ref: text(e.ref_id)?,
                credit_index: e.index,
                amount: Credits(e.amount),
                expiration_date: e.expiry.map(instant_from_micros).transpose()?,
                message_timestamp: instant_from_micros(e.ts)?,
                policy: e.policy,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(replay_rows(&mut keyed)?
        .into_iter()
        .map(|lot| Entry {
            amount: lot.amount_remaining.0,
            // A lot has no policy of its own: the one lots are read with.
            policy: Policy::default(),
            ..*lot.key
        })
        .collect())
}

/// Whether an address is settled by ids alone: no tie on an instant between references among
/// its `rows` or its `lots`, and its cache equal to its replay.
fn settled_by_ids(rows: &[Slotted], lots: &[Slotted]) -> Result<bool, StoreError> {
    let (Some(rows), Some(cached)) = (in_id_order(rows), in_id_order(lots)) else {
        return Ok(false);
    };
    // With no tie, every reference sorts as the empty text: the order is the ids'.
    let replayed = replay_entries(rows.into_iter(), |_| Ok(""))?;
    Ok(replayed.len() == cached.len() && replayed.iter().zip(cached).all(|(r, c)| r == c))
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
            pending: None,
        }
    }

    /// The interned id of the address at `slot`.
    pub fn id(&self, slot: usize) -> Option<i64> {
        self.ids.get(slot).copied().flatten()
    }

    /// Screens every address by ids alone, on all cores, and returns the references whose
    /// texts the rest need, each waiting for its text: an address is settled here when none of
    /// its rows or lots shares an instant with another reference's (so the order of ids is
    /// the order of texts) and its cache equals its replay; the others (a tie on an instant,
    /// or a drift, whose report names references) are checked again with texts by
    /// [`Pass::drifted`].
    pub fn wanted_refs(&mut self) -> Result<IdMap<Option<String>>, StoreError> {
        let all: Vec<usize> = (0..self.addresses.len()).collect();
        let pending = on_threads(&all, cores(), |slot| {
            let (rows, lots) = self.entries(slot);
            Ok((!settled_by_ids(rows, lots)?).then_some(slot))
        })?;
        let mut wanted = IdMap::default();
        for slot in &pending {
            let (rows, lots) = self.entries(*slot);
            for (_, e) in rows.iter().chain(lots) {
                wanted.entry(e.ref_id).or_insert(None);
            }
        }
        self.pending = Some(pending);
        Ok(wanted)
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

    /// The rows and lots of the address at `slot`.
    fn entries(&self, slot: usize) -> (&[Slotted], &[Slotted]) {
        let (mut rows, mut lots) = (from_slot(&self.rows, slot), from_slot(&self.lots, slot));
        (take_slot(&mut rows, slot), take_slot(&mut lots, slot))
    }

    /// Every address of the pass whose cache differs from its replay, in order: its position,
    /// its drift and the lots the replay gives. After [`Pass::wanted_refs`], only the addresses
    /// it left are checked (with texts); before, all of them. The addresses are checked on up
    /// to `threads` threads, each a contiguous share of them.
    pub fn drifted(&self, threads: usize) -> Result<Vec<(usize, Drift, Vec<Entry>)>, StoreError> {
        let all: Vec<usize>;
        let slots = match &self.pending {
            Some(pending) => pending,
            None => {
                all = (0..self.addresses.len()).collect();
                &all
            }
        };
        on_threads(slots, threads, |slot| {
            let (rows, lots) = self.entries(slot);
            Ok(self
                .check(slot, rows, lots)?
                .map(|(drift, replayed)| (slot, drift, replayed)))
        })
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
        let replayed = replay_entries(rows.iter().map(|(_, e)| e), |id| self.text(id))?;
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
            policy: Policy::V1,
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
        let mut texts = pass.wanted_refs().unwrap();
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
        let wanted = missing.wanted_refs().unwrap();
        missing.set_refs(wanted).unwrap_err();
    }

    /// Two grants at one instant, whose references' texts sort the other way round from their
    /// ids, then a debit: the replay drains the one whose text sorts first. A cache that holds
    /// what the order of ids would give is a drift, found only with texts; a cache in the
    /// order of texts is clean. Untied clean addresses want no text at all.
    #[test]
    fn ties_on_an_instant_are_ordered_by_texts() {
        let addresses: Vec<String> = ["0xtied-right", "0xtied-wrong", "0xplain"]
            .map(String::from)
            .to_vec();
        let ids = (1..=3).map(Some).collect();
        let mut rows = Vec::new();
        for slot in 0..2 {
            let base = i64::try_from(slot).unwrap() * 10;
            // Reference base + 1 is "b…", base + 2 is "a…": text order is the reverse.
            rows.push((slot, entry(1, base + 1, 50)));
            rows.push((slot, entry(1, base + 2, 50)));
            rows.push((slot, entry(2, base + 3, -60)));
        }
        rows.push((2, entry(1, 21, 50)));
        rows.push((2, entry(2, 22, -10)));
        let lots = vec![
            // By texts: 10 taken from "a" (+2) and its 50 gone, 40 left on "b" (+1).
            (0, entry(1, 1, 40)),
            // What the order of ids would leave: 40 on +2.
            (1, entry(1, 12, 40)),
            (2, entry(1, 21, 40)),
        ];
        let mut pass = Pass::new(&addresses, ids, rows, lots);
        let mut texts = pass.wanted_refs().unwrap();
        let mut wanted: Vec<i64> = texts.keys().copied().collect();
        wanted.sort_unstable();
        assert_eq!(
            wanted,
            [1, 2, 3, 11, 12, 13],
            "the untied address wants no text"
        );
        for (id, text) in texts.iter_mut() {
            let name = match id % 10 {
                1 => "b",
                2 => "a",
                _ => "c",
            };
            *text = Some(format!("{name}-{id}"));
        }
        pass.set_refs(texts).unwrap();
        let drifted = pass.drifted(2).unwrap();
        assert_eq!(drifted.len(), 1, "{drifted:?}");
        assert_eq!(drifted[0].0, 1);
        assert_eq!(drifted[0].2, [entry(1, 11, 40)]);
    }

    /// A splitmix64 stream: the randomized test's own, so it needs no crate.
    struct Mix(u64);

    impl Mix {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) % n
        }
    }

    /// The replay of `rows` with each reference's text from `text`, as lot entries.
    fn replayed(rows: &[Slotted], text: &dyn Fn(i64) -> String) -> Vec<Entry> {
        let texts: HashMap<i64, String> = rows
            .iter()
            .map(|(_, e)| (e.ref_id, text(e.ref_id)))
            .collect();
        replay_entries(rows.iter().map(|(_, e)| e), |id| Ok(texts[&id].as_str())).unwrap()
    }

    /// Random passes whose rows often tie on an instant, with texts that sort unlike their
    /// ids, and caches that are right, in the order of ids, or off by a little: screening by
    /// ids then checking the rest with texts finds exactly what checking every address with
    /// texts finds.
    #[test]
    fn screening_finds_what_texts_find() {
        let mut rng = Mix(7);
        for case in 0..400 {
            let addresses: Vec<String> = (0..4).map(|i| format!("0x{i}")).collect();
            let ids = (1..=4).map(Some).collect();
            // Texts: a shuffle of the ids, so the two orders disagree.
            let mut order: Vec<u64> = (0..40).collect();
            for i in (1..order.len()).rev() {
                let j = usize::try_from(rng.below(i as u64 + 1)).unwrap();
                order.swap(i, j);
            }
            let text = |id: i64| format!("{:02}", order[usize::try_from(id).unwrap()]);
            let (mut rows, mut lots) = (Vec::new(), Vec::new());
            for slot in 0..4usize {
                let mut mine: Vec<Slotted> = Vec::new();
                for _ in 0..=rng.below(10) {
                    let ref_id = i64::try_from(slot as u64 * 10 + rng.below(5)).unwrap();
                    let index = i32::try_from(rng.below(2)).unwrap();
                    if mine
                        .iter()
                        .any(|(_, e)| e.ref_id == ref_id && e.index == index)
                    {
                        continue;
                    }
                    let ts = i64::try_from(1 + rng.below(4)).unwrap();
                    let grant = rng.below(3) > 0;
                    mine.push((
                        slot,
                        Entry {
                            ts,
                            ref_id,
                            index,
                            amount: if grant {
                                i64::try_from(1 + rng.below(100)).unwrap()
                            } else {
                                -i64::try_from(1 + rng.below(150)).unwrap()
                            },
                            expiry: (grant && rng.below(3) == 0)
                                .then(|| ts + i64::try_from(rng.below(3)).unwrap()),
                            policy: Policy::ALL[usize::from(rng.below(2) == 0)],
                        },
                    ));
                }
                let mut cache = match rng.below(4) {
                    0 => replayed(&mine, &|id| format!("{id:02}")),
                    _ => replayed(&mine, &text),
                };
                match rng.below(5) {
                    0 if !cache.is_empty() => cache[0].amount += 1,
                    1 => {
                        cache.pop();
                    }
                    _ => {}
                }
                lots.extend(cache.into_iter().map(|e| (slot, e)));
                rows.extend(mine);
            }
            let all_texts = |pass: &Pass<'_>| -> IdMap<Option<String>> {
                pass.rows
                    .iter()
                    .chain(&pass.lots)
                    .map(|(_, e)| (e.ref_id, Some(text(e.ref_id))))
                    .collect()
            };
            let mut screened = Pass::new(&addresses, ids, rows.clone(), lots.clone());
            let mut wanted = screened.wanted_refs().unwrap();
            for (id, t) in wanted.iter_mut() {
                *t = Some(text(*id));
            }
            screened.set_refs(wanted).unwrap();
            let mut full = Pass::new(&addresses, (1..=4).map(Some).collect(), rows, lots);
            let texts = all_texts(&full);
            full.set_refs(texts).unwrap();
            assert_eq!(
                screened.drifted(2).unwrap(),
                full.drifted(1).unwrap(),
                "case {case}"
            );
        }
    }
}
