//! Store behaviour beyond the scenarios, on both backends: repair resumes from its checkpoint,
//! the history refuses updates and deletes, the store reports its rows, size and settings, and
//! the integrity checks count ids that name nothing.

use lotledger_core::{Credits, HistoryRow, Timestamp};
use lotledger_store::transactional::Transactional;
use lotledger_store::{AddressRows, HistorySelector, Store, maintenance};
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

/// Every column but the recorded drain policy is refused an update, and rows are refused
/// deletion; the policy may be relabeled (`policy set --rederive`).
async fn history_is_append_only(url: &str) {
    let columns = [
        "id",
        "ref_id",
        "credit_index",
        "address_id",
        "message_timestamp",
        "amount",
        "expiration_date",
        "last_update",
        "price",
        "bonus_amount",
        "tx_hash",
        "token",
        "chain",
        "provider",
        "origin",
        "origin_ref",
        "payment_method",
        "expense_count",
        "expense_size_mib",
    ];
    let mut statements: Vec<String> = columns
        .iter()
        .map(|c| format!("UPDATE credit_history SET {c} = {c}"))
        .collect();
    statements.push("DELETE FROM credit_history".into());
    for sql in &statements {
        let err = run_sql(url, sql).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    run_sql(url, "UPDATE credit_history SET policy = policy")
        .await
        .unwrap();
}

async fn run_sql(url: &str, sql: &str) -> Result<(), sqlx::Error> {
    if url.starts_with("sqlite") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut c)
            .await
            .map(drop)
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut c)
            .await
            .map(drop)
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
    // Messages kept as received take room of their own.
    let mut seed: u64 = 1;
    for i in 0..200 {
        // 200 hex digits that do not repeat (a few bits each once compressed).
        let digits: String = (0..25)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                format!("{:08x}", seed >> 32)
            })
            .collect();
        let text = format!(
            r#"{{"item_hash":"{i:064x}","type":"POST","time":1.5,"item_content":"{digits}"}}"#
        );
        let envelope = lotledger_core::envelope::Envelope::from_message_text(&text).unwrap();
        let kept = envelope.stored().map(std::sync::Arc::new);
        store
            .reject(&envelope.item_hash, "no", kept, Timestamp::UNIX_EPOCH)
            .await
            .unwrap();
    }
    let with_envelopes = store.footprint().await.unwrap();
    // (Measured as growth: an empty table's indexes already take a few pages.)
    assert!(
        with_envelopes.envelopes_bytes >= big.envelopes_bytes + 200 * 100,
        "{big:?} {with_envelopes:?}"
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

/// Expenses of resources that share the consumed-credits index's key (the last 8 bytes of a
/// hash, migration 0009) are summed apart, by origin or by `origin_ref`, and a resource is
/// looked up through that index (its plan names it; PostgreSQL is told to avoid plain scans).
async fn consumed_credits_by_resource<S: Store>(store: &S, url: &str) {
    let at = Timestamp::from_unix_seconds(1_772_323_200).unwrap();
    let (a, b) = (format!("{:064x}", 7), format!("ff{:062x}", 7));
    let expense = |n: i32, amount: i64, origin: &str, origin_ref: Option<&str>| HistoryRow {
        payment_method: Some("credit_expense".into()),
        origin: Some(origin.into()),
        origin_ref: origin_ref.map(Into::into),
        ..HistoryRow::bare("0xa", Credits(-amount), &format!("e{n}"), 0, at)
    };
    let rows = [
        grant("0xa", "g", 1_000),
        expense(1, 10, &a, None),
        expense(2, 20, &b, None),
        expense(3, 30, "", Some(&a)),
        expense(4, 5, "job-5", Some(&b)),
    ];
    store.import_history(&rows, at).await.unwrap();
    for (resource, want) in [
        (a.as_str(), 40),
        (b.as_str(), 20),
        ("job-5", 5),
        ("job-6", 0),
    ] {
        let got = store.consumed_credits(None, Some(resource)).await.unwrap();
        assert_eq!(got, Credits(want), "{resource}");
    }
    let plan: Vec<String> = if url.starts_with("sqlite") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        let rows: Vec<(i64, i64, i64, String)> = lotledger_store::pooled::consumed_query::<
            sqlx::Sqlite,
        >("EXPLAIN QUERY PLAN ", None, Some(&a))
        .build_query_as()
        .fetch_all(&mut c)
        .await
        .unwrap();
        rows.into_iter().map(|r| r.3).collect()
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query("SET enable_seqscan = off")
            .execute(&mut c)
            .await
            .unwrap();
        let rows: Vec<(String,)> =
            lotledger_store::pooled::consumed_query::<sqlx::Postgres>("EXPLAIN ", None, Some(&a))
                .build_query_as()
                .fetch_all(&mut c)
                .await
                .unwrap();
        rows.into_iter().map(|r| r.0).collect()
    };
    assert!(
        plan.iter()
            .any(|line| line.contains("ix_credit_history_expense_resource")),
        "{plan:?}"
    );
}

