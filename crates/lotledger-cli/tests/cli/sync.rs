//! Two real lotledger nodes on loopback: A (`serve`) takes signed messages over HTTP while B
//! (`sync --from A --follow`) follows it; B is SIGKILLed at random moments, at least
//! [`KILLS`] times, and restarted each time. Once A has taken every message, B syncs to the end
//! once more; then every address's balance, history and lots, and every message A processed,
//! are the same on B (what A rejected is not in its list, so B never hears of it), and
//! `verify` is clean on both. A on SQLite and B on PostgreSQL, then the other way round.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lotledger_store::{MessageStatus, Store};
use lotledger_testkit::db;
use lotledger_testkit::server::ServerProcess;
use serde_json::{Value, json};

use super::crash::{MINTER_KEY, NOW, Rng, bin, state, workload};

const KILLS: usize = 10;
const MESSAGES: usize = 400;

fn follower(b_url: &str, a_addr: &str, follow: bool) -> Child {
    let minter = lotledger_sig::evm_address(&MINTER_KEY);
    let mut cmd = Command::new(bin());
    cmd.args(["--database-url", b_url, "--whitelist", &minter])
        .args(["sync", "--from", &format!("http://{a_addr}")])
        .args(["--interval", "0.05", "--lookback", "5", "--page-size", "7"])
        .env_remove("LOTLEDGER_WHITELIST")
        .env_remove("LOTLEDGER_CHANNELS")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if follow {
        cmd.arg("--follow");
    }
    cmd.spawn().unwrap()
}

/// The status A gave each message, and B's (`None`: B never heard of it).
async fn statuses<S: Store>(store: &S, messages: &[Value]) -> Vec<Option<MessageStatus>> {
    let mut out = Vec::new();
    for m in messages {
        let record = store
            .message(m["item_hash"].as_str().unwrap())
            .await
            .unwrap();
        out.push(record.map(|r| r.status));
    }
    out
}

