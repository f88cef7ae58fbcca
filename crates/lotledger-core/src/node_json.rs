//! A stored message as the reference node's message API writes it (NODE-API.md §1.3, §3):
//! `GET /api/v0/messages/{item_hash}` bodies, byte for byte.
//!
//! Two writers of the reference meet here. The body itself is pydantic's `model_dump_json()`
//! (writer M): fields in model order, nulls written out, no spaces, raw UTF-8. Free-form JSON the
//! reference read back from PostgreSQL JSONB (a POST's inner `content`, a rejected message)
//! keeps JSONB's key order: shorter keys first, then bytewise ([`jsonb_text`]). Numbers and
//! strings are written the way pydantic-core and orjson write them; both escape the same
//! characters and format floats alike ([`python_float`]).

use serde_json::{Map, Value};

use crate::node_query::ContentFormat;
use crate::post_content;
use crate::timestamp::{Timestamp, TimestampError};
use crate::validate::{Validator, format_errors};

/// A message's envelope as it was received and kept (issue 11: stored messages).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEnvelope {
    pub item_hash: String,
    pub sender: Option<String>,
    pub chain: Option<String>,
    pub signature: Option<String>,
    /// `POST`, `FORGET`, …
    pub message_type: String,
    pub item_type: Option<String>,
    /// The content's JSON text, byte for byte as received.
    pub item_content: Option<String>,
    pub channel: Option<String>,
    /// The envelope's `time`, epoch seconds as sent.
    pub time: f64,
}

/// Why a stored message cannot be written as the reference's processed view.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NodeJsonError {
    #[error("message {item_hash}: type {message_type:?} has no processed view here (only POST)")]
    UnsupportedType {
        item_hash: String,
        message_type: String,
    },
    #[error("message {item_hash}: item_content is missing")]
    MissingItemContent { item_hash: String },
    #[error("message {item_hash}: item_content is not valid JSON: {reason}")]
    InvalidItemContent { item_hash: String, reason: String },
    #[error("message {item_hash}: item_content is not a JSON object")]
    ItemContentNotObject { item_hash: String },
    #[error("message {item_hash}: item_content is not a valid POST content: {reason}")]
    InvalidPostContent { item_hash: String, reason: String },
    #[error("message {item_hash}: envelope time {time} is not a valid instant: {source}")]
    Time {
        item_hash: String,
        time: f64,
        #[source]
        source: TimestampError,
    },
}

/// Compact JSON of `value` as the reference writes free-form JSON it read back from JSONB:
/// every object's keys shorter first, then bytewise; integers as integers; floats as
/// [`python_float`]; strings raw UTF-8 with pydantic/orjson escapes.
///
/// `value` no longer holds the number's text, so two JSONB rules cannot be applied: a number
/// written with an exponent and no fraction digits left (`1e3`, `1.5e3`) is an integer in JSONB
/// (`1000`, `1500`) but a float here (`1000.0`, `1500.0`), and integers beyond 64 bits come out
/// as floats. `-0.0` is written `0.0` (JSONB's `numeric` has no negative zero).
pub fn jsonb_text(value: &Value) -> String {
    let mut out = String::new();
    write_jsonb(&mut out, value);
    out
}

/// A finite float as pydantic-core and orjson write it: the shortest digits that read back to
/// the same `f64`; fixed notation with at least one fraction digit (`3600.0`,
/// `1795990000.123456`, `0.00001`) when the decimal exponent is in -5..=15, otherwise
/// `d[.ddd]e±x` with no padding (`1e+16`, `1.5e-7`). Not Python's `repr` (`1e-05`, `1.5e-07`).
/// NaN and infinities are `null`, pydantic's default (`ser_json_inf_nan='null'`) and orjson's.
pub fn python_float(x: f64) -> String {
    if !x.is_finite() {
        return "null".to_string();
    }
    let sign = if x.is_sign_negative() { "-" } else { "" };
    if x == 0.0 {
        return format!("{sign}0.0");
    }
    let (digits, exp) = shortest_digits(x.abs());
    let (first, rest) = digits.split_at(1.min(digits.len()));
    if !(-5..=15).contains(&exp) {
        let point = if rest.is_empty() { "" } else { "." };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        return format!(
            "{sign}{first}{point}{rest}e{exp_sign}{}",
            exp.unsigned_abs()
        );
    }
    let count = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    if exp < 0 {
        let zeros = "0".repeat(exp.unsigned_abs() as usize - 1);
        format!("{sign}0.{zeros}{digits}")
    } else if exp >= count - 1 {
        let zeros = "0".repeat((exp - (count - 1)) as usize);
        format!("{sign}{digits}{zeros}.0")
    } else {
        let (int_part, frac_part) = digits.split_at(exp as usize + 1);
        format!("{sign}{int_part}.{frac_part}")
    }
}

