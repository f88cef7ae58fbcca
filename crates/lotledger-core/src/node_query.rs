//! The reference node's message list query (NODE-API.md §1.1, §1.2, §2): the query string of
//! `GET /api/v0/messages.json` read the way pyaleph's pydantic model reads it, its 422 bodies
//! byte for byte, the message cursor, and the filters a kept message must pass.
//!
//! Reading rules: the first occurrence of a key wins; the camelCase alias is looked up first,
//! then the Python field name; unknown keys are ignored; list values are split on `,` with no
//! trimming; every failing field is reported, in the model's declaration order, and the
//! model's cross-field checks run only when every field passed.

use serde_json::{Map, Value};

use crate::Timestamp;
use crate::cursor::{CursorError, base64url_decode, base64url_encode, python_json};
use crate::decimal::python_float_from_str;
use crate::node_json::{StoredEnvelope, write_str};
use crate::post_content::CHAINS;
use crate::pyrepr::repr_str;

/// aleph-message's message types, in its declaration order.
pub const MESSAGE_TYPES: [&str; 7] = [
    "POST",
    "AGGREGATE",
    "STORE",
    "PROGRAM",
    "INSTANCE",
    "V-PROGRAM",
    "FORGET",
];

/// pyaleph's message statuses.
const STATUSES: [&str; 6] = [
    "pending",
    "processed",
    "rejected",
    "forgotten",
    "removing",
    "removed",
];

const PAYMENT_TYPES: [&str; 3] = ["hold", "superfluid", "credit"];
const CONTENT_FORMATS: [&str; 3] = ["full", "headers", "none"];
const SORT_BYS: [&str; 2] = ["time", "tx-time"];

/// The most messages a page of cursor mode holds (NODE-API §2.4).
pub const CURSOR_PAGE_CAP: u64 = 200;

/// How much of each message the list shows (`contentFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentFormat {
    /// The parsed content.
    Full,
    /// `{"address", "type", "ref"}` of the content.
    Headers,
    /// No `content` key.
    None,
}

/// A valid `messages.json` query.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageListQuery {
    /// `sortBy=tx-time`, or a block bound (which forces it).
    pub tx_time: bool,
    /// `sortOrder=1`: oldest first.
    pub ascending: bool,
    pub message_type: Option<String>,
    pub message_types: Option<Vec<String>>,
    pub statuses: Vec<String>,
    pub addresses: Option<Vec<String>>,
    pub owners: Option<Vec<String>>,
    pub refs: Option<Vec<String>>,
    pub content_hashes: Option<Vec<String>>,
    pub content_keys: Option<Vec<String>>,
    pub content_types: Option<Vec<String>>,
    pub chains: Option<Vec<String>>,
    pub channels: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    pub hashes: Option<Vec<String>>,
    pub payment_types: Option<Vec<String>>,
    /// `time >= start` when set (`startDate` 0 means unset).
    pub start: Option<Timestamp>,
    /// `time < end` when set.
    pub end: Option<Timestamp>,
    pub start_block: i64,
    pub end_block: i64,
    pub content_format: ContentFormat,
    /// Page size; 0 is no limit (page mode only).
    pub pagination: u64,
    pub page: u64,
    /// Present (even empty) selects cursor mode.
    pub cursor: Option<String>,
    /// The websocket's `history` (messages sent before the live ones); 0 for the list.
    pub history: u64,
    /// Which fields of the forgotten/removed listing's unsupported set were given, by alias,
    /// in the reference's order (NODE-API §2.6).
    pub skeleton_unsupported: Vec<&'static str>,
}

/// A query the reference's model refuses: the 422 body, pydantic's `ValidationError.json()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryRefused(pub String);

/// One pydantic error, written in the key order `type, loc, msg, input, ctx, url`.
struct FieldError {
    kind: &'static str,
    loc: String,
    msg: String,
    input: String,
    /// `ctx`'s JSON text, when the error has one.
    ctx: Option<String>,
}

