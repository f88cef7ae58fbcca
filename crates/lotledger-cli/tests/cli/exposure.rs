//! A node facing the internet (`serve` as a process, raw sockets as clients): a client over its
//! request rate gets 429 with `Retry-After` (and no limit applies by default on loopback), a
//! client at its connection cap has further connections closed, a client that does not send
//! its request's header in time loses the connection, and one that does not send its body in
//! time gets 408. (The test clock refused unless enabled: `serve::serves_openapi_and_refuses_
//! the_test_clock_by_default`.)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use lotledger_testkit::db;
use lotledger_testkit::server::ServerProcess;

use super::crash::bin;

fn start(dir: &tempfile::TempDir, args: &[&str]) -> ServerProcess {
    let url = db::fresh_sqlite_url(dir);
    ServerProcess::start(bin(), &["--database-url", &url], args).unwrap()
}

/// Sends `request` on a new connection and reads the answer's head (status line and
/// headers), or `None` when the server closed the connection without answering.
fn exchange(addr: &str, request: &[u8]) -> Option<String> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    read_head(&mut stream)
}

fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) | Err(_) => break,
            Ok(_) => raw.push(byte[0]),
        }
    }
    (!raw.is_empty()).then(|| String::from_utf8_lossy(&raw).to_string())
}

fn get(addr: &str) -> String {
    let request =
        format!("GET /api/v0/costs HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    exchange(addr, request.as_bytes()).expect("an answer")
}

fn status(head: &str) -> u16 {
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_client_over_its_rate_gets_429_and_none_is_limited_on_loopback_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let open = start(&dir, &[]);
    for _ in 0..40 {
        assert_eq!(status(&get(&open.addr)), 200);
    }
    let limited = start(&dir, &["--rate-limit", "2", "--rate-burst", "5"]);
    let heads: Vec<String> = (0..12).map(|_| get(&limited.addr)).collect();
    let statuses: Vec<u16> = heads.iter().map(|h| status(h)).collect();
    assert_eq!(statuses[..5], [200; 5], "{statuses:?}");
    assert!(statuses[5..].contains(&429), "{statuses:?}");
    let refused = heads.iter().find(|h| status(h) == 429).unwrap();
    assert!(
        refused.to_ascii_lowercase().contains("retry-after: 1"),
        "{refused}"
    );
    // Its budget comes back at its rate.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(status(&get(&limited.addr)), 200);
}

#[test]
fn a_client_at_its_connection_cap_has_more_connections_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        &dir,
        &[
            "--max-connections-per-client",
            "2",
            "--header-timeout",
            "60",
        ],
    );
    let held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(&server.addr).unwrap())
        .collect();
    // The two held connections are counted once the server accepted them: a third one is
    // closed without an answer (asked until it is, 10 s at most).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let request = b"GET /api/v0/costs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        if exchange(&server.addr, request).is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "a third connection was served");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A held one still works; once both are gone, a new one is served again.
    let mut first = held.into_iter().next().unwrap();
    first
        .write_all(b"GET /api/v0/costs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(status(&read_head(&mut first).unwrap()), 200);
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    while exchange(
        &server.addr,
        b"GET /api/v0/costs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "no connection served after one closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_slow_header_loses_its_connection_and_a_slow_body_gets_408() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir, &["--header-timeout", "0.5", "--body-timeout", "0.5"]);
    // Half a header, then nothing: the server closes the connection.
    let started = Instant::now();
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /api/v0/costs HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let answer = read_head(&mut stream);
    let waited = started.elapsed();
    assert!(
        answer.as_deref().is_none_or(|h| status(h) == 408),
        "{answer:?}"
    );
    assert!(
        waited < Duration::from_secs(9),
        "the connection was held {waited:?}"
    );
    // A whole header, then a tenth of the announced body, then nothing: 408.
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(
            b"POST /api/v0/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"sync\": tr",
        )
        .unwrap();
    let answer = read_head(&mut stream).expect("an answer to a slow body");
    assert_eq!(status(&answer), 408, "{answer}");
    // Neither left the server unable to serve.
    assert_eq!(status(&get(&server.addr)), 200);
}
