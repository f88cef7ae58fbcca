//! The store as the API sees it: an object-safe view of [`Store`] (boxed futures), so that
//! handlers are not generic and one router serves any backend.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use lotledger_core::envelope::Envelope;
use lotledger_core::node_json::StoredEnvelope;
use lotledger_core::{BalanceDetail, Credits, HistoryRow, Lot, Rules, Timestamp};
use lotledger_store::dry_run::{DryRun, dry_run_envelope};
use lotledger_store::{
    BalancesQuery, BatchItem, EnvelopeScan, HistorySelector, MessageRecord, Outcome, Store,
    StoreError, apply_one_by_one,
};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// What the API needs of a store. Implemented for every [`Store`].
pub trait Backend: Send + Sync + 'static {
    /// [`Store::concurrent_writers`].
    fn concurrent_writers(&self) -> usize;
    /// [`Store::apply_batch`]; a lone item takes the one-transaction path.
    fn apply_batch<'a>(
        &'a self,
        items: &'a [BatchItem],
        rules: &'a Rules,
        now: Timestamp,
    ) -> BoxFuture<'a, Vec<Outcome>>;
    fn balance<'a>(&'a self, address: &'a str, at: Timestamp) -> BoxFuture<'a, Credits>;
    fn balance_details<'a>(
        &'a self,
        address: &'a str,
        at: Timestamp,
    ) -> BoxFuture<'a, (Credits, Vec<BalanceDetail>)>;
    fn address_history<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Vec<HistoryRow>>;
    fn credit_balances<'a>(
        &'a self,
        query: BalancesQuery<'a>,
    ) -> BoxFuture<'a, Vec<(String, Credits)>>;
    fn count_credit_balances(&self, at: Timestamp, min_balance: i64) -> BoxFuture<'_, u64>;
    fn consumed_credits<'a>(
        &'a self,
        address: Option<&'a str>,
        resource: Option<&'a str>,
    ) -> BoxFuture<'a, Credits>;
    fn message<'a>(&'a self, item_hash: &'a str) -> BoxFuture<'a, Option<MessageRecord>>;
    /// [`Store::lots`].
    fn lots<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Vec<Lot>>;
    /// [`Store::replay_history`].
    fn replay_history<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Vec<HistoryRow>>;
    /// [`Store::addresses`].
    fn addresses(&self) -> BoxFuture<'_, Vec<String>>;
    /// [`Store::expiring_lots`].
    fn expiring_lots(
        &self,
        now: Timestamp,
        before: Timestamp,
        offset: u64,
        limit: u64,
    ) -> BoxFuture<'_, Vec<Lot>>;
    /// [`Store::expiring_total`].
    fn expiring_total(&self, now: Timestamp, before: Timestamp) -> BoxFuture<'_, (Credits, u64)>;
    /// [`Store::kept_messages`].
    fn kept_messages<'a>(
        &'a self,
        scan: &'a EnvelopeScan,
    ) -> BoxFuture<'a, Vec<Arc<StoredEnvelope>>>;
    /// [`lotledger_store::dry_run::dry_run_envelope`].
    fn dry_run<'a>(
        &'a self,
        envelope: &'a Envelope,
        rules: &'a Rules,
        now: Timestamp,
    ) -> BoxFuture<'a, DryRun>;
}

impl<S: Store + 'static> Backend for S {
    fn concurrent_writers(&self) -> usize {
        Store::concurrent_writers(self)
    }
    fn apply_batch<'a>(
        &'a self,
        items: &'a [BatchItem],
        rules: &'a Rules,
        now: Timestamp,
    ) -> BoxFuture<'a, Vec<Outcome>> {
        if items.len() == 1 {
            Box::pin(apply_one_by_one(self, items, rules, now))
        } else {
            Box::pin(Store::apply_batch(self, items, rules, now))
        }
    }
    fn balance<'a>(&'a self, address: &'a str, at: Timestamp) -> BoxFuture<'a, Credits> {
        Box::pin(Store::balance(self, address, at))
    }
    fn balance_details<'a>(
        &'a self,
        address: &'a str,
        at: Timestamp,
    ) -> BoxFuture<'a, (Credits, Vec<BalanceDetail>)> {
        Box::pin(Store::balance_details(self, address, at))
    }
    fn address_history<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Vec<HistoryRow>> {
        Box::pin(async move {
            Store::history(self, &HistorySelector::Address(address.to_string())).await
        })
    }
    fn credit_balances<'a>(
        &'a self,
        query: BalancesQuery<'a>,
    ) -> BoxFuture<'a, Vec<(String, Credits)>> {
        Box::pin(async move { Store::credit_balances(self, &query).await })
    }
    fn count_credit_balances(&self, at: Timestamp, min_balance: i64) -> BoxFuture<'_, u64> {
        Box::pin(Store::count_credit_balances(self, at, min_balance))
    }
    fn consumed_credits<'a>(
        &'a self,
        address: Option<&'a str>,
        resource: Option<&'a str>,
    ) -> BoxFuture<'a, Credits> {
        Box::pin(Store::consumed_credits(self, address, resource))
    }
    fn message<'a>(&'a self, item_hash: &'a str) -> BoxFuture<'a, Option<MessageRecord>> {
        Box::pin(Store::message(self, item_hash))
    }
    fn kept_messages<'a>(
        &'a self,
        scan: &'a EnvelopeScan,
    ) -> BoxFuture<'a, Vec<Arc<StoredEnvelope>>> {
        Box::pin(Store::kept_messages(self, scan))
    }
    fn lots<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Vec<Lot>> {
        Box::pin(Store::lots(self, address))
    }
    fn replay_history<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Vec<HistoryRow>> {
        Box::pin(Store::replay_history(self, address))
    }
    fn addresses(&self) -> BoxFuture<'_, Vec<String>> {
        Box::pin(Store::addresses(self))
    }
    fn expiring_lots(
        &self,
        now: Timestamp,
        before: Timestamp,
        offset: u64,
        limit: u64,
    ) -> BoxFuture<'_, Vec<Lot>> {
        Box::pin(Store::expiring_lots(self, now, before, offset, limit))
    }
    fn expiring_total(&self, now: Timestamp, before: Timestamp) -> BoxFuture<'_, (Credits, u64)> {
        Box::pin(Store::expiring_total(self, now, before))
    }
    fn dry_run<'a>(
        &'a self,
        envelope: &'a Envelope,
        rules: &'a Rules,
        now: Timestamp,
    ) -> BoxFuture<'a, DryRun> {
        Box::pin(dry_run_envelope(self, envelope, rules, now))
    }
}