impl FieldError {
    fn write(&self, out: &mut String) {
        out.push_str("{\"type\":");
        write_str(out, self.kind);
        out.push_str(",\"loc\":");
        out.push_str(&self.loc);
        out.push_str(",\"msg\":");
        write_str(out, &self.msg);
        out.push_str(",\"input\":");
        write_str(out, &self.input);
        if let Some(ctx) = &self.ctx {
            out.push_str(",\"ctx\":");
            out.push_str(ctx);
        }
        out.push_str(",\"url\":\"https://errors.pydantic.dev/2.13/v/");
        out.push_str(self.kind);
        out.push_str("\"}");
    }
}

/// A JSON string's text.
fn json_string(s: &str) -> String {
    let mut out = String::new();
    write_str(&mut out, s);
    out
}

/// pydantic's wording of an enum's members: `'a', 'b' or 'c'`.
fn expected(members: &[&str]) -> String {
    let quoted: Vec<String> = members.iter().map(|m| format!("'{m}'")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.concat(),
    }
}

/// pydantic's lax `str → int`: surrounding whitespace, a sign, digits (underscores between
/// digits allowed), or a float text whose fraction is zeros (`1.0`).
pub fn lax_int(text: &str) -> Option<i64> {
    let t = text.trim();
    let digits_ok = |s: &str| {
        !s.is_empty()
            && !s.starts_with('_')
            && !s.ends_with('_')
            && !s.contains("__")
            && s.bytes().all(|b| b.is_ascii_digit() || b == b'_')
    };
    let int_part = match t.split_once('.') {
        Some((i, f)) if !f.is_empty() && f.bytes().all(|b| b == b'0') => i,
        Some(_) => return None,
        None => t,
    };
    let unsigned = int_part
        .strip_prefix('-')
        .or_else(|| int_part.strip_prefix('+'))
        .unwrap_or(int_part);
    if !digits_ok(unsigned) {
        return None;
    }
    int_part.replace('_', "").parse::<i64>().ok()
}

/// pydantic's lax `str → bool`.
pub fn lax_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" | "t" | "y" => Some(true),
        "false" | "0" | "no" | "off" | "f" | "n" => Some(false),
        _ => None,
    }
}

/// Whether `hash` is an item hash aleph-message accepts (NODE-API §1.1): 64 lower-case hex
/// digits, a CIDv0 (`Qm` and 42–44 base58btc characters) or a CIDv1 (`bafy` and 55 lower-case
/// base32 characters).
pub fn valid_item_hash(hash: &str) -> bool {
    let b = hash.as_bytes();
    let base58 = |c: &u8| c.is_ascii_alphanumeric() && !matches!(c, b'0' | b'O' | b'I' | b'l');
    (b.len() == 64 && b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))
        || (hash.starts_with("Qm") && (44..=46).contains(&b.len()) && b[2..].iter().all(base58))
        || (hash.starts_with("bafy")
            && b.len() == 59
            && b[4..]
                .iter()
                .all(|c| matches!(c, b'a'..=b'z' | b'2'..=b'7')))
}

/// What an element of a list field must be.
#[derive(Clone, Copy)]
enum Element {
    Any,
    OneOf(&'static [&'static str]),
    ItemHash,
}

/// The query's pairs and the errors found so far.
struct Reader<'a> {
    pairs: &'a [(String, String)],
    errors: Vec<FieldError>,
}

