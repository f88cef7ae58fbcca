//! `lotledger serve`: the HTTP API on the chosen store, with Prometheus metrics, until SIGINT or
//! SIGTERM (requests in flight finish; an accepted message is committed before its reply).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use lotledger_api::ApiConfig;
use lotledger_api::telemetry;
use lotledger_core::Rules;

use lotledger_ingest::AnyStore;
use lotledger_store::Store as _;

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
    /// Seconds between two foldings of the latency samples into their histogram buckets (a
    /// scrape of /metrics does it too); bounds the memory of a server nobody scrapes.
    #[arg(long, default_value_t = telemetry::DEFAULT_UPKEEP_INTERVAL.as_secs_f64(),
          value_parser = upkeep_interval)]
    metrics_upkeep_secs: f64,
    /// Most messages one transaction of `POST /api/v0/messages` commits (group commit: the
    /// messages that arrive while a batch commits share the next transaction, and each is
    /// answered once it is committed); 1: one transaction per message.
    #[arg(long, default_value_t = lotledger_api::DEFAULT_INTAKE_BATCH as u64,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    intake_batch: u64,
    /// Most websocket connections (`/api/ws0/messages`) open at once; a connection past it is
    /// closed with code 1013.
    #[arg(long, default_value_t = lotledger_api::DEFAULT_MAX_WEBSOCKETS)]
    max_websockets: usize,
    /// Follow this node while serving (as `lotledger sync --follow --from URL`); the sync's
    /// lag and outcomes are in /metrics.
    #[arg(long, value_name = "URL", conflicts_with = "read_only")]
    follow: Option<String>,
    /// Serve reads only (a replica, e.g. on a PostgreSQL hot standby):
    /// `POST /api/v0/messages` gets 503 naming the writable node. On a standby, /metrics
    /// reports how far it is behind its primary.
    #[arg(long)]
    pub(crate) read_only: bool,
    /// The writable node that a read-only server names to clients that send it writes.
    #[arg(long, value_name = "URL", requires = "read_only")]
    writable_node: Option<String>,
    #[command(flatten)]
    follow_tuning: super::sync::Tuning,
    #[command(flatten)]
    exposure: ExposureArgs,
}

/// What a node facing the internet limits. The per-client limits are off by default when
/// listening on a loopback address (a local proxy or test in front), on otherwise.
#[derive(clap::Args, Debug)]
pub struct ExposureArgs {
    /// Requests a second one client (IP address) may send (0: no limit). Default: 100, or
    /// none on a loopback address.
    #[arg(long, value_parser = seconds_or_rate)]
    rate_limit: Option<f64>,
    /// Requests one client may send at once above its rate. Default: twice the rate.
    #[arg(long, value_parser = seconds_or_rate)]
    rate_burst: Option<f64>,
    /// Connections one client may hold open at once (0: no cap). Default: 256, or none on a
    /// loopback address.
    #[arg(long)]
    max_connections_per_client: Option<usize>,
    /// Connections open at once, all clients together.
    #[arg(long, default_value_t = lotledger_api::exposure::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Seconds a client has to send a request's header; then its connection is closed.
    #[arg(long, default_value_t = lotledger_api::exposure::DEFAULT_HEADER_TIMEOUT.as_secs_f64(),
          value_parser = timeout_seconds)]
    header_timeout: f64,
    /// Seconds a client has to send a request's body; then it gets 408.
    #[arg(long, default_value_t = lotledger_api::exposure::DEFAULT_BODY_TIMEOUT.as_secs_f64(),
          value_parser = timeout_seconds)]
    body_timeout: f64,
}

fn seconds_or_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err("expected a number, at least 0".to_string()),
    }
}

fn timeout_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() && (0.001..=86_400.0).contains(&x) => Ok(x),
        _ => Err("expected seconds between 0.001 and 86400".to_string()),
    }
}

impl ExposureArgs {
    /// The limits of a server listening on `listen`.
    fn apply(&self, listen: SocketAddr, config: &mut ApiConfig) -> lotledger_api::Exposure {
        let public = !listen.ip().is_loopback();
        let rate = self.rate_limit.unwrap_or(if public { 100.0 } else { 0.0 });
        config.rate_limit = (rate > 0.0).then(|| lotledger_api::RateLimit {
            per_second: rate,
            burst: self.rate_burst.unwrap_or(2.0 * rate).max(1.0),
        });
        config.body_timeout = Some(Duration::from_secs_f64(self.body_timeout));
        let per_client = self
            .max_connections_per_client
            .unwrap_or(if public { 256 } else { 0 });
        let exposure = lotledger_api::Exposure {
            max_connections: self.max_connections.max(1),
            max_connections_per_client: (per_client > 0).then_some(per_client),
            header_timeout: Duration::from_secs_f64(self.header_timeout),
        };
        tracing::info!(
            rate_limit = ?config.rate_limit,
            max_connections = exposure.max_connections,
            max_connections_per_client = ?exposure.max_connections_per_client,
            header_timeout_s = self.header_timeout,
            body_timeout_s = self.body_timeout,
            "limits"
        );
        exposure
    }
}

