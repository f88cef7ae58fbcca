//! The HTTP API of lotledger: the Aleph node's message intake (`POST /api/v0/messages`) and its
//! credit read endpoints, with pyaleph's paths, parameters, status codes and JSON bodies
//! (SPEC Part I 4–5, Part II 4).
//!
//! **Boundary:** the only crate that knows HTTP. Handlers parse and validate the request, call
//! the store through [`Backend`], and shape the reply; the DTOs here are not core types.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use lotledger_core::node_json::StoredEnvelope;
use lotledger_core::{Rules, Timestamp};

/// The router type [`router`] returns.
pub use axum::Router;

mod accounts;
mod backend;
mod clock;
mod dry_run;
pub use dry_run::DryRunReply;
mod error;
mod expirations;
pub mod exposure;
mod intake;
mod message_list;
mod messages;
pub mod openapi;
mod params;
pub mod telemetry;
mod websocket;

pub use backend::Backend;
pub use clock::{NOW_HEADER, wall_clock_now};
pub use error::ApiError;
pub use exposure::{ClientAddr, Exposure, RateLimit, serve_with};

/// Default cap on a request body (the node's messages are far smaller).
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Default of [`ApiConfig::max_websockets`] (the reference's limit per worker).
pub const DEFAULT_MAX_WEBSOCKETS: usize = 10_000;
/// Pushes a websocket subscriber may fall behind by before it is closed.
const LIVE_BACKLOG: usize = 4096;
/// Default of [`ApiConfig::intake_batch`].
pub const DEFAULT_INTAKE_BATCH: usize = 1000;

/// How the API behaves.
#[derive(Clone)]
pub struct ApiConfig {
    /// Credit rules: whitelist and channels.
    pub rules: Rules,
    /// Lets a request choose the instant it reads and writes at (`X-Lotledger-Now`), and
    /// enables `PUT /api/v0/test/clock`. Off in normal mode, where both are refused.
    pub test_clock: bool,
    /// Bodies above this get 413.
    pub max_body_bytes: usize,
    /// Renders the Prometheus text for `/metrics` (the exporter lives in the binary).
    pub metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    /// Most messages one transaction of `POST /api/v0/messages` commits together (group
    /// commit: the messages that arrive while a batch commits share the next one); 1: one
    /// transaction per message.
    pub intake_batch: usize,
    /// Turns `true` when the server begins to stop: websocket sessions close then (a server
    /// without it closes them only when their clients go).
    pub closing: Option<tokio::sync::watch::Receiver<bool>>,
    /// Most websocket connections open at once; past it a new one is closed with 1013.
    pub max_websockets: usize,
    /// Serve reads only (a replica): `POST /api/v0/messages` gets 503 naming the writable
    /// node (`Some(Some(url))`) when it is known.
    pub read_only: Option<Option<String>>,
    /// Requests a second each client (IP address) may send; `None`: no limit.
    pub rate_limit: Option<RateLimit>,
    /// Time a client has to send a request's body once its header is in (408 past it);
    /// `None`: no limit.
    pub body_timeout: Option<Duration>,
}

impl ApiConfig {
    pub fn new(rules: Rules) -> ApiConfig {
        ApiConfig {
            rules,
            test_clock: false,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            metrics: None,
            intake_batch: DEFAULT_INTAKE_BATCH,
            closing: None,
            max_websockets: DEFAULT_MAX_WEBSOCKETS,
            read_only: None,
            rate_limit: None,
            body_timeout: Some(exposure::DEFAULT_BODY_TIMEOUT),
        }
    }
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub(crate) store: Arc<dyn Backend>,
    pub(crate) config: Arc<ApiConfig>,
    pub(crate) clock: Arc<clock::TestClock>,
    /// The group-commit queue of message intake, started by the first POST (on the runtime
    /// that serves it).
    pub(crate) intake: Arc<std::sync::OnceLock<intake::Intake>>,
    /// Each message this server newly processes, for the websocket's live pushes.
    pub(crate) live: tokio::sync::broadcast::Sender<Arc<StoredEnvelope>>,
    /// The websocket connections still allowed.
    pub(crate) websocket_slots: Arc<tokio::sync::Semaphore>,
    /// Each client's request budget ([`ApiConfig::rate_limit`]).
    pub(crate) limiter: Arc<exposure::Limiter>,
}

/// The API's router over a store.
pub fn router(store: Arc<dyn Backend>, config: ApiConfig) -> Router {
    let limit = config.max_body_bytes;
    let websockets = config
        .max_websockets
        .min(tokio::sync::Semaphore::MAX_PERMITS);
    let state = AppState {
        store,
        config: Arc::new(config),
        clock: Arc::new(clock::TestClock::default()),
        intake: Arc::default(),
        live: tokio::sync::broadcast::channel(LIVE_BACKLOG).0,
        websocket_slots: Arc::new(tokio::sync::Semaphore::new(websockets)),
        limiter: Arc::default(),
    };
    Router::new()
        .route(
            "/api/v0/messages",
            axum::routing::post(messages::post_message),
        )
        .route(
            "/api/v0/messages/dry_run",
            axum::routing::post(dry_run::dry_run),
        )
        .route("/api/v0/messages.json", get(message_list::list))
        .route("/api/v0/messages/page/{page}", get(message_list::list_page))
        .route(
            "/api/v0/messages/{item_hash}",
            get(messages::message_status),
        )
        .route(
            "/api/v0/messages/{item_hash}/status",
            get(messages::message_status_brief),
        )
        .route(
            "/api/v0/messages/{item_hash}/content",
            get(messages::message_content),
        )
        .route(
            "/api/v0/messages/{item_hash}/consumed_credits",
            get(messages::consumed_credits),
        )
        .route(
            "/api/v0/addresses/{address}/balance",
            get(accounts::balance),
        )
        .route(
            "/api/v0/addresses/{address}/credit_history",
            get(accounts::credit_history),
        )
        .route(
            "/api/v0/addresses/{address}/credit_history/summary",
            get(accounts::credit_history_summary),
        )
        .route("/api/v0/credit_balances", get(accounts::credit_balances))
        .route("/api/v0/costs", get(accounts::costs))
        .route(
            "/api/v0/addresses/{address}/credit_expirations",
            get(expirations::of_address),
        )
        .route("/api/v0/credit_expirations", get(expirations::of_holders))
        .route(
            "/api/v0/addresses/{address}/credit_lots",
            get(expirations::lots_of_address),
        )
        .route("/api/v0/test/clock", axum::routing::put(clock::set_clock))
        .route("/api/ws0/messages", get(websocket::messages))
        .route("/api/v0/openapi.json", get(openapi::serve))
        .route("/metrics", get(metrics_text))
        .fallback(error::not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            exposure::read_body_in_time,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            exposure::limit_rate,
        ))
        .layer(middleware::from_fn(observe))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Runs the API on a bound listener until `shutdown` resolves, with the default connection
/// limits ([`serve_with`]); requests in flight finish (an accepted message is committed
/// before its reply is written).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, app, Exposure::default(), shutdown).await
}

