#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.
//! The conformance runner: every scenario of `conformance/` on a real SQLite file and a real
//! PostgreSQL database, through the `Store` API, then again with each post's dry run checked
//! against what the post did. Prints one line per scenario and store.

use std::process::ExitCode;

use lotledger_testkit::dry_run::DryRunDriver;
use lotledger_testkit::scenario::{LibDriver, load_all, run_suite};
use lotledger_testkit::{conformance_dir, db};

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let scenarios = match load_all(&conformance_dir()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("cannot load the conformance data: {e}");
                return ExitCode::FAILURE;
            }
        };
        // lotledger's own: the drain-policy scenarios (v2, and schedules switching mid-stream),
        // from the public ones and SPEC Part II 8.3 (scripts/make-policy-scenarios.py).
        let policies = match load_all(
            &lotledger_testkit::repo_root()
                .join("crates/lotledger-testkit/tests/data/policy_scenarios"),
        ) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("cannot load the policy scenarios: {e}");
                return ExitCode::FAILURE;
            }
        };
        let scenarios: Vec<_> = scenarios.into_iter().chain(policies).collect();
        let dir = tempfile::tempdir().expect("temporary directory");
        let sqlite_failed = run_suite("sqlite", &scenarios, async || LibDriver {
            store: db::fresh_sqlite(&dir).await.0,
        })
        .await;
        let pg_failed = run_suite("postgres", &scenarios, async || LibDriver {
            store: db::fresh_pg().await,
        })
        .await;
        // Again, with each post's dry run asked first and checked against what it did.
        let sqlite_dry_failed = run_suite("sqlite dry-run", &scenarios, async || DryRunDriver {
            inner: LibDriver {
                store: db::fresh_sqlite(&dir).await.0,
            },
        })
        .await;
        let pg_dry_failed = run_suite("postgres dry-run", &scenarios, async || DryRunDriver {
            inner: LibDriver {
                store: db::fresh_pg().await,
            },
        })
        .await;
        let failed = sqlite_failed + pg_failed + sqlite_dry_failed + pg_dry_failed;
        let total = scenarios.len() * 4;
        println!("conformance: {} passed, {failed} failed", total - failed);
        if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    })
}
