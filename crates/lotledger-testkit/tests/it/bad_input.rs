//! The bad-input catalogue: every rejection of SPEC Part II 2.4 and the input quirks of
//! section 9, sent as signed messages or raw requests through the HTTP API (router in process,
//! SQLite and PostgreSQL). Each row gives a clear error — the reference's text or status where
//! it has one — and the ledger is unchanged afterwards (balances, history, lots).

use std::sync::Arc;

use axum::http::StatusCode;
use lotledger_api::{ApiConfig, router};
use lotledger_core::{Rules, Timestamp};
use lotledger_store::{HistorySelector, Store};
use lotledger_testkit::db;
use lotledger_testkit::server::call_router;
use serde_json::{Value, json};

const MINTER: [u8; 32] = [0x11; 32];
const HOLDER: [u8; 32] = [0x22; 32];
const TIME: f64 = 1_780_000_000.0;

fn minter() -> String {
    lotledger_sig::evm_address(&MINTER)
}

fn holder() -> String {
    lotledger_sig::evm_address(&HOLDER)
}

/// A message signed by `secret` carrying `item_content` verbatim (it may be invalid JSON).
pub(super) fn signed_raw(secret: &[u8; 32], item_content: &str) -> Value {
    let sender = lotledger_sig::evm_address(secret);
    let item_hash = lotledger_sig::item_hash_of(item_content);
    let buffer = lotledger_sig::verification_buffer("ETH", &sender, "POST", &item_hash);
    json!({"item_hash": item_hash, "type": "POST", "chain": "ETH", "sender": sender,
           "channel": "ALEPH_CREDIT", "item_type": "inline", "item_content": item_content,
           "signature": lotledger_sig::sign_evm(secret, &buffer)})
}

fn signed(secret: &[u8; 32], kind: &str, content: Value) -> Value {
    let address = lotledger_sig::evm_address(secret);
    signed_raw(
        secret,
        &json!({"address": address, "time": TIME, "type": kind, "content": content}).to_string(),
    )
}

fn transfer(credits: Value) -> Value {
    signed(
        &HOLDER,
        "aleph_credit_transfer",
        json!({"transfer": {"credits": credits}}),
    )
}

fn grant(entry: Value) -> Value {
    let mut e = json!({"address": holder(), "amount": 100, "price": "0.5", "tx_hash": "0xt", "provider": "ALEPH"});
    for (k, v) in entry.as_object().unwrap() {
        if v.is_null() {
            e.as_object_mut().unwrap().remove(k);
        } else {
            e[k] = v.clone();
        }
    }
    signed(
        &MINTER,
        "aleph_credit_distribution",
        json!({"distribution": {"token": "T", "chain": "ETH", "credits": [e]}}),
    )
}

fn expense(entry: Value) -> Value {
    signed(
        &MINTER,
        "aleph_credit_expense",
        json!({"expense": {"credits": [entry]}}),
    )
}

/// A valid transfer from `secret`, its POST content changed by `edit`, signed again.
fn content_with(secret: &[u8; 32], edit: impl FnOnce(&mut Value)) -> Value {
    resign_with(
        secret,
        transfer(json!([{"address": "0xb", "amount": 1}])),
        edit,
    )
}

/// `message` with its POST content changed by `edit` and signed again by `secret`.
fn resign_with(secret: &[u8; 32], message: Value, edit: impl FnOnce(&mut Value)) -> Value {
    let mut content: Value =
        serde_json::from_str(message["item_content"].as_str().unwrap()).unwrap();
    edit(&mut content);
    signed_raw(secret, &content.to_string())
}

