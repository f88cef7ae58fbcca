//! Group commit for `POST /api/v0/messages`: verified messages are queued to committer tasks
//! (as many as the store runs write transactions at once: one on SQLite, two on PostgreSQL);
//! a committer applies everything queued so far as one batch ([`Backend::apply_batch`], one
//! transaction, each message still atomic and applied once) and answers each request with its
//! own outcome once the batch is committed. An idle server commits a lone message at once; under
//! load, the messages that arrive while a batch commits share the next transaction.
//!
//! On a store that writes one transaction at a time (SQLite) the committer sends its batches to
//! [`Backend::apply_batches`], which plans each batch while the one before is written, and the
//! requests of each batch are answered once it is committed.
//!
//! Requests served at an explicit instant (the test clock) are batched only with requests at the
//! same instant; others are applied at the wall-clock instant their batch starts.

use std::sync::Arc;

use lotledger_core::{Rules, Timestamp};
use lotledger_store::{BatchItem, BatchJob, Outcome, StoreError};
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
        let writers = store.concurrent_writers().max(1);
        if writers == 1 {
            tokio::spawn(pipelined_loop(store, rules, max_batch, queue));
        } else {
            for _ in 0..writers {
                tokio::spawn(commit_loop(
                    store.clone(),
                    rules.clone(),
                    max_batch,
                    queue.clone(),
                ));
            }
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

/// Where each request of a batch gets its outcome.
type Replies = Vec<oneshot::Sender<Result<Outcome, StoreError>>>;

/// Takes the next batch from the queue (shared by the store's concurrent writers; one of them
/// takes at a time): the carried jobs first, else a job waited for, then what is queued, up to
/// `max_batch` jobs at the first job's instant. `None` once the queue is closed.
async fn next_batch(
    queue: &tokio::sync::Mutex<mpsc::Receiver<Job>>,
    carried: &mut std::collections::VecDeque<Job>,
    max_batch: usize,
) -> Option<(Vec<BatchItem>, Timestamp, Replies)> {
    let mut jobs = Vec::new();
    let mut queue = queue.lock().await;
    let first = match carried.pop_front() {
        Some(job) => job,
        None => queue.recv().await?,
    };
    jobs.push(first);
    while jobs.len() < max_batch {
        let next = match carried.pop_front() {
            Some(job) => Some(job),
            None => queue.try_recv().ok(),
        };
        match next {
            Some(job) if job.now == jobs[0].now => jobs.push(job),
            Some(job) => {
                carried.push_front(job);
                break;
            }
            None => break,
        }
    }
    let now = jobs[0].now.unwrap_or_else(wall_clock_now);
    let (items, replies): (Vec<BatchItem>, Replies) =
        jobs.into_iter().map(|job| (job.item, job.reply)).unzip();
    metrics::histogram!("lotledger_intake_batch_messages").record(items.len() as f64);
    Some((items, now, replies))
}

/// Answers each request of a batch with its outcome, or all of them with the batch's error.
fn answer(replies: Replies, result: Result<Vec<Outcome>, StoreError>) {
    let result = result.and_then(|outcomes| {
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

/// One committer: takes what is queued, applies it, answers, and again.
async fn commit_loop(
    store: Arc<dyn Backend>,
    rules: Rules,
    max_batch: usize,
    queue: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
) {
    let mut carried = std::collections::VecDeque::new();
    while let Some((items, now, replies)) = next_batch(&queue, &mut carried, max_batch).await {
        answer(replies, store.apply_batch(&items, &rules, now).await);
    }
}

/// The committer of a store that writes one transaction at a time: batches go to
/// [`Backend::apply_batches`], which plans each while the one before is written (SQLite), and
/// [`reply_in_order`] answers each batch's requests once it is committed. A batch is taken from
/// the queue only when the store can take it, so it holds everything queued meanwhile. A failed
/// batch is answered with its error and the next batches are applied as usual; should the
/// store stop taking batches (a panic), what it took is answered "unavailable" and a new round
/// starts.
async fn pipelined_loop(
    store: Arc<dyn Backend>,
    rules: Rules,
    max_batch: usize,
    queue: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
) {
    let mut carried = std::collections::VecDeque::new();
    loop {
        let (batches, queued) = mpsc::channel(1);
        let (committed, done) = mpsc::channel(2);
        let (waiting, pending) = mpsc::unbounded_channel();
        let driver = {
            let (store, rules) = (store.clone(), rules.clone());
            tokio::spawn(async move { store.apply_batches(&rules, queued, committed).await })
        };
        let replier = tokio::spawn(reply_in_order(pending, done));
        let closed = loop {
            // The store stopped taking batches: a new round.
            let Ok(permit) = batches.reserve().await else {
                break false;
            };
            let Some((items, now, replies)) = next_batch(&queue, &mut carried, max_batch).await
            else {
                break true;
            };
            permit.send(BatchJob {
                items,
                now,
                progress: None,
                stop_on_failure: false,
            });
            // The replier outlives this loop: it ends only once `waiting` is dropped.
            let _ = waiting.send(replies);
        };
        drop((batches, waiting));
        if let Err(e) = driver.await {
            tracing::error!(error = %e, "the message committer failed");
        }
        let _ = replier.await;
        if closed {
            return;
        }
    }
}

/// Answers the batches of [`pipelined_loop`] in the order they were sent, each with the
/// outcomes its commit gave (or its error); batches the store took and never applied (it
/// stopped) are answered "unavailable", to be retried.
async fn reply_in_order(
    mut pending: mpsc::UnboundedReceiver<Replies>,
    mut done: mpsc::Receiver<Result<Vec<Outcome>, StoreError>>,
) {
    while let Some(replies) = pending.recv().await {
        let result = done.recv().await.unwrap_or_else(|| {
            Err(StoreError::Unavailable(
                "the message committer stopped; retry".into(),
            ))
        });
        answer(replies, result);
    }
}
