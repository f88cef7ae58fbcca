//! `lotledger explain` (issue 12, part 3). A file of messages is explained against an
//! ingested ledger, each message seeing what the ones before it would do, without a row of
//! the ledger changing; ingested afterwards, the messages do what was announced. `explain
//! --address` accounts for every holder's balance from its history.

use serde_json::Value;

use super::crash::{MINTER_KEY, NOW, ok_with, workload};

fn ok(url: &str, args: &[&str]) -> String {
    ok_with(url, &lotledger_sig::evm_address(&MINTER_KEY), args)
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn write_lines(path: &std::path::Path, messages: &[Value]) {
    let text: Vec<String> = messages.iter().map(Value::to_string).collect();
    std::fs::write(path, text.join("\n") + "\n").unwrap();
}

#[test]
fn explained_messages_then_ingested_do_what_was_announced() {
    let dir = tempfile::tempdir().unwrap();
    let url = lotledger_testkit::db::fresh_sqlite_url(&dir);
    let messages = workload(240, 11);
    let (first, rest) = messages.split_at(120);
    let mut rest = rest.to_vec();
    // A forged signature: rejected, and the messages after it go on.
    rest[7]["signature"] = rest[8]["signature"].clone();
    let first_file = dir.path().join("first.jsonl");
    let rest_file = dir.path().join("rest.jsonl");
    write_lines(&first_file, first);
    write_lines(&rest_file, &rest);
    ok(
        &url,
        &["ingest", "--now", NOW, first_file.to_str().unwrap()],
    );

    // Every table's rows: a process that opens the file may checkpoint its write-ahead log
    // into it (moving bytes, not changing the ledger).
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let files = || runtime.block_on(lotledger_testkit::db::sqlite_dump(&url));
    let before = files();
    let explained = json_lines(&ok(
        &url,
        &[
            "explain",
            "--now",
            NOW,
            "--json",
            rest_file.to_str().unwrap(),
        ],
    ));
    let text = ok(
        &url,
        &["explain", "--now", NOW, rest_file.to_str().unwrap()],
    );
    assert!(before == files(), "explain changed the ledger");
    assert_eq!(explained.len(), rest.len());
    assert!(text.contains(": processed\n") && text.contains("  balance of "));
    assert!(text.contains(": rejected: The signature of the message is invalid"));

    ok(&url, &["ingest", "--now", NOW, rest_file.to_str().unwrap()]);
    // Each message's status, its rows, and the last announced balance of every address.
    let mut last_after = std::collections::BTreeMap::new();
    let mut processed = 0;
    for (message, answer) in rest.iter().zip(&explained) {
        let hash = message["item_hash"].as_str().unwrap();
        assert_eq!(answer["item_hash"], hash);
        let record: Value = serde_json::from_str(&ok(&url, &["message", hash, "--json"])).unwrap();
        assert_eq!(record["status"], answer["status"], "{hash}: {answer}");
        if answer["status"] != "processed" {
            assert_eq!(record["error"], answer["error"], "{hash}");
            continue;
        }
        processed += 1;
        let rows: Value =
            serde_json::from_str(&ok(&url, &["history", "--credit-ref", hash, "--json"])).unwrap();
        let stored: Vec<(Value, Value, Value)> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["address"].clone(),
                    r["credit_index"].clone(),
                    r["amount"].clone(),
                )
            })
            .collect();
        let announced: Vec<(Value, Value, Value)> = answer["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["address"].clone(),
                    r["credit_index"].clone(),
                    r["amount"].clone(),
                )
            })
            .collect();
        assert_eq!(stored, announced, "{hash}");
        for (address, change) in answer["balances"].as_object().unwrap() {
            assert!(
                stored.iter().any(|(a, _, _)| a == address),
                "{hash}: {address} announced but has no row"
            );
            last_after.insert(address.clone(), change["after"].clone());
        }
    }
    assert!(processed > 80, "{processed} processed");
    for (address, after) in &last_after {
        let held: Value =
            serde_json::from_str(&ok(&url, &["balance", address, "--at", NOW, "--json"])).unwrap();
        assert_eq!(&held, after, "{address}");
    }

    // Every holder's balance accounted for: the counted remainders sum to it, and each grant's
    // drains take what it lost.
    for address in last_after.keys() {
        let why: Value = serde_json::from_str(&ok(
            &url,
            &["explain", "--address", address, "--now", NOW, "--json"],
        ))
        .unwrap();
        let held: Value =
            serde_json::from_str(&ok(&url, &["balance", address, "--at", NOW, "--json"])).unwrap();
        assert_eq!(why["credit_balance"], held, "{address}");
        let mut counted = 0;
        for grant in why["grants"].as_array().unwrap() {
            let drained: i64 = grant["drained_by"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["amount"].as_i64().unwrap())
                .sum();
            assert_eq!(
                grant["amount"].as_i64().unwrap() - grant["remaining"].as_i64().unwrap(),
                drained,
                "{address}: {grant}"
            );
            if grant["counted"] == true {
                counted += grant["remaining"].as_i64().unwrap();
            }
        }
        assert_eq!(Value::from(counted), held, "{address}");
    }
}
