//! Group commit gives exactly what one transaction per message gives: random message
//! sequences (out-of-order timestamps, replays, unfunded transfers, invalid content, envelope
//! rejections) applied one by one to a SQLite file, and in random-sized batches to another
//! SQLite file and to a PostgreSQL database. Same outcomes, history, lots and message records.
//! Each case runs under a drain-policy schedule of its own (v1, v2, or switching at an hour).
//! The same through `Store::apply_batches`, where each store plans each batch on a snapshot while
//! the batch before it is written, and with another writer of the file writing meanwhile.

use lotledger_core::{Policy, Post, Rules, Schedule, Timestamp};
use std::sync::atomic::Ordering;

use lotledger_store::transactional::Transactional;
use lotledger_store::{BatchItem, BatchJob, HistorySelector, Outcome, Store, apply_one_by_one};
use lotledger_testkit::db;
use proptest::prelude::*;
use serde_json::{Value, json};

const MINTER: &str = "0xminter";
const BASE_SECONDS: i64 = 1_780_000_000;

#[derive(Debug, Clone)]
enum Msg {
    Distribute(u8, i64, Option<i64>, i64),
    Expense(u8, i64, i64),
    Transfer(u8, u8, i64, Option<i64>, i64),
    Replay(usize),
    Invalid(u8, i64),
    EnvelopeReject(usize),
}

fn addr(i: u8) -> String {
    format!("0xholder{i}")
}

fn msg() -> impl Strategy<Value = Msg> {
    let who = 0u8..4;
    let hour = 0i64..48;
    let amount = 1i64..500;
    let expiry = proptest::option::of(1i64..60);
    prop_oneof![
        3 => (who.clone(), amount.clone(), expiry.clone(), hour.clone())
            .prop_map(|(a, n, e, h)| Msg::Distribute(a, n, e, h)),
        2 => (who.clone(), amount.clone(), hour.clone()).prop_map(|(a, n, h)| Msg::Expense(a, n, h)),
        3 => (who.clone(), who.clone(), amount, expiry, hour.clone())
            .prop_map(|(f, t, n, e, h)| Msg::Transfer(f, t, n, e, h)),
        1 => (0usize..40).prop_map(Msg::Replay),
        1 => (who, hour).prop_map(|(a, h)| Msg::Invalid(a, h)),
        1 => (0usize..40).prop_map(Msg::EnvelopeReject),
    ]
}

fn post(hash: String, sender: &str, hour: i64, kind: &str, content: Value) -> BatchItem {
    BatchItem::Apply(Post {
        item_hash: hash,
        channel: Some("ALEPH_CREDIT".into()),
        content: json!({"address": sender, "time": (BASE_SECONDS + hour * 3600) as f64,
                        "type": kind, "content": content}),
        envelope: None,
    })
}

fn ms(hour: Option<i64>) -> Value {
    hour.map_or(Value::Null, |h| json!((BASE_SECONDS + h * 3600) * 1000))
}

fn items(msgs: &[Msg]) -> Vec<BatchItem> {
    let mut out: Vec<BatchItem> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let hash = format!("h{i:03}");
        let item = match m {
            Msg::Distribute(a, n, e, h) => post(
                hash,
                MINTER,
                *h,
                "aleph_credit_distribution",
                json!({"distribution": {"token": "T", "chain": "ETH", "credits": [
                    {"address": addr(*a), "amount": n, "price": "0.5", "tx_hash": "0xt",
                     "provider": "ALEPH", "expiration": ms(*e)}]}}),
            ),
            Msg::Expense(a, n, h) => post(
                hash,
                MINTER,
                *h,
                "aleph_credit_expense",
                json!({"expense": {"credits": [{"address": addr(*a), "amount": n, "ref": "r"}]}}),
            ),
            Msg::Transfer(f, t, n, e, h) => post(
                hash,
                &addr(*f),
                *h,
                "aleph_credit_transfer",
                json!({"transfer": {"credits": [
                    {"address": addr(*t), "amount": n, "expiration": ms(*e)}]}}),
            ),
            Msg::Replay(k) => match out.get(k % out.len().max(1)) {
                Some(earlier) => earlier.clone(),
                None => BatchItem::Ignore,
            },
            Msg::Invalid(a, h) => post(
                hash,
                &addr(*a),
                *h,
                "aleph_credit_transfer",
                json!({"transfer": {"credits": [{"address": addr(*a), "amount": 0}]}}),
            ),
            Msg::EnvelopeReject(k) => BatchItem::Reject {
                item_hash: format!("h{:03}", k % (i + 1)),
                error: "The signature of the message is invalid".into(),
                envelope: None,
            },
        };
        out.push(item);
    }
    out
}