impl<'a> Reader<'a> {
    /// The first value of the alias, else of the field name, with the key it was found under.
    fn raw(&self, alias: &'static str, name: &'static str) -> Option<(&'static str, &'a str)> {
        [alias, name].into_iter().find_map(|key| {
            self.pairs
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| (key, v.as_str()))
        })
    }

    fn fail(
        &mut self,
        kind: &'static str,
        loc: String,
        msg: String,
        input: &str,
        ctx: Option<String>,
    ) {
        self.errors.push(FieldError {
            kind,
            loc,
            msg,
            input: input.to_string(),
            ctx,
        });
    }

    fn enum_error(&mut self, loc: String, members: &[&str], input: &str) {
        let expected = expected(members);
        self.fail(
            "enum",
            loc,
            format!("Input should be {expected}"),
            input,
            Some(format!("{{\"expected\":{}}}", json_string(&expected))),
        );
    }

    fn one_of(
        &mut self,
        alias: &'static str,
        name: &'static str,
        members: &'static [&'static str],
    ) -> Option<&'a str> {
        let (key, raw) = self.raw(alias, name)?;
        if members.contains(&raw) {
            Some(raw)
        } else {
            self.enum_error(format!("[{}]", json_string(key)), members, raw);
            None
        }
    }

    fn list(
        &mut self,
        alias: &'static str,
        name: &'static str,
        element: Element,
    ) -> Option<Vec<String>> {
        let (key, raw) = self.raw(alias, name)?;
        let items: Vec<String> = raw.split(',').map(str::to_string).collect();
        for (i, item) in items.iter().enumerate() {
            let loc = format!("[{},{i}]", json_string(key));
            match element {
                Element::Any => {}
                Element::OneOf(members) => {
                    if !members.contains(&item.as_str()) {
                        self.enum_error(loc, members, item);
                    }
                }
                Element::ItemHash => {
                    if !valid_item_hash(item) {
                        let error = format!("Could not determine hash type: {}", repr_str(item));
                        self.fail(
                            "value_error",
                            loc,
                            format!("Value error, {error}"),
                            item,
                            Some(format!("{{\"error\":{}}}", json_string(&error))),
                        );
                    }
                }
            }
        }
        Some(items)
    }

    fn int(&mut self, alias: &'static str, name: &'static str, ge: i64) -> Option<i64> {
        let (key, raw) = self.raw(alias, name)?;
        let loc = format!("[{}]", json_string(key));
        match lax_int(raw) {
            None => {
                self.fail(
                    "int_parsing",
                    loc,
                    "Input should be a valid integer, unable to parse string as an integer".into(),
                    raw,
                    None,
                );
                None
            }
            Some(v) if v < ge => {
                self.fail(
                    "greater_than_equal",
                    loc,
                    format!("Input should be greater than or equal to {ge}"),
                    raw,
                    Some(format!("{{\"ge\":{ge}}}")),
                );
                None
            }
            Some(v) => Some(v),
        }
    }

    fn float(&mut self, alias: &'static str, name: &'static str) -> Option<f64> {
        let (key, raw) = self.raw(alias, name)?;
        let loc = format!("[{}]", json_string(key));
        match python_float_from_str(raw) {
            None => {
                self.fail(
                    "float_parsing",
                    loc,
                    "Input should be a valid number, unable to parse string as a number".into(),
                    raw,
                    None,
                );
                None
            }
            // NaN fails the bound too.
            Some(x) if x.is_nan() || x < 0.0 => {
                self.fail(
                    "greater_than_equal",
                    loc,
                    "Input should be greater than or equal to 0".into(),
                    raw,
                    Some("{\"ge\":0.0}".into()),
                );
                None
            }
            Some(x) => Some(x),
        }
    }

    fn bool(&mut self, alias: &'static str, name: &'static str) -> Option<bool> {
        let (key, raw) = self.raw(alias, name)?;
        let parsed = lax_bool(raw);
        if parsed.is_none() {
            self.fail(
                "bool_parsing",
                format!("[{}]", json_string(key)),
                "Input should be a valid boolean, unable to interpret input".into(),
                raw,
                None,
            );
        }
        parsed
    }

    fn sort_order(&mut self) -> Option<bool> {
        let (key, raw) = self.raw("sortOrder", "sort_order")?;
        match lax_int(raw) {
            Some(1) => Some(true),
            Some(-1) => Some(false),
            _ => {
                let loc = format!("[{}]", json_string(key));
                self.fail(
                    "enum",
                    loc,
                    "Input should be 1 or -1".into(),
                    raw,
                    Some("{\"expected\":\"1 or -1\"}".into()),
                );
                None
            }
        }
    }

    /// The websocket's `history`: an integer, `ge=0`, `lt=200`.
    fn history(&mut self) -> Option<u64> {
        let value = self.int("history", "history", 0)?;
        if value >= 200 {
            let raw = self.raw("history", "history").map_or("", |(_, v)| v);
            self.fail(
                "less_than",
                "[\"history\"]".into(),
                "Input should be less than 200".into(),
                raw,
                Some("{\"lt\":200}".into()),
            );
            return None;
        }
        u64::try_from(value).ok()
    }

    /// The model-level error: `loc` empty, `input` the repr of the whole query.
    fn model_error(&self, error: &str) -> FieldError {
        let pairs: Vec<String> = self
            .pairs
            .iter()
            .map(|(k, v)| format!("{}: {}", repr_str(k), repr_str(v)))
            .collect();
        FieldError {
            kind: "value_error",
            loc: "[]".into(),
            msg: format!("Value error, {error}"),
            input: format!("<MultiDictProxy({})>", pairs.join(", ")),
            ctx: Some(format!("{{\"error\":{}}}", json_string(error))),
        }
    }
}

