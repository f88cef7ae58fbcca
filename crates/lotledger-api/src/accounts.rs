//! The credit read endpoints (SPEC Part II 4.3–4.4): balance, credit balances, credit history
//! and its summary, and the credit side of costs.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use lotledger_core::cursor::{HistoryCursor, decode_balances_cursor, encode_balances_cursor};
use lotledger_core::decimal::python_decimal_str;
use lotledger_core::query::{Keyset, SortBy, after_keyset, compare, summarize};
use lotledger_core::{HistoryRow, Timestamp};
use lotledger_store::BalancesQuery;
use serde::Serialize;
use serde_json::{Number, Value, json};
use utoipa::ToSchema;

use crate::params::Params;
use crate::{ApiError, AppState, request_now};

/// Page size cap in cursor mode.
pub const CURSOR_MAX_PAGINATION: i64 = 200;

const NO_HISTORY: &str = "No credit history found for this address";

/// One group of the per-expiry breakdown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreditBalanceDetail {
    /// ISO 8601 UTC with `Z`; null for credits that never expire.
    pub expiration_date: Option<String>,
    pub amount: i64,
}

/// `GET /api/v0/addresses/{address}/balance`. The token-holding fields (`balance`, `details`,
/// `locked_amount`) are not kept by lotledger and are always zero / empty.
#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceResponse {
    pub address: String,
    pub balance: f64,
    pub details: BTreeMap<String, f64>,
    pub locked_amount: f64,
    pub credit_balance: i64,
    pub credit_balance_details: Option<Vec<CreditBalanceDetail>>,
}

#[utoipa::path(get, path = "/api/v0/addresses/{address}/balance", tag = "credits",
    params(("address" = String, Path, description = "Account address"),
           ("chain" = Option<String>, Query, description = "An Aleph chain name (validated, not used)"),
           ("include_credit_details" = Option<bool>, Query, description = "Add the per-expiry breakdown"),
           ("as_of" = Option<String>, Query, description = "RFC 3339 or Unix seconds: the balance \
            as the ledger stood then (its rows up to the instant, replayed, evaluated then)")),
    responses((status = 200, body = BalanceResponse), (status = 422, description = "Invalid parameter")))]
pub(crate) async fn balance(
    State(state): State<AppState>,
    Path(address): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<BalanceResponse>, ApiError> {
    let now = request_now(&state, &headers)?;
    let mut p = Params::from_query(query.as_deref());
    if let Some(chain) = p.string("chain")
        && lotledger_sig::chain_family(&chain).is_none()
    {
        p.fail(
            "enum",
            "chain",
            "Input should be a valid Aleph chain name",
            &chain,
        );
    }
    let with_details = p.bool("include_credit_details").unwrap_or(false);
    let as_of = p.instant("as_of");
    p.finish()?;
    if let Some(as_of) = as_of {
        // The ledger as it stood then: its rows up to the instant, replayed, evaluated then.
        let lots = crate::expirations::lots_as_of(&state, &address, as_of).await?;
        let (total, details) =
            lotledger_core::balance_details_as_of(&lots, as_of).ok_or_else(|| {
                ApiError::Store(lotledger_store::StoreError::Overflow("balance".into()))
            })?;
        let details = with_details.then(|| {
            details
                .into_iter()
                .map(|d| CreditBalanceDetail {
                    expiration_date: d.expiration_date.map(Timestamp::to_iso_pydantic),
                    amount: d.amount.0,
                })
                .collect()
        });
        return Ok(Json(BalanceResponse {
            address,
            balance: 0.0,
            details: BTreeMap::new(),
            locked_amount: 0.0,
            credit_balance: total.0,
            credit_balance_details: details,
        }));
    }
    let (credit_balance, details) = if with_details {
        let (total, details) = state.store.balance_details(&address, now).await?;
        let details = details
            .into_iter()
            .map(|d| CreditBalanceDetail {
                expiration_date: d.expiration_date.map(Timestamp::to_iso_pydantic),
                amount: d.amount.0,
            })
            .collect();
        (total.0, Some(details))
    } else {
        (state.store.balance(&address, now).await?.0, None)
    };
    Ok(Json(BalanceResponse {
        address,
        balance: 0.0,
        details: BTreeMap::new(),
        locked_amount: 0.0,
        credit_balance,
        credit_balance_details: details,
    }))
}

/// `{"address", "credits"}` of the credit-balances list.
#[derive(Debug, Serialize, ToSchema)]
pub struct AddressCredits {
    pub address: String,
    pub credits: i64,
}

#[utoipa::path(get, path = "/api/v0/credit_balances", tag = "credits",
    params(("pagination" = Option<i64>, Query, description = "Page size, ≥ 0 (0 = all in page mode), default 100"),
           ("page" = Option<i64>, Query, description = "Page number, ≥ 1"),
           ("min_balance" = Option<i64>, Query, description = "Keep balances ≥ this (≥ 1 when given)"),
           ("cursor" = Option<String>, Query, description = "Cursor mode when present (empty = from the start)"),
           ("as_of" = Option<String>, Query, description = "RFC 3339 or Unix seconds: the balances as \
            the ledger stood then (every holder's rows up to the instant replayed)")),
    responses((status = 200, description = "Page mode: credit_balances, pagination_*; cursor mode: credit_balances, next_cursor, pagination_per_page"),
              (status = 422, description = "Invalid parameter or cursor")))]
