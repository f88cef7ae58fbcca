//! The backend chosen at run time from the database URL's scheme.

use std::sync::Arc;

use lotledger_core::node_json::StoredEnvelope;
use lotledger_core::{BalanceDetail, Credits, HistoryRow, Lot, Post, Rules, Timestamp};
use lotledger_store::{
    AddressRows, BalancesQuery, BatchItem, BatchJob, Drift, EnvelopeScan, Footprint,
    HistorySelector, IngestProgress, MessageRecord, Outcome, Store, StoreError, TableCounts,
};
use lotledger_store_pg::PgStore;
use lotledger_store_sqlite::SqliteStore;

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// SQLite (`sqlite://…`, the default) or PostgreSQL (`postgres://…`, `postgresql://…`).
#[derive(Clone, Debug)]
pub enum AnyStore {
    Sqlite(SqliteStore),
    Pg(PgStore),
}

impl AnyStore {
    /// Opens the store at `url`, creating and migrating its schema as needed.
    pub async fn open(url: &str) -> Result<AnyStore, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(AnyStore::Sqlite(SqliteStore::open(url).await?))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(AnyStore::Pg(PgStore::open(url).await?))
        } else {
            Err(StoreError::Config(format!(
                "unsupported database URL {url:?}: use sqlite://PATH or postgres://USER@HOST:PORT/DB"
            )))
        }
    }

    /// How the batches this store planned ahead ended (`Store::apply_batches`).
    pub fn ahead_counters(&self) -> Option<&lotledger_store::batch::AheadCounters> {
        use lotledger_store::transactional::Transactional;
        match self {
            AnyStore::Sqlite(s) => s.ahead_counters(),
            AnyStore::Pg(s) => s.ahead_counters(),
        }
    }

    /// How balance reads used the addresses' kept sums (PostgreSQL; SQLite keeps none).
    pub fn balance_cache_counts(&self) -> Option<lotledger_store_pg::BalanceCacheCounts> {
        match self {
            AnyStore::Sqlite(_) => None,
            AnyStore::Pg(s) => Some(s.balance_cache_counts()),
        }
    }

    /// How far the database is behind its primary when it is a PostgreSQL hot standby
    /// (`None` otherwise).
    pub async fn replica_lag(&self) -> Result<Option<lotledger_store_pg::ReplicaLag>, StoreError> {
        match self {
            AnyStore::Sqlite(_) => Ok(None),
            AnyStore::Pg(s) => s.replica_lag().await,
        }
    }

    /// Vacuums the history table (PostgreSQL: `PgStore::vacuum_history`); `false` on SQLite,
    /// which has nothing of the kind to do.
    pub async fn vacuum_history(&self) -> Result<bool, StoreError> {
        match self {
            AnyStore::Sqlite(_) => Ok(false),
            AnyStore::Pg(s) => s.vacuum_history().await.map(|()| true),
        }
    }

    /// Drops the sums kept for balance reads, and the lots the last batches left of
    /// `written_elsewhere` (PostgreSQL; SQLite keeps no sums).
    pub fn forget_kept_balances(&self, written_elsewhere: Option<&str>) {
        if let AnyStore::Pg(s) = self {
            s.forget_kept_balances(written_elsewhere);
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStore::Sqlite($s) => $e.await,
            AnyStore::Pg($s) => $e.await,
        }
    };
}

