//! Store behaviour beyond the scenarios, on both backends: repair resumes from its checkpoint,
//! the history refuses updates and deletes, and the store reports its rows, size and settings.

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

/// The counts, sizes and settings the bench reports: counts follow what was written, sizes grow
/// with it and hold together, the settings name the engine's version first.
async fn reports_its_footprint<S: Store>(store: &S) {
    let empty = store.table_counts().await.unwrap();
    assert_eq!(empty, lotledger_store::TableCounts::default());
    let small = store.footprint().await.unwrap();
    let rows: Vec<HistoryRow> = (0..400)
        .map(|i| grant(&format!("0x{i:040x}"), &format!("g{i}"), 10 + i))
        .collect();
    store
        .import_history(&rows, Timestamp::UNIX_EPOCH)
        .await
        .unwrap();
    let counts = store.table_counts().await.unwrap();
    assert_eq!((counts.history_rows, counts.lots), (400, 400));
    let big = store.footprint().await.unwrap();
    assert!(big.history_bytes > small.history_bytes, "{small:?} {big:?}");
    assert!(big.lots_bytes > small.lots_bytes, "{small:?} {big:?}");
    assert!(
        big.interned_bytes > small.interned_bytes,
        "{small:?} {big:?}"
    );
    assert!(
        big.history_index_bytes < big.history_bytes
            && big.history_bytes + big.lots_bytes + big.messages_bytes <= big.database_bytes,
        "{big:?}"
    );
    assert!(!big.method.is_empty());
    let settings = store.engine_settings().await.unwrap();
    assert_eq!(settings.first().map(|(n, _)| n.as_str()), Some("version"));
    assert!(settings.iter().all(|(_, v)| !v.is_empty()), "{settings:?}");
}

#[tokio::test]
async fn sqlite_reports_its_footprint() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = db::fresh_sqlite(&dir).await;
    reports_its_footprint(&store).await;
}

#[tokio::test]
async fn postgres_reports_its_footprint() {
    reports_its_footprint(&db::fresh_pg().await).await;
}

/// A database the tests created is dropped, and only plain names are created or dropped.
#[tokio::test]
async fn postgres_databases_are_created_and_dropped_by_name() {
    let admin = db::pg_admin_url();
    let name = db::unique_name("lotledger_drop");
    let url = lotledger_store_pg::create_database(&admin, &name)
        .await
        .unwrap();
    assert!(url.contains(&name));
    let store = lotledger_store_pg::PgStore::open(&url).await.unwrap();
    drop(store);
    lotledger_store_pg::drop_database(&admin, &name)
        .await
        .unwrap();
    assert!(
        lotledger_store_pg::PgStore::open(&url).await.is_err(),
        "the dropped database still opens"
    );
    // Dropping what is not there is no error.
    lotledger_store_pg::drop_database(&admin, &name)
        .await
        .unwrap();
    let refused = lotledger_store_pg::create_database(&admin, "x\"; DROP DATABASE postgres; --")
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("not a database name"),
        "{refused}"
    );
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