#[tokio::test]
async fn sqlite_sums_consumed_credits_by_resource_through_its_index() {
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = db::fresh_sqlite(&dir).await;
    consumed_credits_by_resource(&store, &url).await;
}

#[tokio::test]
async fn postgres_sums_consumed_credits_by_resource_through_its_index() {
    let url = db::fresh_pg_url().await;
    let store = lotledger_store_pg::PgStore::open(&url).await.unwrap();
    consumed_credits_by_resource(&store, &url).await;
}

/// `verify --integrity`'s checks: a healthy ledger has no dangling id; then an address and two
/// references are deleted behind the ledger's back, and each check counts exactly the rows
/// that named them. (A deleted address also hides its rows from drift checks: they list
/// addresses from the `addresses` table.)
async fn dangling_ids<S: Store>(store: &S, url: &str) {
    use lotledger_store::{Dangling, IdCheck};
    let at = Timestamp::from_unix_seconds(1_772_323_200).unwrap();
    let rows = [
        grant("0xa", "g-a", 100),
        grant("0xb", "g-b", 50),
        grant("0xb", "g-b2", 70),
        HistoryRow::bare("0xb", Credits(-60), "spent-b", 0, at),
    ];
    store.import_history(&rows, at).await.unwrap();
    store.reject("bad-message", "no", None, at).await.unwrap();
    store.reject("other-message", "no", None, at).await.unwrap();
    let mut checked = Vec::new();
    let clean = maintenance::integrity(store, |done, total| checked.push((done, total)))
        .await
        .unwrap();
    assert_eq!(clean, []);
    assert_eq!(
        checked.last(),
        Some(&(IdCheck::ALL.len(), IdCheck::ALL.len()))
    );
    let deletes: [(&str, &str); 3] = [
        (
            "DELETE FROM addresses WHERE address = '0xa'",
            "DELETE FROM addresses WHERE address = '0xa'",
        ),
        // The grant `g-b` was drained whole by `spent-b`: its history row dangles, no lot.
        // `g-b2` keeps a lot of 60.
        (
            "DELETE FROM refs WHERE ref IN ('g-b2', 'bad-message')",
            "DELETE FROM refs WHERE name IN ('g-b2', 'bad-message')",
        ),
        (
            "DELETE FROM refs WHERE ref = 'g-b'",
            "DELETE FROM refs WHERE name = 'g-b'",
        ),
    ];
    for (sqlite, pg) in deletes {
        let sql = if url.starts_with("sqlite") {
            sqlite
        } else {
            pg
        };
        if url.starts_with("sqlite") {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            assert!(
                sqlx::query(sql)
                    .execute(&mut c)
                    .await
                    .unwrap()
                    .rows_affected()
                    > 0,
                "{sql}"
            );
        } else {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            assert!(
                sqlx::query(sql)
                    .execute(&mut c)
                    .await
                    .unwrap()
                    .rows_affected()
                    > 0,
                "{sql}"
            );
        }
    }
    let found = maintenance::integrity(store, |_, _| {}).await.unwrap();
    let want = |check, rows| Dangling { check, rows };
    assert_eq!(
        found,
        [
            want(IdCheck::HistoryAddress, 1),
            want(IdCheck::HistoryRef, 2),
            want(IdCheck::LotAddress, 1),
            want(IdCheck::LotRef, 1),
            want(IdCheck::MessageRef, 1),
        ]
    );
}

#[tokio::test]
async fn sqlite_integrity_counts_ids_that_name_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = db::fresh_sqlite(&dir).await;
    dangling_ids(&store, &url).await;
}