async fn state<S: Store>(store: &S, hashes: &[String]) -> Value {
    let mut out = Vec::new();
    for a in (0..4).map(addr) {
        let history = store
            .history(&HistorySelector::Address(a.clone()))
            .await
            .unwrap();
        let lots = store.lots(&a).await.unwrap();
        out.push(json!({
            "history": history.iter().map(lotledger_core::json::history_row).collect::<Vec<_>>(),
            "lots": lots.iter().map(lotledger_core::json::lot).collect::<Vec<_>>(),
        }));
    }
    for h in hashes {
        let record = store.message(h).await.unwrap();
        out.push(json!(format!(
            "{:?}",
            record.map(|r| (r.status, r.ignored))
        )));
    }
    Value::Array(out)
}

/// `items` in chunks whose sizes cycle through `sizes`.
fn chunks<'a>(items: &'a [BatchItem], sizes: &[usize]) -> Vec<&'a [BatchItem]> {
    let mut out = Vec::new();
    let mut rest = items;
    let mut k = 0;
    while !rest.is_empty() {
        let n = sizes
            .get(k % sizes.len())
            .copied()
            .unwrap_or(1)
            .clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        out.push(chunk);
        rest = tail;
        k += 1;
    }
    out
}

async fn batched<S: Store>(
    store: &S,
    items: &[BatchItem],
    sizes: &[usize],
    rules: &Rules,
    now: Timestamp,
) -> Vec<lotledger_store::Outcome> {
    let mut outcomes = Vec::new();
    for chunk in chunks(items, sizes) {
        outcomes.extend(store.apply_batch(chunk, rules, now).await.unwrap());
    }
    outcomes
}

/// The chunks of [`batched`] through [`Store::apply_batches`], all queued before it starts, so
/// that each batch is planned while the one before it is written.
async fn pipelined<S: Store>(
    store: &S,
    items: &[BatchItem],
    sizes: &[usize],
    rules: &Rules,
    now: Timestamp,
) -> Vec<Outcome> {
    let chunks = chunks(items, sizes);
    let (jobs, queued) = tokio::sync::mpsc::channel(chunks.len().max(1));
    let (committed, mut done) =
        tokio::sync::mpsc::channel::<Result<Vec<Outcome>, lotledger_store::StoreError>>(8);
    for chunk in chunks {
        let job = BatchJob {
            items: chunk.to_vec(),
            now,
            progress: None,
        };
        jobs.send(job).await.unwrap();
    }
    drop(jobs);
    let collect = async {
        let mut outcomes = Vec::new();
        while let Some(applied) = done.recv().await {
            outcomes.extend(applied.unwrap());
        }
        outcomes
    };
    let ((), outcomes) = tokio::join!(store.apply_batches(rules, queued, committed), collect);
    outcomes
}

/// How the batches a store planned ahead ended: held, stale, not planned ahead, and plans
/// whose writing failed.
fn ahead<S: Transactional>(store: &S) -> (u64, u64, u64, u64) {
    store.ahead_counters().unwrap().ended()
}

/// A message sequence applied one transaction per message to a SQLite file: what every other
/// way of applying it must give.
struct Reference {
    rules: Rules,
    now: Timestamp,
    items: Vec<BatchItem>,
    hashes: Vec<String>,
    dir: tempfile::TempDir,
    expected: Vec<lotledger_store::Outcome>,
    want: Value,
}

fn at_hour(hour: i64) -> Timestamp {
    Timestamp::from_unix_seconds(BASE_SECONDS + hour * 3600).unwrap()
}

/// A drain-policy schedule for a case: v1, v2, or switching at one of the messages' hours.
fn schedule() -> impl Strategy<Value = Schedule> {
    crate::model::schedules((0i64..48).prop_map(at_hour))
}

/// The rules (the minter whitelisted, the credit channel, the drain policies of `schedule`)
/// and the instant `hour` hours after the messages' base, to apply batches at.
fn setting(hour: i64, schedule: &Schedule) -> (Rules, Timestamp) {
    let mut rules = Rules::new(vec![MINTER.to_string()], vec!["ALEPH_CREDIT".into()]);
    rules.schedule = schedule.clone();
    (rules, at_hour(hour))
}

