//! Content `time` floats are read exactly as the reference reads them (SPEC Part II 9.1):
//! `json.loads` (correctly rounded), then `datetime.fromtimestamp` (µs, half-even). The table
//! `data/float_times.tsv` was written by Python itself (`scripts/gen-float-times.py`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

use lotledger_core::decimal::python_float_from_str;
use lotledger_core::envelope::Envelope;
use lotledger_core::message::{PRECISION_CUTOFF_SECONDS, PRECISION_MULTIPLIER};
use lotledger_core::{Decision, OpKind, Rules, Timestamp, classify};

fn table() -> Vec<(String, i64)> {
    let text = include_str!("data/float_times.tsv");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (lit, us) = l.split_once('\t').unwrap();
            (lit.to_string(), us.parse().unwrap())
        })
        .collect()
}

#[test]
fn the_table_is_large_and_varied() {
    let rows = table();
    assert!(rows.len() >= 10_000, "{} rows", rows.len());
    let cutoff = PRECISION_CUTOFF_SECONDS * 1_000_000;
    assert!(rows.iter().any(|(_, us)| *us < cutoff) && rows.iter().any(|(_, us)| *us >= cutoff));
    let digits = |lit: &str| {
        let mant = lit.split(['e', 'E']).next().unwrap();
        mant.trim_start_matches(['0', '.'])
            .bytes()
            .filter(u8::is_ascii_digit)
            .count()
    };
    assert!(rows.iter().any(|(l, _)| digits(l) == 17));
    assert!(rows.iter().any(|(l, _)| digits(l) == 10));
}

/// Every literal goes through the whole intake path (the envelope's `item_content` string,
/// the POST header, the ×10 000 cutoff) and lands on the instant Python gives.
#[test]
fn content_times_match_python() {
    let rules = Rules::new(Vec::<String>::new(), ["ALEPH_CREDIT".to_string()]);
    let mut wrong = Vec::new();
    for (literal, micros) in table() {
        let item_content = format!(
            r#"{{"address":"0xsender","time":{literal},"type":"aleph_credit_transfer","content":{{"transfer":{{"credits":[{{"address":"0xabc","amount":5}}]}}}}}}"#
        );
        let envelope = Envelope {
            item_hash: "h".into(),
            chain: Some("ETH".into()),
            sender: Some("0xsender".into()),
            message_type: "POST".into(),
            channel: Some("ALEPH_CREDIT".into()),
            item_type: Some("inline".into()),
            item_content: Some(item_content),
            signature: None,
            content: None,
            time: None,
        };
        let post = envelope.post().unwrap().unwrap();
        let Decision::Apply(op) = classify(&post, &rules) else {
            panic!("{literal} was not applied");
        };
        let OpKind::Transfer(t) = &op.kind else {
            panic!("not a transfer")
        };
        let scaled = if micros < PRECISION_CUTOFF_SECONDS * 1_000_000 {
            5 * PRECISION_MULTIPLIER
        } else {
            5
        };
        if op.ts.as_micros() != micros || t.entries[0].amount.0 != scaled {
            wrong.push(format!(
                "{literal}: got {} (amount {}), Python {micros}",
                op.ts.as_micros(),
                t.entries[0].amount.0
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} differ, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

/// Query parameters (`start_date`, `end_date`) are read with Python's `float()` of a string.
#[test]
fn query_parameter_times_match_python() {
    for (literal, micros) in table() {
        let x = python_float_from_str(&literal).unwrap();
        assert_eq!(
            Timestamp::from_unix_seconds_f64(x).unwrap().as_micros(),
            micros,
            "{literal}"
        );
        let spaced = format!("  {literal}\n");
        assert_eq!(python_float_from_str(&spaced), Some(x));
    }
}

#[test]
fn python_float_string_rules() {
    for (text, want) in [
        ("1_000.5", Some(1000.5)),
        ("1e3", Some(1000.0)),
        ("1E3", Some(1000.0)),
        (".5", Some(0.5)),
        ("5.", Some(5.0)),
        ("+2", Some(2.0)),
        (" -Infinity ", Some(f64::NEG_INFINITY)),
        ("inf", Some(f64::INFINITY)),
        ("_1", None),
        ("1_", None),
        ("1__0", None),
        ("1_.5", None),
        ("", None),
        ("0x10", None),
        ("1,5", None),
    ] {
        assert_eq!(python_float_from_str(text), want, "{text:?}");
    }
    assert!(python_float_from_str("NaN").unwrap().is_nan());
}
