//! The ledger as of an instant (issue 12, part 2) against the one replay, on random histories
//! of one address: at any instant after the last row, the lots left are the replay's; every
//! lot's drains add up to what it lost; at any instant, the balance is the replay's balance of
//! the rows up to it, evaluated then.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

use lotledger_core::{Credits, HistoryRow, Timestamp, as_of, balance_as_of, balance_at, replay};
use proptest::prelude::*;

const T0: i64 = 1_772_323_200;

fn at(hours: i64) -> Timestamp {
    Timestamp::from_unix_seconds(T0 + hours * 3600).unwrap()
}

/// Rows of one address: `(hours, amount, expiry in hours after the row)`, a negative amount a
/// debit.
fn history(rows: &[(i64, i64, Option<i64>)]) -> Vec<HistoryRow> {
    rows.iter()
        .enumerate()
        .map(|(i, &(hours, amount, expires))| {
            let mut row = HistoryRow::bare(
                "0xa",
                Credits(amount),
                &format!("m{:03}", i / 2),
                i32::try_from(i % 2).unwrap(),
                at(hours),
            );
            if amount > 0 {
                row.expiration_date = expires.map(|e| at(hours + e));
            }
            row
        })
        .collect()
}

fn rows_strategy() -> impl Strategy<Value = Vec<(i64, i64, Option<i64>)>> {
    prop::collection::vec(
        (
            0i64..48,
            prop_oneof![1i64..500, -400i64..0],
            prop::option::of(1i64..30),
        ),
        0..40,
    )
}

proptest! {
    #[test]
    fn as_of_agrees_with_the_replay(raw in rows_strategy(), probe in 0i64..80) {
        let rows = history(&raw);
        let end = at(1000);
        let lots = as_of(&rows, end).unwrap();
        let left: Vec<(String, i32, i64)> = lots
            .iter()
            .filter(|l| l.remaining.0 > 0)
            .map(|l| (l.credit_ref.clone(), l.credit_index, l.remaining.0))
            .collect();
        let replayed: Vec<(String, i32, i64)> = replay(&rows)
            .unwrap()
            .into_iter()
            .map(|l| (l.credit_ref, l.credit_index, l.amount_remaining.0))
            .collect();
        prop_assert_eq!(left, replayed);
        for lot in &lots {
            let taken: i64 = lot.drained_by.iter().map(|d| d.3.0).sum();
            prop_assert_eq!(lot.amount.0 - lot.remaining.0, taken);
            prop_assert!(lot.drained_by.iter().all(|d| d.2 >= lot.granted_at));
        }
        // At an instant in the middle: the rows up to it, replayed, evaluated then.
        let t = at(probe);
        let upto: Vec<HistoryRow> =
            rows.iter().filter(|r| r.message_timestamp <= t).cloned().collect();
        let expected = balance_at(&replay(&upto).unwrap(), t).unwrap();
        prop_assert_eq!(balance_as_of(&as_of(&rows, t).unwrap(), t).unwrap(), expected);
    }
}
