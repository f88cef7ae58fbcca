//! Aleph message envelopes as they arrive in JSON lines (SPEC Part II 2.2): the fields a node
//! reads before the credit rules, and the POST they carry.

use serde_json::Value;

use crate::message::{Post, Rejection};

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
}

/// Not an Aleph message at all: nothing can be recorded for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed message: {0}")]
pub struct MalformedEnvelope(pub String);

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
            item_hash,
            message_type,
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
        }))
    }
}