impl Reference {
    /// Asserts that `store`, which gave `got`, gives the reference's outcomes and state.
    async fn assert_same<S: Store>(&self, store: &S, got: Vec<Outcome>, what: &str) {
        assert_eq!(got, self.expected, "{what}: outcomes");
        assert_eq!(state(store, &self.hashes).await, self.want, "{what}: state");
    }
}

async fn reference(msgs: &[Msg], now_hour: i64, schedule: &Schedule) -> Reference {
    let (rules, now) = setting(now_hour, schedule);
    let items = items(msgs);
    let hashes: Vec<String> = (0..items.len()).map(|i| format!("h{i:03}")).collect();
    let dir = tempfile::tempdir().unwrap();
    let one = db::fresh_sqlite(&dir).await.0;
    let expected = apply_one_by_one(&one, &items, &rules, now).await.unwrap();
    let want = state(&one, &hashes).await;
    Reference {
        rules,
        now,
        items,
        hashes,
        dir,
        expected,
        want,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]
    #[test]
    fn batches_equal_one_transaction_per_message(
        msgs in proptest::collection::vec(msg(), 1..40),
        sizes in proptest::collection::vec(1usize..12, 1..6),
        now_hour in 0i64..60,
        schedule in schedule(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let r = reference(&msgs, now_hour, &schedule).await;
            let (items, rules, now) = (&r.items, &r.rules, r.now);

            let grouped = db::fresh_sqlite(&r.dir).await.0;
            let got = batched(&grouped, items, &sizes, rules, now).await;
            r.assert_same(&grouped, got, "sqlite").await;

            let ahead = db::fresh_sqlite(&r.dir).await.0;
            let got = pipelined(&ahead, items, &sizes, rules, now).await;
            r.assert_same(&ahead, got, "sqlite, planned ahead").await;
            assert_eq!(self::ahead(&ahead).3, 0, "sqlite: a plan's writing failed");

            let pg = db::fresh_pg().await;
            let got = batched(&pg, items, &sizes, rules, now).await;
            r.assert_same(&pg, got, "postgres").await;

            let pg = db::fresh_pg().await;
            let got = pipelined(&pg, items, &sizes, rules, now).await;
            r.assert_same(&pg, got, "postgres, planned ahead").await;
            assert_eq!(self::ahead(&pg).3, 0, "postgres: a plan's writing failed");
        });
    }
}

/// Batches through `batcher`, single messages through `other`, in turns (chunk sizes cycling
/// through `sizes`); the outcomes in order.
async fn in_turns<S: Store>(
    batcher: &S,
    other: &S,
    items: &[BatchItem],
    sizes: &[usize],
    rules: &Rules,
    now: Timestamp,
) -> Vec<Outcome> {
    let mut got = Vec::new();
    let mut rest = items;
    let mut k = 0;
    while !rest.is_empty() {
        let n = sizes[k % sizes.len()].clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        if k % 2 == 0 {
            got.extend(batcher.apply_batch(chunk, rules, now).await.unwrap());
        } else {
            got.extend(apply_one_by_one(other, chunk, rules, now).await.unwrap());
        }
        rest = tail;
        k += 1;
    }
    got
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    /// Two stores on one database, as two processes: batches through one, single messages
    /// through the other, in turns. What a batch carries over to the next (the batch cache:
    /// a file generation on SQLite, address versions on PostgreSQL) must never hide a write of
    /// the other store: same outcomes and state as one transaction per message.
    #[test]
    fn batches_see_what_another_writer_of_the_database_did(
        msgs in proptest::collection::vec(msg(), 1..40),
        sizes in proptest::collection::vec(1usize..8, 1..6),
        now_hour in 0i64..60,
        schedule in schedule(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let Reference { rules, now, items, hashes, dir, expected, want } =
                reference(&msgs, now_hour, &schedule).await;

            let (batcher, url) = db::fresh_sqlite(&dir).await;
            let other = lotledger_store_sqlite::SqliteStore::open(&url).await.unwrap();
            let got = in_turns(&batcher, &other, &items, &sizes, &rules, now).await;
            assert_eq!(got, expected, "sqlite outcomes");
            assert_eq!(state(&batcher, &hashes).await, want, "sqlite state");

            let url = db::fresh_pg_url().await;
            let batcher = lotledger_store_pg::PgStore::open(&url).await.unwrap();
            let other = lotledger_store_pg::PgStore::open(&url).await.unwrap();
            let got = in_turns(&batcher, &other, &items, &sizes, &rules, now).await;
            assert_eq!(got, expected, "postgres outcomes");
            assert_eq!(state(&batcher, &hashes).await, want, "postgres state");
        });
    }
}

