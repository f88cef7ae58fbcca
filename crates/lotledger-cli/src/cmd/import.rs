//! `lotledger import-history`: raw history rows in, lots rebuilt for the touched addresses.

use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use lotledger_core::HistoryRow;
use lotledger_core::json::parse_history_row_under;
use lotledger_store::Store;
use serde_json::Value;

use lotledger_ingest::AnyStore;

/// Rows per transaction.
const BATCH_ROWS: usize = 5000;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Files of history rows: JSON lines, or one JSON array; `-` reads standard input. A row
    /// without a `policy` (`v1`, `v2`) takes the one the ledger's schedule gives at its instant.
    #[arg(required = true)]
    files: Vec<String>,
}

pub async fn run(store: &AnyStore, rules: &lotledger_core::Rules, args: Args) -> Result<ExitCode> {
    let mut rows: Vec<HistoryRow> = Vec::new();
    for file in &args.files {
        let text = super::read_input(file)?;
        let values: Vec<Value> = match serde_json::from_str::<Value>(&text) {
            Ok(Value::Array(items)) => items,
            Ok(one @ Value::Object(_)) => vec![one],
            _ => text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| {
                    serde_json::from_str(l)
                        .map_err(|e| anyhow!("{file}:{}: not valid JSON: {e}", i + 1))
                })
                .collect::<Result<_>>()?,
        };
        for (i, v) in values.iter().enumerate() {
            rows.push(
                parse_history_row_under(v, &rules.schedule)
                    .with_context(|| format!("{file}: row {}", i + 1))?,
            );
        }
    }
    let now = super::clock_now()?;
    let bar = super::progress_bar(rows.len() as u64, "import");
    let mut inserted = 0;
    for batch in rows.chunks(BATCH_ROWS) {
        inserted += store.import_history(batch, now).await?;
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    println!(
        "inserted {inserted} of {} rows (existing keys skipped)",
        rows.len()
    );
    Ok(ExitCode::SUCCESS)
}
