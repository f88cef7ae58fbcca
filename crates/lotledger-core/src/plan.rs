//! Planning: what a credit operation writes, given the lots it may drain. Pure and
//! deterministic; the store loads the lots, calls [`CreditOp::plan`], and writes the plan.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use crate::message::{CreditOp, OpKind, PAYMENT_EXPENSE, PAYMENT_TRANSFER, PROVIDER_ALEPH};
use crate::model::{HistoryRow, Lot, OrderKey, valid_at};
use crate::policy::VisitKey;
use crate::{Credits, Policy, Timestamp};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("a message produces more history rows than an i32 index can number")]
    IndexOverflow,
    #[error("arithmetic overflow while planning a drain")]
    Overflow,
}

/// The lots an operation may drain, per address, in emission order `(ts, credit_ref,
/// credit_index)`. Lots that are not drainable at the operation's instant are skipped, so a store
/// may load more than the eligible ones.
#[derive(Debug, Clone, Default)]
pub struct LotBook {
    lots: BTreeMap<String, Vec<Lot>>,
    original: BTreeMap<(String, String, i32), Credits>,
}

impl LotBook {
    pub fn new() -> LotBook {
        LotBook::default()
    }

    /// Adds lots (any order: they are sorted into emission order per address).
    pub fn insert(&mut self, lots: impl IntoIterator<Item = Lot>) {
        for lot in lots {
            self.original.insert(
                (
                    lot.address.clone(),
                    lot.credit_ref.clone(),
                    lot.credit_index,
                ),
                lot.amount_remaining,
            );
            self.lots.entry(lot.address.clone()).or_default().push(lot);
        }
        for list in self.lots.values_mut() {
            list.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        }
    }

    /// Takes up to `amount` from `address`'s lots drainable at `ts`, in `policy`'s order.
    /// Returns what was taken per lot with the lot's expiry; an over-draw is silently dropped.
    fn drain(
        &mut self,
        address: &str,
        amount: Credits,
        ts: Timestamp,
        policy: Policy,
    ) -> Result<Vec<(Credits, Option<Timestamp>)>, PlanError> {
        let mut taken = Vec::new();
        if !amount.is_positive() {
            return Ok(taken);
        }
        if let Some(lots) = self.lots.get_mut(address) {
            debit(
                lots,
                policy,
                amount,
                |l| l.drainable_at(ts),
                |l, take| taken.push((take, l.expiration_date)),
            )?;
        }
        Ok(taken)
    }

    /// Lots whose remainder changed since they were inserted.
    fn changed(&self) -> Vec<Lot> {
        self.lots
            .values()
            .flatten()
            .filter(|l| {
                self.original
                    .get(&(l.address.clone(), l.credit_ref.clone(), l.credit_index))
                    != Some(&l.amount_remaining)
            })
            .cloned()
            .collect()
    }
}

/// What one operation writes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// History rows to append, in index order.
    pub rows: Vec<HistoryRow>,
    /// Lots to create (granting rows with a positive amount).
    pub new_lots: Vec<Lot>,
    /// Drained lots with their new remainder (0 = fully drained).
    pub drained_lots: Vec<Lot>,
}

impl Plan {
    /// Whether the writer re-derives `address` by replay after writing this plan: a row of the
    /// address sorting after the message could have been drained differently in replay order
    /// (`later_debit`, or `later_any` when this plan debits the address), or rows were already
    /// stored under the message's keys (`conflicted`), so the eager result may differ from the
    /// replay.
    pub fn rederives(
        &self,
        address: &str,
        later_any: bool,
        later_debit: bool,
        conflicted: bool,
    ) -> bool {
        let debits_here = self
            .rows
            .iter()
            .any(|r| r.address == address && r.amount.0 < 0);
        later_debit || (debits_here && later_any) || conflicted
    }
}

