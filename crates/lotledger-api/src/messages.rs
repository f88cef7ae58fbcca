//! Message intake and message reads: `POST /api/v0/messages` (envelope verified, then the
//! credit rules), `GET /api/v0/messages/{item_hash}` (the message as received, with its
//! status, byte for byte as the reference node writes it: NODE-API.md §3), its `/status`,
//! and `GET /api/v0/messages/{item_hash}/consumed_credits`.
//!
//! Only POST messages are taken. Credit POSTs are applied; other POSTs (and credit POSTs the
//! rules ignore) are acknowledged as processed and recorded. Other message types are refused
//! (422, recorded as rejected). Every recorded message keeps the envelope it came in.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lotledger_core::envelope::Envelope;
use lotledger_core::node_json;
use lotledger_core::node_query::valid_item_hash;
use lotledger_store::{BatchItem, MessageRecord, MessageStatus, Outcome};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::error::text;
use crate::intake::Intake;
use crate::{ApiError, AppState, request_instant, request_now};

/// The reply the Aleph clients read (`message_status`: processed, pending or rejected).
#[derive(Debug, Serialize, ToSchema)]
pub struct PublicationReply {
    pub publication_status: PublicationStatus,
    pub message_status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PublicationStatus {
    pub status: String,
    pub failed: Vec<String>,
}

fn reply(code: StatusCode, message_status: &str) -> Response {
    (
        code,
        Json(PublicationReply {
            publication_status: PublicationStatus {
                status: "success".into(),
                failed: Vec::new(),
            },
            message_status: message_status.into(),
        }),
    )
        .into_response()
}

fn invalid_body(msg: &str) -> ApiError {
    ApiError::Validation(vec![
        json!({"type": "value_error", "loc": ["body"], "msg": msg}),
    ])
}

/// The credit post type a message carries, for the metrics label.
fn kind_label(envelope: &Envelope) -> &'static str {
    let t = envelope
        .item_content
        .as_deref()
        .and_then(|c| serde_json::from_str::<Value>(c).ok())
        .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_string));
    match t.as_deref() {
        Some("aleph_credit_distribution") => "distribution",
        Some("aleph_credit_expense") => "expense",
        Some("aleph_credit_transfer") => "transfer",
        _ => "other",
    }
}

#[utoipa::path(post, path = "/api/v0/messages", tag = "messages",
    request_body(content = Value, description = "{\"sync\": bool, \"message\": {…signed Aleph message…}}"),
    responses((status = 200, body = PublicationReply, description = "Processed (sync)"),
              (status = 202, body = PublicationReply, description = "Accepted, sync false: status at GET /api/v0/messages/{item_hash}"),
              (status = 413, description = "Body too large"),
              (status = 503, description = "A read-only replica: `{error, writable_node}`"),
              (status = 422, body = PublicationReply, description = "Rejected (recorded), or a body that is not a message")))]
pub(crate) async fn post_message(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if let Some(writable) = &state.config.read_only {
        return Err(ApiError::ReadOnly(writable.clone()));
    }
    let now = request_instant(&state, &headers)?;
    let (sync, envelope) = read_message(&state, body)?;
    let kind = kind_label(&envelope);
    let item = match lotledger_sig::refusal(&envelope) {
        Some(reason) => BatchItem::rejected(&envelope, reason),
        None => BatchItem::from_envelope(&envelope),
    };
    let intake = state.intake.get_or_init(|| {
        Intake::start(
            state.store.clone(),
            state.config.rules.clone(),
            state.config.intake_batch,
        )
    });
    let outcome = intake.submit(item, now).await?;
    if matches!(outcome, Outcome::Processed | Outcome::Ignored(_))
        && state.live.receiver_count() > 0
        && let Some(stored) = envelope.stored()
    {
        // Nobody listening is not an error.
        let _ = state.live.send(std::sync::Arc::new(stored));
    }
    let (label, status) = match &outcome {
        Outcome::Processed => ("processed", "processed"),
        Outcome::Ignored(_) => ("ignored", "processed"),
        Outcome::AlreadyApplied => ("already_applied", "processed"),
        Outcome::Rejected(reason) => {
            tracing::info!(item_hash = %envelope.item_hash, %reason, "message rejected");
            ("rejected", "rejected")
        }
    };
    metrics::counter!("lotledger_messages_total", "kind" => kind, "outcome" => label).increment(1);
    Ok(match (sync, status) {
        (false, _) => reply(StatusCode::ACCEPTED, "pending"),
        (true, "rejected") => reply(StatusCode::UNPROCESSABLE_ENTITY, "rejected"),
        (true, _) => reply(StatusCode::OK, "processed"),
    })
}

