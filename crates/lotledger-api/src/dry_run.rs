//! `POST /api/v0/messages/dry_run` (issue 12, part 3): the body of `POST /api/v0/messages`,
//! verified and planned against the ledger as it is, and nothing written.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use lotledger_core::dry_run::Prediction;
use lotledger_core::{Lot, Timestamp};
use lotledger_store::dry_run::DryRun;
use serde::Serialize;
use utoipa::ToSchema;

use crate::accounts::HistoryItem;
use crate::messages::read_message;
use crate::{ApiError, AppState, request_now};

/// What a message would do.
#[derive(Debug, Serialize, ToSchema)]
pub struct DryRunReply {
    /// `processed`, `rejected` or `ignored`: what `POST /api/v0/messages` would record.
    pub status: String,
    /// Why it would be rejected or ignored; null when processed.
    pub error: Option<String>,
    /// The history rows it would write, shaped as `credit_history` items with their
    /// `address`.
    pub history: Vec<DryRunRow>,
    /// Each lot it would drain and what it would take.
    pub drained: Vec<DrainedLot>,
    /// The lots it would create.
    pub created: Vec<CreatedLot>,
    /// Each touched address's balance now, before and after.
    pub balances: BTreeMap<String, BalanceChange>,
}

/// A history row a message would write.
#[derive(Debug, Serialize, ToSchema)]
pub struct DryRunRow {
    /// The row's holder.
    pub address: String,
    #[serde(flatten)]
    pub row: HistoryItem,
}

/// A lot a message would drain.
#[derive(Debug, Serialize, ToSchema)]
pub struct DrainedLot {
    pub address: String,
    /// The granting message's item hash and its row's index.
    pub credit_ref: String,
    pub credit_index: i32,
    /// What it would take from the lot.
    pub amount: i64,
    /// ISO 8601 UTC with `Z`; null: never expires.
    pub expiration_date: Option<String>,
}

/// A lot a message would create.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedLot {
    pub address: String,
    pub credit_ref: String,
    pub credit_index: i32,
    pub amount: i64,
    /// ISO 8601 UTC with `Z`; null: never expires.
    pub expiration_date: Option<String>,
    /// The message's instant, ISO 8601 UTC with `Z`.
    pub granted_at: String,
}

/// A balance before and after.
#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceChange {
    pub before: i64,
    pub after: i64,
}

impl DryRunReply {
    fn unchanged(status: &str, error: String) -> DryRunReply {
        DryRunReply {
            status: status.to_string(),
            error: Some(error),
            history: Vec::new(),
            drained: Vec::new(),
            created: Vec::new(),
            balances: BTreeMap::new(),
        }
    }

    /// The reply for a dry run's verdict.
    pub fn of(verdict: DryRun) -> DryRunReply {
        match verdict {
            DryRun::Rejected(error) => DryRunReply::unchanged("rejected", error),
            DryRun::Ignored(error) => DryRunReply::unchanged("ignored", error),
            DryRun::Processed(p) => DryRunReply::processed(p),
        }
    }

    fn processed(p: Prediction) -> DryRunReply {
        let iso = |t: Option<Timestamp>| t.map(Timestamp::to_iso_pydantic);
        DryRunReply {
            status: "processed".to_string(),
            error: None,
            history: p
                .rows
                .iter()
                .map(|r| DryRunRow {
                    address: r.address.clone(),
                    row: HistoryItem::of(r),
                })
                .collect(),
            drained: p
                .drained
                .into_iter()
                .map(|d| DrainedLot {
                    address: d.address,
                    credit_ref: d.credit_ref,
                    credit_index: d.credit_index,
                    amount: d.amount.0,
                    expiration_date: iso(d.expiration_date),
                })
                .collect(),
            created: p
                .created
                .into_iter()
                .map(|l: Lot| CreatedLot {
                    address: l.address,
                    credit_ref: l.credit_ref,
                    credit_index: l.credit_index,
                    amount: l.amount_remaining.0,
                    expiration_date: iso(l.expiration_date),
                    granted_at: l.message_timestamp.to_iso_pydantic(),
                })
                .collect(),
            balances: p
                .balances
                .into_iter()
                .map(|(address, (before, after))| {
                    (
                        address,
                        BalanceChange {
                            before: before.0,
                            after: after.0,
                        },
                    )
                })
                .collect(),
        }
    }
}

#[utoipa::path(post, path = "/api/v0/messages/dry_run", tag = "messages",
    request_body(content = serde_json::Value, description = "The body of POST /api/v0/messages: \
        {\"sync\": bool, \"message\": {…signed Aleph message…}}"),
    responses((status = 200, body = DryRunReply, description = "What the message would do, \
                   from the ledger now; nothing is written"),
              (status = 413, description = "Body too large"),
              (status = 422, description = "A body that is not a message")))]
pub(crate) async fn dry_run(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DryRunReply>, ApiError> {
    let now = request_now(&state, &headers)?;
    let (_, envelope) = read_message(&state, body)?;
    let verdict = match lotledger_sig::refusal(&envelope) {
        Some(reason) => DryRun::Rejected(reason),
        None => {
            state
                .store
                .dry_run(&envelope, &state.config.rules, now)
                .await?
        }
    };
    Ok(Json(DryRunReply::of(verdict)))
}