/// The shortest significant digits that read back as `x` (finite, positive) and the decimal
/// exponent of the first one (`x ≈ d.ddd × 10^exp`). Among the candidates of that length, the
/// one closest to `x`, an exact tie going to the even last digit: what zmij (orjson's and
/// serde_json's writer), ryu and Python's `repr` choose.
fn shortest_digits(x: f64) -> (String, i32) {
    // `{:e}` finds the shortest length, but on an exact tie it may end on the odd digit
    // (`1658206780088562.25` → `…562.3`, where the writers above say `…562.2`), so the digits
    // are rounded again from the exact expansion, which never has more than 767 significant
    // digits.
    let (shortest, shortest_exp) = split_scientific(&format!("{x:e}"));
    let (exact, exact_exp) = split_scientific(&format!("{x:.800e}"));
    match round_half_even(&exact, exact_exp, shortest.len()) {
        Some((digits, exp)) if reads_back(&digits, exp, x) => (digits, exp),
        // The nearest candidate lies outside the narrower half of the rounding interval (just
        // above a power of two): the shortest one inside it is the answer.
        _ => (shortest, shortest_exp),
    }
}

/// `d.ddde±x` → (`dddd`, x).
fn split_scientific(text: &str) -> (String, i32) {
    let (mantissa, exponent) = text.split_once('e').unwrap_or((text, "0"));
    let digits = mantissa.chars().filter(char::is_ascii_digit).collect();
    (digits, exponent.parse().unwrap_or(0))
}

/// `digits × 10^exp` (first digit at `exp`) rounded half-even to `len` digits, trailing zeros
/// dropped.
fn round_half_even(digits: &str, exp: i32, len: usize) -> Option<(String, i32)> {
    let (kept, dropped) = (digits.get(..len)?, digits.get(len..)?);
    let mut out: Vec<u8> = kept.bytes().collect();
    let last_odd = out.last().is_some_and(|d| d % 2 == 1);
    let round_up = match dropped.as_bytes().split_first() {
        Some((b'6'..=b'9', _)) => true,
        Some((b'5', tail)) => last_odd || tail.iter().any(|&d| d != b'0'),
        _ => false,
    };
    let mut exp = exp;
    if round_up {
        let mut carry = true;
        for d in out.iter_mut().rev() {
            if *d == b'9' {
                *d = b'0';
            } else {
                *d += 1;
                carry = false;
                break;
            }
        }
        if carry {
            out.insert(0, b'1');
            out.pop();
            exp += 1;
        }
    }
    while out.len() > 1 && out.last() == Some(&b'0') {
        out.pop();
    }
    Some((String::from_utf8(out).ok()?, exp))
}

fn reads_back(digits: &str, exp: i32, x: f64) -> bool {
    let (first, rest) = digits.split_at(1.min(digits.len()));
    format!("{first}.{rest}0e{exp}").parse::<f64>() == Ok(x)
}

/// The 200 body of `GET /api/v0/messages/{hash}` for a processed POST message (NODE-API §3):
/// `{"status":"processed","item_hash","reception_time","message"}`. lotledger has no chain
/// confirmations, so the message is always `"confirmed":false,"confirmations":[]`.
pub fn processed_body(
    env: &StoredEnvelope,
    reception_time: Timestamp,
) -> Result<String, NodeJsonError> {
    let message = message_object(env, true, Writer::Orjson)?;
    let mut out = String::new();
    out.push_str("{\"status\":\"processed\",\"item_hash\":");
    write_str(&mut out, &env.item_hash);
    out.push_str(",\"reception_time\":");
    write_str(&mut out, &reception_time.to_iso_pydantic());
    out.push_str(",\"message\":");
    out.push_str(&message);
    out.push('}');
    Ok(out)
}

/// A live frame of the websocket (NODE-API §4, A.9): a processed POST message as the
/// reference's pydantic model writes it (writer M), as [`processed_body`]'s `message`, but
/// with the post's own free-form content in sorted key order (the reference builds the frame
/// from its broadcast payload, which orjson wrote with sorted keys), and without `content`
/// unless `with_content`.
pub fn live_message(env: &StoredEnvelope, with_content: bool) -> Result<String, NodeJsonError> {
    message_object(env, with_content, Writer::Sorted)
}

