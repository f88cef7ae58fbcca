//! The JSON shapes of ledger records shared by the CLI (`--json`), history import and the
//! conformance data: timestamps as RFC 3339 `Z`, amounts as integers, decimals as strings.

use serde_json::{Value, json};

use crate::model::{BalanceDetail, HistoryRow, Lot};
use crate::{Credits, Timestamp};

fn ts(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(t.to_rfc3339()))
}

pub fn history_row(r: &HistoryRow) -> Value {
    json!({
        "address": r.address,
        "amount": r.amount.0,
        "price": r.price,
        "bonus_amount": r.bonus_amount,
        "tx_hash": r.tx_hash,
        "token": r.token,
        "chain": r.chain,
        "provider": r.provider,
        "origin": r.origin,
        "origin_ref": r.origin_ref,
        "payment_method": r.payment_method,
        "credit_ref": r.credit_ref,
        "credit_index": r.credit_index,
        "expiration_date": ts(r.expiration_date),
        "message_timestamp": r.message_timestamp.to_rfc3339(),
        "expense_count": r.expense_count,
        "expense_size_mib": r.expense_size_mib,
    })
}

pub fn lot(l: &Lot) -> Value {
    json!({
        "credit_ref": l.credit_ref,
        "credit_index": l.credit_index,
        "amount_remaining": l.amount_remaining.0,
        "expiration_date": ts(l.expiration_date),
        "message_timestamp": l.message_timestamp.to_rfc3339(),
    })
}

pub fn balance_details(total: Credits, details: &[BalanceDetail]) -> Value {
    json!({
        "total": total.0,
        "details": details.iter().map(|d| json!({"expiration_date": ts(d.expiration_date), "amount": d.amount.0})).collect::<Vec<_>>(),
    })
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid history row: {0}")]
pub struct RowError(pub String);

/// Reads a history row in the shape of [`history_row`]; omitted optional columns are null.
/// Decimals are normalised to `NUMERIC` text. The drain policy is the row's `policy` (`v1`,
/// `v2`), or without one `v1`, the reference's.
pub fn parse_history_row(value: &Value) -> Result<HistoryRow, RowError> {
    parse_history_row_under(value, &crate::Schedule::default())
}

/// [`parse_history_row`] for a ledger whose schedule is `schedule`: a row that names no
/// policy takes the one `schedule` gives at its instant (rows imported into that ledger).
pub fn parse_history_row_under(
    value: &Value,
    schedule: &crate::Schedule,
) -> Result<HistoryRow, RowError> {
    let Value::Object(o) = value else {
        return Err(RowError("expected a JSON object".into()));
    };
    let text = |k: &str| -> Result<Option<String>, RowError> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(RowError(format!("{k} must be a string or null"))),
        }
    };
    let int = |k: &str| -> Result<Option<i64>, RowError> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| RowError(format!("{k} must be an integer or null"))),
        }
    };
    let time = |k: &str| -> Result<Option<Timestamp>, RowError> {
        text(k)?
            .map(|s| Timestamp::parse_rfc3339(&s).map_err(|e| RowError(format!("{k}: {e}"))))
            .transpose()
    };
    let decimal = |k: &str| -> Result<Option<String>, RowError> {
        let raw = match o.get(k) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return Err(RowError(format!("{k} must be a decimal string or null"))),
        };
        crate::decimal::PyDecimal::parse(&raw)
            .ok_or_else(|| RowError(format!("{k} is not a decimal: {raw:?}")))?
            .to_numeric_text()
            .map(Some)
            .map_err(|e| RowError(format!("{k}: {e}")))
    };
    let required = |k: &str| RowError(format!("{k} is required"));
    let credit_index = int("credit_index")?.ok_or_else(|| required("credit_index"))?;
    Ok(HistoryRow {
        address: text("address")?.ok_or_else(|| required("address"))?,
        amount: Credits(int("amount")?.ok_or_else(|| required("amount"))?),
        price: decimal("price")?,
        bonus_amount: int("bonus_amount")?,
        tx_hash: text("tx_hash")?,
        token: text("token")?,
        chain: text("chain")?,
        provider: text("provider")?,
        origin: text("origin")?,
        origin_ref: text("origin_ref")?,
        payment_method: text("payment_method")?,
        credit_ref: text("credit_ref")?.ok_or_else(|| required("credit_ref"))?,
        credit_index: i32::try_from(credit_index)
            .map_err(|_| RowError("credit_index out of range".into()))?,
        expiration_date: time("expiration_date")?,
        message_timestamp: time("message_timestamp")?
            .ok_or_else(|| required("message_timestamp"))?,
        expense_count: int("expense_count")?,
        expense_size_mib: decimal("expense_size_mib")?,
        // The reference knows one policy; a row of ours may say which planned it.
        policy: crate::Policy::V1,
    })
    .and_then(|mut row| {
        row.policy = match text("policy")? {
            None => schedule.at(row.message_timestamp),
            Some(p) => p.parse().map_err(|e| RowError(format!("policy: {e}")))?,
        };
        Ok(row)
    })
}
