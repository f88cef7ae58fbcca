//! Database faults. PostgreSQL stopped under a running API: requests get 503 with a clear
//! body, nothing is half-applied, and service comes back by itself when the server returns.
//! A SQLite file locked by another connection: a clear "unavailable" error, nothing changed,
//! and the write succeeds once the lock is gone.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use lotledger_api::{ApiConfig, router};
use lotledger_core::{Post, Rules, Timestamp};
use lotledger_store::{Outcome, Store, StoreError};
use lotledger_store_pg::PgStore;
use lotledger_testkit::cluster::PgCluster;
use lotledger_testkit::db;
use lotledger_testkit::server::call_router;
use serde_json::{Value, json};
use sqlx::Connection as _;

const GRANTOR: [u8; 32] = [0x11; 32];

fn signed_grant(nonce: u32, amount: i64) -> Value {
    let sender = lotledger_sig::evm_address(&GRANTOR);
    let item_content = json!({"address": sender, "time": 1_780_000_000.0 + f64::from(nonce),
        "type": "aleph_credit_distribution",
        "content": {"distribution": {"token": "T", "chain": "ETH", "credits": [
            {"address": "0xholder", "amount": amount, "price": "0.1", "tx_hash": "0xt", "provider": "ALEPH"}]}}})
    .to_string();
    let item_hash = lotledger_sig::item_hash_of(&item_content);
    let buffer = lotledger_sig::verification_buffer("ETH", &sender, "POST", &item_hash);
    json!({"sync": true, "message": {"item_hash": item_hash, "type": "POST", "chain": "ETH",
        "sender": sender, "channel": "ALEPH_CREDIT", "item_type": "inline",
        "item_content": item_content, "signature": lotledger_sig::sign_evm(&GRANTOR, &buffer)}})
}

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    call_router(
        app,
        method,
        uri,
        &[],
        body.map(|b| b.to_string().into_bytes()),
    )
    .await
    .unwrap()
}

