//! Crash safety: `lotledger ingest` and `lotledger serve` killed with SIGKILL at random moments
//! (at least 20 times per store), restarted each time until all messages are in. Afterwards
//! every message is applied exactly once, the ledger equals that of one clean run, and
//! `verify` is clean. On SQLite and PostgreSQL.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lotledger_core::Timestamp;
use lotledger_store::{HistorySelector, Store};
use lotledger_testkit::db;
use lotledger_testkit::server::ServerProcess;
use serde_json::{Value, json};

pub(super) const MINTER_KEY: [u8; 32] = [0x11; 32];
pub(super) const NOW: &str = "2026-11-25T00:00:00Z";
const KILLS: usize = 20;
const HOLDERS: u64 = 40;

pub(super) fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lotledger"))
}

/// `lotledger --database-url URL --whitelist WHITELIST ARGS…`, run to its end, with none of
/// the settings' environment variables of the machine running the tests.
pub(super) fn run_with(url: &str, whitelist: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(["--database-url", url, "--whitelist", whitelist])
        .args(args)
        .env_remove("LOTLEDGER_WHITELIST")
        .env_remove("LOTLEDGER_CHANNELS")
        .env_remove("LOTLEDGER_POLICY")
        .output()
        .unwrap()
}

/// [`run_with`], which must succeed: its standard output.
pub(super) fn ok_with(url: &str, whitelist: &str, args: &[&str]) -> String {
    let out = run_with(url, whitelist, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap_or_default()
}

/// splitmix64: a deterministic stream for the workload and the kill times.
pub(super) struct Rng(pub(super) u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn holder_key(i: u64) -> [u8; 32] {
    let mut k = [0x40u8; 32];
    k[31] = u8::try_from(i + 1).unwrap();
    k
}

/// Signed messages: grants, expenses and transfers among `HOLDERS` holders, the `i`-th sent
/// at the envelope time `1_780_000_000 + i`.
pub(super) fn workload(n: usize, seed: u64) -> Vec<Value> {
    let mut rng = Rng(seed);
    let minter = lotledger_sig::evm_address(&MINTER_KEY);
    let holders: Vec<String> = (0..HOLDERS)
        .map(|i| lotledger_sig::evm_address(&holder_key(i)))
        .collect();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let time = 1_780_000_000.0 + i as f64;
        let h = rng.below(HOLDERS);
        let (key, content) = match (i, rng.below(10)) {
            (0..40, _) | (_, 0..4) => (
                MINTER_KEY,
                json!({"address": minter, "time": time, "type": "aleph_credit_distribution",
                    "content": {"distribution": {"token": "T", "chain": "ETH", "credits": [
                        {"address": holders[h as usize], "amount": 1000 + rng.below(1000), "price": "0.1",
                         "tx_hash": format!("0x{i}"), "provider": "ALEPH"}]}}}),
            ),
            (_, 4..7) => (
                MINTER_KEY,
                json!({"address": minter, "time": time, "type": "aleph_credit_expense",
                    "content": {"expense": {"credits": [
                        {"address": holders[h as usize], "amount": 1 + rng.below(300), "ref": "vm"}]}}}),
            ),
            _ => {
                let to = (h + 1 + rng.below(HOLDERS - 1)) % HOLDERS;
                (
                    holder_key(h),
                    json!({"address": holders[h as usize], "time": time, "type": "aleph_credit_transfer",
                        "content": {"transfer": {"credits": [
                            {"address": holders[to as usize], "amount": 1 + rng.below(200)}]}}}),
                )
            }
        };
        let sender = lotledger_sig::evm_address(&key);
        let item_content = content.to_string();
        let item_hash = lotledger_sig::item_hash_of(&item_content);
        let buffer = lotledger_sig::verification_buffer("ETH", &sender, "POST", &item_hash);
        out.push(
            json!({"item_hash": item_hash, "type": "POST", "chain": "ETH", "sender": sender,
            "channel": "ALEPH_CREDIT", "item_type": "inline", "item_content": item_content,
            "time": 1_780_000_000.0 + i as f64,
            "signature": lotledger_sig::sign_evm(&key, &buffer)}),
        );
    }
    out
}

fn lotledger(url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args([
        "--database-url",
        url,
        "--whitelist",
        &lotledger_sig::evm_address(&MINTER_KEY),
    ])
    .args(args)
    .env_remove("LOTLEDGER_WHITELIST")
    .env_remove("LOTLEDGER_CHANNELS")
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    cmd
}

/// Everything observable of the ledger for these addresses and hashes.
pub(super) async fn state<S: Store>(store: &S, messages: &[Value]) -> Value {
    let at = Timestamp::parse_rfc3339(NOW).unwrap();
    let mut out = Vec::new();
    for a in store.addresses().await.unwrap() {
        let history = store
            .history(&HistorySelector::Address(a.clone()))
            .await
            .unwrap();
        out.push(json!({
            "address": a,
            "history": history.iter().map(lotledger_core::json::history_row).collect::<Vec<_>>(),
            "lots": store.lots(&a).await.unwrap().iter().map(lotledger_core::json::lot).collect::<Vec<_>>(),
            "balance": store.balance(&a, at).await.unwrap().0,
        }));
    }
    for m in messages {
        let hash = m["item_hash"].as_str().unwrap();
        let record = store.message(hash).await.unwrap();
        out.push(json!(format!("{hash} {:?}", record.map(|r| r.status))));
    }
    let addresses = store.address_rows().await.unwrap();
    assert!(
        store.verify(&addresses).await.unwrap().is_empty(),
        "verify found drift"
    );
    Value::Array(out)
}

/// Asserts the crashed ledger equals the clean one (and both verify clean).
async fn assert_same(clean_url: &str, crash_url: &str, messages: &[Value]) {
    if clean_url.starts_with("sqlite:") {
        let clean = lotledger_store_sqlite::SqliteStore::open(clean_url)
            .await
            .unwrap();
        let crashed = lotledger_store_sqlite::SqliteStore::open(crash_url)
            .await
            .unwrap();
        assert_eq!(
            state(&crashed, messages).await,
            state(&clean, messages).await
        );
    } else {
        let clean = lotledger_store_pg::PgStore::open(clean_url).await.unwrap();
        let crashed = lotledger_store_pg::PgStore::open(crash_url).await.unwrap();
        assert_eq!(
            state(&crashed, messages).await,
            state(&clean, messages).await
        );
    }
}

/// Ingest killed `KILLS` times, then run to the end; the result equals a clean run.
async fn ingest_survives_kills(clean_url: &str, crash_url: &str, dir: &Path) {
    let messages = workload(6000, 7);
    let file = dir.join("messages.jsonl");
    let text: Vec<String> = messages.iter().map(Value::to_string).collect();
    std::fs::write(&file, text.join("\n") + "\n").unwrap();
    let file = file.to_str().unwrap();

    let started = Instant::now();
    assert!(
        lotledger(clean_url, &["ingest", "--now", NOW, file])
            .status()
            .unwrap()
            .success()
    );
    let clean_run = started.elapsed();

    // Kill delays well below a full run, so that every run is cut short until KILLS kills:
    // some die while starting or migrating, most in the middle of a batch.
    let mut rng = Rng(99);
    let window = u64::try_from(clean_run.as_millis()).unwrap().max(60) / 30;
    let mut kills = 0;
    while kills < KILLS {
        let mut child = lotledger(crash_url, &["ingest", "--now", NOW, "--batch", "50", file])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1 + rng.below(window)));
        let finished = child.try_wait().unwrap().is_some();
        if !finished {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
        assert!(
            !finished || kills >= KILLS,
            "the file was done after {kills} kills: make it larger"
        );
    }
    assert!(
        lotledger(crash_url, &["ingest", "--now", NOW, file])
            .status()
            .unwrap()
            .success()
    );
    assert_same(clean_url, crash_url, &messages).await;
}

