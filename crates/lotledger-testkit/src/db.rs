//! Fresh, real databases for tests. PostgreSQL comes from `LOTLEDGER_TEST_PG_URL` (set by
//! `scripts/with-postgres`, which starts a throwaway cluster); a test that cannot reach it
//! fails with a message saying so, it never skips.

use lotledger_store_pg::PgStore;
use lotledger_store_sqlite::SqliteStore;

/// The URL of the PostgreSQL server the tests use (an admin database on it).
pub fn pg_admin_url() -> String {
    std::env::var("LOTLEDGER_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A unique name for a test database or file.
pub fn unique_name(prefix: &str) -> String {
    lotledger_store_pg::unique_database_name(prefix)
}

/// Creates an empty database on the test server and returns its URL.
///
/// # Panics
/// When the server cannot be reached: the tests need a real PostgreSQL (`scripts/test` starts one).
pub async fn fresh_pg_url() -> String {
    let admin = pg_admin_url();
    let name = unique_name("lotledger_test");
    lotledger_store_pg::create_database(&admin, &name)
        .await
        .unwrap_or_else(|e| {
            panic!("creating {name} on PostgreSQL at {admin} ({e}); run the tests with scripts/test, which starts a throwaway cluster")
        })
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
