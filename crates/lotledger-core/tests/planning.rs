//! The planners and the replay on hand-made lots: drain order and eligibility, the transfer cap,
//! adjacent-only merging, the fallback, the index layout, minting, and over-draws.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

use lotledger_core::{
    Credits, Decision, HistoryRow, Lot, LotBook, Post, Rules, Timestamp, classify, replay,
};
use serde_json::{Value, json};

const S: &str = "0xs";
const MINTER: &str = "0xminter";
/// 2026-03-01T00:00:00Z (after the ×10 000 cutoff: amounts stay as sent).
const T: i64 = 1_772_323_200;

fn ts(hours: i64) -> Timestamp {
    Timestamp::from_unix_seconds(T + hours * 3600).unwrap()
}

fn lot(r: &str, hours: i64, amount: i64, exp_hours: Option<i64>) -> Lot {
    Lot {
        address: S.into(),
        credit_ref: r.into(),
        credit_index: 0,
        amount_remaining: Credits(amount),
        expiration_date: exp_hours.map(ts),
        message_timestamp: ts(hours),
    }
}

fn op(sender: &str, hours: i64, kind: &str, content: Value) -> lotledger_core::CreditOp {
    let post = Post {
        item_hash: "m".into(),
        channel: None,
        content: json!({"address": sender, "time": T + hours * 3600, "type": kind, "content": content}),
        envelope: None,
    };
    match classify(
        &post,
        &Rules::new([MINTER.to_string()], Vec::<String>::new()),
    ) {
        Decision::Apply(op) => op,
        other => panic!("{other:?}"),
    }
}

fn summary(rows: &[HistoryRow]) -> Vec<(String, i32, i64, Option<Timestamp>)> {
    rows.iter()
        .map(|r| {
            (
                r.address.clone(),
                r.credit_index,
                r.amount.0,
                r.expiration_date,
            )
        })
        .collect()
}

fn ms(hours: i64) -> i64 {
    (T + hours * 3600) * 1000
}

/// Emission order: 10 expiring at +100h, 10 never expiring, 10 expiring at +100h again.
fn mixed_book() -> LotBook {
    let mut book = LotBook::new();
    book.insert([
        lot("a", 0, 10, Some(100)),
        lot("b", 1, 10, None),
        lot("c", 2, 10, Some(100)),
    ]);
    book
}

#[test]
fn transfer_caps_and_merges_adjacent_portions_only() {
    let mut book = mixed_book();
    let t = op(
        S,
        10,
        "aleph_credit_transfer",
        json!({"transfer": {"credits": [{"address": "0xr", "amount": 30}]}}),
    );
    let plan = t.plan(&mut book).unwrap();
    assert_eq!(
        summary(&plan.rows),
        vec![
            ("0xr".into(), 0, 10, Some(ts(100))),
            ("0xr".into(), 1, 10, None),
            ("0xr".into(), 2, 10, Some(ts(100))),
            (S.into(), 3, -30, None),
        ]
    );
    // A requested expiry that caps everything to the same instant merges all three portions.
    let mut book = mixed_book();
    let t = op(
        S,
        10,
        "aleph_credit_transfer",
        json!({"transfer": {"credits": [{"address": "0xr", "amount": 30, "expiration": ms(50)}]}}),
    );
    let plan = t.plan(&mut book).unwrap();
    assert_eq!(
        summary(&plan.rows),
        vec![
            ("0xr".into(), 0, 30, Some(ts(50))),
            (S.into(), 1, -30, None)
        ]
    );
    assert!(
        plan.drained_lots
            .iter()
            .all(|l| l.amount_remaining == Credits(0))
    );
}

#[test]
fn transfer_drains_recipient_by_recipient_with_fallback_and_partial_funding() {
    let mut book = LotBook::new();
    book.insert([lot("a", 0, 25, None)]);
    let t = op(
        S,
        10,
        "aleph_credit_transfer",
        json!({"transfer": {"credits": [{"address": "0xr1", "amount": 20}, {"address": "0xr2", "amount": 10}, {"address": "0xr3", "amount": 7, "expiration": ms(5)}]}}),
    );
    let plan = t.plan(&mut book).unwrap();
    assert_eq!(
        summary(&plan.rows),
        vec![
            ("0xr1".into(), 0, 20, None),
            (S.into(), 1, -20, None),
            ("0xr2".into(), 2, 5, None), // partial: only what was left
            (S.into(), 3, -10, None),
            ("0xr3".into(), 4, 7, Some(ts(5))), // nothing left: the fallback mints
            (S.into(), 5, -7, None),
        ]
    );
    assert_eq!(plan.new_lots.len(), 3);
}

