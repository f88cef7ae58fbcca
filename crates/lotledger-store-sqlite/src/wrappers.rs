//! Hand-written mapping between SQLite rows and core types.

use lotledger_core::{Credits, HistoryRow, Lot, Timestamp};
use lotledger_store::{MessageRecord, MessageStatus, StoreError};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

pub fn db_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
            StoreError::Unavailable(Box::new(e))
        }
        // SQLITE_BUSY / SQLITE_LOCKED (and their extended codes): another process holds the
        // file's lock beyond the busy timeout.
        sqlx::Error::Database(ref d)
            if d.code().is_some_and(|c| {
                c.parse::<i64>()
                    .is_ok_and(|n| n & 0xff == 5 || n & 0xff == 6)
            }) =>
        {
            StoreError::Unavailable(Box::new(e))
        }
        other => StoreError::Database(Box::new(other)),
    }
}

fn ts(micros: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_micros(micros)
        .map_err(|e| StoreError::Corrupt(format!("instant {micros}: {e}")))
}

fn opt_ts(micros: Option<i64>) -> Result<Option<Timestamp>, StoreError> {
    micros.map(ts).transpose()
}

/// A column of texts kept by [`lotledger_store::compact`].
fn compact_text(r: &SqliteRow, column: &str) -> Result<Option<String>, StoreError> {
    let stored: Option<&[u8]> = r.try_get(column).map_err(db_err)?;
    lotledger_store::compact::decode_opt(stored)
}

pub fn history_row(r: &SqliteRow) -> Result<HistoryRow, StoreError> {
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

pub fn lot(r: &SqliteRow) -> Result<Lot, StoreError> {
    Ok(Lot {
        address: r.try_get("address").map_err(db_err)?,
        credit_ref: r.try_get("credit_ref").map_err(db_err)?,
        credit_index: r.try_get("credit_index").map_err(db_err)?,
        amount_remaining: Credits(r.try_get("amount_remaining").map_err(db_err)?),
        expiration_date: opt_ts(r.try_get("expiration_date").map_err(db_err)?)?,
        message_timestamp: ts(r.try_get("message_timestamp").map_err(db_err)?)?,
    })
}

pub fn message_record(r: &SqliteRow) -> Result<MessageRecord, StoreError> {
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

/// A reference (item hash, credit ref) as the `refs` table keeps it: a BLOB of 32 bytes for 64
/// lower-case hex digits, TEXT otherwise ([`lotledger_store::hash_bytes`]). Bound wherever SQL
/// looks a reference up by value; read back through `ref_text!()`.
#[derive(Debug, Clone)]
pub enum StoredRef {
    Hash(Vec<u8>),
    Text(String),
}

impl StoredRef {
    pub fn of(reference: &str) -> StoredRef {
        match lotledger_store::hash_bytes(reference) {
            Some(bytes) => StoredRef::Hash(bytes.to_vec()),
            None => StoredRef::Text(reference.to_string()),
        }
    }
}

impl sqlx::Type<sqlx::Sqlite> for StoredRef {
    fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
        <Vec<u8> as sqlx::Type<sqlx::Sqlite>>::type_info()
    }
}

impl<'q> sqlx::Encode<'q, sqlx::Sqlite> for StoredRef {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::sqlite::SqliteArgumentsBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        match self {
            StoredRef::Hash(bytes) => {
                <Vec<u8> as sqlx::Encode<'q, sqlx::Sqlite>>::encode_by_ref(bytes, buf)
            }
            StoredRef::Text(text) => {
                <String as sqlx::Encode<'q, sqlx::Sqlite>>::encode_by_ref(text, buf)
            }
        }
    }
}
