//! The writer logic shared by every backend, on top of [`LedgerTx`].

use std::collections::BTreeSet;
use std::sync::Arc;

use lotledger_core::node_json::StoredEnvelope;

use lotledger_core::{
    Decision, HistoryRow, Lot, LotBook, Post, Rules, Timestamp, classify, replay,
};

use crate::{LedgerTx, MessageRecord, MessageStatus, Outcome, StoreError};

/// Applies one post inside `tx` (SPEC Part I 3.1–3.2). The caller commits.
pub async fn apply<T: LedgerTx>(
    tx: &mut T,
    post: &Post,
    rules: &Rules,
    now: Timestamp,
) -> Result<Outcome, StoreError> {
    apply_classified(tx, post, classify(post, rules), now).await
}

/// [`apply`] for a post already classified under the rules (`decision` = `classify(post,
/// rules)`; group commit classifies each post once, to find what to load).
pub async fn apply_classified<T: LedgerTx>(
    tx: &mut T,
    post: &Post,
    decision: Decision,
    now: Timestamp,
) -> Result<Outcome, StoreError> {
    let touched: Vec<&str> = match &decision {
        Decision::Apply(op) => op.touched_addresses().into_iter().collect(),
        _ => Vec::new(),
    };
    tx.lock(&post.item_hash, &touched).await?;
    if matches!(
        tx.message_status(&post.item_hash).await?,
        Some(MessageStatus::Processed)
    ) {
        return Ok(Outcome::AlreadyApplied);
    }
    let record = |status, ignored: Option<String>| MessageRecord {
        item_hash: post.item_hash.clone(),
        status,
        ignored,
        recorded_at: now,
        envelope: post.envelope.clone(),
    };
    let op = match decision {
        Decision::Ignore(reason) => {
            tx.record_message(&record(MessageStatus::Processed, Some(reason.to_string())))
                .await?;
            return Ok(Outcome::Ignored(reason));
        }
        Decision::Reject(r) => {
            tx.record_message(&record(
                MessageStatus::Rejected { error: r.0.clone() },
                None,
            ))
            .await?;
            return Ok(Outcome::Rejected(r.0));
        }
        Decision::Apply(ref op) => op,
    };
    if op.required_funds().is_some() {
        let balance = tx.balance(&op.sender, now).await?;
        if let Err(r) = op.check_funds(balance) {
            tx.record_message(&record(
                MessageStatus::Rejected { error: r.0.clone() },
                None,
            ))
            .await?;
            return Ok(Outcome::Rejected(r.0));
        }
    }
    let demand = op.drain_demand();
    let mut book = LotBook::new();
    if !demand.is_empty() {
        book.insert(tx.drainable_lots(&demand, op.policy, op.ts).await?);
    }
    let plan = op.plan(&mut book)?;
    // History first: a store may key lots by what the history rows introduce (interned ids).
    let inserted = tx.insert_rows(&plan.rows, now).await?;
    tx.update_lots(&plan.drained_lots).await?;
    tx.insert_lots(&plan.new_lots).await?;
    let conflicted = usize::try_from(inserted).ok() != Some(plan.rows.len());
    for address in touched {
        let (later_any, later_debit) = tx.rows_after(address, op.ts, &op.item_hash).await?;
        if plan.rederives(address, later_any, later_debit, conflicted) {
            rederive(tx, address).await?;
        }
    }
    tx.record_message(&record(MessageStatus::Processed, None))
        .await?;
    Ok(Outcome::Processed)
}

/// Records an envelope-level rejection, unless the hash was already processed.
pub async fn reject<T: LedgerTx>(
    tx: &mut T,
    item_hash: &str,
    error: &str,
    envelope: Option<Arc<StoredEnvelope>>,
    now: Timestamp,
) -> Result<Outcome, StoreError> {
    tx.lock(item_hash, &[]).await?;
    if matches!(
        tx.message_status(item_hash).await?,
        Some(MessageStatus::Processed)
    ) {
        return Ok(Outcome::AlreadyApplied);
    }
    tx.record_message(&MessageRecord {
        item_hash: item_hash.to_string(),
        status: MessageStatus::Rejected {
            error: error.to_string(),
        },
        ignored: None,
        recorded_at: now,
        envelope,
    })
    .await?;
    Ok(Outcome::Rejected(error.to_string()))
}

/// Inserts raw rows and re-derives every touched address.
pub async fn import_history<T: LedgerTx>(
    tx: &mut T,
    rows: &[HistoryRow],
    now: Timestamp,
) -> Result<u64, StoreError> {
    let addresses: BTreeSet<&str> = rows.iter().map(|r| r.address.as_str()).collect();
    let addresses: Vec<&str> = addresses.into_iter().collect();
    tx.lock("", &addresses).await?;
    let inserted = tx.insert_rows(rows, now).await?;
    for address in addresses {
        rederive(tx, address).await?;
    }
    Ok(inserted)
}

/// Rebuilds one address's lots from its history.
pub async fn rederive<T: LedgerTx>(tx: &mut T, address: &str) -> Result<(), StoreError> {
    let rows = tx.address_history(address).await?;
    let lots = replay(&rows)?;
    tx.replace_lots(address, &lots).await
}

/// Rebuilds the lots of many addresses from their history: one read of all their rows, one
/// delete, one multi-row insert.
pub async fn rederive_many<T: LedgerTx>(tx: &mut T, addresses: &[&str]) -> Result<(), StoreError> {
    let rows = tx.replay_histories(addresses).await?;
    let mut lots = Vec::new();
    for group in rows.chunk_by(|a, b| a.address == b.address) {
        lots.extend(replay(group)?);
    }
    tx.delete_lots_of(addresses).await?;
    tx.insert_lots(&lots).await
}

/// [`crate::Store::insert_raw`] on an open transaction: rows, then lots, then records.
pub async fn insert_raw<T: LedgerTx>(
    tx: &mut T,
    rows: &[HistoryRow],
    lots: &[Lot],
    records: &[MessageRecord],
    now: Timestamp,
) -> Result<(), StoreError> {
    tx.insert_rows(rows, now).await?;
    tx.insert_lots(lots).await?;
    tx.record_messages(records).await
}