fn refused(errors: &[FieldError]) -> QueryRefused {
    let mut out = String::from("[");
    for (i, e) in errors.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        e.write(&mut out);
    }
    out.push(']');
    QueryRefused(out)
}

/// The pairs of a query string as aiohttp reads them: `+` is a space, percent escapes are
/// UTF-8 (invalid sequences replaced), a key without `=` has the empty value.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = |c: u8| (c as char).to_digit(16);
                    match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                        (Some(h), Some(l)) => {
                            out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// A `startDate`/`endDate` as the reference turns it into a datetime: 0 is unset.
fn date_bound(x: Option<f64>) -> Result<Option<Timestamp>, DateOutOfRange> {
    match x {
        None => Ok(None),
        Some(0.0) => Ok(None),
        Some(x) => Timestamp::from_unix_seconds_f64(x)
            .map(Some)
            .map_err(|_| DateOutOfRange(x)),
    }
}

/// A date bound that passed the model but is no instant (`inf`, `1e400`): the reference
/// answers 500 (NODE-API §2.1), lotledger a 400 saying so.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("startDate/endDate {0} is not a representable instant")]
pub struct DateOutOfRange(pub f64);

/// Why a `messages.json` query is not answered with a list.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ListQueryError {
    /// 422 `text/plain`, pydantic's JSON.
    #[error(transparent)]
    Refused(#[from] QueryRefused),
    /// 400 `text/plain`.
    #[error(transparent)]
    Date(#[from] DateOutOfRange),
}

/// Which of the reference's query models reads the pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Model {
    /// `MessageQueryParams` (`messages.json`): `pagination`, `page`, `cursor`.
    List,
    /// `WsMessageQueryParams` (the websocket): `history`, 0 ≤ history < 200, default 10.
    Websocket,
}

impl MessageListQuery {
    /// Reads `pairs` (in the order of the query string) as the reference's list model does.
    pub fn parse(pairs: &[(String, String)]) -> Result<MessageListQuery, ListQueryError> {
        Self::parse_as(pairs, Model::List)
    }

    /// Reads `pairs` as the reference's websocket model does (`history` in place of the
    /// paging parameters).
    pub fn parse_websocket(pairs: &[(String, String)]) -> Result<MessageListQuery, ListQueryError> {
        Self::parse_as(pairs, Model::Websocket)
    }

    fn parse_as(
        pairs: &[(String, String)],
        model: Model,
    ) -> Result<MessageListQuery, ListQueryError> {
        let mut r = Reader {
            pairs,
            errors: Vec::new(),
        };
        let sort_by = r.one_of("sortBy", "sort_by", &SORT_BYS);
        let ascending = r.sort_order();
        let message_type = r
            .one_of("msgType", "message_type", &MESSAGE_TYPES)
            .map(str::to_string);
        let message_types = r.list("msgTypes", "message_types", Element::OneOf(&MESSAGE_TYPES));
        let statuses = r.list("msgStatuses", "message_statuses", Element::OneOf(&STATUSES));
        let addresses = r.list("addresses", "addresses", Element::Any);
        let owners = r.list("owners", "owners", Element::Any);
        let refs = r.list("refs", "refs", Element::Any);
        let content_hashes = r.list("contentHashes", "content_hashes", Element::ItemHash);
        let content_keys = r.list("contentKeys", "content_keys", Element::ItemHash);
        let content_types = r.list("contentTypes", "content_types", Element::Any);
        let chains = r.list("chains", "chains", Element::OneOf(&CHAINS));
        let channels = r.list("channels", "channels", Element::Any);
        let tags = r.list("tags", "tags", Element::Any);
        let hashes = r.list("hashes", "hashes", Element::ItemHash);
        let payment_types = r.list(
            "paymentTypes",
            "payment_types",
            Element::OneOf(&PAYMENT_TYPES),
        );
        let exclude_content = r.bool("excludeContent", "exclude_content");
        let content_format = r.one_of("contentFormat", "content_format", &CONTENT_FORMATS);
        let start_date = r.float("startDate", "start_date");
        let end_date = r.float("endDate", "end_date");
        let start_block = r.int("startBlock", "start_block", 0);
        let end_block = r.int("endBlock", "end_block", 0);
        let (pagination, page, cursor, history) = match model {
            Model::List => (
                r.int("pagination", "pagination", 0),
                r.int("page", "page", 1),
                r.raw("cursor", "cursor").map(|(_, v)| v.to_string()),
                None,
            ),
            Model::Websocket => (None, None, None, r.history()),
        };
        if !r.errors.is_empty() {
            return Err(refused(&r.errors).into());
        }

        let (start_date, end_date) = (start_date.unwrap_or(0.0), end_date.unwrap_or(0.0));
        let (start_block, end_block) = (start_block.unwrap_or(0), end_block.unwrap_or(0));
        let tx_time = sort_by == Some("tx-time");
        let model_error = if start_date != 0.0 && end_date != 0.0 && end_date < start_date {
            Some("end date cannot be lower than start date.")
        } else if start_block != 0 && end_block != 0 && end_block < start_block {
            Some("end block cannot be lower than start block.")
        } else if cursor.as_deref().is_some_and(|c| !c.is_empty()) && tx_time {
            Some("Cursor pagination is not supported with tx-time sort order.")
        } else {
            None
        };
        if let Some(error) = model_error {
            return Err(refused(&[r.model_error(error)]).into());
        }

        let content_format = match (content_format, exclude_content) {
            (Some("headers"), _) => ContentFormat::Headers,
            (Some("none"), _) | (None, Some(true)) => ContentFormat::None,
            _ => ContentFormat::Full,
        };
        let given = |alias: &'static str, name: &'static str| r.raw(alias, name).is_some();
        let skeleton_unsupported = [
            ("refs", "refs"),
            ("contentTypes", "content_types"),
            ("contentHashes", "content_hashes"),
            ("contentKeys", "content_keys"),
            ("tags", "tags"),
            ("startBlock", "start_block"),
            ("endBlock", "end_block"),
        ]
        .into_iter()
        .filter(|(alias, name)| given(alias, name))
        .map(|(alias, _)| alias)
        .collect();
        Ok(MessageListQuery {
            tx_time: tx_time || start_block != 0 || end_block != 0,
            ascending: ascending.unwrap_or(false),
            message_type,
            message_types,
            statuses: statuses
                .unwrap_or_else(|| vec!["processed".to_string(), "removing".to_string()]),
            addresses,
            owners,
            refs,
            content_hashes,
            content_keys,
            content_types,
            chains,
            channels,
            tags,
            hashes,
            payment_types,
            start: date_bound(Some(start_date))?,
            end: date_bound(Some(end_date))?,
            start_block,
            end_block,
            content_format,
            pagination: u64::try_from(pagination.unwrap_or(20)).unwrap_or(0),
            page: u64::try_from(page.unwrap_or(1)).unwrap_or(1),
            cursor,
            history: history.unwrap_or(10),
            skeleton_unsupported,
        })
    }

    /// Whether any row of the reference's `messages` table this node keeps (processed POSTs and
    /// other processed messages, never confirmed, paid by nobody) can match, whatever its
    /// content: the filters on columns such rows never fill rule every row out.
    pub fn can_match(&self) -> bool {
        self.statuses.iter().any(|s| s == "processed")
            && self.content_hashes.is_none()
            && self.content_keys.is_none()
            && self.payment_types.is_none()
            && self.end_block == 0
    }

    /// Whether a kept processed message passes every filter but the time bounds and the
    /// statuses (which the scan applies). `content` is its parsed `item_content`.
    pub fn matches(&self, env: &StoredEnvelope, content: Option<&Map<String, Value>>) -> bool {
        let within = |list: &Option<Vec<String>>, value: Option<&str>| match list {
            None => true,
            Some(list) => value.is_some_and(|v| list.iter().any(|x| x == v)),
        };
        let field = |key: &str| content.and_then(|c| c.get(key)).and_then(Value::as_str);
        let tags_match = match &self.tags {
            None => true,
            Some(wanted) => content
                .and_then(|c| c.get("content"))
                .and_then(|c| c.get("tags"))
                .and_then(Value::as_array)
                .is_some_and(|tags| {
                    tags.iter()
                        .filter_map(Value::as_str)
                        .any(|t| wanted.iter().any(|w| w == t))
                }),
        };
        self.message_type
            .as_deref()
            .is_none_or(|t| t == env.message_type)
            && within(&self.message_types, Some(&env.message_type))
            && within(&self.addresses, env.sender.as_deref())
            && within(&self.owners, field("address").or(env.sender.as_deref()))
            && within(&self.refs, field("ref"))
            && within(&self.content_types, field("type"))
            && within(&self.chains, env.chain.as_deref())
            && within(&self.channels, env.channel.as_deref())
            && within(&self.hashes, Some(&env.item_hash))
            && tags_match
            && self.can_match()
    }
}

impl MessageListQuery {
    /// Whether a message this node has just processed is pushed to a websocket subscriber
    /// (NODE-API §4): only `msgType`, `addresses`, `hashes`, `chains`, `channels`, `owners`,
    /// `refs`, `contentTypes`, `contentHashes` and `tags` apply (`msgTypes`, statuses, dates,
    /// blocks, `contentKeys` and `paymentTypes` do not).
    pub fn matches_live(&self, env: &StoredEnvelope, content: Option<&Map<String, Value>>) -> bool {
        let live = MessageListQuery {
            message_types: None,
            statuses: vec!["processed".into()],
            content_keys: None,
            payment_types: None,
            end_block: 0,
            ..self.clone()
        };
        live.matches(env, content)
    }
}

/// Where a cursor-mode page resumes: after the message at this envelope time (microseconds)
/// and item hash, in the page's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageCursor {
    pub time: Timestamp,
    pub item_hash: String,
}