impl CreditOp {
    /// Plans the operation exactly as the reference's writers do (SPEC Part II 3.3–3.5).
    pub fn plan(&self, book: &mut LotBook) -> Result<Plan, PlanError> {
        let mut plan = Plan::default();
        let hash = self.item_hash.as_str();
        let ts = self.ts;
        match &self.kind {
            OpKind::Distribution(d) => {
                for (i, e) in d.entries.iter().enumerate() {
                    let index = i32::try_from(i).map_err(|_| PlanError::IndexOverflow)?;
                    let mut row = HistoryRow::bare(&e.address, e.amount, hash, index, ts);
                    row.price.clone_from(&e.price);
                    row.bonus_amount = e.bonus_amount;
                    row.tx_hash.clone_from(&e.tx_hash);
                    row.expiration_date = e.expiration;
                    row.token.clone_from(&d.token);
                    row.chain.clone_from(&d.chain);
                    row.origin.clone_from(&e.origin);
                    row.provider.clone_from(&e.provider);
                    row.origin_ref.clone_from(&e.origin_ref);
                    row.payment_method.clone_from(&e.payment_method);
                    grant(&mut plan, row);
                }
            }
            OpKind::Expense(entries) => {
                for (i, e) in entries.iter().enumerate() {
                    let index = i32::try_from(i).map_err(|_| PlanError::IndexOverflow)?;
                    book.drain(&e.address, e.amount, ts, self.policy)?;
                    let mut row = HistoryRow::bare(
                        &e.address,
                        e.amount.checked_neg().ok_or(PlanError::Overflow)?,
                        hash,
                        index,
                        ts,
                    );
                    row.price.clone_from(&e.price);
                    row.tx_hash.clone_from(&e.node_id);
                    row.origin.clone_from(&e.execution_id);
                    row.provider = Some(PROVIDER_ALEPH.to_string());
                    row.origin_ref.clone_from(&e.origin_ref);
                    row.payment_method = Some(PAYMENT_EXPENSE.to_string());
                    row.expense_count = e.count;
                    row.expense_size_mib.clone_from(&e.size);
                    plan.rows.push(row);
                }
            }
            OpKind::Transfer(t) => {
                let mut index: i32 = 0;
                let mut next = || -> Result<i32, PlanError> {
                    let current = index;
                    index = index.checked_add(1).ok_or(PlanError::IndexOverflow)?;
                    Ok(current)
                };
                for e in &t.entries {
                    let portions = if t.whitelisted {
                        vec![(e.amount, e.expiration)]
                    } else {
                        let drained = book.drain(&self.sender, e.amount, ts, self.policy)?;
                        let capped = merge_adjacent(
                            drained
                                .into_iter()
                                .map(|(take, source)| (take, cap(source, e.expiration))),
                        )?;
                        if capped.is_empty() {
                            vec![(e.amount, e.expiration)]
                        } else {
                            capped
                        }
                    };
                    for (amount, expiration) in portions {
                        let mut row = HistoryRow::bare(&e.address, amount, hash, next()?, ts);
                        row.expiration_date = expiration;
                        row.origin = Some(self.sender.clone());
                        row.provider = Some(PROVIDER_ALEPH.to_string());
                        row.payment_method = Some(PAYMENT_TRANSFER.to_string());
                        grant(&mut plan, row);
                    }
                    if !t.whitelisted {
                        let debit = e.amount.checked_neg().ok_or(PlanError::Overflow)?;
                        let mut row = HistoryRow::bare(&self.sender, debit, hash, next()?, ts);
                        row.origin = Some(e.address.clone());
                        row.provider = Some(PROVIDER_ALEPH.to_string());
                        row.payment_method = Some(PAYMENT_TRANSFER.to_string());
                        plan.rows.push(row);
                    }
                }
            }
        }
        for row in &mut plan.rows {
            row.policy = self.policy;
        }
        plan.drained_lots = book.changed();
        Ok(plan)
    }
}

/// The lots of one address (given in emission order) that a drain of `need` at `ts` under
/// `policy` can reach, in emission order: the drainable ones, taken in the policy's visiting
/// order until they cover `need`. Planning over them drains exactly as over all of `lots`, so a
/// store may hand the planner only these. Under v1 a walk that stops once covered; otherwise
/// the drain's own [`visiting_order`], followed until covered.
pub fn covering<'a>(
    lots: impl IntoIterator<Item = &'a Lot>,
    policy: Policy,
    need: i128,
    ts: Timestamp,
) -> Vec<&'a Lot> {
    let drainable = lots.into_iter().filter(|l| l.drainable_at(ts));
    let mut covered: i128 = 0;
    if policy == Policy::V1 {
        return drainable
            .take_while(|l| {
                let short = covered < need;
                covered = covered.saturating_add(i128::from(l.amount_remaining.0));
                short
            })
            .collect();
    }
    let drainable: Vec<&Lot> = drainable.collect();
    let mut order = visiting_order(
        policy,
        drainable
            .iter()
            .enumerate()
            .map(|(i, l)| (i, l.expiration_date)),
    );
    let mut reached = vec![false; drainable.len()];
    while covered < need {
        let Some(i) = order.next() else {
            break;
        };
        if let (Some(flag), Some(lot)) = (reached.get_mut(i), drainable.get(i)) {
            *flag = true;
            covered = covered.saturating_add(i128::from(lot.amount_remaining.0));
        }
    }
    drainable
        .into_iter()
        .zip(reached)
        .filter_map(|(lot, reached)| reached.then_some(lot))
        .collect()
}

