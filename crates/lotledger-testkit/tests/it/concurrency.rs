//! Concurrent writers on one PostgreSQL database: two independent connection pools (as two
//! `serve` processes would have), transfers A→B and B→A at the same time, C↔D, many expenses on
//! one hot address, single messages, batches and streams of batches planned ahead mixed,
//! arriving out of timestamp order. No error reaches a caller (no deadlock surfaces), nothing
//! is lost or minted, no plan made ahead fails its writing, and the cache equals the replay of
//! history afterwards.

use lotledger_core::{Post, Rules, Timestamp};
use lotledger_store::{BatchItem, Outcome, Store, maintenance};
use lotledger_store_pg::PgStore;
use lotledger_testkit::db;
use serde_json::{Value, json};

const MINTER: &str = "0xminter";
const T0: i64 = 1_780_000_000;
const WRITERS: usize = 8;
const PER_WRITER: usize = 30;

fn post(hash: String, sender: &str, seconds: i64, kind: &str, content: Value) -> Post {
    Post {
        item_hash: hash,
        channel: Some("ALEPH_CREDIT".into()),
        content: json!({"address": sender, "time": (T0 + seconds) as f64, "type": kind,
                        "content": content}),
        envelope: None,
    }
}

fn grant(hash: &str, to: &str, amount: i64, entries: usize) -> Post {
    let credits: Vec<Value> = (0..entries)
        .map(|_| json!({"address": to, "amount": amount, "price": "0.1", "tx_hash": "0xt", "provider": "ALEPH"}))
        .collect();
    post(
        hash.into(),
        MINTER,
        0,
        "aleph_credit_distribution",
        json!({"distribution": {"token": "T", "chain": "ETH", "credits": credits}}),
    )
}

/// Writer `w`'s `i`-th message.
fn message(w: usize, i: usize) -> (Post, i64) {
    let seconds = 10 + (i * WRITERS + w) as i64;
    let hash = format!("w{w}m{i}");
    let (from, to) = match w % 4 {
        0 => ("0xa", "0xb"),
        1 => ("0xb", "0xa"),
        2 => ("0xc", "0xd"),
        _ => ("0xhot", ""),
    };
    if to.is_empty() {
        let p = post(
            hash,
            MINTER,
            seconds,
            "aleph_credit_expense",
            json!({"expense": {"credits": [{"address": from, "amount": 700, "ref": "vm"}]}}),
        );
        (p, 700)
    } else {
        let p = post(
            hash,
            from,
            seconds,
            "aleph_credit_transfer",
            json!({"transfer": {"credits": [{"address": to, "amount": 37}]}}),
        );
        (p, 0)
    }
}

