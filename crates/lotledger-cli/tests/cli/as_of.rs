//! `balance --as-of` and `lots --as-of` (issue 12, part 2) on an ingested ledger: as of an
//! instant after every message they agree with today's balance and lots; as of an instant
//! before any message there is nothing; in between, the lots' remainders sum to the balance.

use std::process::Command;

use serde_json::Value;

use super::crash::{MINTER_KEY, NOW, bin, workload};

fn cli(url: &str, args: &[&str]) -> Value {
    let minter = lotledger_sig::evm_address(&MINTER_KEY);
    let out = Command::new(bin())
        .args(["--database-url", url, "--whitelist", &minter])
        .args(args)
        .env_remove("LOTLEDGER_WHITELIST")
        .env_remove("LOTLEDGER_CHANNELS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn balance_and_lots_as_of_an_instant() {
    let dir = tempfile::tempdir().unwrap();
    let url = lotledger_testkit::db::fresh_sqlite_url(&dir);
    let messages = workload(120, 5);
    let file = dir.path().join("m.jsonl");
    let text: Vec<String> = messages.iter().map(Value::to_string).collect();
    std::fs::write(&file, text.join("\n") + "\n").unwrap();
    let file = file.to_str().unwrap();
    cli(&url, &["ingest", "--now", NOW, "--json", file]);

    let mut holders: Vec<String> = messages
        .iter()
        .map(|m| m["sender"].as_str().unwrap().to_string())
        .collect();
    holders.sort();
    holders.dedup();
    // The workload's instants are 1_780_000_000 + i: after all, and in the middle.
    let (after, before, middle) = ("1790000000", "1779999999", "1780000060");
    let mut checked = 0;
    for holder in &holders {
        let today = cli(&url, &["balance", holder, "--at", NOW, "--json"]);
        assert_eq!(
            cli(&url, &["balance", holder, "--as-of", after, "--json"]),
            today,
            "{holder}"
        );
        assert_eq!(
            cli(&url, &["balance", holder, "--as-of", before, "--json"]),
            0
        );
        let lots = cli(&url, &["lots", holder, "--as-of", middle, "--json"]);
        let left: i64 = lots
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["remaining"].as_i64().unwrap())
            .sum();
        let then = cli(&url, &["balance", holder, "--as-of", middle, "--json"]);
        // No lot of the workload expires: every remainder counts.
        assert_eq!(Value::from(left), then, "{holder}");
        checked += usize::from(today != 0);
    }
    assert!(checked > 3, "{checked} holders with a balance");
}
