//! Balance reads answered from each address's lots summed by expiry, kept in memory for as long
//! as the address's version in `addresses` stays the one they were read at.
//!
//! Every transaction that writes an address's history or lots advances its version in the same
//! transaction (migration 0006; the writers' batch cache relies on it already), so the sums
//! read with a version are exact for as long as that version is the address's. A read sends the
//! version it holds; one statement returns the address's version and, only when it differs,
//! its lots summed by expiry (a one-time filter: on a hit PostgreSQL reads the address's row
//! and no lot). The balance at any instant is then the sum of the groups not yet expired at it,
//! computed here: what the server otherwise computes per request by visiting every live lot of
//! the address (W3 on PostgreSQL, BENCHMARKS.md).
//!
//! Lots changed behind the ledger's back (SQL by hand, without advancing the version) are seen
//! after the address's next write, as the writers' cache sees them. A sum that does not fit the
//! answer, or an expiry that does not decode, is answered by the plain `SUM` instead, so errors
//! stay those of the uncached read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lotledger_core::{BalanceDetail, Credits, Timestamp};
use lotledger_store::StoreError;
use lotledger_store::batch::BatchCache;
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::wrappers::{db_err, ts};

/// At most this many expiry groups are kept over all addresses (32 bytes each, the
/// address's text aside); past it, the kept sums are dropped and read again as they are asked.
const GROUPS_KEPT_MAX: usize = 1 << 18;

/// The address's version and, when it is not `$2`, its lots' remainders summed by expiry (the
/// sums as text: a `NUMERIC` that may exceed 64 bits). No row: the address is unknown.
const VERSION_AND_GROUPS: &str = "SELECT a.version, g.expiration_date, g.total::text \
     FROM addresses a LEFT JOIN LATERAL (SELECT expiration_date, SUM(amount_remaining) AS total \
     FROM credit_lots WHERE address_id = a.id AND a.version <> $2 GROUP BY expiration_date) g \
     ON TRUE WHERE a.address = $1";

/// An address's lots summed by expiry (`None`: never expires), at one version.
#[derive(Debug)]
struct Groups {
    version: i64,
    sums: Vec<(Option<Timestamp>, i128)>,
}

impl Groups {
    /// The groups not expired at `at` (`expiration_date > at`, as the SQL reads).
    fn live(&self, at: Timestamp) -> impl Iterator<Item = &(Option<Timestamp>, i128)> {
        self.sums
            .iter()
            .filter(move |(expiry, _)| expiry.is_none_or(|e| e > at))
    }
}

/// Hits and misses of the kept sums, since the store opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BalanceCacheCounts {
    /// Reads answered from kept sums (the address's version unchanged).
    pub hits: u64,
    /// Reads answered from the lots a batch of this process committed for the address (its
    /// writers' batch cache), summed in the process.
    pub written: u64,
    /// Reads that summed the address's lots on the server (first read, or written since by
    /// another process or by a write that left no state in the batch cache).
    pub misses: u64,
    /// Reads answered by the plain `SUM` (a sum past 64 bits, an expiry that does not decode).
    pub plain: u64,
}

/// The kept sums of the addresses read, by address.
#[derive(Debug, Default)]
pub(crate) struct BalanceCache {
    kept: Mutex<Kept>,
    hits: AtomicU64,
    written: AtomicU64,
    misses: AtomicU64,
    plain: AtomicU64,
}

#[derive(Debug, Default)]
struct Kept {
    by_address: HashMap<String, Arc<Groups>>,
    /// Groups held in `by_address`.
    groups: usize,
}

impl Kept {
    fn clear(&mut self) {
        self.by_address.clear();
        self.groups = 0;
    }
}

/// What a read found: the address's groups at its current version, or nothing to cache from.
enum Found {
    Unknown,
    Groups(Arc<Groups>),
    /// Sums or expiries the cache cannot hold exactly: read by the plain `SUM`.
    Plain,
}

impl BalanceCache {
    pub(crate) fn counts(&self) -> BalanceCacheCounts {
        BalanceCacheCounts {
            hits: self.hits.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            plain: self.plain.load(Ordering::Relaxed),
        }
    }