async fn total(store: &PgStore, at: Timestamp) -> i64 {
    let mut sum = 0;
    for a in ["0xa", "0xb", "0xc", "0xd", "0xhot"] {
        sum += store.balance(a, at).await.unwrap().0;
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_lose_nothing_and_never_deadlock() {
    let url = db::fresh_pg_url().await;
    let first = PgStore::open(&url).await.unwrap();
    let second = PgStore::open(&url).await.unwrap();
    let rules = Rules::new(vec![MINTER.into()], vec!["ALEPH_CREDIT".into()]);
    let now = Timestamp::from_unix_seconds(T0 + 100_000).unwrap();
    for (hash, to, amount, entries) in [
        ("ga", "0xa", 100_000, 1),
        ("gb", "0xb", 100_000, 1),
        ("gc", "0xc", 100_000, 1),
        ("gd", "0xd", 0, 0),
        ("gh", "0xhot", 1_000, 200),
    ] {
        if entries > 0 {
            let outcome = first
                .apply(&grant(hash, to, amount, entries), &rules, now)
                .await
                .unwrap();
            assert_eq!(outcome, Outcome::Processed);
        }
    }
    let before = total(&first, now).await;
    assert_eq!(before, 500_000);

    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = if w % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        let rules = rules.clone();
        tasks.push(tokio::spawn(async move {
            let mut spent = 0;
            let mut outcomes = Vec::new();
            // Writers 4..8 send in batches of 5: writers 4 and 5 one batch at a time, each
            // arriving newest first; writers 6 and 7 as a stream in order (`apply_batches`:
            // each batch planned ahead on a snapshot while the one before is written, and the
            // other writers writing meanwhile).
            if w >= 4 {
                let mut batches = Vec::new();
                for chunk in (0..PER_WRITER).collect::<Vec<_>>().chunks(5) {
                    let mut items = Vec::new();
                    let mut chunk = chunk.to_vec();
                    if w < 6 {
                        chunk.reverse();
                    }
                    for i in chunk {
                        let (p, cost) = message(w, i);
                        spent += cost;
                        items.push(BatchItem::Apply(p));
                    }
                    batches.push(items);
                }
                if w >= 6 {
                    outcomes.extend(streamed(&store, &rules, now, batches).await);
                } else {
                    for items in batches {
                        outcomes.push(store.apply_batch(&items, &rules, now).await);
                    }
                }
            } else {
                for i in 0..PER_WRITER {
                    let (p, cost) = message(w, i);
                    spent += cost;
                    outcomes.push(store.apply(&p, &rules, now).await.map(|o| vec![o]));
                }
            }
            (spent, outcomes)
        }));
    }
    let mut spent = 0;
    for task in tasks {
        let (s, outcomes) = task.await.unwrap();
        spent += s;
        for o in outcomes {
            let o = o.expect("no store error reaches a writer");
            assert!(o.iter().all(|x| *x == Outcome::Processed), "{o:?}");
        }
    }
    // Transfers conserve credits; only the expenses (all funded) leave.
    assert_eq!(total(&first, now).await, before - spent);
    assert!(spent > 0);
    let addresses = first.address_rows().await.unwrap();
    let drift = first.verify(&addresses).await.unwrap();
    assert!(drift.is_empty(), "cache differs from replay: {drift:?}");
    // And a full repair changes nothing.
    maintenance::repair(&first, true, |_, _| {}).await.unwrap();
    assert_eq!(total(&first, now).await, before - spent);
    for store in [&first, &second] {
        use lotledger_store::transactional::Transactional;
        let counters = store.ahead_counters().unwrap();
        let planned = counters.planned.load(std::sync::atomic::Ordering::Relaxed);
        let failed = counters.failed.load(std::sync::atomic::Ordering::Relaxed);
        // Under this contention most plans go stale and are applied the usual way.
        assert!(planned > 0, "no batch was planned ahead");
        assert_eq!(failed, 0, "a plan's writing failed");
    }
}

/// `batches` through [`Store::apply_batches`], all queued at once; each batch's result.
async fn streamed(
    store: &PgStore,
    rules: &Rules,
    now: Timestamp,
    batches: Vec<Vec<BatchItem>>,
) -> Vec<Result<Vec<Outcome>, lotledger_store::StoreError>> {
    let (jobs, queued) = tokio::sync::mpsc::channel(batches.len().max(1));
    let (committed, mut done) = tokio::sync::mpsc::channel(batches.len() + 1);
    for items in batches {
        let job = lotledger_store::BatchJob {
            items,
            now,
            progress: None,
        };
        jobs.send(job).await.unwrap();
    }
    drop(jobs);
    store.apply_batches(rules, queued, committed).await;
    let mut results = Vec::new();
    while let Some(result) = done.recv().await {
        results.push(result);
    }
    results
}

/// Two write transactions intern the same new address and reference at once: the second one's
/// insert waits on the first's uncommitted rows, skips them once the first commits, and its
/// statement's snapshot does not show them either; it must still resolve their ids (read again
/// after the insert) and write its rows under them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_interned_by_a_concurrent_transaction_are_resolved() {
    concurrent_appends(1, false).await;
}

