//! `lotledger serve` as a process: metrics after traffic, the OpenAPI document, the test clock
//! refused in normal mode, and a clean stop on SIGTERM.

use std::path::Path;

use lotledger_testkit::server::ServerProcess;
use serde_json::json;

fn start(dir: &tempfile::TempDir, serve_args: &[&str]) -> ServerProcess {
    let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    ServerProcess::start(
        Path::new(env!("CARGO_BIN_EXE_lotledger")),
        &["--database-url", &url],
        serve_args,
    )
    .unwrap()
}

#[test]
fn metrics_count_messages_and_time_requests() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir, &[]);
    let body = json!({"sync": true, "message": {"item_hash": "ab", "type": "POST", "chain": "ETH",
        "sender": "0x1", "item_type": "inline", "item_content": "{}", "signature": "0x"}});
    let (status, _) = server
        .request(
            "POST",
            "/api/v0/messages",
            &[],
            Some(body.to_string().as_bytes()),
        )
        .unwrap();
    assert_eq!(status, 422);
    let (status, _) = server
        .request("GET", "/api/v0/addresses/0xa/balance", &[], None)
        .unwrap();
    assert_eq!(status, 200);
    let (status, text) = server.request("GET", "/metrics", &[], None).unwrap();
    assert_eq!(status, 200);
    let text = text.as_str().unwrap();
    assert!(
        text.contains(r#"lotledger_messages_total{kind="other",outcome="rejected"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"lotledger_http_request_duration_seconds_bucket{method="GET",route="/api/v0/addresses/{address}/balance",status="200",le="0.005"}"#),
        "{text}"
    );
}

#[test]
fn serves_openapi_and_refuses_the_test_clock_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir, &[]);
    let (status, doc) = server
        .request("GET", "/api/v0/openapi.json", &[], None)
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        doc,
        serde_json::from_str::<serde_json::Value>(&lotledger_api::openapi::document()).unwrap()
    );
    let (status, _) = server
        .request(
            "GET",
            "/api/v0/addresses/0xa/balance",
            &[("X-Lotledger-Now", "2030-01-01T00:00:00Z")],
            None,
        )
        .unwrap();
    assert_eq!(status, 400);
}

#[test]
fn stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&dir, &[]);
    let pid = server.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
