//! `lotledger bench` at a tiny scale on both stores: every workload reports, and the store ends
//! up with exactly the rows the generator predicts. No timing assertions.

use std::process::Command;

use serde_json::Value;

#[test]
fn bench_smoke_on_both_stores() {
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_lotledger"))
        .args(["bench", "--store", "both", "--scale", "0.01", "--json"])
        .arg(&json_path)
        .arg("--pg-url")
        .arg(lotledger_testkit::db::pg_admin_url())
        .env_remove("LOTLEDGER_BENCH_PG_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "bench failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("| W1 ingest"), "{stdout}");
    assert!(stdout.contains("| W4 repair/verify"), "{stdout}");

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(report["failures"], serde_json::json!([]), "{report:#}");
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);
    assert_eq!(report["parameters"]["scale"], 0.01);
    let positive = |v: &Value, what: &str| {
        assert!(v.as_f64().is_some_and(|x| x > 0.0), "{what} = {v}");
    };
    let mut w1_rows = Vec::new();
    for store in ["sqlite", "postgres"] {
        let s = &report["stores"][store];
        let expected = &s["expected"];
        for key in [
            "messages",
            "history_rows",
            "seconds",
            "messages_per_s",
            "history_rows_per_s",
            // W1 reads a message file written beforehand, as `lotledger ingest FILE` does.
            "file_mib",
            "file_write_seconds",
        ] {
            positive(&s["w1"][key], &format!("{store} w1.{key}"));
        }
        assert_eq!(s["w1"]["messages"], 2000, "{store}");
        assert_eq!(s["w1"]["messages"], expected["w1"]["messages"], "{store}");
        assert_eq!(
            s["w1"]["history_rows"], expected["w1"]["history_rows"],
            "{store}: W1 history rows"
        );
        positive(&s["w1"]["peak_rss_mib"], &format!("{store} w1 RSS"));
        // Both stores plan W1's batches ahead; nobody else writes, so no plan goes stale.
        let w1 = &s["w1"];
        positive(&w1["plans_held"], &format!("{store} w1 plans held"));
        assert_eq!(
            (&w1["plans_stale"], &w1["plans_failed"]),
            (&Value::from(0), &Value::from(0)),
            "{store}: W1 plans stale, failed"
        );
        assert_eq!(
            w1["plans_held"].as_f64().unwrap() + w1["not_ahead"].as_f64().unwrap(),
            w1["batches"].as_f64().unwrap(),
            "{store}: every W1 batch held its plan or was not planned ahead"
        );
        // The limit line: W1's rows inserted raw into a fresh store (the bench checks the
        // counts and fails otherwise).
        for key in ["limit_seconds", "fraction_of_limit"] {
            positive(&s["w1"][key], &format!("{store} w1.{key}"));
        }
        for key in ["lots", "expenses", "drains_per_s", "messages_per_s"] {
            positive(&s["w2"][key], &format!("{store} w2.{key}"));
        }
        assert_eq!(s["w2"]["lots"], 100, "{store}");
        assert_eq!(s["w2"]["expenses"], 500, "{store}");
        assert_eq!(expected["w2"]["history_rows"], 600, "{store}");
        // PostgreSQL keeps balances' sums between writes: its reads after a write are timed
        // apart; SQLite keeps none, and has no such line.
        let after_write = store == "postgres";
        for lots in [1, 100, 1000] {
            for method in [
                "balance",
                "balance_details",
                "balance_after_write",
                "balance_after_other_write",
            ] {
                for stat in ["p50", "p99", "max"] {
                    let figure = &s["w3"][format!("{method}_{lots}_lots_{stat}_us")];
                    let what = format!("{store} w3 {method} {lots} {stat}");
                    if method.starts_with("balance_after") && !after_write {
                        assert!(figure.is_null(), "{what}: {figure}");
                    } else {
                        positive(figure, &what);
                    }
                }
            }
        }
        // The as-of reads: the address written in one message, the one whose rows lie among
        // others', and (PostgreSQL) that one again once the history is vacuumed.
        for series in ["as_of", "as_of_scattered", "as_of_vacuumed"] {
            for stat in ["p50", "p99", "max"] {
                let figure = &s["w3"][format!("{series}_{stat}_us")];
                let what = format!("{store} w3 {series} {stat}");
                if series == "as_of_vacuumed" && store == "sqlite" {
                    assert!(figure.is_null(), "{what}: {figure}");
                } else {
                    positive(figure, &what);
                }
            }
        }
        positive(&s["w3"]["http_requests"], &format!("{store} http requests"));
        positive(
            &s["w3"]["http_requests_per_s"],
            &format!("{store} http rate"),
        );
        assert_eq!(s["w3"]["http_non_200"], 0, "{store}");
        let ledger_rows = expected["w1"]["history_rows"].as_u64().unwrap()
            + expected["w2"]["history_rows"].as_u64().unwrap()
            + expected["w3"]["history_rows"].as_u64().unwrap();
        assert_eq!(
            s["size"]["history_rows"], ledger_rows,
            "{store}: ledger rows"
        );
        for key in [
            "bytes_per_history_row",
            "bytes_per_lot",
            "database_mib",
            "database_bytes_per_history_row",
            "interned_bytes_per_history_row",
        ] {
            positive(&s["size"][key], &format!("{store} size.{key}"));
        }
        assert!(
            s["w4"]["history_rows"].as_u64().unwrap() >= 10_000,
            "{store}"
        );
        for key in ["repair_rows_per_s", "verify_rows_per_s"] {
            positive(&s["w4"][key], &format!("{store} w4.{key}"));
        }
        assert_eq!(s["w4"]["drifted"], 0, "{store}");
        // W5 signs W1's workload: as many messages, every one verified (else the run fails).
        assert_eq!(s["w5"]["messages"], s["w1"]["messages"], "{store}");
        positive(
            &s["w5"]["messages_per_s_1_job"],
            &format!("{store} w5 one thread"),
        );
        if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
            positive(&s["w5"]["messages_per_s"], &format!("{store} w5 all cores"));
        }
        for key in ["libsecp256k1_recoveries_per_s", "k256_recoveries_per_s"] {
            positive(&s["w5"][key], &format!("{store} w5.{key}"));
        }
        // W6 posts W5's distributions and expenses over HTTP: every reply 200 (else it fails).
        assert!(s["w6"]["messages"].as_u64().unwrap() > 0, "{store}");
        for key in ["messages_per_s_1_per_tx", "messages_per_s"] {
            positive(&s["w6"][key], &format!("{store} w6.{key}"));
        }
        w1_rows.push(s["w1"]["history_rows"].clone());
    }
    // Same seed, same workload: both stores hold the same rows.
    assert_eq!(w1_rows[0], w1_rows[1]);
}
