//! Lots in time (issue 12): the lots that still hold credits now and expire before an instant,
//! of one holder or of every holder (paged), with their sum (part 4); and one holder's lots as
//! the ledger stood at any instant, with the debits that drained them (part 2).

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use lotledger_core::{Lot, Timestamp};
use serde::Serialize;
use utoipa::ToSchema;

use crate::params::Params;
use crate::{ApiError, AppState, request_now};

/// Default page size of the holders' listing.
const DEFAULT_PAGINATION: i64 = 100;

/// A lot that expires.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExpiringLot {
    /// Only in the listing across holders.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The granting message's item hash.
    pub credit_ref: String,
    pub credit_index: i32,
    /// Credits it still holds.
    pub amount: i64,
    /// ISO 8601 UTC with `Z`.
    pub expiration_date: String,
    /// When it was granted (its message's instant), ISO 8601 UTC with `Z`.
    pub granted_at: String,
}

fn expiring(lot: Lot, with_address: bool) -> ExpiringLot {
    ExpiringLot {
        address: with_address.then_some(lot.address),
        credit_ref: lot.credit_ref,
        credit_index: lot.credit_index,
        amount: lot.amount_remaining.0,
        expiration_date: lot
            .expiration_date
            .map(Timestamp::to_iso_pydantic)
            .unwrap_or_default(),
        granted_at: lot.message_timestamp.to_iso_pydantic(),
    }
}

/// `GET /api/v0/addresses/{address}/credit_expirations`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AddressExpirations {
    pub address: String,
    /// The instant the lots hold their credits at (now).
    pub at: String,
    pub before: String,
    /// Σ `amount` of `lots`.
    pub total: i64,
    /// Soonest expiry first.
    pub lots: Vec<ExpiringLot>,
}

#[utoipa::path(get, path = "/api/v0/addresses/{address}/credit_expirations", tag = "credits",
    params(("address" = String, Path, description = "Account address"),
           ("before" = String, Query, description = "RFC 3339 or Unix seconds: lots expiring \
            strictly before it")),
    responses((status = 200, body = AddressExpirations),
              (status = 422, description = "`before` missing or not an instant")))]
pub(crate) async fn of_address(
    State(state): State<AppState>,
    Path(address): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<AddressExpirations>, ApiError> {
    let now = request_now(&state, &headers)?;
    let mut p = Params::from_query(query.as_deref());
    let before = p.required_instant("before");
    p.finish()?;
    let before = before.ok_or_else(|| ApiError::BadRequest("before".into()))?;
    let mut lots: Vec<Lot> = state
        .store
        .lots(&address)
        .await?
        .into_iter()
        .filter(|l| {
            l.amount_remaining.0 > 0 && l.expiration_date.is_some_and(|e| e > now && e < before)
        })
        .collect();
    // Soonest expiry first; the store's emission order breaks ties.
    lots.sort_by_key(|l| l.expiration_date);
    let mut total: i64 = 0;
    for lot in &lots {
        total = total.checked_add(lot.amount_remaining.0).ok_or_else(|| {
            ApiError::Store(lotledger_store::StoreError::Overflow(
                "expiring credits".into(),
            ))
        })?;
    }
    Ok(Json(AddressExpirations {
        address,
        at: now.to_iso_pydantic(),
        before: before.to_iso_pydantic(),
        total,
        lots: lots.into_iter().map(|l| expiring(l, false)).collect(),
    }))
}

/// `GET /api/v0/credit_expirations`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Expirations {
    pub at: String,
    pub before: String,
    /// Σ of every expiring lot's credits (all pages).
    pub total: i64,
    /// This page: soonest expiry first, then holder, then emission order.
    pub expirations: Vec<ExpiringLot>,
    pub pagination_item: String,
    pub pagination_page: i64,
    pub pagination_per_page: i64,
    /// Expiring lots in all pages.
    pub pagination_total: u64,
}

#[utoipa::path(get, path = "/api/v0/credit_expirations", tag = "credits",
    params(("before" = String, Query, description = "RFC 3339 or Unix seconds: lots expiring \
            strictly before it"),
           ("pagination" = Option<i64>, Query, description = "Lots per page (100; 0: all)"),
           ("page" = Option<i64>, Query, description = "Page, from 1")),
    responses((status = 200, body = Expirations),
              (status = 422, description = "A parameter missing or invalid")))]
