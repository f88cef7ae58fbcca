//! Databases written by an earlier release open with this one and migrate in place with nothing
//! lost. `fixtures/vNNNN` was written by a lotledger binary of layout NNNN
//! (`scripts/make-layout-fixture`): a SQLite file, a PostgreSQL dump, and `expected.json` with
//! what that binary answered. After migrating, every answer is the same, `verify` is clean,
//! ingest progress rows are kept, and the ledger takes new messages.

use std::path::PathBuf;

use serde_json::Value;
use sqlx::Connection;

/// The layouts a fixture exists for: every release layout since the first one users kept.
const LAYOUTS: [&str; 10] = [
    "v0003", "v0004", "v0005", "v0006", "v0007", "v0008", "v0009", "v0010", "v0012", "v0013",
];

fn fixture(layout: &str, name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(layout)
        .join(name)
}

fn expected(layout: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(layout, "expected.json")).unwrap())
        .unwrap()
}

fn cli(url: &str, args: &[&str]) -> String {
    let (ok, stdout, stderr) = super::ingest::lotledger(url, args);
    assert!(ok, "{args:?}: {stderr}");
    stdout
}

fn json(url: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    serde_json::from_str(&cli(url, &args)).unwrap()
}

/// Every answer of `expected.json`, asked again of the migrated database.
fn same_answers(layout: &str, url: &str) {
    let expected = expected(layout);
    let at = expected["at"].as_str().unwrap();
    for (address, want) in expected["balances"].as_object().unwrap() {
        assert_eq!(
            &json(url, &["balance", address, "--at", at, "--details"]),
            want,
            "balance of {address}"
        );
    }
    for (address, want) in expected["history"].as_object().unwrap() {
        assert_eq!(
            &json(url, &["history", address]),
            want,
            "history of {address}"
        );
    }
    for (address, want) in expected["lots"].as_object().unwrap() {
        assert_eq!(&json(url, &["lots", address]), want, "lots of {address}");
    }
    let messages = expected["messages"].as_object().unwrap();
    assert!(messages.values().any(|m| m["status"] == "rejected"));
    for (hash, want) in messages {
        assert_eq!(&json(url, &["message", hash]), want, "message {hash}");
    }
    // From layout 0013 on: messages planned by v2, and the ledger as of instants around them,
    // which a replay gives by the policy each row records.
    if let Some(as_of) = expected.get("lots_as_of").and_then(Value::as_object) {
        for (address, instants) in as_of {
            for (instant, want) in instants.as_object().unwrap() {
                assert_eq!(
                    &json(url, &["lots", address, "--as-of", instant]),
                    want,
                    "lots of {address} as of {instant}"
                );
            }
        }
        assert_eq!(
            cli(url, &["policy", "show"]).trim(),
            "v1,v2@2026-03-01T00:02:55Z",
            "the kept schedule"
        );
    }
    cli(url, &["verify", "--integrity"]);
    same_consumed_credits(&expected, url);
}

/// Consumed credits per resource (an expense row's effective origin: its origin, else its ref)
/// and per address, as the expected history gives them, asked of the store: the resource key
/// is read through the layout's own index.
fn same_consumed_credits(expected: &Value, url: &str) {
    let mut by_resource = std::collections::BTreeMap::<String, i64>::new();
    let mut by_address = std::collections::BTreeMap::<String, i64>::new();
    for (address, rows) in expected["history"].as_object().unwrap() {
        for row in rows.as_array().unwrap() {
            if row["payment_method"] != "credit_expense" {
                continue;
            }
            let amount = row["amount"].as_i64().unwrap().abs();
            *by_address.entry(address.clone()).or_default() += amount;
            let resource = [&row["origin"], &row["origin_ref"]]
                .into_iter()
                .find_map(|v| v.as_str().filter(|s| !s.is_empty()));
            if let Some(r) = resource {
                *by_resource.entry(r.to_string()).or_default() += amount;
            }
        }
    }
    assert!(!by_resource.is_empty());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        if url.starts_with("sqlite") {
            let store = lotledger_store_sqlite::SqliteStore::open(url)
                .await
                .unwrap();
            consumed_as(&store, &by_resource, &by_address).await;
        } else {
            let store = lotledger_store_pg::PgStore::open(url).await.unwrap();
            consumed_as(&store, &by_resource, &by_address).await;
        }
    });
}

