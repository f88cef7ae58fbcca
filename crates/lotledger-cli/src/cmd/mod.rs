//! The commands. Results go to stdout, logs and progress bars to stderr.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::{Context, Result};
use lotledger_core::message::{DEFAULT_CHANNEL, DEFAULT_WHITELIST};
use lotledger_core::{Rules, Timestamp};

use crate::{Cli, Command};
use lotledger_ingest::{AnyStore, redact};
use lotledger_store::Store;

pub mod explain;
pub mod import;
pub mod ingest;
pub mod maintain;
pub mod policy;
pub mod read;
pub mod serve;
pub mod sync;

pub async fn run(cli: Cli) -> Result<ExitCode> {
    let mut rules = Rules {
        whitelist: list_setting(cli.whitelist, "LOTLEDGER_WHITELIST", DEFAULT_WHITELIST),
        channels: list_setting(cli.channels, "LOTLEDGER_CHANNELS", DEFAULT_CHANNEL),
        schedule: Default::default(),
    };
    // Refuse bad arguments before touching the database.
    if let Command::Ingest(args) = &cli.command {
        args.check()?;
    }
    // Batch work without transparent huge pages (see `lotledger_alloc`): ingest, and the
    // bench's W1 child, which is ingest's path.
    let batch_work = match &cli.command {
        Command::Ingest(_) => true,
        Command::Bench(args) => args.is_w1_child(),
        _ => false,
    };
    if batch_work {
        let off = lotledger_alloc::no_huge_pages();
        tracing::debug!(transparent_huge_pages_off = off, "batch work");
    }
    // The bench creates its own stores: --database-url is not opened.
    let command = match cli.command {
        Command::Bench(args) => return Ok(lotledger_bench::run(args).await?),
        other => other,
    };
    let store = AnyStore::open(&cli.database_url)
        .await
        .with_context(|| format!("opening the store at {}", redact(&cli.database_url)))?;
    // The commands that plan messages run under the ledger's schedule (or the one given,
    // when it changes no applied message); those that write keep a change.
    let plans = match &command {
        Command::Serve(args) => Some(!args.read_only),
        Command::Ingest(_) | Command::Sync(_) | Command::ImportHistory(_) => Some(true),
        Command::Explain(_) => Some(false),
        _ => None,
    };
    if let Some(writes) = plans {
        rules.schedule = policy::in_force(&store, cli.policy.as_deref(), writes).await?;
    }
    match command {
        // Handled above, before a store is opened.
        Command::Bench(args) => Ok(lotledger_bench::run(args).await?),
        Command::Policy(args) => policy::run(&store, cli.policy.as_deref(), args).await,
        Command::Ingest(args) => ingest::run(&store, &rules, args).await,
        Command::ImportHistory(args) => import::run(&store, &rules, args).await,
        Command::Balance(args) => read::balance(&store, args).await,
        Command::History(args) => read::history(&store, args).await,
        Command::Lots(args) => read::lots(&store, args).await,
        Command::Message(args) => read::message(&store, args).await,
        Command::Repair(args) => maintain::repair(&store, args).await,
        Command::Verify(args) => maintain::verify(&store, args).await,
        Command::Serve(args) => serve::run(store, &rules, args).await,
        Command::Sync(args) => sync::run(&store, &rules, args).await,
        Command::Explain(args) => explain::run(&store, &rules, args).await,
        Command::Migrate => {
            print!("{}", migrate_report(&store.migrated()));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What `lotledger migrate` prints of what opening the store did to its schema: each
/// migration applied, then the version the schema is at.
fn migrate_report(m: &lotledger_store::Migrated) -> String {
    let mut out = String::new();
    for (version, description) in &m.applied {
        out.push_str(&format!("applied migration {version:04}: {description}\n"));
    }
    let version = m.version().map_or("none".into(), |v| format!("{v:04}"));
    out.push_str(&match (m.from, m.applied.is_empty()) {
        (_, true) => format!("schema is up to date (version {version})\n"),
        (None, false) => format!("schema created (version {version})\n"),
        (Some(from), false) => format!("schema migrated from version {from:04} to {version}\n"),
    });
    out
}

/// A comma-separated list from the flag, else from the environment (even when empty: nobody /
/// any), else the default.
fn list_setting(flag: Option<String>, env: &str, default: &str) -> BTreeSet<String> {
    let raw = flag
        .or_else(|| std::env::var(env).ok())
        .unwrap_or_else(|| default.to_string());
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `--at`/`--now` values: RFC 3339, default the current time.
/// The whole text of `file`, or of standard input for `-`.
pub fn read_input(file: &str) -> Result<String> {
    if file == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {file}"))
    }
}

pub fn instant(arg: Option<&str>) -> Result<Timestamp> {
    match arg {
        Some(text) => Timestamp::parse_rfc3339(text)
            .with_context(|| format!("invalid instant {text:?} (expected RFC 3339)")),
        None => clock_now(),
    }
}

/// The wall clock (read in one place, [`lotledger_ingest::clock_now`]).
pub fn clock_now() -> Result<Timestamp> {
    Ok(lotledger_ingest::clock_now()?)
}

pub use lotledger_ingest::progress_bar;
