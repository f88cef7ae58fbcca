//! `GET /api/v0/messages.json` and `GET /api/v0/messages/page/{page}.json`: the messages this
//! node keeps, listed as the reference node lists its own (NODE-API.md §2): the reference's
//! parameters and 422 bodies (`lotledger_core::node_query`), its order, page and cursor modes,
//! and its message objects (`lotledger_core::node_json::list_message`).
//!
//! The store scans kept processed messages in the list's order, in chunks, and only by time;
//! every other filter is applied here, to each message's envelope and parsed content. A
//! `hashes` filter reads those messages alone.

use std::cmp::Ordering;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use lotledger_core::Timestamp;
use lotledger_core::node_json::{self, StoredEnvelope};
use lotledger_core::node_query::{
    CURSOR_PAGE_CAP, ListQueryError, MessageCursor, MessageListQuery, query_pairs,
};
use lotledger_store::{EnvelopeScan, MessageStatus};
use serde_json::{Map, Value};

use crate::error::text;
use crate::messages::json_text;
use crate::{ApiError, AppState};

/// Rows a scan asks the store for at a time.
const CHUNK: u32 = 500;

/// The list's order: time (ascending or not), then the item hash ascending.
fn order(ascending: bool, a: &StoredEnvelope, b: &StoredEnvelope) -> Ordering {
    let by_time = a.time.total_cmp(&b.time);
    let by_time = if ascending {
        by_time
    } else {
        by_time.reverse()
    };
    by_time.then_with(|| a.item_hash.cmp(&b.item_hash))
}

/// Whether `env` comes after the position `(t, h)` in the list's order.
fn after(ascending: bool, env: &StoredEnvelope, (t, h): &(f64, String)) -> bool {
    match env.time.total_cmp(t) {
        Ordering::Equal => env.item_hash.as_str() > h.as_str(),
        Ordering::Greater => ascending,
        Ordering::Less => !ascending,
    }
}

/// The messages that match a query, from a resume point on, a chunk at a time (those named by
/// `hashes` in one chunk).
struct Matches<'a> {
    state: &'a AppState,
    query: &'a MessageListQuery,
    scan: EnvelopeScan,
    done: bool,
}

impl<'a> Matches<'a> {
    fn new(
        state: &'a AppState,
        query: &'a MessageListQuery,
        resume: Option<(f64, String)>,
    ) -> Self {
        Matches {
            state,
            query,
            scan: EnvelopeScan {
                ascending: query.ascending,
                after: resume,
                start: query.start.map(Timestamp::as_unix_seconds_f64),
                end: query.end.map(Timestamp::as_unix_seconds_f64),
                limit: CHUNK,
            },
            done: !query.can_match(),
        }
    }

    fn passes(&self, env: &StoredEnvelope) -> bool {
        let q = self.query;
        let needs_content = q.owners.is_some() || q.refs.is_some() || q.content_types.is_some();
        let content: Option<Map<String, Value>> = if needs_content || q.tags.is_some() {
            env.item_content
                .as_deref()
                .and_then(|c| serde_json::from_str::<Value>(c).ok())
                .and_then(|v| match v {
                    Value::Object(map) => Some(map),
                    _ => None,
                })
        } else {
            None
        };
        q.matches(env, content.as_ref())
    }

    /// The next matching messages in order; empty once there are no more.
    async fn next(&mut self) -> Result<Vec<Arc<StoredEnvelope>>, ApiError> {
        if self.done {
            return Ok(Vec::new());
        }
        if let Some(hashes) = &self.query.hashes {
            self.done = true;
            let mut found = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for hash in hashes {
                if !seen.insert(hash.as_str()) {
                    continue;
                }
                let Some(record) = self.state.store.message(hash).await? else {
                    continue;
                };
                if let (MessageStatus::Processed, Some(env)) = (record.status, record.envelope) {
                    let in_range = self.scan.start.is_none_or(|s| env.time >= s)
                        && self.scan.end.is_none_or(|e| env.time < e)
                        && self
                            .scan
                            .after
                            .as_ref()
                            .is_none_or(|a| after(self.query.ascending, &env, a));
                    if in_range && self.passes(&env) {
                        found.push(env);
                    }
                }
            }
            found.sort_by(|a, b| order(self.query.ascending, a, b));
            return Ok(found);
        }
        loop {
            let chunk = self.state.store.kept_messages(&self.scan).await?;
            let Some(last) = chunk.last() else {
                self.done = true;
                return Ok(Vec::new());
            };
            self.scan.after = Some((last.time, last.item_hash.clone()));
            if chunk.len() < CHUNK as usize {
                self.done = true;
            }
            let matched: Vec<_> = chunk.into_iter().filter(|e| self.passes(e)).collect();
            if !matched.is_empty() || self.done {
                return Ok(matched);
            }
        }
    }
}