#[test]
fn drains_skip_future_expired_and_empty_lots() {
    let mut book = LotBook::new();
    // Granted after the debit; expired exactly at the debit; valid.
    book.insert([
        lot("late", 20, 50, None),
        lot("exp", 0, 50, Some(10)),
        lot("ok", 1, 50, None),
    ]);
    let e = op(
        MINTER,
        10,
        "aleph_credit_expense",
        json!({"expense": {"credits": [{"address": S, "amount": 80}]}}),
    );
    let plan = e.plan(&mut book).unwrap();
    assert_eq!(
        summary(&plan.rows),
        vec![(S.into(), 0, -80, None)],
        "the history keeps the full amount"
    );
    assert_eq!(plan.drained_lots.len(), 1);
    assert_eq!(
        (
            plan.drained_lots[0].credit_ref.as_str(),
            plan.drained_lots[0].amount_remaining
        ),
        ("ok", Credits(0))
    );
}

#[test]
fn whitelisted_transfer_mints_without_a_sender_row() {
    let t = op(
        MINTER,
        0,
        "aleph_credit_transfer",
        json!({"transfer": {"credits": [{"address": "0xr", "amount": 9, "expiration": ms(900)}]}}),
    );
    let plan = t.plan(&mut LotBook::new()).unwrap();
    assert_eq!(
        summary(&plan.rows),
        vec![("0xr".into(), 0, 9, Some(ts(900)))]
    );
}

#[test]
fn replay_orders_by_time_then_ref_and_skips_expired_lots() {
    let row = |r: &str, hours: i64, amount: i64, exp: Option<i64>| {
        let mut h = HistoryRow::bare(S, Credits(amount), r, 0, ts(hours));
        h.expiration_date = exp.map(ts);
        h
    };
    // Given out of order; a debit at the same instant as a grant whose ref sorts after it does
    // not see that grant; an expired lot is skipped; a zero grant makes no lot.
    let rows = vec![
        row("z_grant", 5, 100, None),
        row("a_debit", 5, -30, None),
        row("g0", 0, 40, Some(5)),
        row("g1", 1, 50, None),
        row("zero", 2, 0, None),
    ];
    let lots = replay(&rows).unwrap();
    let got: Vec<_> = lots
        .iter()
        .map(|l| (l.credit_ref.as_str(), l.amount_remaining.0))
        .collect();
    assert_eq!(got, vec![("g0", 40), ("g1", 20), ("z_grant", 100)]);
}

fn grant_row(r: &str, hours: i64, amount: i64) -> HistoryRow {
    HistoryRow::bare(S, Credits(amount), r, 0, ts(hours))
}

