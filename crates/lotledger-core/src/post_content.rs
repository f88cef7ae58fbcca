//! aleph-message 1.7.0's `PostContent` model, which the reference applies to every POST content
//! before any credit rule (SPEC Part II 9.1): `address: str`, `time: float` within
//! `0 ≤ time ≤ 9223372036`, `content` (whose `tags`, when present, must be a list of at most 16
//! strings of 1 to 256 characters), `ref: str | ChainRef`, `type: str` (`amend` needs a `ref`),
//! and no other top-level key. Errors come in pydantic's order: the fields in declaration
//! order, then the forbidden extra keys.

use serde_json::{Map, Value};

use crate::validate::{FieldError, Loc, Validator};

/// aleph-message's `MAX_CONTENT_TIME`.
pub const MAX_CONTENT_TIME: f64 = 9_223_372_036.0;
/// The keys `PostContent` declares; any other top-level key is refused.
const FIELDS: [&str; 5] = ["address", "time", "content", "ref", "type"];
const MAX_TAGS: usize = 16;
const MAX_TAG_CHARS: usize = 256;
const MAX_CHANNEL_CHARS: usize = 128;
/// aleph-message's `Chain` values, in its enum's order (the order of pydantic's message).
pub const CHAINS: [&str; 33] = [
    "ARB",
    "AURORA",
    "AVAX",
    "BASE",
    "BLAST",
    "BOB",
    "BSC",
    "CSDK",
    "CYBER",
    "DOT",
    "ES",
    "ETH",
    "ETHERLINK",
    "FRAX",
    "HYPE",
    "INK",
    "LENS",
    "LINEA",
    "LISK",
    "METIS",
    "MODE",
    "NEO",
    "NULS",
    "NULS2",
    "OP",
    "POL",
    "SOL",
    "STT",
    "SONIC",
    "TEZOS",
    "UNICHAIN",
    "WLD",
    "ZORA",
];
const ITEM_TYPES: [&str; 3] = ["inline", "storage", "ipfs"];

/// The fields of a valid POST content that the credit rules read.
#[derive(Debug, Clone, PartialEq)]
pub struct PostHeader {
    pub address: String,
    /// Seconds since the epoch, as Python's `float` holds them.
    pub time: f64,
    pub post_type: String,
}

/// Validates a POST content object as `PostContent.model_validate` does.
pub fn validate(content: &Map<String, Value>) -> Result<PostHeader, Vec<FieldError>> {
    let mut v = Validator::new();
    let address = v.string(content, "address");
    let time = bounded_time(&mut v, content);
    if let Some(Value::Object(inner)) = content.get("content") {
        nested_tags(&mut v, inner);
    }
    let has_ref = reference(&mut v, content.get("ref"));
    let post_type = v.string(content, "type");
    if post_type.as_deref() == Some("amend") && !has_ref {
        v.value_error(
            "type",
            "A 'ref' is required for POST type 'amend'",
            &Value::String("amend".into()),
        );
    }
    for (key, value) in content {
        if !FIELDS.contains(&key.as_str()) {
            v.push(Loc::Key(key.clone()));
            v.error("extra_forbidden", "Extra inputs are not permitted", value);
            v.pop();
        }
    }
    match (address, time, post_type) {
        (Some(address), Some(time), Some(post_type)) if v.errors.is_empty() => Ok(PostHeader {
            address,
            time,
            post_type,
        }),
        _ => Err(v.errors),
    }
}

/// A required lax float at `key` (null is `float_type`, as for any non-optional float).
fn required_float(v: &mut Validator, obj: &Map<String, Value>, key: &str) -> Option<f64> {
    match obj.get(key) {
        None => {
            v.required(obj, key);
            None
        }
        Some(Value::Null) => {
            v.push(Loc::Key(key.into()));
            v.error("float_type", "Input should be a valid number", &Value::Null);
            v.pop();
            None
        }
        Some(_) => v.opt_lax_float(obj, key).ok().flatten(),
    }
}

/// `time: float = Field(ge=0, le=MAX_CONTENT_TIME)`. pydantic tests `le` before `ge` and reports
/// the first that fails, so NaN and +inf fail `le`, -inf fails `ge`.
fn bounded_time(v: &mut Validator, content: &Map<String, Value>) -> Option<f64> {
    let time = required_float(v, content, "time")?;
    let raw = content.get("time").unwrap_or(&Value::Null);
    let failed = if time.is_nan() || time > MAX_CONTENT_TIME {
        Some((
            "less_than_equal",
            "Input should be less than or equal to 9223372036",
        ))
    } else if time < 0.0 {
        Some((
            "greater_than_equal",
            "Input should be greater than or equal to 0",
        ))
    } else {
        None
    };
    match failed {
        Some((kind, msg)) => {
            v.push(Loc::Key("time".into()));
            v.error(kind, msg, raw);
            v.pop();
            None
        }
        None => Some(time),
    }
}

