//! Group commit for `POST /api/v0/messages`: verified messages are queued to committer tasks
//! (as many as the store runs write transactions at once: one on SQLite, four on PostgreSQL);
//! a committer applies everything queued so far as one batch ([`Backend::apply_batch`], one
//! transaction, each message still atomic and applied once) and answers each request with its
//! own outcome once the batch is committed. An idle server commits a lone message at once; under
//! load, the messages that arrive while a batch commits share the next transaction. While
//! another committer is in a transaction, a batch of fewer than [`SHARED_BATCH`] messages waits
//! for more or for that transaction's end, whichever comes first, rather than take a
//! transaction of its own at once: each transaction costs the same dozen statements however
//! few messages it holds, and the machine's cores are what bounds the intake.
//!
//! Requests served at an explicit instant (the test clock) are batched only with requests at the
//! same instant; others are applied at the wall-clock instant their batch starts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use lotledger_core::{Rules, Timestamp};
use lotledger_store::{BatchItem, Outcome, StoreError};
use tokio::sync::{mpsc, oneshot};

use crate::backend::Backend;
use crate::clock::wall_clock_now;

/// One queued message and where its outcome goes.
struct Job {
    item: BatchItem,
    /// The request's explicit instant; `None`: the wall clock when its batch starts.
    now: Option<Timestamp>,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

/// The queue to the committer tasks.
pub(crate) struct Intake {
    jobs: mpsc::Sender<Job>,
}

impl Intake {
    /// Starts the committers on the current tokio runtime (as many as the store runs write
    /// transactions at once): batches of at most `max_batch`.
    pub(crate) fn start(store: Arc<dyn Backend>, rules: Rules, max_batch: usize) -> Intake {
        let max_batch = max_batch.max(1);
        let (jobs, queue) = mpsc::channel(max_batch.saturating_mul(4));
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        let committing = Arc::new(Committing::default());
        for _ in 0..store.concurrent_writers().max(1) {
            tokio::spawn(commit_loop(
                store.clone(),
                rules.clone(),
                max_batch,
                queue.clone(),
                committing.clone(),
            ));
        }
        Intake { jobs }
    }

    /// Applies `item` in the next batch; returns once that batch is committed (or failed).
    pub(crate) async fn submit(
        &self,
        item: BatchItem,
        now: Option<Timestamp>,
    ) -> Result<Outcome, StoreError> {
        let (reply, outcome) = oneshot::channel();
        self.jobs
            .send(Job { item, now, reply })
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the message committer has stopped".into())
}

/// The same error for every request of a failed batch.
fn shared(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(_) => StoreError::Unavailable(e.to_string().into()),
        StoreError::Corrupt(s) => StoreError::Corrupt(s.clone()),
        StoreError::Overflow(s) => StoreError::Overflow(s.clone()),
        StoreError::Config(s) => StoreError::Config(s.clone()),
        StoreError::Database(_) | StoreError::Plan(_) | StoreError::NotAhead(_) => {
            StoreError::Database(e.to_string().into())
        }
    }
}

/// How many committers are in a transaction, and a wake-up each time one ends.
#[derive(Default)]
struct Committing {
    busy: AtomicUsize,
    ended: tokio::sync::Notify,
}

/// A committer's turn in a transaction: counted while it lasts, and its end announced to the
/// committers waiting for one (on drop, so that a committer that fails in any way ends it).
struct Turn<'a>(&'a Committing);