/// `serve` killed `KILLS` times while a client posts; the client resends what got no answer.
async fn serve_survives_kills(clean_url: &str, crash_url: &str) {
    let messages = workload(1500, 11);
    let minter = lotledger_sig::evm_address(&MINTER_KEY);
    let global = ["--database-url", crash_url, "--whitelist", minter.as_str()];
    let mut rng = Rng(5);
    let mut server = ServerProcess::start(bin(), &global, &["--test-clock"]).unwrap();
    let mut next_kill = Instant::now() + Duration::from_millis(20 + rng.below(150));
    let mut kills = 0;
    let mut i = 0;
    while i < messages.len() {
        if kills < KILLS && Instant::now() >= next_kill {
            drop(server); // SIGKILL
            kills += 1;
            server = ServerProcess::start(bin(), &global, &["--test-clock"]).unwrap();
            next_kill = Instant::now() + Duration::from_millis(20 + rng.below(150));
        }
        let body = json!({"sync": true, "message": messages[i]}).to_string();
        match server.request(
            "POST",
            "/api/v0/messages",
            &[("X-Lotledger-Now", NOW)],
            Some(body.as_bytes()),
        ) {
            Ok((200 | 422, _)) => i += 1,
            Ok((status, reply)) => panic!("message {i}: {status} {reply}"),
            Err(_) => {} // connection lost: resend after the restart
        }
    }
    while kills < KILLS {
        drop(server);
        kills += 1;
        server = ServerProcess::start(bin(), &global, &["--test-clock"]).unwrap();
    }
    drop(server);
    // The clean run: the same messages in one ingest.
    let file = std::env::temp_dir().join(format!("lotledger-crash-{}.jsonl", std::process::id()));
    let text: Vec<String> = messages.iter().map(Value::to_string).collect();
    std::fs::write(&file, text.join("\n") + "\n").unwrap();
    assert!(
        lotledger(clean_url, &["ingest", "--now", NOW, file.to_str().unwrap()])
            .status()
            .unwrap()
            .success()
    );
    let _ = std::fs::remove_file(&file);
    assert_same(clean_url, crash_url, &messages).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_killed_twenty_times_applies_everything_once() {
    let dir = tempfile::tempdir().unwrap();
    let (clean, crash) = (db::fresh_sqlite_url(&dir), db::fresh_sqlite_url(&dir));
    ingest_survives_kills(&clean, &crash, dir.path()).await;
    let (clean, crash) = (db::fresh_pg_url().await, db::fresh_pg_url().await);
    ingest_survives_kills(&clean, &crash, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_killed_twenty_times_applies_everything_once() {
    let dir = tempfile::tempdir().unwrap();
    let (clean, crash) = (db::fresh_sqlite_url(&dir), db::fresh_sqlite_url(&dir));
    serve_survives_kills(&clean, &crash).await;
    let (clean, crash) = (db::fresh_pg_url().await, db::fresh_pg_url().await);
    serve_survives_kills(&clean, &crash).await;
}