impl MessageCursor {
    /// The reference's token: base64url (no padding) of `{"h":…,"t":<isoformat>}`.
    pub fn encode(&self) -> String {
        let mut map = Map::new();
        map.insert("h".into(), Value::String(self.item_hash.clone()));
        map.insert("t".into(), Value::String(self.time.to_iso_python()));
        base64url_encode(python_json(&Value::Object(map)).as_bytes())
    }

    /// Reads a token the way the reference does; the error is the 422 text.
    pub fn decode(token: &str) -> Result<MessageCursor, CursorError> {
        let bytes = base64url_decode(token).map_err(|_| CursorError("Incorrect padding".into()))?;
        let text = std::str::from_utf8(&bytes).map_err(|e| CursorError(utf8_reason(&bytes, &e)))?;
        let map = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(CursorError("payload is not a dict".into())),
            Err(e) => return Err(CursorError(format!("Expecting value: {e}"))),
        };
        let missing = || CursorError("missing required fields".into());
        let t = map.get("t").ok_or_else(missing)?;
        let h = map.get("h").ok_or_else(missing)?;
        let t = t
            .as_str()
            .ok_or_else(|| CursorError("fromisoformat: argument must be str".into()))?;
        let time = Timestamp::parse_rfc3339(t)
            .map_err(|_| CursorError(format!("Invalid isoformat string: {}", repr_str(t))))?;
        let item_hash = match h {
            Value::String(s) => s.clone(),
            other => crate::pyrepr::repr(other),
        };
        Ok(MessageCursor { time, item_hash })
    }
}

