//! The websocket `/api/ws0/messages` (NODE-API.md §4): on connection, the newest `history`
//! messages the list query selects (oldest of them first), then each message this server
//! newly processes that passes the reference's live filter. Anything the client sends is
//! ignored; a ping every 30 s keeps idle connections alive.
//!
//! Where lotledger differs (README): an invalid query is refused before the upgrade (HTTP
//! 422 with the reference's body) rather than written into the upgraded connection; the
//! subscription starts before the history is read, so a message processed in between is not
//! missed (and not sent twice); a subscriber too slow to take the pushes is closed (1008).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use lotledger_core::node_json::{self, StoredEnvelope};
use lotledger_core::node_query::{ContentFormat, ListQueryError, MessageListQuery, query_pairs};
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, broadcast};

use crate::AppState;
use crate::error::text;
use crate::message_list::first_matches;

/// Seconds between two pings the server sends.
const HEARTBEAT: Duration = Duration::from_secs(30);
/// Close code of a server at capacity (the reference's).
const TRY_AGAIN_LATER: u16 = 1013;
/// Close code of a subscriber that fell behind the pushes.
const POLICY_VIOLATION: u16 = 1008;
/// Close code of a server going down.
const GOING_AWAY: u16 = 1001;

#[utoipa::path(get, path = "/api/ws0/messages", tag = "messages",
    params(("history" = Option<u32>, Query, description = "Messages sent first (0 ≤ history < \
        200, default 10): the newest the list query selects, oldest of them first"),
           ("channels" = Option<String>, Query, description = "Every filter of \
        `/api/v0/messages.json` but the paging ones")),
    responses(
        (status = 101, description = "Text frames: the history as the list writes messages, \
            then each newly processed message that passes the live filter, as the single \
            view writes it (NODE-API.md §4)"),
        (status = 422, description = "The reference's validation errors (plain text)")))]
pub(crate) async fn messages(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    upgrade: WebSocketUpgrade,
) -> Response {
    let pairs = query_pairs(query.as_deref().unwrap_or(""));
    let query = match MessageListQuery::parse_websocket(&pairs) {
        Ok(q) => q,
        Err(ListQueryError::Refused(body)) => {
            return text(StatusCode::UNPROCESSABLE_ENTITY, body.0);
        }
        Err(ListQueryError::Date(e)) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let permit = Arc::clone(&state.websocket_slots).try_acquire_owned().ok();
    upgrade.on_upgrade(move |socket| async move {
        match permit {
            Some(permit) => session(state, query, socket, permit).await,
            None => close(socket, TRY_AGAIN_LATER, "Too many connections").await,
        }
    })
}

async fn close(mut socket: WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    if let Err(e) = socket.send(Message::Close(Some(frame))).await {
        tracing::debug!("websocket close not sent: {e}");
    }
}

/// Whether the frame reached the client.
async fn send(socket: &mut WebSocket, frame: String) -> bool {
    socket.send(Message::Text(frame.into())).await.is_ok()
}

/// A live push of `env` for `query`'s subscriber, if it passes the live filter.
fn live_frame(query: &MessageListQuery, env: &StoredEnvelope) -> Option<String> {
    let content = env
        .item_content
        .as_deref()
        .and_then(|c| serde_json::from_str::<Value>(c).ok());
    let content = content.as_ref().and_then(Value::as_object);
    if !query.matches_live(env, content) {
        return None;
    }
    node_json::live_message(env, query.content_format == ContentFormat::Full)
        .inspect_err(|e| tracing::warn!(item_hash = %env.item_hash, "live push not written: {e}"))
        .ok()
}

async fn session(
    state: AppState,
    mut query: MessageListQuery,
    mut socket: WebSocket,
    _permit: OwnedSemaphorePermit,
) {
    // Subscribed before the history is read: what is processed meanwhile is pushed after it.
    let mut live = state.live.subscribe();
    let mut closing = state.config.closing.clone();
    if query.content_format == ContentFormat::Headers {
        query.content_format = ContentFormat::None;
    }
    let mut sent = HashSet::new();
    if query.history > 0 {
        let history = match first_matches(&state, &query, None, query.history).await {
            Ok(history) => history,
            Err(e) => {
                tracing::warn!("websocket history not read: {e}");
                return close(socket, 1011, "history unavailable").await;
            }
        };
        for env in history.iter().rev() {
            let frame = match node_json::list_message(env, query.content_format) {
                Ok(frame) => frame,
                Err(e) => {
                    tracing::warn!(item_hash = %env.item_hash, "history frame not written: {e}");
                    continue;
                }
            };
            if !send(&mut socket, frame).await {
                return;
            }
            sent.insert(env.item_hash.clone());
        }
    }
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    loop {
        tokio::select! {
            pushed = live.recv() => match pushed {
                Ok(env) => {
                    if sent.remove(&env.item_hash) {
                        continue;
                    }
                    if let Some(frame) = live_frame(&query, &env)
                        && !send(&mut socket, frame).await
                    {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::info!(missed, "websocket subscriber too slow: closed");
                    return close(socket, POLICY_VIOLATION, "Too slow: pushes were missed").await;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return close(socket, GOING_AWAY, "Server stopping").await;
                }
            },
            received = socket.recv() => match received {
                // Whatever the client sends is ignored.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            _ = heartbeat.tick() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            changed = wait_closing(&mut closing) => {
                if changed {
                    return close(socket, GOING_AWAY, "Server stopping").await;
                }
            }
        }
    }
}

/// Resolves `true` once the server begins to stop; never when it has no stop signal.
async fn wait_closing(closing: &mut Option<tokio::sync::watch::Receiver<bool>>) -> bool {
    match closing {
        // A signal whose sender is gone counts as a stop too.
        Some(rx) => {
            let _ = rx.wait_for(|stopping| *stopping).await;
            true
        }
        None => std::future::pending().await,
    }
}
