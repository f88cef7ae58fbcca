//! Hand-written mapping between SQLite rows and core types.

use lotledger_core::{HistoryRow, Lot};
use lotledger_store::pooled::{self, Dialect as _};
use lotledger_store::{MessageRecord, StoreError};
use sqlx::Sqlite;
use sqlx::sqlite::SqliteRow;

pub fn db_err(e: sqlx::Error) -> StoreError {
    Sqlite::error(e)
}

/// The store's error for a rusqlite error (the write connection, the scans).
pub fn sqlite_err(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(ref f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            StoreError::Unavailable(Box::new(e))
        }
        other => StoreError::Database(Box::new(other)),
    }
}

/// A rusqlite connection to `path` opened with `flags`, waiting up to 10 s on another
/// connection's lock (as the pool's connections do), with `pragmas` run on it.
pub fn open_connection(
    path: &std::path::Path,
    flags: rusqlite::OpenFlags,
    pragmas: &str,
) -> Result<rusqlite::Connection, StoreError> {
    let conn = rusqlite::Connection::open_with_flags(path, flags).map_err(sqlite_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sqlite_err)?;
    conn.execute_batch(pragmas).map_err(sqlite_err)?;
    Ok(conn)
}

pub use lotledger_store::rows::instant_from_micros as ts;

pub fn history_row(r: &SqliteRow) -> Result<HistoryRow, StoreError> {
    pooled::history_row::<Sqlite>(r)
}

pub fn replay_row(address: &str, r: &SqliteRow) -> Result<HistoryRow, StoreError> {
    pooled::replay_row::<Sqlite>(address, r)
}

pub fn lot(r: &SqliteRow) -> Result<Lot, StoreError> {
    pooled::lot::<Sqlite>(r)
}

pub fn stored_message(r: &SqliteRow) -> Result<MessageRecord, StoreError> {
    pooled::stored_message::<Sqlite>(r)
}

/// A reference (item hash, credit ref) as the `refs` table keeps it: a BLOB of 32 bytes for 64
/// lower-case hex digits, TEXT otherwise ([`lotledger_store::hash_bytes`]). Bound wherever SQL
/// looks a reference up by value or interns it, through sqlx (the pool's reads) or rusqlite
/// (the write connection); read back through `ref_text!()`.
#[derive(Debug, Clone, Copy)]
pub enum StoredRef<'a> {
    Hash([u8; 32]),
    Text(&'a str),
}

impl<'a> StoredRef<'a> {
    pub fn of(reference: &'a str) -> StoredRef<'a> {
        match lotledger_store::hash_bytes(reference) {
            Some(bytes) => StoredRef::Hash(bytes),
            None => StoredRef::Text(reference),
        }
    }
}

impl sqlx::Type<sqlx::Sqlite> for StoredRef<'_> {
    fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
        <Vec<u8> as sqlx::Type<sqlx::Sqlite>>::type_info()
    }
}

impl<'q> sqlx::Encode<'q, sqlx::Sqlite> for StoredRef<'_> {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::sqlite::SqliteArgumentsBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        match self {
            StoredRef::Hash(bytes) => {
                <&[u8] as sqlx::Encode<'q, sqlx::Sqlite>>::encode_by_ref(&bytes.as_slice(), buf)
            }
            StoredRef::Text(text) => {
                <&str as sqlx::Encode<'q, sqlx::Sqlite>>::encode_by_ref(text, buf)
            }
        }
    }
}

impl rusqlite::ToSql for StoredRef<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            StoredRef::Hash(bytes) => ValueRef::Blob(bytes),
            StoredRef::Text(text) => ValueRef::Text(text.as_bytes()),
        }))
    }
}
