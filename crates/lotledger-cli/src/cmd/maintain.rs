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
    /// Also check that every id in history, lots and message records names an address or a
    /// reference (one scan of each table; a row that names nothing is left out of every read).
    #[arg(long)]
    integrity: bool,
}

pub async fn repair(store: &AnyStore, args: RepairArgs) -> Result<ExitCode> {
    let bar = super::progress_bar(0, "repair");
    let report = maintenance::repair(store, args.restart, lotledger_ingest::moves(&bar)).await?;
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
    let dangling = if args.integrity {
        let bar = super::progress_bar(0, "integrity");
        let found = maintenance::integrity(store, lotledger_ingest::moves(&bar)).await?;
        bar.finish_and_clear();
        Some(found)
    } else {
        None
    };
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
        let mut report = json!({"addresses": checked, "drifted": drifted});
        if let Some(found) = &dangling {
            report["dangling"] = found
                .iter()
                .map(|d| json!({"column": d.check.column(), "names": d.check.target(), "rows": d.rows}))
                .collect();
        }
        println!("{report}");
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
    if let (Some(found), false) = (&dangling, args.json) {
        for d in found {
            let (rows, name) = if d.rows == 1 {
                ("row", "names")
            } else {
                ("rows", "name")
            };
            println!(
                "dangling: {} {rows} of {} {name} no row of {} (repair cannot mend this)",
                d.rows,
                d.check.column(),
                d.check.target()
            );
        }
        if found.is_empty() {
            println!(
                "every id names its row ({} checks)",
                lotledger_store::IdCheck::ALL.len()
            );
        }
    }
    let dangles = dangling.as_ref().is_some_and(|found| !found.is_empty());
    Ok(if drifts.is_empty() && !dangles {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
