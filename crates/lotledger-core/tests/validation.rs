//! Every validation rule of SPEC Part II 2.1–2.4 with its error text, one table-driven check.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

use lotledger_core::message::{DEFAULT_WHITELIST, OpKind};
use lotledger_core::{Credits, Decision, IgnoreReason, Post, Rules, Timestamp, classify};
use serde_json::{Value, json};

const WL: &str = "0xwhitelisted";
const POST_CUTOFF: f64 = 1_772_323_200.0; // 2026-03-01
const PRE_CUTOFF: f64 = 1_672_574_400.0; // 2023-01-01T12:00

fn rules() -> Rules {
    Rules::new([WL.to_string()], ["ALEPH_CREDIT".to_string()])
}

fn post(address: &str, kind: &str, content: Value) -> Post {
    Post {
        item_hash: "h".into(),
        channel: Some("ALEPH_CREDIT".into()),
        content: json!({"address": address, "time": POST_CUTOFF, "type": kind, "content": content}),
        envelope: None,
    }
}

fn transfer(credits: Value) -> Post {
    post(
        "0xsender",
        "aleph_credit_transfer",
        json!({"transfer": {"credits": credits}}),
    )
}

fn distribution(entry: Value) -> Post {
    post(
        WL,
        "aleph_credit_distribution",
        json!({"distribution": {"credits": [entry], "token": "ALEPH", "chain": "ETH"}}),
    )
}

fn expense(entry: Value) -> Post {
    post(
        WL,
        "aleph_credit_expense",
        json!({"expense": {"credits": [entry]}}),
    )
}

fn dist_entry(extra: Value) -> Value {
    let mut e = json!({"address": "0xabc", "amount": 100, "price": "0.5", "tx_hash": "0xtx", "provider": "test"});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            e.as_object_mut().unwrap().remove(k);
        } else {
            e[k] = v.clone();
        }
    }
    e
}

/// `check(post, expected)`: the rejection text contains every expected fragment.
fn rejected(p: &Post, fragments: &[&str]) {
    match classify(p, &rules()) {
        Decision::Reject(r) => {
            for f in fragments {
                assert!(r.0.contains(f), "rejection {:?} lacks {f:?}", r.0);
            }
        }
        other => panic!(
            "expected a rejection containing {fragments:?}, got {other:?} for {:?}",
            p.content
        ),
    }
}

fn applied(p: &Post) -> lotledger_core::CreditOp {
    match classify(p, &rules()) {
        Decision::Apply(op) => op,
        other => panic!("expected the post to apply, got {other:?}"),
    }
}

