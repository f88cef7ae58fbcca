//! Messages are kept as received (issue 11), on both backends: every recorded message keeps
//! its envelope — `item_content` byte for byte, signature, chain, sender, type, channel, time,
//! item type — whichever way it was recorded (one transaction per message, a batch, an
//! envelope-level rejection, a credit-rule rejection, an ignored post), and a rejected hash
//! processed later keeps the envelope it was processed with.

use lotledger_core::envelope::Envelope;
use lotledger_core::{Rules, Timestamp};
use lotledger_store::{BatchItem, EnvelopeScan, MessageStatus, Outcome, Store, apply_envelope};
use lotledger_testkit::db;
use serde_json::json;

const MINTER: &str = "0x2E4454fAD1906c0Ce6e45cBFA05cE898Ac3AC1dC";
const ALICE: &str = "0xaaaa000000000000000000000000000000000001";
const BOB: &str = "0xbbbb000000000000000000000000000000000002";

/// A 64-digit hex hash of `text` (the store does not check item hashes).
fn hex_of(text: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    format!("{:064x}", h.finish())
}

/// An envelope of `sender` whose `item_content` is `content` as written (keys in the order
/// given, spacing kept: the store must not re-serialise it), signed `signature`.
fn envelope(sender: &str, time: &str, item_content: &str, signature: &str) -> Envelope {
    let hash = hex_of(item_content);
    let text = json!({
        "item_hash": hash, "type": "POST", "chain": "ETH", "sender": sender,
        "channel": "ALEPH_CREDIT", "item_type": "inline", "item_content": item_content,
        "signature": signature,
    })
    .to_string();
    // The time as a JSON number written by hand: 1.5e9 and 1795990000.123456 stay exact.
    let text = format!("{},\"time\":{time}}}", &text[..text.len() - 1]);
    Envelope::from_message_text(&text).unwrap()
}

fn grant(to: &str, amount: i64, seconds: i64) -> Envelope {
    let content = format!(
        r#"{{"address": "{MINTER}", "time": {seconds}, "type": "aleph_credit_distribution",
            "content": {{"distribution": {{"credits": [{{"address": "{to}", "amount": {amount},
            "price": "0.5", "tx_hash": "0x{seconds:x}", "provider": "ALEPH",
            "ref": "r\u00e9f-{seconds}"}}], "token": "ALEPH", "chain": "ETH"}}}}}}"#
    );
    envelope(MINTER, &format!("{seconds}.25"), &content, "0xab01")
}

fn transfer(from: &str, to: &str, amount: i64, seconds: i64, signature: &str) -> Envelope {
    let content = format!(
        r#"{{"address":"{from}","time":{seconds}.5,"type":"aleph_credit_transfer","content":{{"transfer":{{"credits":[{{"address":"{to}","amount":{amount}}}]}}}}}}"#
    );
    envelope(from, "1795990120.623456", &content, signature)
}

/// The envelope the store keeps for `e`'s hash, and its status.
async fn kept<S: Store>(store: &S, e: &Envelope) -> (MessageStatus, Envelope) {
    let record = store.message(&e.item_hash).await.unwrap().unwrap();
    let stored = record.envelope.expect("an envelope is kept");
    let back = Envelope {
        item_hash: stored.item_hash.clone(),
        chain: stored.chain.clone(),
        sender: stored.sender.clone(),
        message_type: stored.message_type.clone(),
        channel: stored.channel.clone(),
        item_type: stored.item_type.clone(),
        item_content: stored.item_content.clone(),
        signature: stored.signature.clone(),
        content: None,
        time: Some(stored.time),
    };
    (record.status, back)
}

