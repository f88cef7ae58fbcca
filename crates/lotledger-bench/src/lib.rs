//! `lotledger bench` (the binary keeps the subcommand; the workloads live here): generated workloads on fresh stores, one table on stdout, figures in JSON.
//!
//! Per store, on one fresh store, in this order:
//! - **W1 ingest** in a child process (`lotledger bench --child-w1-url …`), so its peak RSS is
//!   W1's alone: the generated lines, written to a message file first (not timed), read back
//!   as `lotledger ingest FILE` reads them ([`ingest::FileLines`], its progress recorded with
//!   each batch) through [`ingest_lines`] (JSON → envelope → batch → `Store::apply_batch`,
//!   where the content is classified), trusted (no signatures);
//! - **W2 hot account**: one address's lots, then expenses draining them, same path;
//! - **W3 reads**: `Store::balance` / `balance_details` latencies at 1, 100 and 1 000 live lots,
//!   and HTTP `GET …/balance` through the real router on loopback;
//! - **Size** of the tables on disk;
//! - **W4**: W1's history copied (suffixed addresses and refs, `Store::import_history`) until
//!   the ledger holds ≥ 1 000 000 × scale rows, then `repair`, `verify` and the integrity
//!   checks of `verify --integrity` are timed.
//!
//! `--baseline` then runs W1 and W2 at a tenth of their size with `--batch 1` on another fresh
//! store. The generator's model predicts the row and lot counts; a mismatch fails the bench.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lotledger_core::{HistoryRow, Rules, Timestamp};
use lotledger_ingest::{self as ingest, AnyStore, Summary, ingest_lines, progress_bar, redact};
use lotledger_store::batch::AheadCounters;
use lotledger_store::{HistorySelector, Store, TableCounts, maintenance};
use serde_json::{Value, json};

#[macro_use]
mod error;
mod db;
mod generator;
mod http;
mod memory;
mod report;
mod sys;

pub use error::BenchError;
use error::{Context, Result};

use generator::{Expected, Keys, W1, W2, W3, W3_SCATTER, count};
use report::{Figures, Unit};

/// Rows W4 aims for at scale 1.
const W4_TARGET_ROWS: u64 = 1_000_000;
/// Addresses whose history W4 reads (and copies) at a time.
const W4_ADDRESS_CHUNK: usize = 500;
/// Rows per `import_history` call in W4.
const W4_IMPORT_ROWS: usize = 5000;
/// Store calls per W3 address and method, at scale 1.
const W3_CALLS: u64 = 2000;
/// As-of reads of W3's long history, at scale 1.
const W3_AS_OF_CALLS: u64 = 200;
/// Unmeasured calls before each W3 series.
const W3_WARMUP_CALLS: u64 = 10;
/// HTTP requests at scale 1, the time bound, and the client's connections.
const HTTP_REQUESTS: u64 = 20_000;
const HTTP_MAX_TIME: Duration = Duration::from_secs(10);
const HTTP_CONNECTIONS: usize = 32;
/// W6: signed messages posted (before scaling), and concurrent clients.
const W6_MESSAGES: u64 = 20_000;
const W6_CONNECTIONS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreChoice {
    Sqlite,
    Postgres,
    Both,
}

/// A workload `--only` may select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    W1,
    W2,
    W3,
    W4,
    W5,
    W6,
    Size,
}

/// The selected workloads (none selected: all). W4 copies W1's history, so it runs W1 too.
#[derive(Debug, Clone)]
struct Only(Vec<Workload>);