/// A rejected message: 422 `rejected`, and this text in its recorded error.
fn rejected_messages() -> Vec<(&'static str, Value, &'static str)> {
    let h = holder();
    vec![
        (
            "self-transfer",
            transfer(json!([{"address": h, "amount": 1}])),
            "Self-transfer not allowed",
        ),
        (
            "duplicate recipients",
            transfer(json!([{"address": "0xb", "amount": 1}, {"address": "0xb", "amount": 1}])),
            "Duplicate recipient addresses",
        ),
        (
            "insufficient balance",
            transfer(json!([{"address": "0xb", "amount": 5000}])),
            "Insufficient credit balance for transfer. Required: 5000, Available: 1000",
        ),
        (
            "amount 0",
            transfer(json!([{"address": "0xb", "amount": 0}])),
            "Input should be greater than 0",
        ),
        (
            "negative amount",
            transfer(json!([{"address": "0xb", "amount": -5}])),
            "Input should be greater than 0",
        ),
        (
            "string amount",
            transfer(json!([{"address": "0xb", "amount": "lots"}])),
            "amount must be an integer, got str",
        ),
        (
            "numeric string amount",
            transfer(json!([{"address": "0xb", "amount": "100"}])),
            "amount must be an integer, got str",
        ),
        (
            "float amount",
            transfer(json!([{"address": "0xb", "amount": 1.5}])),
            "amount must be an integer, got float",
        ),
        (
            "integral float amount",
            transfer(json!([{"address": "0xb", "amount": 1000.0}])),
            "amount must be an integer, got float",
        ),
        (
            "boolean amount",
            transfer(json!([{"address": "0xb", "amount": true}])),
            "amount must be an integer, got bool",
        ),
        (
            "null amount",
            transfer(json!([{"address": "0xb", "amount": null}])),
            "amount must be an integer, got NoneType",
        ),
        (
            "missing amount",
            transfer(json!([{"address": "0xb"}])),
            "Field required",
        ),
        (
            "integer beyond 64 bits",
            transfer(json!([{"address": "0xb", "amount": 1e30}])),
            "amount must be an integer, got float",
        ),
        (
            "empty address",
            transfer(json!([{"address": "", "amount": 1}])),
            "address must not be empty",
        ),
        (
            "blank address",
            transfer(json!([{"address": "   ", "amount": 1}])),
            "address must not be empty",
        ),
        (
            "missing address",
            transfer(json!([{"amount": 1}])),
            "Field required",
        ),
        (
            "empty credits",
            transfer(json!([])),
            "List should have at least 1 item",
        ),
        (
            "missing transfer",
            signed(&HOLDER, "aleph_credit_transfer", json!({"other": 1})),
            "Field required",
        ),
        (
            "missing credits",
            signed(&HOLDER, "aleph_credit_transfer", json!({"transfer": {}})),
            "Field required",
        ),
        (
            "missing token",
            signed(
                &MINTER,
                "aleph_credit_distribution",
                json!({"distribution": {"chain": "ETH", "credits": [{"address": h, "amount": 1, "price": "1", "tx_hash": "t", "provider": "p"}]}}),
            ),
            "Field required",
        ),
        (
            "missing chain",
            signed(
                &MINTER,
                "aleph_credit_distribution",
                json!({"distribution": {"token": "T", "credits": [{"address": h, "amount": 1, "price": "1", "tx_hash": "t", "provider": "p"}]}}),
            ),
            "Field required",
        ),
        (
            "bad price",
            grant(json!({"price": "not-a-number"})),
            "price must be a valid decimal string, got 'not-a-number'",
        ),
        (
            "expiration with a fraction",
            grant(json!({"expiration": 1.5})),
            "got a number with a fractional part",
        ),
        (
            "expiration overflow",
            grant(json!({"expiration": 9_000_000_000_000_000_i64})),
            "expiration",
        ),
        (
            "amount overflow after the x10000 scaling",
            signed_raw(
                &MINTER,
                &json!({"address": minter(), "time": 1_700_000_000.0, "type": "aleph_credit_distribution",
                    "content": {"distribution": {"token": "T", "chain": "ETH", "credits": [
                        {"address": h, "amount": i64::MAX / 100, "price": "1", "tx_hash": "t", "provider": "p"}]}}})
                .to_string(),
            ),
            "overflow",
        ),
        (
            "negative count",
            expense(json!({"address": h, "amount": 1, "ref": "r", "count": -1})),
            "Input should be greater than or equal to 0",
        ),
        (
            "negative size",
            expense(json!({"address": h, "amount": 1, "ref": "r", "size": -1})),
            "Input should be greater than or equal to 0",
        ),
        (
            "negative content time",
            content_with(&HOLDER, |c| c["time"] = json!(-1.0)),
            "'loc': ('time',), 'msg': 'Input should be greater than or equal to 0'",
        ),
        (
            "content time beyond aleph-message's bound",
            content_with(&HOLDER, |c| c["time"] = json!(9_223_372_036.5)),
            "'loc': ('time',), 'msg': 'Input should be less than or equal to 9223372036'",
        ),
        (
            "extra top-level content key",
            content_with(&HOLDER, |c| c["memo"] = json!("thanks")),
            "'loc': ('memo',), 'msg': 'Extra inputs are not permitted'",
        ),
        (
            "extra key on a whitelisted distribution before the cutoff",
            resign_with(&MINTER, grant(json!({})), |c| {
                c["time"] = json!(1_700_000_000.0);
                c["note"] = json!(1);
            }),
            "'loc': ('note',), 'msg': 'Extra inputs are not permitted'",
        ),
        (
            "ref of the wrong type",
            content_with(&HOLDER, |c| c["ref"] = json!(5)),
            "Input should be a valid dictionary or instance of ChainRef",
        ),
        (
            "more than 16 nested tags",
            content_with(&HOLDER, |c| c["content"]["tags"] = json!(vec!["t"; 17])),
            "List should have at most 16 items after validation, not 17",
        ),
        (
            "content not JSON",
            signed_raw(&HOLDER, "{\"address\": NaN"),
            "not valid JSON",
        ),
        (
            "NUL character",
            signed(
                &HOLDER,
                "aleph_credit_transfer",
                json!({"transfer": {"credits": [{"address": "0x\u{0}b", "amount": 1}]}}),
            ),
            "NUL",
        ),
    ]
}