async fn metrics_text(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<Response, ApiError> {
    let render = state
        .config
        .metrics
        .as_ref()
        .ok_or(ApiError::NotFound("metrics are not enabled".into()))?;
    Ok(Response::builder()
        .header("content-type", "text/plain; version=0.0.4")
        .body(axum::body::Body::from(render()))
        .unwrap_or_default())
}

/// Request latency by method, route and status, and a log line per request. Every label takes
/// a bounded set of values: a standard method or `other`, a route pattern (never a raw path,
/// an address or a hash) or `unmatched`, a status code.
async fn observe(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = telemetry::method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    let elapsed: Duration = started.elapsed();
    let status = response.status().as_u16().to_string();
    metrics::histogram!(
        telemetry::REQUEST_DURATION,
        "method" => method,
        "route" => route.clone(),
        "status" => status.clone(),
    )
    .record(elapsed.as_secs_f64());
    tracing::debug!(%method, %route, %status, elapsed_us = elapsed.as_micros() as u64, "request");
    response
}

/// The instant the test clock fixes for a request, or `None` (the wall clock).
pub(crate) fn request_instant(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<Option<Timestamp>, ApiError> {
    state.clock.explicit(state.config.test_clock, headers)
}

/// The instant a request is served at.
pub(crate) fn request_now(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<Timestamp, ApiError> {
    state.clock.now(state.config.test_clock, headers)
}

/// Reads a query string with every parameter parser of the read endpoints (for the fuzz
/// targets and their property tests): `Ok` when the credit-history endpoint would accept it.
#[doc(hidden)]
pub fn parse_history_query(query: &str) -> Result<(), ApiError> {
    let mut p = params::Params::from_query(Some(query));
    p.int("pagination", Some(0));
    p.int("page", Some(1));
    p.int("min_balance", Some(1));
    p.bool("include_credit_details");
    p.history_filter();
    if let Some(cursor) = p.string("cursor").filter(|c| !c.is_empty()) {
        lotledger_core::cursor::HistoryCursor::decode(&cursor)
            .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    }
    p.finish()
}
