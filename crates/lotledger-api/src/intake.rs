//! Group commit for `POST /api/v0/messages`: verified messages are queued to committer tasks
//! (as many as the store runs write transactions at once: one on SQLite, two on PostgreSQL);
//! a committer applies everything queued so far as one batch ([`Backend::apply_batch`], one
//! transaction, each message still atomic and applied once) and answers each request with its
//! own outcome once the batch is committed. An idle server commits a lone message at once; under
//! load, the messages that arrive while a batch commits share the next transaction.
//!
//! Requests served at an explicit instant (the test clock) are batched only with requests at the
//! same instant; others are applied at the wall-clock instant their batch starts.

use std::sync::Arc;

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
        for _ in 0..store.concurrent_writers().max(1) {
            tokio::spawn(commit_loop(
                store.clone(),
                rules.clone(),
                max_batch,
                queue.clone(),
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

/// One committer: takes what is queued (the queue is shared by the store's concurrent
/// writers; one of them takes at a time), applies it, answers, and again.
async fn commit_loop(
    store: Arc<dyn Backend>,
    rules: Rules,
    max_batch: usize,
    queue: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
) {
    let mut carried: Option<Job> = None;
    loop {
        let mut jobs = Vec::new();
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
        }
        let now = jobs[0].now.unwrap_or_else(wall_clock_now);
        let (items, replies): (Vec<BatchItem>, Vec<_>) =
            jobs.into_iter().map(|job| (job.item, job.reply)).unzip();
        metrics::histogram!("lotledger_intake_batch_messages").record(items.len() as f64);
        let result = store
            .apply_batch(&items, &rules, now)
            .await
            .and_then(|outcomes| {
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
