//! Whole databases on a server: created and dropped by name, for the bench and the tests (each
//! run on a database of its own). The URLs given here name a database the caller may
//! `CREATE DATABASE` from.

use sqlx::Connection;
use sqlx::postgres::PgConnectOptions;
use std::str::FromStr;

use lotledger_store::StoreError;

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A name no other database (or file) made by this machine's processes has: `prefix`, the
/// process id, a counter and the clock's nanoseconds. `prefix` should be letters, digits and
/// `_` for the name to be one [`create_database`] accepts.
pub fn unique_database_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// A database name these functions accept: ASCII letters, digits and `_`, 1 to 63 of them (so
/// that it needs no quoting rules beyond the double quotes it is written in).
fn checked(name: &str) -> Result<&str, StoreError> {
    let fine = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if fine {
        Ok(name)
    } else {
        Err(StoreError::Config(format!(
            "{name:?} is not a database name lotledger creates or drops (letters, digits, _)"
        )))
    }
}

async fn connect(admin_url: &str) -> Result<sqlx::PgConnection, StoreError> {
    let options =
        PgConnectOptions::from_str(admin_url).map_err(|e| StoreError::Config(e.to_string()))?;
    sqlx::PgConnection::connect_with(&options)
        .await
        .map_err(|e| StoreError::Unavailable(Box::new(e)))
}

/// Creates the empty database `name` on the server of `admin_url` and returns its URL.
pub async fn create_database(admin_url: &str, name: &str) -> Result<String, StoreError> {
    let name = checked(name)?;
    let mut conn = connect(admin_url).await?;
    let created = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await
        .map_err(crate::wrappers::db_err);
    let _ = conn.close().await;
    created?;
    Ok(with_database(admin_url, name))
}

/// Drops the database `name` from the server of `admin_url`, closing its connections; a
/// database that is not there is no error.
pub async fn drop_database(admin_url: &str, name: &str) -> Result<(), StoreError> {
    let name = checked(name)?;
    let mut conn = connect(admin_url).await?;
    let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await
    .map_err(crate::wrappers::db_err);
    let _ = conn.close().await;
    dropped.map(drop)
}

/// `url` with its database name replaced by `database` (its query string kept).
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base
        .get(scheme_end..)
        .and_then(|rest| rest.find('/'))
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{database}", base.get(..host_end).unwrap_or(base));
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_in_url() {
        assert_eq!(
            super::with_database("postgres://u@h:5/postgres", "x"),
            "postgres://u@h:5/x"
        );
        assert_eq!(
            super::with_database("postgres://u@h:5/postgres?sslmode=disable", "x"),
            "postgres://u@h:5/x?sslmode=disable"
        );
        assert_eq!(
            super::with_database("postgres://u@h:5", "x"),
            "postgres://u@h:5/x"
        );
    }

    #[test]
    fn only_plain_names_are_created_or_dropped() {
        for bad in ["", "a\"b", "a b", "x;DROP", &"n".repeat(64)] {
            assert!(super::checked(bad).is_err(), "{bad:?}");
        }
        assert!(super::checked(&super::unique_database_name("lotledger_bench")).is_ok());
        assert_ne!(
            super::unique_database_name("x"),
            super::unique_database_name("x")
        );
    }
}
