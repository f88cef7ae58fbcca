#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.
//! The conformance scenarios driven only through the `lotledger` command line (ingest,
//! import-history, repair, balance, history, lots with `--json`), on SQLite and PostgreSQL.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use lotledger_core::{Rules, Timestamp};
use lotledger_store::HistorySelector;
use lotledger_testkit::db;
use lotledger_testkit::scenario::{Driver, PostResult, load_all, run_suite};
use lotledger_testkit::server::ServerProcess;
use serde_json::Value;

struct CliDriver {
    url: String,
    dir: PathBuf,
    rules: Option<Rules>,
    /// `lotledger serve --test-clock` on the same database, started at the first http check.
    server: Option<ServerProcess>,
}

impl CliDriver {
    fn run(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lotledger"));
        cmd.arg("--database-url").arg(&self.url);
        if let Some(rules) = &self.rules {
            cmd.arg("--whitelist").arg(
                rules
                    .whitelist
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(","),
            );
            cmd.arg("--channels")
                .arg(rules.channels.iter().cloned().collect::<Vec<_>>().join(","));
        }
        let out = cmd
            .args(args)
            .env_remove("LOTLEDGER_WHITELIST")
            .env_remove("LOTLEDGER_CHANNELS")
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "lotledger {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        String::from_utf8(out.stdout).map_err(|e| e.to_string())
    }

    fn json(&self, args: &[&str]) -> Result<Value, String> {
        let text = self.run(args)?;
        serde_json::from_str(&text)
            .map_err(|e| format!("lotledger {args:?} printed non-JSON {text:?}: {e}"))
    }

    fn file(&self, name: &str, content: &str) -> Result<String, String> {
        let path = self.dir.join(name);
        std::fs::write(&path, content).map_err(|e| e.to_string())?;
        Ok(path.display().to_string())
    }
}

impl Driver for CliDriver {
    async fn post(
        &mut self,
        envelope: &Value,
        rules: &Rules,
        now: Timestamp,
    ) -> Result<PostResult, String> {
        self.rules = Some(rules.clone());
        let file = self.file("message.jsonl", &format!("{envelope}\n"))?;
        let summary = self.json(&[
            "ingest",
            "--trusted",
            "--json",
            "--now",
            &now.to_rfc3339(),
            &file,
        ])?;
        let count = |k: &str| summary[k].as_u64().unwrap_or(0);
        Ok(if count("processed") == 1 {
            PostResult::Processed
        } else if count("ignored") == 1 {
            PostResult::Ignored
        } else if count("already_applied") == 1 {
            PostResult::AlreadyApplied
        } else if count("rejected") == 1 {
            PostResult::Rejected(
                summary["errors"][0]["error"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        } else {
            return Err(format!("unexpected ingest summary {summary}"));
        })
    }

    async fn seed(&mut self, rows: &[Value], rules: &Rules) -> Result<(), String> {
        let file = self.file("rows.json", &Value::Array(rows.to_vec()).to_string())?;
        let policy = rules.schedule.to_string();
        self.run(&["--policy", &policy, "import-history", &file])
            .map(|_| ())
    }

    async fn repair(&mut self) -> Result<(), String> {
        self.run(&["repair", "--restart"]).map(|_| ())
    }

    async fn balance(&mut self, address: &str, at: Timestamp) -> Result<Value, String> {
        self.json(&["balance", address, "--at", &at.to_rfc3339(), "--json"])
    }

    async fn balance_details(&mut self, address: &str, at: Timestamp) -> Result<Value, String> {
        self.json(&[
            "balance",
            address,
            "--at",
            &at.to_rfc3339(),
            "--details",
            "--json",
        ])
    }

    async fn history(&mut self, selector: &HistorySelector) -> Result<Value, String> {
        match selector {
            HistorySelector::Address(a) => self.json(&["history", a, "--json"]),
            HistorySelector::CreditRef(r) => self.json(&["history", "--credit-ref", r, "--json"]),
        }
    }

    async fn lots(&mut self, address: &str) -> Result<Value, String> {
        self.json(&["lots", address, "--json"])
    }

    async fn http(
        &mut self,
        method: &str,
        path: &str,
        now: Timestamp,
    ) -> Result<(u16, Value), String> {
        if self.server.is_none() {
            self.server = Some(ServerProcess::start(
                std::path::Path::new(env!("CARGO_BIN_EXE_lotledger")),
                &["--database-url", &self.url],
                &["--test-clock"],
            )?);
        }
        match &self.server {
            Some(server) => server.request(
                method,
                path,
                &[("X-Lotledger-Now", &now.to_rfc3339())],
                None,
            ),
            None => Err("no server".into()),
        }
    }
}

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let scenarios = load_all(&lotledger_testkit::conformance_dir()).expect("conformance data");
        let dir = tempfile::tempdir().expect("temporary directory");
        let files = dir.path().to_path_buf();
        let sqlite_failed = run_suite("cli-sqlite", &scenarios, async || CliDriver {
            url: db::fresh_sqlite_url(&dir),
            dir: files.clone(),
            rules: None,
            server: None,
        })
        .await;
        let pg_failed = run_suite("cli-postgres", &scenarios, async || CliDriver {
            url: db::fresh_pg_url().await,
            dir: files.clone(),
            rules: None,
            server: None,
        })
        .await;
        let failed = sqlite_failed + pg_failed;
        println!(
            "cli conformance: {} passed, {failed} failed",
            scenarios.len() * 2 - failed
        );
        if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    })
}