async fn consumed_as<S: lotledger_store::Store>(
    store: &S,
    by_resource: &std::collections::BTreeMap<String, i64>,
    by_address: &std::collections::BTreeMap<String, i64>,
) {
    for (resource, want) in by_resource {
        let got = store.consumed_credits(None, Some(resource)).await.unwrap();
        assert_eq!(got.0, *want, "consumed credits of {resource}");
    }
    for (address, want) in by_address {
        let got = store.consumed_credits(Some(address), None).await.unwrap();
        assert_eq!(got.0, *want, "consumed credits by {address}");
    }
}

/// `(source, lines, bytes, prefix_sha256)` of each progress row `expected.json` lists (0003
/// rows hold a line count only).
type ProgressRow = (String, i64, Option<i64>, Option<String>);

fn expected_progress(layout: &str) -> Vec<ProgressRow> {
    let expected = expected(layout);
    let mut rows: Vec<ProgressRow> = expected["ingest_progress"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| match v.as_i64() {
            Some(lines) => (k.clone(), lines, None, None),
            None => (
                k.clone(),
                v["lines"].as_i64().unwrap(),
                Some(v["bytes"].as_i64().unwrap()),
                Some(v["prefix_sha256"].as_str().unwrap().to_string()),
            ),
        })
        .collect();
    rows.sort();
    assert!(!rows.is_empty());
    rows
}

/// The migrated ledger still takes messages, keeps them as received (layout 0010), and
/// resumes files by their committed prefix.
fn takes_new_messages(url: &str, dir: &tempfile::TempDir) {
    let path = dir.path().join("after.jsonl");
    let item_content = r#"{"address":"0x2E4454fAD1906c0Ce6e45cBFA05cE898Ac3AC1dC","time":1772400000.0,"type":"aleph_credit_distribution","content":{"distribution":{"credits":[{"address":"0xffff000000000000000000000000000000000006","amount":42,"price":"1","tx_hash":"0xt","provider":"ALEPH"}],"token":"ALEPH","chain":"ETH"}}}"#;
    let line = serde_json::json!({"item_hash": "after-migration", "type": "POST", "chain": "ETH",
        "sender": "0x2E4454fAD1906c0Ce6e45cBFA05cE898Ac3AC1dC", "channel": "ALEPH_CREDIT",
        "item_type": "inline", "item_content": item_content, "time": 1772400000.5,
        "signature": "0x0badc0de"});
    std::fs::write(&path, format!("{line}\n")).unwrap();
    let file = path.to_str().unwrap();
    let args = ["ingest", "--trusted", "--now", "2026-06-01T00:00:00Z", file];
    let summary = json(url, &args);
    assert_eq!(summary["processed"], 1, "{summary}");
    let again = json(url, &args);
    assert_eq!(again["resumed_after_lines"], 1, "{again}");
    let kept = json(url, &["message", "after-migration"]);
    assert_eq!(kept["envelope"]["item_content"], item_content, "{kept}");
    assert_eq!(kept["envelope"]["time"], 1772400000.5, "{kept}");
    assert_eq!(kept["envelope"]["signature"], "0x0badc0de", "{kept}");
    assert_eq!(
        json(
            url,
            &[
                "balance",
                "0xffff000000000000000000000000000000000006",
                "--at",
                "2026-06-01T00:00:00Z"
            ]
        ),
        42
    );
}

