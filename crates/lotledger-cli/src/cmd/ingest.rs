//! `lotledger ingest`: Aleph messages from JSON lines, each applied once in its own transaction.

use std::io::{BufRead, BufReader, Read};
use std::process::ExitCode;

use anyhow::{Context, Result};
use lotledger_core::envelope::Envelope;
use lotledger_core::{Rules, Timestamp};
use lotledger_store::{Outcome, Store, apply_envelope};
use serde_json::{Value, json};

use crate::store::AnyStore;

/// Errors listed in full in the JSON summary (the counts are always complete).
const MAX_LISTED_ERRORS: usize = 1000;
/// Errors printed in the text summary.
const MAX_PRINTED_ERRORS: usize = 10;
/// Longest accepted line (one message).
const MAX_LINE_BYTES: u64 = 16 * 1024 * 1024;

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
    /// The processing instant (RFC 3339; it decides transfer funds checks). Default: the clock.
    #[arg(long)]
    now: Option<String>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

impl Args {
    pub fn check(&self) -> Result<()> {
        if let Some(now) = &self.now {
            super::instant(Some(now))?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Summary {
    processed: u64,
    rejected: u64,
    already_applied: u64,
    ignored: u64,
    errors: Vec<(Option<String>, String)>,
    error_count: u64,
}

impl Summary {
    fn error(&mut self, item_hash: Option<String>, error: String) {
        self.error_count += 1;
        if self.errors.len() < MAX_LISTED_ERRORS {
            self.errors.push((item_hash, error));
        }
    }
}

pub async fn run(store: &AnyStore, rules: &Rules, args: Args) -> Result<ExitCode> {
    let fixed_now = args
        .now
        .as_deref()
        .map(|t| super::instant(Some(t)))
        .transpose()?;
    let mut summary = Summary::default();
    let total_bytes: u64 = args
        .files
        .iter()
        .filter(|f| *f != "-")
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let bar = super::progress_bar(total_bytes, "ingest");
    for file in &args.files {
        let reader: Box<dyn Read> = if file == "-" {
            Box::new(std::io::stdin())
        } else {
            Box::new(std::fs::File::open(file).with_context(|| format!("opening {file}"))?)
        };
        let mut reader = BufReader::new(reader);
        let mut line_no = 0u64;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let read = (&mut reader)
                .take(MAX_LINE_BYTES + 1)
                .read_until(b'\n', &mut buf)
                .with_context(|| format!("reading {file}"))?;
            if read == 0 {
                break;
            }
            line_no += 1;
            bar.inc(read as u64);
            let where_ = format!("{file}:{line_no}");
            if buf.len() as u64 > MAX_LINE_BYTES && !buf.ends_with(b"\n") {
                summary.rejected += 1;
                summary.error(
                    None,
                    format!("{where_}: line longer than {MAX_LINE_BYTES} bytes"),
                );
                // Skip the rest of the overlong line.
                loop {
                    buf.clear();
                    let more = (&mut reader)
                        .take(MAX_LINE_BYTES)
                        .read_until(b'\n', &mut buf)?;
                    bar.inc(more as u64);
                    if more == 0 || buf.ends_with(b"\n") {
                        break;
                    }
                }
                continue;
            }
            let text = match std::str::from_utf8(&buf) {
                Ok(t) => t.trim(),
                Err(_) => {
                    summary.rejected += 1;
                    summary.error(None, format!("{where_}: not valid UTF-8"));
                    continue;
                }
            };
            if text.is_empty() {
                continue;
            }
            let value: Value = match serde_json::from_str(text) {
                Ok(v) => v,
                Err(e) => {
                    summary.rejected += 1;
                    summary.error(None, format!("{where_}: not valid JSON: {e}"));
                    continue;
                }
            };
            // A node's `messages.json` page carries its messages in a list.
            let messages = match value.get("messages") {
                Some(Value::Array(list)) if value.get("item_hash").is_none() => list.clone(),
                _ => vec![value],
            };
            for message in &messages {
                let now = match fixed_now {
                    Some(t) => t,
                    None => super::clock_now()?,
                };
                ingest_one(
                    store,
                    rules,
                    message,
                    now,
                    args.trusted,
                    &where_,
                    &mut summary,
                )
                .await?;
            }
        }
    }
    bar.finish_and_clear();
    print_summary(&summary, args.json);
    Ok(ExitCode::SUCCESS)
}

async fn ingest_one(
    store: &AnyStore,
    rules: &Rules,
    message: &Value,
    now: Timestamp,
    trusted: bool,
    where_: &str,
    summary: &mut Summary,
) -> Result<()> {
    let envelope = match Envelope::from_json(message) {
        Ok(e) => e,
        Err(e) => {
            summary.rejected += 1;
            summary.error(None, format!("{where_}: {e}"));
            return Ok(());
        }
    };
    let verified = if trusted || envelope.message_type != "POST" {
        Ok(())
    } else {
        lotledger_sig::verify(&envelope)
    };
    let outcome = match verified {
        Ok(()) => apply_envelope(store, &envelope, rules, now).await,
        Err(e) => store.reject(&envelope.item_hash, &e.to_string(), now).await,
    }
    .with_context(|| format!("applying message {} ({where_})", envelope.item_hash))?;
    match outcome {
        Outcome::Processed => summary.processed += 1,
        Outcome::Ignored(_) => summary.ignored += 1,
        Outcome::AlreadyApplied => summary.already_applied += 1,
        Outcome::Rejected(error) => {
            summary.rejected += 1;
            summary.error(Some(envelope.item_hash.clone()), error);
        }
    }
    Ok(())
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
                "errors": errors,
            })
        );
        return;
    }
    println!(
        "processed: {}, rejected: {}, already applied: {}, ignored: {}",
        s.processed, s.rejected, s.already_applied, s.ignored
    );
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