async fn follower_survives_kills(a_url: &str, b_url: &str, seed: u64) {
    let messages = workload(MESSAGES, seed);
    let minter = lotledger_sig::evm_address(&MINTER_KEY);
    let global = ["--database-url", a_url, "--whitelist", minter.as_str()];
    let a = ServerProcess::start(bin(), &global, &["--test-clock"]).unwrap();

    // A client posts every message to A, a few at a time, while B is killed and restarted.
    let addr = a.addr.clone();
    let posted = messages.clone();
    let client = std::thread::spawn(move || {
        for (i, message) in posted.iter().enumerate() {
            let body = json!({"sync": true, "message": message}).to_string();
            let (status, reply) = lotledger_testkit::server::request(
                &addr,
                "POST",
                "/api/v0/messages",
                &[("X-Lotledger-Now", NOW)],
                Some(body.as_bytes()),
            )
            .unwrap();
            assert!(
                status == 200 || status == 422,
                "message {i}: {status} {reply}"
            );
            if i % 20 == 0 {
                std::thread::sleep(Duration::from_millis(15));
            }
        }
    });
    let mut rng = Rng(seed);
    let mut kills = 0;
    while kills < KILLS || !client.is_finished() {
        let mut b = follower(b_url, &a.addr, true);
        std::thread::sleep(Duration::from_millis(30 + rng.below(300)));
        assert!(
            b.try_wait().unwrap().is_none(),
            "the follower stopped by itself"
        );
        b.kill().unwrap(); // SIGKILL
        b.wait().unwrap();
        kills += 1;
    }
    client.join().unwrap();
    // The killed followers got somewhere: a position was committed with some batch.
    let source = format!("sync http://{}", a.addr);
    let progress = if b_url.starts_with("sqlite:") {
        let b = lotledger_store_sqlite::SqliteStore::open(b_url)
            .await
            .unwrap();
        b.ingest_progress(&source).await.unwrap()
    } else {
        let b = lotledger_store_pg::PgStore::open(b_url).await.unwrap();
        b.ingest_progress(&source).await.unwrap()
    };
    let progress = progress.expect("no position recorded while being killed");
    assert!(
        progress.lines > 0 && progress.resume_at.is_some(),
        "{progress:?}"
    );
    // To the end, once, without following: it returns when caught up.
    let finished = follower(b_url, &a.addr, false).wait().unwrap();
    assert!(finished.success(), "the last sync failed");
    drop(a);

    let (a_state, a_statuses, b_state, b_statuses) = if a_url.starts_with("sqlite:") {
        let a = lotledger_store_sqlite::SqliteStore::open(a_url)
            .await
            .unwrap();
        let b = lotledger_store_pg::PgStore::open(b_url).await.unwrap();
        (
            state(&a, &[]).await,
            statuses(&a, &messages).await,
            state(&b, &[]).await,
            statuses(&b, &messages).await,
        )
    } else {
        let a = lotledger_store_pg::PgStore::open(a_url).await.unwrap();
        let b = lotledger_store_sqlite::SqliteStore::open(b_url)
            .await
            .unwrap();
        (
            state(&a, &[]).await,
            statuses(&a, &messages).await,
            state(&b, &[]).await,
            statuses(&b, &messages).await,
        )
    };
    assert_eq!(b_state, a_state, "B's ledger differs from A's");
    let processed = a_statuses
        .iter()
        .filter(|s| **s == Some(MessageStatus::Processed))
        .count();
    assert!(
        processed > MESSAGES / 2,
        "{processed} processed of {MESSAGES}"
    );
    for (i, (on_a, on_b)) in a_statuses.iter().zip(&b_statuses).enumerate() {
        match on_a {
            Some(MessageStatus::Processed) => {
                assert_eq!(on_b, on_a, "message {i}")
            }
            _ => assert_eq!(*on_b, None, "message {i}: A did not process it"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_ten_times_ends_equal_to_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let (sqlite_a, pg_b) = (db::fresh_sqlite_url(&dir), db::fresh_pg_url().await);
    follower_survives_kills(&sqlite_a, &pg_b, 21).await;
    let (pg_a, sqlite_b) = (db::fresh_pg_url().await, db::fresh_sqlite_url(&dir));
    follower_survives_kills(&pg_a, &sqlite_b, 22).await;
}

/// The value of an unlabelled metric, or of `name{labels}`, in a Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `serve --follow`: a server that follows another node while serving it, and reports in
/// /metrics how far behind it is (seconds, messages) and what became of what it read.
#[test]
fn serve_follow_reports_lag_and_outcomes_in_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let minter = lotledger_sig::evm_address(&MINTER_KEY);
    let a_url = db::fresh_sqlite_url(&dir);
    let a = ServerProcess::start(
        bin(),
        &["--database-url", &a_url, "--whitelist", &minter],
        &["--test-clock"],
    )
    .unwrap();
    let messages = workload(60, 3);
    let mut processed = 0;
    for message in &messages {
        let body = json!({"sync": true, "message": message}).to_string();
        let (status, _) = a
            .request(
                "POST",
                "/api/v0/messages",
                &[("X-Lotledger-Now", NOW)],
                Some(body.as_bytes()),
            )
            .unwrap();
        processed += usize::from(status == 200);
    }
    let b_url = db::fresh_sqlite_url(&dir);
    let from = format!("http://{}", a.addr);
    let b = ServerProcess::start(
        bin(),
        &["--database-url", &b_url, "--whitelist", &minter],
        &["--follow", &from, "--interval", "0.05", "--page-size", "9"],
    )
    .unwrap();
    // Polled until the follower has read everything (30 s at most).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let text = loop {
        let (status, text) = b.request("GET", "/metrics", &[], None).unwrap();
        assert_eq!(status, 200);
        let text = text.as_str().unwrap().to_string();
        let done = metric(
            &text,
            r#"lotledger_sync_messages_total{outcome="processed"}"#,
        ) == Some(processed as f64);
        if done {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not caught up: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        metric(&text, "lotledger_sync_lag_messages"),
        Some(0.0),
        "{text}"
    );
    // The newest message was sent at 1_780_000_059: the lag is the time since.
    let lag = metric(&text, "lotledger_sync_lag_seconds").unwrap();
    assert!(lag > 1e6, "{text}");
    // Served too: the follower answers for what it applied.
    let hash = messages[0]["item_hash"].as_str().unwrap();
    let (status, body) = b
        .request("GET", &format!("/api/v0/messages/{hash}/status"), &[], None)
        .unwrap();
    assert_eq!((status, body["status"].as_str()), (200, Some("processed")));
}