/// An over-drawn expense, then an earlier grant arriving late: the replay lets the expense
/// take from the late grant, so the batch must re-derive the address mid-batch.
#[tokio::test]
async fn a_late_grant_inside_a_batch_is_rederived() {
    let (rules, now) = setting(40, &Schedule::default());
    let msgs = [
        Msg::Distribute(0, 50, None, 10),
        Msg::Expense(0, 80, 30),
        Msg::Distribute(0, 100, None, 15),
    ];
    let items = items(&msgs);
    let dir = tempfile::tempdir().unwrap();
    let one = db::fresh_sqlite(&dir).await.0;
    apply_one_by_one(&one, &items, &rules, now).await.unwrap();
    let grouped = db::fresh_sqlite(&dir).await.0;
    grouped.apply_batch(&items, &rules, now).await.unwrap();
    for store_lots in [
        one.lots(&addr(0)).await.unwrap(),
        grouped.lots(&addr(0)).await.unwrap(),
    ] {
        let remaining: Vec<i64> = store_lots.iter().map(|l| l.amount_remaining.0).collect();
        assert_eq!(remaining, vec![70]);
    }
}

/// Under v2 a debit takes the lot that expires soonest, even one granted after lots that
/// would cover it in emission order: every way of applying batches must read that lot too (a
/// batch read an address's lots only until they covered the debit, as v1 needs, and drained
/// the older lot).
#[tokio::test]
async fn a_v2_debit_in_a_batch_takes_a_later_lot_that_expires_sooner() {
    let (rules, now) = setting(40, &Schedule::only(Policy::V2));
    let msgs = [
        Msg::Distribute(0, 500, None, 1),
        Msg::Distribute(0, 400, Some(50), 2),
        Msg::Expense(0, 300, 3),
        Msg::Transfer(0, 1, 150, None, 4),
    ];
    let items = items(&msgs);
    let dir = tempfile::tempdir().unwrap();
    let one = db::fresh_sqlite(&dir).await.0;
    apply_one_by_one(&one, &items, &rules, now).await.unwrap();
    // The debits in a batch of their own (the lots read from the store), in the grants' batch
    // (the lots the batch made), and planned ahead one message a batch.
    let after_grants = db::fresh_sqlite(&dir).await.0;
    for chunk in [&items[..2], &items[2..]] {
        after_grants.apply_batch(chunk, &rules, now).await.unwrap();
    }
    let whole = db::fresh_sqlite(&dir).await.0;
    whole.apply_batch(&items, &rules, now).await.unwrap();
    let ahead = db::fresh_sqlite(&dir).await.0;
    pipelined(&ahead, &items, &[1], &rules, now).await;
    let pg_after_grants = db::fresh_pg().await;
    for chunk in [&items[..2], &items[2..]] {
        pg_after_grants
            .apply_batch(chunk, &rules, now)
            .await
            .unwrap();
    }
    let pg_ahead = db::fresh_pg().await;
    pipelined(&pg_ahead, &items, &[1], &rules, now).await;

    // The expense takes 300 of the expiring 400, the transfer its last 100, then 50 of the
    // 500; the recipient's 100 expire with their source.
    let expiring = Some(at_hour(50));
    let want = (vec![(450, None)], vec![(100, expiring), (50, None)]);
    async fn held<S: Store>(
        store: &S,
    ) -> (Vec<(i64, Option<Timestamp>)>, Vec<(i64, Option<Timestamp>)>) {
        let mut out = Vec::new();
        for holder in [addr(0), addr(1)] {
            let lots = store.lots(&holder).await.unwrap();
            out.push(
                lots.iter()
                    .map(|l| (l.amount_remaining.0, l.expiration_date))
                    .collect(),
            );
        }
        let second = out.pop().unwrap();
        (out.pop().unwrap(), second)
    }
    assert_eq!(held(&one).await, want, "one transaction per message");
    assert_eq!(
        held(&after_grants).await,
        want,
        "sqlite, debits in their own batch"
    );
    assert_eq!(held(&whole).await, want, "sqlite, one batch");
    assert_eq!(held(&ahead).await, want, "sqlite, planned ahead");
    assert_eq!(
        held(&pg_after_grants).await,
        want,
        "postgres, debits in their own batch"
    );
    assert_eq!(held(&pg_ahead).await, want, "postgres, planned ahead");
}