pub(crate) async fn of_holders(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<Expirations>, ApiError> {
    let now = request_now(&state, &headers)?;
    let mut p = Params::from_query(query.as_deref());
    let before = p.required_instant("before");
    let pagination = p.int("pagination", Some(0)).unwrap_or(DEFAULT_PAGINATION);
    let page = p.int("page", Some(1)).unwrap_or(1);
    p.finish()?;
    let before = before.ok_or_else(|| ApiError::BadRequest("before".into()))?;
    let per_page = u64::try_from(pagination).unwrap_or(0);
    let offset = u64::try_from(page - 1)
        .unwrap_or(0)
        .saturating_mul(per_page);
    let limit = if per_page == 0 { u64::MAX } else { per_page };
    let offset = if per_page == 0 { 0 } else { offset };
    let (total, count) = state.store.expiring_total(now, before).await?;
    let lots = state
        .store
        .expiring_lots(now, before, offset, limit)
        .await?;
    Ok(Json(Expirations {
        at: now.to_iso_pydantic(),
        before: before.to_iso_pydantic(),
        total: total.0,
        expirations: lots.into_iter().map(|l| expiring(l, true)).collect(),
        pagination_item: "expirations".into(),
        pagination_page: page,
        pagination_per_page: pagination,
        pagination_total: count,
    }))
}

/// One address's lots as its ledger stood at `as_of` (its history rows up to the instant,
/// replayed by the core: `lotledger_core::as_of`).
pub(crate) async fn lots_as_of(
    state: &AppState,
    address: &str,
    as_of: Timestamp,
) -> Result<Vec<lotledger_core::LotAsOf>, ApiError> {
    let rows = state.store.replay_history(address).await?;
    lotledger_core::as_of(&rows, as_of).map_err(|e| {
        ApiError::Store(lotledger_store::StoreError::Corrupt(format!(
            "history of {address} does not replay: {e}"
        )))
    })
}

/// Every holder's balance as the ledger stood at `as_of`, in address order, as
/// `Store::credit_balances` lists today's (each holder's rows up to the instant replayed: a
/// pass over the whole history).
pub(crate) async fn balances_as_of(
    state: &AppState,
    as_of: Timestamp,
    min_balance: i64,
) -> Result<Vec<(String, lotledger_core::Credits)>, ApiError> {
    let mut out = Vec::new();
    for address in state.store.addresses().await? {
        let lots = lots_as_of(state, &address, as_of).await?;
        let balance = lotledger_core::balance_as_of(&lots, as_of).ok_or_else(|| {
            ApiError::Store(lotledger_store::StoreError::Overflow("balance".into()))
        })?;
        // As the store lists them: holders with a lot still holding credits (expired or
        // not), whose valid credits reach `min_balance`.
        if lots.iter().any(|l| l.remaining.is_positive()) && balance.0 >= min_balance {
            out.push((address, balance));
        }
    }
    Ok(out)
}

/// A debit that took from a lot.
#[derive(Debug, Serialize, ToSchema)]
pub struct Drain {
    /// The debiting message's item hash and its row's index.
    pub credit_ref: String,
    pub credit_index: i32,
    /// ISO 8601 UTC with `Z`.
    pub at: String,
    pub amount: i64,
}

/// A lot as the ledger stood at an instant.
#[derive(Debug, Serialize, ToSchema)]
pub struct LotAsOfItem {
    pub credit_ref: String,
    pub credit_index: i32,
    pub granted_at: String,
    pub expiration_date: Option<String>,
    /// What it was granted.
    pub amount: i64,
    /// What was left of it then.
    pub remaining: i64,
    /// Whether it could still be spent then (not expired).
    pub valid: bool,
    /// The debits that took from it, in replay order.
    pub drained_by: Vec<Drain>,
}

/// `GET /api/v0/addresses/{address}/credit_lots`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LotsAsOf {
    pub address: String,
    pub as_of: String,
    /// Σ `remaining` of the valid lots: the balance then.
    pub credit_balance: i64,
    /// Every lot granted by then, drained or not, in emission order.
    pub lots: Vec<LotAsOfItem>,
}

#[utoipa::path(get, path = "/api/v0/addresses/{address}/credit_lots", tag = "credits",
    params(("address" = String, Path, description = "Account address"),
           ("as_of" = Option<String>, Query, description = "RFC 3339 or Unix seconds (default \
            now): the lots as the ledger stood then")),
    responses((status = 200, body = LotsAsOf),
              (status = 422, description = "`as_of` not an instant")))]
pub(crate) async fn lots_of_address(
    State(state): State<AppState>,
    Path(address): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<LotsAsOf>, ApiError> {
    let now = request_now(&state, &headers)?;
    let mut p = Params::from_query(query.as_deref());
    let as_of = p.instant("as_of").unwrap_or(now);
    p.finish()?;
    let lots = lots_as_of(&state, &address, as_of).await?;
    let credit_balance = lotledger_core::balance_as_of(&lots, as_of)
        .ok_or_else(|| ApiError::Store(lotledger_store::StoreError::Overflow("balance".into())))?;
    let iso = Timestamp::to_iso_pydantic;
    Ok(Json(LotsAsOf {
        address,
        as_of: iso(as_of),
        credit_balance: credit_balance.0,
        lots: lots
            .into_iter()
            .map(|l| LotAsOfItem {
                valid: l.expiration_date.is_none_or(|e| e > as_of),
                credit_ref: l.credit_ref,
                credit_index: l.credit_index,
                granted_at: iso(l.granted_at),
                expiration_date: l.expiration_date.map(iso),
                amount: l.amount.0,
                remaining: l.remaining.0,
                drained_by: l
                    .drained_by
                    .into_iter()
                    .map(|(credit_ref, credit_index, at, amount)| Drain {
                        credit_ref,
                        credit_index,
                        at: iso(at),
                        amount: amount.0,
                    })
                    .collect(),
            })
            .collect(),
    }))
}