/// Python's text for a failed UTF-8 decode: `'utf-8' codec can't decode byte 0xb7 in
/// position 1: invalid start byte`.
fn utf8_reason(bytes: &[u8], e: &std::str::Utf8Error) -> String {
    let at = e.valid_up_to();
    let byte = bytes.get(at).copied().unwrap_or(0);
    let reason = match e.error_len() {
        None => "unexpected end of data",
        Some(_) if (0x80..0xc2).contains(&byte) || byte > 0xf4 => "invalid start byte",
        Some(_) => "invalid continuation byte",
    };
    format!("'utf-8' codec can't decode byte 0x{byte:02x} in position {at}: {reason}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

    use super::*;

    fn parse(query: &str) -> Result<MessageListQuery, ListQueryError> {
        MessageListQuery::parse(&query_pairs(query))
    }

    #[test]
    fn defaults_are_the_reference_defaults() {
        let q = parse("").unwrap();
        assert!(!q.ascending && !q.tx_time);
        assert_eq!(q.statuses, ["processed", "removing"]);
        assert_eq!((q.pagination, q.page), (20, 1));
        assert_eq!(q.content_format, ContentFormat::Full);
        assert!(q.cursor.is_none());
    }

    #[test]
    fn lists_split_on_commas_without_trimming_and_the_first_key_wins() {
        let q = parse("channels=A,,B&channels=C&hashes=").unwrap_err();
        assert!(matches!(q, ListQueryError::Refused(_)));
        let q = parse("channels=A,,B&channels=C").unwrap();
        assert_eq!(q.channels.unwrap(), ["A", "", "B"]);
        let q = parse("channels=").unwrap();
        assert_eq!(q.channels.unwrap(), [""]);
    }

    #[test]
    fn field_names_are_read_after_aliases() {
        let q = parse("sort_order=1&sortOrder=-1").unwrap();
        assert!(!q.ascending);
        let q = parse("sort_order=1").unwrap();
        assert!(q.ascending);
    }

    #[test]
    fn cursor_round_trips_and_decodes_the_reference_token() {
        let token = "eyJoIjoiOWNlNmQ3NjEwODJiNDc5YTQyYzI4MjcwNjQ5NDdlMDA4ODJkMTk5NzM2MTk2ZjkzYTc4MGZjYzQ5ODQyMWU4OSIsInQiOiIyMDI2LTExLTI5VDIyOjA3OjQwLjM3MzQ1NiswMDowMCJ9";
        let c = MessageCursor::decode(token).unwrap();
        assert_eq!(
            c.item_hash,
            "9ce6d761082b479a42c2827064947e00882d199736196f93a780fcc498421e89"
        );
        assert_eq!(c.time.as_micros(), 1_795_990_060_373_456);
        assert_eq!(c.encode(), token);
        let e = MessageCursor::decode("abc").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Invalid cursor: 'utf-8' codec can't decode byte 0xb7 in position 1: invalid start byte"
        );
        let list = base64url_encode(b"[1]");
        assert_eq!(
            MessageCursor::decode(&list).unwrap_err().to_string(),
            "Invalid cursor: payload is not a dict"
        );
        let partial = base64url_encode(b"{\"h\":\"x\"}");
        assert_eq!(
            MessageCursor::decode(&partial).unwrap_err().to_string(),
            "Invalid cursor: missing required fields"
        );
    }

    #[test]
    fn lax_numbers_and_booleans() {
        assert_eq!(lax_int(" +12 "), Some(12));
        assert_eq!(lax_int("1.0"), Some(1));
        assert_eq!(lax_int("1e2"), None);
        assert_eq!(lax_int("1.5"), None);
        assert_eq!(lax_bool("Yes"), Some(true));
        assert_eq!(lax_bool("maybe"), None);
        assert!(parse("startDate=nan").is_err());
        assert!(matches!(
            parse("startDate=inf"),
            Err(ListQueryError::Date(_))
        ));
    }
}