/// The same on a larger, denser workload: 2 000 messages over four holders, in batches of 1 000,
/// of 50, and one by one.
#[tokio::test]
async fn large_batches_equal_small_batches() {
    let mut seed: u64 = 42;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let mut msgs = Vec::new();
    for i in 0..2000usize {
        let h = i64::try_from(i / 50).unwrap();
        let a = u8::try_from(next(4)).unwrap();
        msgs.push(match next(10) {
            0..4 => Msg::Distribute(a, 1 + i64::try_from(next(500)).unwrap(), None, h),
            4..7 => Msg::Expense(a, 1 + i64::try_from(next(300)).unwrap(), h),
            _ => Msg::Transfer(
                a,
                (a + 1) % 4,
                1 + i64::try_from(next(200)).unwrap(),
                None,
                h,
            ),
        });
    }
    let r = reference(&msgs, 40, &Schedule::default()).await;
    let (items, rules, now) = (&r.items, &r.rules, r.now);
    for size in [1000, 50] {
        let store = db::fresh_sqlite(&r.dir).await.0;
        let got = batched(&store, items, &[size], rules, now).await;
        r.assert_same(&store, got, &format!("batches of {size}"))
            .await;
        let store = db::fresh_sqlite(&r.dir).await.0;
        let got = pipelined(&store, items, &[size], rules, now).await;
        r.assert_same(&store, got, &format!("batches of {size} planned ahead"))
            .await;
        let (held, _, _, failed) = ahead(&store);
        assert!(held > 0, "no batch of {size} held its plan");
        assert_eq!(failed, 0, "a plan's writing failed");
        let store = db::fresh_pg().await;
        let got = pipelined(&store, items, &[size], rules, now).await;
        r.assert_same(
            &store,
            got,
            &format!("postgres, batches of {size} planned ahead"),
        )
        .await;
        let (held, stale, _, failed) = ahead(&store);
        assert!(held > 0, "postgres: no batch of {size} held its plan");
        assert_eq!(
            (stale, failed),
            (0, 0),
            "postgres: stale (nobody else wrote), failed"
        );
    }
}

/// Our two batches through `store.apply_batches`, while `other` (a second store on the same
/// database, as another process) applies `theirs` in a transaction that takes `theirs`'
/// locks (its hash and `locks`) before our second batch is planned and commits only once it
/// has been: our second batch's plan is made before their write and its transaction begins
/// after (SQLite: it waits for the write lock; PostgreSQL: for the locks). Gives the outcomes
/// in commit order and how the plans ended ([`ahead`]).
async fn plan_then_another_writer<S>(
    store: &S,
    other: &S,
    ours: [Vec<BatchItem>; 2],
    theirs: &Post,
    locks: &[&str],
) -> (Vec<Outcome>, (u64, u64, u64, u64))
where
    S: Transactional + Clone + 'static,
{
    use lotledger_store::LedgerTx;
    use lotledger_store::batch::Commit;
    let (rules, now) = setting(40, &Schedule::default());
    let (jobs, queued) = tokio::sync::mpsc::channel(1);
    let (committed, mut done) = tokio::sync::mpsc::channel(8);
    let driver = {
        let (store, rules) = (store.clone(), rules.clone());
        tokio::spawn(async move { store.apply_batches(&rules, queued, committed).await })
    };
    let job = |items: &Vec<BatchItem>| BatchJob {
        items: items.clone(),
        now,
        progress: None,
    };
    jobs.send(job(&ours[0])).await.unwrap();
    let mut got = done.recv().await.unwrap().unwrap();
    let mut tx = other.write().await.unwrap();
    tx.lock_many(&[&theirs.item_hash], locks).await.unwrap();
    let planned = |store: &S| {
        store
            .ahead_counters()
            .unwrap()
            .planned
            .load(Ordering::SeqCst)
    };
    let before = planned(store);
    jobs.send(job(&ours[1])).await.unwrap();
    while planned(store) == before {
        tokio::task::yield_now().await;
    }
    got.push(
        lotledger_store::writer::apply(&mut tx, theirs, &rules, now)
            .await
            .unwrap(),
    );
    tx.commit().await.unwrap();
    got.extend(done.recv().await.unwrap().unwrap());
    drop(jobs);
    driver.await.unwrap();
    (got, ahead(store))
}

