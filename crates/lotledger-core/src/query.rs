//! The credit-history listing of the reference's API (SPEC Part II 4.1, 4.4): filters, the
//! sort with its null placement and tie-breakers, and the keyset predicate of cursor mode.
//! Evaluated over one address's rows; pure, so that every store lists exactly alike.

use std::cmp::Ordering;

use crate::{HistoryRow, Timestamp};

/// `direction=incoming|outgoing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Incoming,
    Outgoing,
}

/// The filters shared by the listing, its count and the summary. `None` = not given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    pub tx_hash: Option<String>,
    pub token: Option<String>,
    pub chain: Option<String>,
    pub provider: Option<String>,
    pub origin: Option<String>,
    pub origin_ref: Option<String>,
    pub payment_method: Option<String>,
    pub has_expiration: Option<bool>,
    /// Active when non-empty; rows with a null payment method are excluded too (SQL `NOT IN`).
    pub exclude_payment_method: Vec<String>,
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
    pub direction: Option<Direction>,
    /// Message types of the resource a row pays for. lotledger keeps no resource messages, so
    /// a non-empty list matches nothing (the reference: "unresolvable resources never match").
    pub resource_types: Vec<String>,
    /// Effective origin (`origin`, or `origin_ref` when `origin` is null or empty).
    pub resource: Option<String>,
}

/// `COALESCE(NULLIF(origin, ''), origin_ref)`.
pub fn effective_origin(row: &HistoryRow) -> Option<&str> {
    match row.origin.as_deref() {
        Some(o) if !o.is_empty() => Some(o),
        _ => row.origin_ref.as_deref(),
    }
}

impl HistoryFilter {
    pub fn matches(&self, row: &HistoryRow) -> bool {
        let eq = |want: &Option<String>, have: &Option<String>| {
            want.as_ref()
                .is_none_or(|w| have.as_deref() == Some(w.as_str()))
        };
        eq(&self.tx_hash, &row.tx_hash)
            && eq(&self.token, &row.token)
            && eq(&self.chain, &row.chain)
            && eq(&self.provider, &row.provider)
            && eq(&self.origin, &row.origin)
            && eq(&self.origin_ref, &row.origin_ref)
            && eq(&self.payment_method, &row.payment_method)
            && self
                .has_expiration
                .is_none_or(|h| h == row.expiration_date.is_some())
            && (self.exclude_payment_method.is_empty()
                || row
                    .payment_method
                    .as_ref()
                    .is_some_and(|p| !self.exclude_payment_method.contains(p)))
            && self.start.is_none_or(|s| row.message_timestamp >= s)
            && self.end.is_none_or(|e| row.message_timestamp <= e)
            && match self.direction {
                None => true,
                Some(Direction::Incoming) => row.amount.0 > 0,
                Some(Direction::Outgoing) => row.amount.0 < 0,
            }
            && self.resource_types.is_empty()
            && self
                .resource
                .as_ref()
                .is_none_or(|r| effective_origin(row) == Some(r.as_str()))
    }
}

/// `entry_count`, `total_amount`, `total_incoming`, `total_outgoing`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub entry_count: u64,
    pub total_amount: i128,
    pub total_incoming: i128,
    pub total_outgoing: i128,
}

/// Aggregates rows (exact: sums in i128 cannot overflow for any realistic row count).
pub fn summarize<'a>(rows: impl IntoIterator<Item = &'a HistoryRow>) -> Summary {
    let mut s = Summary::default();
    for r in rows {
        let a = i128::from(r.amount.0);
        s.entry_count += 1;
        s.total_amount += a;
        if a > 0 {
            s.total_incoming += a;
        } else {
            s.total_outgoing += a;
        }
    }
    s
}

/// `sort_by` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    MessageTimestamp,
    ExpirationDate,
    PaymentMethod,
    Amount,
    Origin,
    TxHash,
    Provider,
}

impl SortBy {
    pub const ALL: [SortBy; 7] = [
        SortBy::MessageTimestamp,
        SortBy::ExpirationDate,
        SortBy::PaymentMethod,
        SortBy::Amount,
        SortBy::Origin,
        SortBy::TxHash,
        SortBy::Provider,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SortBy::MessageTimestamp => "message_timestamp",
            SortBy::ExpirationDate => "expiration_date",
            SortBy::PaymentMethod => "payment_method",
            SortBy::Amount => "amount",
            SortBy::Origin => "origin",
            SortBy::TxHash => "tx_hash",
            SortBy::Provider => "provider",
        }
    }

    pub fn parse(text: &str) -> Option<SortBy> {
        SortBy::ALL.into_iter().find(|s| s.name() == text)
    }

    /// Columns the reference sorts `NULLS LAST` in both directions.
    pub fn nullable(self) -> bool {
        matches!(
            self,
            SortBy::ExpirationDate | SortBy::Origin | SortBy::TxHash | SortBy::Provider
        )
    }

    /// Whether the cursor carries this column's value as a datetime.
    pub fn is_datetime(self) -> bool {
        matches!(self, SortBy::MessageTimestamp | SortBy::ExpirationDate)
    }

    /// The row's value of this column.
    pub fn value(self, row: &HistoryRow) -> SortValue {
        let text = |t: &Option<String>| t.clone().map_or(SortValue::Null, SortValue::Text);
        match self {
            SortBy::MessageTimestamp => SortValue::Time(row.message_timestamp),
            SortBy::ExpirationDate => row.expiration_date.map_or(SortValue::Null, SortValue::Time),
            SortBy::PaymentMethod => text(&row.payment_method),
            SortBy::Amount => SortValue::Int(row.amount.0),
            SortBy::Origin => text(&row.origin),
            SortBy::TxHash => text(&row.tx_hash),
            SortBy::Provider => text(&row.provider),
        }
    }
}