#[tokio::test]
async fn postgres_integrity_counts_ids_that_name_nothing() {
    let url = db::fresh_pg_url().await;
    let store = lotledger_store_pg::PgStore::open(&url).await.unwrap();
    dangling_ids(&store, &url).await;
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

/// A history row of `address` at `second` (after 2026-03-01): a grant when `amount` is
/// positive, a debit otherwise.
fn row(
    address: &str,
    credit_ref: &str,
    second: i64,
    amount: i64,
    expiry: Option<i64>,
) -> HistoryRow {
    let at = |s: i64| Timestamp::from_unix_seconds(1_772_323_200 + s).unwrap();
    let mut row = HistoryRow::bare(address, Credits(amount), credit_ref, 0, at(second));
    row.expiration_date = expiry.map(at);
    row
}

/// What verify must find, computed without the scans: each address's lots against the core's
/// replay of its history, both read through the Store API.
async fn drifts_by_replay<S: Store>(
    store: &S,
    addresses: &[String],
) -> Vec<lotledger_store::Drift> {
    let mut out = Vec::new();
    for address in addresses {
        let history = store
            .history(&lotledger_store::HistorySelector::Address(address.clone()))
            .await
            .unwrap();
        let replayed = lotledger_core::replay(&history).unwrap();
        let cached = store.lots(address).await.unwrap();
        if cached != replayed {
            out.push(lotledger_store::Drift {
                address: address.clone(),
                cached,
                replayed,
            });
        }
    }
    out
}

/// Runs `sql` (`sqlite` or `pg`, by the URL's scheme) with `address` bound; returns the rows
/// it changed.
async fn exec(url: &str, sqlite: &'static str, pg: &'static str, address: &str) -> u64 {
    if url.starts_with("sqlite") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        let done = sqlx::query(sqlite)
            .bind(address)
            .execute(&mut c)
            .await
            .unwrap();
        done.rows_affected()
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        let done = sqlx::query(pg).bind(address).execute(&mut c).await.unwrap();
        done.rows_affected()
    }
}

/// Twelve addresses whose histories tie on instants, expire and drain, then four of them
/// tampered with behind the ledger's back. Returns every address and the drifts the core's
/// replay finds.
async fn tampered_ledger<S: Store>(
    store: &S,
    url: &str,
) -> (Vec<AddressRows>, Vec<lotledger_store::Drift>) {
    let hash = |i: u32| format!("{i:064x}");
    let mut rows = Vec::new();
    for a in 0..12u32 {
        let address = format!("0x{a:040x}");
        // Two grants at one instant: replay order is by reference text (`b…` after `a…`,
        // whatever order they were interned in), one of them a name, not a hash.
        rows.push(row(&address, &format!("b-grant-{a}"), 10, 40, Some(500)));
        rows.push(row(&address, &format!("a-grant-{a}"), 10, 30, None));
        rows.push(row(&address, &hash(a), 20, 100 + i64::from(a), Some(50)));
        // A debit that drains the first lot in replay order and part of the next; a debit
        // after the hash grant expired.
        rows.push(row(&address, &hash(100 + a), 30, -35, None));
        rows.push(row(&address, &hash(200 + a), 60, -7, None));
    }
    store
        .import_history(&rows, Timestamp::UNIX_EPOCH)
        .await
        .unwrap();
    let addresses: Vec<String> = store.addresses().await.unwrap();
    assert_eq!(addresses.len(), 12);
    assert!(drifts_by_replay(store, &addresses).await.is_empty());
    // Every lot set to 1; every lot deleted; the larger lots deleted; a lot the history never
    // granted.
    tamper(url, &addresses[1]).await;
    let changes = [
        (
            "DELETE FROM credit_lots WHERE address_id = (SELECT id FROM addresses WHERE address = ?)",
            "DELETE FROM credit_lots WHERE address_id = (SELECT id FROM addresses WHERE address = $1)",
        ),
        (
            "DELETE FROM credit_lots WHERE address_id = (SELECT id FROM addresses WHERE address = ?) \
             AND amount_remaining > 50",
            "DELETE FROM credit_lots WHERE address_id = (SELECT id FROM addresses WHERE address = $1) \
             AND amount_remaining > 50",
        ),
        (
            "INSERT INTO credit_lots SELECT address_id, message_timestamp + 7, ref_id, 9, 5, NULL \
             FROM credit_lots WHERE address_id = (SELECT id FROM addresses WHERE address = ?) LIMIT 1",
            "INSERT INTO credit_lots SELECT address_id, message_timestamp + interval '7 seconds', \
             ref_id, 9, 5, NULL FROM credit_lots \
             WHERE address_id = (SELECT id FROM addresses WHERE address = $1) LIMIT 1",
        ),
    ];
    for ((sqlite, pg), address) in
        changes
            .into_iter()
            .zip([&addresses[4], &addresses[7], &addresses[10]])
    {
        assert!(exec(url, sqlite, pg, address).await > 0, "{sqlite}");
    }
    let want = drifts_by_replay(store, &addresses).await;
    assert_eq!(
        want.iter().map(|d| d.address.as_str()).collect::<Vec<_>>(),
        [&addresses[1], &addresses[4], &addresses[7], &addresses[10]]
    );
    let batch = store.address_rows().await.unwrap();
    assert_eq!(
        batch.iter().map(|(a, _)| a).collect::<Vec<_>>(),
        addresses.iter().collect::<Vec<_>>()
    );
    (batch, want)
}

