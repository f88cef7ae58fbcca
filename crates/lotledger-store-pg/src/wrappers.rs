//! Hand-written mapping between PostgreSQL rows and core types.

use lotledger_core::{Credits, HistoryRow, Lot, Timestamp};
use lotledger_store::{MessageRecord, MessageStatus, StoreError};
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

fn opt_ts(t: Option<OffsetDateTime>) -> Result<Option<Timestamp>, StoreError> {
    t.map(ts).transpose()
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

/// A column of texts kept by [`lotledger_store::compact`].
fn compact_text(r: &PgRow, column: &str) -> Result<Option<String>, StoreError> {
    let stored: Option<&[u8]> = r.try_get(column).map_err(db_err)?;
    lotledger_store::compact::decode_opt(stored)
}

pub fn history_row(r: &PgRow) -> Result<HistoryRow, StoreError> {
    Ok(HistoryRow {
        address: r.try_get("address").map_err(db_err)?,
        amount: Credits(r.try_get("amount").map_err(db_err)?),
        price: r.try_get("price").map_err(db_err)?,
        bonus_amount: r.try_get("bonus_amount").map_err(db_err)?,
        tx_hash: compact_text(r, "tx_hash")?,
        token: r.try_get("token").map_err(db_err)?,
        chain: r.try_get("chain").map_err(db_err)?,
        provider: r.try_get("provider").map_err(db_err)?,
        origin: compact_text(r, "origin")?,
        origin_ref: compact_text(r, "origin_ref")?,
        payment_method: r.try_get("payment_method").map_err(db_err)?,
        credit_ref: r.try_get("credit_ref").map_err(db_err)?,
        credit_index: r.try_get("credit_index").map_err(db_err)?,
        expiration_date: opt_ts(r.try_get("expiration_date").map_err(db_err)?)?,
        message_timestamp: ts(r.try_get("message_timestamp").map_err(db_err)?)?,
        expense_count: r.try_get("expense_count").map_err(db_err)?,
        expense_size_mib: r.try_get("expense_size_mib").map_err(db_err)?,
    })
}

pub fn lot(r: &PgRow) -> Result<Lot, StoreError> {
    Ok(Lot {
        address: r.try_get("address").map_err(db_err)?,
        credit_ref: r.try_get("credit_ref").map_err(db_err)?,
        credit_index: r.try_get("credit_index").map_err(db_err)?,
        amount_remaining: Credits(r.try_get("amount_remaining").map_err(db_err)?),
        expiration_date: opt_ts(r.try_get("expiration_date").map_err(db_err)?)?,
        message_timestamp: ts(r.try_get("message_timestamp").map_err(db_err)?)?,
    })
}

pub fn message_record(r: &PgRow) -> Result<MessageRecord, StoreError> {
    let status: String = r.try_get("status").map_err(db_err)?;
    let error: Option<String> = r.try_get("error").map_err(db_err)?;
    let status = match status.as_str() {
        "processed" => MessageStatus::Processed,
        "rejected" => MessageStatus::Rejected {
            error: error.unwrap_or_default(),
        },
        other => {
            return Err(StoreError::Corrupt(format!(
                "unknown message status {other:?}"
            )));
        }
    };
    Ok(MessageRecord {
        item_hash: r.try_get("item_hash").map_err(db_err)?,
        status,
        ignored: r.try_get("ignored").map_err(db_err)?,
        recorded_at: ts(r.try_get("recorded_at").map_err(db_err)?)?,
    })
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

/// [`ref_parts`] of many references, as the two arrays `UNNEST($n::bytea[], $m::text[])` takes.
pub fn ref_arrays<'a>(
    references: impl IntoIterator<Item = &'a str>,
) -> (Vec<Option<Vec<u8>>>, Vec<Option<String>>) {
    references.into_iter().map(ref_parts).unzip()
}
