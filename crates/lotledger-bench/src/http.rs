//! A small keep-alive HTTP/1.1 load client on tokio sockets: `connections` concurrent
//! connections send requests (prepared bytes: [`get`], [`post_json`]) until `max_requests` are
//! sent or `max_time` is up, each reading its response by `Content-Length` before sending the
//! next.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Longest response header section accepted.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Largest response body accepted.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// What a load run measured.
#[derive(Debug, Default)]
pub struct Load {
    /// Latency of each completed request, in nanoseconds.
    pub latencies_nanos: Vec<u64>,
    /// Responses with a status other than 200.
    pub non_ok: u64,
    /// Connections that failed (connect, read or write errors, malformed responses).
    pub failed_connections: u64,
    pub elapsed: Duration,
}

/// A GET of `path`, as request bytes.
pub fn get(addr: SocketAddr, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes()
}

/// A POST of a JSON `body` to `path`, as request bytes.
pub fn post_json(addr: SocketAddr, path: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// Serves `app` on a loopback port for the time of a [`load`] of the requests `requests`
/// builds for that address, then stops it.
pub async fn load_router(
    app: lotledger_api::Router,
    requests: impl FnOnce(SocketAddr) -> Vec<Vec<u8>>,
    connections: usize,
    max_requests: u64,
    max_time: Duration,
    progress: indicatif::ProgressBar,
) -> Result<Load> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding a loopback port")?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(lotledger_api::serve(listener, app, async move {
        let _ = stopped.await;
    }));
    let result = load(
        addr,
        requests(addr),
        connections,
        max_requests,
        max_time,
        progress,
    )
    .await;
    let _ = stop.send(());
    match served.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("bench HTTP server: {e}"),
        Err(e) => tracing::warn!("bench HTTP server task: {e}"),
    }
    result
}

/// Sends `requests` (round robin: request `i` is `requests[i % len]`) to `addr`.
pub async fn load(
    addr: SocketAddr,
    requests: Vec<Vec<u8>>,
    connections: usize,
    max_requests: u64,
    max_time: Duration,
    progress: indicatif::ProgressBar,
) -> Result<Load> {
    if requests.is_empty() {
        bail!("no requests to send");
    }
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections.max(1) {
        let requests = requests.clone();
        let next = next.clone();
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            connection(
                addr,
                &requests,
                &next,
                max_requests,
                started,
                max_time,
                &progress,
            )
            .await
        }));
    }
    let mut out = Load::default();
    for task in tasks {
        let (latencies, non_ok, result) = task.await.context("a client task panicked")?;
        out.latencies_nanos.extend(latencies);
        out.non_ok += non_ok;
        if let Err(e) = result {
            tracing::warn!("bench HTTP connection failed: {e:#}");
            out.failed_connections += 1;
        }
    }
    out.elapsed = started.elapsed();
    Ok(out)
}

async fn connection(
    addr: SocketAddr,
    requests: &[Vec<u8>],
    next: &AtomicU64,
    max_requests: u64,
    started: Instant,
    max_time: Duration,
    progress: &indicatif::ProgressBar,
) -> (Vec<u64>, u64, Result<()>) {
    let mut latencies = Vec::new();
    let mut non_ok = 0;
    let result = async {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        let mut body = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= max_requests || started.elapsed() >= max_time {
                return Ok(());
            }
            let request = requests
                .get((i % requests.len() as u64) as usize)
                .context("no request")?;
            let sent = Instant::now();
            write.write_all(request).await?;
            let status = read_response(&mut read, &mut body).await?;
            latencies.push(u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX));
            if status != 200 {
                non_ok += 1;
            }
            progress.inc(1);
        }
    }
    .await;
    (latencies, non_ok, result)
}

/// Reads one response (status line, headers, `Content-Length` body); returns the status.
async fn read_response<R: tokio::io::AsyncBufRead + Unpin>(
    read: &mut R,
    body: &mut Vec<u8>,
) -> Result<u16> {
    let mut line = String::new();
    let mut header_bytes = 0;
    read.read_line(&mut line).await?;
    if line.is_empty() {
        bail!("the server closed the connection");
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {line:?}"))?;
    let mut length: Option<usize> = None;
    loop {
        line.clear();
        let n = read.read_line(&mut line).await?;
        header_bytes += n;
        if n == 0 || header_bytes > MAX_HEADER_BYTES {
            bail!("truncated or oversized response headers");
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = Some(value.trim().parse().context("bad Content-Length")?);
        }
    }
    let length = length.context("a response without Content-Length")?;
    if length > MAX_BODY_BYTES {
        bail!("response body of {length} bytes");
    }
    body.resize(length, 0);
    read.read_exact(body).await?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[tokio::test]
    async fn reads_responses_by_content_length() {
        let data: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx: y\r\n\r\nhelloHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        let mut read = tokio::io::BufReader::new(data);
        let mut body = Vec::new();
        assert_eq!(
            super::read_response(&mut read, &mut body).await.unwrap(),
            200
        );
        assert_eq!(body, b"hello");
        assert_eq!(
            super::read_response(&mut read, &mut body).await.unwrap(),
            404
        );
        assert!(body.is_empty());
        assert!(super::read_response(&mut read, &mut body).await.is_err());
    }
}