/// The store's verify finds exactly the drifts the replay gives; repair leaves the lots the
/// replay gives.
async fn verify_and_repair_agree_with_replay<S: Store>(
    store: &S,
    batch: &[AddressRows],
    want: &[lotledger_store::Drift],
) {
    let addresses = &lotledger_store::addresses_of(batch);
    assert_eq!(store.verify(batch).await.unwrap(), want);
    assert_eq!(maintenance::verify(store, |_, _| {}).await.unwrap(), want);
    maintenance::repair(store, true, |_, _| {}).await.unwrap();
    assert!(drifts_by_replay(store, addresses).await.is_empty());
    assert!(store.verify(batch).await.unwrap().is_empty());
    for d in want {
        assert_eq!(store.lots(&d.address).await.unwrap(), d.replayed);
    }
}

#[tokio::test]
async fn postgres_verify_and_repair_agree_with_replay() {
    let url = db::fresh_pg_url().await;
    let store = lotledger_store_pg::PgStore::open(&url).await.unwrap();
    let (batch, want) = tampered_ledger(&store, &url).await;
    verify_and_repair_agree_with_replay(&store, &batch, &want).await;
}

/// SQLite's verify and rebuild read whole tables or seek address by address, in one pass or
/// many: every way finds exactly the drifts the replay gives, and rebuilding leaves the lots the
/// replay gives.
#[tokio::test]
async fn sqlite_scans_and_seeks_agree_with_replay() {
    use lotledger_store_sqlite::{Access, ScanFile};
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = db::fresh_sqlite(&dir).await;
    let (batch, want) = tampered_ledger(&store, &url).await;
    let addresses = lotledger_store::addresses_of(&batch);

    let path = url.trim_start_matches("sqlite://");
    let scans = ScanFile::new(std::path::Path::new(path));
    for access in [Access::Scan, Access::Seek, Access::Auto] {
        for pass_rows in [1, 7, u64::MAX] {
            let scans = scans.clone().with_pass_rows(pass_rows);
            let found = tokio::task::spawn_blocking({
                let batch = batch.clone();
                move || scans.verify(&batch, access)
            })
            .await
            .unwrap()
            .unwrap();
            assert_eq!(found, want, "{access:?}, {pass_rows} rows per pass");
        }
    }
    // The counts only size the reads: wrong ones (none, or far too many) find the same drifts.
    for wrong in [0, u64::MAX / 4] {
        let stale: Vec<AddressRows> = batch.iter().map(|(a, _)| (a.clone(), wrong)).collect();
        for access in [Access::Scan, Access::Seek, Access::Auto] {
            let scans = scans.clone().with_pass_rows(7);
            let stale = stale.clone();
            let found = tokio::task::spawn_blocking(move || scans.verify(&stale, access))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(found, want, "{access:?}, every count {wrong}");
        }
    }

    // Rebuild by seeks (two addresses per pass) for the first half, by scans for the rest:
    // exactly the drifted addresses are rewritten, and the lots are the replay's.
    let (first, rest) = batch.split_at(6);
    let rewritten = tokio::task::spawn_blocking({
        let (scans, first, rest) = (scans.clone(), first.to_vec(), rest.to_vec());
        move || {
            let a = scans
                .clone()
                .with_pass_rows(10)
                .rebuild(&first, Access::Seek)?;
            let b = scans.rebuild(&rest, Access::Scan)?;
            Ok::<_, lotledger_store::StoreError>((a, b))
        }
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(rewritten, (2, 2));
    assert!(drifts_by_replay(&store, &addresses).await.is_empty());
    for d in &want {
        assert_eq!(store.lots(&d.address).await.unwrap(), d.replayed);
    }

    // Rebuilding the healthy ledger again writes nothing: not even the file's generation
    // moves (so no batch cache is dropped), whichever way it reads.
    let generation = || async {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query_scalar::<_, i64>("PRAGMA user_version")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    };
    let before = generation().await;
    for access in [Access::Scan, Access::Seek] {
        let scans = scans.clone();
        let batch = batch.clone();
        let rewritten = tokio::task::spawn_blocking(move || scans.rebuild(&batch, access))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rewritten, 0, "{access:?}");
    }
    assert_eq!(generation().await, before);

    // And through the store's own verify and repair, on a ledger tampered with again.
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = db::fresh_sqlite(&dir).await;
    let (batch, want) = tampered_ledger(&store, &url).await;
    verify_and_repair_agree_with_replay(&store, &batch, &want).await;
}

/// Each store keeps the ids its committed transactions interned, for the next ones
/// (`lotledger_store::kept_ids`); a transaction that rolls back must leave none behind. One
/// interns a new holder and reference and rolls back; another interns others and commits
/// (SQLite gives them the ids just freed, PostgreSQL fresh ones); the first rows written again
/// must be stored under ids that name them (no foreign key would catch a stale id: the rows
/// would silently join to another holder, or to nothing).
async fn ids_of_a_transaction_rolled_back_are_not_kept<S: Transactional>(store: &S) {
    use lotledger_store::LedgerTx;
    use lotledger_store::batch::Commit;
    let at = Timestamp::from_unix_seconds(1_772_323_200).unwrap();
    let mut tx = store.write().await.unwrap();
    tx.insert_rows(&[grant("0xnew", "g1", 100)], at)
        .await
        .unwrap();
    drop(tx);
    for (address, credit_ref) in [("0xother", "g0"), ("0xnew", "g1")] {
        let mut tx = store.write().await.unwrap();
        tx.insert_rows(&[grant(address, credit_ref, 100)], at)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    for (address, credit_ref) in [("0xother", "g0"), ("0xnew", "g1")] {
        let rows = store
            .history(&HistorySelector::Address(address.into()))
            .await
            .unwrap();
        let refs: Vec<&str> = rows.iter().map(|r| r.credit_ref.as_str()).collect();
        assert_eq!(refs, [credit_ref], "history of {address}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_no_id_of_a_transaction_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = db::fresh_sqlite(&dir).await;
    ids_of_a_transaction_rolled_back_are_not_kept(&store).await;
}

#[tokio::test]
async fn postgres_keeps_no_id_of_a_transaction_rolled_back() {
    ids_of_a_transaction_rolled_back_are_not_kept(&db::fresh_pg().await).await;
}

/// `holder`'s balance and its details at each of `instants` are the core's over the lots the
/// store holds (`when`: the step, for the failure message).
pub(crate) async fn balances_are_the_lots<S: Store>(
    store: &S,
    holder: &str,
    instants: &[Timestamp],
    when: &str,
) {
    use lotledger_core::{balance_at, balance_details_at};
    let lots = store.lots(holder).await.unwrap();
    assert!(!lots.is_empty(), "{when}: {holder} has no lot");
    for &at in instants {
        assert_eq!(
            store.balance(holder, at).await.unwrap(),
            balance_at(&lots, at).unwrap(),
            "{when}: balance at {at}"
        );
        assert_eq!(
            store.balance_details(holder, at).await.unwrap(),
            balance_details_at(&lots, at).unwrap(),
            "{when}: details at {at}"
        );
    }
}

/// PostgreSQL answers balance reads from each address's lots summed by expiry while the
/// address's version holds (`lotledger-store-pg`'s `balances`): every answer must be the core's
/// over the lots the store holds, at every instant, before and after writes and repair; a sum
/// past 64 bits must fail as the plain `SUM` does.
#[tokio::test]
async fn postgres_balances_read_from_kept_sums_follow_every_write() {
    use lotledger_core::balance_at;
    let url = db::fresh_pg_url().await;
    let store = lotledger_store_pg::PgStore::open(&url).await.unwrap();
    let holder = "0x00000000000000000000000000000000000000aa";
    let instant = |s: i64| Timestamp::from_unix_seconds(1_772_323_200 + s).unwrap();
    // Lots expiring at +50 (two of them: one group), at +500, and never.
    store
        .import_history(
            &[
                row(holder, "g1", 10, 40, Some(500)),
                row(holder, "g2", 10, 30, None),
                row(holder, "g3", 20, 100, Some(50)),
                row(holder, "g4", 21, 7, Some(50)),
            ],
            Timestamp::UNIX_EPOCH,
        )
        .await
        .unwrap();
    let instants = [30, 49, 50, 51, 499, 500, 501].map(instant);
    let check = |when: &'static str| balances_are_the_lots(&store, holder, &instants, when);
    // Imports and repair leave no state in the writers' batch cache: no read is `written`.
    let counts = |hits, misses, plain| lotledger_store_pg::BalanceCacheCounts {
        hits,
        written: 0,
        misses,
        plain,
    };
    check("granted").await;
    // The first read summed the lots; every other read of the same version was a hit.
    assert_eq!(store.balance_cache_counts(), counts(13, 1, 0));
    // A debit drains the +500 lot and part of the lasting one: the next read sums again.
    store
        .import_history(&[row(holder, "d1", 30, -50, None)], Timestamp::UNIX_EPOCH)
        .await
        .unwrap();
    check("drained").await;
    assert_eq!(store.balance_cache_counts(), counts(26, 2, 0));
    let lots_before = store.lots(holder).await.unwrap();
    // Changed behind the ledger's back (no version advanced): the kept sums still answer,
    // until repair rewrites the lots under a new version.
    tamper(&url, holder).await;
    assert_ne!(store.lots(holder).await.unwrap(), lots_before);
    assert_eq!(
        store.balance(holder, instants[0]).await.unwrap(),
        balance_at(&lots_before, instants[0]).unwrap()
    );
    maintenance::repair(&store, true, |_, _| {}).await.unwrap();
    assert_eq!(store.lots(holder).await.unwrap(), lots_before);
    check("repaired").await;
    assert_eq!(store.balance_cache_counts(), counts(40, 3, 0));
    // An address the ledger never saw: nothing.
    assert_eq!(
        store.balance("0xnobody", instants[0]).await.unwrap(),
        Credits(0)
    );
    assert_eq!(
        store
            .balance_details("0xnobody", instants[0])
            .await
            .unwrap(),
        (Credits(0), Vec::new())
    );
    // Lots whose +50 group sums past 64 bits (set by hand, the version advanced as a writer
    // would): read while that group is live, the plain SUM's error; once it expired, the sum.
    let huge = exec(
        &url,
        "",
        "WITH h AS (UPDATE credit_lots SET amount_remaining = 9223372036854775807 \
         WHERE address_id = (SELECT id FROM addresses WHERE address = $1) \
         AND expiration_date IS NOT NULL RETURNING 1) \
         UPDATE addresses SET version = version + 1 WHERE address = $1",
        holder,
    )
    .await;
    assert_eq!(huge, 1);
    let before = store.balance_cache_counts();
    assert!(store.balance(holder, instants[0]).await.is_err());
    assert!(store.balance_details(holder, instants[0]).await.is_err());
    assert_eq!(
        store.balance(holder, instants[3]).await.unwrap(),
        Credits(20)
    );
    let after = store.balance_cache_counts();
    assert_eq!(after.plain - before.plain, 2, "{after:?}");
}

/// What a replay reads of an address's history (`Store::replay_history`, packed by the server
/// on PostgreSQL) is the history's rows, column for column: references by hash and by name,
/// expiries present and absent, debits, either drain policy, and nothing for an address without
/// history.
async fn replay_history_reads_the_history<S: Store>(store: &S) {
    let mut rows = Vec::new();
    for a in 0..3u32 {
        let address = format!("0x{a:040x}");
        rows.push(row(&address, &format!("name-{a}"), 10, 40, Some(500)));
        rows.push(row(&address, &format!("{:064x}", a + 1), 10, 7, None));
        let mut debit = row(&address, &format!("{:064x}", 100 + a), 30, -35, None);
        debit.credit_index = 3;
        debit.policy = lotledger_core::Policy::V2;
        rows.push(debit);
        // Before the Unix epoch and far after it.
        rows.push(row(
            &address,
            &format!("early-{a}"),
            -1_772_323_199,
            1,
            Some(-5),
        ));
        rows.push(row(
            &address,
            &format!("late-{a}"),
            4_000_000_000,
            2,
            Some(4_000_000_001),
        ));
    }
    store
        .import_history(&rows, Timestamp::UNIX_EPOCH)
        .await
        .unwrap();
    let replay_columns = |r: &HistoryRow| {
        (
            r.address.clone(),
            r.amount,
            r.credit_ref.clone(),
            r.credit_index,
            r.expiration_date,
            r.message_timestamp,
            r.policy,
        )
    };
    for a in 0..3u32 {
        let address = format!("0x{a:040x}");
        let mut read: Vec<_> = store
            .replay_history(&address)
            .await
            .unwrap()
            .iter()
            .map(replay_columns)
            .collect();
        let mut want: Vec<_> = rows
            .iter()
            .filter(|r| r.address == address)
            .map(replay_columns)
            .collect();
        read.sort();
        want.sort();
        assert_eq!(read, want, "{address}");
    }
    assert!(store.replay_history("0xnobody").await.unwrap().is_empty());
}

#[tokio::test]
async fn sqlite_replay_history_reads_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = db::fresh_sqlite(&dir).await;
    replay_history_reads_the_history(&store).await;
    // From the address's index alone (migration 0014), never a table page per row.
    let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "EXPLAIN QUERY PLAN {}",
        lotledger_store_sqlite::REPLAY_ROWS
    )))
    .bind("0x0000000000000000000000000000000000000001")
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert!(
        plan.iter().any(|r| r
            .3
            .contains("USING COVERING INDEX ix_credit_history_address")),
        "{plan:?}"
    );
}

