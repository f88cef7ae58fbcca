//! `repair` and `verify`.

use std::process::ExitCode;

use anyhow::Result;
use lotledger_store::maintenance;
use serde_json::json;

use lotledger_ingest::AnyStore;

#[derive(clap::Args, Debug)]
pub struct RepairArgs {
    /// Start over instead of resuming an interrupted repair.
    #[arg(long)]
    restart: bool,
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    #[arg(long)]
    json: bool,
}

pub async fn repair(store: &AnyStore, args: RepairArgs) -> Result<ExitCode> {
    let bar = super::progress_bar(0, "repair");
    let report = maintenance::repair(store, args.restart, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .await?;
    bar.finish_and_clear();
    match report.resumed_after {
        Some(after) => println!(
            "rebuilt {} addresses (resumed after {after})",
            report.addresses
        ),
        None => println!("rebuilt {} addresses", report.addresses),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn verify(store: &AnyStore, args: VerifyArgs) -> Result<ExitCode> {
    let bar = super::progress_bar(0, "verify");
    let mut checked = 0;
    let drifts = maintenance::verify(store, |done, total| {
        checked = total;
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .await?;
    bar.finish_and_clear();
    if args.json {
        let drifted: Vec<_> = drifts
            .iter()
            .map(|d| {
                json!({
                    "address": d.address,
                    "cached": d.cached.iter().map(lotledger_core::json::lot).collect::<Vec<_>>(),
                    "replayed": d.replayed.iter().map(lotledger_core::json::lot).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", json!({"addresses": checked, "drifted": drifted}));
    } else if drifts.is_empty() {
        println!("cache equals replay for all {checked} addresses");
    } else {
        for d in &drifts {
            println!(
                "drift: {} ({} cached lots, {} replayed lots)",
                d.address,
                d.cached.len(),
                d.replayed.len()
            );
        }
        println!(
            "{} of {checked} addresses drifted; `lotledger repair` rebuilds them",
            drifts.len()
        );
    }
    Ok(if drifts.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