/// A lot as a debit sees it: what is left of it, and when it expires.
trait Drainable {
    fn remaining(&mut self) -> &mut Credits;
    fn expiry(&self) -> Option<Timestamp>;
}

impl Drainable for Lot {
    fn remaining(&mut self) -> &mut Credits {
        &mut self.amount_remaining
    }
    fn expiry(&self) -> Option<Timestamp> {
        self.expiration_date
    }
}

/// A replay's lot: its granting row's key, its remainder, its expiry.
impl<K> Drainable for (K, Credits, Option<Timestamp>) {
    fn remaining(&mut self) -> &mut Credits {
        &mut self.1
    }
    fn expiry(&self) -> Option<Timestamp> {
        self.2
    }
}

/// One debit of `needed` over `lots` (in emission order), as the planner and the replay both
/// drain: the lots `drainable` accepts, visited in `policy`'s order (v1: as they stand, with
/// no order built, stopping once paid), each part taken told to `took`; an over-draw is
/// dropped.
fn debit<T: Drainable>(
    lots: &mut [T],
    policy: Policy,
    mut needed: Credits,
    drainable: impl Fn(&T) -> bool,
    mut took: impl FnMut(&T, Credits),
) -> Result<(), PlanError> {
    let mut take = |lot: &mut T, needed: &mut Credits| -> Result<(), PlanError> {
        let taken = take_from(lot.remaining(), needed)?;
        took(lot, taken);
        Ok(())
    };
    if policy == Policy::V1 {
        for lot in lots.iter_mut() {
            if !needed.is_positive() {
                break;
            }
            if drainable(lot) {
                take(lot, &mut needed)?;
            }
        }
        return Ok(());
    }
    let order = visiting_order(
        policy,
        lots.iter()
            .enumerate()
            .filter(|(_, l)| drainable(l))
            .map(|(i, l)| (i, l.expiry())),
    );
    for i in order {
        if !needed.is_positive() {
            break;
        }
        if let Some(lot) = lots.get_mut(i) {
            take(lot, &mut needed)?;
        }
    }
    Ok(())
}

/// The order a debit under `policy` visits lots in, given their `(emission position, expiry)`
/// in emission order: by `policy.visit_key`, ties in emission order. Lazy (a heap popped one
/// at a time), so a debit paid by its first lots orders none of the rest. The drain
/// ([`debit`]) and the lots a store hands it ([`covering`]) both follow it.
fn visiting_order(
    policy: Policy,
    lots: impl Iterator<Item = (usize, Option<Timestamp>)>,
) -> VisitingOrder {
    VisitingOrder(
        lots.map(|(i, expiry)| Reverse((policy.visit_key(expiry), i)))
            .collect(),
    )
}

/// [`visiting_order`]'s positions: a min-heap of `(visiting key, emission position)`.
struct VisitingOrder(BinaryHeap<Reverse<(VisitKey, usize)>>);

impl Iterator for VisitingOrder {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        self.0.pop().map(|Reverse((_, i))| i)
    }
}

/// Takes `min(remaining, needed)` from a lot's `remaining`, lowering both; returns what was
/// taken.
fn take_from(remaining: &mut Credits, needed: &mut Credits) -> Result<Credits, PlanError> {
    let take = (*remaining).min(*needed);
    *remaining = remaining.checked_sub(take).ok_or(PlanError::Overflow)?;
    *needed = needed.checked_sub(take).ok_or(PlanError::Overflow)?;
    Ok(take)
}

/// Appends a granting row and, when its amount is positive, its lot.
fn grant(plan: &mut Plan, row: HistoryRow) {
    if row.amount.is_positive() {
        plan.new_lots.push(Lot {
            address: row.address.clone(),
            credit_ref: row.credit_ref.clone(),
            credit_index: row.credit_index,
            amount_remaining: row.amount,
            expiration_date: row.expiration_date,
            message_timestamp: row.message_timestamp,
        });
    }
    plan.rows.push(row);
}

/// The recipient's expiry: `min(source, requested)`, either side absent meaning "never".
fn cap(source: Option<Timestamp>, requested: Option<Timestamp>) -> Option<Timestamp> {
    match (source, requested) {
        (None, q) => q,
        (s, None) => s,
        (Some(s), Some(q)) => Some(s.min(q)),
    }
}

