//! Drain policies through the CLI (issue 12, part 1), on SPEC Part II 8.3's S14 (a non-expiring
//! grant, then an expiring one, then an expense larger than either: v1 leaves 0 once the
//! expiring lot has expired, v2 leaves 5 000 000). The ledger keeps its schedule: a `--policy`
//! that would plan applied messages differently is refused and changes nothing, a later
//! activation is taken and kept, and `policy set --rederive` re-derives the past and reports
//! what changed.

use std::process::Output;

use serde_json::{Value, json};

use super::crash::{ok_with, run_with};

const WHITELISTED: &str = "0xwhitelisted";

fn run(url: &str, args: &[&str]) -> Output {
    run_with(url, WHITELISTED, args)
}

fn ok(url: &str, args: &[&str]) -> String {
    ok_with(url, WHITELISTED, args)
}

fn post(hash: &str, time: f64, kind: &str, content: Value) -> Value {
    let item_content =
        json!({"address": WHITELISTED, "time": time, "type": kind, "content": content}).to_string();
    json!({"item_hash": hash, "type": "POST", "chain": "ETH", "sender": WHITELISTED,
           "channel": "ALEPH_CREDIT", "item_type": "inline", "item_content": item_content,
           "time": time, "signature": "0x"})
}

/// S14 for `user`, `days` after 2023-06-15.
fn s14(user: &str, days: f64) -> Vec<Value> {
    let t = |s: f64| s + days * 86_400.0;
    let grant = |hash: &str, time: f64, expiration: Option<f64>| {
        let mut entry = json!({"address": user, "amount": 1000, "price": "1.0", "tx_hash": "0x1",
                               "provider": "test_provider"});
        if let Some(e) = expiration {
            entry["expiration"] = json!(e * 1000.0);
        }
        post(
            &format!("{hash}_{user}"),
            time,
            "aleph_credit_distribution",
            json!({"distribution": {"credits": [entry], "token": "TEST", "chain": "ETH"}}),
        )
    };
    vec![
        grant("no_expiry", t(1_686_826_800.0), None),
        grant("expiring", t(1_686_828_600.0), Some(t(1_686_830_100.0))),
        post(
            &format!("expense_{user}"),
            t(1_686_829_800.0),
            "aleph_credit_expense",
            json!({"expense": {"credits": [{"address": user, "amount": 1500, "ref": "x"}]}}),
        ),
    ]
}

fn file(dir: &tempfile::TempDir, name: &str, messages: &[Value]) -> String {
    let path = dir.path().join(name);
    let lines: Vec<String> = messages.iter().map(Value::to_string).collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path.to_str().unwrap().to_string()
}

fn balance(url: &str, user: &str, at: &str) -> Value {
    serde_json::from_str(&ok(url, &["balance", user, "--at", at, "--json"])).unwrap()
}