/// Every row `sql` selects from the database at `url`, read with SQL on a connection of its own.
fn fetch_all<T>(rt: &tokio::runtime::Runtime, url: &str, sql: &'static str) -> Vec<T>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
        + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
        + Send
        + Unpin,
{
    rt.block_on(async {
        if url.starts_with("sqlite") {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query_as(sql).fetch_all(&mut c).await.unwrap()
        } else {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query_as(sql).fetch_all(&mut c).await.unwrap()
        }
    })
}

/// `(source, lines)` of every ingest progress row, read with SQL (rows of the 0003 layout are
/// not visible through the store API, which returns only verifiable progress).
fn progress_rows(rt: &tokio::runtime::Runtime, url: &str) -> Vec<ProgressRow> {
    fetch_all(
        rt,
        url,
        "SELECT source, lines, bytes, prefix_sha256 FROM ingest_progress ORDER BY source",
    )
}

/// Every compact text the migration wrote (history's tx_hash, origin, origin_ref) is in the
/// form `lotledger_store::compact::encode` gives its text: the migration's SQL and the writers
/// agree, so equal texts are equal stored values (the consumed-credits index relies on it).
/// Fixtures from layout 0006 on hold texts of all three forms.
fn stored_texts_are_canonical(rt: &tokio::runtime::Runtime, url: &str, layout: &str) {
    type Texts = (Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>);
    let rows: Vec<Texts> = fetch_all(
        rt,
        url,
        "SELECT tx_hash, origin, origin_ref FROM credit_history",
    );
    assert!(!rows.is_empty());
    let mut tags = std::collections::BTreeSet::new();
    for (a, b, c) in rows {
        for stored in [a, b, c].into_iter().flatten() {
            let text = lotledger_store::compact::decode(&stored).unwrap();
            assert_eq!(lotledger_store::compact::encode(&text), stored, "{text:?}");
            tags.insert(stored[0]);
        }
    }
    if layout >= "v0006" {
        assert_eq!(tags.len(), 3, "its fixture holds every form: {tags:?}");
    }
}

fn sqlite_file_migrates_in_place(layout: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    std::fs::copy(fixture(layout, "ledger.db"), &path).unwrap();
    let url = format!("sqlite://{}", path.display());
    same_answers(layout, &url);
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(progress_rows(&rt, &url), expected_progress(layout));
    stored_texts_are_canonical(&rt, &url, layout);
    references_stay_unique(&rt, &url);
    takes_new_messages(&url, &dir);
    same_answers(layout, &url);
}

/// Since migration 0008 `refs` has no UNIQUE index: its trigger keeps every reference once.
fn references_stay_unique(rt: &tokio::runtime::Runtime, url: &str) {
    rt.block_on(async {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        let (all, distinct): (i64, i64) =
            sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT ref) FROM refs")
                .fetch_one(&mut c)
                .await
                .unwrap();
        assert!(all > 0);
        assert_eq!(all, distinct);
        for order in ["ASC", "DESC"] {
            let again =
                format!("INSERT INTO refs (ref) SELECT ref FROM refs ORDER BY id {order} LIMIT 1");
            let refused = sqlx::raw_sql(sqlx::AssertSqlSafe(again))
                .execute(&mut c)
                .await;
            assert!(refused.is_err(), "a reference interned twice");
        }
    });
}

fn postgres_dump_migrates_in_place(layout: &str) {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(async {
        let url = lotledger_testkit::db::fresh_pg_url().await;
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        let dump = std::fs::read_to_string(fixture(layout, "ledger.pg.sql")).unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(dump))
            .execute(&mut c)
            .await
            .unwrap();
        url
    });
    cli(&url, &["migrate"]);
    same_answers(layout, &url);
    assert_eq!(progress_rows(&rt, &url), expected_progress(layout));
    stored_texts_are_canonical(&rt, &url, layout);
    takes_new_messages(&url, &dir);
    same_answers(layout, &url);
}