/// Merges a portion into the previous one when their expiries are equal (adjacent only).
fn merge_adjacent(
    portions: impl IntoIterator<Item = (Credits, Option<Timestamp>)>,
) -> Result<Vec<(Credits, Option<Timestamp>)>, PlanError> {
    let mut out: Vec<(Credits, Option<Timestamp>)> = Vec::new();
    for (amount, exp) in portions {
        match out.last_mut() {
            Some((prev, prev_exp)) if *prev_exp == exp => {
                *prev = prev.checked_add(amount).ok_or(PlanError::Overflow)?
            }
            _ => out.push((amount, exp)),
        }
    }
    Ok(out)
}

/// Rebuilds the lots of one address from its history rows (any order; they are walked in replay
/// order `(ts, credit_ref, credit_index)`), as the reference's repair does: grants append lots,
/// debits (and zero rows) take from the lots in list order, skipping empty lots and lots expired
/// at the debit's instant; an over-draw is dropped. Returns the lots with something left.
pub fn replay<'a, I: IntoIterator<Item = &'a HistoryRow>>(rows: I) -> Result<Vec<Lot>, PlanError> {
    let mut keyed: Vec<ReplayRow<'a, &'a HistoryRow>> = rows
        .into_iter()
        .map(|row| ReplayRow::of(row, row))
        .collect();
    Ok(replay_rows(&mut keyed)?
        .into_iter()
        .map(|lot| Lot {
            address: lot.key.address.clone(),
            credit_ref: lot.key.credit_ref.clone(),
            credit_index: lot.key.credit_index,
            amount_remaining: lot.amount_remaining,
            expiration_date: lot.key.expiration_date,
            message_timestamp: lot.key.message_timestamp,
        })
        .collect())
}

/// One history row as [`replay_rows`] reads it, borrowed; `key` names the row to the caller
/// (a lot carries its granting row's key).
#[derive(Debug, Clone, Copy)]
pub struct ReplayRow<'a, K> {
    pub key: K,
    pub credit_ref: &'a str,
    pub credit_index: i32,
    pub amount: Credits,
    pub expiration_date: Option<Timestamp>,
    pub message_timestamp: Timestamp,
    /// For a debit: the order it drains lots in.
    pub policy: Policy,
}

impl<'a, K> ReplayRow<'a, K> {
    /// `row` as a replay reads it, under `key`.
    pub fn of(key: K, row: &'a HistoryRow) -> ReplayRow<'a, K> {
        ReplayRow {
            key,
            credit_ref: &row.credit_ref,
            credit_index: row.credit_index,
            amount: row.amount,
            expiration_date: row.expiration_date,
            message_timestamp: row.message_timestamp,
            policy: row.policy,
        }
    }
}

impl<K> ReplayRow<'_, K> {
    pub fn order_key(&self) -> OrderKey<'_> {
        (self.message_timestamp, self.credit_ref, self.credit_index)
    }
}

/// A lot [`replay_rows`] leaves: its granting row's key and what remains of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayLot<K> {
    pub key: K,
    pub amount_remaining: Credits,
}