pub(crate) async fn credit_balances(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let now = request_now(&state, &headers)?;
    let mut p = Params::from_query(query.as_deref());
    let pagination = p.int("pagination", Some(0)).unwrap_or(100);
    let page = p.int("page", Some(1)).unwrap_or(1);
    let min_balance = p.int("min_balance", Some(1)).unwrap_or(0);
    let cursor = p.string("cursor");
    let as_of = p.instant("as_of");
    p.finish()?;
    // As of an instant: every holder replayed, then paged here as the store pages.
    let replayed = match as_of {
        Some(as_of) => Some(crate::expirations::balances_as_of(&state, as_of, min_balance).await?),
        None => None,
    };
    let page_of = |q: BalancesQuery<'_>| {
        replayed.as_ref().map(|all| {
            let skip = usize::try_from(q.offset).unwrap_or(usize::MAX);
            let take = q
                .limit
                .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
            all.iter()
                .filter(|(a, _)| q.after.is_none_or(|after| a.as_str() > after))
                .skip(skip)
                .take(take)
                .cloned()
                .collect::<Vec<_>>()
        })
    };
    let list = |rows: &[(String, lotledger_core::Credits)]| -> Vec<AddressCredits> {
        rows.iter()
            .map(|(a, c)| AddressCredits {
                address: a.clone(),
                credits: c.0,
            })
            .collect()
    };
    if let Some(cursor) = cursor {
        if pagination == 0 {
            return Err(ApiError::Unprocessable(
                "pagination=0 is not allowed with cursor-based pagination".into(),
            ));
        }
        let per_page = pagination.min(CURSOR_MAX_PAGINATION);
        let after = if cursor.is_empty() {
            None
        } else {
            Some(
                decode_balances_cursor(&cursor)
                    .map_err(|e| ApiError::Unprocessable(e.to_string()))?,
            )
        };
        let query = BalancesQuery {
            at: now,
            min_balance,
            after: after.as_deref(),
            limit: Some(u64::try_from(pagination).unwrap_or(0).saturating_add(1)),
            offset: 0,
        };
        let mut rows = match page_of(query.clone()) {
            Some(rows) => rows,
            None => state.store.credit_balances(query).await?,
        };
        let keep = usize::try_from(per_page).unwrap_or(0);
        let has_more = rows.len() > keep;
        rows.truncate(keep);
        let next = if has_more {
            rows.last().map(|(a, _)| encode_balances_cursor(a))
        } else {
            None
        };
        return Ok(Json(json!({
            "credit_balances": list(&rows),
            "next_cursor": next,
            "pagination_per_page": per_page,
        })));
    }
    let offset = u64::try_from(page.saturating_sub(1).saturating_mul(pagination)).unwrap_or(0);
    let query = BalancesQuery {
        at: now,
        min_balance,
        after: None,
        limit: (pagination > 0).then(|| u64::try_from(pagination).unwrap_or(0)),
        offset,
    };
    let (rows, total) = match (page_of(query.clone()), &replayed) {
        (Some(rows), Some(all)) => (rows, all.len() as u64),
        _ => (
            state.store.credit_balances(query).await?,
            state.store.count_credit_balances(now, min_balance).await?,
        ),
    };
    Ok(Json(json!({
        "credit_balances": list(&rows),
        "pagination_item": "credit_balances",
        "pagination_page": page,
        "pagination_per_page": pagination,
        "pagination_total": total,
    })))
}

