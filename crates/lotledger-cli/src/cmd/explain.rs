//! `lotledger explain`: what messages would do (issue 12, part 3), or where an address's
//! balance comes from.
//!
//! - `explain FILE|-`: each message of the file dry-run in turn, each against the ledger as
//!   the ones before it would leave it; nothing is written. The input is one JSON document (an
//!   envelope, a `POST /api/v0/messages` body, an array of them, or a node `messages.json`
//!   page) or JSON lines of them, as `ingest` reads.
//! - `explain --address A`: the address's lots replayed from its history: for its balance now,
//!   which grants it comes from, which debits took the rest, and which debits found nothing.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use lotledger_core::envelope::Envelope;
use lotledger_core::{Credits, Rules, Timestamp};
use lotledger_ingest::{AnyStore, signature_refusal};
use lotledger_store::Store;
use lotledger_store::dry_run::{DryRun, Rehearsal};
use serde_json::{Value, json};

use super::read::show_ts;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A file of messages (`-`: standard input).
    #[arg(required_unless_present = "address", conflicts_with = "address")]
    file: Option<String>,
    /// Explain this address's balance instead.
    #[arg(long)]
    address: Option<String>,
    /// The processing instant (RFC 3339). Default: the clock.
    #[arg(long)]
    now: Option<String>,
    /// Skip signature and item-hash verification, as `ingest --trusted` does.
    #[arg(long)]
    trusted: bool,
    /// One JSON object per message (the dry-run endpoint's body, with `item_hash`), or for
    /// `--address` one object.
    #[arg(long)]
    json: bool,
}

pub async fn run(store: &AnyStore, rules: &Rules, args: Args) -> Result<ExitCode> {
    let now = super::instant(args.now.as_deref())?;
    match (&args.file, &args.address) {
        (Some(file), None) => messages(store, rules, file, now, &args).await,
        (None, Some(address)) => balance(store, address, now, args.json).await,
        _ => bail!("give a FILE or --address ADDRESS"),
    }
}

/// The messages of `text`: one JSON document, or JSON lines.
fn messages_of(text: &str) -> Result<Vec<Value>> {
    let documents: Vec<Value> = match serde_json::from_str::<Value>(text) {
        Ok(document) => vec![document],
        Err(_) => text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| {
                serde_json::from_str(line).with_context(|| format!("line {}: not JSON", i + 1))
            })
            .collect::<Result<_>>()?,
    };
    let mut out = Vec::new();
    for document in documents {
        match document {
            Value::Array(list) => out.extend(list),
            Value::Object(mut object) => {
                match (object.remove("messages"), object.remove("message")) {
                    (Some(Value::Array(list)), _) => out.extend(list),
                    (_, Some(message)) => out.push(message),
                    _ => out.push(Value::Object(object)),
                }
            }
            other => bail!("not a message: {other}"),
        }
    }
    Ok(out)
}

