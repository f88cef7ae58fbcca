//! Fresh stores for the bench: a SQLite file in a temporary directory, or a new PostgreSQL
//! database dropped afterwards (created and dropped by `lotledger_store_pg`: no SQL here).

use crate::error::{Context, Result};

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
                let name = lotledger_store_pg::unique_database_name("lotledger_bench");
                let url = lotledger_store_pg::create_database(admin, &name)
                    .await
                    .with_context(|| {
                        format!(
                            "creating the bench database on {}",
                            lotledger_ingest::redact(admin)
                        )
                    })?;
                Ok(Fresh::Pg {
                    url,
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
            lotledger_store_pg::drop_database(&admin, &name)
                .await
                .with_context(|| format!("dropping the bench database {name}"))?;
        }
        Ok(())
    }
}
