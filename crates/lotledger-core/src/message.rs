//! Credit POSTs: routing (types, channels, whitelist), content validation with the reference's
//! error texts, and conversion into a typed operation (amounts scaled, expirations converted).

use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

use crate::validate::{Loc, Validator, format_errors};
use crate::{Credits, Timestamp};

/// The reference's default credit whitelist.
pub const DEFAULT_WHITELIST: &str = "0x2E4454fAD1906c0Ce6e45cBFA05cE898Ac3AC1dC";
/// The reference's default credit channel.
pub const DEFAULT_CHANNEL: &str = "ALEPH_CREDIT";
pub const DISTRIBUTION: &str = "aleph_credit_distribution";
pub const EXPENSE: &str = "aleph_credit_expense";
pub const TRANSFER: &str = "aleph_credit_transfer";
/// Messages whose content time is before this instant (2026-02-02T00:00:00Z) have their amounts
/// multiplied by [`PRECISION_MULTIPLIER`].
pub const PRECISION_CUTOFF_SECONDS: i64 = 1_769_990_400;
pub const PRECISION_MULTIPLIER: i64 = 10_000;
pub const PROVIDER_ALEPH: &str = "ALEPH";
pub const PAYMENT_EXPENSE: &str = "credit_expense";
pub const PAYMENT_TRANSFER: &str = "credit_transfer";

/// Which senders may mint and spend, and which channels carry credit posts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Exact, case-sensitive addresses.
    pub whitelist: BTreeSet<String>,
    /// Accepted channels; empty = any channel.
    pub channels: BTreeSet<String>,
    /// Which drain policy plans a message, by its instant.
    pub schedule: crate::Schedule,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            whitelist: BTreeSet::from([DEFAULT_WHITELIST.to_string()]),
            channels: BTreeSet::from([DEFAULT_CHANNEL.to_string()]),
            schedule: crate::Schedule::default(),
        }
    }
}

impl Rules {
    pub fn new<W: IntoIterator<Item = String>, C: IntoIterator<Item = String>>(
        whitelist: W,
        channels: C,
    ) -> Rules {
        Rules {
            whitelist: whitelist.into_iter().collect(),
            channels: channels.into_iter().collect(),
            schedule: crate::Schedule::default(),
        }
    }

    pub fn is_whitelisted(&self, address: &str) -> bool {
        self.whitelist.contains(address)
    }

    fn channel_accepted(&self, channel: Option<&str>) -> bool {
        self.channels.is_empty() || channel.is_some_and(|c| self.channels.contains(c))
    }
}

/// A POST message after its envelope was checked: the item hash, the envelope channel and the
/// POST content (`address`, `time`, `type`, `content`).
#[derive(Debug, Clone, PartialEq)]
pub struct Post {
    pub item_hash: String,
    pub channel: Option<String>,
    pub content: Value,
    /// The envelope it came in, kept with the message's record; `None` for a post made
    /// without one (tests, imports).
    pub envelope: Option<std::sync::Arc<crate::node_json::StoredEnvelope>>,
}

/// Why a post changes nothing without being an error (the reference stores it as a plain post).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IgnoreReason {
    NotCreditType,
    ChannelNotAccepted,
    EmptyContent,
    SenderNotWhitelisted,
}

impl std::fmt::Display for IgnoreReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IgnoreReason::NotCreditType => "not a credit post type",
            IgnoreReason::ChannelNotAccepted => "channel not accepted for credits",
            IgnoreReason::EmptyContent => "empty credit content",
            IgnoreReason::SenderNotWhitelisted => {
                "distribution or expense from a non-whitelisted address"
            }
        })
    }
}

/// A rejected message: nothing is applied; the text is what the reference reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejection(pub String);

/// What to do with a post.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Ignore(IgnoreReason),
    Reject(Rejection),
    Apply(CreditOp),
}

