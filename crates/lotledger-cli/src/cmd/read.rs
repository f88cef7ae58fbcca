//! Read commands: balance, history, lots, message. `--json` prints the shapes of the
//! conformance format, so that scripts can drive the CLI.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use lotledger_core::json;
use lotledger_store::{HistorySelector, MessageStatus, Store};
use serde_json::Value;

use lotledger_ingest::AnyStore;

#[derive(clap::Args, Debug)]
pub struct BalanceArgs {
    address: String,
    /// The instant to read at (RFC 3339). Default: now.
    #[arg(long)]
    at: Option<String>,
    /// Include the per-expiry breakdown.
    #[arg(long)]
    details: bool,
    /// The balance as the ledger stood at this instant (RFC 3339 or Unix seconds): its rows
    /// up to then, replayed, evaluated then.
    #[arg(long, conflicts_with = "at")]
    as_of: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct HistoryArgs {
    /// The address whose rows to list.
    address: Option<String>,
    /// List the rows of one message instead.
    #[arg(long, conflicts_with = "address")]
    credit_ref: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct LotsArgs {
    address: String,
    /// Every lot as the ledger stood at this instant (RFC 3339 or Unix seconds), drained or
    /// not, with the debits that took from it.
    #[arg(long)]
    as_of: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct MessageArgs {
    item_hash: String,
    #[arg(long)]
    json: bool,
}

/// An expiry for people: its instant, or `never`.
pub(super) fn show_ts(t: Option<lotledger_core::Timestamp>) -> String {
    t.map_or_else(|| "never".to_string(), |t| t.to_rfc3339())
}

/// An instant given as RFC 3339 or Unix seconds.
fn instant_or_seconds(text: &str) -> Result<lotledger_core::Timestamp> {
    lotledger_core::Timestamp::parse_rfc3339(text)
        .ok()
        .or_else(|| {
            text.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .and_then(|x| lotledger_core::Timestamp::from_unix_seconds_f64(x).ok())
        })
        .with_context(|| format!("invalid instant {text:?} (RFC 3339 or Unix seconds)"))
}

/// `address`'s lots as its ledger stood at `as_of`.
async fn lots_as_of(
    store: &AnyStore,
    address: &str,
    as_of: lotledger_core::Timestamp,
) -> Result<Vec<lotledger_core::LotAsOf>> {
    let rows = store.replay_history(address).await?;
    Ok(lotledger_core::as_of(&rows, as_of)?)
}

pub async fn balance(store: &AnyStore, args: BalanceArgs) -> Result<ExitCode> {
    let at = super::instant(args.at.as_deref())?;
    let as_of = args.as_of.as_deref().map(instant_or_seconds).transpose()?;
    let (total, details) = match as_of {
        Some(as_of) => {
            let lots = lots_as_of(store, &args.address, as_of).await?;
            lotledger_core::balance_details_as_of(&lots, as_of).context("balance overflow")?
        }
        None if args.details => store.balance_details(&args.address, at).await?,
        None => (store.balance(&args.address, at).await?, Vec::new()),
    };
    if args.details {
        if args.json {
            println!("{}", json::balance_details(total, &details));
        } else {
            for d in &details {
                println!("{}\t{}", show_ts(d.expiration_date), d.amount);
            }
            println!("total\t{total}");
        }
    } else {
        if args.json {
            println!("{}", Value::from(total.0));
        } else {
            println!("{total}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn history(store: &AnyStore, args: HistoryArgs) -> Result<ExitCode> {
    let selector = match (args.address, args.credit_ref) {
        (Some(a), None) => HistorySelector::Address(a),
        (None, Some(r)) => HistorySelector::CreditRef(r),
        _ => bail!("give an ADDRESS or --credit-ref HASH"),
    };
    let rows = store.history(&selector).await?;
    if args.json {
        println!(
            "{}",
            Value::Array(rows.iter().map(json::history_row).collect())
        );
    } else {
        for r in &rows {
            println!(
                "{}\t{}\t{}\t{}\t{}\texpires {}\t{}",
                r.credit_ref,
                r.credit_index,
                r.message_timestamp,
                r.address,
                r.amount,
                show_ts(r.expiration_date),
                r.payment_method.as_deref().unwrap_or("-"),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn lots(store: &AnyStore, args: LotsArgs) -> Result<ExitCode> {
    if let Some(as_of) = args.as_of.as_deref().map(instant_or_seconds).transpose()? {
        let lots = lots_as_of(store, &args.address, as_of).await?;
        for l in lots.iter().filter(|_| !args.json) {
            println!(
                "{}\t{}\t{}\t{} of {}\texpires {}\t{} debits",
                l.granted_at,
                l.credit_ref,
                l.credit_index,
                l.remaining,
                l.amount,
                show_ts(l.expiration_date),
                l.drained_by.len()
            );
        }
        if args.json {
            let items: Vec<Value> = lots
                .iter()
                .map(|l| {
                    serde_json::json!({
                        "credit_ref": l.credit_ref, "credit_index": l.credit_index,
                        "granted_at": l.granted_at.to_rfc3339(),
                        "expiration_date": l.expiration_date.map(|e| e.to_rfc3339()),
                        "amount": l.amount.0, "remaining": l.remaining.0,
                        "drained_by": l.drained_by.iter().map(|(r, i, t, a)| serde_json::json!({
                            "credit_ref": r, "credit_index": i, "at": t.to_rfc3339(), "amount": a.0,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            println!("{}", Value::Array(items));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let lots = store.lots(&args.address).await?;
    if args.json {
        println!("{}", Value::Array(lots.iter().map(json::lot).collect()));
    } else {
        for l in &lots {
            println!(
                "{}\t{}\t{}\t{}\texpires {}",
                l.message_timestamp,
                l.credit_ref,
                l.credit_index,
                l.amount_remaining,
                show_ts(l.expiration_date)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn message(store: &AnyStore, args: MessageArgs) -> Result<ExitCode> {
    let Some(record) = store.message(&args.item_hash).await? else {
        if args.json {
            println!("null");
        } else {
            println!("{}: unknown", args.item_hash);
        }
        return Ok(ExitCode::from(1));
    };
    let (status, error) = match &record.status {
        MessageStatus::Processed => ("processed", None),
        MessageStatus::Rejected { error } => ("rejected", Some(error.clone())),
    };
    if args.json {
        let mut out = serde_json::json!({"item_hash": record.item_hash, "status": status,
            "ignored": record.ignored, "error": error,
            "recorded_at": record.recorded_at.to_rfc3339()});
        if let (Some(e), Some(o)) = (&record.envelope, out.as_object_mut()) {
            o.insert(
                "envelope".into(),
                serde_json::json!({"type": e.message_type, "sender": e.sender, "chain": e.chain,
                    "channel": e.channel, "time": e.time, "item_type": e.item_type,
                    "item_content": e.item_content, "signature": e.signature}),
            );
        }
        println!("{out}");
    } else {
        println!("{}: {status}", record.item_hash);
        if let Some(e) = &record.envelope {
            println!(
                "  kept as received: {} from {} on {} at {}",
                e.message_type,
                e.sender.as_deref().unwrap_or("(no sender)"),
                e.channel.as_deref().unwrap_or("(no channel)"),
                e.time
            );
        }
        if let Some(reason) = &record.ignored {
            println!("  no credit effect: {reason}");
        }
        if let Some(e) = &error {
            println!("  error: {e}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
