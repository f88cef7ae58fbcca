//! Following a node that answers with the reference's own bytes (NODE-API.md A.3: the cursor
//! pages of its credit messages; A.4: a one-message page, for the count), served over loopback
//! by a small fixture server: the followed ledger equals one that received the same messages
//! directly; a second sync re-reads and changes nothing; a source that fails for a while is
//! retried; a message whose signature was altered on the way is recorded as rejected and never
//! applied. On both stores.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lotledger_core::envelope::Envelope;
use lotledger_core::{Rules, Timestamp};
use lotledger_store::{MessageStatus, Store, apply_envelope};
use lotledger_sync::{Event, Options};
use lotledger_testkit::db;
use serde_json::Value;

const ISSUER: &str = "0xeD1F7463E805f8E7c477cE9bAB9805F75eB658E3";
const ALICE: &str = "0x2C49567b5070Ab819f1fa4226630f10Db520B1f9";
const BOB: &str = "0xd4dE7D96feaEfDC7c5a130f320A33a914880c4D9";
/// The messages of the reference's credit list (A.3), oldest first.
const LISTED: [&str; 4] = ["distribution", "expense", "transfer", "expense_tie"];

/// What the fixture server answers: A.3's two cursor pages and A.4's one-message page, as
/// the reference wrote them (or altered by the case).
#[derive(Clone)]
struct Fixture {
    first: String,
    next_token: String,
    next: String,
    count: String,
    /// Requests answered 503 before the real answers start.
    failures: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

/// The query's value of `key`, if it is there.
fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

async fn messages_json(State(f): State<Fixture>, RawQuery(query): RawQuery) -> Response {
    f.requests.fetch_add(1, Ordering::SeqCst);
    if f.failures
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "try later").into_response();
    }
    let pairs = lotledger_core::node_query::query_pairs(query.as_deref().unwrap_or(""));
    let credit_query = param(&pairs, "msgTypes") == Some("POST")
        && param(&pairs, "channels") == Some("ALEPH_CREDIT")
        && param(&pairs, "contentTypes")
            == Some("aleph_credit_distribution,aleph_credit_expense,aleph_credit_transfer")
        && param(&pairs, "sortOrder") == Some("1");
    if !credit_query {
        return (StatusCode::UNPROCESSABLE_ENTITY, "not the credit query").into_response();
    }
    let body = match (param(&pairs, "pagination"), param(&pairs, "cursor")) {
        (Some("2"), Some("")) => f.first.clone(),
        (Some("2"), Some(token)) if token == f.next_token => f.next.clone(),
        (Some("1"), None) => f.count.clone(),
        _ => return (StatusCode::NOT_FOUND, "404: Not Found").into_response(),
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

impl Fixture {
    fn reference() -> Fixture {
        let data: Value =
            serde_json::from_str(include_str!("../data/node_api_lists.json")).unwrap();
        let cases = data["cases"].as_array().unwrap();
        let by_heading = |prefix: &str| -> &Value {
            cases
                .iter()
                .find(|c| c["heading"].as_str().unwrap().starts_with(prefix))
                .unwrap_or_else(|| panic!("no case {prefix}"))
        };
        let next = by_heading("Next page");
        let uri = next["uri"].as_str().unwrap();
        let next_token = uri[uri.find("cursor=").unwrap() + "cursor=".len()..].to_string();
        Fixture {
            first: by_heading("First page")["body"]
                .as_str()
                .unwrap()
                .to_string(),
            next_token,
            next: next["body"].as_str().unwrap().to_string(),
            count: by_heading("`contentFormat=none`")["body"]
                .as_str()
                .unwrap()
                .to_string(),
            failures: Arc::default(),
            requests: Arc::default(),
        }
    }

    async fn serve(&self) -> String {
        let app = axum::Router::new()
            .route("/api/v0/messages.json", axum::routing::get(messages_json))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }
}

fn rules() -> Rules {
    Rules::new(vec![ISSUER.to_string()], vec!["ALEPH_CREDIT".into()])
}

fn reference_envelope(name: &str) -> Envelope {
    let data: Value = serde_json::from_str(include_str!(
        "../../../lotledger-core/tests/data/node_api_messages.json"
    ))
    .unwrap();
    let case = data["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap();
    Envelope::from_message_text(case["envelope"].as_str().unwrap()).unwrap()
}

const NOW: i64 = 1_796_000_000;

async fn follow<S: Store>(store: &S, from: &str, lookback: Duration) -> lotledger_sync::Summary {
    let mut opts = Options::new(from, vec!["ALEPH_CREDIT".into()]);
    opts.page_size = 2;
    opts.lookback = lookback;
    let now = || Ok(Timestamp::from_unix_seconds(NOW).unwrap());
    let mut events = Vec::new();
    let summary = lotledger_sync::run(store, &rules(), &opts, now, |e| events.push(e), None)
        .await
        .unwrap();
    assert_eq!(events.last(), Some(&Event::CaughtUp), "{events:?}");
    summary
}

/// Balance, history and lots of each account, and the status of each listed message.
async fn state<S: Store>(store: &S) -> Vec<String> {
    let at = Timestamp::from_unix_seconds(NOW).unwrap();
    let mut out = Vec::new();
    for address in [ISSUER, ALICE, BOB] {
        out.push(format!(
            "{:?}",
            store.balance_details(address, at).await.unwrap()
        ));
        out.push(format!(
            "{:?}",
            store
                .history(&lotledger_store::HistorySelector::Address(
                    address.to_string()
                ))
                .await
                .unwrap()
        ));
        out.push(format!("{:?}", store.lots(address).await.unwrap()));
    }
    for name in LISTED {
        let hash = reference_envelope(name).item_hash;
        let record = store.message(&hash).await.unwrap();
        out.push(format!("{name}: {:?}", record.map(|r| r.status)));
    }
    out
}

async fn followed_as_received<S: Store>(followed: &S, direct: &S) {
    let fixture = Fixture::reference();
    let from = fixture.serve().await;
    let first = follow(followed, &from, Duration::from_secs(3600)).await;
    assert_eq!(
        (first.read, first.processed, first.refused),
        (4, 4, 0),
        "{first:?}"
    );
    let now = Timestamp::from_unix_seconds(NOW).unwrap();
    for name in LISTED {
        apply_envelope(direct, &reference_envelope(name), &rules(), now)
            .await
            .unwrap();
    }
    let followed_state = state(followed).await;
    assert_eq!(followed_state, state(direct).await);
    assert!(
        followed_state.iter().all(|s| !s.ends_with("None")),
        "{followed_state:?}"
    );

    // Again, with a look-back reaching before the first message: read again, a no-op.
    let again = follow(followed, &from, Duration::from_secs(10_000_000_000)).await;
    assert_eq!((again.read, again.already_applied), (4, 4), "{again:?}");
    assert_eq!(state(followed).await, followed_state);
    // The position is the newest message's: the expense_tie (ties on time go by hash).
    let recorded = followed
        .ingest_progress(&format!("sync {from}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        recorded.resume_at.as_deref(),
        Some(
            format!(
                "1795990120623456 {}",
                reference_envelope("expense_tie").item_hash
            )
            .as_str()
        )
    );
}

async fn a_failing_source_is_retried<S: Store>(store: &S) {
    let fixture = Fixture::reference();
    fixture.failures.store(2, Ordering::SeqCst);
    let from = fixture.serve().await;
    let summary = follow(store, &from, Duration::from_secs(3600)).await;
    assert_eq!(summary.processed, 4, "{summary:?}");
    // The count, its retries aside, and two pages; the two failures were answered too.
    assert!(fixture.requests.load(Ordering::SeqCst) >= 4);
}

async fn an_altered_message_is_recorded_rejected<S: Store>(store: &S) {
    let mut fixture = Fixture::reference();
    let distribution = reference_envelope("distribution");
    let signature = distribution.signature.clone().unwrap();
    let altered = format!("{}{}", &signature[..signature.len() - 2], "1c");
    assert_ne!(altered, signature);
    fixture.first = fixture.first.replace(&signature, &altered);
    let from = fixture.serve().await;
    let summary = follow(store, &from, Duration::from_secs(3600)).await;
    assert_eq!(summary.refused, 1, "{summary:?}");
    let record = store
        .message(&distribution.item_hash)
        .await
        .unwrap()
        .unwrap();
    match record.status {
        MessageStatus::Rejected { error } => {
            assert!(error.contains("signature"), "{error}");
        }
        other => panic!("an altered message was {other:?}"),
    }
    let at = Timestamp::from_unix_seconds(NOW).unwrap();
    let alice = store.balance_details(ALICE, at).await.unwrap().0;
    assert_eq!(alice.0, 0, "nothing of the distribution was applied");
}

#[tokio::test]
async fn sqlite_follows_the_reference_node() {
    let dir = tempfile::tempdir().unwrap();
    let followed = db::fresh_sqlite(&dir).await.0;
    let dir2 = tempfile::tempdir().unwrap();
    let direct = db::fresh_sqlite(&dir2).await.0;
    followed_as_received(&followed, &direct).await;
    let dir3 = tempfile::tempdir().unwrap();
    a_failing_source_is_retried(&db::fresh_sqlite(&dir3).await.0).await;
    let dir4 = tempfile::tempdir().unwrap();
    an_altered_message_is_recorded_rejected(&db::fresh_sqlite(&dir4).await.0).await;
}

#[tokio::test]
async fn postgres_follows_the_reference_node() {
    let followed = db::fresh_pg().await;
    let direct = db::fresh_pg().await;
    followed_as_received(&followed, &direct).await;
    a_failing_source_is_retried(&db::fresh_pg().await).await;
    an_altered_message_is_recorded_rejected(&db::fresh_pg().await).await;
}
