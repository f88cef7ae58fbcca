//! Databases written by an earlier release open with this one and migrate in place with nothing
//! lost. `fixtures/v0003` was written by a lotledger binary of the 0003 layout
//! (`scripts/make-v3-fixture`): a SQLite file, a PostgreSQL dump, and `expected.json` with
//! what that binary answered. After migrating, every answer is the same, `verify` is clean,
//! ingest progress rows are kept, and the ledger takes new messages.

use std::path::PathBuf;

use serde_json::Value;
use sqlx::Connection;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/v0003")
        .join(name)
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
fn same_answers(url: &str) {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap();
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
    cli(url, &["verify"]);
}

fn expected_progress() -> Vec<(String, i64)> {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap();
    let mut rows: Vec<(String, i64)> = expected["ingest_progress"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_i64().unwrap()))
        .collect();
    rows.sort();
    assert!(!rows.is_empty());
    rows
}

/// The migrated ledger still takes messages and resumes files by their committed prefix.
fn takes_new_messages(url: &str, dir: &tempfile::TempDir) {
    let path = dir.path().join("after.jsonl");
    let item_content = r#"{"address":"0x2E4454fAD1906c0Ce6e45cBFA05cE898Ac3AC1dC","time":1772400000.0,"type":"aleph_credit_distribution","content":{"distribution":{"credits":[{"address":"0xdddd000000000000000000000000000000000004","amount":42,"price":"1","tx_hash":"0xt","provider":"ALEPH"}],"token":"ALEPH","chain":"ETH"}}}"#;
    let line = serde_json::json!({"item_hash": "after-migration", "type": "POST", "chain": "ETH",
        "sender": "0x2E4454fAD1906c0Ce6e45cBFA05cE898Ac3AC1dC", "channel": "ALEPH_CREDIT",
        "item_type": "inline", "item_content": item_content});
    std::fs::write(&path, format!("{line}\n")).unwrap();
    let file = path.to_str().unwrap();
    let args = ["ingest", "--trusted", "--now", "2026-06-01T00:00:00Z", file];
    let summary = json(url, &args);
    assert_eq!(summary["processed"], 1, "{summary}");
    let again = json(url, &args);
    assert_eq!(again["resumed_after_lines"], 1, "{again}");
    assert_eq!(
        json(
            url,
            &[
                "balance",
                "0xdddd000000000000000000000000000000000004",
                "--at",
                "2026-06-01T00:00:00Z"
            ]
        ),
        42
    );
}

/// `(source, lines)` of every ingest progress row, read with SQL (rows of the 0003 layout are
/// not visible through the store API, which returns only verifiable progress).
fn progress_rows(rt: &tokio::runtime::Runtime, url: &str) -> Vec<(String, i64)> {
    const SQL: &str = "SELECT source, lines FROM ingest_progress ORDER BY source";
    rt.block_on(async {
        if url.starts_with("sqlite") {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query_as(SQL).fetch_all(&mut c).await.unwrap()
        } else {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query_as(SQL).fetch_all(&mut c).await.unwrap()
        }
    })
}

#[test]
fn a_sqlite_file_of_the_0003_layout_migrates_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    std::fs::copy(fixture("ledger.db"), &path).unwrap();
    let url = format!("sqlite://{}", path.display());
    same_answers(&url);
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(progress_rows(&rt, &url), expected_progress());
    takes_new_messages(&url, &dir);
    same_answers(&url);
}

#[test]
fn a_postgres_dump_of_the_0003_layout_migrates_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(async {
        let url = lotledger_testkit::db::fresh_pg_url().await;
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        let dump = std::fs::read_to_string(fixture("ledger.pg.sql")).unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(dump))
            .execute(&mut c)
            .await
            .unwrap();
        url
    });
    cli(&url, &["migrate"]);
    same_answers(&url);
    assert_eq!(progress_rows(&rt, &url), expected_progress());
    takes_new_messages(&url, &dir);
    same_answers(&url);
}