/// The first `n` messages the list query `q` selects after `resume`, in its order (a cursor
/// page, the websocket's history).
pub(crate) async fn first_matches(
    state: &AppState,
    q: &MessageListQuery,
    resume: Option<(f64, String)>,
    n: u64,
) -> Result<Vec<Arc<StoredEnvelope>>, ApiError> {
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    let mut matches = Matches::new(state, q, resume);
    let mut found = Vec::new();
    while found.len() < n {
        let chunk = matches.next().await?;
        if chunk.is_empty() {
            break;
        }
        found.extend(chunk);
    }
    found.truncate(n);
    Ok(found)
}

/// The list object of each message; one that cannot be shown is logged and left out.
fn objects(query: &MessageListQuery, envs: &[Arc<StoredEnvelope>]) -> Vec<String> {
    envs.iter()
        .filter_map(|env| {
            node_json::list_message(env, query.content_format)
                .inspect_err(|e| tracing::warn!(item_hash = %env.item_hash, "message kept but not listed: {e}"))
                .ok()
        })
        .collect()
}

/// `{page}` of the path form, as Python's `int()` reads it.
fn path_page(raw: &str) -> Option<i64> {
    let t = raw.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    let ok = !digits.is_empty()
        && !digits.starts_with('_')
        && !digits.ends_with('_')
        && !digits.contains("__")
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_');
    if !ok {
        return None;
    }
    t.replace('_', "").parse().ok()
}

async fn answer(
    state: &AppState,
    query: Option<&str>,
    page_segment: Option<&str>,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(query.unwrap_or(""));
    let mut q = match MessageListQuery::parse(&pairs) {
        Ok(q) => q,
        Err(ListQueryError::Refused(body)) => {
            return Ok(text(StatusCode::UNPROCESSABLE_ENTITY, body.0));
        }
        Err(ListQueryError::Date(e)) => return Ok(text(StatusCode::BAD_REQUEST, e.to_string())),
    };
    if let Some(segment) = page_segment {
        let Some(raw) = segment.strip_suffix(".json") else {
            return Ok(text(StatusCode::NOT_FOUND, "404: Not Found".into()));
        };
        match path_page(raw) {
            None => {
                return Ok(text(
                    StatusCode::BAD_REQUEST,
                    format!("Invalid page value in path: {raw}"),
                ));
            }
            Some(p) if p < 1 => {
                return Ok(text(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Page number must be greater than 1.".into(),
                ));
            }
            Some(p) => q.page = u64::try_from(p).unwrap_or(1),
        }
    }
    for terminal in ["forgotten", "removed"] {
        if !q.statuses.iter().any(|s| s == terminal) {
            continue;
        }
        if q.statuses.iter().any(|s| s != terminal) {
            return Ok(text(
                StatusCode::BAD_REQUEST,
                "msgStatuses=forgotten/removed cannot be combined with other statuses".into(),
            ));
        }
        if !q.skeleton_unsupported.is_empty() {
            return Ok(text(
                StatusCode::BAD_REQUEST,
                format!(
                    "Filters not supported for {terminal} message queries: {}",
                    q.skeleton_unsupported.join(", ")
                ),
            ));
        }
        if q.cursor.is_some() {
            return Ok(text(
                StatusCode::BAD_REQUEST,
                format!("Cursor pagination is not supported for {terminal} message queries"),
            ));
        }
        // lotledger never forgets nor removes a message: the listing is empty.
        let total = q.page.saturating_sub(1).saturating_mul(q.pagination);
        return Ok(json_text(node_json::list_page_body(
            &[],
            q.page,
            q.pagination,
            total,
        )));
    }
    match q.cursor.clone() {
        Some(cursor) => cursor_page(state, &q, &cursor).await,
        None => numbered_page(state, &q).await,
    }
}

