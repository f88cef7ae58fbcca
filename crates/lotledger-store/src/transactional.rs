//! The writing [`Store`] methods, written once over a backend's write transactions: a backend
//! implements [`Transactional`] (how to open a write transaction, and its batch cache) and its
//! `Store::apply`, `reject`, `import_history`, `insert_raw`, `rebuild` and
//! `apply_batch_with_progress` are the functions here, written into its `impl Store` by
//! [`transactional_writes!`](crate::transactional_writes).

use std::sync::Arc;

use lotledger_core::node_json::StoredEnvelope;
use lotledger_core::{HistoryRow, Lot, Post, Rules, Timestamp};

use crate::batch::{BatchCache, Commit};
use crate::{
    BatchItem, IngestProgress, LedgerTx, MessageRecord, Outcome, Store, StoreError, writer,
};

/// The writing methods of `impl Store for` a [`Transactional`] backend, each a call of this
/// module's function of the same name (the caller's crate depends on `lotledger_core`).
#[macro_export]
macro_rules! transactional_writes {
    () => {
        async fn apply(
            &self,
            post: &::lotledger_core::Post,
            rules: &::lotledger_core::Rules,
            now: ::lotledger_core::Timestamp,
        ) -> Result<$crate::Outcome, $crate::StoreError> {
            $crate::transactional::apply(self, post, rules, now).await
        }

        async fn apply_batch_with_progress(
            &self,
            items: &[$crate::BatchItem],
            rules: &::lotledger_core::Rules,
            now: ::lotledger_core::Timestamp,
            progress: Option<&$crate::IngestProgress>,
        ) -> Result<Vec<$crate::Outcome>, $crate::StoreError> {
            $crate::transactional::apply_batch_with_progress(self, items, rules, now, progress)
                .await
        }

        async fn apply_batches(
            &self,
            rules: &::lotledger_core::Rules,
            jobs: ::tokio::sync::mpsc::Receiver<$crate::BatchJob>,
            done: ::tokio::sync::mpsc::Sender<Result<Vec<$crate::Outcome>, $crate::StoreError>>,
        ) {
            $crate::batch::apply_batches_ahead(self, rules, jobs, done).await
        }

        async fn reject(
            &self,
            item_hash: &str,
            error: &str,
            envelope: Option<::std::sync::Arc<::lotledger_core::node_json::StoredEnvelope>>,
            now: ::lotledger_core::Timestamp,
        ) -> Result<$crate::Outcome, $crate::StoreError> {
            $crate::transactional::reject(self, item_hash, error, envelope, now).await
        }

        async fn import_history(
            &self,
            rows: &[::lotledger_core::HistoryRow],
            now: ::lotledger_core::Timestamp,
        ) -> Result<u64, $crate::StoreError> {
            $crate::transactional::import_history(self, rows, now).await
        }

        async fn insert_raw(
            &self,
            rows: &[::lotledger_core::HistoryRow],
            lots: &[::lotledger_core::Lot],
            records: &[$crate::MessageRecord],
            now: ::lotledger_core::Timestamp,
        ) -> Result<(), $crate::StoreError> {
            $crate::transactional::insert_raw(self, rows, lots, records, now).await
        }

        async fn rebuild(&self, batch: &[$crate::AddressRows]) -> Result<(), $crate::StoreError> {
            $crate::transactional::Transactional::rebuild_addresses(self, batch).await
        }
    };
}

/// A [`Store`] whose writes are [`LedgerTx`] transactions.
pub trait Transactional: Store {
    type Tx: Commit + Send + 'static;

    /// Opens a write transaction.
    fn write(&self) -> impl std::future::Future<Output = Result<Self::Tx, StoreError>> + Send;

    /// A read-only transaction on a snapshot of the store, whose [`Commit::stamps`] tell the
    /// store generation it sees.
    type Snapshot: Commit;

    /// A read snapshot to plan a batch ahead on while the batch before is written
    /// ([`crate::batch::apply_batches_ahead`]); `None` (the default) where the backend has
    /// none, so each batch is applied in turn.
    fn snapshot(
        &self,
    ) -> impl std::future::Future<Output = Result<Option<Self::Snapshot>, StoreError>> + Send {
        async { Ok(None) }
    }

    /// Where the backend counts how batches planned ahead ended.
    fn ahead_counters(&self) -> Option<&crate::batch::AheadCounters> {
        None
    }

    /// The cache batches carry their addresses' states in, where the backend keeps one.
    fn batch_cache(&self) -> Option<&std::sync::Mutex<BatchCache>> {
        None
    }

    /// [`Store::rebuild`]; by default [`rebuild`] (re-derived through [`LedgerTx`]), or a
    /// backend's own way of giving the same lots.
    fn rebuild_addresses(
        &self,
        batch: &[crate::AddressRows],
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send
    where
        Self: Sized,
    {
        let addresses = crate::addresses_of(batch);
        async move { rebuild(self, &addresses).await }
    }
}

/// [`Store::apply`].
pub async fn apply<S: Transactional>(
    store: &S,
    post: &Post,
    rules: &Rules,
    now: Timestamp,
) -> Result<Outcome, StoreError> {
    let mut tx = store.write().await?;
    let outcome = writer::apply(&mut tx, post, rules, now).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// [`Store::reject`].
pub async fn reject<S: Transactional>(
    store: &S,
    item_hash: &str,
    error: &str,
    envelope: Option<Arc<StoredEnvelope>>,
    now: Timestamp,
) -> Result<Outcome, StoreError> {
    let mut tx = store.write().await?;
    let outcome = writer::reject(&mut tx, item_hash, error, envelope, now).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// [`Store::import_history`].
pub async fn import_history<S: Transactional>(
    store: &S,
    rows: &[HistoryRow],
    now: Timestamp,
) -> Result<u64, StoreError> {
    let mut tx = store.write().await?;
    let inserted = writer::import_history(&mut tx, rows, now).await?;
    tx.commit().await?;
    Ok(inserted)
}

/// [`Store::insert_raw`].
pub async fn insert_raw<S: Transactional>(
    store: &S,
    rows: &[HistoryRow],
    lots: &[Lot],
    records: &[MessageRecord],
    now: Timestamp,
) -> Result<(), StoreError> {
    let mut tx = store.write().await?;
    writer::insert_raw(&mut tx, rows, lots, records, now).await?;
    tx.commit().await
}

/// [`Store::rebuild`]: the addresses locked, then re-derived by replay, in one transaction.
pub async fn rebuild<S: Transactional>(store: &S, addresses: &[String]) -> Result<(), StoreError> {
    let mut tx = store.write().await?;
    let refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
    tx.lock("", &refs).await?;
    writer::rederive_many(&mut tx, &refs).await?;
    tx.commit().await
}

/// [`Store::apply_batch_with_progress`]: [`crate::batch::apply_batch_committed`] over the
/// backend's write transactions and batch cache.
pub async fn apply_batch_with_progress<S: Transactional>(
    store: &S,
    items: &[BatchItem],
    rules: &Rules,
    now: Timestamp,
    progress: Option<&IngestProgress>,
) -> Result<Vec<Outcome>, StoreError> {
    crate::batch::apply_batch_committed(
        store,
        || store.write(),
        items,
        rules,
        now,
        progress,
        store.batch_cache(),
    )
    .await
}