/// A processed POST message in pydantic's model order, its post's own free-form content
/// written by `inner` (JSONB order for what the reference read back from its table).
fn message_object(
    env: &StoredEnvelope,
    with_content: bool,
    inner: Writer,
) -> Result<String, NodeJsonError> {
    let (text, content) = post_object(env)?;
    let post_content =
        post_content_json(&content, inner).map_err(|reason| NodeJsonError::InvalidPostContent {
            item_hash: env.item_hash.clone(),
            reason,
        })?;
    let time = envelope_time(env)?;

    let mut out = String::new();
    out.push_str("{\"sender\":");
    write_opt_str(&mut out, env.sender.as_deref());
    out.push_str(",\"chain\":");
    write_opt_str(&mut out, env.chain.as_deref());
    out.push_str(",\"signature\":");
    write_opt_str(&mut out, env.signature.as_deref());
    out.push_str(",\"type\":");
    write_str(&mut out, &env.message_type);
    out.push_str(",\"item_content\":");
    write_str(&mut out, text);
    out.push_str(",\"item_type\":");
    write_opt_str(&mut out, env.item_type.as_deref());
    out.push_str(",\"item_hash\":");
    write_str(&mut out, &env.item_hash);
    out.push_str(",\"time\":");
    out.push_str(&python_float(time));
    out.push_str(",\"channel\":");
    write_opt_str(&mut out, env.channel.as_deref());
    if with_content {
        out.push_str(",\"content\":");
        out.push_str(&post_content);
    }
    out.push_str(",\"confirmed\":false,\"confirmations\":[]}");
    Ok(out)
}

/// A kept processed message as the reference's list writes it (NODE-API §2.5, writer S: keys
/// sorted, recursively): `chain, channel, confirmations, confirmed, content, item_content,
/// item_hash, item_type, sender, signature, size, time, type`. `content` is the parsed
/// `item_content` with `address` and `time` filled from the envelope when it lacks them,
/// reduced to `{address, ref, type}` by [`ContentFormat::Headers`] and left out by
/// [`ContentFormat::None`]; `size` counts the content's code points.
pub fn list_message(env: &StoredEnvelope, format: ContentFormat) -> Result<String, NodeJsonError> {
    let time = envelope_time(env)?;
    let mut out = String::new();
    out.push_str("{\"chain\":");
    write_opt_str(&mut out, env.chain.as_deref());
    out.push_str(",\"channel\":");
    write_opt_str(&mut out, env.channel.as_deref());
    out.push_str(",\"confirmations\":[],\"confirmed\":false");
    if format != ContentFormat::None {
        let (_, mut content) = content_object(env)?;
        if !content.contains_key("address") {
            let sender = env.sender.clone().map_or(Value::Null, Value::String);
            content.insert("address".into(), sender);
        }
        if !content.contains_key("time") {
            content.insert("time".into(), Value::from(time));
        }
        if format == ContentFormat::Headers {
            let mut headers = Map::new();
            for key in ["address", "ref", "type"] {
                if key == "address" || env.message_type == "POST" {
                    match content.remove(key) {
                        None | Some(Value::Null) if key != "address" => {}
                        value => {
                            headers.insert(key.into(), value.unwrap_or(Value::Null));
                        }
                    }
                }
            }
            content = headers;
        }
        out.push_str(",\"content\":");
        write_free(&mut out, &Value::Object(content), Writer::Sorted);
    }
    out.push_str(",\"item_content\":");
    write_opt_str(&mut out, env.item_content.as_deref());
    out.push_str(",\"item_hash\":");
    write_str(&mut out, &env.item_hash);
    out.push_str(",\"item_type\":");
    write_opt_str(&mut out, env.item_type.as_deref());
    out.push_str(",\"sender\":");
    write_opt_str(&mut out, env.sender.as_deref());
    out.push_str(",\"signature\":");
    write_opt_str(&mut out, env.signature.as_deref());
    out.push_str(",\"size\":");
    match &env.item_content {
        Some(text) => out.push_str(&text.chars().count().to_string()),
        None => out.push_str("null"),
    }
    out.push_str(",\"time\":");
    out.push_str(&python_float(time));
    out.push_str(",\"type\":");
    write_str(&mut out, &env.message_type);
    out.push('}');
    Ok(out)
}

/// The page-mode answer of `messages.json` (NODE-API §2.4): `messages` are
/// [`list_message`] texts.
pub fn list_page_body(messages: &[String], page: u64, per_page: u64, total: u64) -> String {
    let mut out = String::from("{\"messages\":[");
    out.push_str(&messages.join(","));
    out.push_str(&format!(
        "],\"pagination_item\":\"messages\",\"pagination_page\":{page},\
         \"pagination_per_page\":{per_page},\"pagination_total\":{total}}}"
    ));
    out
}

/// The cursor-mode answer of `messages.json` (NODE-API §2.4).
pub fn list_cursor_body(messages: &[String], next_cursor: Option<&str>, per_page: u64) -> String {
    let mut out = String::from("{\"messages\":[");
    out.push_str(&messages.join(","));
    out.push_str("],\"next_cursor\":");
    write_opt_str(&mut out, next_cursor);
    out.push_str(&format!(",\"pagination_per_page\":{per_page}}}"));
    out
}

