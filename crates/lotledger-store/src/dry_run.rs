//! What applying messages would do, read from a store and written nowhere: [`dry_run`] for one
//! message, [`Rehearsal`] for a sequence, each seeing what the ones before it would have done.

use std::collections::{BTreeMap, BTreeSet};

use lotledger_core::dry_run::{AddressNow, Prediction, predict};
use lotledger_core::envelope::Envelope;
use lotledger_core::{Decision, IgnoreReason, Post, Rules, Timestamp, balance_at, classify};

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
    Rehearsal::new(store).post(post, rules, now).await
}

/// [`dry_run`] for a whole envelope, as [`crate::apply_envelope`] takes one.
pub async fn dry_run_envelope<S: Store + ?Sized>(
    store: &S,
    envelope: &Envelope,
    rules: &Rules,
    now: Timestamp,
) -> Result<DryRun, StoreError> {
    Rehearsal::new(store).envelope(envelope, rules, now).await
}

/// Messages dry-run in turn over a store, each against the ledger as the ones before it would
/// have left it (none of it written): the addresses they touch are read once from the store,
/// then kept here with what each message would have done to them.
pub struct Rehearsal<'s, S: Store + ?Sized> {
    store: &'s S,
    /// The touched addresses as the messages so far would leave them.
    ledger: BTreeMap<String, AddressNow>,
    /// Hashes these messages would record as processed.
    processed: BTreeSet<String>,
}

impl<'s, S: Store + ?Sized> Rehearsal<'s, S> {
    pub fn new(store: &'s S) -> Self {
        Rehearsal {
            store,
            ledger: BTreeMap::new(),
            processed: BTreeSet::new(),
        }
    }

    /// A whole envelope, as [`crate::apply_envelope`] takes one: a message that is not a POST
    /// is ignored, an envelope-level failure rejected. The caller verifies the signature.
    pub async fn envelope(
        &mut self,
        envelope: &Envelope,
        rules: &Rules,
        now: Timestamp,
    ) -> Result<DryRun, StoreError> {
        match envelope.post() {
            Ok(Some(post)) => self.post(&post, rules, now).await,
            Ok(None) => Ok(DryRun::Ignored(IgnoreReason::NotCreditType.to_string())),
            Err(rejection) => Ok(DryRun::Rejected(rejection.0)),
        }
    }

    /// One post, then kept as done for the next ones.
    pub async fn post(
        &mut self,
        post: &Post,
        rules: &Rules,
        now: Timestamp,
    ) -> Result<DryRun, StoreError> {
        let hash = &post.item_hash;
        let processed_before = self.processed.contains(hash)
            || self
                .store
                .message(hash)
                .await?
                .is_some_and(|r| r.status == MessageStatus::Processed);
        if processed_before {
            return Ok(DryRun::Ignored(ALREADY_PROCESSED.to_string()));
        }
        let op = match classify(post, rules) {
            Decision::Ignore(reason) => {
                self.processed.insert(hash.clone());
                return Ok(DryRun::Ignored(reason.to_string()));
            }
            Decision::Reject(r) => return Ok(DryRun::Rejected(r.0)),
            Decision::Apply(op) => op,
        };
        for address in op.touched_addresses() {
            self.load(address).await?;
        }
        if op.required_funds().is_some() {
            let lots = self.ledger.get(&op.sender).map_or(&[][..], |s| &s.lots[..]);
            let balance = balance_at(lots, now).ok_or(lotledger_core::PlanError::Overflow)?;
            if let Err(r) = op.check_funds(balance) {
                return Ok(DryRun::Rejected(r.0));
            }
        }
        // Rows stored under this hash before (an import): a hash these messages processed
        // returned above.
        let stored: BTreeSet<i32> = self
            .store
            .history(&HistorySelector::CreditRef(hash.clone()))
            .await?
            .iter()
            .map(|r| r.credit_index)
            .collect();
        let prediction = predict(&op, &self.ledger, &stored, now)?;
        self.fold(hash, &prediction);
        Ok(DryRun::Processed(prediction))
    }

    /// Reads `address` from the store, unless already held.
    async fn load(&mut self, address: &str) -> Result<(), StoreError> {
        if self.ledger.contains_key(address) {
            return Ok(());
        }
        let mut history = self.store.replay_history(address).await?;
        for row in &mut history {
            row.address = address.to_string();
        }
        let lots = self.store.lots(address).await?;
        self.ledger
            .insert(address.to_string(), AddressNow { lots, history });
        Ok(())
    }

    /// Keeps what a processed message would have done.
    fn fold(&mut self, hash: &str, p: &Prediction) {
        for (address, state) in self.ledger.iter_mut() {
            if !p.balances.contains_key(address) {
                continue;
            }
            state.lots = p
                .lots_after
                .iter()
                .filter(|l| &l.address == address)
                .cloned()
                .collect();
            state
                .history
                .extend(p.rows.iter().filter(|r| &r.address == address).cloned());
        }
        self.processed.insert(hash.to_string());
    }
}
