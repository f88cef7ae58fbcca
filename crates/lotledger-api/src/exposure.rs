//! Facing the internet: the accept loop's connection caps (all clients, and each client by IP
//! address), the time a client may take to send a request's header and its body, and a
//! per-client request rate (a token bucket per IP address). A slow or greedy client cannot
//! hold the server's connections or time.
//!
//! The caps refuse a connection by closing it at once (counted in
//! `lotledger_connections_refused_total{reason}`); a request over the rate gets 429 with
//! `Retry-After`; a header not sent in time closes the connection, a body not sent in time
//! gets 408.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt as _;

/// The client's address, set by [`serve_with`] on every request it serves.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Default of [`Exposure::header_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`ApiConfig::body_timeout`](crate::ApiConfig::body_timeout).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`Exposure::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;

/// The accept loop's limits.
#[derive(Debug, Clone)]
pub struct Exposure {
    /// Connections open at once, all clients together.
    pub max_connections: usize,
    /// Connections open at once from one IP address; `None`: no cap.
    pub max_connections_per_client: Option<usize>,
    /// Time a client has to send a request's header (the first, and each next one on a
    /// kept-alive connection); past it the connection is closed.
    pub header_timeout: Duration,
}

impl Default for Exposure {
    fn default() -> Self {
        Exposure {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: None,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
        }
    }
}

/// Connections open per client address.
#[derive(Default)]
struct PerClient(Mutex<HashMap<IpAddr, usize>>);

/// One open connection of a client; its count goes down when dropped.
struct ClientSlot {
    clients: Arc<PerClient>,
    ip: IpAddr,
}

impl PerClient {
    fn take(clients: &Arc<PerClient>, ip: IpAddr, cap: Option<usize>) -> Option<ClientSlot> {
        let mut open = clients.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if cap.is_some_and(|cap| *n >= cap) {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            clients: Arc::clone(clients),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.clients.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Most permits one `acquire_many` may ask for (the count of open connections is waited for
/// with it at the end).
const MAX_PERMITS: usize = u32::MAX as usize;

/// Serves `app` on `listener` within `limits` until `shutdown` resolves; then stops
/// accepting, lets every connection finish the request it is in, and returns once all are
/// closed.
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    limits: Exposure,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let max = limits
        .max_connections
        .clamp(1, MAX_PERMITS.min(Semaphore::MAX_PERMITS));
    let open = Arc::new(Semaphore::new(max));
    let clients = Arc::new(PerClient::default());
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, a connection reset before accept: keep serving.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            metrics::counter!("lotledger_connections_refused_total", "reason" => "server_full")
                .increment(1);
            continue;
        };
        let Some(slot) = PerClient::take(&clients, peer.ip(), limits.max_connections_per_client)
        else {
            metrics::counter!("lotledger_connections_refused_total", "reason" => "client_full")
                .increment(1);
            tracing::debug!(%peer, "connection refused: the client's connections are at the cap");
            continue;
        };
        // Replies are small and written once: send them without waiting for Nagle's delay.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY not set: {e}");
        }
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ClientAddr(peer));
                app.clone().oneshot(request.map(Body::new))
            });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            // The value `wait_for` gives holds a lock guard: dropped before any other await.
            let stop = async {
                let _ = stopping.wait_for(|s| *s).await;
            };
            let served = tokio::select! {
                served = conn.as_mut() => served,
                () = stop => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            drop(slot);
            drop(permit);
        });
    }
    drop(listener);
    stop.send_replace(true);
    // Every connection holds a permit: all of them back means all are closed.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let _closed = open.acquire_many(all).await;
    Ok(())
}

/// Requests per second each client may send, and how many at once above that rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

/// A token bucket per client address.
#[derive(Default)]
pub(crate) struct Limiter {
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

/// Buckets kept before idle ones are dropped.
const MAX_BUCKETS: usize = 100_000;

impl Limiter {
    /// Takes a token for `ip`, or says how long until one is there.
    fn take(&self, ip: IpAddr, rate: RateLimit, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_BUCKETS {
            // Full buckets are as good as none: forget them.
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate.per_second < rate.burst
            });
        }
        let (tokens, at) = buckets.entry(ip).or_insert((rate.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * rate.per_second).min(rate.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / rate.per_second))
        }
    }
}

/// The rate limit (a request without a [`ClientAddr`], served in process, is not limited).
pub(crate) async fn limit_rate(
    State(state): State<crate::AppState>,
    request: Request,
    next: Next,
) -> Response {
    let (Some(rate), Some(ClientAddr(peer))) = (
        state.config.rate_limit,
        request.extensions().get::<ClientAddr>().copied(),
    ) else {
        return next.run(request).await;
    };
    match state.limiter.take(peer.ip(), rate, Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            metrics::counter!("lotledger_requests_limited_total").increment(1);
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, seconds.to_string())],
                axum::Json(json!({
                    "error": format!("too many requests: at most {} a second", rate.per_second)
                })),
            )
                .into_response()
        }
    }
}

/// The body of every request read within `ApiConfig::body_timeout` (408 otherwise) and
/// within the size limit (413), before any handler sees it.
pub(crate) async fn read_body_in_time(
    State(state): State<crate::AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(limit) = state.config.body_timeout else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let max = state.config.max_body_bytes;
    match tokio::time::timeout(limit, axum::body::to_bytes(body, max)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                crate::ApiError::PayloadTooLarge(max).into_response()
            } else {
                crate::ApiError::BadRequest(format!("request body not read: {e}")).into_response()
            }
        }
        Err(_) => {
            metrics::counter!("lotledger_requests_limited_total", "reason" => "body_timeout")
                .increment(1);
            (
                StatusCode::REQUEST_TIMEOUT,
                [(header::CONNECTION, "close")],
                axum::Json(json!({
                    "error": format!("the request body was not sent within {} s", limit.as_secs_f64())
                })),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let limiter = Limiter::default();
        let rate = RateLimit {
            per_second: 2.0,
            burst: 3.0,
        };
        let ip: IpAddr = [10, 0, 0, 1].into();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take(ip, rate, t0).is_ok());
        }
        let wait = limiter.take(ip, rate, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        // Another client has its own bucket.
        assert!(limiter.take([10, 0, 0, 2].into(), rate, t0).is_ok());
        // Half a second later, one token is back.
        let t1 = t0 + Duration::from_millis(500);
        assert!(limiter.take(ip, rate, t1).is_ok());
        assert!(limiter.take(ip, rate, t1).is_err());
    }
}
