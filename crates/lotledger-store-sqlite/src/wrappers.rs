//! Hand-written mapping between SQLite rows and core types.

use lotledger_core::{HistoryRow, Lot, Timestamp};
use lotledger_store::rows::{self, Columns};
use lotledger_store::{MessageRecord, StoreError};
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

pub use lotledger_store::rows::instant_from_micros as ts;

/// A row's columns as [`lotledger_store::rows`] reads them.
struct Cols<'r>(&'r SqliteRow);

impl Cols<'_> {
    fn get<'r, T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>>(
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
        ts(self.get::<i64>(column)?)
    }
    fn opt_instant(&self, column: &str) -> Result<Option<Timestamp>, StoreError> {
        self.get::<Option<i64>>(column)?.map(ts).transpose()
    }
    fn compact_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        lotledger_store::compact::decode_opt(self.get::<Option<&[u8]>>(column)?)
    }
}

pub fn history_row(r: &SqliteRow) -> Result<HistoryRow, StoreError> {
    rows::history_row(&Cols(r))
}

pub fn lot(r: &SqliteRow) -> Result<Lot, StoreError> {
    rows::lot(&Cols(r))
}

pub fn message_record(r: &SqliteRow) -> Result<MessageRecord, StoreError> {
    rows::message_record(&Cols(r))
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