#[test]
fn sqlite_files_of_earlier_layouts_migrate_in_place() {
    for layout in LAYOUTS {
        sqlite_file_migrates_in_place(layout);
    }
}

#[test]
fn postgres_dumps_of_earlier_layouts_migrate_in_place() {
    for layout in LAYOUTS {
        postgres_dump_migrates_in_place(layout);
    }
}

/// The migrations both stores ship, as `NNNN: description` (file `NNNN_description.sql`).
fn shipped_migrations() -> Vec<String> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../lotledger-store-sqlite/migrations");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| {
            let (version, rest) = n.strip_suffix(".sql")?.split_once('_')?;
            Some(format!("{version}: {}", rest.replace('_', " ")))
        })
        .collect();
    names.sort();
    names
}

/// `lotledger migrate` says what it applied: every migration on an empty database (either
/// store), those after the fixture's layout on the last release's file, nothing once it is up
/// to date.
#[test]
fn migrate_says_what_it_applied() {
    let shipped = shipped_migrations();
    let latest = &shipped.last().unwrap()[..4];
    let dir = tempfile::tempdir().unwrap();
    let fresh = format!("sqlite://{}", dir.path().join("fresh.db").display());
    let out = cli(&fresh, &["migrate"]);
    let lines: Vec<&str> = out.lines().collect();
    let applied: Vec<String> = shipped
        .iter()
        .map(|m| format!("applied migration {m}"))
        .collect();
    assert_eq!(lines[..lines.len() - 1], applied[..], "{out}");
    assert_eq!(
        lines.last().copied(),
        Some(format!("schema created (version {latest})").as_str())
    );
    assert_eq!(
        cli(&fresh, &["migrate"]),
        format!("schema is up to date (version {latest})\n")
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pg = rt.block_on(lotledger_testkit::db::fresh_pg_url());
    assert_eq!(cli(&pg, &["migrate"]), out, "PostgreSQL says the same");

    let layout = LAYOUTS[LAYOUTS.len() - 1];
    let path = dir.path().join("last.db");
    std::fs::copy(fixture(layout, "ledger.db"), &path).unwrap();
    let last = format!("sqlite://{}", path.display());
    let from = &layout[1..];
    let mut want: Vec<String> = shipped
        .iter()
        .filter(|m| &m[..4] > from)
        .map(|m| format!("applied migration {m}\n"))
        .collect();
    want.push(if from == latest {
        format!("schema is up to date (version {latest})\n")
    } else {
        format!("schema migrated from version {from} to {latest}\n")
    });
    assert_eq!(cli(&last, &["migrate"]), want.concat());
}

/// Opening a new PostgreSQL database, and opening it again once migrated, runs no statement
/// that fails: the server would log each as an error (and counts it as a rolled-back
/// transaction, which is what this reads).
#[test]
fn opening_a_postgres_database_runs_no_failing_statement() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(lotledger_testkit::db::fresh_pg_url());
    cli(&url, &["migrate"]);
    cli(&url, &["migrate"]);
    let (commits, rollbacks) = rt.block_on(async {
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        // The CLI's backends report their transactions as they exit: wait until they have
        // gone and their commits (the migrations') are counted.
        let mut counts = (0, 0);
        for _ in 0..400 {
            let (others, commits, rollbacks): (i64, i64, i64) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM pg_stat_activity \
                         WHERE datname = current_database() AND pid <> pg_backend_pid()), \
                        xact_commit, xact_rollback \
                 FROM pg_stat_database WHERE datname = current_database()",
            )
            .fetch_one(&mut c)
            .await
            .unwrap();
            counts = (commits, rollbacks);
            if others == 0 && commits > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        counts
    });
    assert!(
        commits > 0,
        "the CLI's transactions were never counted on {url}"
    );
    assert_eq!(rollbacks, 0, "failed statements on {url}");
}
