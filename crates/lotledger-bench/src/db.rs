//! Fresh stores for the bench (a SQLite file in a temporary directory, or a new PostgreSQL
//! database dropped afterwards) and the few catalogue queries the bench needs beyond the
//! `Store` trait: row counts, on-disk sizes, server settings.
//!
//! **Boundary note:** this is the only SQL outside the store crates; it reads catalogues and
//! counts, never the ledger's rows.

use std::str::FromStr;

use crate::error::{Context, Result};
use serde::Serialize;
use sqlx::Connection;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

use super::StoreKind;

/// A store created for one bench run.
pub enum Fresh {
    Sqlite {
        url: String,
        /// Removed (with the database file) on drop.
        _dir: tempfile::TempDir,
    },
    Pg {
        url: String,
        admin: String,
        name: String,
    },
}

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// `url` with its database name replaced.
fn with_database(url: &str, database: &str) -> String {
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

impl Fresh {
    /// Creates an empty store location: a new file name in a new temporary directory, or a new
    /// database on the server at `pg_admin` (a URL it can `CREATE DATABASE` with).
    pub async fn create(kind: StoreKind, pg_admin: Option<&str>) -> Result<Fresh> {
        match kind {
            StoreKind::Sqlite => {
                let dir = tempfile::Builder::new()
                    .prefix("lotledger-bench-")
                    .tempdir()
                    .context("creating a temporary directory")?;
                let url = format!("sqlite://{}", dir.path().join("bench.db").display());
                Ok(Fresh::Sqlite { url, _dir: dir })
            }
            StoreKind::Postgres => {
                let Some(admin) = pg_admin else {
                    bail!(
                        "the PostgreSQL bench needs a server: pass --pg-url postgres://USER@HOST:PORT/postgres \
                         (or set LOTLEDGER_BENCH_PG_URL or LOTLEDGER_TEST_PG_URL); the bench creates \
                         and drops its own database there"
                    );
                };
                let mut conn = sqlx::PgConnection::connect(admin).await.with_context(|| {
                    format!(
                        "connecting to PostgreSQL at {}",
                        lotledger_ingest::redact(admin)
                    )
                })?;
                let name = unique_name("lotledger_bench");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                    .execute(&mut conn)
                    .await
                    .with_context(|| format!("CREATE DATABASE {name}"))?;
                let _ = conn.close().await;
                Ok(Fresh::Pg {
                    url: with_database(admin, &name),
                    admin: admin.to_string(),
                    name,
                })
            }
        }
    }

    pub fn url(&self) -> &str {
        match self {
            Fresh::Sqlite { url, .. } | Fresh::Pg { url, .. } => url,
        }
    }

    /// Removes the store (the PostgreSQL database is dropped, its connections closed).
    pub async fn remove(self) -> Result<()> {
        if let Fresh::Pg { admin, name, .. } = self {
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .context("connecting to drop the bench database")?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await
            .with_context(|| format!("DROP DATABASE {name}"))?;
            let _ = conn.close().await;
        }
        Ok(())
    }
}

/// Row counts of the ledger tables.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counts {
    pub history_rows: u64,
    pub lots: u64,
    pub messages: u64,
}

/// On-disk bytes of the ledger tables, indexes included.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sizes {
    pub history_bytes: u64,
    pub history_index_bytes: u64,
    pub lots_bytes: u64,
    pub messages_bytes: u64,
    /// Interned addresses and references (`addresses`, `refs`), where the layout has them.
    pub interned_bytes: u64,
    pub database_bytes: u64,
    /// How the sizes were obtained.
    pub method: String,
}

enum Conn {
    Sqlite(sqlx::SqliteConnection),
    Pg(sqlx::PgConnection),
}

async fn connect(url: &str) -> Result<Conn> {
    if url.starts_with("sqlite:") {
        let options = SqliteConnectOptions::from_str(url)?.read_only(true);
        Ok(Conn::Sqlite(
            sqlx::SqliteConnection::connect_with(&options).await?,
        ))
    } else {
        let options = PgConnectOptions::from_str(url)?;
        Ok(Conn::Pg(sqlx::PgConnection::connect_with(&options).await?))
    }
}