#[test]
fn rejection_catalogue() {
    let t = "Invalid credit transfer content: ";
    let d = "Invalid credit distribution content: ";
    let x = "Invalid credit expense content: ";
    let loc_amount = "'loc': ('transfer', 'credits', 0, 'amount')";
    let cases: Vec<(Post, Vec<&str>)> = vec![
        (
            transfer(json!([{"address": "0xabc", "amount": 0}])),
            vec![t, loc_amount, "Input should be greater than 0"],
        ),
        (
            transfer(json!([{"address": "0xabc", "amount": -1}])),
            vec![t, "Input should be greater than 0"],
        ),
        (
            transfer(json!([{"address": "0xabc", "amount": -9_999_999}])),
            vec!["Input should be greater than 0"],
        ),
        (
            transfer(json!([{"address": "0xabc", "amount": 1.5}])),
            vec![
                loc_amount,
                "Value error, amount must be an integer, got float",
            ],
        ),
        (
            transfer(json!([{"address": "0xabc", "amount": 100.0}])),
            vec!["amount must be an integer, got float"],
        ),
        (
            transfer(json!([{"address": "0xabc", "amount": "100"}])),
            vec!["amount must be an integer, got str"],
        ),
        (
            transfer(json!([{"address": "0xabc", "amount": "lots"}])),
            vec!["amount must be an integer, got str"],
        ),
        (
            transfer(json!([{"address": "0xabc", "amount": true}])),
            vec!["amount must be an integer, got bool"],
        ),
        (
            transfer(json!([{"address": "0xabc", "amount": null}])),
            vec!["amount must be an integer, got NoneType"],
        ),
        (
            transfer(json!([{"address": "0xabc"}])),
            vec![loc_amount, "Field required"],
        ),
        (
            transfer(json!([{"address": "   ", "amount": 5}])),
            vec![
                "'loc': ('transfer', 'credits', 0, 'address')",
                "Value error, address must not be empty",
            ],
        ),
        (
            transfer(json!([{"address": "", "amount": 5}])),
            vec!["address must not be empty"],
        ),
        (
            transfer(json!([{"amount": 5}])),
            vec![
                "'loc': ('transfer', 'credits', 0, 'address')",
                "Field required",
            ],
        ),
        (
            transfer(json!([])),
            vec![
                "'loc': ('transfer', 'credits')",
                "List should have at least 1 item after validation, not 0",
            ],
        ),
        (
            post("0xsender", "aleph_credit_transfer", json!({"foo": "bar"})),
            vec!["'loc': ('transfer',)", "Field required"],
        ),
        (
            post("0xsender", "aleph_credit_transfer", json!({"transfer": {}})),
            vec!["'loc': ('transfer', 'credits')", "Field required"],
        ),
        (
            transfer(
                json!([{"address": "0xabc", "amount": 10}, {"address": "0xabc", "amount": 20}]),
            ),
            vec![
                "'loc': ()",
                "Value error, Duplicate recipient addresses are not allowed in a single transfer",
            ],
        ),
        (
            transfer(json!([{"address": "0xsender", "amount": 5}])),
            vec!["Self-transfer not allowed: sender and recipient are both 0xsender"],
        ),
        (
            transfer(json!([{"address": "0xabc", "amount": 5, "expiration": 1.5}])),
            vec!["Input should be a valid integer, got a number with a fractional part"],
        ),
        (
            transfer(json!([{"address": "0xabc", "amount": 5, "expiration": "soon"}])),
            vec!["Input should be a valid integer, unable to parse string as an integer"],
        ),
        (
            distribution(dist_entry(json!({"amount": 0}))),
            vec![d, "Input should be greater than 0"],
        ),
        (
            distribution(dist_entry(json!({"amount": -1}))),
            vec![d, "Input should be greater than 0"],
        ),
        (
            distribution(dist_entry(json!({"amount": "100"}))),
            vec![d, "amount must be an integer, got str"],
        ),
        (
            distribution(dist_entry(json!({"price": "not-a-number"}))),
            vec![
                "'loc': ('distribution', 'credits', 0, 'price')",
                "Value error, price must be a valid decimal string, got 'not-a-number'",
            ],
        ),
        (
            distribution(dist_entry(json!({"price": null}))),
            vec!["'price')", "Field required"],
        ),
        (
            distribution(dist_entry(json!({"tx_hash": 5}))),
            vec!["'tx_hash')", "Input should be a valid string"],
        ),
        (
            distribution(dist_entry(json!({"address": "  "}))),
            vec![d, "address must not be empty"],
        ),
        (
            post(
                WL,
                "aleph_credit_distribution",
                json!({"distribution": {"credits": [], "token": "T", "chain": "ETH"}}),
            ),
            vec![
                d,
                "List should have at least 1 item after validation, not 0",
            ],
        ),
        (
            post(
                WL,
                "aleph_credit_distribution",
                json!({"distribution": {"credits": [dist_entry(json!({}))], "chain": "ETH"}}),
            ),
            vec!["'loc': ('distribution', 'token')", "Field required"],
        ),
        (
            post(
                WL,
                "aleph_credit_distribution",
                json!({"distribution": {"credits": [dist_entry(json!({}))], "token": "T"}}),
            ),
            vec!["'loc': ('distribution', 'chain')", "Field required"],
        ),
        (
            distribution(dist_entry(json!({"bonus_amount": 1.5}))),
            vec!["bonus_amount must be an integer"],
        ),
        (
            expense(json!({"address": "0xabc", "amount": 0})),
            vec![x, "Input should be greater than 0"],
        ),
        (
            expense(json!({"address": "0xabc", "amount": -10})),
            vec![x, "Input should be greater than 0"],
        ),
        (
            expense(json!({"address": "0xabc", "amount": "big"})),
            vec![x, "amount must be an integer, got str"],
        ),
        (
            expense(json!({"address": "0xabc", "amount": 5, "price": "not-a-number"})),
            vec![x, "price must be a valid decimal string"],
        ),
        (
            expense(json!({"address": "", "amount": 5})),
            vec![x, "address must not be empty"],
        ),
        (
            expense(json!({"address": "0xabc", "amount": 5, "count": -1})),
            vec![
                "'loc': ('expense', 'credits', 0, 'count')",
                "Input should be greater than or equal to 0",
            ],
        ),
        (
            expense(json!({"address": "0xabc", "amount": 5, "size": -0.5})),
            vec![
                "'loc': ('expense', 'credits', 0, 'size')",
                "Input should be greater than or equal to 0",
            ],
        ),
        (
            expense(json!({"address": "0xabc", "amount": 5, "size": "NaN"})),
            vec!["Input should be a finite number"],
        ),
        (
            expense(json!({"address": "0xabc", "amount": 5, "time": "later"})),
            vec!["Input should be a valid number"],
        ),
        (
            post(
                WL,
                "aleph_credit_expense",
                json!({"expense": {"credits": []}}),
            ),
            vec![x, "at least 1"],
        ),
        (
            Post {
                item_hash: "h".into(),
                channel: Some("ALEPH_CREDIT".into()),
                content: json!({"address": WL, "type": "aleph_credit_expense", "content": {"x": 1}}),
                envelope: None,
            },
            vec!["Invalid post content", "'loc': ('time',)", "Field required"],
        ),
        (
            transfer(json!([{"address": "0x\u{0}b", "amount": 5}])),
            vec!["NUL"],
        ),
    ];
    for (p, fragments) in &cases {
        rejected(p, fragments);
    }
}