async fn messages_are_kept_as_received<S: Store>(store: &S) {
    let rules = Rules::new(vec![MINTER.to_string()], vec!["ALEPH_CREDIT".into()]);
    let now = Timestamp::from_unix_seconds(1_795_990_500).unwrap();

    // One transaction per message: a grant, and a transfer too large for the balance.
    let first = grant(ALICE, 100, 1_795_990_000);
    let too_large = transfer(ALICE, BOB, 500, 1_795_990_100, "0xfirst");
    for e in [&first, &too_large] {
        apply_envelope(store, e, &rules, now).await.unwrap();
    }
    // An envelope-level rejection: the sender is not the content's address.
    let impostor = envelope(
        BOB,
        "1795990001",
        &format!(
            r#"{{"address":"{ALICE}","time":1,"type":"aleph_credit_transfer","content":{{}}}}"#
        ),
        "0x00",
    );
    assert!(matches!(
        apply_envelope(store, &impostor, &rules, now).await.unwrap(),
        Outcome::Rejected(_)
    ));
    // A batch: another grant, a post of another type (ignored), and the same transfer hash
    // again, now funded, with another signature text.
    let second = grant(ALICE, 1_000, 1_795_990_050);
    let other_type = envelope(
        ALICE,
        "1.5e9",
        &format!(r#"{{"address":"{ALICE}","time":1,"type":"blog","content":{{"title":"x"}}}}"#),
        "0xcafe",
    );
    let funded = Envelope {
        signature: Some("0xsecond".into()),
        ..too_large.clone()
    };
    let items: Vec<BatchItem> = [&second, &other_type, &funded]
        .into_iter()
        .map(BatchItem::from_envelope)
        .collect();
    let outcomes = store.apply_batch(&items, &rules, now).await.unwrap();
    assert_eq!(outcomes[2], Outcome::Processed, "{outcomes:?}");

    for (e, processed) in [
        (&first, true),
        (&impostor, false),
        (&second, true),
        (&other_type, true),
        (&funded, true),
    ] {
        let (status, back) = kept(store, e).await;
        assert_eq!(back, *e, "{}", e.item_hash);
        assert_eq!(status == MessageStatus::Processed, processed, "{status:?}");
    }
    // The envelope fields a reader sees, unchanged to the byte.
    let (_, back) = kept(store, &first).await;
    // The JSON escape and the spacing as sent, not as a parser would write them again.
    let content = back.item_content.unwrap();
    assert!(content.contains(r#""r\u00e9f-1795990000""#), "{content}");
    assert!(content.contains(r#""amount": 100,"#), "{content}");
    assert_eq!(back.time, Some(1_795_990_000.25));
    let (_, back) = kept(store, &other_type).await;
    assert_eq!(back.time, Some(1.5e9));

    // A record made without an envelope keeps none.
    let bare = hex_of("no envelope");
    store.reject(&bare, "no", None, now).await.unwrap();
    let record = store.message(&bare).await.unwrap().unwrap();
    assert!(record.envelope.is_none());
}

#[tokio::test]
async fn sqlite_keeps_messages_as_received() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = db::fresh_sqlite(&dir).await;
    messages_are_kept_as_received(&store).await;
}

#[tokio::test]
async fn postgres_keeps_messages_as_received() {
    let url = db::fresh_pg_url().await;
    let store = lotledger_store_pg::PgStore::open(&url).await.unwrap();
    messages_are_kept_as_received(&store).await;
}

/// The kept processed messages in the reference list's order (NODE-API §2.3), read a few at a
/// time from resume points, as `messages.json` reads them: envelope time, oldest or newest
/// first, ties in ascending item hash either way; rejected messages and records without an
/// envelope never listed; the time bounds `[start, end)` applied; a time finer than the
/// microsecond kept at the microsecond (the precision the list and its cursors carry).
async fn kept_messages_are_scanned_in_list_order<S: Store>(store: &S) {
    let rules = Rules::new(vec![MINTER.to_string()], vec!["ALEPH_CREDIT".into()]);
    let now = Timestamp::from_unix_seconds(1_795_990_500).unwrap();
    // 30 posts over 4 instants (ties), one of them given below the microsecond.
    let times = [
        "1795990000.5",
        "1795990001",
        "1795990000.5",
        "1795990002.0000004",
    ];
    let posts: Vec<Envelope> = (0..30)
        .map(|i| {
            let content =
                format!(r#"{{"address":"{ALICE}","time":1,"type":"blog","content":{{"n":{i}}}}}"#);
            envelope(ALICE, times[i % times.len()], &content, "0x01")
        })
        .collect();
    let items: Vec<BatchItem> = posts.iter().map(BatchItem::from_envelope).collect();
    store.apply_batch(&items, &rules, now).await.unwrap();
    let refused = envelope(BOB, "1795990001", r#"{"address":"0xnobody"}"#, "0x02");
    store
        .apply_batch(&[BatchItem::rejected(&refused, "no".into())], &rules, now)
        .await
        .unwrap();
    store
        .reject(&hex_of("bare"), "no", None, now)
        .await
        .unwrap();

    let second = |t: &str| -> f64 {
        match t {
            "1795990002.0000004" => 1_795_990_002.0,
            t => t.parse().unwrap(),
        }
    };
    let all: Vec<(f64, String)> = posts
        .iter()
        .enumerate()
        .map(|(i, e)| (second(times[i % times.len()]), e.item_hash.clone()))
        .collect();
    for ascending in [true, false] {
        for (start, end) in [
            (None, None),
            (Some(1_795_990_001.0), None),
            (None, Some(1_795_990_002.0)),
        ] {
            let mut want: Vec<(f64, String)> = all
                .iter()
                .filter(|(t, _)| start.is_none_or(|s| *t >= s) && end.is_none_or(|e| *t < e))
                .cloned()
                .collect();
            want.sort_by(|a, b| {
                let by_time = a.0.total_cmp(&b.0);
                let by_time = if ascending {
                    by_time
                } else {
                    by_time.reverse()
                };
                by_time.then_with(|| a.1.cmp(&b.1))
            });
            let mut got = Vec::new();
            let mut scan = EnvelopeScan {
                ascending,
                after: None,
                start,
                end,
                limit: 4,
            };
            loop {
                let chunk = store.kept_messages(&scan).await.unwrap();
                assert!(chunk.len() <= 4);
                let Some(last) = chunk.last() else { break };
                scan.after = Some((last.time, last.item_hash.clone()));
                got.extend(chunk.iter().map(|e| (e.time, e.item_hash.clone())));
            }
            assert_eq!(got, want, "ascending {ascending}, [{start:?}, {end:?})");
        }
    }
}

#[tokio::test]
async fn sqlite_scans_kept_messages_in_list_order() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = db::fresh_sqlite(&dir).await;
    kept_messages_are_scanned_in_list_order(&store).await;
}

#[tokio::test]
async fn postgres_scans_kept_messages_in_list_order() {
    let url = db::fresh_pg_url().await;
    let store = lotledger_store_pg::PgStore::open(&url).await.unwrap();
    kept_messages_are_scanned_in_list_order(&store).await;
}