fn non_negative(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Rows in `credit_history`, `credit_lots` and `credit_messages`.
pub async fn counts(url: &str) -> Result<Counts> {
    const SQL: &str = "SELECT (SELECT COUNT(*) FROM credit_history), (SELECT COUNT(*) FROM credit_lots), \
                       (SELECT COUNT(*) FROM credit_messages)";
    let (h, l, m): (i64, i64, i64) = match connect(url).await? {
        Conn::Sqlite(mut c) => sqlx::query_as(SQL).fetch_one(&mut c).await?,
        Conn::Pg(mut c) => sqlx::query_as(SQL).fetch_one(&mut c).await?,
    };
    Ok(Counts {
        history_rows: non_negative(h),
        lots: non_negative(l),
        messages: non_negative(m),
    })
}

/// On-disk sizes: SQLite's `dbstat` (pages of each table's b-trees, indexes included, WAL
/// content seen through the pager), else `page_count × page_size` split by row counts;
/// PostgreSQL's `pg_total_relation_size` (heap, indexes, TOAST; dead tuples included).
pub async fn sizes(url: &str, counts: &Counts) -> Result<Sizes> {
    match connect(url).await? {
        Conn::Sqlite(mut c) => {
            let by_table: Result<Vec<(String, String, i64)>, sqlx::Error> = sqlx::query_as(
                "SELECT m.tbl_name, m.name, SUM(s.pgsize) FROM dbstat AS s \
                 JOIN sqlite_master AS m ON s.name = m.name GROUP BY m.tbl_name, m.name",
            )
            .fetch_all(&mut c)
            .await;
            let (page_count, page_size): (i64, i64) = sqlx::query_as(
                "SELECT page_count, page_size FROM pragma_page_count(), pragma_page_size()",
            )
            .fetch_one(&mut c)
            .await?;
            let database_bytes = non_negative(page_count.saturating_mul(page_size));
            match by_table {
                Ok(rows) => {
                    let mut s = Sizes {
                        database_bytes,
                        method: "sqlite dbstat".into(),
                        ..Sizes::default()
                    };
                    for (table, name, bytes) in rows {
                        let bytes = non_negative(bytes);
                        match table.as_str() {
                            "credit_history" => {
                                s.history_bytes += bytes;
                                if name != table {
                                    s.history_index_bytes += bytes;
                                }
                            }
                            "credit_lots" => s.lots_bytes += bytes,
                            "credit_messages" => s.messages_bytes += bytes,
                            "addresses" | "refs" => s.interned_bytes += bytes,
                            _ => {}
                        }
                    }
                    Ok(s)
                }
                Err(e) => {
                    tracing::warn!(
                        "dbstat unavailable ({e}): splitting the file size by row counts"
                    );
                    let rows = counts.history_rows + counts.lots + counts.messages;
                    let share = |n: u64| {
                        if rows == 0 {
                            0
                        } else {
                            (u128::from(database_bytes) * u128::from(n) / u128::from(rows)) as u64
                        }
                    };
                    Ok(Sizes {
                        history_bytes: share(counts.history_rows),
                        history_index_bytes: 0,
                        lots_bytes: share(counts.lots),
                        messages_bytes: share(counts.messages),
                        interned_bytes: 0,
                        database_bytes,
                        method: "page_count × page_size split by row counts (dbstat unavailable)"
                            .into(),
                    })
                }
            }
        }
        Conn::Pg(mut c) => {
            let (h, hi, l, m, i, d): (i64, i64, i64, i64, i64, i64) = sqlx::query_as(
                "SELECT pg_total_relation_size('credit_history'), pg_indexes_size('credit_history'), \
                 pg_total_relation_size('credit_lots'), pg_total_relation_size('credit_messages'), \
                 COALESCE(pg_total_relation_size(to_regclass('addresses')), 0) \
                 + COALESCE(pg_total_relation_size(to_regclass('refs')), 0), \
                 pg_database_size(current_database())",
            )
            .fetch_one(&mut c)
            .await?;
            Ok(Sizes {
                history_bytes: non_negative(h),
                history_index_bytes: non_negative(hi),
                lots_bytes: non_negative(l),
                messages_bytes: non_negative(m),
                interned_bytes: non_negative(i),
                database_bytes: non_negative(d),
                method: "pg_total_relation_size (dead tuples included)".into(),
            })
        }
    }
}

/// The server's version and the settings that decide durability and speed.
pub async fn settings(url: &str) -> Result<serde_json::Value> {
    match connect(url).await? {
        Conn::Sqlite(mut c) => {
            let (version,): (String,) = sqlx::query_as("SELECT sqlite_version()")
                .fetch_one(&mut c)
                .await?;
            Ok(serde_json::json!({
                "version": version,
                "journal_mode": "wal",
                "synchronous": "full",
            }))
        }
        Conn::Pg(mut c) => {
            let mut out = serde_json::Map::new();
            let (version,): (String,) = sqlx::query_as("SHOW server_version")
                .fetch_one(&mut c)
                .await?;
            out.insert("version".into(), version.into());
            for name in [
                "fsync",
                "synchronous_commit",
                "full_page_writes",
                "shared_buffers",
                "wal_level",
            ] {
                let (value,): (String,) = sqlx::query_as("SELECT current_setting($1)")
                    .bind(name)
                    .fetch_one(&mut c)
                    .await?;
                out.insert(name.into(), value.into());
            }
            Ok(serde_json::Value::Object(out))
        }
    }
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