/// [`plan_then_another_writer`] on a SQLite file and on a PostgreSQL database: the second
/// batch's plan must not be written, but the batch applied as if planned after their write:
/// the same outcomes and state as one transaction per message in commit order, and counted
/// stale.
async fn a_plan_is_not_written_over(
    ours: [Vec<BatchItem>; 2],
    theirs: Post,
    locks: &[&str],
    hashes: &[&str],
) {
    let (rules, now) = setting(40, &Schedule::default());
    let in_commit_order = vec![
        ours[0][0].clone(),
        BatchItem::Apply(theirs.clone()),
        ours[1][0].clone(),
    ];
    let hashes: Vec<String> = hashes.iter().map(|h| (*h).to_string()).collect();
    let dir = tempfile::tempdir().unwrap();
    let one = db::fresh_sqlite(&dir).await.0;
    let expected = apply_one_by_one(&one, &in_commit_order, &rules, now)
        .await
        .unwrap();
    let want = state(&one, &hashes).await;

    let (store, url) = db::fresh_sqlite(&dir).await;
    let other = lotledger_store_sqlite::SqliteStore::open(&url)
        .await
        .unwrap();
    let (got, ended) = plan_then_another_writer(&store, &other, ours.clone(), &theirs, locks).await;
    assert_eq!(got, expected, "sqlite outcomes");
    assert_eq!(state(&store, &hashes).await, want, "sqlite state");
    assert_eq!(
        ended,
        (1, 1, 0, 0),
        "sqlite: held, stale, not ahead, failed"
    );

    let url = db::fresh_pg_url().await;
    let store = lotledger_store_pg::PgStore::open(&url).await.unwrap();
    let other = lotledger_store_pg::PgStore::open(&url).await.unwrap();
    let (got, ended) = plan_then_another_writer(&store, &other, ours, &theirs, locks).await;
    assert_eq!(got, expected, "postgres outcomes");
    assert_eq!(state(&store, &hashes).await, want, "postgres state");
    assert_eq!(
        ended,
        (1, 1, 0, 0),
        "postgres: held, stale, not ahead, failed"
    );
}

fn as_post(item: &BatchItem, hash: &str) -> Post {
    match item {
        BatchItem::Apply(post) => Post {
            item_hash: hash.into(),
            ..post.clone()
        },
        other => panic!("not a post: {other:?}"),
    }
}

/// A batch planned ahead, then another writer commits an expense of the same holder under
/// another hash before the batch's transaction begins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_made_before_another_writer_committed_is_not_written() {
    // Ours: a grant, then (second batch) an expense of the same holder; theirs, committed in
    // between: an expense of that holder too, under another hash.
    let all = items(&[
        Msg::Distribute(0, 100, None, 1),
        Msg::Expense(0, 25, 2),
        Msg::Expense(0, 30, 3),
    ]);
    let theirs = as_post(&all[1], "theirs");
    let ours = [vec![all[0].clone()], vec![all[2].clone()]];
    let holder = addr(0);
    a_plan_is_not_written_over(ours, theirs, &[&holder], &["h000", "theirs", "h002"]).await;
}

/// The same where their write touches none of the batch's holders but records the batch's
/// own message (a post of the same hash, granting another holder): the plan applied the
/// message as new, one transaction per message finds it processed. PostgreSQL, whose writers
/// of other holders commit meanwhile, must see it by the message's status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_made_before_another_writer_recorded_its_message_is_not_written() {
    let all = items(&[
        Msg::Distribute(0, 100, None, 1),
        Msg::Distribute(1, 40, None, 2),
        Msg::Expense(0, 30, 3),
    ]);
    let theirs = as_post(&all[1], "h002");
    let ours = [vec![all[0].clone()], vec![all[2].clone()]];
    let holder = addr(1);
    a_plan_is_not_written_over(ours, theirs, &[&holder], &["h000", "h002"]).await;
}

