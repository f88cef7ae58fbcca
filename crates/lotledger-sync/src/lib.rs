//! Following another node (`lotledger sync`, `serve --follow`; NODE-API.md §5): its
//! `messages.json` is paged for the three credit post types on the configured channels, oldest
//! first by `(time, item_hash)` in cursor mode; each message is verified (item hash, signature)
//! before it is applied, and one that fails is recorded as rejected, never applied. Each page
//! is one batch, committed with the position it reaches (`ingest_progress` under the source
//! `sync <url>`, column `resume_at`), so a sync killed at any moment resumes with nothing lost
//! and nothing applied twice. Each poll starts a look-back window before that position
//! (messages become visible on the source late); what it reads again is a no-op.
//!
//! Errors of the source (timeouts, 5xx, 429, malformed pages) are retried after a growing
//! pause, each with a log line; other answers (404, 422: a source that is not a node, or
//! refuses the query) end the sync with an error.

use std::time::Duration;

use lotledger_core::envelope::Envelope;
use lotledger_core::node_query::MessageCursor;
use lotledger_core::{Rules, Timestamp};
use lotledger_store::{BatchItem, IngestProgress, Outcome, Store, StoreError};
use serde_json::{Map, Value};

/// The credit post types a sync asks for.
pub const CREDIT_TYPES: &str =
    "aleph_credit_distribution,aleph_credit_expense,aleph_credit_transfer";
/// The most messages a cursor page of the reference holds.
pub const MAX_PAGE: u32 = 200;

/// How a sync runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The source node's base URL (`http://host:port`), without a trailing slash.
    pub from: String,
    /// The channels credit messages are read from (at least one: [`run`] refuses none).
    pub channels: Vec<String>,
    /// Keep polling after reaching the end.
    pub follow: bool,
    /// Pause between two polls when following.
    pub interval: Duration,
    /// How far before its position each poll starts reading again.
    pub lookback: Duration,
    /// Messages asked per page (at most [`MAX_PAGE`]).
    pub page_size: u32,
    /// Attempts at one request before the sync fails; `None`: forever (following).
    pub max_attempts: Option<u32>,
    /// One request's time limit.
    pub request_timeout: Duration,
}

impl Options {
    /// The options of a sync from `from` on `channels`: no following, a page of 200, an hour
    /// of look-back, 8 attempts per request, 30 s per request.
    pub fn new(from: &str, channels: Vec<String>) -> Options {
        Options {
            from: from.trim_end_matches('/').to_string(),
            channels,
            follow: false,
            interval: Duration::from_secs(10),
            lookback: Duration::from_secs(3600),
            page_size: MAX_PAGE,
            max_attempts: Some(8),
            request_timeout: Duration::from_secs(30),
        }
    }

    /// The key of this source's position in `ingest_progress`.
    pub fn source_key(&self) -> String {
        format!("sync {}", self.from)
    }
}

/// Why a sync stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("source {url}: {reason}")]
    Source { url: String, reason: String },
    #[error("{0}")]
    Options(String),
}

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub pages: u64,
    /// Messages read from the source (re-reads included).
    pub read: u64,
    /// Applied (credit effect).
    pub processed: u64,
    /// Accepted without a credit effect (the rules ignore them).
    pub ignored: u64,
    /// Known already (a re-read, or the look-back window).
    pub already_applied: u64,
    /// Refused by the local credit rules although the source processed them: a divergence.
    pub rejected: u64,
    /// Failed verification (item hash, signature, envelope): recorded as rejected.
    pub refused: u64,
}

/// What a sync reports as it goes (for a progress bar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The source holds about this many messages past the poll's start.
    Expect(u64),
    /// This many more were read.
    Read(u64),
    /// A poll reached the end of the source.
    CaughtUp,
}

/// A position in the list: envelope time in microseconds, item hash.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Position {
    micros: i64,
    item_hash: String,
}

impl Position {
    fn stored(&self) -> String {
        format!("{} {}", self.micros, self.item_hash)
    }

    fn parse(text: &str) -> Option<Position> {
        let (micros, hash) = text.split_once(' ')?;
        Some(Position {
            micros: micros.parse().ok()?,
            item_hash: hash.to_string(),
        })
    }
}

/// The envelope fields of a list object (the rest — `content`, `size`, confirmations — is
/// the source's view, never trusted: NODE-API §5.6).
const ENVELOPE_FIELDS: [&str; 9] = [
    "chain",
    "sender",
    "type",
    "channel",
    "item_type",
    "item_content",
    "item_hash",
    "time",
    "signature",
];