fn upkeep_interval(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if (0.01..=3600.0).contains(&s) => Ok(s),
        _ => Err("expected seconds between 0.01 and 3600".to_string()),
    }
}

/// How often the expiring-credits gauges are refreshed.
const EXPIRING_REFRESH: Duration = Duration::from_secs(60);

pub async fn run(store: AnyStore, rules: &Rules, args: Args) -> Result<ExitCode> {
    let (recorder, handle) = telemetry::recorder().context("configuring metrics")?;
    metrics::set_global_recorder(recorder).context("installing the metrics recorder")?;
    // Nobody may scrape /metrics: fold the latency samples on a schedule, or they pile up.
    tokio::spawn(telemetry::run_upkeep(
        handle.clone(),
        Duration::from_secs_f64(args.metrics_upkeep_secs),
    ));
    let mut config = ApiConfig::new(rules.clone());
    config.test_clock = args.test_clock;
    config.max_body_bytes = args.max_body_bytes;
    config.intake_batch = usize::try_from(args.intake_batch).context("--intake-batch")?;
    config.max_websockets = args.max_websockets;
    if args.read_only {
        config.read_only = Some(args.writable_node.clone());
    }
    let (closing, closing_rx) = tokio::sync::watch::channel(false);
    let closing_rx_for_sync = closing_rx.clone();
    config.closing = Some(closing_rx);
    let store = Arc::new(store);
    let counted = Arc::clone(&store);
    config.metrics = Some(Arc::new(move || {
        if let Some(counts) = counted.balance_cache_counts() {
            for (source, n) in [
                ("kept", counts.hits),
                ("written", counts.written),
                ("summed", counts.misses),
                ("plain", counts.plain),
            ] {
                metrics::counter!(telemetry::BALANCE_READS, "source" => source).absolute(n);
            }
        }
        handle.render()
    }));
    if args.test_clock {
        tracing::warn!("test clock enabled: clients may choose the instant of their requests");
    }
    // Credits expiring within a day and a week, read on a schedule (a full pass over the lots:
    // never per request).
    let expiring = Arc::clone(&store);
    tokio::spawn(async move {
        loop {
            if let Ok(now) = super::clock_now() {
                for (within, seconds) in [("24h", 86_400_i64), ("7d", 7 * 86_400)] {
                    let before = lotledger_core::Timestamp::from_micros(
                        now.as_micros().saturating_add(seconds * 1_000_000),
                    );
                    let Ok(before) = before else { continue };
                    match expiring.expiring_total(now, before).await {
                        Ok((credits, _)) => {
                            metrics::gauge!(telemetry::CREDITS_EXPIRING, "within" => within)
                                .set(credits.0 as f64);
                        }
                        Err(e) => tracing::warn!("expiring credits not read: {e}"),
                    }
                }
            }
            tokio::time::sleep(EXPIRING_REFRESH).await;
        }
    });
    if store
        .replica_lag()
        .await
        .context("reading the replication state")?
        .is_some()
    {
        if !args.read_only {
            tracing::warn!(
                "the database is a read-only standby: writes will fail; use --read-only"
            );
        }
        // A standby's lag, read on a schedule (a scrape must not wait on the database).
        let standby = Arc::clone(&store);
        let every = Duration::from_secs_f64(args.metrics_upkeep_secs);
        tokio::spawn(async move {
            loop {
                match standby.replica_lag().await {
                    Ok(Some(lag)) => {
                        metrics::gauge!(telemetry::REPLICA_LAG_SECONDS).set(lag.seconds);
                        metrics::gauge!(telemetry::REPLICA_LAG_BYTES).set(lag.bytes);
                    }
                    Ok(None) => tracing::info!("the standby was promoted: no replication lag"),
                    Err(e) => tracing::warn!("replication lag not read: {e}"),
                }
                tokio::time::sleep(every).await;
            }
        });
    }
    // Signal handlers are installed before the address is announced, so that a SIGTERM sent as
    // soon as the server is up is a graceful stop, not the default kill.
    let signal = shutdown_signal()?;
    // Open websockets would hold a graceful stop forever: they are told to close first.
    let shutdown = async move {
        signal.await;
        closing.send_replace(true);
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let local = listener.local_addr().context("reading the bound address")?;
    println!("lotledger listening on http://{local}");
    tracing::info!(%local, "listening");
    if let Some(from) = &args.follow {
        let opts = super::sync::options(from, true, &args.follow_tuning, rules)?;
        let store = Arc::clone(&store);
        let rules = rules.clone();
        let stop = closing_rx_for_sync;
        tokio::spawn(async move {
            match lotledger_sync::run(&*store, &rules, &opts, super::sync::now, |_| {}, Some(stop))
                .await
            {
                Ok(summary) => tracing::info!(?summary, "following stopped"),
                Err(e) => tracing::error!(from = %opts.from, "following stopped: {e}"),
            }
        });
    }
    let exposure = args.exposure.apply(args.listen, &mut config);
    let app = lotledger_api::router(store, config);
    lotledger_api::serve_with(listener, app, exposure, shutdown)
        .await
        .context("serving HTTP")?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM; the handlers are registered when this is called.
#[cfg(unix)]
pub fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static> {
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
pub fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