/// A batch that fails ends `apply_batches`: the batches after it are not applied, so that no
/// later batch (and its ingest progress) commits past a failed one. Here another connection
/// holds the file's write lock while the first batch is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_batch_is_applied_after_a_failed_one() {
    use sqlx::Connection;
    let (rules, now) = setting(40, &Schedule::default());
    let all = items(&[
        Msg::Distribute(0, 100, None, 1),
        Msg::Distribute(1, 50, None, 2),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = db::fresh_sqlite(&dir).await;
    let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut other)
        .await
        .unwrap();
    let (jobs, queued) = tokio::sync::mpsc::channel(2);
    let (committed, mut done) = tokio::sync::mpsc::channel(2);
    for item in &all {
        let job = BatchJob {
            items: vec![item.clone()],
            now,
            progress: None,
        };
        jobs.send(job).await.unwrap();
    }
    drop(jobs);
    store.apply_batches(&rules, queued, committed).await;
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    assert!(done.recv().await.unwrap().is_err(), "the first batch fails");
    assert!(done.recv().await.is_none(), "nothing after it");
    for a in [0, 1] {
        assert!(store.lots(&addr(a)).await.unwrap().is_empty());
    }
}

/// PostgreSQL answers a balance read from the lots a batch of its own process committed for
/// the address (the writers' batch cache, at the version the store shows), not by summing on
/// the server; the answers stay the core's over the stored lots at every instant, and a write
/// of the address elsewhere (here: its version advanced by hand) sends the read to the server.
#[tokio::test]
async fn postgres_balance_reads_take_the_lots_their_batches_committed() {
    let url = db::fresh_pg_url().await;
    let store = lotledger_store_pg::PgStore::open(&url).await.unwrap();
    let (rules, now) = setting(100, &Schedule::default());
    let holder = addr(1);
    let grant = |hash: &str, amount: i64, expiry: Option<i64>, hour: i64| {
        post(
            hash.into(),
            MINTER,
            hour,
            "aleph_credit_distribution",
            json!({"distribution": {"token": "T", "chain": "ETH", "credits": [
                {"address": holder, "amount": amount, "price": "0.5", "tx_hash": "0xt",
                 "provider": "ALEPH", "expiration": ms(expiry)}]}}),
        )
    };
    let expense = |hash: &str, amount: i64, hour: i64| {
        post(
            hash.into(),
            MINTER,
            hour,
            "aleph_credit_expense",
            json!({"expense": {"credits": [{"address": holder, "amount": amount, "ref": "r"}]}}),
        )
    };
    let instants =
        [5, 29, 30, 31].map(|h| Timestamp::from_unix_seconds(BASE_SECONDS + h * 3600).unwrap());
    let check =
        |when: &'static str| crate::store::balances_are_the_lots(&store, &holder, &instants, when);
    let all_processed = |outcomes: Vec<Outcome>| {
        assert!(
            outcomes.iter().all(|o| matches!(o, Outcome::Processed)),
            "{outcomes:?}"
        );
    };
    let apply = |items: Vec<BatchItem>| {
        let (store, rules) = (&store, &rules);
        async move { all_processed(store.apply_batch(&items, rules, now).await.unwrap()) }
    };
    // (written, summed by the server, kept) reads so far.
    let reads = || {
        let c = store.balance_cache_counts();
        (c.written, c.misses, c.hits)
    };
    apply(vec![
        grant("g1", 300, Some(30), 1),
        grant("g2", 50, None, 2),
    ])
    .await;
    check("granted").await;
    assert_eq!(reads(), (1, 0, 7));
    apply(vec![expense("e1", 120, 3)]).await;
    check("drained").await;
    assert_eq!(reads(), (2, 0, 14));
    // Written by another process: the version moved past the batch's.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::query("UPDATE addresses SET version = version + 1 WHERE address = $1")
        .bind(&holder)
        .execute(&mut conn)
        .await
        .unwrap();
    check("written elsewhere").await;
    assert_eq!(reads(), (2, 1, 21));
    // Batches planned ahead (ingest's path) leave their lots for the reads too.
    let items = vec![expense("e2", 10, 4), expense("e3", 10, 5)];
    all_processed(pipelined(&store, &items, &[1, 1], &rules, now).await);
    check("ingested").await;
    assert_eq!(reads(), (3, 1, 28));
}
