//! The instant a request is served at: the wall clock, or in test-clock mode the
//! `X-Lotledger-Now` header or the instant set through `PUT /api/v0/test/clock`.

use std::sync::Mutex;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use lotledger_core::Timestamp;
use serde_json::{Value, json};

use crate::{ApiError, AppState};

/// RFC 3339 instant a test-clock request is served at.
pub const NOW_HEADER: &str = "x-lotledger-now";

/// The instant set by `PUT /api/v0/test/clock`, if any.
#[derive(Debug, Default)]
pub(crate) struct TestClock(Mutex<Option<Timestamp>>);

/// The wall clock, in UTC microseconds (the only place the API reads it).
pub fn wall_clock_now() -> Timestamp {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    Timestamp::from_micros(micros).unwrap_or(Timestamp::UNIX_EPOCH)
}

impl TestClock {
    pub(crate) fn now(&self, enabled: bool, headers: &HeaderMap) -> Result<Timestamp, ApiError> {
        Ok(self
            .explicit(enabled, headers)?
            .unwrap_or_else(wall_clock_now))
    }

    /// The instant the test clock fixes for a request (its header, else the instant set), or
    /// `None` where the request follows the wall clock.
    pub(crate) fn explicit(
        &self,
        enabled: bool,
        headers: &HeaderMap,
    ) -> Result<Option<Timestamp>, ApiError> {
        match headers.get(NOW_HEADER) {
            Some(_) if !enabled => Err(ApiError::BadRequest(
                "the X-Lotledger-Now header needs a server started with --test-clock".into(),
            )),
            Some(v) => {
                let text = v
                    .to_str()
                    .map_err(|_| ApiError::BadRequest("X-Lotledger-Now is not text".into()))?;
                Timestamp::parse_rfc3339(text).map(Some).map_err(|e| {
                    ApiError::BadRequest(format!("X-Lotledger-Now must be RFC 3339: {e}"))
                })
            }
            None if enabled => Ok(self.get()),
            None => Ok(None),
        }
    }

    fn get(&self) -> Option<Timestamp> {
        self.0.lock().map_or(None, |g| *g)
    }

    fn set(&self, t: Option<Timestamp>) {
        if let Ok(mut g) = self.0.lock() {
            *g = t;
        }
    }
}

/// `PUT /api/v0/test/clock` with `{"now": "<RFC 3339>"}` (or `null` to follow the wall clock
/// again). Test-clock mode only.
pub(crate) async fn set_clock(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if !state.config.test_clock {
        return Err(ApiError::Forbidden(
            "the test clock is disabled: start the server with --test-clock".into(),
        ));
    }
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("body must be JSON: {e}")))?;
    let t = match v.get("now") {
        Some(Value::String(s)) => Some(
            Timestamp::parse_rfc3339(s)
                .map_err(|e| ApiError::BadRequest(format!("now must be RFC 3339: {e}")))?,
        ),
        Some(Value::Null) => None,
        _ => {
            return Err(ApiError::BadRequest(
                "body must be {\"now\": \"<RFC 3339>\" | null}".into(),
            ));
        }
    };
    state.clock.set(t);
    Ok((
        StatusCode::OK,
        Json(json!({ "now": t.map(Timestamp::to_rfc3339) })),
    ))
}