/// The `sync` flag and the message of a `POST /api/v0/messages` body (also the dry run's).
pub(crate) fn read_message(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<(bool, Envelope), ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(state.config.max_body_bytes)
        } else {
            ApiError::BadRequest(e.body_text())
        }
    })?;
    let request: Value =
        serde_json::from_slice(&body).map_err(|e| invalid_body(&format!("Invalid JSON: {e}")))?;
    let Value::Object(request) = request else {
        return Err(invalid_body("the body must be a JSON object"));
    };
    let sync = match request.get("sync") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid_body("sync must be a boolean")),
    };
    let message = request
        .get("message")
        .filter(|m| m.is_object())
        .ok_or_else(|| invalid_body("message: a JSON object is required"))?;
    let envelope = Envelope::from_json(message).map_err(|e| invalid_body(&e.to_string()))?;
    Ok((sync, envelope))
}

/// pyaleph's error codes for a rejection text (0 INVALID_FORMAT, 1 INVALID_SIGNATURE,
/// 2 PERMISSION_DENIED).
fn error_code(text: &str) -> i64 {
    if text.starts_with("The signature of the message is invalid") {
        1
    } else if text.starts_with("Permission denied") {
        2
    } else {
        0
    }
}

/// `GET /api/v0/messages/{item_hash}` when the message was recorded without its envelope
/// (before migration 0010, or by an import): its status only.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageStatusResponse {
    pub status: String,
    pub item_hash: String,
    pub reception_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// Where a message lotledger rejected came from, as the reference's pending row says: every
/// message reaches lotledger from a client or a file, never from a chain.
const ORIGIN: &str = "p2p";

/// The record of the message at `item_hash`, or the reference's 400 / 404 answer.
async fn recorded(
    state: &AppState,
    item_hash: &str,
) -> Result<Result<MessageRecord, Response>, ApiError> {
    if !valid_item_hash(item_hash) {
        return Ok(Err(text(
            StatusCode::BAD_REQUEST,
            format!("Invalid message hash: {item_hash}"),
        )));
    }
    Ok(state
        .store
        .message(item_hash)
        .await?
        .ok_or_else(|| text(StatusCode::NOT_FOUND, "404: Not Found".into())))
}

#[utoipa::path(get, path = "/api/v0/messages/{item_hash}", tag = "messages",
    params(("item_hash" = String, Path, description = "64 lower-case hex digits, or an IPFS CID")),
    responses(
        (status = 200, description = "The message as received with its status, as the reference \
            node writes it (NODE-API.md §3): `{status, item_hash, reception_time, message}` when \
            processed, plus `error_code` and `details` when rejected. A message recorded before \
            messages were kept (migration 0010) answers its status only.",
            body = MessageStatusResponse),
        (status = 400, description = "Not an item hash (plain text)"),
        (status = 404, description = "Unknown message (plain text)")))]
pub(crate) async fn message_status(
    State(state): State<AppState>,
    Path(item_hash): Path<String>,
) -> Result<Response, ApiError> {
    let record = match recorded(&state, &item_hash).await? {
        Ok(record) => record,
        Err(answer) => return Ok(answer),
    };
    let reception = record.recorded_at;
    let body = match (&record.status, &record.envelope) {
        (MessageStatus::Processed, Some(envelope)) => {
            node_json::processed_body(envelope, reception)
                .inspect_err(|e| tracing::warn!(item_hash, "message kept but not shown: {e}"))
                .ok()
        }
        (MessageStatus::Rejected { error }, Some(envelope)) => Some(node_json::rejected_body(
            envelope,
            reception,
            ORIGIN,
            error_code(error),
            std::slice::from_ref(error),
        )),
        (_, None) => None,
    };
    let body = match body {
        Some(body) => body,
        None => {
            let status = &record.status;
            let (status, error_code, details) = match status {
                MessageStatus::Processed => ("processed", None, None),
                MessageStatus::Rejected { error } => (
                    "rejected",
                    Some(error_code(error)),
                    Some(json!({ "errors": [error] })),
                ),
            };
            let brief = MessageStatusResponse {
                status: status.into(),
                item_hash: record.item_hash,
                reception_time: reception.to_iso_pydantic(),
                error_code,
                details,
            };
            return json_reply(&brief);
        }
    };
    Ok(json_text(body))
}

