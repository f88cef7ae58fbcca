//! Aleph message envelopes as they arrive in JSON lines (SPEC Part II 2.2): the fields a node
//! reads before the credit rules, and the POST they carry.

use serde_json::Value;

use crate::message::{Post, Rejection};
use crate::node_json::StoredEnvelope;

/// The envelope fields lotledger uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub item_hash: String,
    pub chain: Option<String>,
    pub sender: Option<String>,
    pub message_type: String,
    pub channel: Option<String>,
    pub item_type: Option<String>,
    pub item_content: Option<String>,
    pub signature: Option<String>,
    /// The content object when the envelope carries it decoded (a node's `messages.json`).
    pub content: Option<Value>,
    /// The envelope's `time` (epoch seconds) when it is a number; kept with the message.
    pub time: Option<f64>,
}

/// Whether a JSON text is an object, by its first character after JSON whitespace (whether
/// it is valid JSON is for the parser). Serde reads a struct from an array too, by position:
/// a reader straight into a struct checks this first where only an object may be read.
fn opens_object(text: &str) -> bool {
    text.trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
}

/// Not an Aleph message at all: nothing can be recorded for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed message: {0}")]
pub struct MalformedEnvelope(pub String);

/// Why a message of another type than POST is refused, as a recorded rejection says it.
pub fn unsupported_type(message_type: &str) -> String {
    format!("Unsupported message type {message_type}: lotledger processes POST messages only")
}

