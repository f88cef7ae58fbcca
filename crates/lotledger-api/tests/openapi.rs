#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.
//! The committed OpenAPI document (`openapi.json` at the repository root) is the one the code
//! generates. After changing an endpoint, regenerate it with
//! `LOTLEDGER_BLESS=1 cargo test -p lotledger-api --test openapi`.

use std::path::PathBuf;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../openapi.json")
}

#[test]
fn committed_openapi_document_is_current() {
    let generated = lotledger_api::openapi::document() + "\n";
    let path = committed_path();
    if std::env::var_os("LOTLEDGER_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi.json is out of date: run LOTLEDGER_BLESS=1 cargo test -p lotledger-api --test openapi"
    );
}

#[test]
fn every_served_path_is_documented() {
    let doc: serde_json::Value = serde_json::from_str(&lotledger_api::openapi::document()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/api/v0/messages",
        "/api/v0/messages/{item_hash}",
        "/api/v0/messages/{item_hash}/status",
        "/api/v0/messages/{item_hash}/consumed_credits",
        "/api/v0/addresses/{address}/balance",
        "/api/v0/addresses/{address}/credit_history",
        "/api/v0/addresses/{address}/credit_history/summary",
        "/api/v0/credit_balances",
        "/api/v0/costs",
    ] {
        assert!(paths.contains_key(path), "{path} is not documented");
    }
}