impl Store for AnyStore {
    fn concurrent_writers(&self) -> usize {
        match self {
            AnyStore::Sqlite(s) => s.concurrent_writers(),
            AnyStore::Pg(s) => s.concurrent_writers(),
        }
    }
    fn maintenance_batch(&self) -> lotledger_store::maintenance::BatchLimit {
        match self {
            AnyStore::Sqlite(s) => s.maintenance_batch(),
            AnyStore::Pg(s) => s.maintenance_batch(),
        }
    }
    async fn migrate(&self) -> Result<lotledger_store::Migrated, StoreError> {
        dispatch!(self, s => s.migrate())
    }
    async fn drain_schedule(&self) -> Result<Option<lotledger_core::Schedule>, StoreError> {
        dispatch!(self, s => s.drain_schedule())
    }
    async fn policy_conflicts(
        &self,
        schedule: &lotledger_core::Schedule,
    ) -> Result<u64, StoreError> {
        dispatch!(self, s => s.policy_conflicts(schedule))
    }
    async fn set_drain_schedule(
        &self,
        schedule: &lotledger_core::Schedule,
        relabel: bool,
    ) -> Result<u64, StoreError> {
        dispatch!(self, s => s.set_drain_schedule(schedule, relabel))
    }
    fn migrated(&self) -> lotledger_store::Migrated {
        match self {
            AnyStore::Sqlite(s) => s.migrated(),
            AnyStore::Pg(s) => s.migrated(),
        }
    }
    async fn insert_raw(
        &self,
        rows: &[HistoryRow],
        lots: &[Lot],
        records: &[MessageRecord],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.insert_raw(rows, lots, records, now))
    }
    async fn apply(
        &self,
        post: &Post,
        rules: &Rules,
        now: Timestamp,
    ) -> Result<Outcome, StoreError> {
        dispatch!(self, s => s.apply(post, rules, now))
    }
    async fn apply_batch_with_progress(
        &self,
        items: &[BatchItem],
        rules: &Rules,
        now: Timestamp,
        progress: Option<&IngestProgress>,
    ) -> Result<Vec<Outcome>, StoreError> {
        dispatch!(self, s => s.apply_batch_with_progress(items, rules, now, progress))
    }
    async fn apply_batches(
        &self,
        rules: &Rules,
        jobs: tokio::sync::mpsc::Receiver<BatchJob>,
        done: tokio::sync::mpsc::Sender<Result<Vec<Outcome>, StoreError>>,
    ) {
        dispatch!(self, s => s.apply_batches(rules, jobs, done))
    }
    async fn ingest_progress(&self, source: &str) -> Result<Option<IngestProgress>, StoreError> {
        dispatch!(self, s => s.ingest_progress(source))
    }
    async fn reject(
        &self,
        item_hash: &str,
        error: &str,
        envelope: Option<Arc<StoredEnvelope>>,
        now: Timestamp,
    ) -> Result<Outcome, StoreError> {
        dispatch!(self, s => s.reject(item_hash, error, envelope, now))
    }
    async fn import_history(&self, rows: &[HistoryRow], now: Timestamp) -> Result<u64, StoreError> {
        dispatch!(self, s => s.import_history(rows, now))
    }
    async fn dangling(&self, check: lotledger_store::IdCheck) -> Result<u64, StoreError> {
        dispatch!(self, s => s.dangling(check))
    }
    async fn balance(&self, address: &str, at: Timestamp) -> Result<Credits, StoreError> {
        dispatch!(self, s => s.balance(address, at))
    }
    async fn balance_details(
        &self,
        address: &str,
        at: Timestamp,
    ) -> Result<(Credits, Vec<BalanceDetail>), StoreError> {
        dispatch!(self, s => s.balance_details(address, at))
    }
    async fn history(&self, selector: &HistorySelector) -> Result<Vec<HistoryRow>, StoreError> {
        dispatch!(self, s => s.history(selector))
    }
    async fn lots(&self, address: &str) -> Result<Vec<Lot>, StoreError> {
        dispatch!(self, s => s.lots(address))
    }
    async fn addresses(&self) -> Result<Vec<String>, StoreError> {
        dispatch!(self, s => s.addresses())
    }
    async fn address_rows(&self) -> Result<Vec<AddressRows>, StoreError> {
        dispatch!(self, s => s.address_rows())
    }
    async fn rebuild(&self, batch: &[AddressRows]) -> Result<(), StoreError> {
        dispatch!(self, s => s.rebuild(batch))
    }
    async fn verify(&self, batch: &[AddressRows]) -> Result<Vec<Drift>, StoreError> {
        dispatch!(self, s => s.verify(batch))
    }
    async fn repair_checkpoint(&self) -> Result<Option<String>, StoreError> {
        dispatch!(self, s => s.repair_checkpoint())
    }
    async fn set_repair_checkpoint(&self, last_address: Option<&str>) -> Result<(), StoreError> {
        dispatch!(self, s => s.set_repair_checkpoint(last_address))
    }
    async fn message(&self, item_hash: &str) -> Result<Option<MessageRecord>, StoreError> {
        dispatch!(self, s => s.message(item_hash))
    }
    async fn kept_messages(
        &self,
        scan: &EnvelopeScan,
    ) -> Result<Vec<Arc<StoredEnvelope>>, StoreError> {
        dispatch!(self, s => s.kept_messages(scan))
    }
    async fn replay_history(&self, address: &str) -> Result<Vec<HistoryRow>, StoreError> {
        dispatch!(self, s => s.replay_history(address))
    }
    async fn expiring_lots(
        &self,
        now: Timestamp,
        before: Timestamp,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<Lot>, StoreError> {
        dispatch!(self, s => s.expiring_lots(now, before, offset, limit))
    }
    async fn expiring_total(
        &self,
        now: Timestamp,
        before: Timestamp,
    ) -> Result<(Credits, u64), StoreError> {
        dispatch!(self, s => s.expiring_total(now, before))
    }
    async fn table_counts(&self) -> Result<TableCounts, StoreError> {
        dispatch!(self, s => s.table_counts())
    }
    async fn footprint(&self) -> Result<Footprint, StoreError> {
        dispatch!(self, s => s.footprint())
    }
    async fn engine_settings(&self) -> Result<Vec<(String, String)>, StoreError> {
        dispatch!(self, s => s.engine_settings())
    }
    async fn credit_balances(
        &self,
        query: &BalancesQuery<'_>,
    ) -> Result<Vec<(String, Credits)>, StoreError> {
        dispatch!(self, s => s.credit_balances(query))
    }
    async fn count_credit_balances(
        &self,
        at: Timestamp,
        min_balance: i64,
    ) -> Result<u64, StoreError> {
        dispatch!(self, s => s.count_credit_balances(at, min_balance))
    }
    async fn consumed_credits(
        &self,
        address: Option<&str>,
        resource: Option<&str>,
    ) -> Result<Credits, StoreError> {
        dispatch!(self, s => s.consumed_credits(address, resource))
    }
}