/// The dry run of an expense: in order, the eager plan; behind a later debit, the replay the
/// writer re-derives with, whose drains differ.
#[test]
fn dry_run_predicts_the_eager_plan_or_the_replay() {
    use lotledger_core::dry_run::{AddressNow, Drain, predict};
    use std::collections::{BTreeMap, BTreeSet};
    // Granted 100 at 0h (expiring at 5h) and 100 at 1h (never); 30 spent at 3h from the first.
    let history = vec![
        HistoryRow {
            expiration_date: Some(ts(5)),
            ..grant_row("a", 0, 100)
        },
        grant_row("b", 1, 100),
        grant_row("d", 3, -30),
    ];
    let mut first = lot("a", 0, 70, Some(5));
    first.credit_index = 0;
    let ledger = BTreeMap::from([(
        S.to_string(),
        AddressNow {
            lots: vec![first, lot("b", 1, 100, None)],
            history,
        },
    )]);
    let expense = |hours| {
        op(
            MINTER,
            hours,
            "aleph_credit_expense",
            json!({"expense": {"credits": [{"address": S, "amount": 80}]}}),
        )
    };
    let drain = |r: &str, amount: i64, exp: Option<i64>| Drain {
        address: S.into(),
        credit_ref: r.into(),
        credit_index: 0,
        amount: Credits(amount),
        expiration_date: exp.map(ts),
    };
    let none = BTreeSet::new();
    // At 4h, after everything: 70 from the first lot, 10 from the second; both are valid at
    // 4h, so 170 before and 90 after.
    let p = predict(&expense(4), &ledger, &none, ts(4)).unwrap();
    assert!(p.rederived.is_empty());
    assert_eq!(
        p.drained,
        vec![drain("a", 70, Some(5)), drain("b", 10, None)]
    );
    assert_eq!(p.balances[S], (Credits(170), Credits(90)));
    assert_eq!(summary(&p.rows), vec![(S.into(), 0, -80, None)]);
    // At 2h, before the 3h debit: replayed, the 80 takes 80 from the first lot at 2h, and the
    // 3h debit then takes 20 from the first and 10 from the second: 90 left in the second.
    let p = predict(&expense(2), &ledger, &none, ts(4)).unwrap();
    assert_eq!(p.rederived, vec![S.to_string()]);
    assert_eq!(p.drained, vec![drain("a", 80, Some(5))]);
    assert_eq!(p.balances[S], (Credits(170), Credits(90)));
    assert_eq!(
        p.lots_after
            .iter()
            .map(|l| (l.credit_ref.as_str(), l.amount_remaining.0))
            .collect::<Vec<_>>(),
        vec![("b", 90)]
    );
    // Its rows already stored: nothing written, the address re-derived as the writer does.
    let p = predict(&expense(4), &ledger, &BTreeSet::from([0]), ts(4)).unwrap();
    assert!(p.rows.is_empty() && p.created.is_empty());
    assert_eq!(p.rederived, vec![S.to_string()]);
}

/// v2 drains the soonest-expiring lot first, non-expiring last, and the replay of the rows it
/// writes agrees (SPEC Part II 8.3's S14, on the planner).
#[test]
fn v2_drains_soonest_expiry_first_and_its_replay_agrees() {
    let mut rules = Rules::new([MINTER.to_string()], Vec::<String>::new());
    rules.schedule = lotledger_core::Schedule::parse("v1,v2@2026-03-01T01:30:00Z").unwrap();
    let expense = |hours: i64| {
        let post = Post {
            item_hash: format!("e{hours}"),
            channel: None,
            content: json!({"address": MINTER, "time": T + hours * 3600, "type": "aleph_credit_expense",
                            "content": {"expense": {"credits": [{"address": S, "amount": 1500}]}}}),
            envelope: None,
        };
        match classify(&post, &rules) {
            Decision::Apply(op) => op,
            other => panic!("{other:?}"),
        }
    };
    for (hours, policy, left) in [
        // v1 (before 01:30): emission order, the non-expiring lot first.
        (1, lotledger_core::Policy::V1, vec![("b", 500)]),
        // v2: the lot expiring at 5h first, then 500 of the non-expiring one.
        (2, lotledger_core::Policy::V2, vec![("a", 500)]),
    ] {
        let op = expense(hours);
        assert_eq!(op.policy, policy);
        let mut book = LotBook::new();
        let (a, b) = (lot("a", 0, 1000, None), lot("b", 0, 1000, Some(5)));
        book.insert([a.clone(), b.clone()]);
        let plan = op.plan(&mut book).unwrap();
        assert!(plan.rows.iter().all(|r| r.policy == policy));
        let kept: Vec<(&str, i64)> = plan
            .drained_lots
            .iter()
            .filter(|l| l.amount_remaining.0 > 0)
            .map(|l| (l.credit_ref.as_str(), l.amount_remaining.0))
            .collect();
        assert_eq!(kept, left, "{policy}");
        // The replay of the grants and the expense's rows leaves the same lots.
        let mut rows = vec![
            HistoryRow::bare(S, Credits(1000), "a", 0, ts(0)),
            HistoryRow {
                expiration_date: Some(ts(5)),
                ..HistoryRow::bare(S, Credits(1000), "b", 0, ts(0))
            },
        ];
        rows.extend(plan.rows.iter().cloned());
        let replayed: Vec<(String, i64)> = replay(&rows)
            .unwrap()
            .into_iter()
            .map(|l| (l.credit_ref, l.amount_remaining.0))
            .collect();
        let left: Vec<(String, i64)> = left.iter().map(|(r, n)| (r.to_string(), *n)).collect();
        assert_eq!(replayed, left, "{policy}");
    }
}