/// A JSON text answered as the reference's handlers answer it.
pub(crate) fn json_text(body: String) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

/// `value` as compact JSON in its fields' order ([`json_text`]).
fn json_reply(value: &impl Serialize) -> Result<Response, ApiError> {
    let body = serde_json::to_string(value)
        .map_err(|e| ApiError::Store(lotledger_store::StoreError::Corrupt(e.to_string())))?;
    Ok(json_text(body))
}

/// `GET /api/v0/messages/{item_hash}/status` (what the SDK's `get_message_status` reads).
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageStatusBrief {
    pub status: String,
    pub item_hash: String,
    pub reception_time: String,
}

#[utoipa::path(get, path = "/api/v0/messages/{item_hash}/status", tag = "messages",
    params(("item_hash" = String, Path, description = "64 lower-case hex digits, or an IPFS CID")),
    responses((status = 200, body = MessageStatusBrief),
        (status = 400, description = "Not an item hash (plain text)"),
        (status = 404, description = "Unknown message (plain text)")))]
pub(crate) async fn message_status_brief(
    State(state): State<AppState>,
    Path(item_hash): Path<String>,
) -> Result<Response, ApiError> {
    let record = match recorded(&state, &item_hash).await? {
        Ok(record) => record,
        Err(answer) => return Ok(answer),
    };
    let status = match record.status {
        MessageStatus::Processed => "processed",
        MessageStatus::Rejected { .. } => "rejected",
    };
    json_reply(&MessageStatusBrief {
        status: status.into(),
        item_hash: record.item_hash,
        reception_time: record.recorded_at.to_iso_pydantic(),
    })
}

#[utoipa::path(get, path = "/api/v0/messages/{item_hash}/content", tag = "messages",
    params(("item_hash" = String, Path, description = "64 lower-case hex digits, or an IPFS CID")),
    responses(
        (status = 200, description = "A processed POST's own `content`, as Python's \
            `json.dumps` writes it (NODE-API.md §3.1)"),
        (status = 400, description = "Not an item hash (plain text)"),
        (status = 404, description = "Unknown message, or one recorded without its content \
            (plain text)"),
        (status = 422, description = "The message is not processed (plain text)")))]
pub(crate) async fn message_content(
    State(state): State<AppState>,
    Path(item_hash): Path<String>,
) -> Result<Response, ApiError> {
    let record = match recorded(&state, &item_hash).await? {
        Ok(record) => record,
        Err(answer) => return Ok(answer),
    };
    if let MessageStatus::Rejected { .. } = record.status {
        return Ok(text(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Message {item_hash} is not processed (status: MessageStatus.REJECTED)"),
        ));
    }
    match record.envelope.as_deref().map(node_json::content_body) {
        Some(Ok(body)) => Ok(json_text(body)),
        Some(Err(e)) => {
            tracing::warn!(item_hash, "message kept but its content not shown: {e}");
            Ok(text(
                StatusCode::NOT_FOUND,
                format!("Message {item_hash} has no content to show"),
            ))
        }
        None => Ok(text(
            StatusCode::NOT_FOUND,
            format!("Message {item_hash} was recorded without its content"),
        )),
    }
}

/// `GET /api/v0/messages/{item_hash}/consumed_credits`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsumedCredits {
    pub item_hash: String,
    pub consumed_credits: i64,
}

#[utoipa::path(get, path = "/api/v0/messages/{item_hash}/consumed_credits", tag = "credits",
    params(("item_hash" = String, Path, description = "Resource hash (effective origin of expenses)")),
    responses((status = 200, body = ConsumedCredits)))]
pub(crate) async fn consumed_credits(
    State(state): State<AppState>,
    Path(item_hash): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ConsumedCredits>, ApiError> {
    request_now(&state, &headers)?;
    let consumed = state.store.consumed_credits(None, Some(&item_hash)).await?;
    Ok(Json(ConsumedCredits {
        item_hash,
        consumed_credits: consumed.0,
    }))
}
