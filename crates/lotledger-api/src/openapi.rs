//! The OpenAPI document, generated from the handlers' annotations. The committed copy
//! (`openapi.json` at the repository root) is compared with it by a test.

use axum::Json;
use utoipa::OpenApi;

use crate::{accounts, dry_run, expirations, message_list, messages, websocket};

#[derive(OpenApi)]
#[openapi(
    info(title = "lotledger", description = "Credit ledger with the Aleph.im node's credit API"),
    paths(
        messages::post_message,
        dry_run::dry_run,
        message_list::list,
        message_list::list_page,
        websocket::messages,
        messages::message_status,
        messages::message_status_brief,
        messages::message_content,
        messages::consumed_credits,
        accounts::balance,
        accounts::credit_balances,
        accounts::credit_history,
        accounts::credit_history_summary,
        accounts::costs,
        expirations::of_address,
        expirations::of_holders,
        expirations::lots_of_address,
    ),
    tags((name = "messages", description = "Signed Aleph messages in, status out"),
         (name = "credits", description = "Credit reads"))
)]
pub struct ApiDoc;

/// The document as pretty JSON (what is committed).
pub fn document() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}

pub(crate) async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
