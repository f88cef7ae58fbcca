//! Fresh, real databases for tests. PostgreSQL comes from `LOTLEDGER_TEST_PG_URL` (set by
//! `scripts/with-postgres`, which starts a throwaway cluster); a test that cannot reach it
//! fails with a message saying so, it never skips.

use std::sync::atomic::{AtomicU64, Ordering};

use lotledger_store_pg::PgStore;
use lotledger_store_sqlite::SqliteStore;
use sqlx::Connection;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The URL of the PostgreSQL server the tests use (an admin database on it).
pub fn pg_admin_url() -> String {
    std::env::var("LOTLEDGER_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{database}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A unique name for a test database or file.
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates an empty database on the test server and returns its URL.
///
/// # Panics
/// When the server cannot be reached: the tests need a real PostgreSQL (`scripts/test` starts one).
pub async fn fresh_pg_url() -> String {
    let admin = pg_admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
        panic!("cannot reach PostgreSQL at {admin} ({e}); run the tests with scripts/test, which starts a throwaway cluster")
    });
    let name = unique_name("lotledger_test");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    let _ = conn.close().await;
    with_database(&admin, &name)
}

/// A migrated PostgreSQL store on a fresh database.
pub async fn fresh_pg() -> PgStore {
    let url = fresh_pg_url().await;
    PgStore::open(&url)
        .await
        .unwrap_or_else(|e| panic!("opening {url}: {e}"))
}

/// A migrated SQLite store in a fresh file inside `dir`, and its URL.
pub async fn fresh_sqlite(dir: &tempfile::TempDir) -> (SqliteStore, String) {
    let url = fresh_sqlite_url(dir);
    let store = SqliteStore::open(&url)
        .await
        .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    (store, url)
}

/// The URL of a not-yet-existing SQLite file inside `dir`.
pub fn fresh_sqlite_url(dir: &tempfile::TempDir) -> String {
    format!(
        "sqlite://{}",
        dir.path()
            .join(format!("{}.db", unique_name("ledger")))
            .display()
    )
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
}