/// The legacy `content.tags` check: a list of at most 16 strings of 1 to 256 characters,
/// reported at `('content',)` and `('content', i)`.
fn nested_tags(v: &mut Validator, inner: &Map<String, Value>) {
    let tags = match inner.get("tags") {
        None | Some(Value::Null) => return,
        Some(tags) => tags,
    };
    v.push(Loc::Key("content".into()));
    match tags {
        Value::Array(items) if items.len() > MAX_TAGS => v.error(
            "too_long",
            format!(
                "List should have at most {MAX_TAGS} items after validation, not {}",
                items.len()
            ),
            tags,
        ),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                v.push(Loc::Index(i));
                match item {
                    Value::String(s) if s.is_empty() => v.error(
                        "string_too_short",
                        "String should have at least 1 character",
                        item,
                    ),
                    Value::String(s) if s.chars().count() > MAX_TAG_CHARS => v.error(
                        "string_too_long",
                        format!("String should have at most {MAX_TAG_CHARS} characters"),
                        item,
                    ),
                    Value::String(_) => {}
                    _ => v.error("string_type", "Input should be a valid string", item),
                }
                v.pop();
            }
        }
        _ => v.error("list_type", "Input should be a valid list", tags),
    }
    v.pop();
}

/// `ref: Optional[Union[str, ChainRef]]`. Returns whether a truthy, valid ref is there (what
/// the `amend` rule asks for).
fn reference(v: &mut Validator, value: Option<&Value>) -> bool {
    let value = match value {
        None | Some(Value::Null) => return false,
        Some(Value::String(s)) => return !s.is_empty(),
        Some(value) => value,
    };
    let before = v.errors.len();
    v.push(Loc::Key("ref".into()));
    v.push(Loc::Key("str".into()));
    v.error("string_type", "Input should be a valid string", value);
    v.pop();
    v.push(Loc::Key("ChainRef".into()));
    if let Some(obj) = v.object(value, "ChainRef") {
        chain_ref(v, obj);
    }
    v.pop();
    v.pop();
    // The union's `str` branch always fails here; the ref is valid when `ChainRef` added nothing,
    // and then the union as a whole succeeded: drop the `str` branch's error.
    if v.errors.len() == before + 1 {
        v.errors.truncate(before);
        return true;
    }
    false
}

/// aleph-message's `ChainRef` (extra keys ignored), fields in declaration order.
fn chain_ref(v: &mut Validator, obj: &Map<String, Value>) {
    enum_field(v, obj, "chain", &CHAINS);
    match obj.get("channel") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.chars().count() > MAX_CHANNEL_CHARS => {
            v.push(Loc::Key("channel".into()));
            v.error(
                "string_too_long",
                format!("String should have at most {MAX_CHANNEL_CHARS} characters"),
                &Value::String(s.clone()),
            );
            v.pop();
        }
        Some(_) => {
            let _ = v.opt_string(obj, "channel");
        }
    }
    v.string(obj, "item_content");
    if let Some(hash) = v.string(obj, "item_hash")
        && !is_item_hash(&hash)
    {
        v.value_error(
            "item_hash",
            &format!("Could not determine hash type: '{hash}'"),
            &Value::String(hash.clone()),
        );
    }
    enum_field(v, obj, "item_type", &ITEM_TYPES);
    v.string(obj, "sender");
    v.string(obj, "signature");
    required_float(v, obj, "time");
    if let Some(t) = obj.get("type")
        && t.as_str() != Some("POST")
    {
        v.push(Loc::Key("type".into()));
        v.error("literal_error", "Input should be 'POST'", t);
        v.pop();
    }
}

/// A required string enum: pydantic's `enum` error lists the values as `'a', 'b' or 'c'`.
fn enum_field(v: &mut Validator, obj: &Map<String, Value>, key: &str, values: &[&str]) {
    let Some(value) = v.required(obj, key) else {
        return;
    };
    if value.as_str().is_some_and(|s| values.contains(&s)) {
        return;
    }
    let quoted: Vec<String> = values.iter().map(|s| format!("'{s}'")).collect();
    let listed = match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.concat(),
    };
    v.push(Loc::Key(key.into()));
    v.error("enum", format!("Input should be {listed}"), value);
    v.pop();
}

/// aleph-message's `ItemType.from_hash`: a CIDv0 (`Qm` + 42–44 base58btc characters), a CIDv1
/// (`bafy` + 55 base32 characters) or 64 lower-case hex digits.
fn is_item_hash(hash: &str) -> bool {
    const BASE58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let all = |s: &str, ok: &dyn Fn(u8) -> bool| s.bytes().all(ok);
    if let Some(rest) = hash.strip_prefix("Qm")
        && (44..=46).contains(&hash.len())
        && all(rest, &|c| BASE58.contains(&c))
    {
        return true;
    }
    if let Some(rest) = hash.strip_prefix("bafy")
        && hash.len() == 59
        && all(rest, &|c| {
            c.is_ascii_lowercase() || (b'2'..=b'7').contains(&c)
        })
    {
        return true;
    }
    hash.len() == 64 && all(hash, &|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}
