//! The HTTP API in process (the router over a real store, no socket): signed messages in,
//! envelope faults refused and recorded, bad bodies and queries refused, the test clock off by
//! default. Every refusal is checked to change nothing. Runs on SQLite and PostgreSQL.

use std::sync::Arc;

use axum::http::StatusCode;
use lotledger_api::{ApiConfig, router};
use lotledger_core::Rules;
use lotledger_store::Store;
use lotledger_testkit::db;
use lotledger_testkit::server::{call_router, call_router_raw};
use serde_json::{Value, json};

const GRANTOR: [u8; 32] = [0x11; 32];
const HOLDER: [u8; 32] = [0x22; 32];
const NOW: &str = "2026-11-25T00:00:00Z";

struct App {
    router: axum::Router,
}

impl App {
    fn new<S: Store + Clone + 'static>(store: &S, test_clock: bool) -> App {
        let rules = Rules::new(
            vec![lotledger_sig::evm_address(&GRANTOR)],
            vec!["ALEPH_CREDIT".into()],
        );
        let mut config = ApiConfig::new(rules);
        config.test_clock = test_clock;
        config.max_body_bytes = 64 * 1024;
        App {
            router: router(Arc::new(store.clone()), config),
        }
    }

    async fn call(&self, method: &str, uri: &str, body: Option<Vec<u8>>) -> (StatusCode, Value) {
        call_router(&self.router, method, uri, &[], body)
            .await
            .unwrap()
    }

    async fn post(&self, body: &Value) -> (StatusCode, Value) {
        self.call(
            "POST",
            "/api/v0/messages",
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    async fn balance(&self, address: &str) -> i64 {
        let (status, body) = self
            .call("GET", &format!("/api/v0/addresses/{address}/balance"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["credit_balance"].as_i64().unwrap()
    }
}

/// A POST signed by `secret`, with `content.address` = `address`.
fn signed(secret: &[u8; 32], address: &str, kind: &str, content: Value) -> Value {
    let sender = lotledger_sig::evm_address(secret);
    let item_content =
        json!({"address": address, "time": 1_780_000_000.0, "type": kind, "content": content})
            .to_string();
    let item_hash = lotledger_sig::item_hash_of(&item_content);
    let buffer = lotledger_sig::verification_buffer("ETH", &sender, "POST", &item_hash);
    json!({"item_hash": item_hash, "type": "POST", "chain": "ETH", "sender": sender,
           "channel": "ALEPH_CREDIT", "item_type": "inline", "item_content": item_content,
           "time": 1_780_000_000.0, "signature": lotledger_sig::sign_evm(secret, &buffer)})
}

fn distribution(amount: i64) -> Value {
    let holder = lotledger_sig::evm_address(&HOLDER);
    signed(
        &GRANTOR,
        &lotledger_sig::evm_address(&GRANTOR),
        "aleph_credit_distribution",
        json!({"distribution": {"token": "ALEPH", "chain": "ETH", "credits": [
            {"address": holder, "amount": amount, "price": "0.000001", "tx_hash": "0xt", "provider": "ALEPH"}]}}),
    )
}

fn sync(message: &Value) -> Value {
    json!({"sync": true, "message": message})
}

async fn both_stores<F: AsyncFn(App, App)>(f: F) {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = db::fresh_sqlite(&dir).await.0;
    f(App::new(&sqlite, false), App::new(&sqlite, true)).await;
    let pg = db::fresh_pg().await;
    f(App::new(&pg, false), App::new(&pg, true)).await;
}

#[tokio::test]
async fn a_signed_distribution_is_processed_once_and_its_status_recorded() {
    both_stores(async |app, _| {
        let holder = lotledger_sig::evm_address(&HOLDER);
        let message = distribution(1000);
        let (status, body) = app.post(&sync(&message)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body,
            json!({"publication_status": {"status": "success", "failed": []}, "message_status": "processed"})
        );
        // Sent again: still processed, applied once.
        let (status, _) = app.post(&sync(&message)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(app.balance(&holder).await, 1000);
        let hash = message["item_hash"].as_str().unwrap();
        let (status, body) = app.call("GET", &format!("/api/v0/messages/{hash}"), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], "processed");
        assert_eq!(body["item_hash"], hash);
        let (status, brief) = app
            .call("GET", &format!("/api/v0/messages/{hash}/status"), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(brief["status"], "processed");
        assert_eq!(brief["reception_time"], body["reception_time"]);
        // sync false: accepted as pending, applied, status readable.
        let (status, body) = app
            .post(&json!({"sync": false, "message": distribution(5)}))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(body["message_status"], "pending");
        assert_eq!(app.balance(&holder).await, 1005);
    })
    .await;
}

/// One microsecond decides order (issue 9): an expense at `…16.0599735` is `…16.059973Z`
/// (Python's correctly rounded float, then half-even), strictly before a grant at
/// `…16.059974`, so it may not drain that grant: the holder keeps all 1 000.
#[tokio::test]
async fn an_expense_a_microsecond_before_a_grant_does_not_drain_it() {
    both_stores(async |app, _| {
        let grantor = lotledger_sig::evm_address(&GRANTOR);
        let holder = lotledger_sig::evm_address(&HOLDER);
        let grant = format!(
            r#"{{"address":"{grantor}","time":1773364396.059974,"type":"aleph_credit_distribution","content":{{"distribution":{{"token":"ALEPH","chain":"ETH","credits":[{{"address":"{holder}","amount":1000,"price":"1","tx_hash":"0xt","provider":"ALEPH"}}]}}}}}}"#
        );
        let expense = format!(
            r#"{{"address":"{grantor}","time":1773364396.0599735,"type":"aleph_credit_expense","content":{{"expense":{{"credits":[{{"address":"{holder}","amount":400,"ref":"r1"}}]}}}}}}"#
        );
        for text in [grant, expense] {
            let (status, body) = app.post(&sync(&super::bad_input::signed_raw(&GRANTOR, &text))).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        assert_eq!(app.balance(&holder).await, 1000);
        let (status, body) = app
            .call("GET", &format!("/api/v0/addresses/{holder}/credit_history"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let times: Vec<&str> = body["credit_history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["message_timestamp"].as_str().unwrap())
            .collect();
        assert!(times.contains(&"2026-03-13T01:13:16.059973Z"), "{body}");
        assert!(times.contains(&"2026-03-13T01:13:16.059974Z"), "{body}");
    })
    .await;
}

#[tokio::test]
async fn envelope_faults_are_rejected_recorded_and_change_nothing() {
    both_stores(async |app, _| {
        let holder = lotledger_sig::evm_address(&HOLDER);
        let good = distribution(1000);
        let mut bad_signature = good.clone();
        let sig = good["signature"].as_str().unwrap();
        let flipped = if sig.ends_with('1') { "2" } else { "1" };
        bad_signature["signature"] = json!(format!("{}{flipped}", &sig[..sig.len() - 1]));
        let mut wrong_hash = good.clone();
        wrong_hash["item_hash"] = json!("cd".repeat(32));
        // Signed by the holder, claiming to be the grantor's post.
        let impostor = signed(
            &HOLDER,
            &lotledger_sig::evm_address(&GRANTOR),
            "aleph_credit_distribution",
            json!({"distribution": {"token": "ALEPH", "chain": "ETH", "credits": [
                {"address": holder, "amount": 5, "price": "0.000001", "tx_hash": "0xt", "provider": "ALEPH"}]}}),
        );
        let mut unknown_chain = good.clone();
        unknown_chain["chain"] = json!("NOT_A_CHAIN");
        let mut aggregate = good.clone();
        aggregate["type"] = json!("AGGREGATE");
        let cases = [
            (bad_signature, 1, "The signature of the message is invalid"),
            (wrong_hash, 0, "does not match"),
            (impostor, 2, "delegation"),
            (unknown_chain, 0, "Unknown chain for validation: NOT_A_CHAIN"),
            (aggregate, 0, "POST messages only"),
        ];
        for (message, code, text) in cases {
            let (status, body) = app.post(&sync(&message)).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}: {body}");
            assert_eq!(body["message_status"], "rejected");
            let hash = message["item_hash"].as_str().unwrap();
            let (status, record) = app.call("GET", &format!("/api/v0/messages/{hash}"), None).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(record["status"], "rejected", "{record}");
            assert_eq!(record["error_code"], code, "{record}");
            let error = record["details"]["errors"][0].as_str().unwrap();
            assert!(error.contains(text), "{error:?} lacks {text:?}");
            assert_eq!(app.balance(&holder).await, 0);
        }
        let (status, _) = app
            .call("GET", &format!("/api/v0/addresses/{holder}/credit_history"), None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // The genuine message is still processed afterwards (a rejection does not block it).
        let (status, _) = app.post(&sync(&good)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(app.balance(&holder).await, 1000);
    })
    .await;
}

#[tokio::test]
async fn bad_bodies_are_refused_without_effect() {
    both_stores(async |app, _| {
        let holder = lotledger_sig::evm_address(&HOLDER);
        let bodies: [Vec<u8>; 5] = [
            b"{not json".to_vec(),
            b"[1, 2]".to_vec(),
            br#"{"sync": true}"#.to_vec(),
            br#"{"sync": "yes", "message": {}}"#.to_vec(),
            br#"{"sync": true, "message": {"type": "POST"}}"#.to_vec(),
        ];
        for body in bodies {
            let shown = String::from_utf8_lossy(&body).to_string();
            let (status, reply) = app.call("POST", "/api/v0/messages", Some(body)).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{shown}: {reply}");
            assert!(reply.is_array(), "{reply}");
        }
        // Over the body limit (64 KiB here): 413 with a clear reason.
        let mut huge = distribution(1000);
        huge["padding"] = json!("x".repeat(100 * 1024));
        let (status, reply) = app.post(&sync(&huge)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            reply["error"].as_str().unwrap().contains("65536 bytes"),
            "{reply}"
        );
        assert_eq!(app.balance(&holder).await, 0);
        let hash = huge["item_hash"].as_str().unwrap();
        let (status, _) = app
            .call("GET", &format!("/api/v0/messages/{hash}"), None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    })
    .await;
}

#[tokio::test]
async fn unknown_query_values_get_422_naming_the_parameter() {
    both_stores(async |app, _| {
        let holder = lotledger_sig::evm_address(&HOLDER);
        app.post(&sync(&distribution(1000))).await;
        let history = format!("/api/v0/addresses/{holder}/credit_history");
        let cases = [
            (format!("{history}?sort_by=bogus"), "sort_by"),
            (format!("{history}?sort_order=2"), "sort_order"),
            (format!("{history}?direction=up"), "direction"),
            (format!("{history}?pagination=-1"), "pagination"),
            (format!("{history}?page=0"), "page"),
            (format!("{history}?has_expiration=maybe"), "has_expiration"),
            (format!("{history}?startDate=abc"), "startDate"),
            (format!("{history}?resourceTypes=VM"), "resourceTypes"),
            (format!("{history}/summary?end_date=-5"), "end_date"),
            (
                "/api/v0/credit_balances?min_balance=0".to_string(),
                "min_balance",
            ),
            (
                format!("/api/v0/addresses/{holder}/balance?include_credit_details=maybe"),
                "include_credit_details",
            ),
            (
                format!("/api/v0/addresses/{holder}/balance?chain=NOT_A_CHAIN"),
                "chain",
            ),
        ];
        for (uri, param) in cases {
            let (status, body) = app.call("GET", &uri, None).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{uri}: {body}");
            let named = body
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["loc"].as_array().unwrap().iter().any(|l| l == param));
            assert!(named, "{uri}: {body} does not name {param}");
        }
        // Cursor errors: 422 with the reason.
        let (status, body) = app
            .call("GET", &format!("{history}?cursor=%%%"), None)
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(app.balance(&holder).await, 1000);
    })
    .await;
}

#[tokio::test]
async fn the_test_clock_is_refused_in_normal_mode_and_works_when_enabled() {
    both_stores(async |normal, testing| {
        let holder = lotledger_sig::evm_address(&HOLDER);
        let uri = format!("/api/v0/addresses/{holder}/balance");
        let at = async |app: &App, now: &str| {
            call_router(
                &app.router,
                "GET",
                &uri,
                &[(lotledger_api::NOW_HEADER, now)],
                None,
            )
            .await
            .unwrap()
        };
        let (status, _) = at(&normal, NOW).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = normal
            .call(
                "PUT",
                "/api/v0/test/clock",
                Some(br#"{"now": "2030-01-01T00:00:00Z"}"#.to_vec()),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);

        // An expiring grant: visible before its expiry, gone after, by the clock alone.
        let expiring = signed(
            &GRANTOR,
            &lotledger_sig::evm_address(&GRANTOR),
            "aleph_credit_distribution",
            json!({"distribution": {"token": "ALEPH", "chain": "ETH", "credits": [
                {"address": holder, "amount": 40, "price": "0.000001", "tx_hash": "0xe",
                 "provider": "ALEPH", "expiration": 1_790_000_000_000_i64}]}}),
        );
        let (status, _) = testing.post(&sync(&expiring)).await;
        assert_eq!(status, StatusCode::OK);
        let read = async |now: &str| {
            let (status, body) = at(&testing, now).await;
            assert_eq!(status, StatusCode::OK);
            body["credit_balance"].as_i64().unwrap()
        };
        assert_eq!(read("2026-09-01T00:00:00Z").await, 40);
        assert_eq!(read("2026-09-25T00:00:00Z").await, 0);
        let (status, _) = testing
            .call(
                "PUT",
                "/api/v0/test/clock",
                Some(br#"{"now": "2026-09-25T00:00:00Z"}"#.to_vec()),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(testing.balance(&holder).await, 0);
        let (status, _) = testing
            .call(
                "PUT",
                "/api/v0/test/clock",
                Some(br#"{"now": "not a time"}"#.to_vec()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    })
    .await;
}

/// Group commit (issue 10, W6): 120 concurrent sync POSTs — distinct grants, resends of some
/// of them, forged signatures — get each its own answer; a message answered `processed` is
/// committed (its status is readable right after the reply); every grant is applied once; and
/// the requests shared transactions (fewer write transactions than messages: SQLite's file
/// generation, PostgreSQL's version of the holder's address, both advanced once per
/// transaction).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_posts_share_transactions_and_each_reply_follows_its_commit() {
    use sqlx::Connection;
    let holder = lotledger_sig::evm_address(&HOLDER);
    let dir = tempfile::tempdir().unwrap();
    let (sqlite, sqlite_url) = db::fresh_sqlite(&dir).await;
    let pg_url = db::fresh_pg_url().await;
    let pg = lotledger_store_pg::PgStore::open(&pg_url).await.unwrap();
    for (name, app) in [
        ("sqlite", App::new(&sqlite, false)),
        ("postgres", App::new(&pg, false)),
    ] {
        let router = Arc::new(app.router);
        let grants: Vec<Value> = (1..=100).map(distribution).collect();
        let mut bodies: Vec<(Value, StatusCode)> =
            grants.iter().map(|m| (sync(m), StatusCode::OK)).collect();
        for m in grants.iter().step_by(10) {
            bodies.push((sync(m), StatusCode::OK));
        }
        for i in 0..10 {
            let mut forged = distribution(1_000_000 + i);
            forged["signature"] = distribution(7)["signature"].clone();
            bodies.push((sync(&forged), StatusCode::UNPROCESSABLE_ENTITY));
        }
        let tasks: Vec<_> = bodies
            .into_iter()
            .map(|(body, want)| {
                let router = router.clone();
                tokio::spawn(async move {
                    let (status, reply) = call_router(
                        &router,
                        "POST",
                        "/api/v0/messages",
                        &[],
                        Some(body.to_string().into_bytes()),
                    )
                    .await
                    .unwrap();
                    assert_eq!(status, want, "{reply}");
                    let hash = body["message"]["item_hash"].as_str().unwrap().to_string();
                    let (_, record) = call_router(
                        &router,
                        "GET",
                        &format!("/api/v0/messages/{hash}"),
                        &[],
                        None,
                    )
                    .await
                    .unwrap();
                    let recorded = if want == StatusCode::OK {
                        "processed"
                    } else {
                        "rejected"
                    };
                    assert_eq!(record["status"], recorded, "{record}");
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let app = App {
            router: Arc::try_unwrap(router).unwrap(),
        };
        assert_eq!(app.balance(&holder).await, (1..=100).sum::<i64>(), "{name}");
        let transactions: i64 = if name == "sqlite" {
            let mut conn = sqlx::SqliteConnection::connect(&sqlite_url).await.unwrap();
            sqlx::query_scalar("PRAGMA user_version")
                .fetch_one(&mut conn)
                .await
                .unwrap()
        } else {
            let mut conn = sqlx::PgConnection::connect(&pg_url).await.unwrap();
            sqlx::query_scalar("SELECT version FROM addresses WHERE address = $1")
                .bind(&holder)
                .fetch_one(&mut conn)
                .await
                .unwrap()
        };
        assert!(
            (1..100).contains(&transactions),
            "{name}: 100 grants in {transactions} write transactions"
        );
    }
}

/// The reference node's own messages (NODE-API.md A.1, real signatures) that lotledger
/// processes or rejects as the reference did, in the order and at the instants the reference
/// received them. Left out: the FORGET (lotledger takes POST messages only), the distribution
/// it forgot (so that the processed set is the reference's), and the message it left pending.
const REFERENCE_ARRIVAL: [&str; 5] = [
    "distribution",
    "expense",
    "transfer",
    "expense_tie",
    "rejected_transfer",
];

/// The cases of `node_api_messages.json` (A.1, A.7, A.8).
fn reference_cases() -> Vec<Value> {
    let data: Value = serde_json::from_str(include_str!(
        "../../../lotledger-core/tests/data/node_api_messages.json"
    ))
    .unwrap();
    data["cases"].as_array().unwrap().clone()
}

fn reference_case<'a>(cases: &'a [Value], name: &str) -> &'a Value {
    cases
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name}"))
}

/// A router on each store (SQLite, PostgreSQL) that has received [`REFERENCE_ARRIVAL`]; the
/// stores stay alive with the returned guard.
async fn reference_nodes() -> (Vec<axum::Router>, tempfile::TempDir) {
    reference_nodes_with(&REFERENCE_ARRIVAL, lotledger_api::DEFAULT_MAX_WEBSOCKETS).await
}

/// A router on each store that has received the reference's messages `names`, in that order,
/// and allows `max_websockets` websocket connections.
async fn reference_nodes_with(
    names: &[&str],
    max_websockets: usize,
) -> (Vec<axum::Router>, tempfile::TempDir) {
    let issuer = "0xeD1F7463E805f8E7c477cE9bAB9805F75eB658E3";
    let dir = tempfile::tempdir().unwrap();
    let sqlite = db::fresh_sqlite(&dir).await.0;
    let pg = db::fresh_pg().await;
    let node = |store: Arc<dyn lotledger_api::Backend>| {
        let mut config = ApiConfig::new(Rules::new(
            vec![issuer.to_string()],
            vec!["ALEPH_CREDIT".into()],
        ));
        config.test_clock = true;
        config.max_websockets = max_websockets;
        router(store, config)
    };
    let routers = vec![node(Arc::new(sqlite)), node(Arc::new(pg))];
    for router in &routers {
        for name in names {
            post_reference(router, name).await;
        }
    }
    (routers, dir)
}

/// Posts the reference's message `name` at the instant the reference received it, and checks
/// it is processed or rejected as there.
async fn post_reference(router: &axum::Router, name: &str) {
    let cases = reference_cases();
    let c = reference_case(&cases, name);
    let envelope: Value = serde_json::from_str(c["envelope"].as_str().unwrap()).unwrap();
    let now = c["reception_time"].as_str().unwrap();
    let body = sync(&envelope).to_string().into_bytes();
    let headers = [("x-lotledger-now", now)];
    let (status, _, reply) =
        call_router_raw(router, "POST", "/api/v0/messages", &headers, Some(body))
            .await
            .unwrap();
    let want = if c["status"] == "rejected" {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    assert_eq!(status, want, "{name}: {}", String::from_utf8_lossy(&reply));
}

/// The reference's body with its on-chain confirmations read as none: lotledger has no way
/// to learn them.
fn unconfirmed(body: &str) -> String {
    let mut body = body.to_string();
    for (open, confirmed) in [
        (
            r#""confirmed":true,"confirmations":["#,
            r#""confirmed":false,"confirmations":[]"#,
        ),
        (
            r#""confirmations":[{"#,
            r#""confirmations":[],"confirmed":false"#,
        ),
    ] {
        while let Some(start) = body.find(open) {
            let end = start + body[start..].find(']').unwrap() + 1;
            let end = if body[end..].starts_with(r#","confirmed":true"#) {
                end + r#","confirmed":true"#.len()
            } else {
                end
            };
            body.replace_range(start..end, confirmed);
        }
    }
    body
}

/// The reference node's own messages read back as it answered them (A.7, A.8: the message,
/// its status and its content): each body byte for byte, with its `Content-Type`. The
/// reference's distribution carries an on-chain confirmation: read as unconfirmed.
#[tokio::test]
async fn messages_read_back_as_the_reference_node_writes_them() {
    let cases = reference_cases();
    let case = |name: &str| reference_case(&cases, name);
    let (routers, _dir) = reference_nodes().await;
    let arrival = REFERENCE_ARRIVAL;
    for router in routers {
        for name in arrival {
            let c = case(name);
            let expected = unconfirmed(c["expected"].as_str().unwrap());
            let hash = serde_json::from_str::<Value>(c["envelope"].as_str().unwrap()).unwrap()
                ["item_hash"]
                .as_str()
                .unwrap()
                .to_string();
            let uri = format!("/api/v0/messages/{hash}");
            let (status, content_type, body) = call_router_raw(&router, "GET", &uri, &[], None)
                .await
                .unwrap();
            assert_eq!(status, StatusCode::OK, "{name}");
            assert_eq!(String::from_utf8(body).unwrap(), expected, "{name}");
            assert_eq!(content_type, "application/json; charset=utf-8", "{name}");
            // `/status` answers the same body's first three keys (A.8).
            let brief = format!(
                "{}}}",
                &expected[..expected.find(r#","message":"#).unwrap()]
            );
            let (status, content_type, body) =
                call_router_raw(&router, "GET", &format!("{uri}/status"), &[], None)
                    .await
                    .unwrap();
            assert_eq!(status, StatusCode::OK, "{name}");
            assert_eq!(content_type, "application/json; charset=utf-8", "{name}");
            assert_eq!(String::from_utf8(body).unwrap(), brief, "{name}");
            // `/content` (A.8): the post's own content as Python writes it, or a refusal.
            let (status, content_type, body) =
                call_router_raw(&router, "GET", &format!("{uri}/content"), &[], None)
                    .await
                    .unwrap();
            let body = String::from_utf8(body).unwrap();
            if let Some(content) = c["content"].as_str() {
                assert_eq!(status, StatusCode::OK, "{name}");
                assert_eq!(content_type, "application/json; charset=utf-8", "{name}");
                assert_eq!(body, content, "{name}");
            } else if let Some(refusal) = c["content_refused"].as_str() {
                assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name}");
                assert_eq!(content_type, "text/plain; charset=utf-8", "{name}");
                assert_eq!(body, refusal, "{name}");
            } else {
                assert_eq!(status, StatusCode::OK, "{name}: {body}");
                let content = serde_json::from_str::<Value>(&body).unwrap();
                assert!(content.is_object(), "{name}: {body}");
            }
        }
        // Unknown and malformed hashes (A.7): plain text, as aiohttp and the handler write them.
        for (path, code, text) in [
            (
                "0000000000000000000000000000000000000000000000000000000000000000",
                StatusCode::NOT_FOUND,
                "404: Not Found",
            ),
            (
                "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
                StatusCode::NOT_FOUND,
                "404: Not Found",
            ),
            (
                "nothex",
                StatusCode::BAD_REQUEST,
                "Invalid message hash: nothex",
            ),
            (
                "1BA26F6C78EE2699C7AFF2288A8F9007AFCFC6D8B71FA621402A78DB40ABBE28",
                StatusCode::BAD_REQUEST,
                "Invalid message hash: 1BA26F6C78EE2699C7AFF2288A8F9007AFCFC6D8B71FA621402A78DB40ABBE28",
            ),
        ] {
            for suffix in ["", "/status", "/content"] {
                let uri = format!("/api/v0/messages/{path}{suffix}");
                let (status, content_type, body) = call_router_raw(&router, "GET", &uri, &[], None)
                    .await
                    .unwrap();
                assert_eq!(
                    (status, content_type.as_str()),
                    (code, "text/plain; charset=utf-8")
                );
                assert_eq!(String::from_utf8(body).unwrap(), text, "{uri}");
            }
        }
    }
}

/// The reference node's message list (NODE-API.md A.2–A.6, `node_api_lists.json`), asked of a
/// lotledger node that received the same messages ([`reference_nodes`]): every status,
/// `Content-Type` and body byte for byte, on both stores. Where lotledger cannot hold what the
/// reference held, the expected body is adapted, never replaced by ours:
/// - on-chain confirmations are read as none ([`unconfirmed`]);
/// - the reference's FORGET message is taken out of the lists it appears in (lotledger refuses
///   FORGET messages), and `pagination_total` lowered by one for it;
/// - `msgStatuses=forgotten` lists nothing here: lotledger forgets no message (checked as an
///   empty page; the reference's skeleton is not compared).
#[tokio::test]
async fn message_lists_answer_as_the_reference_node_lists_them() {
    let data: Value = serde_json::from_str(include_str!("../data/node_api_lists.json")).unwrap();
    let cases = data["cases"].as_array().unwrap();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let forget = "ffe8279a0b4ae5318d3bbd1db5c69f75cbabf6ab629eedf34724c9ce3eccbb5c";
    let (routers, _dir) = reference_nodes().await;
    for router in routers {
        for c in cases {
            let uri = c["uri"].as_str().unwrap();
            let (status, content_type, body) = call_router_raw(&router, "GET", uri, &[], None)
                .await
                .unwrap();
            let body = String::from_utf8(body).unwrap();
            assert_eq!(
                status.as_u16(),
                c["status"].as_u64().unwrap() as u16,
                "{uri}: {body}"
            );
            let want_type = c["content_type"]
                .as_str()
                .unwrap_or(if status == StatusCode::OK {
                    "application/json; charset=utf-8"
                } else {
                    "text/plain; charset=utf-8"
                });
            assert_eq!(content_type, want_type, "{uri}");
            if let Some(expected) = c["body"].as_str() {
                if expected.contains(r#""status":"forgotten""#) {
                    let page: Value = serde_json::from_str(&body).unwrap();
                    assert_eq!(page["messages"], json!([]), "{uri}");
                    assert_eq!(page["pagination_total"], 0, "{uri}");
                    continue;
                }
                let mut expected = unconfirmed(expected);
                if let Some(at) = expected.find(&format!(r#""item_hash":"{forget}""#)) {
                    let start = expected[..at].rfind(r#"{"chain":""#).unwrap();
                    let end = at
                        + expected[at..].find(r#","type":"FORGET"}"#).unwrap()
                        + r#","type":"FORGET"}"#.len();
                    let end = if expected[end..].starts_with(',') {
                        end + 1
                    } else {
                        end
                    };
                    expected.replace_range(start..end, "");
                    let total = r#""pagination_total":"#;
                    let t = expected.find(total).unwrap() + total.len();
                    let digits = expected[t..].trim_end_matches('}');
                    let n: u64 = digits.parse().unwrap();
                    expected.replace_range(t..t + digits.len(), &(n - 1).to_string());
                }
                assert_eq!(body, expected, "{uri}");
            } else {
                let page: Value = serde_json::from_str(&body).unwrap();
                let listed: Vec<&str> = page["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["item_hash"].as_str().unwrap())
                    .collect();
                let prefixes = c["hashes"].as_array().unwrap();
                assert_eq!(listed.len(), prefixes.len(), "{uri}: {listed:?}");
                for (hash, prefix) in listed.iter().zip(prefixes) {
                    assert!(
                        hash.starts_with(prefix.as_str().unwrap()),
                        "{uri}: {listed:?}"
                    );
                }
                assert_eq!(page["pagination_total"], c["total"], "{uri}");
            }
        }
    }
}

/// A POST signed by `secret` at the envelope time `time`, whose content is numbered `n` (so
/// that every hash differs).
fn signed_at(secret: &[u8; 32], kind: &str, time: f64, n: usize) -> Value {
    let sender = lotledger_sig::evm_address(secret);
    let holder = lotledger_sig::evm_address(&HOLDER);
    let content = if kind == "aleph_credit_distribution" {
        json!({"distribution": {"token": "ALEPH", "chain": "ETH", "credits": [
            {"address": holder, "amount": n + 1, "price": "0.000001", "tx_hash": "0xt",
             "provider": "ALEPH"}]}})
    } else if kind == "aleph_credit_transfer" {
        json!({"transfer": {"credits": [{"address": holder, "amount": 1_000_000_000_000i64}]}})
    } else {
        json!({"n": n})
    };
    let item_content =
        json!({"address": sender, "time": time, "type": kind, "content": content}).to_string();
    let item_hash = lotledger_sig::item_hash_of(&item_content);
    let buffer = lotledger_sig::verification_buffer("ETH", &sender, "POST", &item_hash);
    json!({"item_hash": item_hash, "type": "POST", "chain": "ETH", "sender": sender,
           "channel": "ALEPH_CREDIT", "item_type": "inline", "item_content": item_content,
           "time": time, "signature": lotledger_sig::sign_evm(secret, &buffer)})
}

/// The item hashes of a list page, and its `next_cursor`.
fn listed(page: &Value) -> (Vec<String>, Option<String>) {
    let hashes = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["item_hash"].as_str().unwrap().to_string())
        .collect();
    (hashes, page["next_cursor"].as_str().map(str::to_string))
}

/// More messages than a store scan reads at once, at few instants (ties), two senders and two
/// post types, plus a rejected one: every walk of the list — cursor mode and page mode, both
/// orders, with and without filters that only some messages pass — gives the messages the
/// test posted in the reference's order (time, then item hash ascending), each once;
/// `pagination_total` counts them; the reference's cursor from a page resumes after its last
/// message.
#[tokio::test]
async fn message_list_walks_agree_with_what_was_posted() {
    both_stores(async |app, _| {
        let times = [
            1_790_000_000.5,
            1_790_000_001.25,
            1_790_000_000.5,
            1_790_000_002.0,
        ];
        let mut posted: Vec<(f64, String, bool)> = Vec::new();
        for n in 0..520 {
            let time = times[n % times.len()];
            let (secret, kind) = if n % 10 == 3 {
                (&HOLDER, "blog")
            } else {
                (&GRANTOR, "aleph_credit_distribution")
            };
            let message = signed_at(secret, kind, time, n);
            let (status, body) = app.post(&sync(&message)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let hash = message["item_hash"].as_str().unwrap().to_string();
            posted.push((time, hash, kind == "blog"));
        }
        // Refused by the rules (more than the sender holds): recorded, never listed.
        let refused = signed_at(&[0x33; 32], "aleph_credit_transfer", 1_790_000_001.25, 9999);
        let (status, _) = app.post(&sync(&refused)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

        let holder = lotledger_sig::evm_address(&HOLDER);
        for ascending in [true, false] {
            for (filter, only_blog) in [
                (String::new(), None),
                (format!("&addresses={holder}"), Some(true)),
                (
                    "&contentTypes=aleph_credit_distribution".to_string(),
                    Some(false),
                ),
            ] {
                let mut want: Vec<&(f64, String, bool)> = posted
                    .iter()
                    .filter(|(_, _, blog)| only_blog.is_none_or(|b| b == *blog))
                    .collect();
                want.sort_by(|a, b| {
                    let t = a.0.total_cmp(&b.0);
                    let t = if ascending { t } else { t.reverse() };
                    t.then_with(|| a.1.cmp(&b.1))
                });
                let want: Vec<String> = want.into_iter().map(|p| p.1.clone()).collect();
                let order = if ascending { 1 } else { -1 };
                let base = format!("/api/v0/messages.json?sortOrder={order}{filter}&pagination=70");

                let mut walked = Vec::new();
                let mut cursor = String::new();
                loop {
                    let (status, page) = app
                        .call("GET", &format!("{base}&cursor={cursor}"), None)
                        .await;
                    assert_eq!(status, StatusCode::OK, "{page}");
                    let (hashes, next) = listed(&page);
                    walked.extend(hashes);
                    match next {
                        Some(next) => cursor = next,
                        None => break,
                    }
                }
                assert_eq!(walked, want, "cursor mode {base}");

                let mut walked = Vec::new();
                for page_number in 1.. {
                    let (status, page) = app
                        .call("GET", &format!("{base}&page={page_number}"), None)
                        .await;
                    assert_eq!(status, StatusCode::OK, "{page}");
                    if page_number == 1 {
                        assert_eq!(page["pagination_total"], want.len(), "{base}");
                    }
                    let (hashes, _) = listed(&page);
                    let last = hashes.len() < 70;
                    walked.extend(hashes);
                    if last {
                        break;
                    }
                }
                assert_eq!(walked, want, "page mode {base}");

                let (_, page) = app
                    .call("GET", &base.replace("pagination=70", "pagination=0"), None)
                    .await;
                assert_eq!(listed(&page).0, want, "pagination=0 {base}");
            }
        }
    })
    .await;
}

/// Serves `router` on a loopback port (a real HTTP server, for the websocket).
async fn serve_on_loopback(router: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(lotledger_api::serve(
        listener,
        router,
        std::future::pending(),
    ));
    addr
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn subscribe(addr: std::net::SocketAddr, query: &str) -> Socket {
    let url = format!("ws://{addr}/api/ws0/messages{query}");
    tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap()
        .0
}

/// The next text frame (pings skipped), within 10 s.
async fn next_text(socket: &mut Socket) -> String {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), socket.next())
            .await
            .expect("a frame within 10 s")
            .expect("the connection open")
            .unwrap();
        match frame {
            Message::Text(text) => return text.to_string(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// The message objects of a list body written by the reference (writer S), in order.
fn list_objects(body: &str) -> Vec<String> {
    let inner = &body[body.find('[').unwrap() + 1..body.find(r#"],"pagination_item""#).unwrap()];
    let (open, sep) = (
        r#"{"chain":"ETH","channel""#,
        r#"},{"chain":"ETH","channel""#,
    );
    let parts: Vec<&str> = inner.split(sep).collect();
    let last = parts.len() - 1;
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let head = if i > 0 { open } else { "" };
            let tail = if i < last { "}" } else { "" };
            format!("{head}{part}{tail}")
        })
        .collect()
}

/// A list object without its `content` (what `contentFormat=none` writes): the object from
/// `,"content":{` to its matching brace, strings skipped, taken out.
fn without_content(object: &str) -> String {
    let start = object.find(r#","content":{"#).unwrap();
    let bytes = object.as_bytes();
    let (mut depth, mut in_string, mut escaped) = (0, false, false);
    let mut end = start + r#","content":"#.len();
    for (i, &b) in bytes.iter().enumerate().skip(end) {
        match (in_string, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (false, _, b'"') => in_string = true,
            (false, _, b'{') => depth += 1,
            (false, _, b'}') => {
                depth -= 1;
                if depth == 0 {
                    end = i + 1;
                    break;
                }
            }
            _ => {}
        }
    }
    format!("{}{}", &object[..start], &object[end..])
}

/// The websocket as the reference node serves it (NODE-API.md §4, A.9), on both stores, over
/// a real loopback connection: the history (the newest messages the list query selects,
/// oldest first, as the list writes them), then live pushes of what the node processes (as
/// the single view writes them, without `content` unless it is `full`), the reference's live
/// filter (`msgTypes` ignored, `addresses` applied). The expected frames are the reference's:
/// A.9's live frames of the transfer, and the history objects taken from its A.2 list.
#[tokio::test]
async fn websocket_sends_history_then_live_pushes_as_the_reference_node() {
    let data: Value = serde_json::from_str(include_str!("../data/node_api_lists.json")).unwrap();
    let frames = data["websocket"].as_array().unwrap();
    let frame = |query: &str, kind: &str| -> String {
        frames
            .iter()
            .find(|f| f["query"] == query && f["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} frame for {query}"))["body"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // A.2's first page, oldest first: the distribution, then the expense.
    let page_one = data["cases"].as_array().unwrap()[0]["body"]
        .as_str()
        .unwrap();
    let oldest = list_objects(&unconfirmed(page_one));
    assert_eq!(oldest.len(), 2);
    let issuer = "0xeD1F7463E805f8E7c477cE9bAB9805F75eB658E3";

    let (routers, _dir) = reference_nodes_with(
        &["distribution", "expense"],
        lotledger_api::DEFAULT_MAX_WEBSOCKETS,
    )
    .await;
    for router in routers {
        let addr = serve_on_loopback(router.clone()).await;
        let mut full = subscribe(addr, "?channels=ALEPH_CREDIT&history=3").await;
        assert_eq!(next_text(&mut full).await, oldest[0]);
        assert_eq!(next_text(&mut full).await, oldest[1]);
        let mut bare = subscribe(addr, "?channels=ALEPH_CREDIT&history=1&contentFormat=none").await;
        assert_eq!(next_text(&mut bare).await, without_content(&oldest[1]));
        let mut forgets = subscribe(addr, "?msgTypes=FORGET&history=0").await;
        let mut issuers = subscribe(addr, &format!("?addresses={issuer}&history=0")).await;

        post_reference(&router, "transfer").await;
        assert_eq!(
            next_text(&mut full).await,
            frame("?channels=ALEPH_CREDIT&history=3", "live")
        );
        assert_eq!(
            next_text(&mut bare).await,
            frame(
                "?channels=ALEPH_CREDIT&history=1&contentFormat=none",
                "live"
            )
        );
        assert_eq!(
            next_text(&mut forgets).await,
            frame("?msgTypes=FORGET&history=0", "live")
        );
        // Rejected: never pushed. Then a message of the issuer: the first the issuer's
        // subscriber sees (the transfer, of another sender, was not pushed to it).
        post_reference(&router, "rejected_transfer").await;
        post_reference(&router, "expense_tie").await;
        let pushed: Value = serde_json::from_str(&next_text(&mut issuers).await).unwrap();
        assert_eq!(
            pushed["item_hash"],
            "6ee863e833961becb5c82a78d80253c9f4ea9fcd2367172228bdc6eb85b6c0a6"
        );
        let pushed: Value = serde_json::from_str(&next_text(&mut full).await).unwrap();
        assert_eq!(
            pushed["item_hash"],
            "6ee863e833961becb5c82a78d80253c9f4ea9fcd2367172228bdc6eb85b6c0a6"
        );
    }
}

/// The websocket refuses what the reference refuses: an invalid query gets the reference's
/// 422 body (before the upgrade: README), and a connection past the cap is closed with 1013
/// `Too many connections`.
#[tokio::test]
async fn websocket_refuses_bad_queries_and_connections_past_the_cap() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::{Error, Message};
    let (routers, _dir) = reference_nodes_with(&["distribution"], 1).await;
    for router in routers {
        let addr = serve_on_loopback(router).await;
        let url = format!("ws://{addr}/api/ws0/messages?history=500");
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Err(Error::Http(response)) => {
                assert_eq!(response.status(), 422);
                let body = String::from_utf8(response.body().clone().unwrap()).unwrap();
                assert_eq!(
                    body,
                    r#"[{"type":"less_than","loc":["history"],"msg":"Input should be less than 200","input":"500","ctx":{"lt":200},"url":"https://errors.pydantic.dev/2.13/v/less_than"}]"#
                );
            }
            other => panic!("history=500 accepted: {other:?}"),
        }
        let mut first = subscribe(addr, "?history=1").await;
        next_text(&mut first).await;
        let mut second = subscribe(addr, "?history=1").await;
        match tokio::time::timeout(std::time::Duration::from_secs(10), second.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), 1013);
                assert_eq!(frame.reason.as_str(), "Too many connections");
            }
            other => panic!("a second connection was not closed: {other:?}"),
        }
        // Once the first goes (its session ends when the server sees it closed), a
        // connection is taken again: polled, 10 s at most.
        drop(first);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let mut again = subscribe(addr, "?history=1").await;
            match tokio::time::timeout(std::time::Duration::from_secs(10), again.next())
                .await
                .unwrap()
            {
                Some(Ok(Message::Text(_))) => break,
                other => assert!(
                    tokio::time::Instant::now() < deadline,
                    "no slot freed: {other:?}"
                ),
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// Expiring credits (issue 12, part 4), on both stores: the lots of a holder that still hold
/// credits at the request's instant and expire before `before` (RFC 3339 or Unix seconds),
/// soonest first, with their sum; the same across holders, paged; `before` required and
/// checked (422 naming it).
#[tokio::test]
async fn expiring_credits_are_listed_per_holder_and_across_holders() {
    both_stores(async |_, app| {
        let holder = lotledger_sig::evm_address(&HOLDER);
        let now = 1_795_564_800_i64; // NOW, 2026-11-25T00:00:00Z
        let day_ms = 86_400_000_i64;
        let credit = |amount: i64, expiration: Option<i64>| {
            let mut c = json!({"address": holder, "amount": amount, "price": "0.000001",
                               "tx_hash": "0xt", "provider": "ALEPH"});
            if let Some(e) = expiration {
                c["expiration"] = json!(e);
            }
            c
        };
        let message = signed(
            &GRANTOR,
            &lotledger_sig::evm_address(&GRANTOR),
            "aleph_credit_distribution",
            json!({"distribution": {"token": "ALEPH", "chain": "ETH", "credits": [
                credit(300, Some(now * 1000 + 3 * day_ms)),
                credit(100, Some(now * 1000 + day_ms)),
                credit(1000, Some(now * 1000 + 10 * day_ms)),
                credit(7, None),
                credit(50, Some(now * 1000 - day_ms)),
            ]}}),
        );
        let body = sync(&message).to_string().into_bytes();
        let (status, reply) = call_router(
            &app.router,
            "POST",
            "/api/v0/messages",
            &[("x-lotledger-now", "2026-05-29T00:00:00Z")],
            Some(body),
        )
        .await
        .unwrap();
        assert_eq!(status, StatusCode::OK, "{reply}");

        let get = async |uri: &str, at: &str| {
            call_router(&app.router, "GET", uri, &[("x-lotledger-now", at)], None)
                .await
                .unwrap()
        };
        let week = "2026-12-02T00:00:00Z";
        let (status, body) = get(
            &format!("/api/v0/addresses/{holder}/credit_expirations?before={week}"),
            NOW,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let amounts: Vec<i64> = body["lots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["amount"].as_i64().unwrap())
            .collect();
        assert_eq!(amounts, [100, 300], "{body}");
        assert_eq!(body["total"], 400);
        assert_eq!(body["lots"][0]["expiration_date"], "2026-11-26T00:00:00Z");
        assert_eq!(body["before"], week);

        // Two days on, the first has expired; Unix seconds work too.
        let (_, body) = get(
            &format!(
                "/api/v0/addresses/{holder}/credit_expirations?before={}",
                now + 7 * 86_400
            ),
            "2026-11-27T00:00:00Z",
        )
        .await;
        assert_eq!(body["total"], 300, "{body}");

        // Across holders, paged.
        let (status, body) = get(
            &format!("/api/v0/credit_expirations?before={week}&pagination=1&page=2"),
            NOW,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["total"], 400, "{body}");
        assert_eq!(body["pagination_total"], 2);
        assert_eq!(body["expirations"].as_array().unwrap().len(), 1);
        assert_eq!(body["expirations"][0]["amount"], 300);
        assert_eq!(body["expirations"][0]["address"], holder.as_str());

        // `before` is required and must be an instant.
        for (uri, kind) in [
            ("/api/v0/credit_expirations", "missing"),
            ("/api/v0/credit_expirations?before=soon", "value_error"),
            (
                &format!("/api/v0/addresses/{holder}/credit_expirations?before=-5")[..],
                "value_error",
            ),
        ] {
            let (status, body) = get(uri, NOW).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{uri}: {body}");
            assert_eq!(body[0]["type"], kind, "{uri}: {body}");
            assert_eq!(body[0]["loc"], json!(["query", "before"]), "{uri}");
        }
    })
    .await;
}

/// The ledger as of an instant (issue 12, part 2), on both stores: a grant, then a transfer
/// that drains it; the balance as of an instant before the grant, between the two and after
/// both (= today's balance), with and without details; the lots then, with the debit that
/// drained each; `as_of` as RFC 3339 or Unix seconds, refused (422 naming it) otherwise.
#[tokio::test]
async fn the_ledger_as_of_an_instant() {
    both_stores(async |_, app| {
        let holder = lotledger_sig::evm_address(&HOLDER);
        let other = lotledger_sig::evm_address(&GRANTOR);
        // Granted at 1_779_000_000 (999 + 1 credits), transferred at 1_780_000_000.
        let grant = signed_at(&GRANTOR, "aleph_credit_distribution", 1_779_000_000.0, 999);
        let transfer = signed(
            &HOLDER,
            &holder,
            "aleph_credit_transfer",
            json!({"transfer": {"credits": [{"address": other, "amount": 300}]}}),
        );
        for message in [&grant, &transfer] {
            let (status, body) = app.post(&sync(message)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        let balance_as_of = async |as_of: &str| {
            let (status, body) = app
                .call(
                    "GET",
                    &format!("/api/v0/addresses/{holder}/balance?include_credit_details=true&as_of={as_of}"),
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body
        };
        assert_eq!(balance_as_of("1778999999").await["credit_balance"], 0);
        let between = balance_as_of("2026-05-20T00:00:00Z").await;
        assert_eq!(between["credit_balance"], 1000, "{between}");
        assert_eq!(between["credit_balance_details"][0]["amount"], 1000);
        let after = balance_as_of("1780000000").await;
        assert_eq!(after["credit_balance"], 700, "{after}");
        assert_eq!(app.balance(&holder).await, 700);

        let (status, lots) = app
            .call("GET", &format!("/api/v0/addresses/{holder}/credit_lots?as_of=1780000001"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{lots}");
        assert_eq!(lots["credit_balance"], 700);
        let lot = &lots["lots"][0];
        assert_eq!((lot["amount"].as_i64(), lot["remaining"].as_i64()), (Some(1000), Some(700)));
        assert_eq!(lot["credit_ref"], grant["item_hash"]);
        assert_eq!(lot["drained_by"][0]["credit_ref"], transfer["item_hash"]);
        assert_eq!(lot["drained_by"][0]["amount"], 300);
        let (_, before) = app
            .call("GET", &format!("/api/v0/addresses/{holder}/credit_lots?as_of=1778999999"), None)
            .await;
        assert_eq!(before["lots"], json!([]), "{before}");

        // Every holder as of an instant: between the two messages, the holder alone; after
        // both, the holder and the transfer's recipient, in both modes.
        let holders = async |query: &str| {
            let (status, body) = app
                .call("GET", &format!("/api/v0/credit_balances?{query}"), None)
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body
        };
        let then = holders("as_of=2026-05-20T00:00:00Z").await;
        assert_eq!(then["credit_balances"], json!([{"address": holder, "credits": 1000}]));
        assert_eq!(then["pagination_total"], 1);
        let later = holders("as_of=1780000000&pagination=1&cursor=").await;
        let mut expected = [(holder.clone(), 700), (other.clone(), 300)];
        expected.sort();
        assert_eq!(later["credit_balances"][0]["address"], expected[0].0.as_str(), "{later}");
        assert_eq!(later["credit_balances"][0]["credits"], expected[0].1);
        let next = later["next_cursor"].as_str().unwrap().to_string();
        let rest = holders(&format!("as_of=1780000000&pagination=1&cursor={next}")).await;
        assert_eq!(rest["credit_balances"][0]["address"], expected[1].0.as_str(), "{rest}");
        assert_eq!(rest["next_cursor"], Value::Null);
        // As of now it is today's list.
        assert_eq!(
            holders("as_of=1790000000&pagination=0").await["credit_balances"],
            holders("pagination=0").await["credit_balances"]
        );

        for uri in [
            format!("/api/v0/addresses/{holder}/balance?as_of=yesterday"),
            format!("/api/v0/addresses/{holder}/credit_lots?as_of=-1"),
        ] {
            let (status, body) = app.call("GET", &uri, None).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{uri}: {body}");
            assert_eq!(body[0]["loc"], json!(["query", "as_of"]), "{uri}");
        }
    })
    .await;
}

/// `POST /api/v0/messages/dry_run` (issue 12, part 3) answers what the post would do — the
/// rows, the drained and created lots, the balances before and after; a rejection or an
/// ignored message with its reason — and writes nothing: the SQLite file and the PostgreSQL
/// dump are byte for byte the same afterwards. The post then does what was announced.
#[tokio::test]
async fn dry_run_answers_what_a_post_would_do_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (sqlite, url) = db::fresh_sqlite(&dir).await;
    let path = url.trim_start_matches("sqlite://").to_string();
    dry_run_case(App::new(&sqlite, false), || {
        // The database and its write-ahead log (the shared-memory index is not the ledger).
        [path.clone(), format!("{path}-wal")]
            .iter()
            .flat_map(|p| std::fs::read(p).unwrap_or_default())
            .collect()
    })
    .await;
    let pg_url = db::fresh_pg_url().await;
    let pg = lotledger_store_pg::PgStore::open(&pg_url).await.unwrap();
    dry_run_case(App::new(&pg, false), || {
        lotledger_testkit::cluster::pg_dump(&pg_url).unwrap()
    })
    .await;
}

async fn dry_run_case(app: App, snapshot: impl Fn() -> Vec<u8>) {
    let holder = lotledger_sig::evm_address(&HOLDER);
    let other = lotledger_sig::evm_address(&[0x33; 32]);
    // 1 000 credits granted before the transfers (at one instant, the order of the hashes
    // would decide which comes first).
    let grant = signed_at(&GRANTOR, "aleph_credit_distribution", 1_779_000_000.0, 999);
    let (status, body) = app.post(&sync(&grant)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let transfer_of = |amount: i64| {
        signed(
            &HOLDER,
            &holder,
            "aleph_credit_transfer",
            json!({"transfer": {"credits": [{"address": other, "amount": amount}]}}),
        )
    };
    let transfer = transfer_of(300);
    let dry_run = async |body: &Value| {
        let (status, answer) = app
            .call(
                "POST",
                "/api/v0/messages/dry_run",
                Some(body.to_string().into_bytes()),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer
    };
    let before = snapshot();

    let answer = dry_run(&sync(&transfer)).await;
    let (grant_hash, transfer_hash) = (&grant["item_hash"], &transfer["item_hash"]);
    assert_eq!(answer["status"], "processed", "{answer}");
    assert_eq!(answer["error"], Value::Null);
    // The recipient's row (index 0) then the sender's debit (index 1), as the reference
    // numbers a transfer's rows (SPEC Part II 3.5).
    let rows: Vec<(Value, Value, Value, Value, Value)> = answer["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["address"].clone(),
                r["credit_ref"].clone(),
                r["credit_index"].clone(),
                r["amount"].clone(),
                r["payment_method"].clone(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                json!(other),
                transfer_hash.clone(),
                json!(0),
                json!(300),
                json!("credit_transfer")
            ),
            (
                json!(holder),
                transfer_hash.clone(),
                json!(1),
                json!(-300),
                json!("credit_transfer")
            ),
        ]
    );
    assert_eq!(
        answer["drained"],
        json!([{"address": holder, "credit_ref": grant_hash, "credit_index": 0, "amount": 300,
                "expiration_date": null}])
    );
    assert_eq!(answer["created"].as_array().unwrap().len(), 1);
    assert_eq!(answer["created"][0]["address"], json!(other));
    assert_eq!(answer["created"][0]["amount"], 300);
    assert_eq!(answer["created"][0]["credit_ref"], *transfer_hash);
    assert_eq!(answer["created"][0]["expiration_date"], Value::Null);
    assert_eq!(
        answer["balances"],
        json!({holder.clone(): {"before": 1000, "after": 700},
               other.clone(): {"before": 0, "after": 300}})
    );

    // Already processed, over the balance, a forged signature, not a POST: each with why.
    let again = dry_run(&sync(&grant)).await;
    assert_eq!(again["status"], "ignored");
    assert!(
        again["error"]
            .as_str()
            .unwrap()
            .contains("already processed")
    );
    let too_much = dry_run(&sync(&transfer_of(5000))).await;
    assert_eq!(too_much["status"], "rejected");
    assert!(
        too_much["error"].as_str().unwrap().starts_with(
            "Insufficient credit balance for transfer. Required: 5000, Available: 1000"
        ),
        "{too_much}"
    );
    assert_eq!(too_much["history"], json!([]));
    assert_eq!(too_much["balances"], json!({}));
    let mut forged = transfer_of(10);
    forged["signature"] = grant["signature"].clone();
    let forged = dry_run(&sync(&forged)).await;
    assert_eq!(forged["status"], "rejected");
    assert!(
        forged["error"]
            .as_str()
            .unwrap()
            .starts_with("The signature of the message is invalid"),
        "{forged}"
    );
    let mut aggregate = transfer_of(10);
    aggregate["type"] = json!("AGGREGATE");
    let aggregate = dry_run(&sync(&aggregate)).await;
    assert_eq!(aggregate["status"], "rejected");
    assert!(
        aggregate["error"]
            .as_str()
            .unwrap()
            .contains("POST messages only")
    );
    let (status, _) = app
        .call("POST", "/api/v0/messages/dry_run", Some(b"[1]".to_vec()))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    assert!(before == snapshot(), "a dry run changed the store");
    // Posted, it does what the dry run said.
    let (status, body) = app.post(&sync(&transfer)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(app.balance(&holder).await, 700);
    assert_eq!(app.balance(&other).await, 300);
    let (_, history) = app
        .call(
            "GET",
            &format!("/api/v0/addresses/{holder}/credit_history"),
            None,
        )
        .await;
    let posted: Vec<&Value> = history["credit_history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["credit_ref"] == *transfer_hash)
        .collect();
    // The announced row is the stored one, with its holder named.
    let mut announced = answer["history"][1].clone();
    let address = announced.as_object_mut().unwrap().remove("address");
    assert_eq!(address, Some(json!(holder)));
    assert_eq!(posted, vec![&announced]);
    assert!(before != snapshot(), "the post wrote nothing");
}