/// As above with enough rows that each append is first sent without `ON CONFLICT`: the
/// second transaction's plain inserts meet unique violations once the first commits (its
/// references, then, writing the very same rows, its history rows and message records), roll
/// back to their savepoints and are sent again guarded; the transaction goes on and commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_appends_that_meet_a_concurrent_writer_fall_back() {
    let rows = lotledger_store_pg::PLAIN_APPEND_MIN_ROWS + 36;
    concurrent_appends(rows, false).await;
    concurrent_appends(rows, true).await;
}

/// Whether the count `sql` selects turns positive within `polls` polls 20 ms apart.
async fn turns_positive(probe: &mut sqlx::PgConnection, sql: &'static str, polls: usize) -> bool {
    for _ in 0..polls {
        let count: i64 = sqlx::query_scalar(sql)
            .fetch_one(&mut *probe)
            .await
            .unwrap();
        if count > 0 {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}

/// Two write transactions each insert `n` history rows (and, with `same_rows`, the same
/// records) under the same `n` new references of one new address; the second starts while
/// the first, uncommitted, holds them. Both commit; each row and record is stored once.
async fn concurrent_appends(n: usize, same_rows: bool) {
    use lotledger_core::{Credits, HistoryRow};
    use lotledger_store::batch::Commit;
    use lotledger_store::transactional::Transactional;
    use lotledger_store::{HistorySelector, LedgerTx, MessageRecord, MessageStatus};
    use sqlx::Connection;

    let url = db::fresh_pg_url().await;
    let store = PgStore::open(&url).await.unwrap();
    let at = Timestamp::from_unix_seconds(T0).unwrap();
    let rows = move |amount, index| {
        (0..n)
            .map(|i| {
                HistoryRow::bare(
                    "0xshared",
                    Credits(amount),
                    &format!("shared-ref-{i}"),
                    index,
                    at,
                )
            })
            .collect::<Vec<_>>()
    };
    let records = move |error: &str| {
        (0..n)
            .map(|i| MessageRecord {
                item_hash: format!("shared-ref-{i}"),
                status: MessageStatus::Rejected {
                    error: error.into(),
                },
                ignored: None,
                recorded_at: at,
                envelope: None,
            })
            .collect::<Vec<_>>()
    };
    let mut first = store.write().await.unwrap();
    first.insert_rows(&rows(5, 0), at).await.unwrap();
    if same_rows {
        first.record_messages(&records("first")).await.unwrap();
    }
    let other = store.clone();
    let second = tokio::spawn(async move {
        let mut tx = other.write().await?;
        let (amount, index) = if same_rows { (5, 0) } else { (7, 1) };
        let inserted = tx.insert_rows(&rows(amount, index), at).await?;
        if same_rows {
            tx.record_messages(&records("second")).await?;
        }
        tx.commit().await?;
        Ok::<u64, lotledger_store::StoreError>(inserted)
    });
    // Commit the first only once the second waits on its uncommitted rows.
    let mut probe = sqlx::PgConnection::connect(&url).await.unwrap();
    let waited = turns_positive(
        &mut probe,
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
        500,
    )
    .await;
    assert!(waited, "the second transaction never waited on the first");
    first.commit().await.unwrap();
    let inserted = second.await.unwrap().unwrap();
    assert_eq!(inserted, if same_rows { 0 } else { n as u64 });
    let history = store
        .history(&HistorySelector::Address("0xshared".into()))
        .await
        .unwrap();
    let mut amounts: Vec<i64> = history.iter().map(|r| r.amount.0).collect();
    amounts.sort_unstable();
    let expected: Vec<i64> = if same_rows {
        vec![5; n]
    } else {
        [vec![5; n], vec![7; n]].concat()
    };
    assert_eq!(amounts, expected);
    for i in 0..n {
        let credit_ref = format!("shared-ref-{i}");
        let under = history
            .iter()
            .filter(|r| r.credit_ref == credit_ref)
            .count();
        assert_eq!(under, if same_rows { 1 } else { 2 }, "{credit_ref}");
        if same_rows {
            let record = store.message(&credit_ref).await.unwrap().unwrap();
            assert_eq!(
                record.status,
                MessageStatus::Rejected {
                    error: "second".into()
                },
                "the later record wins, as one upsert per message would"
            );
        }
    }
}

/// A batch naming more addresses and messages than PostgreSQL's lock table holds (64 locks a
/// connection by default, shared by all sessions) commits: it takes the writers' lock
/// exclusively instead of a lock per key, so it first waits for a writer holding keys, and
/// writers that come after it wait for it. Nothing is lost; the cache equals the replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_with_more_keys_than_the_lock_table_commits() {
    use lotledger_store::LedgerTx;
    use lotledger_store::batch::Commit;
    use lotledger_store::transactional::Transactional;
    use sqlx::Connection;

    let url = db::fresh_pg_url().await;
    let store = PgStore::open(&url).await.unwrap();
    let rules = Rules::new(vec![MINTER.into()], vec!["ALEPH_CREDIT".into()]);
    let now = Timestamp::from_unix_seconds(T0 + 100_000).unwrap();
    let mut probe = sqlx::PgConnection::connect(&url).await.unwrap();
    let setting = |name: &'static str| {
        let sql = format!("SELECT current_setting('{name}')::bigint");
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
    };
    let per_connection = setting("max_locks_per_transaction")
        .fetch_one(&mut probe)
        .await
        .unwrap();
    let connections = setting("max_connections")
        .fetch_one(&mut probe)
        .await
        .unwrap();
    // Three keys a message (its hash, two new addresses): three times what the table holds.
    let messages = usize::try_from(per_connection * connections).unwrap();
    let items: Vec<BatchItem> = (0..messages)
        .map(|i| {
            let credits = json!([
                {"address": format!("0x{i}a"), "amount": 3, "price": "0.1", "tx_hash": "0xt", "provider": "ALEPH"},
                {"address": format!("0x{i}b"), "amount": 4, "price": "0.1", "tx_hash": "0xt", "provider": "ALEPH"},
            ]);
            BatchItem::Apply(post(
                format!("many-{i}"),
                MINTER,
                1,
                "aleph_credit_distribution",
                json!({"distribution": {"token": "T", "chain": "ETH", "credits": credits}}),
            ))
        })
        .collect();
    // A writer holding a key: the batch waits for it.
    let mut holder = store.write().await.unwrap();
    holder.lock("held", &["0x0a"]).await.unwrap();
    let batch = {
        let (store, rules) = (store.clone(), rules.clone());
        tokio::spawn(async move { store.apply_batch(&items, &rules, now).await })
    };
    let waited = turns_positive(
        &mut probe,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
        3_000,
    )
    .await;
    assert!(
        waited,
        "the batch never waited for the writer holding a key"
    );
    holder.commit().await.unwrap();
    let outcomes = batch.await.unwrap().expect("the batch commits");
    assert_eq!(outcomes.len(), messages);
    assert!(outcomes.iter().all(|o| *o == Outcome::Processed));
    // In one transaction, not message by message after a failed batch.
    let transactions: i64 =
        sqlx::query_scalar("SELECT COUNT(DISTINCT xmin::text) FROM credit_history")
            .fetch_one(&mut probe)
            .await
            .unwrap();
    assert_eq!(transactions, 1, "the batch committed as one transaction");
    for i in [0, messages / 2, messages - 1] {
        for (side, amount) in [("a", 3), ("b", 4)] {
            let address = format!("0x{i}{side}");
            assert_eq!(store.balance(&address, now).await.unwrap().0, amount);
        }
    }
    // Writers after it lock keys again.
    let after = grant("after", "0x0a", 5, 1);
    let outcome = store.apply(&after, &rules, now).await.unwrap();
    assert_eq!(outcome, Outcome::Processed);
    assert_eq!(store.balance("0x0a", now).await.unwrap().0, 8);
    let addresses = store.address_rows().await.unwrap();
    assert_eq!(addresses.len(), 2 * messages, "0x0a among them");
    let drift = store.verify(&addresses).await.unwrap();
    assert!(drift.is_empty(), "cache differs from replay: {drift:?}");
}
