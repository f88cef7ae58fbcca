//! `lotledger sync --from URL`: follows another node (the reference or another lotledger) into
//! this ledger (`lotledger_sync`): catches up with a progress bar, then, with `--follow`, polls
//! every `--interval` seconds until SIGINT or SIGTERM. `serve --follow URL` runs the same loop
//! inside a server.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use lotledger_core::Rules;
use lotledger_ingest::AnyStore;
use lotledger_sync::{Event, Options, Summary};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The node to follow: its base URL (`https://api2.aleph.im`, `http://127.0.0.1:4024`).
    #[arg(long)]
    from: String,
    /// Keep polling once caught up, until SIGINT or SIGTERM.
    #[arg(long)]
    follow: bool,
    #[command(flatten)]
    tuning: Tuning,
}

/// How often and how far back a sync reads (shared with `serve --follow`).
#[derive(clap::Args, Debug, Clone)]
pub struct Tuning {
    /// Seconds between two polls when following.
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    interval: f64,
    /// Seconds before its position each poll starts reading again: messages become visible
    /// on a node late (network delay, pending retries, on-chain batches).
    #[arg(long, default_value_t = 3600.0, value_parser = seconds)]
    lookback: f64,
    /// Messages asked per page (cursor mode: 200 at most).
    #[arg(long, default_value_t = lotledger_sync::MAX_PAGE,
          value_parser = clap::value_parser!(u32).range(1..=200))]
    page_size: u32,
    /// Seconds one request to the source may take.
    #[arg(long, default_value_t = 30.0, value_parser = seconds)]
    request_timeout: f64,
}

fn seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=1e9).contains(&s) => Ok(s),
        _ => Err("expected seconds, at least 0".to_string()),
    }
}

/// The sync options of `from` with `tuning`, on the channels of `rules`.
pub fn options(from: &str, follow: bool, tuning: &Tuning, rules: &Rules) -> Result<Options> {
    if !(from.starts_with("http://") || from.starts_with("https://")) {
        bail!("--from must be an http:// or https:// URL, not {from:?}");
    }
    let mut opts = Options::new(from, rules.channels.iter().cloned().collect());
    opts.follow = follow;
    opts.interval = Duration::from_secs_f64(tuning.interval);
    opts.lookback = Duration::from_secs_f64(tuning.lookback);
    opts.page_size = tuning.page_size;
    opts.request_timeout = Duration::from_secs_f64(tuning.request_timeout.max(0.001));
    // Following rides out an outage of the source; a one-shot sync gives up after a few tries.
    opts.max_attempts = if follow { None } else { Some(8) };
    Ok(opts)
}

/// The sync loop's clock: the wall clock.
pub fn now() -> Result<lotledger_core::Timestamp, lotledger_sync::SyncError> {
    lotledger_ingest::clock_now()
        .map_err(|e| lotledger_sync::SyncError::Options(format!("reading the clock: {e}")))
}

pub async fn run(store: &AnyStore, rules: &Rules, args: Args) -> Result<ExitCode> {
    let opts = options(&args.from, args.follow, &args.tuning, rules)?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let signal = super::serve::shutdown_signal()?;
    tokio::spawn(async move {
        signal.await;
        stop.send_replace(true);
    });
    let bar = super::progress_bar(0, "sync");
    let mut caught_up = false;
    let on_event = |event: Event| match event {
        Event::Expect(total) => bar.set_length(total),
        Event::Read(n) => bar.inc(n),
        Event::CaughtUp => {
            if !caught_up {
                caught_up = true;
                bar.finish_and_clear();
                tracing::info!("caught up with the source");
            }
        }
    };
    let summary = lotledger_sync::run(store, rules, &opts, now, on_event, Some(stop_rx))
        .await
        .with_context(|| format!("syncing from {}", opts.from))?;
    bar.finish_and_clear();
    println!("{}", describe(&summary));
    Ok(ExitCode::SUCCESS)
}

fn describe(s: &Summary) -> String {
    format!(
        "read {} messages in {} pages: {} processed, {} ignored, {} already applied, \
         {} rejected here, {} failed verification",
        s.read, s.pages, s.processed, s.ignored, s.already_applied, s.rejected, s.refused
    )
}
