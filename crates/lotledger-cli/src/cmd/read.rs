//! Read commands: balance, history, lots, message. `--json` prints the shapes of the
//! conformance format, so that scripts can drive the CLI.

use std::process::ExitCode;

use anyhow::{Result, bail};
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
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct MessageArgs {
    item_hash: String,
    #[arg(long)]
    json: bool,
}

fn show_ts(t: Option<lotledger_core::Timestamp>) -> String {
    t.map_or_else(|| "never".to_string(), |t| t.to_rfc3339())
}

pub async fn balance(store: &AnyStore, args: BalanceArgs) -> Result<ExitCode> {
    let at = super::instant(args.at.as_deref())?;
    if args.details {
        let (total, details) = store.balance_details(&args.address, at).await?;
        if args.json {
            println!("{}", json::balance_details(total, &details));
        } else {
            for d in &details {
                println!("{}\t{}", show_ts(d.expiration_date), d.amount);
            }
            println!("total\t{total}");
        }
    } else {
        let total = store.balance(&args.address, at).await?;
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