/// The envelope time as the reference gives it back ([`stored_time`]).
fn envelope_time(env: &StoredEnvelope) -> Result<f64, NodeJsonError> {
    stored_time(env.time).map_err(|source| NodeJsonError::Time {
        item_hash: env.item_hash.clone(),
        time: env.time,
        source,
    })
}

/// The content text and the content object of a kept POST message.
fn post_object(env: &StoredEnvelope) -> Result<(&str, Map<String, Value>), NodeJsonError> {
    if env.message_type != "POST" {
        return Err(NodeJsonError::UnsupportedType {
            item_hash: env.item_hash.clone(),
            message_type: env.message_type.clone(),
        });
    }
    content_object(env)
}

/// The content text and the content object of a kept message.
fn content_object(env: &StoredEnvelope) -> Result<(&str, Map<String, Value>), NodeJsonError> {
    let item_hash = || env.item_hash.clone();
    let text = env
        .item_content
        .as_deref()
        .ok_or_else(|| NodeJsonError::MissingItemContent {
            item_hash: item_hash(),
        })?;
    match serde_json::from_str(text) {
        Ok(Value::Object(content)) => Ok((text, content)),
        Ok(_) => Err(NodeJsonError::ItemContentNotObject {
            item_hash: item_hash(),
        }),
        Err(e) => Err(NodeJsonError::InvalidItemContent {
            item_hash: item_hash(),
            reason: e.to_string(),
        }),
    }
}

/// The 200 body of `GET /api/v0/messages/{hash}/content` for a processed POST message
/// (NODE-API §3.1, writer P): the post's own `content` (null when it has none) as Python's
/// `json.dumps` writes what JSONB gave back: keys in JSONB order, `", "` and `": "` between
/// items, non-ASCII as `\uXXXX`, floats as Python's `repr`.
pub fn content_body(env: &StoredEnvelope) -> Result<String, NodeJsonError> {
    let (_, content) = post_object(env)?;
    post_content::validate(&content).map_err(|errors| NodeJsonError::InvalidPostContent {
        item_hash: env.item_hash.clone(),
        reason: format_errors(&errors),
    })?;
    let mut out = String::new();
    write_free(
        &mut out,
        content.get("content").unwrap_or(&Value::Null),
        Writer::PythonDumps,
    );
    Ok(out)
}

/// The 200 body for a rejected message (NODE-API §3): `{"status":"rejected","item_hash",
/// "reception_time","message","error_code","details"}`, where `message` is the pending row the
/// reference stored (`time` as a float, `origin`, `content` = `item_content` parsed or null when
/// absent or not JSON), all in JSONB key order, and `details` is `{"errors":[…]}` or null when
/// `errors` is empty.
pub fn rejected_body(
    env: &StoredEnvelope,
    reception_time: Timestamp,
    origin: &str,
    error_code: i64,
    errors: &[String],
) -> String {
    let opt = |s: &Option<String>| s.clone().map_or(Value::Null, Value::String);
    let content = env
        .item_content
        .as_deref()
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .unwrap_or(Value::Null);
    // The row holds the time at microsecond precision; a time outside Python's datetime range
    // never reaches a row, so it is written as given.
    let time = stored_time(env.time).unwrap_or(env.time);
    let mut raw = Map::new();
    raw.insert("time".into(), Value::from(time));
    raw.insert("type".into(), Value::String(env.message_type.clone()));
    raw.insert("chain".into(), opt(&env.chain));
    raw.insert("origin".into(), Value::String(origin.to_string()));
    raw.insert("sender".into(), opt(&env.sender));
    raw.insert("channel".into(), opt(&env.channel));
    raw.insert("content".into(), content);
    raw.insert("item_hash".into(), Value::String(env.item_hash.clone()));
    raw.insert("item_type".into(), opt(&env.item_type));
    raw.insert("signature".into(), opt(&env.signature));
    raw.insert("item_content".into(), opt(&env.item_content));

    let mut out = String::new();
    out.push_str("{\"status\":\"rejected\",\"item_hash\":");
    write_str(&mut out, &env.item_hash);
    out.push_str(",\"reception_time\":");
    write_str(&mut out, &reception_time.to_iso_pydantic());
    out.push_str(",\"message\":");
    write_jsonb(&mut out, &Value::Object(raw));
    out.push_str(",\"error_code\":");
    out.push_str(&error_code.to_string());
    out.push_str(",\"details\":");
    if errors.is_empty() {
        out.push_str("null");
    } else {
        let list = errors.iter().cloned().map(Value::String).collect();
        let mut details = Map::new();
        details.insert("errors".into(), Value::Array(list));
        write_jsonb(&mut out, &Value::Object(details));
    }
    out.push('}');
    out
}

