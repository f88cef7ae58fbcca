//! The ledger's two record kinds: history rows (the truth) and lots (the cache).

use crate::{Credits, Timestamp};

/// Sort key of history rows and lots: replay order and emission order.
pub type OrderKey<'a> = (Timestamp, &'a str, i32);

/// One row of `credit_history`. Keyed by `(credit_ref, credit_index)`; never updated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    pub address: String,
    pub amount: Credits,
    /// Decimal as PostgreSQL `NUMERIC` text.
    pub price: Option<String>,
    pub bonus_amount: Option<i64>,
    pub tx_hash: Option<String>,
    pub token: Option<String>,
    pub chain: Option<String>,
    pub provider: Option<String>,
    pub origin: Option<String>,
    pub origin_ref: Option<String>,
    pub payment_method: Option<String>,
    pub credit_ref: String,
    pub credit_index: i32,
    pub expiration_date: Option<Timestamp>,
    pub message_timestamp: Timestamp,
    pub expense_count: Option<i64>,
    /// Decimal as PostgreSQL `NUMERIC` text.
    pub expense_size_mib: Option<String>,
    /// The drain policy that planned the row's message (for a debit: the order it drained).
    pub policy: crate::Policy,
}

impl HistoryRow {
    /// A row with every optional column null.
    pub fn bare(
        address: &str,
        amount: Credits,
        credit_ref: &str,
        credit_index: i32,
        ts: Timestamp,
    ) -> HistoryRow {
        HistoryRow {
            address: address.to_string(),
            amount,
            price: None,
            bonus_amount: None,
            tx_hash: None,
            token: None,
            chain: None,
            provider: None,
            origin: None,
            origin_ref: None,
            payment_method: None,
            credit_ref: credit_ref.to_string(),
            credit_index,
            expiration_date: None,
            message_timestamp: ts,
            expense_count: None,
            expense_size_mib: None,
            policy: crate::Policy::V1,
        }
    }

    pub fn order_key(&self) -> OrderKey<'_> {
        (self.message_timestamp, &self.credit_ref, self.credit_index)
    }
}

/// One lot of the cache: the spendable remainder of one granting history row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lot {
    pub address: String,
    pub credit_ref: String,
    pub credit_index: i32,
    pub amount_remaining: Credits,
    pub expiration_date: Option<Timestamp>,
    pub message_timestamp: Timestamp,
}

/// A lot expiring at `expiration` is valid at `t`: no expiry, or an expiry strictly after `t`.
pub(crate) fn valid_at(expiration: Option<Timestamp>, t: Timestamp) -> bool {
    expiration.is_none_or(|e| e > t)
}

impl Lot {
    /// Valid at `t`: no expiry, or an expiry strictly after `t`.
    pub fn valid_at(&self, t: Timestamp) -> bool {
        valid_at(self.expiration_date, t)
    }

    /// Drainable by a debit at `ts` (the reference's eager rule): something left, granted at or
    /// before `ts`, valid at `ts`.
    pub fn drainable_at(&self, ts: Timestamp) -> bool {
        self.amount_remaining.is_positive() && self.message_timestamp <= ts && self.valid_at(ts)
    }

    pub fn order_key(&self) -> OrderKey<'_> {
        (self.message_timestamp, &self.credit_ref, self.credit_index)
    }
}

/// Balance of a set of lots at `at`: `max(0, Σ remaining of lots valid at at)`.
pub fn balance_at<'a, I: IntoIterator<Item = &'a Lot>>(lots: I, at: Timestamp) -> Option<Credits> {
    let mut total = Credits::ZERO;
    for lot in lots {
        if lot.valid_at(at) {
            total = total.checked_add(lot.amount_remaining)?;
        }
    }
    Some(total.max(Credits::ZERO))
}

/// One group of the per-expiry breakdown of a balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceDetail {
    pub expiration_date: Option<Timestamp>,
    pub amount: Credits,
}

/// Balance with details: lots with something left and valid at `at`, grouped by exact expiry,
/// the non-expiring group first, then ascending expiry.
pub fn balance_details_at<'a, I: IntoIterator<Item = &'a Lot>>(
    lots: I,
    at: Timestamp,
) -> Option<(Credits, Vec<BalanceDetail>)> {
    balance_details_from_sums(
        lots.into_iter()
            .filter(|lot| lot.amount_remaining.is_positive() && lot.valid_at(at))
            .map(|lot| (lot.expiration_date, lot.amount_remaining)),
    )
}

/// The breakdown of [`balance_details_at`] from amounts already selected (for instance summed
/// per expiry by a store): summed per exact expiry, the non-expiring group first, then
/// ascending expiry; the total is clamped at 0. `None` on overflow.
pub fn balance_details_from_sums(
    sums: impl IntoIterator<Item = (Option<Timestamp>, Credits)>,
) -> Option<(Credits, Vec<BalanceDetail>)> {
    let mut groups: std::collections::BTreeMap<(bool, Option<Timestamp>), Credits> =
        std::collections::BTreeMap::new();
    for (expiration_date, amount) in sums {
        let slot = groups
            .entry((expiration_date.is_some(), expiration_date))
            .or_insert(Credits::ZERO);
        *slot = slot.checked_add(amount)?;
    }
    let mut total = Credits::ZERO;
    let mut details = Vec::with_capacity(groups.len());
    for ((_, expiration_date), amount) in groups {
        total = total.checked_add(amount)?;
        details.push(BalanceDetail {
            expiration_date,
            amount,
        });
    }
    Some((total.max(Credits::ZERO), details))
}
