//! [`dry_run`]: what applying a message would do, read from a store and written nowhere.

use std::collections::{BTreeMap, BTreeSet};

use lotledger_core::dry_run::{AddressNow, Prediction, predict};
use lotledger_core::envelope::Envelope;
use lotledger_core::{Decision, IgnoreReason, Post, Rules, Timestamp, classify};

use crate::{HistorySelector, MessageStatus, Store, StoreError};

/// What applying a message would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DryRun {
    /// It would be applied, with these effects.
    Processed(Prediction),
    /// It would be recorded as rejected, for this reason; nothing else would change.
    Rejected(String),
    /// It would change nothing, for this reason (not a credit post, already processed, …).
    Ignored(String),
}

/// Why a message processed before would change nothing.
pub const ALREADY_PROCESSED: &str = "this item hash was already processed";

/// What [`Store::apply`] of `post` at `now` would do, from the store's reads only: the same
/// classification, funds check, eager plan and re-derivation decisions as the writer. The
/// reads are not one snapshot: a write landing between them may make the answer stale, never
/// wrong for the ledger it read.
pub async fn dry_run<S: Store + ?Sized>(
    store: &S,
    post: &Post,
    rules: &Rules,
    now: Timestamp,
) -> Result<DryRun, StoreError> {
    if let Some(record) = store.message(&post.item_hash).await?
        && record.status == MessageStatus::Processed
    {
        return Ok(DryRun::Ignored(ALREADY_PROCESSED.to_string()));
    }
    let op = match classify(post, rules) {
        Decision::Ignore(reason) => return Ok(DryRun::Ignored(reason.to_string())),
        Decision::Reject(r) => return Ok(DryRun::Rejected(r.0)),
        Decision::Apply(op) => op,
    };
    if op.required_funds().is_some() {
        let balance = store.balance(&op.sender, now).await?;
        if let Err(r) = op.check_funds(balance) {
            return Ok(DryRun::Rejected(r.0));
        }
    }
    let mut ledger = BTreeMap::new();
    for address in op.touched_addresses() {
        let mut history = store.replay_history(address).await?;
        for row in &mut history {
            row.address = address.to_string();
        }
        let lots = store.lots(address).await?;
        ledger.insert(address.to_string(), AddressNow { lots, history });
    }
    let stored: BTreeSet<i32> = store
        .history(&HistorySelector::CreditRef(post.item_hash.clone()))
        .await?
        .iter()
        .map(|r| r.credit_index)
        .collect();
    Ok(DryRun::Processed(predict(&op, &ledger, &stored, now)?))
}

/// [`dry_run`] for a whole envelope, as [`crate::apply_envelope`] takes one: a message that is
/// not a POST is ignored, an envelope-level failure rejected. The caller verifies the
/// signature.
pub async fn dry_run_envelope<S: Store + ?Sized>(
    store: &S,
    envelope: &Envelope,
    rules: &Rules,
    now: Timestamp,
) -> Result<DryRun, StoreError> {
    match envelope.post() {
        Ok(Some(post)) => dry_run(store, &post, rules, now).await,
        Ok(None) => Ok(DryRun::Ignored(IgnoreReason::NotCreditType.to_string())),
        Err(rejection) => Ok(DryRun::Rejected(rejection.0)),
    }
}