/// A sort column's value (SQL `NULL` included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortValue {
    Null,
    Int(i64),
    Text(String),
    Time(Timestamp),
}

impl SortValue {
    /// SQL comparison: `None` when either side is NULL or the kinds differ.
    fn sql_cmp(&self, other: &SortValue) -> Option<Ordering> {
        match (self, other) {
            (SortValue::Int(a), SortValue::Int(b)) => Some(a.cmp(b)),
            (SortValue::Text(a), SortValue::Text(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
            (SortValue::Time(a), SortValue::Time(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

/// The ORDER BY of the listing: the column (nulls placed as the reference places them), then
/// `credit_ref`, `credit_index`, all in the same direction.
pub fn compare(sort_by: SortBy, descending: bool, a: &HistoryRow, b: &HistoryRow) -> Ordering {
    let (va, vb) = (sort_by.value(a), sort_by.value(b));
    let primary = match (&va, &vb) {
        (SortValue::Null, SortValue::Null) => Ordering::Equal,
        // Nullable columns: NULLS LAST in both directions. Otherwise PostgreSQL's default:
        // nulls sort as the largest value (last ascending, first descending).
        (SortValue::Null, _) if sort_by.nullable() => return Ordering::Greater,
        (_, SortValue::Null) if sort_by.nullable() => return Ordering::Less,
        (SortValue::Null, _) => Ordering::Greater,
        (_, SortValue::Null) => Ordering::Less,
        _ => va.sql_cmp(&vb).unwrap_or(Ordering::Equal),
    };
    let ord = primary
        .then_with(|| a.credit_ref.as_bytes().cmp(b.credit_ref.as_bytes()))
        .then_with(|| a.credit_index.cmp(&b.credit_index));
    if descending { ord.reverse() } else { ord }
}

/// Where a cursor-mode page starts: strictly after this key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyset {
    pub value: SortValue,
    pub credit_ref: String,
    pub credit_index: i32,
}

/// The reference's keyset predicate (SPEC Part II 4.1), with SQL's three-valued logic.
pub fn after_keyset(sort_by: SortBy, descending: bool, key: &Keyset, row: &HistoryRow) -> bool {
    let tie = (row.credit_ref.as_bytes(), row.credit_index)
        .cmp(&(key.credit_ref.as_bytes(), key.credit_index));
    let tie_after = if descending {
        tie == Ordering::Less
    } else {
        tie == Ordering::Greater
    };
    let col = sort_by.value(row);
    let col_null = col == SortValue::Null;
    if key.value == SortValue::Null && sort_by.nullable() {
        return col_null && tie_after;
    }
    let beyond = match col.sql_cmp(&key.value) {
        Some(Ordering::Less) => descending,
        Some(Ordering::Greater) => !descending,
        Some(Ordering::Equal) => tie_after,
        None => false,
    };
    beyond || col_null
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Credits;

    fn row(r: &str, amount: i64, pm: Option<&str>) -> HistoryRow {
        let mut h = HistoryRow::bare("0xa", Credits(amount), r, 0, Timestamp::UNIX_EPOCH);
        h.payment_method = pm.map(str::to_string);
        h
    }

    #[test]
    fn exclude_payment_method_drops_null_methods_too() {
        let f = HistoryFilter {
            exclude_payment_method: vec!["credit_expense".into()],
            ..HistoryFilter::default()
        };
        assert!(f.matches(&row("a", 1, Some("credit_transfer"))));
        assert!(!f.matches(&row("b", 1, Some("credit_expense"))));
        assert!(!f.matches(&row("c", 1, None)));
    }

    #[test]
    fn zero_amount_rows_have_no_direction() {
        for d in [Direction::Incoming, Direction::Outgoing] {
            let f = HistoryFilter {
                direction: Some(d),
                ..HistoryFilter::default()
            };
            assert!(!f.matches(&row("z", 0, None)));
        }
    }

    #[test]
    fn payment_method_nulls_sort_as_largest() {
        let (a, n) = (row("a", 1, Some("x")), row("b", 1, None));
        assert_eq!(
            compare(SortBy::PaymentMethod, false, &a, &n),
            Ordering::Less
        );
        assert_eq!(
            compare(SortBy::PaymentMethod, true, &a, &n),
            Ordering::Greater
        );
    }

    #[test]
    fn summary_splits_signs() {
        let rows = [row("a", 10, None), row("b", -3, None), row("c", 0, None)];
        let s = summarize(&rows);
        assert_eq!(
            (
                s.entry_count,
                s.total_amount,
                s.total_incoming,
                s.total_outgoing
            ),
            (3, 7, 10, -3)
        );
    }
}