/// A credit-history row in page mode (pydantic's JSON: ISO datetimes, decimal strings).
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryItem {
    pub amount: i64,
    /// Decimal string.
    pub price: Option<String>,
    pub bonus_amount: Option<i64>,
    pub tx_hash: Option<String>,
    pub token: Option<String>,
    pub chain: Option<String>,
    pub provider: Option<String>,
    pub origin: Option<String>,
    pub origin_ref: Option<String>,
    pub payment_method: Option<String>,
    pub credit_ref: String,
    pub credit_index: i32,
    pub expiration_date: Option<String>,
    pub message_timestamp: String,
    pub expense_count: Option<i64>,
    /// Decimal string.
    pub expense_size_mib: Option<String>,
}

impl HistoryItem {
    pub(crate) fn of(r: &HistoryRow) -> HistoryItem {
        HistoryItem {
            amount: r.amount.0,
            price: r.price.as_deref().map(python_decimal_str),
            bonus_amount: r.bonus_amount,
            tx_hash: r.tx_hash.clone(),
            token: r.token.clone(),
            chain: r.chain.clone(),
            provider: r.provider.clone(),
            origin: r.origin.clone(),
            origin_ref: r.origin_ref.clone(),
            payment_method: r.payment_method.clone(),
            credit_ref: r.credit_ref.clone(),
            credit_index: r.credit_index,
            expiration_date: r.expiration_date.map(Timestamp::to_iso_pydantic),
            message_timestamp: r.message_timestamp.to_iso_pydantic(),
            expense_count: r.expense_count,
            expense_size_mib: r.expense_size_mib.as_deref().map(python_decimal_str),
        }
    }
}

/// Page mode body.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryPage {
    pub address: String,
    pub credit_history: Vec<HistoryItem>,
    pub pagination_page: i64,
    pub pagination_total: u64,
    pub pagination_per_page: i64,
}

/// Cursor mode goes through the reference's fallback JSON encoder: datetimes as epoch-second
/// floats, decimals as floats, keys sorted.
fn cursor_item(r: &HistoryRow) -> Value {
    let seconds = |t: Timestamp| float(t.as_micros() as f64 / 1e6);
    let decimal = |d: &Option<String>| {
        d.as_deref()
            .and_then(|t| t.parse::<f64>().ok())
            .map_or(Value::Null, float)
    };
    json!({
        "amount": r.amount.0,
        "bonus_amount": r.bonus_amount,
        "chain": r.chain,
        "credit_index": r.credit_index,
        "credit_ref": r.credit_ref,
        "expense_count": r.expense_count,
        "expense_size_mib": decimal(&r.expense_size_mib),
        "expiration_date": r.expiration_date.map_or(Value::Null, seconds),
        "message_timestamp": seconds(r.message_timestamp),
        "origin": r.origin,
        "origin_ref": r.origin_ref,
        "payment_method": r.payment_method,
        "price": decimal(&r.price),
        "provider": r.provider,
        "token": r.token,
        "tx_hash": r.tx_hash,
    })
}

fn float(x: f64) -> Value {
    Number::from_f64(x).map_or(Value::Null, Value::Number)
}

#[utoipa::path(get, path = "/api/v0/addresses/{address}/credit_history", tag = "credits",
    params(("address" = String, Path, description = "Account address"),
           ("pagination" = Option<i64>, Query, description = "Page size, ≥ 0, default 0 (= all rows in page mode)"),
           ("page" = Option<i64>, Query, description = "Page number, ≥ 1"),
           ("cursor" = Option<String>, Query, description = "Cursor mode when present"),
           ("sort_by" = Option<String>, Query, description = "message_timestamp (default), expiration_date, payment_method, amount, origin, tx_hash, provider"),
           ("sort_order" = Option<i64>, Query, description = "1 ascending, -1 descending (default)"),
           HistoryFilterQuery),
    responses((status = 200, body = HistoryPage, description = "Page mode; cursor mode: address, credit_history (epoch floats), next_cursor, pagination_per_page"),
              (status = 404, description = "No credit history found for this address"),
              (status = 422, description = "Invalid parameter or cursor")))]