/// A validated credit operation, amounts scaled and expirations converted.
#[derive(Debug, Clone, PartialEq)]
pub struct CreditOp {
    pub item_hash: String,
    /// `content.address`: the author of the POST.
    pub sender: String,
    /// The POST content `time`.
    pub ts: Timestamp,
    pub kind: OpKind,
    /// The drain policy in force at `ts`, which plans it.
    pub policy: crate::Policy,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OpKind {
    Distribution(Distribution),
    Expense(Vec<ExpenseEntry>),
    Transfer(Transfer),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Distribution {
    pub token: Option<String>,
    pub chain: Option<String>,
    pub entries: Vec<DistributionEntry>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DistributionEntry {
    pub address: String,
    pub amount: Credits,
    pub price: Option<String>,
    pub tx_hash: Option<String>,
    pub provider: Option<String>,
    pub expiration: Option<Timestamp>,
    pub origin: Option<String>,
    pub origin_ref: Option<String>,
    pub payment_method: Option<String>,
    pub bonus_amount: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExpenseEntry {
    pub address: String,
    pub amount: Credits,
    pub origin_ref: Option<String>,
    pub execution_id: Option<String>,
    pub node_id: Option<String>,
    pub price: Option<String>,
    pub count: Option<i64>,
    pub size: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transfer {
    pub whitelisted: bool,
    pub entries: Vec<TransferEntry>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TransferEntry {
    pub address: String,
    /// The amount as sent (what the funds check compares).
    pub raw_amount: i64,
    /// The amount after the precision scaling.
    pub amount: Credits,
    pub expiration: Option<Timestamp>,
}

impl CreditOp {
    /// The raw total a non-whitelisted transfer must be covered by (`None` for anything else).
    pub fn required_funds(&self) -> Option<i128> {
        match &self.kind {
            OpKind::Transfer(t) if !t.whitelisted => {
                Some(t.entries.iter().map(|e| i128::from(e.raw_amount)).sum())
            }
            _ => None,
        }
    }

    /// The reference's funds check: the sender's balance now against the raw requested total.
    pub fn check_funds(&self, balance: Credits) -> Result<(), Rejection> {
        match self.required_funds() {
            Some(required) if i128::from(balance.0) < required => Err(Rejection(format!(
                "Insufficient credit balance for transfer. Required: {required}, Available: {balance}"
            ))),
            _ => Ok(()),
        }
    }

    /// Addresses whose lots this operation drains, sorted (the lock order).
    pub fn drained_addresses(&self) -> BTreeSet<&str> {
        match &self.kind {
            OpKind::Distribution(_) => BTreeSet::new(),
            OpKind::Expense(entries) => entries.iter().map(|e| e.address.as_str()).collect(),
            OpKind::Transfer(t) if t.whitelisted => BTreeSet::new(),
            OpKind::Transfer(_) => BTreeSet::from([self.sender.as_str()]),
        }
    }

    /// How much this operation may drain from each address (sorted by address): its drains
    /// take lots in the policy's visiting order and stop there, so only the lots that cover
    /// that amount in that order are ever read ([`crate::plan::covering`]).
    pub fn drain_demand(&self) -> Vec<(&str, i128)> {
        let mut demand: BTreeMap<&str, i128> = BTreeMap::new();
        match &self.kind {
            OpKind::Distribution(_) => {}
            OpKind::Expense(entries) => {
                for e in entries {
                    *demand.entry(e.address.as_str()).or_default() += i128::from(e.amount.0);
                }
            }
            OpKind::Transfer(t) if t.whitelisted => {}
            OpKind::Transfer(t) => {
                let total = t.entries.iter().map(|e| i128::from(e.amount.0)).sum();
                demand.insert(self.sender.as_str(), total);
            }
        }
        demand.into_iter().collect()
    }

    /// Every address that gets a history row, sorted.
    pub fn touched_addresses(&self) -> BTreeSet<&str> {
        let mut out: BTreeSet<&str> = match &self.kind {
            OpKind::Distribution(d) => d.entries.iter().map(|e| e.address.as_str()).collect(),
            OpKind::Expense(entries) => entries.iter().map(|e| e.address.as_str()).collect(),
            OpKind::Transfer(t) => t.entries.iter().map(|e| e.address.as_str()).collect(),
        };
        out.extend(self.drained_addresses());
        out
    }
}

/// Routes and validates one post, as the reference's post handler does (SPEC Part II 2.1–2.4).
/// The funds check of transfers needs the sender's balance and is done by the caller with
/// [`CreditOp::check_funds`].
pub fn classify(post: &Post, rules: &Rules) -> Decision {
    let Value::Object(content) = &post.content else {
        return Decision::Reject(Rejection(format!(
            "Invalid post content: {}",
            format_errors(&[crate::validate::FieldError {
                kind: "model_type",
                loc: vec![],
                msg: "Input should be a valid dictionary or instance of PostContent".into(),
                input: post.content.clone(),
            }])
        )));
    };
    let header = match post_header(content) {
        Ok(h) => h,
        Err(r) => return Decision::Reject(r),
    };
    if ![DISTRIBUTION, EXPENSE, TRANSFER].contains(&header.post_type.as_str()) {
        return Decision::Ignore(IgnoreReason::NotCreditType);
    }
    if !rules.channel_accepted(post.channel.as_deref()) {
        return Decision::Ignore(IgnoreReason::ChannelNotAccepted);
    }
    let inner = content.get("content").unwrap_or(&Value::Null);
    if !python_truthy(inner) {
        return Decision::Ignore(IgnoreReason::EmptyContent);
    }
    if contains_nul(inner) || header.address.contains('\0') || post.item_hash.contains('\0') {
        return Decision::Reject(Rejection(
            "Invalid credit content: text must not contain NUL characters (U+0000)".to_string(),
        ));
    }
    let whitelisted = rules.is_whitelisted(&header.address);
    let scale = |raw: i64| -> Result<Credits, Rejection> {
        if header.ts.as_micros() < PRECISION_CUTOFF_SECONDS * 1_000_000 {
            raw.checked_mul(PRECISION_MULTIPLIER).map(Credits).ok_or_else(|| {
                Rejection(format!("amount {raw} overflows a signed 64-bit integer after the ×{PRECISION_MULTIPLIER} precision scaling"))
            })
        } else {
            Ok(Credits(raw))
        }
    };
    let kind = match header.post_type.as_str() {
        DISTRIBUTION if !whitelisted => {
            return Decision::Ignore(IgnoreReason::SenderNotWhitelisted);
        }
        EXPENSE if !whitelisted => return Decision::Ignore(IgnoreReason::SenderNotWhitelisted),
        DISTRIBUTION => parse_distribution(inner, &scale).map(OpKind::Distribution),
        EXPENSE => parse_expense(inner, &scale).map(OpKind::Expense),
        _ => parse_transfer(inner, &scale, &header.address).map(|entries| {
            OpKind::Transfer(Transfer {
                whitelisted,
                entries,
            })
        }),
    };
    match kind {
        Ok(kind) => Decision::Apply(CreditOp {
            item_hash: post.item_hash.clone(),
            sender: header.address,
            ts: header.ts,
            kind,
            policy: rules.schedule.at(header.ts),
        }),
        Err(r) => Decision::Reject(r),
    }
}

struct Header {
    address: String,
    ts: Timestamp,
    post_type: String,
}

/// The POST content as aleph-message's `PostContent` validates it, before any credit rule.
fn post_header(content: &Map<String, Value>) -> Result<Header, Rejection> {
    let h = crate::post_content::validate(content)
        .map_err(|errors| Rejection(format!("Invalid post content: {}", format_errors(&errors))))?;
    let ts = Timestamp::from_unix_seconds_f64(h.time).map_err(|e| {
        Rejection(format!(
            "Invalid post content: time {}: {e}",
            crate::decimal::python_float_repr(h.time)
        ))
    })?;
    Ok(Header {
        address: h.address,
        ts,
        post_type: h.post_type,
    })
}

/// Whether any key or string in `value` holds a NUL character (PostgreSQL text cannot).
fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

/// Python truthiness of the object `json.loads` makes of `value`.
fn python_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// `credits` of an inner object: a non-empty list; each element validated by `entry`.
fn credit_list<T>(
    v: &mut Validator,
    obj: &Map<String, Value>,
    entry_model: &str,
    mut entry: impl FnMut(&mut Validator, &Map<String, Value>) -> Option<T>,
) -> Option<Vec<T>> {
    let list = v.required(obj, "credits")?;
    v.push(Loc::Key("credits".into()));
    let out = match list {
        Value::Array(items) if items.is_empty() => {
            v.error(
                "too_short",
                "List should have at least 1 item after validation, not 0",
                list,
            );
            None
        }
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            let mut ok = true;
            for (i, item) in items.iter().enumerate() {
                v.push(Loc::Index(i));
                match v.object(item, entry_model).and_then(|o| entry(v, o)) {
                    Some(e) => out.push(e),
                    None => ok = false,
                }
                v.pop();
            }
            ok.then_some(out)
        }
        other => {
            v.error("list_type", "Input should be a valid list", other);
            None
        }
    };
    v.pop();
    out
}

/// Validates `{"<key>": {...}}` and hands the inner object to `body`.
fn wrapped<T>(
    v: &mut Validator,
    content: &Value,
    content_model: &str,
    key: &str,
    inner_model: &str,
    body: impl FnOnce(&mut Validator, &Map<String, Value>) -> Option<T>,
) -> Option<T> {
    let outer = v.object(content, content_model)?;
    let inner = v.required(outer, key)?;
    v.push(Loc::Key(key.into()));
    let out = v.object(inner, inner_model).and_then(|o| body(v, o));
    v.pop();
    out
}

fn rejection(kind: &str, v: &Validator) -> Rejection {
    Rejection(format!(
        "Invalid credit {kind} content: {}",
        format_errors(&v.errors)
    ))
}

fn expiration(ms: Option<i64>) -> Result<Option<Timestamp>, Rejection> {
    match ms {
        None | Some(0) => Ok(None),
        Some(ms) => Timestamp::from_unix_millis_python(ms)
            .map(Some)
            .map_err(|e| Rejection(format!("expiration {ms}: {e}"))),
    }
}

/// Empty strings become NULL, as the reference's CSV bulk insert does.
fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

type Scale<'a> = &'a dyn Fn(i64) -> Result<Credits, Rejection>;

fn parse_transfer(
    content: &Value,
    scale: Scale<'_>,
    sender: &str,
) -> Result<Vec<TransferEntry>, Rejection> {
    let mut v = Validator::new();
    let parsed = wrapped(
        &mut v,
        content,
        "CreditTransferContent",
        "transfer",
        "CreditTransfer",
        |v, t| {
            credit_list(v, t, "CreditTransferEntry", |v, e| {
                let address = v.address(e);
                let amount = v.amount(e);
                let exp = v.opt_lax_int(e, "expiration", None);
                Some((address?, amount?, exp.ok()?))
            })
        },
    );
    let Some(entries) = parsed.filter(|_| v.errors.is_empty()) else {
        return Err(rejection("transfer", &v));
    };
    let mut seen = BTreeSet::new();
    if !entries.iter().all(|(a, _, _)| seen.insert(a.as_str())) {
        v.error(
            "value_error",
            "Value error, Duplicate recipient addresses are not allowed in a single transfer",
            content,
        );
        return Err(rejection("transfer", &v));
    }
    if entries.iter().any(|(a, _, _)| a == sender) {
        return Err(Rejection(format!(
            "Self-transfer not allowed: sender and recipient are both {sender}"
        )));
    }
    entries
        .into_iter()
        .map(|(address, raw_amount, exp)| {
            Ok(TransferEntry {
                amount: scale(raw_amount)?,
                expiration: expiration(exp)?,
                address,
                raw_amount,
            })
        })
        .collect()
}

fn parse_distribution(content: &Value, scale: Scale<'_>) -> Result<Distribution, Rejection> {
    let mut v = Validator::new();
    let parsed = wrapped(
        &mut v,
        content,
        "CreditDistributionContent",
        "distribution",
        "CreditDistribution",
        |v, d| {
            let entries = credit_list(v, d, "CreditDistributionEntry", |v, e| {
                let address = v.address(e);
                let amount = v.amount(e);
                let price = v.price(e, true);
                let tx_hash = v.string(e, "tx_hash");
                let provider = v.string(e, "provider");
                let exp = v.opt_lax_int(e, "expiration", None);
                let origin = v.opt_string(e, "origin");
                let origin_ref = v.opt_string(e, "ref");
                let payment_method = v.opt_string(e, "payment_method");
                Some((
                    address?,
                    amount?,
                    price.ok()?,
                    tx_hash?,
                    provider?,
                    exp.ok()?,
                    origin.ok()?,
                    origin_ref.ok()?,
                    payment_method.ok()?,
                    e.get("bonus_amount").cloned().unwrap_or(Value::Null),
                ))
            });
            let token = v.string(d, "token");
            let chain = v.string(d, "chain");
            Some((entries?, token?, chain?))
        },
    );
    let Some((raw_entries, token, chain)) = parsed.filter(|_| v.errors.is_empty()) else {
        return Err(rejection("distribution", &v));
    };
    let mut entries = Vec::with_capacity(raw_entries.len());
    for (
        address,
        amount,
        price,
        tx_hash,
        provider,
        exp,
        origin,
        origin_ref,
        payment_method,
        bonus,
    ) in raw_entries
    {
        entries.push(DistributionEntry {
            address,
            amount: scale(amount)?,
            price,
            tx_hash: non_empty(Some(tx_hash)),
            provider: non_empty(Some(provider)),
            expiration: expiration(exp)?,
            origin: non_empty(origin),
            origin_ref: non_empty(origin_ref),
            payment_method: non_empty(payment_method),
            bonus_amount: bonus_amount(&bonus)?,
        });
    }
    Ok(Distribution {
        token: non_empty(Some(token)),
        chain: non_empty(Some(chain)),
        entries,
    })
}

/// `bonus_amount` is typed "any" by the reference: falsy values are NULL; anything else must be
/// what a PostgreSQL `BIGINT` column accepts (an integer, or a string holding one).
fn bonus_amount(value: &Value) -> Result<Option<i64>, Rejection> {
    if !python_truthy(value) {
        return Ok(None);
    }
    let parsed = match value {
        Value::Number(n) if !n.is_f64() => n.as_i64(),
        Value::String(s) => {
            let t = s.trim_matches(|c: char| c.is_ascii_whitespace());
            let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
            if !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) {
                t.parse::<i64>().ok()
            } else {
                None
            }
        }
        _ => None,
    };
    parsed.map(Some).ok_or_else(|| {
        Rejection(format!(
            "bonus_amount must be an integer that fits in 64 bits, got {}",
            crate::pyrepr::repr(value)
        ))
    })
}

fn parse_expense(content: &Value, scale: Scale<'_>) -> Result<Vec<ExpenseEntry>, Rejection> {
    let mut v = Validator::new();
    let parsed = wrapped(
        &mut v,
        content,
        "CreditExpenseContent",
        "expense",
        "CreditExpense",
        |v, x| {
            credit_list(v, x, "CreditExpenseEntry", |v, e| {
                let address = v.address(e);
                let amount = v.amount(e);
                let origin_ref = v.opt_string(e, "ref");
                let execution_id = v.opt_string(e, "execution_id");
                let node_id = v.opt_string(e, "node_id");
                let price = v.price(e, false);
                let time = v.opt_lax_float(e, "time");
                let count = v.opt_lax_int(e, "count", Some(0));
                let size = v.opt_nonneg_decimal(e, "size");
                time.ok()?;
                Some((
                    address?,
                    amount?,
                    origin_ref.ok()?,
                    execution_id.ok()?,
                    node_id.ok()?,
                    price.ok()?,
                    count.ok()?,
                    size.ok()?,
                ))
            })
        },
    );
    let Some(raw) = parsed.filter(|_| v.errors.is_empty()) else {
        return Err(rejection("expense", &v));
    };
    raw.into_iter()
        .map(
            |(address, amount, origin_ref, execution_id, node_id, price, count, size)| {
                Ok(ExpenseEntry {
                    address,
                    amount: scale(amount)?,
                    origin_ref: non_empty(origin_ref),
                    execution_id: non_empty(execution_id),
                    node_id: non_empty(node_id),
                    price,
                    count,
                    size,
                })
            },
        )
        .collect()
}