/// The batch item of one message of a page, verified; `None` (logged) for an object that
/// names no message.
fn item_of(message: &Value) -> Option<(BatchItem, bool)> {
    let Value::Object(object) = message else {
        tracing::warn!("source listed a non-object message: skipped");
        return None;
    };
    let mut envelope = Map::new();
    for field in ENVELOPE_FIELDS {
        if let Some(value) = object.get(field) {
            envelope.insert(field.to_string(), value.clone());
        }
    }
    let envelope = match Envelope::from_json(&Value::Object(envelope)) {
        Ok(e) => e,
        Err(e) => {
            return match object.get("item_hash").and_then(Value::as_str) {
                Some(hash) => Some((
                    BatchItem::Reject {
                        item_hash: hash.to_string(),
                        error: e.to_string(),
                        envelope: None,
                    },
                    true,
                )),
                None => {
                    tracing::warn!("source listed a message without item_hash: skipped ({e})");
                    None
                }
            };
        }
    };
    match lotledger_sig::refusal(&envelope) {
        None => Some((BatchItem::from_envelope(&envelope), false)),
        Some(error) => {
            if envelope.message_type == "POST" {
                tracing::warn!(item_hash = %envelope.item_hash, "message from the source fails verification: {error}");
            }
            Some((BatchItem::rejected(&envelope, error), true))
        }
    }
}

/// The list position of a listed message.
fn position_of(message: &Value) -> Option<Position> {
    let time = message.get("time")?.as_f64()?;
    let item_hash = message.get("item_hash")?.as_str()?.to_string();
    let micros = Timestamp::from_unix_seconds_f64(time).ok()?.as_micros();
    Some(Position { micros, item_hash })
}

/// A page of the source's list.
struct Page {
    messages: Vec<Value>,
    next_cursor: Option<String>,
}

/// The HTTP side: one client, retries with a growing pause.
struct Source<'a> {
    client: reqwest::Client,
    opts: &'a Options,
}

/// Why one request failed, and whether to try again.
enum Failure {
    Retry(String),
    Fatal(String),
}

impl Source<'_> {
    fn list_url(&self, query: &str) -> String {
        format!(
            "{}/api/v0/messages.json?msgTypes=POST&channels={}&contentTypes={CREDIT_TYPES}\
             &sortBy=time&sortOrder=1&{query}",
            self.opts.from,
            percent(&self.opts.channels.join(","))
        )
    }

    async fn get_once(&self, url: &str) -> Result<Value, Failure> {
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| Failure::Retry(format!("request failed: {e}")))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| Failure::Retry(format!("body not read: {e}")))?;
        if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
            return Err(Failure::Retry(format!("HTTP {status}")));
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            let text: String = text.chars().take(300).collect();
            return Err(Failure::Fatal(format!("HTTP {status}: {text}")));
        }
        serde_json::from_slice(&body).map_err(|e| Failure::Retry(format!("malformed page: {e}")))
    }

    /// `url`'s JSON, retried after 0.5 s, 1 s, 2 s … (30 s at most) on a transient failure.
    async fn get(&self, url: &str) -> Result<Value, SyncError> {
        let mut pause = Duration::from_millis(500);
        let mut attempt = 1u32;
        loop {
            match self.get_once(url).await {
                Ok(value) => return Ok(value),
                Err(Failure::Fatal(reason)) => {
                    metrics::counter!("lotledger_sync_errors_total", "kind" => "fatal")
                        .increment(1);
                    return Err(SyncError::Source {
                        url: url.to_string(),
                        reason,
                    });
                }
                Err(Failure::Retry(reason)) => {
                    metrics::counter!("lotledger_sync_errors_total", "kind" => "retried")
                        .increment(1);
                    if self.opts.max_attempts.is_some_and(|max| attempt >= max) {
                        return Err(SyncError::Source {
                            url: url.to_string(),
                            reason: format!("{reason} ({attempt} attempts)"),
                        });
                    }
                    tracing::warn!(
                        url,
                        attempt,
                        retry_in_ms = pause.as_millis() as u64,
                        "source unavailable: {reason}; retrying"
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(30));
                    attempt += 1;
                }
            }
        }
    }

    async fn page(&self, cursor: &str) -> Result<Page, SyncError> {
        let url = self.list_url(&format!(
            "pagination={}&cursor={}",
            self.opts.page_size,
            percent(cursor)
        ));
        let value = self.get(&url).await?;
        let malformed = |what: &str| SyncError::Source {
            url: url.clone(),
            reason: format!("malformed page: {what}"),
        };
        let messages = value
            .get("messages")
            .and_then(Value::as_array)
            .ok_or_else(|| malformed("no messages list"))?
            .clone();
        let next_cursor = match value.get("next_cursor") {
            None | Some(Value::Null) => None,
            Some(Value::String(c)) => Some(c.clone()),
            Some(_) => return Err(malformed("next_cursor is not a string")),
        };
        Ok(Page {
            messages,
            next_cursor,
        })
    }

    /// About how many messages lie past `start` (µs; the whole list when `None`): the
    /// source's `pagination_total` of a one-message page.
    async fn count_from(&self, start: Option<i64>) -> Option<u64> {
        let since = start
            .map(|micros| {
                format!(
                    "&startDate={}.{:06}",
                    micros / 1_000_000,
                    micros % 1_000_000
                )
            })
            .unwrap_or_default();
        let url = self.list_url(&format!("pagination=1&page=1{since}"));
        match self.get_once(&url).await {
            Ok(v) => v.get("pagination_total").and_then(Value::as_u64),
            Err(Failure::Retry(reason) | Failure::Fatal(reason)) => {
                tracing::debug!("source count not read: {reason}");
                None
            }
        }
    }
}