pub(crate) async fn credit_history(
    State(state): State<AppState>,
    Path(address): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    request_now(&state, &headers)?;
    let mut p = Params::from_query(query.as_deref());
    let pagination = p.int("pagination", Some(0)).unwrap_or(0);
    let page = p.int("page", Some(1)).unwrap_or(1);
    let sort_by = match p.string("sort_by") {
        None => SortBy::MessageTimestamp,
        Some(s) => SortBy::parse(&s).unwrap_or_else(|| {
            p.fail(
                "enum",
                "sort_by",
                "Input should be 'message_timestamp', 'expiration_date', 'payment_method', \
                 'amount', 'origin', 'tx_hash' or 'provider'",
                &s,
            );
            SortBy::MessageTimestamp
        }),
    };
    let descending = match p.string("sort_order") {
        None => true,
        Some(raw) => match p.int("sort_order", None) {
            Some(-1) => true,
            Some(1) => false,
            Some(_) => {
                p.fail("enum", "sort_order", "Input should be 1 or -1", &raw);
                true
            }
            None => true,
        },
    };
    let filter = p.history_filter();
    let cursor = p.string("cursor");
    p.finish()?;

    let mut rows: Vec<HistoryRow> = state
        .store
        .address_history(&address)
        .await?
        .into_iter()
        .filter(|r| filter.matches(r))
        .collect();
    rows.sort_by(|a, b| compare(sort_by, descending, a, b));

    if let Some(cursor) = cursor {
        if pagination == 0 {
            return Err(ApiError::Unprocessable(
                "pagination=0 is not allowed with cursor-based pagination".into(),
            ));
        }
        let per_page = pagination.min(CURSOR_MAX_PAGINATION);
        if !cursor.is_empty() {
            let c = HistoryCursor::decode(&cursor)
                .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
            if c.sort_by != sort_by {
                return Err(ApiError::Unprocessable(format!(
                    "Cursor sort field mismatch: cursor has '{}', request has '{}'",
                    c.sort_by.name(),
                    sort_by.name()
                )));
            }
            if c.descending != descending {
                let o = |d: bool| if d { -1 } else { 1 };
                return Err(ApiError::Unprocessable(format!(
                    "Cursor sort order mismatch: cursor has {}, request has {}",
                    o(c.descending),
                    o(descending)
                )));
            }
            rows.retain(|r| after_keyset(sort_by, descending, &c.keyset, r));
        }
        let keep = usize::try_from(per_page).unwrap_or(0);
        let has_more = rows.len() > keep;
        rows.truncate(keep);
        if rows.is_empty() {
            return Err(ApiError::NotFound(NO_HISTORY.into()));
        }
        let next = match rows.last() {
            Some(last) if has_more => Some(
                HistoryCursor {
                    sort_by,
                    descending,
                    keyset: Keyset {
                        value: sort_by.value(last),
                        credit_ref: last.credit_ref.clone(),
                        credit_index: last.credit_index,
                    },
                }
                .encode(),
            ),
            _ => None,
        };
        return Ok(Json(json!({
            "address": address,
            "credit_history": rows.iter().map(cursor_item).collect::<Vec<_>>(),
            "next_cursor": next,
            "pagination_per_page": per_page,
        }))
        .into_response());
    }

    let total = rows.len() as u64;
    let page_rows: Vec<&HistoryRow> = if pagination > 0 {
        let skip = usize::try_from(page.saturating_sub(1).saturating_mul(pagination))
            .unwrap_or(usize::MAX);
        rows.iter()
            .skip(skip)
            .take(usize::try_from(pagination).unwrap_or(usize::MAX))
            .collect()
    } else {
        rows.iter().collect()
    };
    if page_rows.is_empty() {
        return Err(ApiError::NotFound(NO_HISTORY.into()));
    }
    Ok(Json(HistoryPage {
        address,
        credit_history: page_rows.into_iter().map(HistoryItem::of).collect(),
        pagination_page: page,
        pagination_total: total,
        pagination_per_page: pagination,
    })
    .into_response())
}

/// The filters shared by the history listing and its summary (documentation only: parsing is
/// `Params::history_filter`, which also accepts the snake_case spellings of the dates and types).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct HistoryFilterQuery {
    tx_hash: Option<String>,
    token: Option<String>,
    chain: Option<String>,
    provider: Option<String>,
    origin: Option<String>,
    origin_ref: Option<String>,
    payment_method: Option<String>,
    /// true/false (also 1/0, yes/no, on/off, t/f, y/n).
    has_expiration: Option<bool>,
    /// Comma-separated payment methods to leave out (rows without one are left out too).
    exclude_payment_method: Option<String>,
    /// Unix seconds, inclusive (also `start_date`).
    #[param(rename = "startDate")]
    start_date: Option<f64>,
    /// Unix seconds, inclusive (also `end_date`).
    #[param(rename = "endDate")]
    end_date: Option<f64>,
    /// `incoming` (amount > 0) or `outgoing` (amount < 0).
    direction: Option<String>,
    /// Comma-separated message types (also `resource_types`); lotledger keeps no resource
    /// messages, so a valid list matches nothing.
    #[param(rename = "resourceTypes")]
    resource_types: Option<String>,
    /// Effective origin (`origin`, else `origin_ref`) of expense rows.
    resource: Option<String>,
}

