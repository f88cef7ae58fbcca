//! The POST content schema comes before the credit rules (SPEC Part II 9.1). The cases and
//! their errors in `data/post_content.json` were written by aleph-message 1.7.0's own
//! `PostContent` (`scripts/gen-post-content-cases.py`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

use lotledger_core::post_content::validate;
use lotledger_core::validate::Loc;
use lotledger_core::{Decision, Post, Rules, classify};
use serde_json::{Value, json};

/// `(type, loc, msg)` of one pydantic error.
type Expected = (String, Value, String);

fn cases() -> Vec<(Value, Vec<Expected>)> {
    let data: Value = serde_json::from_str(include_str!("data/post_content.json")).unwrap();
    data.as_array()
        .unwrap()
        .iter()
        .map(|case| {
            let errors = case["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["type"].as_str().unwrap().to_string(),
                        e["loc"].clone(),
                        e["msg"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            (case["content"].clone(), errors)
        })
        .collect()
}

fn loc_json(loc: &[Loc]) -> Value {
    Value::Array(
        loc.iter()
            .map(|l| match l {
                Loc::Key(k) => json!(k),
                Loc::Index(i) => json!(i),
            })
            .collect(),
    )
}

#[test]
fn every_case_gives_the_reference_errors() {
    let all = cases();
    assert!(all.len() >= 80);
    assert!(all.iter().filter(|(_, e)| e.is_empty()).count() >= 20);
    for (content, expected) in all {
        let got = match validate(content.as_object().unwrap()) {
            Ok(_) => vec![],
            Err(errors) => errors
                .iter()
                .map(|e| (e.kind.to_string(), loc_json(&e.loc), e.msg.clone()))
                .collect(),
        };
        assert_eq!(got, expected, "content {content}");
    }
}

/// The schema is checked before any credit rule: a refused content is a rejection naming each
/// error, whoever sends it and whatever its type; an accepted one is never refused for it.
#[test]
fn classify_rejects_exactly_the_refused_contents() {
    let rules = Rules::new(
        ["0x2E4454fAD1906c0Ce6e45cBFA05cE898Ac3AC1dC".to_string()],
        ["ALEPH_CREDIT".to_string()],
    );
    for (content, expected) in cases() {
        let post = Post {
            item_hash: "h".into(),
            channel: Some("ALEPH_CREDIT".into()),
            content: content.clone(),
            envelope: None,
        };
        let decision = classify(&post, &rules);
        let schema_rejection = match &decision {
            Decision::Reject(r) => r.0.strip_prefix("Invalid post content: "),
            _ => None,
        };
        if expected.is_empty() {
            assert!(schema_rejection.is_none(), "{content}: {decision:?}");
        } else {
            let text = schema_rejection.unwrap_or_else(|| panic!("{content}: {decision:?}"));
            for (kind, _, msg) in &expected {
                assert!(text.contains(&format!("'type': '{kind}'")), "{text}");
                assert!(
                    text.contains(msg.as_str()) || text.contains(&msg.replace('\'', "\\'")),
                    "{text} lacks {msg}"
                );
            }
        }
    }
}

#[test]
fn the_reference_texts_for_the_three_named_rules() {
    let base =
        json!({"address": "0xa", "time": 1.0, "type": "aleph_credit_transfer", "content": {}});
    let with = |key: &str, value: Value| {
        let mut c = base.clone();
        c[key] = value;
        let post = Post {
            item_hash: "h".into(),
            channel: None,
            content: c,
            envelope: None,
        };
        match classify(
            &post,
            &Rules::new(Vec::<String>::new(), Vec::<String>::new()),
        ) {
            Decision::Reject(r) => r.0,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        with("time", json!(-1)),
        "Invalid post content: [{'type': 'greater_than_equal', 'loc': ('time',), 'msg': 'Input should be greater than or equal to 0', 'input': -1}]"
    );
    assert!(
        with("time", json!(9_223_372_036.5)).contains(
            "'loc': ('time',), 'msg': 'Input should be less than or equal to 9223372036'"
        )
    );
    assert!(with("memo", json!("x")).contains("'type': 'extra_forbidden', 'loc': ('memo',), 'msg': 'Extra inputs are not permitted', 'input': 'x'"));
}
