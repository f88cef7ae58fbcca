//! `lotledger policy` and the schedule in force (issue 12, part 1).
//!
//! The ledger keeps its drain-policy schedule and every history row records the policy that
//! planned it. A schedule given by `--policy` (or `LOTLEDGER_POLICY`) is taken when it plans
//! no applied message differently (typically: a later activation appended), and kept by the
//! commands that write; anything else is refused until `policy set … --rederive` relabels the
//! rows and re-derives every address by replay.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use lotledger_core::{Schedule, Timestamp, balance_at};
use lotledger_ingest::AnyStore;
use lotledger_store::{Store, maintenance};
use serde_json::json;

#[derive(clap::Subcommand, Debug)]
pub enum PolicyCommand {
    /// The ledger's schedule (and whether --policy, if given, could replace it).
    Show,
    /// Keep SCHEDULE as the ledger's. Refused when it would plan an applied message
    /// differently, unless --rederive: then every history row takes the policy SCHEDULE gives
    /// at its instant and every address is re-derived by replay (resumable: run it again, or
    /// `repair`, after an interruption), and the balances that changed are reported.
    Set(SetArgs),
}

#[derive(clap::Args, Debug)]
pub struct SetArgs {
    /// e.g. `v1`, `v2`, `v1,v2@2027-01-01T00:00:00Z`.
    schedule: String,
    /// Re-derive the past under SCHEDULE.
    #[arg(long)]
    rederive: bool,
    /// The instant balances are reported at (RFC 3339). Default: the clock.
    #[arg(long)]
    now: Option<String>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

fn read(text: &str) -> Result<Schedule> {
    Schedule::parse(text).with_context(|| format!("drain policy schedule {text:?}"))
}

/// The schedule messages are planned by: the ledger's, or `configured` when it plans no
/// applied message differently (then kept, when `writes`).
pub async fn in_force(
    store: &AnyStore,
    configured: Option<&str>,
    writes: bool,
) -> Result<Schedule> {
    let stored = store.drain_schedule().await?;
    let Some(text) = configured else {
        return Ok(stored.unwrap_or_default());
    };
    let wanted = read(text)?;
    if stored.as_ref() == Some(&wanted) {
        return Ok(wanted);
    }
    let conflicts = store.policy_conflicts(&wanted).await?;
    if conflicts > 0 {
        bail!(
            "--policy {wanted} would plan {conflicts} applied history rows differently from the \
             ledger's schedule ({}); only a change that leaves every applied message as it was \
             planned (such as a later activation) is taken. To re-derive the past under it: \
             lotledger policy set '{wanted}' --rederive",
            stored.unwrap_or_default()
        );
    }
    if writes {
        store.set_drain_schedule(&wanted, false).await?;
        tracing::info!(schedule = %wanted, "drain policy schedule kept");
    }
    Ok(wanted)
}

pub async fn run(
    store: &AnyStore,
    configured: Option<&str>,
    command: PolicyCommand,
) -> Result<ExitCode> {
    match command {
        PolicyCommand::Show => {
            let stored = store.drain_schedule().await?;
            match &stored {
                Some(s) => println!("{s}"),
                None => println!("{} (never set: the default)", Schedule::default()),
            }
            if let Some(text) = configured {
                let wanted = read(text)?;
                let conflicts = store.policy_conflicts(&wanted).await?;
                if stored.unwrap_or_default() != wanted {
                    println!(
                        "--policy {wanted}: {}",
                        if conflicts == 0 {
                            "plans every applied message as it was: would be taken".to_string()
                        } else {
                            format!(
                                "would plan {conflicts} applied history rows differently: refused"
                            )
                        }
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Set(args) => set(store, args).await,
    }
}

async fn set(store: &AnyStore, args: SetArgs) -> Result<ExitCode> {
    let wanted = read(&args.schedule)?;
    let now = super::instant(args.now.as_deref())?;
    let stored = store.drain_schedule().await?;
    let conflicts = store.policy_conflicts(&wanted).await?;
    if !args.rederive {
        if conflicts > 0 {
            bail!(
                "{wanted} would plan {conflicts} applied history rows differently from the \
                 ledger's schedule ({}); add --rederive to relabel them and re-derive every \
                 address by replay",
                stored.unwrap_or_default()
            );
        }
        store.set_drain_schedule(&wanted, false).await?;
        println!("drain policy schedule: {wanted} (every applied message stays as planned)");
        return Ok(ExitCode::SUCCESS);
    }
    let pending = store.repair_checkpoint().await?;
    let mut relabeled = 0;
    if conflicts > 0 || stored.as_ref() != Some(&wanted) {
        // Marks every address as to be re-derived before any row changes: an interruption
        // from here on is resumed by `repair` or by this command.
        store.set_repair_checkpoint(Some("")).await?;
        relabeled = store.set_drain_schedule(&wanted, true).await?;
    } else if pending.is_none() {
        println!("drain policy schedule: {wanted} (already the ledger's; nothing to re-derive)");
        return Ok(ExitCode::SUCCESS);
    }
    let bar = super::progress_bar(0, "compare");
    let drifts = maintenance::verify(store, lotledger_ingest::moves(&bar)).await?;
    bar.finish_and_clear();
    let bar = super::progress_bar(0, "re-derive");
    let report = maintenance::repair(store, false, lotledger_ingest::moves(&bar)).await?;
    bar.finish_and_clear();
    let balance = |lots: &[lotledger_core::Lot], now: Timestamp| {
        balance_at(lots, now).map_or(i64::MAX, |b| b.0)
    };
    let changed: Vec<(String, i64, i64)> = drifts
        .iter()
        .map(|d| {
            (
                d.address.clone(),
                balance(&d.cached, now),
                balance(&d.replayed, now),
            )
        })
        .collect();
    if args.json {
        println!(
            "{}",
            json!({
                "schedule": wanted.to_string(),
                "relabeled_rows": relabeled,
                "rederived_addresses": report.addresses,
                "at": now.to_rfc3339(),
                "changed": changed.iter().map(|(a, before, after)| json!({
                    "address": a, "balance_before": before, "balance_after": after,
                })).collect::<Vec<_>>(),
            })
        );
    } else {
        println!("drain policy schedule: {wanted}");
        println!(
            "relabeled {relabeled} history rows; re-derived {} addresses{}",
            report.addresses,
            report
                .resumed_after
                .filter(|a| !a.is_empty())
                .map(|a| format!(" (resumed after {a})"))
                .unwrap_or_default()
        );
        println!("{} addresses' lots changed", changed.len());
        for (address, before, after) in &changed {
            println!(
                "  {address}: balance {before} -> {after} at {}",
                now.to_rfc3339()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
