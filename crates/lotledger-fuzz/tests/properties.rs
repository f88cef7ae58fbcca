#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.
//! The fuzz bodies under proptest, in CI: random bytes, and structure-aware inputs (credit
//! messages with random fields, cursor-shaped tokens, query strings from the real parameter
//! names) so that the deep paths are reached without a coverage-guided fuzzer.

use lotledger_core::cursor::base64url_encode;
use proptest::prelude::*;
use serde_json::{Value, json};

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-5i64..5_000).prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-zA-Z0-9 ._:-]{0,12}".prop_map(Value::from),
        Just(json!("0.000001")),
        Just(json!("NaN")),
        Just(json!(lotledger_fuzz::MINTER)),
    ]
}

fn entry() -> impl Strategy<Value = Value> {
    proptest::collection::btree_map(
        prop_oneof![
            Just("address"),
            Just("amount"),
            Just("price"),
            Just("tx_hash"),
            Just("provider"),
            Just("expiration"),
            Just("ref"),
            Just("execution_id"),
            Just("node_id"),
            Just("time"),
            Just("count"),
            Just("size"),
            Just("origin"),
            Just("payment_method"),
            Just("bonus_amount"),
        ],
        scalar(),
        0..9,
    )
    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
}

/// An entry every schema accepts, with extreme amounts and expiries.
fn valid_entry() -> impl Strategy<Value = Value> {
    (
        0u8..4,
        prop_oneof![1i64..1_000, Just(i64::MAX), Just(i64::MAX / 10_000 + 1)],
        proptest::option::of(prop_oneof![
            Just(0i64),
            -1_000i64..1_000,
            1_700_000_000_000i64..1_900_000_000_000,
            Just(i64::MAX)
        ]),
    )
        .prop_map(|(a, amount, expiration)| {
            json!({"address": format!("0xh{a}"), "amount": amount, "price": "0.5", "tx_hash": "t",
                   "provider": "p", "ref": "r", "expiration": expiration})
        })
}

fn credit_message() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            Just("aleph_credit_distribution"),
            Just("aleph_credit_expense"),
            Just("aleph_credit_transfer"),
            Just("other")
        ],
        prop_oneof![Just(json!(lotledger_fuzz::MINTER)), scalar()],
        prop_oneof![
            Just(json!(1_780_000_000.0)),
            Just(json!(1_600_000_000)),
            scalar()
        ],
        proptest::collection::vec(prop_oneof![entry(), valid_entry(), valid_entry()], 0..4),
    )
        .prop_map(|(kind, address, time, credits)| {
            let key = kind.trim_start_matches("aleph_credit_");
            json!({"address": address, "time": time, "type": kind,
                   "content": {key: {"credits": credits, "token": "T", "chain": "ETH"}}})
        })
}

/// The text of a JSON object whose members are drawn from the envelope's fields and others,
/// with values of every type, a key sometimes twice, sometimes an array instead.
fn envelope_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("item_hash"),
        Just("type"),
        Just("chain"),
        Just("sender"),
        Just("channel"),
        Just("item_type"),
        Just("item_content"),
        Just("signature"),
        Just("content"),
        Just("messages"),
        Just("time"),
        Just("x"),
    ];
    let value = prop_oneof![
        "[a-zA-Z0-9]{0,8}".prop_map(|s| json!(s).to_string()),
        Just(r#""POST""#.to_string()),
        Just(r#""a\"b\u00e9""#.to_string()),
        Just("null".to_string()),
        Just("7".to_string()),
        Just("1.5".to_string()),
        Just("true".to_string()),
        Just(r#"{"address": "0xa", "n": [1, {"k": null}]}"#.to_string()),
        Just(r#"[1, "x"]"#.to_string()),
        Just(r#"[{"item_hash": "h", "type": "POST"}]"#.to_string()),
    ];
    // Mostly a valid `item_hash` and `type` first, so that many texts are messages.
    let required = prop_oneof![
        8 => Just(vec![
            ("item_hash", r#""h1""#.to_string()),
            ("type", r#""POST""#.to_string()),
        ]),
        1 => Just(vec![("type", r#""POST""#.to_string())]),
        1 => Just(Vec::new()),
    ];
    (
        required,
        proptest::collection::vec((key, value), 0..6),
        prop_oneof![Just(""), Just(" \n\t")],
        prop_oneof![9 => Just(false), 1 => Just(true)],
    )
        .prop_map(|(mut members, more, space, as_array)| {
            members.extend(more);
            if as_array {
                let values: Vec<String> = members.into_iter().map(|(_, v)| v).collect();
                return format!("{space}[{}]", values.join(","));
            }
            let members: Vec<String> = members
                .into_iter()
                .map(|(k, v)| format!("{}: {v}", json!(k)))
                .collect();
            format!("{space}{{{}}}{space}", members.join(", "))
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn envelope_texts(text in envelope_text()) {
        lotledger_fuzz::message(text.as_bytes());
    }

    #[test]
    fn message_bytes(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        lotledger_fuzz::message(&data);
    }

    #[test]
    fn credit_messages(m in credit_message()) {
        lotledger_fuzz::message(m.to_string().as_bytes());
    }

    #[test]
    fn envelopes(m in credit_message(), chain in "[A-Z]{2,4}", sig in "0x[0-9a-f]{0,140}") {
        let item_content = m.to_string();
        let envelope = json!({"item_hash": lotledger_sig::item_hash_of(&item_content), "type": "POST",
            "chain": chain, "sender": m["address"], "item_type": "inline",
            "item_content": item_content, "signature": sig});
        lotledger_fuzz::message(envelope.to_string().as_bytes());
    }

    #[test]
    fn cursor_bytes(data in proptest::collection::vec(any::<u8>(), 0..128)) {
        lotledger_fuzz::cursor(&data);
    }

    #[test]
    fn cursor_shaped(fields in proptest::collection::btree_map("[a-z]", scalar(), 0..6)) {
        let text = serde_json::to_string(&fields).unwrap_or_default();
        lotledger_fuzz::cursor(base64url_encode(text.as_bytes()).as_bytes());
    }

    #[test]
    fn query_strings(pairs in proptest::collection::vec((
        prop_oneof![Just("pagination"), Just("page"), Just("cursor"), Just("sort_by"), Just("sort_order"),
            Just("startDate"), Just("end_date"), Just("direction"), Just("resourceTypes"),
            Just("has_expiration"), Just("exclude_payment_method"), Just("min_balance"), Just("x")],
        "[-+0-9a-zA-Z.,_%=&]{0,24}",
    ), 0..6)) {
        let q: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        lotledger_fuzz::query(q.join("&").as_bytes());
    }
}