/// Percent-encodes a query value (unreserved characters kept).
fn percent(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Follows `opts.from` into `store` until the end of its list (or, following, until `stop`
/// turns true), applying pages as batches at the wall clock's instant (`now()` is the
/// caller's: the core never reads the clock).
pub async fn run<S: Store>(
    store: &S,
    rules: &Rules,
    opts: &Options,
    now: impl Fn() -> Result<Timestamp, SyncError>,
    mut on_event: impl FnMut(Event),
    mut stop: Option<tokio::sync::watch::Receiver<bool>>,
) -> Result<Summary, SyncError> {
    if opts.page_size == 0 || opts.page_size > MAX_PAGE {
        return Err(SyncError::Options(format!(
            "page size must be 1..={MAX_PAGE}, not {}",
            opts.page_size
        )));
    }
    if opts.channels.is_empty() {
        return Err(SyncError::Options(
            "no channel to read credit messages from".into(),
        ));
    }
    let client = reqwest::Client::builder()
        .timeout(opts.request_timeout)
        .user_agent(concat!("lotledger-sync/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| SyncError::Options(format!("HTTP client: {e}")))?;
    let source = Source { client, opts };
    let key = opts.source_key();
    let lookback = i64::try_from(opts.lookback.as_micros()).unwrap_or(i64::MAX);
    let mut summary = Summary::default();
    let mut first_poll = true;
    loop {
        let recorded = store.ingest_progress(&key).await?;
        let mut seen = recorded.as_ref().map_or(0, |p| p.lines);
        let mut position = recorded
            .as_ref()
            .and_then(|p| p.resume_at.as_deref())
            .and_then(Position::parse);
        let start = position
            .as_ref()
            .map(|p| p.micros.saturating_sub(lookback))
            .filter(|&start| start > 0);
        let mut cursor = match start {
            None => String::new(),
            Some(start) => MessageCursor {
                time: Timestamp::from_micros(start)
                    .map_err(|e| SyncError::Options(format!("resume position: {e}")))?,
                item_hash: String::new(),
            }
            .encode(),
        };
        // The source's count is a full count on a lotledger source: asked once, for the
        // catch-up's progress bar and lag, not on every poll of a follower.
        let expected = if first_poll {
            source.count_from(start).await
        } else {
            None
        };
        if let Some(total) = expected {
            on_event(Event::Expect(total));
        }
        first_poll = false;
        let mut read_this_poll = 0u64;
        loop {
            let page = source.page(&cursor).await?;
            summary.pages += 1;
            let count = page.messages.len() as u64;
            let mut items = Vec::with_capacity(page.messages.len());
            let mut refused = Vec::with_capacity(page.messages.len());
            for message in &page.messages {
                if let Some(newest) = position_of(message)
                    && position.as_ref().is_none_or(|p| newest > *p)
                {
                    position = Some(newest);
                }
                if let Some((item, failed)) = item_of(message) {
                    items.push(item);
                    refused.push(failed);
                }
            }
            seen += count;
            let progress = IngestProgress {
                source: key.clone(),
                lines: seen,
                bytes: 0,
                prefix_sha256: String::new(),
                resume_at: position.as_ref().map(Position::stored),
            };
            let outcomes = store
                .apply_batch_with_progress(&items, rules, now()?, Some(&progress))
                .await?;
            summary.read += count;
            for (outcome, failed) in outcomes.iter().zip(&refused) {
                let label = match (outcome, failed) {
                    (_, true) => {
                        summary.refused += 1;
                        "refused"
                    }
                    (Outcome::Processed, _) => {
                        summary.processed += 1;
                        "processed"
                    }
                    (Outcome::Ignored(_), _) => {
                        summary.ignored += 1;
                        "ignored"
                    }
                    (Outcome::AlreadyApplied, _) => {
                        summary.already_applied += 1;
                        "already_applied"
                    }
                    (Outcome::Rejected(reason), _) => {
                        summary.rejected += 1;
                        tracing::warn!(%reason, "a message the source processed is rejected here");
                        "rejected"
                    }
                };
                metrics::counter!("lotledger_sync_messages_total", "outcome" => label).increment(1);
            }
            on_event(Event::Read(count));
            if let Some(p) = &position {
                let lag = now()?.as_micros().saturating_sub(p.micros) as f64 / 1e6;
                metrics::gauge!("lotledger_sync_lag_seconds").set(lag.max(0.0));
            }
            read_this_poll += count;
            let behind = match (&page.next_cursor, expected) {
                (None, _) => 0,
                (Some(_), Some(total)) => total.saturating_sub(read_this_poll),
                (Some(_), None) => u64::from(opts.page_size),
            };
            metrics::gauge!("lotledger_sync_lag_messages").set(behind as f64);
            match page.next_cursor {
                Some(next) if count > 0 => cursor = next,
                _ => break,
            }
            if stopping(&stop) {
                return Ok(summary);
            }
        }
        on_event(Event::CaughtUp);
        if !opts.follow {
            return Ok(summary);
        }
        if wait_or_stop(opts.interval, &mut stop).await {
            return Ok(summary);
        }
    }
}

fn stopping(stop: &Option<tokio::sync::watch::Receiver<bool>>) -> bool {
    stop.as_ref().is_some_and(|rx| *rx.borrow())
}

/// Sleeps `pause`; `true` when `stop` turned true meanwhile.
async fn wait_or_stop(
    pause: Duration,
    stop: &mut Option<tokio::sync::watch::Receiver<bool>>,
) -> bool {
    match stop {
        None => {
            tokio::time::sleep(pause).await;
            false
        }
        Some(rx) => {
            let stopped = tokio::time::timeout(pause, rx.wait_for(|s| *s)).await;
            // Resolved before the pause ended: stopped (or the signal's sender is gone).
            stopped.is_ok()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

    use super::*;

    #[test]
    fn positions_order_by_time_then_hash_and_round_trip() {
        let a = Position {
            micros: 5,
            item_hash: "b".into(),
        };
        let b = Position {
            micros: 5,
            item_hash: "c".into(),
        };
        let c = Position {
            micros: 6,
            item_hash: "a".into(),
        };
        assert!(a < b && b < c);
        assert_eq!(Position::parse(&a.stored()), Some(a));
        assert_eq!(Position::parse("x y"), None);
    }

    #[test]
    fn only_envelope_fields_are_read_and_bad_messages_are_refused() {
        // A list object whose `content` disagrees with its item_content: the content is not
        // read; the hash check fails on the item_content.
        let message = serde_json::json!({
            "item_hash": "00", "type": "POST", "chain": "ETH", "sender": "0xabc",
            "item_type": "inline", "item_content": "{}", "time": 1.0, "signature": "0x00",
            "content": {"address": "0xabc"}, "size": 2
        });
        let (item, refused) = item_of(&message).unwrap();
        assert!(refused);
        assert!(matches!(item, BatchItem::Reject { .. }));
        assert!(item_of(&serde_json::json!({"type": "POST"})).is_none());
        let forget = serde_json::json!({"item_hash": "11", "type": "FORGET", "time": 1.0});
        assert!(item_of(&forget).unwrap().1);
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(percent("ALEPH_CREDIT,a b"), "ALEPH_CREDIT%2Ca%20b");
        assert_eq!(percent("eyJo-_"), "eyJo-_");
    }
}