#[test]
fn the_schedule_is_kept_changed_forward_and_rederived_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let url = lotledger_testkit::db::fresh_sqlite_url(&dir);
    let (a, b) = ("0xuser_a", "0xuser_b");
    let (a_now, b_now) = ("2023-06-15T12:00:00Z", "2023-06-16T12:00:00Z");
    let first = file(&dir, "a.jsonl", &s14(a, 0.0));
    let second = file(&dir, "b.jsonl", &s14(b, 1.0));
    let ingest = |policy: &str, path: &str| {
        run(
            &url,
            &[
                "--policy",
                policy,
                "ingest",
                "--trusted",
                "--now",
                b_now,
                path,
            ],
        )
    };

    // Under v1 (kept by the first writer), S14's v1 answer.
    assert!(ingest("v1", &first).status.success());
    assert_eq!(ok(&url, &["policy", "show"]).trim(), "v1");
    assert_eq!(balance(&url, a, a_now), 0);

    // v2 from the beginning would plan A's expense differently: refused, nothing applied.
    let refused = ingest("v2", &second);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("policy set") && why.contains("--rederive"),
        "{why}"
    );
    assert_eq!(balance(&url, b, b_now), 0);
    assert_eq!(ok(&url, &["policy", "show"]).trim(), "v1");

    // v2 from a later instant: taken, kept, and B's messages are planned by it.
    let forward = "v1,v2@2023-06-16T00:00:00Z";
    assert!(ingest(forward, &second).status.success());
    assert_eq!(ok(&url, &["policy", "show"]).trim(), forward);
    assert_eq!(balance(&url, b, b_now), 5_000_000);
    assert_eq!(balance(&url, a, a_now), 0);
    // Without --policy the kept schedule applies; repair changes nothing.
    ok(&url, &["repair", "--restart"]);
    assert_eq!(balance(&url, a, a_now), 0);
    assert_eq!(balance(&url, b, b_now), 5_000_000);

    // v2 throughout: refused without --rederive, then re-derived with it.
    let out = run(&url, &["policy", "set", "v2"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rederive"));
    let report: Value = serde_json::from_str(&ok(
        &url,
        &[
            "policy",
            "set",
            "v2",
            "--rederive",
            "--now",
            a_now,
            "--json",
        ],
    ))
    .unwrap();
    // A's three rows take v2; only A's lots change: 0 -> 5 000 000 at A's instant.
    assert_eq!(report["schedule"], "v2");
    assert_eq!(report["relabeled_rows"], 3);
    assert_eq!(
        report["changed"],
        json!([{"address": a, "balance_before": 0, "balance_after": 5_000_000}])
    );
    assert_eq!(balance(&url, a, a_now), 5_000_000);
    assert_eq!(balance(&url, b, b_now), 5_000_000);
    assert_eq!(ok(&url, &["policy", "show"]).trim(), "v2");
    assert!(ok(&url, &["verify"]).contains("cache equals replay"));
    // Again: nothing left to do.
    assert!(ok(&url, &["policy", "set", "v2", "--rederive"]).contains("nothing to re-derive"));
}

/// A re-derivation interrupted after the rows were relabeled (the lots still those of the old
/// schedule) is finished by running the command again: it re-derives and reports the change.
#[test]
fn an_interrupted_rederivation_resumes() {
    use lotledger_store::Store;
    let dir = tempfile::tempdir().unwrap();
    let url = lotledger_testkit::db::fresh_sqlite_url(&dir);
    let a = "0xuser_a";
    let a_now = "2023-06-15T12:00:00Z";
    let first = file(&dir, "a.jsonl", &s14(a, 0.0));
    ok(
        &url,
        &[
            "--policy",
            "v1",
            "ingest",
            "--trusted",
            "--now",
            a_now,
            &first,
        ],
    );
    assert_eq!(balance(&url, a, a_now), 0);
    // What `policy set v2 --rederive` does before its repair, then a crash.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = lotledger_store_sqlite::SqliteStore::open(&url)
            .await
            .unwrap();
        store.set_repair_checkpoint(Some("")).await.unwrap();
        let v2 = lotledger_core::Schedule::parse("v2").unwrap();
        assert_eq!(store.set_drain_schedule(&v2, true).await.unwrap(), 3);
    });
    assert!(
        !run(&url, &["verify"]).status.success(),
        "the lots are stale"
    );
    let report: Value = serde_json::from_str(&ok(
        &url,
        &[
            "policy",
            "set",
            "v2",
            "--rederive",
            "--now",
            a_now,
            "--json",
        ],
    ))
    .unwrap();
    assert_eq!(report["relabeled_rows"], 0);
    assert_eq!(
        report["changed"],
        json!([{"address": a, "balance_before": 0, "balance_after": 5_000_000}])
    );
    assert_eq!(balance(&url, a, a_now), 5_000_000);
    assert!(ok(&url, &["verify"]).contains("cache equals replay"));
}