/// `(name, method, uri, body, expected status)`.
type RawRequest = (
    &'static str,
    &'static str,
    String,
    Option<Vec<u8>>,
    StatusCode,
);

struct App {
    router: axum::Router,
}

impl App {
    async fn call(&self, method: &str, uri: &str, body: Option<Vec<u8>>) -> (StatusCode, Value) {
        call_router(&self.router, method, uri, &[], body)
            .await
            .unwrap()
    }
}

async fn ledger_state<S: Store>(store: &S) -> Value {
    let mut out = Vec::new();
    let at = Timestamp::from_unix_seconds(1_780_000_000).unwrap();
    for a in store.addresses().await.unwrap() {
        let history = store
            .history(&HistorySelector::Address(a.clone()))
            .await
            .unwrap();
        let lots = store.lots(&a).await.unwrap();
        out.push(json!([
            a,
            store.balance(&a, at).await.unwrap().0,
            history.len(),
            format!("{lots:?}")
        ]));
    }
    Value::Array(out)
}

async fn catalogue<S: Store + Clone + 'static>(store: S) {
    let rules = Rules::new(vec![minter()], vec!["ALEPH_CREDIT".into()]);
    let mut config = ApiConfig::new(rules);
    config.max_body_bytes = 1024 * 1024;
    let app = App {
        router: router(Arc::new(store.clone()), config),
    };
    let (status, _) = app
        .call(
            "POST",
            "/api/v0/messages",
            Some(
                json!({"sync": true, "message": grant(json!({"amount": 1000}))})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let before = ledger_state(&store).await;

    for (name, message, text) in rejected_messages() {
        let body = json!({"sync": true, "message": message})
            .to_string()
            .into_bytes();
        let (status, reply) = app.call("POST", "/api/v0/messages", Some(body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name}: {reply}");
        assert_eq!(reply["message_status"], "rejected", "{name}");
        let hash = message["item_hash"].as_str().unwrap();
        let (_, record) = app
            .call("GET", &format!("/api/v0/messages/{hash}"), None)
            .await;
        let error = record["details"]["errors"][0]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            !error.is_empty() && error.contains(text),
            "{name}: {error:?} lacks {text:?}"
        );
        assert_eq!(
            ledger_state(&store).await,
            before,
            "{name} changed the ledger"
        );
    }

    // Raw requests: status (and a clear body where the reference has one).
    let nested = "[".repeat(100_000) + &"]".repeat(100_000);
    let mut unknown_chain = grant(json!({}));
    unknown_chain["chain"] = json!("MOON");
    let holder = holder();
    let history = format!("/api/v0/addresses/{holder}/credit_history");
    let requests: Vec<RawRequest> = vec![
        (
            "non-UTF-8 body",
            "POST",
            "/api/v0/messages".into(),
            Some(vec![0xff, 0xfe, 0x7b]),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "deeply nested JSON",
            "POST",
            "/api/v0/messages".into(),
            Some(nested.into_bytes()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "10 MB body",
            "POST",
            "/api/v0/messages".into(),
            Some(vec![b' '; 10 * 1024 * 1024]),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "unknown chain",
            "POST",
            "/api/v0/messages".into(),
            Some(
                json!({"sync": true, "message": unknown_chain})
                    .to_string()
                    .into_bytes(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "bad base64 cursor",
            "GET",
            format!("{history}?pagination=2&cursor=%%%%"),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "cursor not JSON",
            "GET",
            format!("{history}?pagination=2&cursor=bm90LWpzb24"),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "cursor of another sort",
            "GET",
            format!(
                "{history}?pagination=2&sort_by=amount&cursor=eyJpIjowLCJvIjotMSwiciI6InIiLCJzIjoibWVzc2FnZV90aW1lc3RhbXAiLCJ2IjpudWxsfQ"
            ),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "balances cursor not base64",
            "GET",
            "/api/v0/credit_balances?cursor=***".into(),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "negative pagination",
            "GET",
            format!("{history}?pagination=-1"),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "overflowing pagination",
            "GET",
            format!("{history}?pagination=99999999999999999999999"),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "overflowing page",
            "GET",
            format!("{history}?pagination=10&page=9223372036854775807"),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            "negative startDate",
            "GET",
            format!("{history}?startDate=-1"),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "startDate out of range",
            "GET",
            format!("{history}?startDate=1e308"),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "startDate NaN",
            "GET",
            format!("{history}?startDate=nan"),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "endDate infinite",
            "GET",
            format!("{history}?endDate=inf"),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "overflowing min_balance",
            "GET",
            "/api/v0/credit_balances?min_balance=99999999999999999999".into(),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "unknown balance chain",
            "GET",
            format!("/api/v0/addresses/{holder}/balance?chain=MOON"),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (name, method, uri, body, want) in requests {
        let (status, reply) = app.call(method, &uri, body).await;
        assert_eq!(status, want, "{name}: {reply}");
        assert_eq!(
            ledger_state(&store).await,
            before,
            "{name} changed the ledger"
        );
    }

    // Quirk kept (SPEC Part II 9.15): a NaN or infinite price is a decimal Python accepts; the
    // grant is processed and every read still answers.
    for price in ["NaN", "Infinity", "-Infinity"] {
        let body =
            json!({"sync": true, "message": grant(json!({"price": price, "tx_hash": price}))});
        let (status, reply) = app
            .call(
                "POST",
                "/api/v0/messages",
                Some(body.to_string().into_bytes()),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{price}: {reply}");
    }
    for uri in [
        history.clone(),
        format!("{history}?pagination=10&cursor="),
        format!("{history}/summary"),
    ] {
        let (status, reply) = app.call("GET", &uri, None).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {reply}");
    }
}

#[tokio::test]
async fn bad_input_is_refused_clearly_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    catalogue(db::fresh_sqlite(&dir).await.0).await;
    catalogue(db::fresh_pg().await).await;
}
