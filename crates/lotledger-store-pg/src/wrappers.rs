//! Hand-written mapping between PostgreSQL rows and core types.

use lotledger_core::{HistoryRow, Lot, Timestamp};
use lotledger_store::pooled::{self, Dialect as _};
use lotledger_store::{MessageRecord, StoreError};
use sqlx::Postgres;
use sqlx::postgres::PgRow;
use time::OffsetDateTime;

pub fn db_err(e: sqlx::Error) -> StoreError {
    Postgres::error(e)
}

/// A core instant as a `TIMESTAMPTZ` value.
pub fn odt(t: Timestamp) -> OffsetDateTime {
    Postgres::instant(t)
}

pub fn opt_odt(t: Option<Timestamp>) -> Option<OffsetDateTime> {
    t.map(odt)
}

pub fn ts(t: OffsetDateTime) -> Result<Timestamp, StoreError> {
    Postgres::timestamp(t)
}

/// The advisory-lock key every writer takes first: shared by a transaction that then locks
/// its own keys, exclusive by one that has too many keys to lock (`PgTx::lock_many`). The
/// smallest key, so that it sorts before every other; [`lock_key`] never gives it.
pub const WRITERS_LOCK_KEY: i64 = i64::MIN;

/// A stable 64-bit advisory-lock key (FNV-1a over a namespace and the value), never
/// [`WRITERS_LOCK_KEY`].
pub fn lock_key(namespace: &str, value: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in namespace.bytes().chain([0u8]).chain(value.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes()).max(WRITERS_LOCK_KEY + 1)
}

pub fn history_row(r: &PgRow) -> Result<HistoryRow, StoreError> {
    pooled::history_row::<Postgres>(r)
}

pub fn lot(r: &PgRow) -> Result<Lot, StoreError> {
    pooled::lot::<Postgres>(r)
}

pub fn message_record(r: &PgRow) -> Result<MessageRecord, StoreError> {
    pooled::message_record::<Postgres>(r)
}

pub fn stored_message(r: &PgRow) -> Result<MessageRecord, StoreError> {
    pooled::stored_message::<Postgres>(r)
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
