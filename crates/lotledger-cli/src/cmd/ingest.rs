//! `lotledger ingest`: the arguments and the summary of [`lotledger_ingest`]'s path.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use lotledger_core::Rules;
use lotledger_ingest::{
    AnyStore, DEFAULT_BATCH, FileLines, MAX_BATCH, MAX_JOBS, Options, Summary, default_jobs,
    ingest_lines, progress_key,
};
use lotledger_store::Store;
use serde_json::{Value, json};

/// Errors printed in the text summary.
const MAX_PRINTED_ERRORS: usize = 10;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Files of JSON lines, one Aleph message envelope per line (or node `messages.json` pages);
    /// `-` reads standard input.
    #[arg(required = true)]
    files: Vec<String>,
    /// Skip signature and item-hash verification (archives from a trusted node, test data).
    /// Without it every POST must be an inline item whose hash and chain signature verify.
    #[arg(long)]
    trusted: bool,
    /// The processing instant (RFC 3339; it decides transfer funds checks). Default: the clock,
    /// read once per batch.
    #[arg(long)]
    now: Option<String>,
    /// Messages per transaction (group commit); 1 = one transaction per message. A rejected
    /// message never affects its neighbours.
    #[arg(long, default_value_t = DEFAULT_BATCH,
          value_parser = clap::value_parser!(u64).range(1..=MAX_BATCH))]
    batch: u64,
    /// Threads that parse and verify messages while the store applies the previous batch.
    /// Default: the machine's cores.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_JOBS))]
    jobs: Option<u64>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// Read every file from its first line. By default a file is resumed after the lines an
    /// earlier run already committed (an interrupted run, or a file that has grown since), but
    /// only when it still begins with exactly the bytes that were committed; any other file at
    /// that path is read from its start.
    #[arg(long)]
    from_start: bool,
}

impl Args {
    pub fn check(&self) -> Result<()> {
        if let Some(now) = &self.now {
            super::instant(Some(now))?;
        }
        Ok(())
    }
}

pub async fn run(store: &AnyStore, rules: &Rules, args: Args) -> Result<ExitCode> {
    let opts = Options {
        trusted: args.trusted,
        now: args
            .now
            .as_deref()
            .map(|t| super::instant(Some(t)))
            .transpose()?,
        batch: usize::try_from(args.batch).context("--batch is too large")?,
        jobs: match args.jobs {
            Some(j) => usize::try_from(j).context("--jobs is too large")?,
            None => default_jobs(),
        },
        progress_keys: HashMap::new(),
    };
    let total_bytes: u64 = args
        .files
        .iter()
        .filter(|f| *f != "-")
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    // Progress is kept for named files (not standard input), keyed by their canonical path.
    let mut opts = opts;
    let mut committed = HashMap::new();
    for file in args.files.iter().filter(|f| *f != "-") {
        let key = progress_key(file)?;
        if !args.from_start
            && let Some(done) = store.ingest_progress(&key).await?
            && done.lines > 0
        {
            committed.insert(file.clone(), done);
        }
        opts.progress_keys.insert(Arc::from(file.as_str()), key);
    }
    let bar = super::progress_bar(total_bytes, "ingest");
    let mut lines = FileLines::new(&args.files, committed, bar.clone());
    let summary = ingest_lines(store, rules, &mut lines, &opts).await;
    bar.finish_and_clear();
    let mut summary = summary?;
    summary.resumed_after_lines = lines.resumed_after_lines();
    print_summary(&summary, args.json);
    Ok(ExitCode::SUCCESS)
}

fn print_summary(s: &Summary, as_json: bool) {
    if as_json {
        let errors: Vec<Value> = s
            .errors
            .iter()
            .map(|(h, e)| json!({"item_hash": h, "error": e}))
            .collect();
        println!(
            "{}",
            json!({
                "processed": s.processed,
                "rejected": s.rejected,
                "already_applied": s.already_applied,
                "ignored": s.ignored,
                "resumed_after_lines": s.resumed_after_lines,
                "errors": errors,
            })
        );
        return;
    }
    println!(
        "processed: {}, rejected: {}, already applied: {}, ignored: {}",
        s.processed, s.rejected, s.already_applied, s.ignored
    );
    if s.resumed_after_lines > 0 {
        println!(
            "resumed: {} line(s) committed by an earlier run were not read again",
            s.resumed_after_lines
        );
    }
    for (hash, error) in s.errors.iter().take(MAX_PRINTED_ERRORS) {
        match hash {
            Some(h) => println!("  rejected {h}: {error}"),
            None => println!("  {error}"),
        }
    }
    if s.error_count > MAX_PRINTED_ERRORS as u64 {
        println!("  … and {} more", s.error_count - MAX_PRINTED_ERRORS as u64);
    }
}
