//! One error type for every handler: each variant picks its status; internal causes are
//! logged and counted, and the client gets an opaque body.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use lotledger_store::StoreError;
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Query or body validation, as pydantic reports it: 422 with a JSON list of errors.
    #[error("validation failed")]
    Validation(Vec<Value>),
    /// 422 with a plain-text reason (cursor errors, as the reference answers them).
    #[error("{0}")]
    Unprocessable(String),
    /// 404 with a plain-text reason.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("request body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    /// A write sent to a read-only server (a replica): 503, naming the writable node when
    /// it is known.
    #[error("this node is read-only")]
    ReadOnly(Option<String>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A plain-text answer, as the reference's aiohttp handlers write them.
pub(crate) fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Validation(errors) => {
                (StatusCode::UNPROCESSABLE_ENTITY, Json(Value::Array(errors))).into_response()
            }
            ApiError::Unprocessable(reason) => text(StatusCode::UNPROCESSABLE_ENTITY, reason),
            ApiError::NotFound(reason) => text(StatusCode::NOT_FOUND, reason),
            ApiError::BadRequest(reason) => {
                (StatusCode::BAD_REQUEST, Json(json!({ "error": reason }))).into_response()
            }
            ApiError::Forbidden(reason) => {
                (StatusCode::FORBIDDEN, Json(json!({ "error": reason }))).into_response()
            }
            ApiError::PayloadTooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                Json(
                    json!({ "error": format!("request body exceeds the limit of {limit} bytes") }),
                ),
            )
                .into_response(),
            ApiError::ReadOnly(writable) => {
                let error = match &writable {
                    Some(url) => format!(
                        "this node is a read-only replica: send writes to the writable node {url}"
                    ),
                    None => "this node is a read-only replica: send writes to the writable node"
                        .to_string(),
                };
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({ "error": error, "writable_node": writable })),
                )
                    .into_response()
            }
            ApiError::Store(e) => {
                let kind = match &e {
                    StoreError::Unavailable(_) => "unavailable",
                    StoreError::Overflow(_) => "overflow",
                    StoreError::Corrupt(_) => "corrupt",
                    _ => "database",
                };
                metrics::counter!("lotledger_store_errors_total", "kind" => kind).increment(1);
                tracing::error!(error = %e, "store error");
                if matches!(e, StoreError::Unavailable(_)) {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [(header::RETRY_AFTER, "1")],
                        Json(json!({ "error": "the database is unavailable; retry later" })),
                    )
                        .into_response()
                } else {
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        Json(json!({ "error": "internal error" })),
                    )
                        .into_response()
                }
            }
        }
    }
}

/// Unknown paths.
pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound("404: Not Found".into())
}