impl Only {
    fn has(&self, w: Workload) -> bool {
        self.0.is_empty() || self.0.contains(&w)
    }
    fn w1(&self) -> bool {
        self.has(Workload::W1) || self.has(Workload::W4)
    }
    fn w2(&self) -> bool {
        self.has(Workload::W2)
    }
    fn w3(&self) -> bool {
        self.has(Workload::W3)
    }
    fn w4(&self) -> bool {
        self.has(Workload::W4)
    }
    fn size(&self) -> bool {
        self.has(Workload::Size)
    }
    fn w5(&self) -> bool {
        self.has(Workload::W5)
    }
    fn w6(&self) -> bool {
        self.has(Workload::W6)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

impl StoreKind {
    fn name(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Which stores to measure, each on a fresh store (SQLite: a file in a temporary
    /// directory; PostgreSQL: a new database on --pg-url, dropped afterwards).
    #[arg(long, value_enum, default_value = "sqlite")]
    store: StoreChoice,
    /// Multiplies every workload's counts (at least 1 each); W4 aims for 1 000 000 × scale rows.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Seed of the generated workloads (same seed, same messages).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Messages per transaction on the ingest path (as `ingest --batch`).
    #[arg(long, default_value_t = ingest::DEFAULT_BATCH,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    batch: u64,
    /// Also run W1 and W2 at 1/10 of their size with --batch 1 on another fresh store, and
    /// print batched/baseline.
    #[arg(long)]
    baseline: bool,
    /// Run only these workloads (comma-separated; w4 runs w1 too, for its history).
    /// Default: all.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Workload>,
    /// Write every figure, the machine and the parameters to this file as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// PostgreSQL server to create the bench databases on (a URL that may CREATE DATABASE).
    /// Default: LOTLEDGER_BENCH_PG_URL, else LOTLEDGER_TEST_PG_URL.
    #[arg(long, env = "LOTLEDGER_BENCH_PG_URL")]
    pg_url: Option<String>,
    /// Internal: run W1 alone on this store and write its figures to --child-report.
    #[arg(long, hide = true, requires = "child_report")]
    child_w1_url: Option<String>,
    #[arg(long, hide = true)]
    child_report: Option<PathBuf>,
}

/// The workload parameters, shared with the W1 child.
#[derive(Debug, Clone, Copy)]
struct Params {
    scale: f64,
    seed: u64,
    batch: usize,
}

impl Args {
    /// Whether this is the W1 child (`--child-w1-url`): the ingest path alone in its process,
    /// which the binary sets up as it does `ingest`'s.
    pub fn is_w1_child(&self) -> bool {
        self.child_w1_url.is_some()
    }

    fn params(&self) -> Result<Params> {
        if !self.scale.is_finite() || self.scale <= 0.0 || self.scale > 1000.0 {
            bail!("--scale must be above 0 and at most 1000");
        }
        Ok(Params {
            scale: self.scale,
            seed: self.seed,
            batch: usize::try_from(self.batch).context("--batch is too large")?,
        })
    }
}

fn rules() -> Rules {
    Rules::default()
}

fn instant(seconds: i64) -> Result<Timestamp> {
    Ok(Timestamp::from_unix_seconds(seconds)?)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn rate(n: u64, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s > 0.0 { n as f64 / s } else { 0.0 }
}

const MIB: f64 = 1024.0 * 1024.0;

pub async fn run(args: Args) -> Result<ExitCode> {
    let params = args.params()?;
    if let (Some(url), Some(report)) = (&args.child_w1_url, &args.child_report) {
        return child_w1(url, report, params).await;
    }
    let kinds: Vec<StoreKind> = match args.store {
        StoreChoice::Sqlite => vec![StoreKind::Sqlite],
        StoreChoice::Postgres => vec![StoreKind::Postgres],
        StoreChoice::Both => vec![StoreKind::Sqlite, StoreKind::Postgres],
    };
    let pg_admin = args
        .pg_url
        .clone()
        .or_else(|| std::env::var("LOTLEDGER_TEST_PG_URL").ok())
        .filter(|u| !u.is_empty());
    if kinds.contains(&StoreKind::Postgres) && pg_admin.is_none() {
        bail!(
            "--store {} needs a PostgreSQL server: pass --pg-url postgres://USER@HOST:PORT/postgres \
             or set LOTLEDGER_BENCH_PG_URL (or LOTLEDGER_TEST_PG_URL)",
            if args.store == StoreChoice::Both {
                "both"
            } else {
                "postgres"
            }
        );
    }
    let started = Instant::now();
    let machine = sys::Machine::read();
    let mut results: Vec<(StoreKind, StoreRun)> = Vec::new();
    for kind in kinds {
        tracing::info!(store = kind.name(), "bench starting");
        let only = Only(args.only.clone());
        let run = run_store(kind, pg_admin.as_deref(), params, &only, args.baseline)
            .await
            .with_context(|| format!("bench on {}", kind.name()))?;
        results.push((kind, run));
    }
    let wall = started.elapsed();
    let table = report::table(
        &results
            .iter()
            .map(|(k, r)| (*k, &r.figures))
            .collect::<Vec<_>>(),
    );
    print!("{table}");
    let mut failures = Vec::new();
    for (kind, run) in &results {
        for note in &run.notes {
            eprintln!("note ({}): {note}", kind.name());
        }
        for f in &run.failures {
            failures.push(format!("{}: {f}", kind.name()));
        }
    }
    eprintln!("bench wall time: {:.1} s", wall.as_secs_f64());
    if let Some(path) = &args.json {
        let mut stores = serde_json::Map::new();
        for (kind, run) in &results {
            let mut figures = run.figures.to_json();
            if let Value::Object(map) = &mut figures {
                map.insert("settings".into(), run.settings.clone());
                map.insert("expected".into(), run.expected.clone());
                map.insert("notes".into(), json!(run.notes));
                map.insert("failures".into(), json!(run.failures));
            }
            stores.insert(kind.name().into(), figures);
        }
        let doc = json!({
            "machine": machine,
            "parameters": {
                "scale": params.scale,
                "seed": params.seed,
                "batch": params.batch,
                "baseline": args.baseline,
                "only": args.only,
                "trusted": true,
                "w1": {
                    "distributions": count(generator::W1_DISTRIBUTIONS, params.scale),
                    "expenses": count(generator::W1_EXPENSES, params.scale),
                    "transfers": count(generator::W1_TRANSFERS, params.scale),
                    "addresses": count(generator::W1_ADDRESSES, params.scale).max(4),
                },
                "w2": {
                    "lots": count(generator::W2_LOTS, params.scale),
                    "expenses": count(generator::W2_EXPENSES, params.scale),
                },
                "w3": {
                    "live_lots": generator::W3_LOT_COUNTS,
                    "calls": count(W3_CALLS, params.scale),
                    "http_requests": count(HTTP_REQUESTS, params.scale),
                    "http_max_seconds": HTTP_MAX_TIME.as_secs(),
                    "http_connections": HTTP_CONNECTIONS,
                },
                "w4": {"target_rows": count(W4_TARGET_ROWS, params.scale)},
            },
            "stores": stores,
            "failures": failures,
            "wall_seconds": wall.as_secs_f64(),
        });
        let text = serde_json::to_string_pretty(&doc)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        for f in &failures {
            eprintln!("check failed: {f}");
        }
        Ok(ExitCode::FAILURE)
    }
}

/// What one store's run produced.
#[derive(Default)]
struct StoreRun {
    figures: Figures,
    settings: Value,
    expected: Value,
    notes: Vec<String>,
    failures: Vec<String>,
}

impl StoreRun {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(what());
        }
    }
}

async fn run_store(
    kind: StoreKind,
    pg_admin: Option<&str>,
    params: Params,
    only: &Only,
    baseline: bool,
) -> Result<StoreRun> {
    let mut out = StoreRun::default();
    let fresh = db::Fresh::create(kind, pg_admin).await?;
    let result = workloads(&fresh, (kind, pg_admin), params, only, &mut out).await;
    let removed = fresh.remove().await;
    result?;
    removed?;
    if only.w5() || only.w6() {
        let signed = Signed::new(params)?;
        if only.w5() {
            w5_phase((kind, pg_admin), params, &signed, &mut out).await?;
        }
        if only.w6() {
            w6_phase((kind, pg_admin), params, &signed, &mut out).await?;
        }
    }
    if baseline {
        let fresh = db::Fresh::create(kind, pg_admin).await?;
        let result = baseline_run(&fresh, params, &mut out).await;
        let removed = fresh.remove().await;
        result?;
        removed?;
    }
    Ok(out)
}

/// W1 (child process), W2, W3, size, W4 on one fresh store, as selected.
async fn workloads(
    fresh: &db::Fresh,
    server: (StoreKind, Option<&str>),
    params: Params,
    only: &Only,
    out: &mut StoreRun,
) -> Result<()> {
    let url = fresh.url();
    let store = AnyStore::open(url)
        .await
        .with_context(|| format!("opening the bench store {}", redact(url)))?;
    out.settings = Value::Object(
        store
            .engine_settings()
            .await?
            .into_iter()
            .map(|(name, value)| (name, Value::String(value)))
            .collect(),
    );
    if out.settings.get("fsync").and_then(Value::as_str) == Some("off") {
        out.notes.push(
            "the PostgreSQL server runs with fsync=off: commits are not durable and faster than \
             on a production server"
                .into(),
        );
    }
    out.notes.push(
        "W1, W2 and W3 run trusted (no signature verification), as `ingest --trusted`".into(),
    );
    // The generator alone, first: W1's expectations and the instants the later workloads
    // start at.
    let mut dry = W1::new(params.seed, params.scale);
    dry.by_ref().for_each(drop);
    let mut expected = serde_json::Map::new();

    let after_w1 = if only.w1() {
        let after = w1_phase(&store, url, params, &dry, out).await?;
        limit_phase(&store, server, params, out).await?;
        after
    } else {
        store.table_counts().await?
    };
    expected.insert("w1".into(), json!(dry.expected));

    let mut w2 = W2::after(&dry, params.seed, params.scale);
    let after_w2 = if only.w2() {
        w2_phase(&store, params, &mut w2, after_w1, out).await?
    } else {
        after_w1
    };
    expected.insert("w2".into(), json!(w2.expected));

    let mut w3 = W3::after(&w2, params.seed, params.scale);
    let after_w3 = if only.w3() {
        w3_phase(&store, url, params, &mut w3, after_w2, out).await?
    } else {
        after_w2
    };
    expected.insert("w3".into(), json!(w3.expected));

    if only.size() {
        size_phase(&store, &after_w3, out).await?;
    }
    if only.w4() {
        w4(&store, params, after_w1.history_rows, out).await?;
    }
    out.expected = Value::Object(expected);
    drop(store);
    Ok(())
}

/// W1 in a child process; the store's counts after it.
async fn w1_phase(
    store: &AnyStore,
    url: &str,
    params: Params,
    dry: &W1,
    out: &mut StoreRun,
) -> Result<TableCounts> {
    let w1 = spawn_w1(url, params).await?;
    let after = store.table_counts().await?;
    let expected = &dry.expected;
    let f = &mut out.figures;
    f.count("w1", "messages", "messages", w1.total);
    f.count("w1", "history_rows", "history rows", after.history_rows);
    f.count("w1", "batches", "apply_batch calls", w1.batches);
    for (key, label, n) in [
        (
            "plans_held",
            "of which planned ahead, written as planned",
            w1.plans.0,
        ),
        (
            "plans_stale",
            "of which planned ahead, stale, applied again",
            w1.plans.1,
        ),
        ("not_ahead", "of which not planned ahead", w1.plans.2),
        (
            "plans_failed",
            "of which planned ahead, writing failed",
            w1.plans.3,
        ),
    ] {
        f.count("w1", key, label, n);
    }
    f.push("w1", "seconds", "seconds", w1.seconds, Unit::Seconds);
    let time = Duration::from_secs_f64(w1.seconds);
    f.push(
        "w1",
        "messages_per_s",
        "messages/s",
        rate(w1.total, time),
        Unit::PerSecond,
    );
    f.push(
        "w1",
        "history_rows_per_s",
        "history rows/s",
        rate(after.history_rows, time),
        Unit::PerSecond,
    );
    f.push(
        "w1",
        "file_mib",
        "message file read, MiB",
        w1.file_bytes as f64 / MIB,
        Unit::MiB,
    );
    f.push(
        "w1",
        "file_write_seconds",
        "writing the file beforehand (not timed), s",
        w1.file_write_seconds,
        Unit::Seconds,
    );
    f.push(
        "w1",
        "peak_rss_mib",
        "peak RSS (child process), MiB",
        w1.peak_rss_bytes as f64 / MIB,
        Unit::MiB,
    );
    let ok =
        w1.processed == expected.messages - expected.rejected && w1.rejected == expected.rejected;
    out.check(ok, || {
        format!(
            "W1: processed {} rejected {} (first errors: {:?}), expected {} processed, {} rejected",
            w1.processed,
            w1.rejected,
            w1.errors,
            expected.messages - expected.rejected,
            expected.rejected
        )
    });
    out.check(after.history_rows == expected.history_rows, || {
        format!(
            "W1: {} history rows, the generator says {}",
            after.history_rows, expected.history_rows
        )
    });
    out.check(after.lots == expected.live_lots, || {
        format!(
            "W1: {} live lots, the generator says {}",
            after.lots, expected.live_lots
        )
    });
    Ok(after)
}

/// The limit: the history rows, lots and message records W1 left, inserted raw
/// ([`Store::insert_raw`]: no parsing, planning or checks) into a fresh store of the same
/// schema, in as many transactions as W1 committed, in the order W1 wrote them. W1's time as a
/// fraction of this one says how much of W1 the layout itself costs.
async fn limit_phase(
    source: &AnyStore,
    server: (StoreKind, Option<&str>),
    params: Params,
    out: &mut StoreRun,
) -> Result<()> {
    let mut rows: Vec<HistoryRow> = Vec::new();
    let mut lots = Vec::new();
    for address in source.addresses().await? {
        lots.extend(source.lots(&address).await?);
        rows.extend(source.history(&HistorySelector::Address(address)).await?);
    }
    // Emission order, the order W1 wrote them in.
    rows.sort_by_cached_key(|r| (r.message_timestamp, r.credit_ref.clone(), r.credit_index));
    lots.sort_by_cached_key(|l| (l.message_timestamp, l.credit_ref.clone(), l.credit_index));
    let mut records = Vec::new();
    for line in W1::new(params.seed, params.scale) {
        if let ingest::Line::Text { bytes, .. } = line? {
            let value: Value = serde_json::from_slice(&bytes)?;
            if let Some(hash) = value.get("item_hash").and_then(Value::as_str)
                && let Some(record) = source.message(hash).await?
            {
                records.push(record);
            }
        }
    }
    let transactions = out
        .figures
        .get("w1", "batches")
        .map_or(1, |b| b.max(1.0) as usize);
    let part = |n: usize| n.div_ceil(transactions).max(1);
    let now = instant(generator::W1_START_SECONDS)?;
    let fresh = db::Fresh::create(server.0, server.1).await?;
    let target = AnyStore::open(fresh.url()).await?;
    let bar = progress_bar(transactions as u64, "limit (raw inserts)");
    let started = Instant::now();
    // Each transaction takes a slice of the rows and the lots those rows granted (a lot
    // names its granting row), and a share of the records.
    let mut row_chunks = rows.chunks(part(rows.len()));
    let mut record_chunks = records.chunks(part(records.len()));
    let mut lots_left = &lots[..];
    loop {
        let (row_chunk, record_chunk) = (row_chunks.next(), record_chunks.next());
        if row_chunk.is_none() && record_chunk.is_none() {
            break;
        }
        let row_chunk = row_chunk.unwrap_or_default();
        let split = match row_chunk.last() {
            Some(last) if row_chunks.len() > 0 => lots_left.partition_point(|l| {
                (l.message_timestamp, &l.credit_ref, l.credit_index)
                    <= (last.message_timestamp, &last.credit_ref, last.credit_index)
            }),
            _ => lots_left.len(),
        };
        let (lot_chunk, rest) = lots_left.split_at(split);
        lots_left = rest;
        target
            .insert_raw(row_chunk, lot_chunk, record_chunk.unwrap_or_default(), now)
            .await?;
        bar.inc(1);
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let counts = target.table_counts().await?;
    drop(target);
    fresh.remove().await?;
    out.check(
        counts.history_rows == rows.len() as u64 && counts.lots == lots.len() as u64,
        || {
            format!(
                "limit: {} rows and {} lots inserted, {} and {} given",
                counts.history_rows,
                counts.lots,
                rows.len(),
                lots.len()
            )
        },
    );
    let f = &mut out.figures;
    f.push(
        "w1",
        "limit_seconds",
        "limit: the same rows inserted raw, s",
        secs(elapsed),
        Unit::Seconds,
    );
    if let Some(w1) = f.get("w1", "seconds").filter(|s| *s > 0.0) {
        f.push(
            "w1",
            "fraction_of_limit",
            "W1 speed as a fraction of the limit",
            secs(elapsed) / w1,
            Unit::Ratio,
        );
    }
    Ok(())
}

/// W2: the hot account's lots, then the timed expenses.
async fn w2_phase(
    store: &AnyStore,
    params: Params,
    w2: &mut W2,
    before: TableCounts,
    out: &mut StoreRun,
) -> Result<TableCounts> {
    let rules = rules();
    let opts = ingest::Options {
        trusted: true,
        now: Some(instant(w2.now_seconds())?),
        batch: params.batch,
        jobs: ingest::default_jobs(),
        progress_keys: Default::default(),
    };
    // Each phase's lines are generated before it is timed: the generator's model walks the hot
    // account's lots for every expense, which took a third of the machine when it ran inline.
    let generating = Instant::now();
    let setup_lines: Vec<_> = w2.setup().collect();
    let drain_lines: Vec<_> = w2.drains().collect();
    let generate_time = generating.elapsed();
    let bar = progress_bar(w2.lots(), "W2 lots");
    let started = Instant::now();
    let lines = setup_lines.into_iter().inspect(|_| bar.inc(1));
    let setup = ingest_lines(store, &rules, lines, &opts).await?;
    let setup_time = started.elapsed();
    bar.finish_and_clear();
    let bar = progress_bar(w2.expenses(), "W2 drains");
    let started = Instant::now();
    let lines = drain_lines.into_iter().inspect(|_| bar.inc(1));
    let drains = ingest_lines(store, &rules, lines, &opts).await?;
    let drain_time = started.elapsed();
    bar.finish_and_clear();
    let after = store.table_counts().await?;
    let expected = &w2.expected;
    let f = &mut out.figures;
    f.count(
        "w2",
        "lots",
        "lots given (1 distribution each)",
        setup.total(),
    );
    f.push(
        "w2",
        "generate_seconds",
        "generating the lines beforehand (not timed), s",
        secs(generate_time),
        Unit::Seconds,
    );
    f.push(
        "w2",
        "setup_messages_per_s",
        "distributions/s",
        rate(setup.total(), setup_time),
        Unit::PerSecond,
    );
    f.count("w2", "expenses", "expenses", drains.total());
    f.push(
        "w2",
        "lots_per_expense",
        "lots drained per expense",
        expected.lot_drains as f64 / expected.expenses.max(1) as f64,
        Unit::Ratio,
    );
    f.push(
        "w2",
        "drain_seconds",
        "seconds (expenses)",
        secs(drain_time),
        Unit::Seconds,
    );
    f.push(
        "w2",
        "drains_per_s",
        "drains/s (expenses applied/s)",
        rate(drains.processed, drain_time),
        Unit::PerSecond,
    );
    f.push(
        "w2",
        "messages_per_s",
        "messages/s (lots + expenses)",
        rate(setup.total() + drains.total(), setup_time + drain_time),
        Unit::PerSecond,
    );
    check_ingest(out, "W2", &[&setup, &drains], expected);
    check_growth(out, "W2", before, after, expected);
    Ok(after)
}

/// W3: the read addresses' lots, then the timed reads.
async fn w3_phase(
    store: &AnyStore,
    url: &str,
    params: Params,
    w3: &mut W3,
    before: TableCounts,
    out: &mut StoreRun,
) -> Result<TableCounts> {
    let lines = w3.setup(params.seed);
    let opts = ingest::Options {
        trusted: true,
        now: Some(instant(w3.at_seconds())?),
        batch: params.batch,
        jobs: ingest::default_jobs(),
        progress_keys: Default::default(),
    };
    let setup = ingest_lines(store, &rules(), lines.into_iter(), &opts).await?;
    check_ingest(out, "W3", &[&setup], &w3.expected);
    reads(store, url, w3, params, out).await?;
    let after = store.table_counts().await?;
    check_growth(out, "W3", before, after, &w3.expected);
    Ok(after)
}

/// One W3 as-of series: `calls` reads of `address`'s balance as of `at`, by replay of its
/// history (`rows` of them), reported as `{key}_p50_us` and so on.
async fn as_of_series(
    store: &AnyStore,
    (rows, address): (u64, &str),
    at: Timestamp,
    calls: u64,
    label: &str,
    key: &str,
    out: &mut StoreRun,
) -> Result<()> {
    let mut nanos = Vec::with_capacity(calls as usize);
    for i in 0..W3_WARMUP_CALLS + calls {
        let started = Instant::now();
        let history = store.replay_history(address).await?;
        let lots = lotledger_core::as_of(&history, at)
            .map_err(|e| BenchError::Failed(format!("W3 as of: {e}")))?;
        let balance = lotledger_core::balance_as_of(&lots, at);
        let took = started.elapsed();
        if i == 0 && (history.len() as u64 != rows || !balance.is_some_and(|b| b.is_positive())) {
            out.failures.push(format!(
                "W3 as of: {address} has {} rows, balance {balance:?}",
                history.len()
            ));
        }
        if i >= W3_WARMUP_CALLS {
            nanos.push(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
        }
    }
    let p = sys::Percentiles::of(&mut nanos);
    out.figures.several(
        "w3",
        &format!("{label}: p50 / p99 / max, µs"),
        &[
            (format!("{key}_p50_us"), p.p50_us),
            (format!("{key}_p99_us"), p.p99_us),
            (format!("{key}_max_us"), p.max_us),
        ],
        Unit::Micros,
    );
    Ok(())
}

/// The store grew by the rows and lots the model says.
fn check_growth(
    out: &mut StoreRun,
    what: &str,
    before: TableCounts,
    after: TableCounts,
    expected: &Expected,
) {
    let rows = after.history_rows.saturating_sub(before.history_rows);
    let lots = after.lots.saturating_sub(before.lots);
    out.check(
        rows == expected.history_rows && lots == expected.live_lots,
        || {
            format!(
                "{what}: {rows} history rows and {lots} lots added, the generator says {} and {}",
                expected.history_rows, expected.live_lots
            )
        },
    );
}

/// On-disk bytes per history row, per lot and per message record.
async fn size_phase(store: &AnyStore, counts: &TableCounts, out: &mut StoreRun) -> Result<()> {
    let sizes = store.footprint().await?;
    let per = |bytes: u64, n: u64| {
        if n == 0 { 0.0 } else { bytes as f64 / n as f64 }
    };
    let f = &mut out.figures;
    f.count("size", "history_rows", "history rows", counts.history_rows);
    f.push(
        "size",
        "bytes_per_history_row",
        "bytes/history row (with indexes)",
        per(sizes.history_bytes, counts.history_rows),
        Unit::Bytes,
    );
    f.push(
        "size",
        "index_bytes_per_history_row",
        "of which indexes",
        per(sizes.history_index_bytes, counts.history_rows),
        Unit::Bytes,
    );
    f.count("size", "lots", "live lots", counts.lots);
    f.push(
        "size",
        "bytes_per_lot",
        "bytes/lot",
        per(sizes.lots_bytes, counts.lots),
        Unit::Bytes,
    );
    f.push(
        "size",
        "bytes_per_message",
        "bytes/message record",
        per(sizes.messages_bytes, counts.messages),
        Unit::Bytes,
    );
    f.push(
        "size",
        "envelope_bytes_per_message",
        "bytes/kept envelope (message as received), per message record",
        per(sizes.envelopes_bytes, counts.messages),
        Unit::Bytes,
    );
    f.push(
        "size",
        "interned_bytes_per_history_row",
        "interned addresses and references, bytes/history row",
        per(sizes.interned_bytes, counts.history_rows),
        Unit::Bytes,
    );
    f.push(
        "size",
        "database_bytes_per_history_row",
        "whole database, bytes/history row",
        per(sizes.database_bytes, counts.history_rows),
        Unit::Bytes,
    );
    f.push(
        "size",
        "database_mib",
        "database, MiB",
        sizes.database_bytes as f64 / MIB,
        Unit::MiB,
    );
    out.notes.push(format!("sizes: {}", sizes.method));
    Ok(())
}

/// Every message of a generated workload was applied as the model says.
fn check_ingest(out: &mut StoreRun, what: &str, parts: &[&Summary], expected: &Expected) {
    let processed: u64 = parts.iter().map(|s| s.processed).sum();
    let rejected: u64 = parts.iter().map(|s| s.rejected).sum();
    let errors: Vec<_> = parts.iter().flat_map(|s| s.errors.iter().take(3)).collect();
    out.check(
        processed == expected.messages - expected.rejected && rejected == expected.rejected,
        || {
            format!(
                "{what}: processed {processed}, rejected {rejected} (first errors: {errors:?}); \
                 expected {} and {}",
                expected.messages - expected.rejected,
                expected.rejected
            )
        },
    );
}

/// W3: store-call latencies, then HTTP through the real router.
async fn reads(
    store: &AnyStore,
    url: &str,
    w3: &W3,
    params: Params,
    out: &mut StoreRun,
) -> Result<()> {
    let at = instant(w3.at_seconds())?;
    let calls = count(W3_CALLS, params.scale);
    // (method, with details, each read as the first after a write of the address: none, by
    // this process, by another): the last two only on a store that keeps sums between writes
    // (PostgreSQL), whose other reads reuse them.
    let mut kinds = vec![("balance", false, None), ("balance_details", true, None)];
    if store.balance_cache_counts().is_some() {
        kinds.push(("balance_after_write", false, Some(false)));
        kinds.push(("balance_after_other_write", false, Some(true)));
    }
    let bar = progress_bar(
        calls * kinds.len() as u64 * w3.addresses.len() as u64,
        "W3 store reads",
    );
    for (lots, address) in &w3.addresses {
        for &(method, details, afresh) in &kinds {
            let mut nanos = Vec::with_capacity(calls as usize);
            for i in 0..W3_WARMUP_CALLS + calls {
                if let Some(writes) = afresh {
                    store.forget_kept_balances(writes.then_some(address.as_str()));
                }
                let started = Instant::now();
                let positive = if details {
                    let (total, groups) = store.balance_details(address, at).await?;
                    total.is_positive() && !groups.is_empty()
                } else {
                    store.balance(address, at).await?.is_positive()
                };
                let took = started.elapsed();
                if i == 0 && !positive {
                    out.failures
                        .push(format!("W3: {address} ({lots} lots) has no balance"));
                }
                if i >= W3_WARMUP_CALLS {
                    nanos.push(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
                    bar.inc(1);
                }
            }
            let p = sys::Percentiles::of(&mut nanos);
            let lot_word = if *lots == 1 { "lot" } else { "lots" };
            let key = |stat: &str| format!("{method}_{lots}_lots_{stat}_us");
            out.figures.several(
                "w3",
                &format!("{method} @ {lots} {lot_word}: p50 / p99 / max, µs"),
                &[
                    (key("p50"), p.p50_us),
                    (key("p99"), p.p99_us),
                    (key("max"), p.max_us),
                ],
                Unit::Micros,
            );
        }
    }
    bar.finish_and_clear();

    // As of an instant: the address's history read as a replay reads it, replayed up to the
    // instant, summed (what `GET …/balance?as_of=` does); its rows written together, then one
    // in W3_SCATTER among other holders' (as a long-lived address's are), on PostgreSQL again
    // once a vacuum has marked their pages all visible (as autovacuum does in time).
    let as_of_calls = count(W3_AS_OF_CALLS, params.scale);
    let (rows, address) = &w3.as_of;
    let label = format!("balance as of an instant @ {rows} history rows");
    as_of_series(
        store,
        (*rows, address),
        at,
        as_of_calls,
        &label,
        "as_of",
        out,
    )
    .await?;
    let (rows, address) = &w3.scattered;
    let label = format!(
        "balance as of an instant @ {rows} history rows, 1 row in {W3_SCATTER} the address's"
    );
    as_of_series(
        store,
        (*rows, address),
        at,
        as_of_calls,
        &label,
        "as_of_scattered",
        out,
    )
    .await?;
    if store.vacuum_history().await? {
        let label = format!("{label}, after a vacuum");
        as_of_series(
            store,
            (*rows, address),
            at,
            as_of_calls,
            &label,
            "as_of_vacuumed",
            out,
        )
        .await?;
    }

    // HTTP: the router in process, the client on loopback.
    let app = lotledger_api::router(
        Arc::new(store.clone()),
        lotledger_api::ApiConfig::new(rules()),
    );
    let requests = count(HTTP_REQUESTS, params.scale);
    let paths: Vec<String> = w3
        .addresses
        .iter()
        .map(|(_, a)| format!("/api/v0/addresses/{a}/balance"))
        .collect();
    let bar = progress_bar(requests, "W3 HTTP");
    let connections = HTTP_CONNECTIONS.min(requests as usize).max(1);
    let load = http::load_router(
        app,
        |addr| paths.iter().map(|p| http::get(addr, p)).collect(),
        connections,
        requests,
        HTTP_MAX_TIME,
        bar.clone(),
    )
    .await;
    bar.finish_and_clear();
    let mut load = load?;
    let p = sys::Percentiles::of(&mut load.latencies_nanos);
    let f = &mut out.figures;
    f.count("w3", "http_requests", "HTTP balance requests", p.count);
    f.push(
        "w3",
        "http_requests_per_s",
        &format!("HTTP requests/s ({connections} connections)"),
        rate(p.count, load.elapsed),
        Unit::PerSecond,
    );
    f.several(
        "w3",
        "HTTP p50 / p99 / max, µs",
        &[
            ("http_p50_us".into(), p.p50_us),
            ("http_p99_us".into(), p.p99_us),
            ("http_max_us".into(), p.max_us),
        ],
        Unit::Micros,
    );
    f.count("w3", "http_non_200", "HTTP non-200 responses", load.non_ok);
    out.check(
        load.non_ok == 0 && load.failed_connections == 0 && p.count > 0,
        || {
            format!(
                "W3 HTTP: {} non-200 responses, {} failed connections, {} requests",
                load.non_ok, load.failed_connections, p.count
            )
        },
    );
    // The same reads against a real `serve` process: memory kept per request once warm.
    memory::serve_growth(url, &paths, requests * 5, connections, &mut out.figures).await?;
    Ok(())
}

/// W4: copies W1's rows (addresses and refs suffixed `-N`) until the ledger holds the target,
/// then times a full repair, a verify and the integrity checks (none may find anything).
async fn w4(store: &AnyStore, params: Params, w1_rows: u64, out: &mut StoreRun) -> Result<()> {
    let before = store.table_counts().await?;
    let target = count(W4_TARGET_ROWS, params.scale);
    let copies = if before.history_rows >= target || w1_rows == 0 {
        0
    } else {
        (target - before.history_rows).div_ceil(w1_rows)
    };
    let addresses = W1::addresses(params.seed, params.scale);
    let now = ingest::clock_now()?;
    let bar = progress_bar(copies * w1_rows, "W4 import");
    let started = Instant::now();
    let mut inserted = 0u64;
    if copies > 0 {
        for chunk in addresses.chunks(W4_ADDRESS_CHUNK) {
            let mut rows: Vec<HistoryRow> = Vec::new();
            for a in chunk {
                rows.extend(store.history(&HistorySelector::Address(a.clone())).await?);
            }
            for k in 1..=copies {
                let copy: Vec<HistoryRow> = rows
                    .iter()
                    .map(|r| {
                        let mut r = r.clone();
                        r.address = format!("{}-{k}", r.address);
                        r.credit_ref = format!("{}-{k}", r.credit_ref);
                        r
                    })
                    .collect();
                for part in copy.chunks(W4_IMPORT_ROWS) {
                    inserted += store.import_history(part, now).await?;
                    bar.inc(part.len() as u64);
                }
            }
        }
    }
    let import_time = started.elapsed();
    bar.finish_and_clear();
    let after = store.table_counts().await?;
    out.check(
        inserted == copies * w1_rows && after.history_rows == before.history_rows + inserted,
        || {
            format!(
                "W4: imported {inserted} rows ({copies} copies of {w1_rows}); the ledger went from {} to {}",
                before.history_rows, after.history_rows
            )
        },
    );

    let bar = progress_bar(0, "W4 repair");
    let started = Instant::now();
    let repaired = maintenance::repair(store, true, ingest::moves(&bar)).await?;
    let repair_time = started.elapsed();
    bar.finish_and_clear();
    let bar = progress_bar(0, "W4 verify");
    let started = Instant::now();
    let drifts = maintenance::verify(store, ingest::moves(&bar)).await?;
    let verify_time = started.elapsed();
    bar.finish_and_clear();
    let bar = progress_bar(0, "W4 integrity");
    let started = Instant::now();
    let dangling = maintenance::integrity(store, ingest::moves(&bar)).await?;
    let integrity_time = started.elapsed();
    bar.finish_and_clear();
    let f = &mut out.figures;
    f.count("w4", "history_rows", "history rows", after.history_rows);
    f.count("w4", "addresses", "addresses", repaired.addresses as u64);
    f.push(
        "w4",
        "import_seconds",
        &format!("setup: import {copies} copies of W1, s"),
        secs(import_time),
        Unit::Seconds,
    );
    f.push(
        "w4",
        "repair_seconds",
        "repair, s",
        secs(repair_time),
        Unit::Seconds,
    );
    f.push(
        "w4",
        "repair_rows_per_s",
        "repair rows/s",
        rate(after.history_rows, repair_time),
        Unit::PerSecond,
    );
    f.push(
        "w4",
        "verify_seconds",
        "verify, s",
        secs(verify_time),
        Unit::Seconds,
    );
    f.push(
        "w4",
        "verify_rows_per_s",
        "verify rows/s",
        rate(after.history_rows, verify_time),
        Unit::PerSecond,
    );
    f.count("w4", "drifted", "drifted addresses", drifts.len() as u64);
    f.push(
        "w4",
        "integrity_seconds",
        "verify --integrity's id checks, s",
        secs(integrity_time),
        Unit::Seconds,
    );
    out.check(drifts.is_empty(), || {
        format!("W4: verify found {} drifted addresses", drifts.len())
    });
    out.check(dangling.is_empty(), || {
        format!("W4: the integrity checks found dangling ids: {dangling:?}")
    });
    Ok(())
}

/// W1 and W2 at a tenth of their size, one transaction per message, on another fresh store.
async fn baseline_run(fresh: &db::Fresh, params: Params, out: &mut StoreRun) -> Result<()> {
    let store = AnyStore::open(fresh.url()).await?;
    let small = Params {
        scale: params.scale / 10.0,
        batch: 1,
        ..params
    };
    let dir = tempfile::Builder::new()
        .prefix("lotledger-bench-baseline-")
        .tempdir()
        .context("creating a temporary directory")?;
    let file = dir.path().join("w1.jsonl");
    let (expected, bytes, _) = write_w1_file(small, &file)?;
    let bar = progress_bar(bytes, "baseline W1");
    let (w1, w1_time) = w1_ingest(&store, small, &file, &bar).await?;
    bar.finish_and_clear();
    check_ingest(out, "baseline W1", &[&w1], &expected);
    let rules = rules();
    let dry = {
        let mut w = W1::new(small.seed, small.scale);
        w.by_ref().for_each(drop);
        w
    };
    let mut w2 = W2::after(&dry, small.seed, small.scale);
    let opts = ingest::Options {
        trusted: true,
        now: Some(instant(w2.now_seconds())?),
        batch: 1,
        jobs: ingest::default_jobs(),
        progress_keys: Default::default(),
    };
    let setup = ingest_lines(&store, &rules, w2.setup(), &opts).await?;
    let bar = progress_bar(w2.expenses(), "baseline W2");
    let started = Instant::now();
    let drains = ingest_lines(&store, &rules, w2.drains().inspect(|_| bar.inc(1)), &opts).await?;
    let drain_time = started.elapsed();
    bar.finish_and_clear();
    check_ingest(out, "baseline W2", &[&setup, &drains], &w2.expected);
    drop(store);

    let w1_rate = rate(w1.total(), w1_time);
    let w2_rate = rate(drains.processed, drain_time);
    let ratio = |batched: Option<f64>, base: f64| batched.filter(|_| base > 0.0).map(|b| b / base);
    let w1_ratio = ratio(out.figures.get("w1", "messages_per_s"), w1_rate);
    let w2_ratio = ratio(out.figures.get("w2", "drains_per_s"), w2_rate);
    let f = &mut out.figures;
    f.count("baseline", "w1_messages", "W1 messages", w1.total());
    f.push(
        "baseline",
        "w1_messages_per_s",
        "W1 messages/s",
        w1_rate,
        Unit::PerSecond,
    );
    if let Some(r) = w1_ratio {
        f.push(
            "baseline",
            "w1_ratio",
            &format!("W1 msg/s, --batch {} / --batch 1", params.batch),
            r,
            Unit::Ratio,
        );
    }
    f.count("baseline", "w2_expenses", "W2 expenses", drains.total());
    f.push(
        "baseline",
        "w2_drains_per_s",
        "W2 drains/s",
        w2_rate,
        Unit::PerSecond,
    );
    if let Some(r) = w2_ratio {
        f.push(
            "baseline",
            "w2_ratio",
            &format!("W2 drains/s, --batch {} / --batch 1", params.batch),
            r,
            Unit::Ratio,
        );
    }
    Ok(())
}

/// W1's lines written to `file`, one a line: the message file W1 ingests. Returns what the
/// generator's model expects of them, the file's size and the time writing took.
fn write_w1_file(params: Params, file: &Path) -> Result<(Expected, u64, Duration)> {
    let started = Instant::now();
    let writing = || format!("writing {}", file.display());
    let mut out = std::io::BufWriter::new(std::fs::File::create(file).with_context(writing)?);
    let mut w1 = W1::new(params.seed, params.scale);
    for line in w1.by_ref() {
        if let ingest::Line::Text { bytes, .. } = line? {
            out.write_all(&bytes).with_context(writing)?;
            out.write_all(b"\n").with_context(writing)?;
        }
    }
    let f = out
        .into_inner()
        .map_err(std::io::IntoInnerError::into_error)
        .with_context(writing)?;
    f.sync_all().with_context(writing)?;
    let bytes = f.metadata().with_context(writing)?.len();
    Ok((w1.expected, bytes, started.elapsed()))
}

/// W1 through the path of `lotledger ingest FILE`, timed: `file` read line by line (its
/// progress recorded with each batch, keyed by its canonical path), parsed and applied.
async fn w1_ingest(
    store: &AnyStore,
    params: Params,
    file: &Path,
    bar: &indicatif::ProgressBar,
) -> Result<(Summary, Duration)> {
    let name = file.to_string_lossy().into_owned();
    let opts = ingest::Options {
        trusted: true,
        now: Some(instant(W1::new(params.seed, params.scale).now_seconds())?),
        batch: params.batch,
        jobs: ingest::default_jobs(),
        progress_keys: [(Arc::from(name.as_str()), ingest::progress_key(&name)?)].into(),
    };
    let files = [name];
    let started = Instant::now();
    let mut lines = ingest::FileLines::new(&files, Default::default(), bar.clone());
    let summary = ingest_lines(store, &rules(), &mut lines, &opts).await?;
    Ok((summary, started.elapsed()))
}

/// W5, verified ingest: W1's workload between keys derived from the seed, each message
/// signed by its sender (setup, not timed), through the ingest path without `--trusted` (item
/// hash and EVM signature of every message checked), once with one parsing thread and once
/// with one per core, each on a fresh store. Every message must verify and end as in W1.
async fn w5_phase(
    server: (StoreKind, Option<&str>),
    params: Params,
    signed: &Signed,
    out: &mut StoreRun,
) -> Result<()> {
    let Signed {
        lines,
        expected,
        rules,
        now_seconds,
    } = signed;
    let cores = ingest::default_jobs();
    // What one thread verifies alone (JSON, envelope, item hash, signature), without a store.
    let sample = &lines[..lines.len().min(20_000)];
    let started = Instant::now();
    let mut verified = 0u64;
    for line in sample {
        if let ingest::Line::Text { bytes, .. } = line {
            let value: Value = serde_json::from_slice(bytes)?;
            let envelope = lotledger_core::envelope::Envelope::from_json(&value)?;
            verified += u64::from(lotledger_sig::verify(&envelope).is_ok());
        }
    }
    let verify_rate = rate(verified, started.elapsed());
    // Public-key recovery alone, by each implementation, on the same signatures.
    let mut inputs = Vec::new();
    for line in sample {
        if let ingest::Line::Text { bytes, .. } = line {
            let value: Value = serde_json::from_slice(bytes)?;
            let field = |name: &str| value.get(name).and_then(Value::as_str).unwrap_or_default();
            let buffer = lotledger_sig::verification_buffer(
                "ETH",
                field("sender"),
                "POST",
                field("item_hash"),
            );
            let signature = hex::decode(field("signature").trim_start_matches("0x"))?;
            let (rs, v) = signature.split_at(signature.len().min(64));
            let odd = v.first() == Some(&28);
            inputs.push((lotledger_sig::eip191_hash(&buffer), rs.to_vec(), odd));
        }
    }
    let mut recovery_rates = Vec::new();
    for implementation in [
        lotledger_sig::Recovery::K256,
        lotledger_sig::Recovery::Libsecp256k1,
    ] {
        let started = Instant::now();
        let recovered = inputs
            .iter()
            .filter(|(prehash, rs, odd)| {
                lotledger_sig::recover_evm(implementation, prehash, rs, *odd).is_ok()
            })
            .count();
        recovery_rates.push(rate(recovered as u64, started.elapsed()));
        out.check(recovered == inputs.len(), || {
            format!(
                "W5: {implementation:?} recovered {recovered} of {}",
                inputs.len()
            )
        });
    }
    out.check(verified == sample.len() as u64, || {
        format!("W5: {verified} of {} signed messages verify", sample.len())
    });
    let mut runs = vec![1];
    if cores > 1 {
        runs.push(cores);
    }
    let mut rates = Vec::new();
    for jobs in runs {
        let fresh = db::Fresh::create(server.0, server.1).await?;
        let store = AnyStore::open(fresh.url()).await?;
        let opts = ingest::Options {
            trusted: false,
            now: Some(instant(*now_seconds)?),
            batch: params.batch,
            jobs,
            progress_keys: Default::default(),
        };
        let bar = progress_bar(lines.len() as u64, "W5 verified ingest");
        let started = Instant::now();
        let summary = ingest_lines(
            &store,
            rules,
            lines.iter().cloned().map(Ok).inspect(|_| bar.inc(1)),
            &opts,
        )
        .await;
        let elapsed = started.elapsed();
        bar.finish_and_clear();
        let counts = store.table_counts().await;
        drop(store);
        fresh.remove().await?;
        let (summary, counts) = (summary?, counts?);
        check_ingest(out, &format!("W5 (--jobs {jobs})"), &[&summary], expected);
        out.check(counts.history_rows == expected.history_rows, || {
            format!(
                "W5 (--jobs {jobs}): {} history rows, the generator says {}",
                counts.history_rows, expected.history_rows
            )
        });
        rates.push((jobs, rate(summary.total(), elapsed)));
    }
    let f = &mut out.figures;
    f.count("w5", "messages", "signed messages", lines.len() as u64);
    f.push(
        "w5",
        "verify_per_s_1_thread",
        "verified alone, 1 thread, messages/s",
        verify_rate,
        Unit::PerSecond,
    );
    if let [k256, libsecp] = recovery_rates[..] {
        f.push(
            "w5",
            "k256_recoveries_per_s",
            "k256 key recoveries/s, 1 thread",
            k256,
            Unit::PerSecond,
        );
        f.push(
            "w5",
            "libsecp256k1_recoveries_per_s",
            "libsecp256k1 key recoveries/s, 1 thread",
            libsecp,
            Unit::PerSecond,
        );
    }
    push_runs(
        f,
        "w5",
        &rates,
        ("messages_per_s_1_job", "messages/s, 1 parsing thread"),
        |jobs| format!("messages/s, {jobs} parsing threads"),
        "all cores / 1 thread",
    );
    Ok(())
}

/// W1's workload signed for real, the setup of W5 and W6 (see [`w5_phase`]).
struct Signed {
    lines: Vec<ingest::Line>,
    expected: Expected,
    /// The minter whitelisted, the default channels.
    rules: Rules,
    /// The processing instant of the ingest runs, in seconds.
    now_seconds: i64,
}

impl Signed {
    fn new(params: Params) -> Result<Signed> {
        let keys = Keys::new(params.seed, params.scale);
        let mut w5 = W1::signed(params.seed, params.scale, &keys);
        let unsigned: Vec<ingest::Line> = w5.by_ref().collect::<ingest::Result<_>>()?;
        let bar = progress_bar(unsigned.len() as u64, "W5 signing (setup)");
        let lines: Vec<ingest::Line> = ingest::map_on_threads(
            unsigned,
            ingest::default_jobs(),
            |line| {
                bar.inc(1);
                match line {
                    ingest::Line::Text { source, bytes } => Ok(ingest::Line::Text {
                        source,
                        bytes: keys.sign(&bytes)?,
                    }),
                    other => Ok(other),
                }
            },
            || Err(BenchError::Failed("a signing thread panicked".into())),
        )
        .into_iter()
        .collect::<Result<_>>()?;
        bar.finish_and_clear();
        Ok(Signed {
            lines,
            expected: w5.expected.clone(),
            rules: Rules::new([keys.minter.clone()], Rules::default().channels),
            now_seconds: w5.now_seconds(),
        })
    }
}

/// W6, HTTP intake: W5's signed distributions and expenses (not its transfers, whose funds
/// checks depend on the order concurrent clients happen to reach the server in; a distribution
/// or an expense is processed in any order), the first 20 000 × scale, each posted once with
/// `sync: true` by 64 concurrent keep-alive clients to the router served on loopback over a
/// fresh store: once with one transaction per message (`--intake-batch 1`) and once with group
/// commit (the default). Every reply must be 200, the store must hold one history row per
/// message, and `verify` must find no drift.
async fn w6_phase(
    server: (StoreKind, Option<&str>),
    params: Params,
    signed: &Signed,
    out: &mut StoreRun,
) -> Result<()> {
    let Signed { lines, rules, .. } = signed;
    let wanted = count(W6_MESSAGES, params.scale) as usize;
    let bodies: Vec<Vec<u8>> = lines
        .iter()
        .filter_map(|line| match line {
            ingest::Line::Text { bytes, .. } => Some(bytes),
            ingest::Line::Refused { .. } => None,
        })
        .filter(|bytes| {
            !bytes
                .windows(lotledger_core::message::TRANSFER.len())
                .any(|w| w == lotledger_core::message::TRANSFER.as_bytes())
        })
        .take(wanted)
        .map(|bytes| {
            let mut body = br#"{"sync":true,"message":"#.to_vec();
            body.extend_from_slice(bytes);
            body.push(b'}');
            body
        })
        .collect();
    let mut rates = Vec::new();
    for intake_batch in [1, lotledger_api::DEFAULT_INTAKE_BATCH] {
        let fresh = db::Fresh::create(server.0, server.1).await?;
        let result = w6_run(&fresh, rules, intake_batch, &bodies, out).await;
        fresh.remove().await?;
        rates.push((intake_batch, result?));
    }
    let f = &mut out.figures;
    f.count(
        "w6",
        "messages",
        "signed messages posted",
        bodies.len() as u64,
    );
    push_runs(
        f,
        "w6",
        &rates,
        ("messages_per_s_1_per_tx", "messages/s, 1 per transaction"),
        |batch| format!("messages/s, group commit (≤ {batch} per transaction)"),
        "group commit / 1 per transaction",
    );
    Ok(())
}

/// The messages/s of a workload's runs `(setting, rate)`: the run at setting 1 under the
/// `one` key and label, another under `messages_per_s`, and their ratio as `speedup`.
fn push_runs(
    f: &mut Figures,
    workload: &'static str,
    rates: &[(usize, f64)],
    one: (&str, &str),
    label: impl Fn(usize) -> String,
    ratio_label: &str,
) {
    for &(setting, r) in rates {
        if setting == 1 {
            f.push(workload, one.0, one.1, r, Unit::PerSecond);
        } else {
            f.push(
                workload,
                "messages_per_s",
                &label(setting),
                r,
                Unit::PerSecond,
            );
        }
    }
    if let [(_, before), (_, after)] = rates[..] {
        f.push(
            workload,
            "speedup",
            ratio_label,
            after / before,
            Unit::Ratio,
        );
    }
}

/// One W6 run on a fresh store; its messages/s.
async fn w6_run(
    fresh: &db::Fresh,
    rules: &Rules,
    intake_batch: usize,
    bodies: &[Vec<u8>],
    out: &mut StoreRun,
) -> Result<f64> {
    let store = AnyStore::open(fresh.url()).await?;
    let mut config = lotledger_api::ApiConfig::new(rules.clone());
    config.intake_batch = intake_batch;
    let app = lotledger_api::router(Arc::new(store.clone()), config);
    let bar = progress_bar(bodies.len() as u64, "W6 HTTP intake");
    let load = http::load_router(
        app,
        |addr| {
            bodies
                .iter()
                .map(|body| http::post_json(addr, "/api/v0/messages", body))
                .collect()
        },
        W6_CONNECTIONS,
        bodies.len() as u64,
        Duration::from_secs(1800),
        bar.clone(),
    )
    .await;
    bar.finish_and_clear();
    let load = load?;
    let counts = store.table_counts().await?;
    let drifts = maintenance::verify(&store, |_, _| {}).await?;
    drop(store);
    let answered = load.latencies_nanos.len() as u64;
    out.check(
        load.non_ok == 0 && load.failed_connections == 0 && answered == bodies.len() as u64,
        || {
            format!(
                "W6 (--intake-batch {intake_batch}): {} non-200 replies, {} failed connections, \
                 {answered} of {} answered",
                load.non_ok,
                load.failed_connections,
                bodies.len()
            )
        },
    );
    out.check(counts.history_rows == bodies.len() as u64, || {
        format!(
            "W6 (--intake-batch {intake_batch}): {} history rows for {} messages",
            counts.history_rows,
            bodies.len()
        )
    });
    out.check(drifts.is_empty(), || {
        format!(
            "W6 (--intake-batch {intake_batch}): verify found {} drifts",
            drifts.len()
        )
    });
    Ok(rate(answered, load.elapsed))
}

/// What the W1 child reports.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ChildReport {
    total: u64,
    processed: u64,
    rejected: u64,
    batches: u64,
    errors: Vec<(Option<String>, String)>,
    seconds: f64,
    /// The message file's size, and the time writing it took (before W1 was timed).
    file_bytes: u64,
    file_write_seconds: f64,
    peak_rss_bytes: u64,
    rss_before_bytes: u64,
    /// How the batches ended ([`AheadCounters::ended`]): planned ahead and written as
    /// planned, plans found stale and applied again, not planned ahead, plans whose writing
    /// failed.
    plans: (u64, u64, u64, u64),
}

/// Runs W1 in a child process on the store at `url` (already created and migrated).
async fn spawn_w1(url: &str, params: Params) -> Result<ChildReport> {
    let dir = tempfile::Builder::new()
        .prefix("lotledger-bench-w1-")
        .tempdir()
        .context("creating a temporary directory")?;
    let report = dir.path().join("w1.json");
    let exe = std::env::current_exe().context("locating the lotledger binary")?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("bench")
        .arg("--child-w1-url")
        .arg(url)
        .arg("--child-report")
        .arg(&report)
        .arg("--scale")
        .arg(params.scale.to_string())
        .arg("--seed")
        .arg(params.seed.to_string())
        .arg("--batch")
        .arg(params.batch.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    let status = tokio::task::spawn_blocking(move || command.status())
        .await
        .context("waiting for the W1 process")?
        .context("starting the W1 process")?;
    if !status.success() {
        bail!("the W1 process failed ({status})");
    }
    let text = std::fs::read_to_string(&report).context("reading the W1 report")?;
    serde_json::from_str(&text).context("parsing the W1 report")
}

/// The W1 child: W1 alone in this process, its figures and peak RSS written to `report`.
async fn child_w1(url: &str, report: &PathBuf, params: Params) -> Result<ExitCode> {
    let rss_before = sys::rss_bytes().unwrap_or(0);
    let store = AnyStore::open(url)
        .await
        .with_context(|| format!("opening {}", redact(url)))?;
    // Next to the report, in the parent's temporary directory (removed with it).
    let file = report.with_file_name("w1.jsonl");
    let (_, file_bytes, write_time) = write_w1_file(params, &file)?;
    let bar = progress_bar(file_bytes, "W1 ingest");
    let (summary, elapsed) = w1_ingest(&store, params, &file, &bar).await?;
    bar.finish_and_clear();
    let out = ChildReport {
        total: summary.total(),
        processed: summary.processed,
        rejected: summary.rejected,
        batches: summary.batches,
        errors: summary.errors.into_iter().take(5).collect(),
        seconds: elapsed.as_secs_f64(),
        file_bytes,
        file_write_seconds: write_time.as_secs_f64(),
        peak_rss_bytes: sys::peak_rss_bytes().unwrap_or(0),
        rss_before_bytes: rss_before,
        plans: store
            .ahead_counters()
            .map_or_else(Default::default, AheadCounters::ended),
    };
    std::fs::write(report, serde_json::to_string(&out)?)
        .with_context(|| format!("writing {}", report.display()))?;
    Ok(ExitCode::SUCCESS)
}