#[test]
fn precision_cutoff_overflow_and_expiry_range_are_rejections() {
    let mut p = transfer(json!([{"address": "0xabc", "amount": i64::MAX / 2}]));
    p.content["time"] = json!(PRE_CUTOFF);
    rejected(&p, &["overflows a signed 64-bit integer"]);
    rejected(
        &transfer(
            json!([{"address": "0xabc", "amount": 5, "expiration": 1_000_000_000_000_000i64}]),
        ),
        &["expiration", "out of range"],
    );
    rejected(
        &transfer(json!([{"address": "0xabc", "amount": 18_446_744_073_709_551_615u64}])),
        &["64-bit"],
    );
}

#[test]
fn silently_ignored_cases() {
    let r = rules();
    let other_channel = Post {
        channel: Some("OTHER".into()),
        ..distribution(dist_entry(json!({})))
    };
    assert_eq!(
        classify(&other_channel, &r),
        Decision::Ignore(IgnoreReason::ChannelNotAccepted)
    );
    let any_channel = Rules::new([WL.to_string()], Vec::<String>::new());
    assert!(matches!(
        classify(&other_channel, &any_channel),
        Decision::Apply(_)
    ));
    let not_whitelisted = post(
        "0xnobody",
        "aleph_credit_distribution",
        json!({"distribution": {"credits": "garbage"}}),
    );
    assert_eq!(
        classify(&not_whitelisted, &r),
        Decision::Ignore(IgnoreReason::SenderNotWhitelisted)
    );
    let expense_not_whitelisted = post("0xnobody", "aleph_credit_expense", json!({"expense": 1}));
    assert_eq!(
        classify(&expense_not_whitelisted, &r),
        Decision::Ignore(IgnoreReason::SenderNotWhitelisted)
    );
    assert_eq!(
        classify(&post(WL, "aleph_credit_expense", json!({})), &r),
        Decision::Ignore(IgnoreReason::EmptyContent)
    );
    assert_eq!(
        classify(&post(WL, "aleph_credit_expense", Value::Null), &r),
        Decision::Ignore(IgnoreReason::EmptyContent)
    );
    assert_eq!(
        classify(&post(WL, "blog", json!({"x": 1})), &r),
        Decision::Ignore(IgnoreReason::NotCreditType)
    );
    // Case matters for the whitelist.
    let recased = post(
        &WL.to_uppercase(),
        "aleph_credit_expense",
        json!({"expense": {"credits": [{"address": "a", "amount": 1}]}}),
    );
    assert_eq!(
        classify(&recased, &r),
        Decision::Ignore(IgnoreReason::SenderNotWhitelisted)
    );
    assert!(Rules::default().is_whitelisted(DEFAULT_WHITELIST));
}