/// A store on the PostgreSQL database at `url`, and the API over it, which has applied one
/// grant of 1 000 to `0xholder`.
async fn serving_a_grant(url: &str) -> (PgStore, axum::Router) {
    let store = PgStore::open(url).await.unwrap();
    let rules = Rules::new(
        vec![lotledger_sig::evm_address(&GRANTOR)],
        vec!["ALEPH_CREDIT".into()],
    );
    let app = router(Arc::new(store.clone()), ApiConfig::new(rules));
    let (status, _) = call(
        &app,
        "POST",
        "/api/v0/messages",
        Some(&signed_grant(1, 1000)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    (store, app)
}

#[tokio::test]
async fn postgres_down_gives_503_and_service_recovers_by_itself() {
    let cluster = PgCluster::start().unwrap();
    let (store, app) = serving_a_grant(&cluster.url()).await;
    let balance = "/api/v0/addresses/0xholder/balance";

    cluster.down().unwrap();
    let (status, body) = call(&app, "GET", balance, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("unavailable"),
        "{body}"
    );
    let second = signed_grant(2, 500);
    let (status, _) = call(&app, "POST", "/api/v0/messages", Some(&second)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    cluster.up().unwrap();
    let mut recovered = None;
    for _ in 0..40 {
        let (status, body) = call(&app, "GET", balance, None).await;
        if status == StatusCode::OK {
            recovered = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let body = recovered.expect("service recovers once PostgreSQL is back");
    // The message refused during the outage left no trace.
    assert_eq!(body["credit_balance"], 1000);
    let hash = second["message"]["item_hash"].as_str().unwrap();
    let (status, _) = call(&app, "GET", &format!("/api/v0/messages/{hash}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Sent again, it is applied.
    let (status, _) = call(&app, "POST", "/api/v0/messages", Some(&second)).await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = call(&app, "GET", balance, None).await;
    assert_eq!(body["credit_balance"], 1500);
    let addresses = store.address_rows().await.unwrap();
    assert!(store.verify(&addresses).await.unwrap().is_empty());
}

/// The pool does not ping a connection idle for less than a few seconds before handing it out
/// (a round trip per read). So when the server drops connections while it stays up (an admin's
/// `pg_terminate_backend`, a proxy restart), one call fails on a dead connection with a clear
/// "unavailable" error; after it the pool pings before handing out, so the dead siblings are
/// weeded out unseen and the store serves again without a reopen, nothing half-applied.
#[tokio::test]
async fn connections_killed_by_the_server_cost_one_failed_call() {
    let url = db::fresh_pg_url().await;
    let (store, app) = serving_a_grant(&url).await;
    let balance = "/api/v0/addresses/0xholder/balance";
    // Fill the pool with idle connections: concurrent reads each take one.
    let at = Timestamp::from_unix_seconds(1_780_000_100).unwrap();
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        reads.spawn(async move { store.balance("0xholder", at).await });
    }
    while let Some(read) = reads.join_next().await {
        assert_eq!(read.unwrap().unwrap(), lotledger_core::Credits(1000));
    }

    let database = url.rsplit('/').next().unwrap().to_string();
    let mut admin = sqlx::PgConnection::connect(&db::pg_admin_url())
        .await
        .unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
    )
    .bind(&database)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(
        !killed.is_empty() && killed.iter().all(|k| *k),
        "{killed:?}"
    );

    let mut failures = 0;
    loop {
        let (status, body) = call(&app, "GET", balance, None).await;
        if status == StatusCode::OK {
            assert_eq!(body["credit_balance"], 1000);
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        failures += 1;
        assert!(
            failures <= 1,
            "{failures} failed calls for {} killed connections",
            killed.len()
        );
    }
    // Writes go through too, and nothing was half-applied.
    let (status, body) = call(
        &app,
        "POST",
        "/api/v0/messages",
        Some(&signed_grant(2, 500)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = call(&app, "GET", balance, None).await;
    assert_eq!(body["credit_balance"], 1500);
    let addresses = store.address_rows().await.unwrap();
    assert!(store.verify(&addresses).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_locked_sqlite_file_is_a_clear_error_and_changes_nothing() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = db::fresh_sqlite(&dir).await;
    let rules = Rules::new(vec!["0xminter".into()], vec!["ALEPH_CREDIT".into()]);
    let now = Timestamp::from_unix_seconds(1_780_000_000).unwrap();
    let grant = |hash: &str| Post {
        item_hash: hash.into(),
        channel: Some("ALEPH_CREDIT".into()),
        content: json!({"address": "0xminter", "time": 1_780_000_000.0, "type": "aleph_credit_distribution",
            "content": {"distribution": {"token": "T", "chain": "ETH", "credits": [
                {"address": "0xholder", "amount": 10, "price": "0.1", "tx_hash": "0xt", "provider": "ALEPH"}]}}}),
        envelope: None,
    };
    // Another connection holds the write lock.
    let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut other)
        .await
        .unwrap();
    let err = store.apply(&grant("g1"), &rules, now).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("database unavailable"), "{err}");
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    drop(other);
    assert_eq!(store.balance("0xholder", now).await.unwrap().0, 0);
    assert!(store.message("g1").await.unwrap().is_none());
    assert_eq!(
        store.apply(&grant("g1"), &rules, now).await.unwrap(),
        Outcome::Processed
    );
    assert_eq!(store.balance("0xholder", now).await.unwrap().0, 10);
    let addresses = store.address_rows().await.unwrap();
    assert!(store.verify(&addresses).await.unwrap().is_empty());
}

/// `POST /api/v0/messages` on a SQLite file whose write lock another connection holds: the
/// request is answered 503 (the intake's batch failed, nothing changed); once the lock is gone
/// the intake's committer applies the next batches, and the same message is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_on_a_locked_sqlite_file_answers_503_then_recovers() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = db::fresh_sqlite(&dir).await;
    let rules = Rules::new(
        vec![lotledger_sig::evm_address(&GRANTOR)],
        vec!["ALEPH_CREDIT".into()],
    );
    let app = router(Arc::new(store.clone()), ApiConfig::new(rules));
    let balance = "/api/v0/addresses/0xholder/balance";
    let first = signed_grant(1, 1000);
    let (status, _) = call(&app, "POST", "/api/v0/messages", Some(&first)).await;
    assert_eq!(status, StatusCode::OK);

    let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut other)
        .await
        .unwrap();
    let second = signed_grant(2, 500);
    let (status, body) = call(&app, "POST", "/api/v0/messages", Some(&second)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    drop(other);

    let hash = second["message"]["item_hash"].as_str().unwrap();
    let (status, _) = call(&app, "GET", &format!("/api/v0/messages/{hash}"), None).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the refused message left no trace"
    );
    for (message, want) in [(&second, 1500), (&signed_grant(3, 250), 1750)] {
        let (status, body) = call(&app, "POST", "/api/v0/messages", Some(message)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, body) = call(&app, "GET", balance, None).await;
        assert_eq!(body["credit_balance"], want);
    }
    let addresses = store.address_rows().await.unwrap();
    assert!(store.verify(&addresses).await.unwrap().is_empty());
}