    /// Drops every kept sum: each address's next read sums its lots again.
    pub(crate) fn forget(&self) {
        self.kept().clear();
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        // A panic elsewhere while holding it leaves sums that are still each exact at their
        // version: keep them.
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The address's groups at its version of the moment, read on `conn` (one statement);
    /// `written`: the writers' batch cache, whose lots of the address a batch of this process
    /// committed are summed here rather than by the server, when they are newer than the sums
    /// kept.
    async fn groups(
        &self,
        conn: &mut PgConnection,
        address: &str,
        written: &Mutex<BatchCache>,
    ) -> Result<Found, StoreError> {
        let mut held = self.kept().by_address.get(address).cloned();
        // Versions start at 0: -1 matches none.
        let mut held_version = held.as_ref().map_or(-1, |g| g.version);
        let mut from_writer = false;
        if let Some((version, sums)) = BatchCache::committed_sums(written, address, held_version) {
            held = Some(Arc::new(Groups { version, sums }));
            held_version = version;
            from_writer = true;
        }
        let rows: Vec<(i64, Option<OffsetDateTime>, Option<String>)> =
            sqlx::query_as(VERSION_AND_GROUPS)
                .bind(address)
                .bind(held_version)
                .fetch_all(&mut *conn)
                .await
                .map_err(db_err)?;
        let Some(&(version, _, _)) = rows.first() else {
            return Ok(Found::Unknown);
        };
        if let Some(held) = held.filter(|g| g.version == version) {
            if from_writer {
                self.written.fetch_add(1, Ordering::Relaxed);
                self.keep(address, &held);
            } else {
                self.hits.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(Found::Groups(held));
        }
        let mut sums = Vec::with_capacity(rows.len());
        for (_, expiry, total) in rows {
            // No lot at all: one row whose sum is NULL.
            let Some(total) = total else { continue };
            let (Ok(expiry), Ok(total)) = (expiry.map(ts).transpose(), total.parse::<i128>())
            else {
                self.plain.fetch_add(1, Ordering::Relaxed);
                return Ok(Found::Plain);
            };
            sums.push((expiry, total));
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let groups = Arc::new(Groups { version, sums });
        self.keep(address, &groups);
        Ok(Found::Groups(groups))
    }

    /// Keeps `groups` for `address` unless a read of a later version came first.
    fn keep(&self, address: &str, groups: &Arc<Groups>) {
        let mut kept = self.kept();
        let older = match kept.by_address.get(address) {
            Some(held) if held.version > groups.version => return,
            Some(held) => held.sums.len(),
            None => 0,
        };
        if kept.groups - older + groups.sums.len() > GROUPS_KEPT_MAX {
            kept.clear();
            if groups.sums.len() > GROUPS_KEPT_MAX {
                return;
            }
        }
        let replaced = kept
            .by_address
            .insert(address.to_string(), Arc::clone(groups));
        kept.groups = kept.groups - replaced.map_or(0, |g| g.sums.len()) + groups.sums.len();
    }

    /// The balance of `address` at `at`; `None`: to be read by the plain `SUM`.
    pub(crate) async fn balance(
        &self,
        conn: &mut PgConnection,
        address: &str,
        at: Timestamp,
        written: &Mutex<BatchCache>,
    ) -> Result<Option<Credits>, StoreError> {
        Ok(match self.groups(conn, address, written).await? {
            Found::Unknown => Some(lotledger_store::balance_from_sum(None)),
            Found::Plain => None,
            Found::Groups(groups) => {
                let sum: i128 = groups.live(at).map(|(_, s)| s).sum();
                match i64::try_from(sum) {
                    Ok(sum) => Some(lotledger_store::balance_from_sum(Some(sum))),
                    Err(_) => {
                        self.plain.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                }
            }
        })
    }

    /// The balance and its details of `address` at `at`; `None`: to be read by the plain query.
    pub(crate) async fn balance_details(
        &self,
        conn: &mut PgConnection,
        address: &str,
        at: Timestamp,
        written: &Mutex<BatchCache>,
    ) -> Result<Option<(Credits, Vec<BalanceDetail>)>, StoreError> {
        let sums = match self.groups(conn, address, written).await? {
            Found::Unknown => Vec::new(),
            Found::Plain => return Ok(None),
            Found::Groups(groups) => {
                match groups
                    .live(at)
                    .map(|&(expiry, sum)| i64::try_from(sum).map(|s| (expiry, Credits(s))))
                    .collect::<Result<Vec<_>, _>>()
                {
                    Ok(sums) => sums,
                    Err(_) => {
                        self.plain.fetch_add(1, Ordering::Relaxed);
                        return Ok(None);
                    }
                }
            }
        };
        lotledger_core::balance_details_from_sums(sums)
            .map(Some)
            .ok_or_else(|| StoreError::Overflow(format!("balance of {address}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_unix_seconds(seconds).unwrap()
    }

    fn groups(version: i64, n: usize) -> Arc<Groups> {
        Arc::new(Groups {
            version,
            sums: (0..n).map(|i| (Some(at(i as i64)), 1)).collect(),
        })
    }

    #[test]
    fn live_groups_are_those_expiring_after_the_instant_or_never() {
        let g = Groups {
            version: 0,
            sums: vec![(Some(at(10)), 1), (None, 2), (Some(at(20)), 4)],
        };
        let sum = |t| g.live(at(t)).map(|(_, s)| s).sum::<i128>();
        assert_eq!(sum(0), 7);
        assert_eq!(sum(10), 6, "a lot expiring at the instant is not live");
        assert_eq!(sum(19), 6);
        assert_eq!(sum(20), 2);
    }

    #[test]
    fn keeps_the_latest_version_and_stays_within_its_bound() {
        let cache = BalanceCache::default();
        cache.keep("a", &groups(2, 3));
        cache.keep("a", &groups(1, 5));
        assert_eq!(
            cache.kept().by_address["a"].version,
            2,
            "an older read lost"
        );
        assert_eq!(cache.kept().groups, 3);
        cache.keep("a", &groups(3, 4));
        cache.keep("b", &groups(0, 6));
        assert_eq!(cache.kept().groups, 10);
        // One more than the bound allows: everything kept so far goes, the new one stays.
        cache.keep("c", &groups(0, GROUPS_KEPT_MAX - 9));
        let kept = cache.kept();
        assert_eq!(kept.groups, GROUPS_KEPT_MAX - 9);
        assert_eq!(kept.by_address.keys().collect::<Vec<_>>(), ["c"]);
        drop(kept);
        cache.keep("d", &groups(0, GROUPS_KEPT_MAX + 1));
        assert!(cache.kept().by_address.is_empty(), "larger than the bound");
        assert_eq!(cache.kept().groups, 0);
    }
}
