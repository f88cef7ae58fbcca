//! Hand-written mapping between PostgreSQL rows and core types.

use lotledger_core::{HistoryRow, Lot, Timestamp};
use lotledger_store::rows::{self, Columns};
use lotledger_store::{MessageRecord, StoreError};
use sqlx::Row;
use sqlx::postgres::PgRow;
use time::OffsetDateTime;

pub fn db_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => StoreError::Unavailable(Box::new(e)),
        // Connection exceptions (class 08) and server shutdown / crash / start-up (57P0x).
        sqlx::Error::Database(ref d)
            if d.code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57P0")) =>
        {
            StoreError::Unavailable(Box::new(e))
        }
        other => StoreError::Database(Box::new(other)),
    }
}

/// A core instant as a `TIMESTAMPTZ` value. Core instants lie within years 1..=9999, which
/// `OffsetDateTime` represents; the epoch stands in for the impossible failure.
pub fn odt(t: Timestamp) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.as_micros()) * 1000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub fn opt_odt(t: Option<Timestamp>) -> Option<OffsetDateTime> {
    t.map(odt)
}

pub fn ts(t: OffsetDateTime) -> Result<Timestamp, StoreError> {
    let micros = t.unix_timestamp_nanos() / 1000;
    i64::try_from(micros)
        .ok()
        .and_then(|m| Timestamp::from_micros(m).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("instant {t} out of range")))
}

/// A stable 64-bit advisory-lock key (FNV-1a over a namespace and the value).
pub fn lock_key(namespace: &str, value: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in namespace.bytes().chain([0u8]).chain(value.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

/// A row's columns as [`lotledger_store::rows`] reads them.
struct Cols<'r>(&'r PgRow);

impl Cols<'_> {
    fn get<'r, T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>>(
        &'r self,
        column: &str,
    ) -> Result<T, StoreError> {
        self.0.try_get(column).map_err(db_err)
    }
}

impl Columns for Cols<'_> {
    fn text(&self, column: &str) -> Result<String, StoreError> {
        self.get(column)
    }
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        self.get(column)
    }
    fn int(&self, column: &str) -> Result<i64, StoreError> {
        self.get(column)
    }
    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        self.get(column)
    }
    fn int32(&self, column: &str) -> Result<i32, StoreError> {
        self.get(column)
    }
    fn instant(&self, column: &str) -> Result<Timestamp, StoreError> {
        ts(self.get::<OffsetDateTime>(column)?)
    }
    fn opt_instant(&self, column: &str) -> Result<Option<Timestamp>, StoreError> {
        self.get::<Option<OffsetDateTime>>(column)?
            .map(ts)
            .transpose()
    }
    fn compact_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        lotledger_store::compact::decode_opt(self.get::<Option<&[u8]>>(column)?)
    }
}

pub fn history_row(r: &PgRow) -> Result<HistoryRow, StoreError> {
    rows::history_row(&Cols(r))
}

pub fn lot(r: &PgRow) -> Result<Lot, StoreError> {
    rows::lot(&Cols(r))
}

pub fn message_record(r: &PgRow) -> Result<MessageRecord, StoreError> {
    rows::message_record(&Cols(r))
}

/// A reference (item hash, credit ref) as the `refs` table keeps it: `(hash, name)` — the 32
/// bytes of 64 lower-case hex digits ([`lotledger_store::hash_bytes`]), or else the text.
/// Exactly one is set.
pub fn ref_parts(reference: &str) -> (Option<Vec<u8>>, Option<String>) {
    match lotledger_store::hash_bytes(reference) {
        Some(bytes) => (Some(bytes.to_vec()), None),
        None => (None, Some(reference.to_string())),
    }
}

/// The text of a `refs` row, the inverse of [`ref_parts`]: a hash as lower-case hex, else the
/// name; `None` for a row with neither.
pub fn ref_text(hash: Option<Vec<u8>>, name: Option<String>) -> Option<String> {
    match hash {
        Some(hash) => Some(lotledger_store::compact::lower_hex("", &hash)),
        None => name,
    }
}

/// [`ref_parts`] of many references, as the two arrays `UNNEST($n::bytea[], $m::text[])` takes.
pub fn ref_arrays<'a>(
    references: impl IntoIterator<Item = &'a str>,
) -> (Vec<Option<Vec<u8>>>, Vec<Option<String>>) {
    references.into_iter().map(ref_parts).unzip()
}