#[tokio::test]
async fn postgres_replay_history_reads_the_history() {
    let url = db::fresh_pg_url().await;
    let store = lotledger_store_pg::PgStore::open(&url).await.unwrap();
    replay_history_reads_the_history(&store).await;
    // From the address's index alone once the table's pages are all visible (migration 0014);
    // the table is too small for the planner to prefer the index unless told to avoid scans.
    store.vacuum_history().await.unwrap();
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    for off in ["SET enable_seqscan = off", "SET enable_bitmapscan = off"] {
        sqlx::query(off).execute(&mut c).await.unwrap();
    }
    let plan: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "EXPLAIN {}",
        lotledger_store_pg::REPLAY_HISTORY_SQL
    )))
    .bind("0x0000000000000000000000000000000000000001")
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert!(
        plan.iter().any(|r| r
            .0
            .contains("Index Only Scan using ix_credit_history_address")),
        "{plan:?}"
    );
}

/// The test databases of processes that are gone are dropped by the next sweep; those of a
/// live process stay.
#[tokio::test]
async fn postgres_test_databases_of_dead_processes_are_swept() {
    let admin = db::pg_admin_url();
    // No process has a pid above the kernel's largest.
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let ours = std::process::id();
    let dead = format!("lotledger_test_{}_0_{ours}", pid_max + 1);
    let live = format!("lotledger_test_{ours}_0_{}", pid_max + 1);
    for name in [&dead, &live] {
        lotledger_store_pg::create_database(&admin, name)
            .await
            .unwrap();
    }
    db::sweep_dead_test_databases(&admin).await;
    let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
    let exists = async |c: &mut sqlx::PgConnection, name: &str| -> bool {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(c)
            .await
            .unwrap()
    };
    assert!(!exists(&mut c, &dead).await, "{dead} was not swept");
    assert!(exists(&mut c, &live).await, "{live} was swept");
    lotledger_store_pg::drop_database(&admin, &live)
        .await
        .unwrap();
}