#[test]
fn accepted_values_and_conversions() {
    let op = applied(&distribution(dist_entry(
        json!({"price": 1e-06, "bonus_amount": 0, "origin": "", "expiration": 1_700_000_000_000i64}),
    )));
    let OpKind::Distribution(d) = &op.kind else {
        panic!()
    };
    assert_eq!(d.entries[0].price.as_deref(), Some("0.000001"));
    assert_eq!(d.entries[0].bonus_amount, None);
    assert_eq!(d.entries[0].origin, None, "empty strings become NULL");
    assert_eq!(
        d.entries[0].expiration.unwrap().to_rfc3339(),
        "2023-11-14T22:13:20Z"
    );
    let op = applied(&distribution(dist_entry(
        json!({"price": 1, "bonus_amount": "7", "expiration": 0}),
    )));
    let OpKind::Distribution(d) = &op.kind else {
        panic!()
    };
    assert_eq!(d.entries[0].price.as_deref(), Some("1"));
    assert_eq!(d.entries[0].bonus_amount, Some(7));
    assert_eq!(d.entries[0].expiration, None, "expiration 0 means none");
    // Lax expiration: numeric strings and integral floats.
    for exp in [json!("1700000000000"), json!(1.7e12)] {
        let op = applied(&transfer(
            json!([{"address": "0xabc", "amount": 5, "expiration": exp}]),
        ));
        let OpKind::Transfer(t) = &op.kind else {
            panic!()
        };
        assert_eq!(
            t.entries[0].expiration,
            Some(Timestamp::from_unix_seconds(1_700_000_000).unwrap())
        );
    }
    // ×10 000 strictly before 2026-02-02T00:00:00Z.
    let mut p = transfer(json!([{"address": "0xabc", "amount": 7}]));
    p.content["time"] = json!(1_769_990_399.0);
    let OpKind::Transfer(t) = applied(&p).kind else {
        panic!()
    };
    assert_eq!(
        (t.entries[0].raw_amount, t.entries[0].amount),
        (7, Credits(70_000))
    );
    p.content["time"] = json!(1_769_990_400.0);
    let OpKind::Transfer(t) = applied(&p).kind else {
        panic!()
    };
    assert_eq!(t.entries[0].amount, Credits(7));
    // v2 expense aggregates and a float time.
    let op = applied(&expense(
        json!({"address": "0xabc", "amount": 500, "ref": "storage", "count": 12, "size": 2048.5, "time": 3599.475}),
    ));
    let OpKind::Expense(e) = &op.kind else {
        panic!()
    };
    assert_eq!(
        (e[0].count, e[0].size.as_deref()),
        (Some(12), Some("2048.5"))
    );
    // The funds check compares the raw total with the balance.
    let op = applied(&transfer(
        json!([{"address": "0xa", "amount": 60}, {"address": "0xb", "amount": 40}]),
    ));
    assert!(op.check_funds(Credits(100)).is_ok());
    assert_eq!(
        op.check_funds(Credits(99)).unwrap_err().0,
        "Insufficient credit balance for transfer. Required: 100, Available: 99"
    );
    // Whitelisted senders mint: no funds check, nothing drained.
    let minted = applied(&post(
        WL,
        "aleph_credit_transfer",
        json!({"transfer": {"credits": [{"address": "0xa", "amount": 5}]}}),
    ));
    assert_eq!(minted.required_funds(), None);
    assert!(minted.drained_addresses().is_empty());
}