async fn cursor_page(
    state: &AppState,
    q: &MessageListQuery,
    cursor: &str,
) -> Result<Response, ApiError> {
    if q.pagination == 0 {
        return Ok(text(
            StatusCode::UNPROCESSABLE_ENTITY,
            "pagination=0 is not allowed with cursor-based pagination".into(),
        ));
    }
    let resume = if cursor.is_empty() {
        None
    } else {
        match MessageCursor::decode(cursor) {
            Ok(c) => Some((c.time.as_unix_seconds_f64(), c.item_hash)),
            Err(e) => return Ok(text(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())),
        }
    };
    let per_page = q.pagination.min(CURSOR_PAGE_CAP);
    let want = usize::try_from(per_page).unwrap_or(usize::MAX);
    // One more than the page tells whether another page follows.
    let mut page = first_matches(state, q, resume, per_page + 1).await?;
    let more = page.len() > want;
    page.truncate(want);
    let next_cursor = match (more, page.last()) {
        (true, Some(last)) => {
            let time = Timestamp::from_unix_seconds_f64(last.time).map_err(|e| {
                ApiError::Store(lotledger_store::StoreError::Corrupt(format!(
                    "message {}: kept time {}: {e}",
                    last.item_hash, last.time
                )))
            })?;
            Some(
                MessageCursor {
                    time,
                    item_hash: last.item_hash.clone(),
                }
                .encode(),
            )
        }
        _ => None,
    };
    Ok(json_text(node_json::list_cursor_body(
        &objects(q, &page),
        next_cursor.as_deref(),
        per_page,
    )))
}

async fn numbered_page(state: &AppState, q: &MessageListQuery) -> Result<Response, ApiError> {
    let offset = usize::try_from(q.page.saturating_sub(1).saturating_mul(q.pagination))
        .unwrap_or(usize::MAX);
    let limit = (q.pagination > 0).then(|| usize::try_from(q.pagination).unwrap_or(usize::MAX));
    let mut matches = Matches::new(state, q, None);
    let mut seen = 0usize;
    let mut page = Vec::new();
    loop {
        if limit.is_some_and(|l| page.len() >= l) {
            break;
        }
        let chunk = matches.next().await?;
        if chunk.is_empty() {
            break;
        }
        for env in chunk {
            if seen >= offset && limit.is_none_or(|l| page.len() < l) {
                page.push(env);
            }
            seen += 1;
        }
    }
    let rows = page.len();
    // The reference's total: invented from the page when it is not full, else a count.
    let total = if limit.is_some_and(|l| rows < l) {
        offset.saturating_add(rows)
    } else {
        loop {
            let chunk = matches.next().await?;
            if chunk.is_empty() {
                break seen;
            }
            seen += chunk.len();
        }
    };
    Ok(json_text(node_json::list_page_body(
        &objects(q, &page),
        q.page,
        q.pagination,
        u64::try_from(total).unwrap_or(u64::MAX),
    )))
}

#[utoipa::path(get, path = "/api/v0/messages.json", tag = "messages",
    params(("sortBy" = Option<String>, Query, description = "`time` (default) or `tx-time`"),
           ("sortOrder" = Option<i32>, Query, description = "1 oldest first, -1 (default) newest first"),
           ("msgTypes" = Option<String>, Query, description = "Comma-separated message types"),
           ("channels" = Option<String>, Query, description = "Comma-separated channels"),
           ("contentTypes" = Option<String>, Query, description = "Comma-separated POST types"),
           ("addresses" = Option<String>, Query, description = "Senders, exact"),
           ("owners" = Option<String>, Query, description = "`content.address`, exact"),
           ("hashes" = Option<String>, Query, description = "Item hashes"),
           ("startDate" = Option<f64>, Query, description = "Envelope time ≥ this (0: unset)"),
           ("endDate" = Option<f64>, Query, description = "Envelope time < this (0: unset)"),
           ("contentFormat" = Option<String>, Query, description = "`full`, `headers` or `none`"),
           ("pagination" = Option<u64>, Query, description = "Page size (20); 0 is no limit in page mode"),
           ("page" = Option<u64>, Query, description = "Page number (page mode)"),
           ("cursor" = Option<String>, Query, description = "Present (even empty): cursor mode")),
    responses(
        (status = 200, description = "The processed messages kept here, as the reference node \
            lists them (NODE-API.md §2): page mode `{messages, pagination_item, pagination_page, \
            pagination_per_page, pagination_total}`, cursor mode `{messages, next_cursor, \
            pagination_per_page}`; keys sorted. Every parameter of NODE-API §2.1 is read."),
        (status = 400, description = "Terminal statuses combined, unsupported filters for them, \
            or a date beyond the datetime range (plain text)"),
        (status = 422, description = "The reference's validation errors (pydantic JSON as plain \
            text), or a bad cursor (plain text)")))]
pub(crate) async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    answer(&state, query.as_deref(), None).await
}

#[utoipa::path(get, path = "/api/v0/messages/page/{page}.json", tag = "messages",
    params(("page" = String, Path, description = "Page number; overrides the `page` parameter")),
    responses(
        (status = 200, description = "As `GET /api/v0/messages.json`"),
        (status = 400, description = "The page is not an integer (plain text)"),
        (status = 422, description = "The page is below 1, or the query is invalid (plain text)")))]
pub(crate) async fn list_page(
    State(state): State<AppState>,
    Path(page): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    answer(&state, query.as_deref(), Some(&page)).await
}