/// The envelope time as the reference gives it back: stored as a microsecond datetime
/// (`fromtimestamp`, half-even), read as `datetime.timestamp()`, i.e. the correctly rounded
/// float of micros / 10^6.
pub(crate) fn stored_time(time: f64) -> Result<f64, TimestampError> {
    Ok(Timestamp::from_unix_seconds_f64(time)?.as_unix_seconds_f64())
}

/// aleph-message's `PostContent` as pydantic dumps it: `{"address","time","content","ref",
/// "type"}`, `time` a float, `content` free-form (JSONB order), `ref` a string, a `ChainRef` or
/// null. The content is validated first, as the reference did before storing it.
fn post_content_json(content: &Map<String, Value>, inner: Writer) -> Result<String, String> {
    let header = post_content::validate(content).map_err(|errors| format_errors(&errors))?;
    let mut out = String::new();
    out.push_str("{\"address\":");
    write_str(&mut out, &header.address);
    out.push_str(",\"time\":");
    out.push_str(&python_float(header.time));
    out.push_str(",\"content\":");
    write_free(
        &mut out,
        content.get("content").unwrap_or(&Value::Null),
        inner,
    );
    out.push_str(",\"ref\":");
    match content.get("ref") {
        None | Some(Value::Null) => out.push_str("null"),
        Some(Value::String(s)) => write_str(&mut out, s),
        Some(Value::Object(chain_ref)) => write_chain_ref(&mut out, chain_ref)?,
        Some(_) => return Err("ref is neither a string nor a ChainRef".to_string()),
    }
    out.push_str(",\"type\":");
    write_str(&mut out, &header.post_type);
    out.push('}');
    Ok(out)
}

/// aleph-message's `ChainRef` in declaration order (the fields `post_content` validates):
/// `chain, channel, item_content, item_hash, item_type, sender, signature, time, type`.
fn write_chain_ref(out: &mut String, obj: &Map<String, Value>) -> Result<(), String> {
    let string = |key: &str| -> Result<&str, String> {
        obj.get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("ref.{key} is not a string"))
    };
    let time = Validator::new()
        .opt_lax_float(obj, "time")
        .ok()
        .flatten()
        .ok_or_else(|| "ref.time is not a number".to_string())?;
    out.push_str("{\"chain\":");
    write_str(out, string("chain")?);
    out.push_str(",\"channel\":");
    write_opt_str(out, obj.get("channel").and_then(Value::as_str));
    for key in [
        "item_content",
        "item_hash",
        "item_type",
        "sender",
        "signature",
    ] {
        out.push_str(",\"");
        out.push_str(key);
        out.push_str("\":");
        write_str(out, string(key)?);
    }
    out.push_str(",\"time\":");
    out.push_str(&python_float(time));
    out.push_str(",\"type\":\"POST\"}");
    Ok(())
}

/// Which of the reference's writers (NODE-API §1.3) writes a value read back from JSONB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// pydantic-core / orjson: compact, raw UTF-8, [`python_float`].
    Orjson,
    /// Python's `json.dumps` defaults: `", "` / `": "`, ASCII escapes, `repr` floats.
    PythonDumps,
    /// orjson with `OPT_SORT_KEYS`: as [`Writer::Orjson`], every object's keys bytewise.
    Sorted,
}

fn write_jsonb(out: &mut String, value: &Value) {
    write_free(out, value, Writer::Orjson);
}

fn write_free(out: &mut String, value: &Value, writer: Writer) {
    let (item_sep, key_sep) = match writer {
        Writer::Orjson | Writer::Sorted => (",", ":"),
        Writer::PythonDumps => (", ", ": "),
    };
    let string = |out: &mut String, s: &str| match writer {
        Writer::Orjson | Writer::Sorted => write_str(out, s),
        Writer::PythonDumps => write_ascii_str(out, s),
    };
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else {
                let x = n.as_f64().unwrap_or(0.0);
                // `numeric` has no negative zero: `-0.0` reads back as `0.0`.
                let x = if x == 0.0 { 0.0 } else { x };
                out.push_str(&match writer {
                    Writer::Orjson | Writer::Sorted => python_float(x),
                    Writer::PythonDumps => python_repr_float(x),
                });
            }
        }
        Value::String(s) => string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                write_free(out, item, writer);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            if writer == Writer::Sorted {
                entries.sort_by(|(a, _), (b, _)| a.as_bytes().cmp(b.as_bytes()));
            } else {
                entries.sort_by(|(a, _), (b, _)| {
                    a.len()
                        .cmp(&b.len())
                        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
                });
            }
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                string(out, key);
                out.push_str(key_sep);
                write_free(out, item, writer);
            }
            out.push('}');
        }
    }
}

fn write_opt_str(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => write_str(out, s),
        None => out.push_str("null"),
    }
}

