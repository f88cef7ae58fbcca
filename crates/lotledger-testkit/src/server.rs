//! A `lotledger serve` process for tests, and a minimal HTTP/1.1 client over a plain socket
//! (enough for the API's answers; no client library to trust instead of the server).

use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::scenario::body_value;

/// A running `lotledger … serve --listen 127.0.0.1:0`; killed when dropped.
pub struct ServerProcess {
    pub child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProcess {
    /// Starts `bin` with `global_args` then `serve --listen 127.0.0.1:0` and `serve_args`, and
    /// waits for the address it prints.
    pub fn start(bin: &Path, global_args: &[&str], serve_args: &[&str]) -> Result<Self, String> {
        let mut child = Command::new(bin)
            .args(global_args)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(serve_args)
            .env_remove("LOTLEDGER_WHITELIST")
            .env_remove("LOTLEDGER_CHANNELS")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let addr = line
            .trim()
            .rsplit("http://")
            .next()
            .filter(|a| !a.is_empty() && line.contains("http://"))
            .ok_or_else(|| format!("serve printed {line:?}"))?
            .to_string();
        Ok(ServerProcess { child, addr })
    }

    /// One request; the status and the body as [`body_value`] reads it.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<(u16, Value), String> {
        request(&self.addr, method, path, headers, body)
    }
}

/// One HTTP/1.1 request with `Connection: close`.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<(u16, Value), String> {
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .map_err(|e| e.to_string())?;
    if let Some(b) = body {
        stream.write_all(b).map_err(|e| e.to_string())?;
    }
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = String::from_utf8_lossy(raw.get(..split).unwrap_or_default()).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let mut body = raw.get(split + 4..).unwrap_or_default().to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body)?;
    }
    Ok((status, body_value(&body)))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk")?;
        let size_text = String::from_utf8_lossy(data.get(..eol).unwrap_or_default()).to_string();
        let size = usize::from_str_radix(size_text.trim(), 16).map_err(|e| e.to_string())?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = data.get(eol + 2..eol + 2 + size).ok_or("truncated chunk")?;
        out.extend_from_slice(chunk);
        data = data.get(eol + 4 + size..).unwrap_or_default();
    }
}

/// One request to a router in process (no socket): the status and the body as [`body_value`]
/// reads it. A body is sent as JSON.
pub async fn call_router(
    router: &axum::Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<(axum::http::StatusCode, Value), String> {
    let (status, _, bytes) = call_router_raw(router, method, uri, headers, body).await?;
    Ok((status, body_value(&bytes)))
}

/// [`call_router`] with the answer as sent: its status, `Content-Type` and body bytes.
pub async fn call_router_raw(
    router: &axum::Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<(axum::http::StatusCode, String, Vec<u8>), String> {
    use tower::ServiceExt;
    let mut request = axum::http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(body.map_or_else(axum::body::Body::empty, axum::body::Body::from))
        .map_err(|e| e.to_string())?;
    let response = router
        .clone()
        .oneshot(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let content_type = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .map_err(|e| e.to_string())?;
    Ok((status, content_type, bytes.to_vec()))
}