impl<'a> Turn<'a> {
    fn take(committing: &'a Committing) -> Turn<'a> {
        committing.busy.fetch_add(1, Ordering::AcqRel);
        Turn(committing)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
        self.0.ended.notify_waiters();
    }
}

/// A batch smaller than this waits, while another committer is in a transaction, for more
/// messages or for that transaction to end.
const SHARED_BATCH: usize = 8;

/// One committer: takes what is queued (the queue is shared by the store's concurrent
/// writers; one of them takes at a time), applies it, answers, and again.
async fn commit_loop(
    store: Arc<dyn Backend>,
    rules: Rules,
    max_batch: usize,
    queue: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
    committing: Arc<Committing>,
) {
    let mut carried: Option<Job> = None;
    loop {
        let mut jobs = Vec::new();
        let turn;
        {
            let mut queue = queue.lock().await;
            let first = match carried.take() {
                Some(job) => job,
                None => match queue.recv().await {
                    Some(job) => job,
                    None => return,
                },
            };
            jobs.push(first);
            while jobs.len() < max_batch {
                match queue.try_recv() {
                    Ok(job) if job.now == jobs[0].now => jobs.push(job),
                    Ok(job) => {
                        carried = Some(job);
                        break;
                    }
                    Err(_) => break,
                }
            }
            // While another committer is in a transaction, a small batch waits for company
            // or for that transaction to end, whichever comes first.
            let ended = committing.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            while carried.is_none()
                && jobs.len() < SHARED_BATCH.min(max_batch)
                && committing.busy.load(Ordering::Acquire) > 0
            {
                tokio::select! {
                    _ = ended.as_mut() => break,
                    job = queue.recv() => match job {
                        Some(job) if job.now == jobs[0].now => jobs.push(job),
                        Some(job) => carried = Some(job),
                        None => break,
                    },
                }
            }
            turn = Turn::take(&committing);
        }
        let now = jobs[0].now.unwrap_or_else(wall_clock_now);
        let (items, replies): (Vec<BatchItem>, Vec<_>) =
            jobs.into_iter().map(|job| (job.item, job.reply)).unzip();
        metrics::histogram!("lotledger_intake_batch_messages").record(items.len() as f64);
        let applied = store.apply_batch(&items, &rules, now).await;
        drop(turn);
        let result = applied.and_then(|outcomes| {
            if outcomes.len() == replies.len() {
                Ok(outcomes)
            } else {
                Err(StoreError::Corrupt(format!(
                    "the store returned {} outcomes for {} messages",
                    outcomes.len(),
                    replies.len()
                )))
            }
        });
        match result {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    // A request that went away (client gone) needs no answer.
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, messages = replies.len(), "a message batch failed");
                for reply in replies {
                    let _ = reply.send(Err(shared(&e)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BoxFuture;
    use lotledger_core::node_json::StoredEnvelope;
    use lotledger_core::{BalanceDetail, Credits, HistoryRow};
    use lotledger_store::{BalancesQuery, EnvelopeScan, MessageRecord};
    use std::sync::Mutex;

    /// A real SQLite store seen through four committers, whose first transaction waits for
    /// `gate` (or fails outright, `fail_first`); records each batch's size.
    struct Gated {
        store: lotledger_store_sqlite::SqliteStore,
        gate: tokio::sync::Semaphore,
        fail_first: bool,
        sizes: Mutex<Vec<usize>>,
    }

    impl Gated {
        async fn new(dir: &tempfile::TempDir, fail_first: bool) -> Arc<Gated> {
            let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
            Arc::new(Gated {
                store: lotledger_store_sqlite::SqliteStore::open(&url)
                    .await
                    .unwrap(),
                gate: tokio::sync::Semaphore::new(0),
                fail_first,
                sizes: Mutex::new(Vec::new()),
            })
        }

        fn sizes(&self) -> Vec<usize> {
            self.sizes.lock().map(|s| s.clone()).unwrap_or_default()
        }
    }

    impl Backend for Gated {
        fn concurrent_writers(&self) -> usize {
            4
        }
        fn apply_batch<'a>(
            &'a self,
            items: &'a [BatchItem],
            rules: &'a Rules,
            now: Timestamp,
        ) -> BoxFuture<'a, Vec<Outcome>> {
            let first = {
                let mut sizes = self.sizes.lock().unwrap();
                sizes.push(items.len());
                sizes.len() == 1
            };
            Box::pin(async move {
                if first && self.fail_first {
                    panic!("the first transaction fails");
                }
                if first {
                    drop(self.gate.acquire().await);
                }
                self.store.apply_batch(items, rules, now).await
            })
        }
        fn balance<'a>(&'a self, address: &'a str, at: Timestamp) -> BoxFuture<'a, Credits> {
            self.store.balance(address, at)
        }
        fn balance_details<'a>(
            &'a self,
            address: &'a str,
            at: Timestamp,
        ) -> BoxFuture<'a, (Credits, Vec<BalanceDetail>)> {
            self.store.balance_details(address, at)
        }
        fn address_history<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Vec<HistoryRow>> {
            self.store.address_history(address)
        }
        fn credit_balances<'a>(
            &'a self,
            query: BalancesQuery<'a>,
        ) -> BoxFuture<'a, Vec<(String, Credits)>> {
            self.store.credit_balances(query)
        }
        fn count_credit_balances(&self, at: Timestamp, min_balance: i64) -> BoxFuture<'_, u64> {
            self.store.count_credit_balances(at, min_balance)
        }
        fn consumed_credits<'a>(
            &'a self,
            address: Option<&'a str>,
            resource: Option<&'a str>,
        ) -> BoxFuture<'a, Credits> {
            self.store.consumed_credits(address, resource)
        }
        fn message<'a>(&'a self, item_hash: &'a str) -> BoxFuture<'a, Option<MessageRecord>> {
            self.store.message(item_hash)
        }
        fn kept_messages<'a>(
            &'a self,
            scan: &'a EnvelopeScan,
        ) -> BoxFuture<'a, Vec<Arc<StoredEnvelope>>> {
            self.store.kept_messages(scan)
        }
        fn lots<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Vec<lotledger_core::Lot>> {
            self.store.lots(address)
        }
        fn replay_history<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Vec<HistoryRow>> {
            self.store.replay_history(address)
        }
        fn addresses(&self) -> BoxFuture<'_, Vec<String>> {
            self.store.addresses()
        }
        fn expiring_lots(
            &self,
            now: Timestamp,
            before: Timestamp,
            offset: u64,
            limit: u64,
        ) -> BoxFuture<'_, Vec<lotledger_core::Lot>> {
            self.store.expiring_lots(now, before, offset, limit)
        }
        fn expiring_total(
            &self,
            now: Timestamp,
            before: Timestamp,
        ) -> BoxFuture<'_, (Credits, u64)> {
            self.store.expiring_total(now, before)
        }
        fn dry_run<'a>(
            &'a self,
            envelope: &'a lotledger_core::envelope::Envelope,
            rules: &'a Rules,
            now: Timestamp,
        ) -> BoxFuture<'a, lotledger_store::dry_run::DryRun> {
            self.store.dry_run(envelope, rules, now)
        }
    }

    /// Waits until `gated` has seen `n` batches (a minute at most: a committer that never
    /// starts is a failure, not a hang).
    async fn batches(gated: &Gated, n: usize) -> Vec<usize> {
        let seen = async {
            loop {
                let sizes = gated.sizes();
                if sizes.len() >= n {
                    return sizes;
                }
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(60), seen)
            .await
            .unwrap_or_else(|_| panic!("{n} batches never started: {:?}", gated.sizes()))
    }

    /// While one committer is in a transaction, the messages that arrive wait for company
    /// (up to `SHARED_BATCH`) or for that transaction's end, instead of each taking another
    /// committer alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_batches_wait_while_another_commits() {
        let dir = tempfile::tempdir().unwrap();
        let gated = Gated::new(&dir, false).await;
        let intake = Arc::new(Intake::start(gated.clone(), Rules::default(), 1000));
        let submit = |intake: &Arc<Intake>| {
            let intake = intake.clone();
            tokio::spawn(async move { intake.submit(BatchItem::Ignore, None).await })
        };
        // The first message takes a committer, whose transaction waits at the gate.
        let mut replies = vec![submit(&intake)];
        assert_eq!(batches(&gated, 1).await, vec![1]);
        // The next ones wait for company: the eighth makes a batch.
        for _ in 0..SHARED_BATCH {
            replies.push(submit(&intake));
        }
        assert_eq!(batches(&gated, 2).await, vec![1, SHARED_BATCH]);
        for reply in replies.drain(1..) {
            let outcome = reply.await.unwrap().unwrap();
            assert!(matches!(outcome, Outcome::Ignored(_)), "{outcome:?}");
        }
        // That batch has ended: one more message waits, alone, until the gated transaction
        // ends.
        replies.push(submit(&intake));
        for _ in 0..1000 {
            tokio::task::yield_now().await;
        }
        assert_eq!(gated.sizes(), vec![1, SHARED_BATCH]);
        gated.gate.add_permits(1);
        assert_eq!(batches(&gated, 3).await, vec![1, SHARED_BATCH, 1]);
        for reply in replies {
            let outcome = reply.await.unwrap().unwrap();
            assert!(matches!(outcome, Outcome::Ignored(_)), "{outcome:?}");
        }
    }

    /// A committer that fails mid-transaction (here, its task panics) ends its turn: the next
    /// lone message does not wait for company as if a transaction were still under way.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_transaction_leaves_nobody_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let gated = Gated::new(&dir, true).await;
        let intake = Intake::start(gated.clone(), Rules::default(), 1000);
        assert!(intake.submit(BatchItem::Ignore, None).await.is_err());
        let outcome = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            intake.submit(BatchItem::Ignore, None),
        )
        .await
        .expect("a lone message is committed at once")
        .unwrap();
        assert!(matches!(outcome, Outcome::Ignored(_)), "{outcome:?}");
        assert_eq!(gated.sizes(), vec![1, 1]);
    }
}