/// A JSON string as pydantic-core and orjson write it (and Python's `json.dumps` with
/// `ensure_ascii=False`): `"` and `\` escaped, `\b \t \n \f \r` in short form, the other
/// control characters below U+0020 as `\u00xx` (lower-case hex); everything else raw, including
/// `/`, DEL and U+2028.
pub(crate) fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if c < '\u{20}' => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A JSON string as Python's `json.dumps` writes it by default (`ensure_ascii`): as
/// [`write_str`], and every character past U+007F as `\uxxxx` (lower-case hex; a surrogate
/// pair past U+FFFF).
fn write_ascii_str(out: &mut String, s: &str) {
    let mut raw = String::new();
    write_str(&mut raw, s);
    for c in raw.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
}

/// A float as Python's `repr` writes it (and so `json.dumps`): the shortest digits that read
/// back, fixed notation when the decimal exponent is in -4..16 (`0.0001`, `3600.0`), else
/// `d[.ddd]e±xx` with at least two exponent digits (`1e-05`, `1.5e+16`). NaN and infinities
/// as `json.dumps` writes them (`NaN`, `Infinity`, `-Infinity`).
pub fn python_repr_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let sign = if x.is_sign_negative() { "-" } else { "" };
    if x == 0.0 {
        return format!("{sign}0.0");
    }
    let (digits, exp) = shortest_digits(x.abs());
    if (-4..16).contains(&exp) {
        // The same fixed notation as pydantic's writer.
        return python_float(x);
    }
    let (first, rest) = digits.split_at(1.min(digits.len()));
    let point = if rest.is_empty() { "" } else { "." };
    let exp_sign = if exp < 0 { '-' } else { '+' };
    format!(
        "{sign}{first}{point}{rest}e{exp_sign}{:02}",
        exp.unsigned_abs()
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

    use super::*;
    use serde_json::json;

    /// NODE-API.md A.1 envelopes and A.7 bodies, copied from the markdown by a script.
    const REFERENCE: &str = include_str!("../tests/data/node_api_messages.json");

    struct Case {
        envelope: StoredEnvelope,
        reception_time: Timestamp,
        expected: String,
        rejection: Value,
    }

    fn case(name: &str) -> Case {
        let data: Value = serde_json::from_str(REFERENCE).unwrap();
        let c = data["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no reference case {name}"));
        let line: Value = serde_json::from_str(c["envelope"].as_str().unwrap()).unwrap();
        let text = |key: &str| line[key].as_str().map(str::to_string);
        Case {
            envelope: StoredEnvelope {
                item_hash: text("item_hash").unwrap(),
                sender: text("sender"),
                chain: text("chain"),
                signature: text("signature"),
                message_type: text("type").unwrap(),
                item_type: text("item_type"),
                item_content: text("item_content"),
                channel: text("channel"),
                time: line["time"].as_f64().unwrap(),
            },
            reception_time: Timestamp::parse_rfc3339(c["reception_time"].as_str().unwrap())
                .unwrap(),
            expected: c["expected"].as_str().unwrap().to_string(),
            rejection: c["rejection"].clone(),
        }
    }

    /// `GET …/content` of the processed transfer (A.8), byte for byte; a rejected or
    /// non-POST message has no content view.
    #[test]
    fn content_is_written_as_python_dumps_it() {
        let data: Value = serde_json::from_str(REFERENCE).unwrap();
        let with_content: Vec<&Value> = data["cases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["content"].is_string())
            .collect();
        assert_eq!(with_content.len(), 1);
        let c = case(with_content[0]["name"].as_str().unwrap());
        let body = content_body(&c.envelope).unwrap();
        assert_eq!(body, with_content[0]["content"].as_str().unwrap());
        assert!(content_body(&case("forget").envelope).is_err());
        // Python's defaults: ASCII escapes (a surrogate pair past U+FFFF), `repr` floats;
        // keys in JSONB order (`é` is two bytes, after `bb`).
        let env = StoredEnvelope {
            item_content: Some(
                r#"{"address":"0xa","time":1,"type":"t","content":{"é":"😀\n","bb":[1e-5,1e16,0.5,2.0]}}"#
                    .into(),
            ),
            ..c.envelope
        };
        assert_eq!(
            content_body(&env).unwrap(),
            r#"{"bb": [1e-05, 1e+16, 0.5, 2.0], "\u00e9": "\ud83d\ude00\n"}"#
        );
    }

    #[test]
    fn python_repr_floats() {
        for (x, text) in [
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (-2.5e100, "-2.5e+100"),
            (1_795_990_000.123_456, "1795990000.123456"),
            (3600.0, "3600.0"),
            (-0.0, "-0.0"),
        ] {
            assert_eq!(python_repr_float(x), text, "{x}");
        }
    }

    fn assert_processed(name: &str) {
        let c = case(name);
        let body = processed_body(&c.envelope, c.reception_time).unwrap();
        assert_eq!(body, c.expected, "{name}");
    }

    #[test]
    fn processed_distribution_matches_reference_without_confirmation() {
        let c = case("distribution");
        // The reference's distribution was confirmed on chain; lotledger has no chain
        // confirmations, so its body differs exactly there and everywhere else is the same.
        let confirmed = r#""confirmed":true,"confirmations":[{"chain":"ETH","height":21000000,"hash":"0xe1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1"}]"#;
        assert_eq!(c.expected.matches(confirmed).count(), 1);
        let expected = c
            .expected
            .replace(confirmed, r#""confirmed":false,"confirmations":[]"#);
        let body = processed_body(&c.envelope, c.reception_time).unwrap();
        assert_eq!(body, expected);
    }

    #[test]
    fn processed_expense_matches_reference() {
        assert_processed("expense");
    }

    #[test]
    fn processed_transfer_matches_reference() {
        assert_processed("transfer");
    }

    #[test]
    fn processed_expense_with_other_content_time_matches_reference() {
        assert_processed("expense_tie");
    }

    #[test]
    fn rejected_transfer_matches_reference() {
        let c = case("rejected_transfer");
        let origin = c.rejection["origin"].as_str().unwrap();
        assert_eq!(origin, "p2p");
        let error_code = c.rejection["error_code"].as_i64().unwrap();
        assert_eq!(error_code, 0);
        let errors: Vec<String> = c.rejection["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap().to_string())
            .collect();
        assert_eq!(errors.len(), 1);
        let body = rejected_body(&c.envelope, c.reception_time, origin, error_code, &errors);
        assert_eq!(body, c.expected);
    }

    #[test]
    fn rejected_details_and_content_fallbacks() {
        let mut env = case("rejected_transfer").envelope;
        env.item_content = Some("{not json".into());
        env.signature = None;
        // 1795990180.0000002: the pending row keeps whole microseconds.
        env.time = 1_795_990_180.0 + 3e-7;
        let at = Timestamp::from_unix_seconds(1_795_990_182).unwrap();
        let body = rejected_body(&env, at, "onchain", -1, &[]);
        assert!(
            body.starts_with(&format!(
                r#"{{"status":"rejected","item_hash":"{}","reception_time":"2026-11-29T22:09:42Z","message":{{"time":1795990180.0,"type":"POST","chain":"ETH","origin":"onchain","#,
                env.item_hash
            )),
            "{body}"
        );
        assert!(body.contains(r#","content":null,"#), "{body}");
        assert!(body.contains(r#","signature":null,"item_content":"{not json"},"#));
        assert!(
            body.ends_with(r#""error_code":-1,"details":null}"#),
            "{body}"
        );

        env.item_content = None;
        let body = rejected_body(&env, at, "p2p", 1, &["a\"b".into(), "c".into()]);
        assert!(body.contains(r#","content":null,"#), "{body}");
        assert!(
            body.contains(r#""signature":null,"item_content":null}"#),
            "{body}"
        );
        assert!(body.ends_with(r#""error_code":1,"details":{"errors":["a\"b","c"]}}"#));
    }

    #[test]
    fn processed_refuses_what_it_cannot_show() {
        let forget = case("forget");
        assert!(matches!(
            processed_body(&forget.envelope, forget.reception_time),
            Err(NodeJsonError::UnsupportedType { .. })
        ));

        let c = case("transfer");
        let with = |item_content: Option<&str>| {
            let mut env = c.envelope.clone();
            env.item_content = item_content.map(str::to_string);
            processed_body(&env, c.reception_time)
        };
        assert!(matches!(
            with(None),
            Err(NodeJsonError::MissingItemContent { .. })
        ));
        assert!(matches!(
            with(Some("{\"address\":")),
            Err(NodeJsonError::InvalidItemContent { .. })
        ));
        assert!(matches!(
            with(Some("[1,2]")),
            Err(NodeJsonError::ItemContentNotObject { .. })
        ));
        assert!(matches!(
            with(Some(r#"{"address":"0xa","type":"t"}"#)),
            Err(NodeJsonError::InvalidPostContent { .. })
        ));
        let err = with(None).unwrap_err().to_string();
        assert!(err.contains(&c.envelope.item_hash) && err.contains("item_content"));

        let mut env = c.envelope.clone();
        env.time = f64::NAN;
        assert!(matches!(
            processed_body(&env, c.reception_time),
            Err(NodeJsonError::Time { .. })
        ));
    }

    #[test]
    fn processed_content_defaults_and_refs() {
        let mut env = case("transfer").envelope;
        let at = Timestamp::from_micros(1_795_990_122_000_000).unwrap();
        env.item_content = Some(r#"{"type":"t","address":"0xa","time":17,"ref":"r"}"#.into());
        env.channel = None;
        // 1795990120.0000002 as a float; a whole second once stored as a microsecond datetime.
        env.time = 1_795_990_120.0 + 3e-7;
        assert_eq!(python_float(env.time), "1795990120.0000002");
        let body = processed_body(&env, at).unwrap();
        assert!(
            body.contains(r#""time":1795990120.0,"channel":null,"content":{"address":"0xa","time":17.0,"content":null,"ref":"r","type":"t"},"#),
            "{body}"
        );
        assert!(body.contains(r#""reception_time":"2026-11-29T22:08:42Z""#));

        let chain_ref = r#"{"address":"0xa","time":1.5,"type":"t","ref":{"type":"POST","time":2,"signature":"s","sender":"0xb","item_type":"inline","item_hash":"1ba26f6c78ee2699c7aff2288a8f9007afcfc6d8b71fa621402a78db40abbe28","item_content":"{}","chain":"ETH"}}"#;
        env.item_content = Some(chain_ref.into());
        let body = processed_body(&env, at).unwrap();
        assert!(
            body.contains(r#""ref":{"chain":"ETH","channel":null,"item_content":"{}","item_hash":"1ba26f6c78ee2699c7aff2288a8f9007afcfc6d8b71fa621402a78db40abbe28","item_type":"inline","sender":"0xb","signature":"s","time":2.0,"type":"POST"},"type":"t"}"#),
            "{body}"
        );
    }

    #[test]
    fn stored_time_is_microsecond_precise() {
        assert_eq!(
            stored_time(1_795_990_180.873_456).unwrap(),
            1_795_990_180.873_456
        );
        assert_eq!(stored_time(1.000_000_7).unwrap(), 1.000_001);
        assert_eq!(stored_time(-1.5).unwrap(), -1.5);
        assert!(stored_time(f64::INFINITY).is_err());
    }

    #[test]
    fn python_float_forms() {
        for (x, text) in [
            (3600.0, "3600.0"),
            (1_795_990_000.0, "1795990000.0"),
            (1_795_990_000.123_456, "1795990000.123456"),
            (2048.5, "2048.5"),
            (0.1, "0.1"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (-2.5, "-2.5"),
            (-1_795_990_000.0, "-1795990000.0"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1.234_567_890_123_456_8e17, "1.2345678901234568e+17"),
            (1e300, "1e+300"),
            (1e-5, "0.00001"),
            (1.25e-5, "0.0000125"),
            (1.5e-7, "1.5e-7"),
            (-1.5e-7, "-1.5e-7"),
            (1e-6, "1e-6"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            // An exact tie between two 17-digit candidates goes to the even digit (Rust's
            // `{:e}` says `…562.3`), and a case just above a power of two where the nearest
            // candidate does not read back; both as orjson's and serde_json's zmij write them.
            (1_658_206_780_088_562.0 + 0.25, "1658206780088562.2"),
            (7.120_236_347_223_045e-307, "7.120236347223045e-307"),
            (f64::NAN, "null"),
            (f64::NEG_INFINITY, "null"),
        ] {
            assert_eq!(python_float(x), text, "{x:?}");
        }
    }

    #[test]
    fn jsonb_key_order_duplicates_and_nesting() {
        // Shorter keys first, then bytewise (upper case before lower, ASCII before UTF-8).
        let value: Value = serde_json::from_str(
            r#"{"bb":1,"a":[{"zz":true,"y":null},[[],{}],"x"],"B":2.50,"é":0,"ab":-3,"aa":1e-7}"#,
        )
        .unwrap();
        assert_eq!(
            jsonb_text(&value),
            r#"{"B":2.5,"a":[{"y":null,"zz":true},[[],{}],"x"],"aa":1e-7,"ab":-3,"bb":1,"é":0}"#
        );
        // Duplicate keys: the last one wins, as in JSONB.
        let dup: Value = serde_json::from_str(r#"{"k":1,"k":{"b":2,"a":1,"k":3}}"#).unwrap();
        assert_eq!(jsonb_text(&dup), r#"{"k":{"a":1,"b":2,"k":3}}"#);
        // Integers stay integers; floats keep `.0`; `-0.0` has no sign in `numeric`.
        assert_eq!(
            jsonb_text(&json!([3600, 3600.0, -0.0, u64::MAX, i64::MIN, 1e16])),
            "[3600,3600.0,0.0,18446744073709551615,-9223372036854775808,1e+16]"
        );
    }

    #[test]
    fn strings_are_escaped_like_pydantic_and_orjson() {
        let s = "q\"b\\s/é\u{8}\t\n\u{b}\u{c}\r\u{0}\u{1f}\u{7f}\u{2028}😀";
        assert_eq!(
            jsonb_text(&json!(s)),
            "\"q\\\"b\\\\s/é\\b\\t\\n\\u000b\\f\\r\\u0000\\u001f\u{7f}\u{2028}😀\""
        );
    }
}