async fn messages(
    store: &AnyStore,
    rules: &Rules,
    file: &str,
    now: Timestamp,
    args: &Args,
) -> Result<ExitCode> {
    let text = super::read_input(file)?;
    let mut rehearsal = Rehearsal::new(store);
    for message in messages_of(&text)? {
        let (hash, verdict) = match Envelope::from_json(&message) {
            Err(e) => (
                message
                    .get("item_hash")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string(),
                DryRun::Rejected(e.to_string()),
            ),
            Ok(envelope) => {
                let verdict = match signature_refusal(&envelope, args.trusted) {
                    Some(e) => DryRun::Rejected(e),
                    None => rehearsal.envelope(&envelope, rules, now).await?,
                };
                (envelope.item_hash, verdict)
            }
        };
        if args.json {
            let mut reply = serde_json::to_value(lotledger_api::DryRunReply::of(verdict))?;
            if let Value::Object(fields) = &mut reply {
                fields.insert("item_hash".into(), Value::String(hash));
            }
            println!("{reply}");
        } else {
            print!("{}", describe(&hash, &verdict));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A message's dry run, for people.
fn describe(hash: &str, verdict: &DryRun) -> String {
    let p = match verdict {
        DryRun::Rejected(why) => return format!("{hash}: rejected: {why}\n"),
        DryRun::Ignored(why) => return format!("{hash}: ignored: {why}\n"),
        DryRun::Processed(p) => p,
    };
    let mut out = format!("{hash}: processed\n");
    for r in &p.rows {
        out += &format!(
            "  writes row {}#{}: {} {:+}, expires {}, {}\n",
            r.credit_ref,
            r.credit_index,
            r.address,
            r.amount.0,
            show_ts(r.expiration_date),
            r.payment_method.as_deref().unwrap_or("-"),
        );
    }
    for d in &p.drained {
        out += &format!(
            "  drains {} from {}'s lot {}#{} (expires {})\n",
            d.amount,
            d.address,
            d.credit_ref,
            d.credit_index,
            show_ts(d.expiration_date),
        );
    }
    for l in &p.created {
        out += &format!(
            "  creates a lot of {} for {} (expires {})\n",
            l.amount_remaining,
            l.address,
            show_ts(l.expiration_date),
        );
    }
    for (address, (before, after)) in &p.balances {
        out += &format!("  balance of {address}: {before} -> {after}\n");
    }
    for address in &p.rederived {
        out += &format!(
            "  {address} has history after this message: its lots are re-derived by replay\n"
        );
    }
    out
}

/// Where `address`'s balance at `now` comes from: its whole history replayed.
async fn balance(store: &AnyStore, address: &str, now: Timestamp, json: bool) -> Result<ExitCode> {
    let rows = store.replay_history(address).await?;
    let lots = lotledger_core::replayed_lots(&rows)?;
    let total = lotledger_core::balance_as_of(&lots, now).context("balance overflow")?;
    // What each debit asked and what the lots gave it.
    let mut taken: std::collections::HashMap<(&str, i32), Credits> =
        std::collections::HashMap::new();
    for (debit, index, _, amount) in lots.iter().flat_map(|l| &l.drained_by) {
        let sum = taken
            .entry((debit.as_str(), *index))
            .or_insert(Credits::ZERO);
        *sum = sum
            .checked_add(*amount)
            .context("drained amounts overflow")?;
    }
    let mut debits: Vec<(String, i32, Timestamp, Credits, Credits)> = rows
        .iter()
        .filter(|r| r.amount.0 < 0)
        .map(|r| {
            (
                r.credit_ref.clone(),
                r.credit_index,
                r.message_timestamp,
                Credits(r.amount.0.saturating_neg()),
                taken
                    .get(&(r.credit_ref.as_str(), r.credit_index))
                    .copied()
                    .unwrap_or(Credits::ZERO),
            )
        })
        .collect();
    debits.sort_by(|a, b| (a.2, &a.0, a.1).cmp(&(b.2, &b.0, b.1)));
    let uncovered: Vec<_> = debits.iter().filter(|d| d.4 < d.3).collect();
    let cached = store.balance(address, now).await?;
    if json {
        let lot_json: Vec<Value> = lots
            .iter()
            .map(|l| {
                json!({
                    "credit_ref": l.credit_ref,
                    "credit_index": l.credit_index,
                    "granted_at": l.granted_at.to_rfc3339(),
                    "expiration_date": l.expiration_date.map(Timestamp::to_rfc3339),
                    "amount": l.amount.0,
                    "remaining": l.remaining.0,
                    "counted": l.remaining.is_positive()
                        && l.expiration_date.is_none_or(|e| e > now),
                    "drained_by": l.drained_by.iter().map(|(c, i, t, a)| json!({
                        "credit_ref": c, "credit_index": i, "at": t.to_rfc3339(), "amount": a.0,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let uncovered_json: Vec<Value> = uncovered
            .iter()
            .map(|(c, i, t, asked, taken)| {
                json!({"credit_ref": c, "credit_index": i, "at": t.to_rfc3339(),
                       "asked": asked.0, "taken": taken.0})
            })
            .collect();
        println!(
            "{}",
            json!({"address": address, "at": now.to_rfc3339(), "credit_balance": total.0,
                   "cached_balance": cached.0, "grants": lot_json, "uncovered_debits": uncovered_json})
        );
    } else {
        println!("{address} at {}: balance {total}", now.to_rfc3339());
        for l in &lots {
            let state = if !l.remaining.is_positive() {
                "spent".to_string()
            } else if l.expiration_date.is_some_and(|e| e <= now) {
                format!("{} left, expired: not counted", l.remaining)
            } else {
                format!("{} left, counted", l.remaining)
            };
            println!(
                "  grant {}#{} at {}: {} (expires {}): {state}",
                l.credit_ref,
                l.credit_index,
                l.granted_at.to_rfc3339(),
                l.amount,
                show_ts(l.expiration_date),
            );
            for (c, i, t, a) in &l.drained_by {
                println!("    {a} taken by {c}#{i} at {}", t.to_rfc3339());
            }
        }
        for (c, i, t, asked, taken) in &uncovered {
            println!(
                "  debit {c}#{i} at {}: asked {asked}, found {taken} (the rest was not there)",
                t.to_rfc3339()
            );
        }
    }
    if cached != total {
        eprintln!(
            "warning: the lot cache holds {cached}, the replay {total}: run `lotledger verify`"
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
