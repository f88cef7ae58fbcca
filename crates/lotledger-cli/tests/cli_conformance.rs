#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.
//! The conformance scenarios driven only through the `lotledger` command line (ingest,
//! import-history, repair, balance, history, lots with `--json`), on SQLite and PostgreSQL.

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use lotledger_core::{Rules, Timestamp};
use lotledger_store::HistorySelector;
use lotledger_testkit::db;
use lotledger_testkit::scenario::{Driver, PostResult, body_value, load_all, run_suite};
use serde_json::Value;

struct CliDriver {
    url: String,
    dir: PathBuf,
    rules: Option<Rules>,
    /// `lotledger serve --test-clock` on the same database, started at the first http check.
    server: Option<Server>,
}

/// A running `lotledger serve`; killed when dropped.
struct Server {
    child: std::process::Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(url: &str) -> Result<Server, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lotledger"))
            .args([
                "--database-url",
                url,
                "serve",
                "--test-clock",
                "--listen",
                "127.0.0.1:0",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let addr = line
            .trim()
            .rsplit("http://")
            .next()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| format!("serve printed {line:?}"))?
            .to_string();
        Ok(Server { child, addr })
    }

    /// One HTTP/1.1 request over a plain socket.
    fn request(&self, method: &str, path: &str, now: Timestamp) -> Result<(u16, Value), String> {
        let mut stream = std::net::TcpStream::connect(&self.addr).map_err(|e| e.to_string())?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nX-Lotledger-Now: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            now.to_rfc3339()
        )
        .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or("no header end")?;
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        let mut body = raw[split + 4..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = dechunk(&body)?;
        }
        Ok((status, body_value(&body)))
    }
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk")?;
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16)
            .map_err(|e| e.to_string())?;
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 4 + size..];
    }
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

    async fn seed(&mut self, rows: &[Value]) -> Result<(), String> {
        let file = self.file("rows.json", &Value::Array(rows.to_vec()).to_string())?;
        self.run(&["import-history", &file]).map(|_| ())
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
            self.server = Some(Server::start(&self.url)?);
        }
        match &self.server {
            Some(server) => server.request(method, path, now),
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
