//! Store behaviour beyond the scenarios, on both backends: repair resumes from its checkpoint,
//! and the history refuses updates and deletes.

use lotledger_core::{Credits, HistoryRow, Timestamp};
use lotledger_store::{Store, maintenance};
use lotledger_testkit::db;
use sqlx::Connection;

fn grant(address: &str, credit_ref: &str, amount: i64) -> HistoryRow {
    HistoryRow::bare(
        address,
        Credits(amount),
        credit_ref,
        0,
        Timestamp::from_unix_seconds(1_772_323_200).unwrap(),
    )
}

/// Sets every lot of `address` to 1 behind the ledger's back.
async fn tamper(url: &str, address: &str) {
    let sql = if url.starts_with("sqlite") {
        "UPDATE credit_lots SET amount_remaining = 1 \
         WHERE address_id = (SELECT id FROM addresses WHERE address = ?)"
    } else {
        "UPDATE credit_lots SET amount_remaining = 1 \
         WHERE address_id = (SELECT id FROM addresses WHERE address = $1)"
    };
    if url.starts_with("sqlite") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(sql)
            .bind(address)
            .execute(&mut c)
            .await
            .unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(sql)
            .bind(address)
            .execute(&mut c)
            .await
            .unwrap();
    }
}

async fn history_is_append_only(url: &str) {
    let statements = [
        "UPDATE credit_history SET amount = 0",
        "DELETE FROM credit_history",
    ];
    for sql in statements {
        let err = if url.starts_with("sqlite") {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.unwrap_err()
        } else {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.unwrap_err()
        };
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
}

async fn repair_resumes<S: Store>(store: &S, url: &str) {
    let rows = [
        grant("0xa", "ga", 10),
        grant("0xb", "gb", 20),
        grant("0xc", "gc", 30),
    ];
    store
        .import_history(&rows, Timestamp::UNIX_EPOCH)
        .await
        .unwrap();
    for a in ["0xa", "0xb", "0xc"] {
        tamper(url, a).await;
    }
    assert_eq!(
        maintenance::verify(store, |_, _| {}).await.unwrap().len(),
        3
    );
    // An interrupted run got as far as 0xa: resuming rebuilds only what comes after.
    store.set_repair_checkpoint(Some("0xa")).await.unwrap();
    let report = maintenance::repair(store, false, |_, _| {}).await.unwrap();
    assert_eq!(report.resumed_after.as_deref(), Some("0xa"));
    assert_eq!(report.addresses, 2);
    let drifts = maintenance::verify(store, |_, _| {}).await.unwrap();
    assert_eq!(
        drifts
            .iter()
            .map(|d| d.address.as_str())
            .collect::<Vec<_>>(),
        ["0xa"]
    );
    assert_eq!(
        store.repair_checkpoint().await.unwrap(),
        None,
        "a finished repair clears its checkpoint"
    );
    let report = maintenance::repair(store, false, |_, _| {}).await.unwrap();
    assert_eq!((report.resumed_after, report.addresses), (None, 3));
    assert!(
        maintenance::verify(store, |_, _| {})
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.balance("0xa", Timestamp::UNIX_EPOCH).await.unwrap(),
        Credits(10)
    );
}

#[tokio::test]
async fn sqlite_repair_resumes_and_history_is_append_only() {
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = db::fresh_sqlite(&dir).await;
    repair_resumes(&store, &url).await;
    history_is_append_only(&url).await;
}

#[tokio::test]
async fn postgres_repair_resumes_and_history_is_append_only() {
    let url = db::fresh_pg_url().await;
    let store = lotledger_store_pg::PgStore::open(&url).await.unwrap();
    repair_resumes(&store, &url).await;
    history_is_append_only(&url).await;
}

/// Both stores carry the same migration versions and names (their SQL differs by dialect).
#[test]
fn migration_folders_hold_the_same_versions() {
    let names = |store: &str| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(store)
            .join("migrations");
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let sqlite = names("lotledger-store-sqlite");
    assert!(!sqlite.is_empty());
    assert_eq!(sqlite, names("lotledger-store-pg"));
}
