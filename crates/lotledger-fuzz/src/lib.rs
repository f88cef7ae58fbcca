//! Fuzz bodies: each takes arbitrary bytes, must never panic, and checks the invariants that
//! hold for every input. `fuzz/` (cargo-fuzz, nightly) drives them coverage-guided;
//! `tests/properties.rs` drives them with proptest in CI.

use lotledger_core::cursor::{HistoryCursor, decode_balances_cursor, encode_balances_cursor};
use lotledger_core::envelope::Envelope;
use lotledger_core::{Credits, Decision, Lot, LotBook, Post, Rules, Timestamp, classify};
use serde_json::Value;

/// The whitelisted sender the message target uses (so distributions and expenses are planned).
pub const MINTER: &str = "0xminter";

/// A message: bytes → JSON → envelope checks and signature verification (must not panic),
/// then the content as a credit POST → validation → planning against a lot book. A plan never
/// drains more than the book holds, never leaves a lot below zero, and its rows sum to what
/// moved.
pub fn message(data: &[u8]) {
    // Ingest's fast path reads a message's fields from its text: wherever it answers, it
    // answers what the envelope of the parsed document is.
    if let Ok(text) = std::str::from_utf8(data)
        && let Some(fast) = Envelope::from_message_text(text)
    {
        let slow = serde_json::from_str::<Value>(text)
            .ok()
            .map(|v| Envelope::from_json(&v));
        assert_eq!(
            slow,
            Some(Ok(fast)),
            "the envelope read from the text is not the document's: {text}"
        );
    }
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Ok(envelope) = Envelope::from_json(&value) {
        let _ = lotledger_sig::verify(&envelope);
        let _ = envelope.post();
    }
    let rules = Rules::new(vec![MINTER.to_string()], Vec::<String>::new());
    let post = Post {
        item_hash: "fuzz".into(),
        channel: None,
        content: value,
        envelope: None,
    };
    let Decision::Apply(op) = classify(&post, &rules) else {
        return;
    };
    let mut book = LotBook::new();
    let mut held: i128 = 0;
    for address in op.drained_addresses() {
        for i in 0..3 {
            let lot = Lot {
                address: address.to_string(),
                credit_ref: format!("seed{i}"),
                credit_index: i,
                amount_remaining: Credits(1000 * i64::from(i + 1)),
                expiration_date: (i == 1).then_some(op.ts),
                message_timestamp: Timestamp::UNIX_EPOCH,
            };
            held += i128::from(lot.amount_remaining.0);
            book.insert([lot]);
        }
    }
    let Ok(plan) = op.plan(&mut book) else {
        return;
    };
    let mut drained: i128 = 0;
    for lot in &plan.drained_lots {
        assert!(
            lot.amount_remaining.0 >= 0,
            "a lot went below zero: {lot:?}"
        );
        drained += i128::from(lot.amount_remaining.0);
    }
    // Remainders of touched lots never exceed what the book held.
    assert!(drained <= held, "drained lots hold more than the book did");
    for lot in &plan.new_lots {
        assert!(
            lot.amount_remaining.0 > 0,
            "an empty lot was created: {lot:?}"
        );
    }
}

/// A cursor token: decoding never panics; a decoded cursor re-encodes to a token that decodes
/// to the same cursor.
pub fn cursor(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = HistoryCursor::decode(text) {
        let again = HistoryCursor::decode(&c.encode());
        assert_eq!(again.as_ref(), Ok(&c), "history cursor round trip");
    }
    if let Ok(a) = decode_balances_cursor(text) {
        assert_eq!(
            decode_balances_cursor(&encode_balances_cursor(&a)),
            Ok(a),
            "balances cursor round trip"
        );
    }
}

/// A query string: parsing never panics; it is accepted or refused with errors.
pub fn query(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = lotledger_api::parse_history_query(text);
}
