//! The Prometheus exporter behind `/metrics`: its histogram buckets, and the upkeep that keeps
//! its memory bounded.
//!
//! The exporter keeps every histogram sample until it is folded into the buckets, which happens
//! on a render (a scrape) or on an upkeep. A server that nobody scrapes must therefore run the
//! upkeep itself, or it grows by every request it answers ([`run_upkeep`]).

use std::time::Duration;

use metrics_exporter_prometheus::{
    BuildError, Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// The request latency histogram, in seconds, by `method`, `route` and `status`.
pub const REQUEST_DURATION: &str = "lotledger_http_request_duration_seconds";

/// Balance reads by where their answer came from (`source`: `kept`, sums kept since the
/// address's last write; `written`, the lots this server's last write of the address left;
/// `summed`, the address's lots summed by PostgreSQL; `plain`, the plain `SUM`, for sums past
/// 64 bits). PostgreSQL only: set from the store's counts at each scrape.
pub const BALANCE_READS: &str = "lotledger_balance_reads_total";
/// Credits that expire within `within` (`24h`, `7d`) of now, refreshed every minute.
pub const CREDITS_EXPIRING: &str = "lotledger_credits_expiring";
/// On a PostgreSQL hot standby: seconds since the newest transaction it replayed committed on
/// the primary (0 when it has replayed all it received).
pub const REPLICA_LAG_SECONDS: &str = "lotledger_replica_lag_seconds";
/// On a PostgreSQL hot standby: WAL bytes received from the primary, not yet replayed.
pub const REPLICA_LAG_BYTES: &str = "lotledger_replica_lag_bytes";

/// Latency buckets in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// How often a server folds histogram samples into their buckets when nobody scrapes it.
pub const DEFAULT_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// A recorder with lotledger's buckets, not yet installed, and the handle that renders it.
pub fn recorder() -> Result<(PrometheusRecorder, PrometheusHandle), BuildError> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), &LATENCY_BUCKETS)?
        .build_recorder();
    let handle = recorder.handle();
    Ok((recorder, handle))
}

/// Runs the exporter's upkeep every `interval`, forever (spawn it next to the server).
pub async fn run_upkeep(handle: PrometheusHandle, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        handle.run_upkeep();
    }
}

/// The `method` label: the standard methods by name, anything else as `other` (a client may
/// send any token as a method; a label must not take unbounded values).
pub(crate) fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}