/// Under v2 a transfer sends the soonest-expiring portions first (SPEC Part II 6: "recipients
/// receive the shortest-lived portions first"), each capped at its source lot's expiry, and
/// adjacent portions of one expiry merge; the non-expiring lot pays last.
#[test]
fn v2_transfers_send_the_shortest_lived_portions_first() {
    let mut rules = Rules::new([MINTER.to_string()], Vec::<String>::new());
    rules.schedule = lotledger_core::Schedule::only(lotledger_core::Policy::V2);
    let post = Post {
        item_hash: "m".into(),
        channel: None,
        content: json!({"address": S, "time": T + 10 * 3600, "type": "aleph_credit_transfer",
                        "content": {"transfer": {"credits": [{"address": "0xr", "amount": 25}]}}}),
        envelope: None,
    };
    let Decision::Apply(t) = classify(&post, &rules) else {
        panic!("not applied")
    };
    let mut book = mixed_book();
    let plan = t.plan(&mut book).unwrap();
    assert_eq!(
        summary(&plan.rows),
        vec![
            ("0xr".into(), 0, 20, Some(ts(100))),
            ("0xr".into(), 1, 5, None),
            (S.into(), 2, -25, None),
        ]
    );
    let left: Vec<(&str, i64)> = plan
        .drained_lots
        .iter()
        .map(|l| (l.credit_ref.as_str(), l.amount_remaining.0))
        .collect();
    assert_eq!(left, vec![("a", 0), ("b", 5), ("c", 0)]);
}

proptest::proptest! {
    /// A store may hand the planner only the lots `plan::covering` picks (the batch writers
    /// do): planning an expense over them drains exactly as over every lot, under either
    /// policy, with lots not yet granted, expired, empty or never expiring among them.
    #[test]
    fn planning_over_the_covering_lots_drains_as_over_all(
        lots in proptest::collection::vec(
            (0i64..20, 0i64..100, proptest::option::of(0i64..40)), 0..30),
        hours in 0i64..30,
        amount in 1i64..2_000,
        v2 in proptest::bool::ANY,
    ) {
        let policy = if v2 { lotledger_core::Policy::V2 } else { lotledger_core::Policy::V1 };
        let mut rules = Rules::new([MINTER.to_string()], Vec::<String>::new());
        rules.schedule = lotledger_core::Schedule::only(policy);
        let post = Post {
            item_hash: "e".into(),
            channel: None,
            content: json!({"address": MINTER, "time": T + hours * 3600, "type": "aleph_credit_expense",
                            "content": {"expense": {"credits": [{"address": S, "amount": amount}]}}}),
            envelope: None,
        };
        let Decision::Apply(op) = classify(&post, &rules) else { panic!("not applied") };
        let mut all: Vec<Lot> = lots
            .iter()
            .enumerate()
            .map(|(i, &(h, n, exp))| lot(&format!("r{i:02}"), h, n, exp))
            .collect();
        all.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        let need = i128::from(amount);
        let picked: Vec<Lot> = lotledger_core::plan::covering(&all, policy, need, ts(hours))
            .into_iter()
            .cloned()
            .collect();
        let drained = |book_lots: Vec<Lot>| {
            let mut book = LotBook::new();
            book.insert(book_lots);
            let mut changed: Vec<(String, i64)> = op
                .plan(&mut book)
                .unwrap()
                .drained_lots
                .into_iter()
                .map(|l| (l.credit_ref, l.amount_remaining.0))
                .collect();
            changed.sort();
            changed
        };
        proptest::prop_assert_eq!(drained(picked.clone()), drained(all.clone()));
        // In emission order, each one drainable.
        let keys: Vec<_> = picked.iter().map(Lot::order_key).collect();
        proptest::prop_assert!(keys.windows(2).all(|w| w[0] < w[1]));
        proptest::prop_assert!(picked.iter().all(|l| l.drainable_at(ts(hours))));
    }
}
