//! What applying an operation would do, computed without writing: the rows it would append,
//! the lots it would drain and create, and each touched address's balance before and after.
//! The same decisions as the writer (`lotledger_store::writer::apply_classified`): the eager
//! plan over the current lots, and a re-derivation by replay for an address whose history
//! sorts after the operation.

use std::collections::{BTreeMap, BTreeSet};

use crate::message::CreditOp;
use crate::model::{HistoryRow, Lot, balance_at};
use crate::plan::{LotBook, PlanError, replayed_lots};
use crate::{Credits, Timestamp};

/// One address as the ledger holds it now: its lots with something left (the cache) and its
/// whole history (only what a replay reads is needed).
#[derive(Debug, Clone, Default)]
pub struct AddressNow {
    pub lots: Vec<Lot>,
    pub history: Vec<HistoryRow>,
}

/// What an operation would take from one lot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drain {
    pub address: String,
    pub credit_ref: String,
    pub credit_index: i32,
    pub amount: Credits,
    pub expiration_date: Option<Timestamp>,
}

/// What applying an operation would do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Prediction {
    /// The history rows it would append (rows whose key is already stored are skipped, as the
    /// writer skips them).
    pub rows: Vec<HistoryRow>,
    /// The lots it would drain, per address then in emission order, with what it takes.
    pub drained: Vec<Drain>,
    /// The lots it would create.
    pub created: Vec<Lot>,
    /// Each touched address's balance at `now`: `(before, after)`.
    pub balances: BTreeMap<String, (Credits, Credits)>,
    /// The addresses the writer would re-derive by replay (history sorting after the
    /// operation); their `drained` entries are the replay's.
    pub rederived: Vec<String>,
    /// Every touched address's lots with something left afterwards, per address in emission
    /// order: what the cache would hold.
    pub lots_after: Vec<Lot>,
}

/// Predicts `op` (already classified and funded) against `ledger` (every touched address; an
/// absent one has no lots and no history). `stored_indexes` are the indexes of the rows already
/// stored under `op`'s item hash.
pub fn predict(
    op: &CreditOp,
    ledger: &BTreeMap<String, AddressNow>,
    stored_indexes: &BTreeSet<i32>,
    now: Timestamp,
) -> Result<Prediction, PlanError> {
    let empty = AddressNow::default();
    let state = |address: &str| ledger.get(address).unwrap_or(&empty);
    let mut book = LotBook::new();
    for (address, _) in op.drain_demand() {
        book.insert(state(address).lots.iter().cloned());
    }
    let plan = op.plan(&mut book)?;
    let conflicted = plan
        .rows
        .iter()
        .any(|r| stored_indexes.contains(&r.credit_index));
    let written = |index: i32| !stored_indexes.contains(&index);
    let mut out = Prediction {
        rows: plan
            .rows
            .iter()
            .filter(|r| written(r.credit_index))
            .cloned()
            .collect(),
        created: plan
            .new_lots
            .iter()
            .filter(|l| written(l.credit_index))
            .cloned()
            .collect(),
        ..Prediction::default()
    };
    let position = (op.ts, op.item_hash.as_str());
    for address in op.touched_addresses() {
        let now_state = state(address);
        let later: Vec<&HistoryRow> = now_state
            .history
            .iter()
            .filter(|r| (r.message_timestamp, r.credit_ref.as_str()) > position)
            .collect();
        let later_debit = later.iter().any(|r| r.amount.0 < 0);
        let (after_lots, drains) =
            if plan.rederives(address, !later.is_empty(), later_debit, conflicted) {
                out.rederived.push(address.to_string());
                replayed(address, now_state, &out.rows, &op.item_hash)?
            } else {
                eager(address, now_state, &plan.drained_lots, &out.created)?
            };
        let before = balance_at(&now_state.lots, now).ok_or(PlanError::Overflow)?;
        let after = balance_at(&after_lots, now).ok_or(PlanError::Overflow)?;
        out.balances.insert(address.to_string(), (before, after));
        out.drained.extend(drains);
        let mut after_lots = after_lots;
        after_lots.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        out.lots_after.extend(after_lots);
    }
    Ok(out)
}

/// The lots of `address` after the eager plan, and what it drained from each.
fn eager(
    address: &str,
    state: &AddressNow,
    drained_lots: &[Lot],
    created: &[Lot],
) -> Result<(Vec<Lot>, Vec<Drain>), PlanError> {
    let mut lots = Vec::with_capacity(state.lots.len());
    let mut drains = Vec::new();
    for lot in &state.lots {
        let key = (&lot.credit_ref, lot.credit_index);
        match drained_lots
            .iter()
            .find(|d| d.address == address && (&d.credit_ref, d.credit_index) == key)
        {
            Some(now) => {
                let amount = lot
                    .amount_remaining
                    .checked_sub(now.amount_remaining)
                    .ok_or(PlanError::Overflow)?;
                drains.push(Drain {
                    address: address.to_string(),
                    credit_ref: lot.credit_ref.clone(),
                    credit_index: lot.credit_index,
                    amount,
                    expiration_date: lot.expiration_date,
                });
                if now.amount_remaining.is_positive() {
                    lots.push(now.clone());
                }
            }
            None => lots.push(lot.clone()),
        }
    }
    lots.extend(created.iter().filter(|l| l.address == address).cloned());
    Ok((lots, drains))
}

/// The lots of `address` re-derived from its history and the new rows, and what the rows of
/// `item_hash` drained in that replay.
fn replayed(
    address: &str,
    state: &AddressNow,
    new_rows: &[HistoryRow],
    item_hash: &str,
) -> Result<(Vec<Lot>, Vec<Drain>), PlanError> {
    let mut rows: Vec<HistoryRow> = state.history.clone();
    rows.extend(new_rows.iter().filter(|r| r.address == address).cloned());
    let mut lots = Vec::new();
    let mut drains = Vec::new();
    for lot in replayed_lots(&rows)? {
        let mut taken = Credits::ZERO;
        for (debit_ref, _, _, amount) in &lot.drained_by {
            if debit_ref == item_hash {
                taken = taken.checked_add(*amount).ok_or(PlanError::Overflow)?;
            }
        }
        if taken.is_positive() {
            drains.push(Drain {
                address: address.to_string(),
                credit_ref: lot.credit_ref.clone(),
                credit_index: lot.credit_index,
                amount: taken,
                expiration_date: lot.expiration_date,
            });
        }
        if lot.remaining.is_positive() {
            lots.push(Lot {
                address: address.to_string(),
                credit_ref: lot.credit_ref,
                credit_index: lot.credit_index,
                amount_remaining: lot.remaining,
                expiration_date: lot.expiration_date,
                message_timestamp: lot.granted_at,
            });
        }
    }
    Ok((lots, drains))
}
