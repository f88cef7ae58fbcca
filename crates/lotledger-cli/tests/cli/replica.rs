//! Read replicas on PostgreSQL: a primary and a streaming hot standby (`pg_basebackup -R`) on
//! loopback; a writable `serve` on the primary takes signed messages, a `serve --read-only`
//! on the standby answers the same balances, histories and messages once the standby has
//! replayed the primary's WAL (waited for on the replay position, never on a sleep), refuses
//! writes with 503 naming the writable node, and reports its lag in /metrics.

use std::time::{Duration, Instant};

use lotledger_testkit::cluster::PgCluster;
use lotledger_testkit::server::ServerProcess;
use serde_json::{Value, json};
use sqlx::Connection;

use super::crash::{MINTER_KEY, NOW, bin, workload};

/// Waits until the standby has replayed everything the primary has written so far.
async fn replayed(primary: &str, standby: &str) {
    let mut p = sqlx::PgConnection::connect(primary).await.unwrap();
    let written: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&mut p)
        .await
        .unwrap();
    let mut s = sqlx::PgConnection::connect(standby).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let caught_up: bool = sqlx::query_scalar("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn")
            .bind(&written)
            .fetch_one(&mut s)
            .await
            .unwrap();
        if caught_up {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the standby did not replay {written}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_server_on_a_hot_standby_answers_as_the_primary() {
    let primary = PgCluster::start().unwrap();
    let standby = primary.standby().unwrap();
    let minter = lotledger_sig::evm_address(&MINTER_KEY);
    let writable = ServerProcess::start(
        bin(),
        &["--database-url", &primary.url(), "--whitelist", &minter],
        &["--test-clock"],
    )
    .unwrap();
    // The standby replays the schema the writable server's store created.
    replayed(&primary.url(), &standby.url()).await;
    let writable_url = format!("http://{}", writable.addr);
    let reader = ServerProcess::start(
        bin(),
        &["--database-url", &standby.url(), "--whitelist", &minter],
        &[
            "--read-only",
            "--writable-node",
            &writable_url,
            "--metrics-upkeep-secs",
            "0.05",
        ],
    )
    .unwrap();

    let messages = workload(120, 17);
    let mut senders = std::collections::BTreeSet::new();
    for (i, message) in messages.iter().enumerate() {
        let body = json!({"sync": true, "message": message}).to_string();
        let (status, reply) = writable
            .request(
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
        senders.insert(message["sender"].as_str().unwrap().to_string());
    }
    replayed(&primary.url(), &standby.url()).await;

    let mut paths = vec![
        "/api/v0/messages.json?pagination=0&sortOrder=1".to_string(),
        "/api/v0/credit_balances?pagination=0".to_string(),
    ];
    for m in &messages {
        paths.push(format!(
            "/api/v0/messages/{}",
            m["item_hash"].as_str().unwrap()
        ));
    }
    for holder in (0..40u8).map(|i| {
        let mut k = [0x40u8; 32];
        k[31] = i + 1;
        lotledger_sig::evm_address(&k)
    }) {
        paths.push(format!(
            "/api/v0/addresses/{holder}/balance?include_credit_details=true"
        ));
        paths.push(format!(
            "/api/v0/addresses/{holder}/credit_history?pagination=0"
        ));
    }
    let mut found = 0;
    for path in &paths {
        let (a_status, a_body) = writable.request("GET", path, &[], None).unwrap();
        let (b_status, b_body) = reader.request("GET", path, &[], None).unwrap();
        assert_eq!((b_status, &b_body), (a_status, &a_body), "{path}");
        found += usize::from(a_status == 200);
    }
    // Every message and nearly every holder has something to show.
    assert!(found > 180, "{found} answers of {}", paths.len());

    // A write is refused, naming the writable node, and changes nothing.
    let extra = &workload(121, 17)[120];
    let body = json!({"sync": true, "message": extra}).to_string();
    let (status, reply) = reader
        .request("POST", "/api/v0/messages", &[], Some(body.as_bytes()))
        .unwrap();
    assert_eq!(status, 503, "{reply}");
    assert_eq!(reply["writable_node"], Value::String(writable_url.clone()));
    assert!(
        reply["error"].as_str().unwrap().contains(&writable_url),
        "{reply}"
    );
    let hash = extra["item_hash"].as_str().unwrap();
    let (status, _) = reader
        .request("GET", &format!("/api/v0/messages/{hash}"), &[], None)
        .unwrap();
    assert_eq!(status, 404);

    // The lag, in /metrics (read on a schedule: polled until it appears).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, text) = reader.request("GET", "/metrics", &[], None).unwrap();
        let text = text.as_str().unwrap_or_default().to_string();
        if text.contains("lotledger_replica_lag_seconds ")
            && text.contains("lotledger_replica_lag_bytes ")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no replication lag in /metrics: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
