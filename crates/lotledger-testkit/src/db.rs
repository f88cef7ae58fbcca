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
    if !SWEPT.swap(true, std::sync::atomic::Ordering::Relaxed) {
        sweep_dead_test_databases(&admin).await;
    }
    let name = unique_name(TEST_PREFIX);
    lotledger_store_pg::create_database(&admin, &name)
        .await
        .unwrap_or_else(|e| {
            panic!("creating {name} on PostgreSQL at {admin} ({e}); run the tests with scripts/test, which starts a throwaway cluster")
        })
}

/// The prefix of the databases [`fresh_pg_url`] makes; the process id follows it.
const TEST_PREFIX: &str = "lotledger_test";

/// Whether this process swept the server yet.
static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Drops the test databases on the server at `admin` that processes of this machine made and
/// that are gone (no `/proc/PID`): tests do not drop their databases, and a long-lived
/// development cluster filled its disk with them. Runs only on a loopback server (another
/// machine's processes are not in this one's `/proc`) and only where `/proc` exists; any
/// failure leaves the databases where they are. Returns how many were dropped.
pub async fn sweep_dead_test_databases(admin: &str) -> usize {
    use sqlx::Connection as _;
    let proc = std::path::Path::new("/proc");
    if !loopback(admin) || !proc.join("self").exists() {
        return 0;
    }
    let Ok(mut conn) = sqlx::PgConnection::connect(admin).await else {
        return 0;
    };
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE starts_with(datname, $1)")
            .bind(format!("{TEST_PREFIX}_"))
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
    let _ = conn.close().await;
    let mut dropped = 0;
    for name in names {
        let pid = name
            .strip_prefix(TEST_PREFIX)
            .and_then(|rest| rest.strip_prefix('_'))
            .and_then(|rest| rest.split('_').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        let Some(pid) = pid else { continue };
        if pid == std::process::id() || proc.join(pid.to_string()).exists() {
            continue;
        }
        if lotledger_store_pg::drop_database(admin, &name)
            .await
            .is_ok()
        {
            dropped += 1;
        }
    }
    dropped
}

/// Whether the server of a `postgres://` URL is this machine's loopback (or a Unix socket), as
/// the driver reads the URL (a `host` parameter overrides the authority's; no host is its
/// default).
fn loopback(url: &str) -> bool {
    let Ok(options) = <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(url) else {
        return false;
    };
    let host = options.get_host();
    options.get_socket().is_some()
        || matches!(host, "localhost" | "::1" | "[::1]")
        || host.starts_with("127.")
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

/// Every row of every table of the SQLite database at `url`, as text (each table by name, its
/// rows sorted, each value as SQL's `quote()` writes it): two dumps are equal when the
/// ledger's content is, whatever checkpoints moved between its file and its write-ahead log.
///
/// # Panics
/// When the file cannot be read as a database.
pub async fn sqlite_dump(url: &str) -> String {
    use sqlx::{Connection, Row};
    let mut c = sqlx::SqliteConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         ORDER BY name",
    )
    .fetch_all(&mut c)
    .await
    .unwrap_or_else(|e| panic!("tables of {url}: {e}"));
    let mut out = String::new();
    for table in tables {
        let columns: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
        )))
        .fetch_all(&mut c)
        .await
        .unwrap_or_else(|e| panic!("columns of {table}: {e}"));
        let row_text = columns
            .iter()
            .map(|col| format!("quote(\"{col}\")"))
            .collect::<Vec<_>>()
            .join(" || ',' || ");
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {row_text} FROM \"{table}\" ORDER BY 1"
        )))
        .fetch_all(&mut c)
        .await
        .unwrap_or_else(|e| panic!("rows of {table}: {e}"));
        out.push_str(&format!("{table}\n"));
        for row in rows {
            out.push_str(&row.get::<String, _>(0));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::loopback;

    #[test]
    fn only_this_machines_servers_are_loopback() {
        for url in [
            "postgres://postgres@127.0.0.1:5499/postgres",
            "postgres://u:p@localhost/db",
            "postgres://[::1]:5432/db",
            "postgres:///db?host=/tmp/pg",
            "postgres://127.0.0.2/db",
        ] {
            assert!(loopback(url), "{url}");
        }
        for url in [
            "postgres://postgres@db.internal:5432/postgres",
            "postgres://u@10.0.0.5/db",
            "postgres://u:p@[2001:db8::1]:5432/db",
            "postgres://localhost/db?sslmode=disable&host=db.internal",
        ] {
            assert!(!loopback(url), "{url}");
        }
    }
}