/// `GET …/credit_history/summary`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistorySummary {
    pub address: String,
    pub entry_count: u64,
    pub total_amount: i128,
    pub total_incoming: i128,
    /// ≤ 0.
    pub total_outgoing: i128,
}

#[utoipa::path(get, path = "/api/v0/addresses/{address}/credit_history/summary", tag = "credits",
    params(("address" = String, Path, description = "Account address"), HistoryFilterQuery),
    responses((status = 200, body = HistorySummary, description = "Zeros when nothing matches; takes the filters of credit_history"),
              (status = 422, description = "Invalid parameter")))]
pub(crate) async fn credit_history_summary(
    State(state): State<AppState>,
    Path(address): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<HistorySummary>, ApiError> {
    request_now(&state, &headers)?;
    let mut p = Params::from_query(query.as_deref());
    let filter = p.history_filter();
    p.finish()?;
    let rows = state.store.address_history(&address).await?;
    let s = summarize(rows.iter().filter(|r| filter.matches(r)));
    Ok(Json(HistorySummary {
        address,
        entry_count: s.entry_count,
        total_amount: s.total_amount,
        total_incoming: s.total_incoming,
        total_outgoing: s.total_outgoing,
    }))
}

#[utoipa::path(get, path = "/api/v0/costs", tag = "credits",
    params(("address" = Option<String>, Query), ("item_hash" = Option<String>, Query),
           ("payment_type" = Option<String>, Query, description = "hold, superfluid or credit (default)"),
           ("include_details" = Option<i64>, Query, description = "0..2"),
           ("include_size" = Option<bool>, Query),
           ("pagination" = Option<i64>, Query, description = "10..1000, default 100"),
           ("page" = Option<i64>, Query)),
    responses((status = 200, description = "Credit side only: consumed credits; lotledger keeps no resource costs, so costs are zero and resources empty"),
              (status = 422, description = "Invalid parameter")))]
pub(crate) async fn costs(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    request_now(&state, &headers)?;
    let mut p = Params::from_query(query.as_deref());
    let address = p.string("address").filter(|a| !a.is_empty());
    let item_hash = p.string("item_hash").filter(|h| !h.is_empty());
    let payment_type = p.string("payment_type").unwrap_or_else(|| "credit".into());
    if !["hold", "superfluid", "credit"].contains(&payment_type.as_str()) {
        p.fail(
            "enum",
            "payment_type",
            "Input should be 'hold', 'superfluid' or 'credit'",
            &payment_type,
        );
    }
    let include_details = p.int("include_details", Some(0)).unwrap_or(0);
    if include_details > 2 {
        p.fail(
            "less_than_equal",
            "include_details",
            "Input should be less than or equal to 2",
            &include_details.to_string(),
        );
    }
    p.bool("include_size");
    let pagination = p.int("pagination", Some(10)).unwrap_or(100);
    if pagination > 1000 {
        p.fail(
            "less_than_equal",
            "pagination",
            "Input should be less than or equal to 1000",
            &pagination.to_string(),
        );
    }
    let page = p.int("page", Some(1)).unwrap_or(1);
    p.finish()?;
    let consumed = state
        .store
        .consumed_credits(address.as_deref(), item_hash.as_deref())
        .await?;
    let zero = "0.000000000000000000";
    let detailed = include_details >= 1;
    Ok(Json(json!({
        "summary": {
            "total_consumed_credits": consumed.0,
            "total_cost_hold": zero,
            "total_cost_stream": zero,
            "total_cost_credit": zero,
            "resource_count": 0,
        },
        "filters": {"address": address, "item_hash": item_hash, "payment_type": payment_type},
        "resources": if detailed { json!([]) } else { Value::Null },
        "pagination_page": if detailed { json!(page) } else { Value::Null },
        "pagination_total": if detailed { json!(0) } else { Value::Null },
        "pagination_per_page": if detailed { json!(pagination) } else { Value::Null },
        "pagination_item": if detailed { json!("resources") } else { Value::Null },
    })))
}