/// [`replay`] without copies: sorts `rows` into replay order and returns, in that order, the
/// lots with something left, each under its granting row's key. The one replay algorithm.
/// Each debit drains in its recorded policy's order (SPEC Part I: versioned drain policies).
pub fn replay_rows<K: Copy>(rows: &mut [ReplayRow<'_, K>]) -> Result<Vec<ReplayLot<K>>, PlanError> {
    let lots = replay_observed(rows, |_, _, _| {})?;
    Ok(lots
        .into_iter()
        .filter(|(_, remaining, _)| remaining.is_positive())
        .map(|(key, amount_remaining, _)| ReplayLot {
            key,
            amount_remaining,
        })
        .collect())
}

/// Every lot of the replay of `rows` (sorted into replay order), drained or not, in emission
/// order: its granting row's key, its remainder and its expiry; `took(lot, debit, amount)` is
/// told of each part a debit row took from a lot, in replay order.
pub fn replay_observed<K: Copy>(
    rows: &mut [ReplayRow<'_, K>],
    mut took: impl FnMut(K, K, Credits),
) -> Result<Vec<(K, Credits, Option<Timestamp>)>, PlanError> {
    rows.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    // Granted lots: the row's key, its remainder, its expiry.
    let mut lots: Vec<(K, Credits, Option<Timestamp>)> = Vec::new();
    // Lots before this index are empty: a cheap skip for long histories.
    let mut first_live = 0usize;
    for row in rows.iter() {
        if row.amount.is_positive() {
            lots.push((row.key, row.amount, row.expiration_date));
            continue;
        }
        let needed = row.amount.checked_neg().ok_or(PlanError::Overflow)?;
        let (at, key) = (row.message_timestamp, row.key);
        debit(
            lots.get_mut(first_live..).unwrap_or_default(),
            row.policy,
            needed,
            |(_, remaining, expiry)| remaining.is_positive() && valid_at(*expiry, at),
            |lot, taken| took(lot.0, key, taken),
        )?;
        while lots
            .get(first_live)
            .is_some_and(|(_, remaining, _)| !remaining.is_positive())
        {
            first_live += 1;
        }
    }
    Ok(lots)
}

/// A lot of the ledger as it stood at an instant ([`as_of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LotAsOf {
    pub credit_ref: String,
    pub credit_index: i32,
    /// Its grant's instant.
    pub granted_at: Timestamp,
    pub expiration_date: Option<Timestamp>,
    /// What it was granted.
    pub amount: Credits,
    /// What the debits up to the instant left of it.
    pub remaining: Credits,
    /// The debit rows that took from it, in replay order: `(credit_ref, credit_index,
    /// instant, amount taken)`.
    pub drained_by: Vec<(String, i32, Timestamp, Credits)>,
}

/// The balance of lots [`as_of`] gave, at their instant: the remainders of the lots still valid
/// then.
pub fn balance_as_of(lots: &[LotAsOf], at: Timestamp) -> Option<Credits> {
    let mut total = Credits::ZERO;
    for lot in lots {
        if lot.remaining.is_positive() && valid_at(lot.expiration_date, at) {
            total = total.checked_add(lot.remaining)?;
        }
    }
    Some(total)
}

/// The balance and its per-expiry breakdown of lots [`as_of`] gave, at their instant.
pub fn balance_details_as_of(
    lots: &[LotAsOf],
    at: Timestamp,
) -> Option<(Credits, Vec<crate::BalanceDetail>)> {
    crate::balance_details_from_sums(
        lots.iter()
            .filter(|l| l.remaining.is_positive() && valid_at(l.expiration_date, at))
            .map(|l| (l.expiration_date, l.remaining)),
    )
}

/// [`as_of`] after every row: the lots the whole history leaves (what the cache holds, drained
/// lots included), with the debits that took from each.
pub fn replayed_lots(rows: &[HistoryRow]) -> Result<Vec<LotAsOf>, PlanError> {
    match rows.iter().map(|r| r.message_timestamp).max() {
        Some(last) => as_of(rows, last),
        None => Ok(Vec::new()),
    }
}

/// One address's lots as its ledger stood at `as_of`: its history rows with
/// `message_timestamp <= as_of`, replayed (the one replay algorithm), every lot granted by
/// then, drained or not, in emission order, with the debits that took from it.
pub fn as_of(rows: &[HistoryRow], as_of: Timestamp) -> Result<Vec<LotAsOf>, PlanError> {
    let mut keyed: Vec<ReplayRow<'_, usize>> = rows
        .iter()
        .enumerate()
        .filter(|(_, row)| row.message_timestamp <= as_of)
        .map(|(i, row)| ReplayRow::of(i, row))
        .collect();
    // The debits that took from each lot, by its granting row's index.
    let mut drains: Vec<Vec<(usize, Credits)>> = vec![Vec::new(); rows.len()];
    let lots = replay_observed(&mut keyed, |lot, debit, amount| {
        if let Some(d) = drains.get_mut(lot) {
            d.push((debit, amount));
        }
    })?;
    Ok(lots
        .into_iter()
        .filter_map(|(key, remaining, expiration_date)| {
            let grant = rows.get(key)?;
            let drained_by = drains
                .get(key)?
                .iter()
                .filter_map(|(debit, amount)| {
                    let d = rows.get(*debit)?;
                    Some((
                        d.credit_ref.clone(),
                        d.credit_index,
                        d.message_timestamp,
                        *amount,
                    ))
                })
                .collect();
            Some(LotAsOf {
                credit_ref: grant.credit_ref.clone(),
                credit_index: grant.credit_index,
                granted_at: grant.message_timestamp,
                expiration_date,
                amount: grant.amount,
                remaining,
                drained_by,
            })
        })
        .collect())
}
