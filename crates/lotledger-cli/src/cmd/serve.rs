//! `lotledger serve`: the HTTP API on the chosen store, with Prometheus metrics, until SIGINT or
//! SIGTERM (requests in flight finish; an accepted message is committed before its reply).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use lotledger_api::ApiConfig;
use lotledger_core::Rules;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::store::AnyStore;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port; the address is printed on stdout).
    #[arg(long, env = "LOTLEDGER_LISTEN", default_value = "127.0.0.1:4024")]
    listen: SocketAddr,
    /// Let requests set the instant they are served at (`X-Lotledger-Now: <RFC 3339>` header,
    /// or `PUT /api/v0/test/clock`). For tests and demos only.
    #[arg(long)]
    test_clock: bool,
    /// Request bodies above this many bytes get 413.
    #[arg(long, default_value_t = lotledger_api::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
}

/// Latency buckets in seconds, for the request histogram.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

pub async fn run(store: AnyStore, rules: &Rules, args: Args) -> Result<ExitCode> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("lotledger_http_request_duration_seconds".into()),
            &LATENCY_BUCKETS,
        )
        .context("configuring metrics")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    let mut config = ApiConfig::new(rules.clone());
    config.test_clock = args.test_clock;
    config.max_body_bytes = args.max_body_bytes;
    config.metrics = Some(Arc::new(move || handle.render()));
    if args.test_clock {
        tracing::warn!("test clock enabled: clients may choose the instant of their requests");
    }
    // Signal handlers are installed before the address is announced, so that a SIGTERM sent as
    // soon as the server is up is a graceful stop, not the default kill.
    let shutdown = shutdown_signal()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let local = listener.local_addr().context("reading the bound address")?;
    println!("lotledger listening on http://{local}");
    tracing::info!(%local, "listening");
    let app = lotledger_api::router(Arc::new(store), config);
    lotledger_api::serve(listener, app, shutdown)
        .await
        .context("serving HTTP")?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM; the handlers are registered when this is called.
#[cfg(unix)]
fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