impl Envelope {
    /// Reads an envelope from a JSON value.
    pub fn from_json(value: &Value) -> Result<Envelope, MalformedEnvelope> {
        let Value::Object(o) = value else {
            return Err(MalformedEnvelope("a message must be a JSON object".into()));
        };
        let text = |k: &str| -> Result<Option<String>, MalformedEnvelope> {
            match o.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(MalformedEnvelope(format!("field {k} must be a string"))),
            }
        };
        let item_hash = text("item_hash")?
            .filter(|h| !h.is_empty())
            .ok_or_else(|| MalformedEnvelope("field item_hash is required".into()))?;
        let message_type =
            text("type")?.ok_or_else(|| MalformedEnvelope("field type is required".into()))?;
        Ok(Envelope {
            chain: text("chain")?,
            sender: text("sender")?,
            channel: text("channel")?,
            item_type: text("item_type")?,
            item_content: text("item_content")?,
            signature: text("signature")?,
            content: o.get("content").filter(|c| c.is_object()).cloned(),
            time: o.get("time").and_then(Value::as_f64),
            item_hash,
            message_type,
        })
    }

    /// The envelope of a JSON text holding one message object, read straight into its fields
    /// (the other fields of the message are skipped, not built into a document). `None` for
    /// any other text, which [`Envelope::from_json`] over the parsed value then answers: not
    /// an object, not JSON, one of these fields of another type or given twice, no
    /// `item_hash` or an empty one (a page of messages has none), no `type`. Where this
    /// answers, it answers what `from_json` does (the fuzz body `message` checks it).
    pub fn from_message_text(text: &str) -> Option<Envelope> {
        /// The fields [`Envelope::from_json`] reads; a field of another type, or twice, fails.
        #[derive(serde::Deserialize)]
        struct Fields {
            item_hash: Option<String>,
            chain: Option<String>,
            sender: Option<String>,
            #[serde(rename = "type")]
            message_type: Option<String>,
            channel: Option<String>,
            item_type: Option<String>,
            item_content: Option<String>,
            signature: Option<String>,
            content: Option<Value>,
            /// Any JSON: only a number is kept, as `from_json` does.
            time: Option<Value>,
        }
        if !opens_object(text) {
            return None;
        }
        let f: Fields = serde_json::from_str(text).ok()?;
        Some(Envelope {
            item_hash: f.item_hash.filter(|h| !h.is_empty())?,
            message_type: f.message_type?,
            chain: f.chain,
            sender: f.sender,
            channel: f.channel,
            item_type: f.item_type,
            item_content: f.item_content,
            signature: f.signature,
            content: f.content.filter(Value::is_object),
            time: f.time.as_ref().and_then(Value::as_f64),
        })
    }

    /// The POST carried by this envelope, with the node's envelope-level checks that do not need
    /// cryptography: inline content that parses as JSON, and `sender` equal to `content.address`
    /// (case-insensitive). `Ok(None)` for a message that is not a POST; a rejection is of this
    /// envelope's `item_hash`.
    pub fn post(&self) -> Result<Option<Post>, Rejection> {
        if self.message_type != "POST" {
            return Ok(None);
        }
        let invalid = Rejection;
        let content = match (&self.item_content, &self.content) {
            (Some(text), _) => serde_json::from_str::<Value>(text).map_err(|e| {
                invalid(format!(
                    "Invalid message: item_content is not valid JSON: {e}"
                ))
            })?,
            (None, Some(content)) => content.clone(),
            (None, None) => {
                return Err(invalid(
                    "Invalid message: no inline item_content (only inline items are supported)"
                        .into(),
                ));
            }
        };
        if let (Some(sender), Some(address)) =
            (&self.sender, content.get("address").and_then(Value::as_str))
            && !sender.eq_ignore_ascii_case(address)
        {
            {
                return Err(invalid(format!(
                    "Permission denied: sender {sender} is not the content address {address} \
                     (delegation through security aggregates is not supported)"
                )));
            }
        }
        Ok(Some(Post {
            item_hash: self.item_hash.clone(),
            channel: self.channel.clone(),
            content,
            envelope: self.stored().map(std::sync::Arc::new),
        }))
    }

    /// The envelope as a node keeps it with the message's record: `None` without a numeric
    /// `time` (no node sends such a message; its record is kept without an envelope). The
    /// time is kept at the reference's precision, the microsecond, so that the list's order and
    /// its cursors (which carry microseconds) agree with what is shown.
    pub fn stored(&self) -> Option<StoredEnvelope> {
        Some(StoredEnvelope {
            item_hash: self.item_hash.clone(),
            sender: self.sender.clone(),
            chain: self.chain.clone(),
            signature: self.signature.clone(),
            message_type: self.message_type.clone(),
            item_type: self.item_type.clone(),
            item_content: self.item_content.clone(),
            channel: self.channel.clone(),
            time: self
                .time
                .map(|t| crate::node_json::stored_time(t).unwrap_or(t))?,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

    use super::*;

    /// What `from_json` makes of `text` parsed as a document.
    fn from_document(text: &str) -> Result<Envelope, MalformedEnvelope> {
        let value: Value = serde_json::from_str(text).unwrap();
        Envelope::from_json(&value)
    }

    /// A message text is read directly, into what the document gives: the envelope's fields,
    /// nulls as absent, other fields skipped, a `content` kept only as an object.
    #[test]
    fn a_message_text_reads_as_its_document() {
        for text in [
            r#"{"item_hash":"h","type":"POST","chain":"ETH","sender":"0xa","channel":"C",
                "item_type":"inline","item_content":"{\"a\":\"\\u00e9\"}","signature":"0x",
                "time":1.5,"size":3,"confirmed":true}"#,
            r#"  {"type":"POST","item_hash":"h","chain":null,"content":{"address":"0xa"}}  "#,
            r#"{"item_hash":"h","type":"FORGET","content":[1],"messages":[]}"#,
            r#"{"item_hash":"h","type":"POST","content":"text"}"#,
        ] {
            let fast = Envelope::from_message_text(text).expect("read directly");
            assert_eq!(Ok(fast), from_document(text), "{text}");
        }
    }

    /// Anything else is left to the document's path, which gives the error or reads a page.
    #[test]
    fn other_texts_are_left_to_the_document() {
        for text in [
            // Not an object: serde would read a struct from an array by position.
            r#"["h", null, null, "POST", null, null, null, null, null]"#,
            r#""h""#,
            "not json",
            r#"{"item_hash":"h","type":"POST"} trailing"#,
            // A field twice (the document keeps the last), or of another type.
            r#"{"item_hash":"h","type":"POST","sender":"0xa","sender":"0xb"}"#,
            r#"{"item_hash":5,"type":"POST"}"#,
            r#"{"item_hash":"h","type":"POST","signature":{"v":1}}"#,
            // Required fields missing or empty; a page of messages has no item_hash.
            r#"{"type":"POST"}"#,
            r#"{"item_hash":"","type":"POST"}"#,
            r#"{"item_hash":"h"}"#,
            r#"{"messages":[{"item_hash":"h","type":"POST"}]}"#,
        ] {
            assert_eq!(Envelope::from_message_text(text), None, "{text}");
        }
        assert_eq!(
            from_document(r#"{"item_hash":"h","type":"POST","sender":"0xa","sender":"0xb"}"#)
                .unwrap()
                .sender
                .as_deref(),
            Some("0xb"),
            "the document keeps a repeated key's last value"
        );
    }
}
