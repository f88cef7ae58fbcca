//! An address's history as a replay reads it, packed by the server into a few `bytea` values
//! of fixed-width big-endian records ([`Store::replay_history`] on PostgreSQL).
//!
//! Sent as rows, 10 000 history rows cost more in per-row protocol messages, per-value send
//! calls and per-row decoding than the replay of them does (BENCHMARKS.md, "Issue 12, third
//! step"). Packed, each record is a few integers the client cuts out of one buffer.
//!
//! [`Store::replay_history`]: lotledger_store::Store::replay_history

use lotledger_core::{Credits, HistoryRow, Timestamp};
use lotledger_store::StoreError;

use crate::scan::PG_EPOCH_MICROS;

/// One record: `ref_id` (8), `credit_index` (4), `amount` (8), an expiry flag (1, 0 for none)
/// and the expiry (8, zeros for none), `message_timestamp` (8), `policy` (4). Binary
/// `timestamptz` values count µs from 2000-01-01T00:00:00Z.
pub const RECORD: usize = 41;

/// The packed history of the address `$1`: one `bytea` of [`RECORD`]-byte records, NULL for an
/// address without history. A value may hold 1 GB: 26 million records, an address's history
/// far beyond what a replay in memory could hold anyway. (Grouping the rows to split the value
/// sorts them first: ×1.5 the server's time at 10 000 rows.) Every column it reads is in
/// `ix_credit_history_address` (migration 0014): an index-only scan where the table's pages are
/// all visible.
pub const SQL: &str = "SELECT string_agg(int8send(ref_id) || int4send(credit_index) || int8send(amount) \
     || coalesce('\\x01'::bytea || timestamptz_send(expiration_date), \
     '\\x000000000000000000'::bytea) \
     || timestamptz_send(message_timestamp) || int4send(policy), ''::bytea) \
     FROM credit_history WHERE address_id = (SELECT id FROM addresses WHERE address = $1)";

/// A record's fields, before its reference is resolved.
pub struct Record {
    pub ref_id: i64,
    pub credit_index: i32,
    pub amount: i64,
    pub expiration_date: Option<Timestamp>,
    pub message_timestamp: Timestamp,
    pub policy: i32,
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("packed history: {what}"))
}

fn field<const N: usize>(record: &[u8], at: usize) -> Result<[u8; N], StoreError> {
    record
        .get(at..at + N)
        .and_then(|b| <[u8; N]>::try_from(b).ok())
        .ok_or_else(|| corrupt("short record"))
}

fn instant(bytes: [u8; 8]) -> Result<Timestamp, StoreError> {
    i64::from_be_bytes(bytes)
        .checked_add(PG_EPOCH_MICROS)
        .and_then(|micros| Timestamp::from_micros(micros).ok())
        .ok_or_else(|| corrupt("instant out of range"))
}

/// The records of one packed value, in its order.
pub fn records(value: &[u8]) -> impl Iterator<Item = Result<Record, StoreError>> + '_ {
    let whole = value.len().is_multiple_of(RECORD);
    let tail = (!whole).then(|| Err(corrupt("a partial record")));
    value
        .chunks_exact(RECORD)
        .map(|r| {
            let expiration_date = match field::<1>(r, 20)? {
                [0] => None,
                [1] => Some(instant(field(r, 21)?)?),
                _ => return Err(corrupt("expiry flag")),
            };
            Ok(Record {
                ref_id: i64::from_be_bytes(field(r, 0)?),
                credit_index: i32::from_be_bytes(field(r, 8)?),
                amount: i64::from_be_bytes(field(r, 12)?),
                expiration_date,
                message_timestamp: instant(field(r, 29)?)?,
                policy: i32::from_be_bytes(field(r, 37)?),
            })
        })
        .chain(tail)
}

/// `address`'s history row from a record, its reference's text given.
pub fn row(address: &str, record: &Record, credit_ref: &str) -> Result<HistoryRow, StoreError> {
    let mut row = HistoryRow::bare(
        address,
        Credits(record.amount),
        credit_ref,
        record.credit_index,
        record.message_timestamp,
    );
    row.expiration_date = record.expiration_date;
    row.policy = lotledger_store::rows::policy(record.policy)?;
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(expiry: Option<i64>, at: i64, policy: i32) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend(7i64.to_be_bytes());
        r.extend(2i32.to_be_bytes());
        r.extend((-350i64).to_be_bytes());
        match expiry {
            Some(e) => {
                r.push(1);
                r.extend((e - PG_EPOCH_MICROS).to_be_bytes());
            }
            None => r.extend([0u8; 9]),
        }
        r.extend((at - PG_EPOCH_MICROS).to_be_bytes());
        r.extend(policy.to_be_bytes());
        r
    }

    #[test]
    fn records_are_cut_out_of_one_value_with_their_nulls() {
        let t = 1_700_000_000_000_000;
        let mut value = record(None, t, 1);
        value.extend(record(Some(t + 5), t + 1, 2));
        let got: Vec<Record> = records(&value).collect::<Result<_, _>>().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].expiration_date, None);
        assert_eq!(got[0].message_timestamp.as_micros(), t);
        assert_eq!(
            (got[0].ref_id, got[0].credit_index, got[0].amount),
            (7, 2, -350)
        );
        assert_eq!(got[1].expiration_date.map(|e| e.as_micros()), Some(t + 5));
        assert_eq!(got[1].policy, 2);
        let row = row("0xabc", &got[1], "r").unwrap();
        assert_eq!(row.policy, lotledger_core::Policy::V2);
        assert_eq!(row.amount, Credits(-350));
    }

    #[test]
    fn a_damaged_value_is_refused() {
        let t = 1_700_000_000_000_000;
        let mut value = record(None, t, 1);
        value.pop();
        assert!(records(&value).any(|r| r.is_err()), "partial record");
        let mut flag = record(Some(t), t, 1);
        flag[20] = 9;
        assert!(records(&flag).any(|r| r.is_err()), "expiry flag");
        // PostgreSQL's `infinity` is i64::MAX µs: outside the core's years.
        let mut infinite = record(None, t, 1);
        infinite[29..37].copy_from_slice(&i64::MAX.to_be_bytes());
        assert!(records(&infinite).any(|r| r.is_err()), "infinite instant");
        let policy = record(None, t, 9);
        let got: Vec<Record> = records(&policy).collect::<Result<_, _>>().unwrap();
        assert!(row("0xabc", &got[0], "r").is_err(), "unknown policy");
    }
}
