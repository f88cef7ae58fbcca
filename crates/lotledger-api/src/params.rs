//! Query strings as the reference's pydantic models read them: unknown keys ignored, the first
//! of repeated keys wins, lax string → int/bool/float conversion, and every failing field
//! reported at once as pydantic's error list (HTTP 422).

use std::collections::HashMap;

use lotledger_core::Timestamp;
use lotledger_core::node_query::{MESSAGE_TYPES, lax_bool, lax_int};
use lotledger_core::query::{Direction, HistoryFilter};
use serde_json::{Value, json};

use crate::ApiError;

pub(crate) struct Params {
    map: HashMap<String, String>,
    errors: Vec<Value>,
}

fn error(kind: &str, loc: &str, msg: &str, input: &str) -> Value {
    json!({"type": kind, "loc": ["query", loc], "msg": msg, "input": input})
}

impl Params {
    pub(crate) fn from_query(query: Option<&str>) -> Params {
        let mut map = HashMap::new();
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
        }
        Params {
            map,
            errors: Vec::new(),
        }
    }

    /// The first of `keys` present (alias first, then field name).
    pub(crate) fn raw(&self, keys: &[&str]) -> Option<(String, String)> {
        keys.iter()
            .find_map(|k| self.map.get(*k).map(|v| ((*k).to_string(), v.clone())))
    }

    pub(crate) fn string(&self, key: &str) -> Option<String> {
        self.map.get(key).cloned()
    }

    pub(crate) fn fail(&mut self, kind: &str, loc: &str, msg: &str, input: &str) {
        self.errors.push(error(kind, loc, msg, input));
    }

    /// An integer with a lower bound; `None` when absent or invalid (the error is recorded).
    pub(crate) fn int(&mut self, key: &str, ge: Option<i64>) -> Option<i64> {
        let raw = self.map.get(key)?.clone();
        let Some(v) = lax_int(&raw) else {
            self.fail(
                "int_parsing",
                key,
                "Input should be a valid integer, unable to parse string as an integer",
                &raw,
            );
            return None;
        };
        if let Some(min) = ge
            && v < min
        {
            self.errors.push(json!({
                "type": "greater_than_equal", "loc": ["query", key],
                "msg": format!("Input should be greater than or equal to {min}"),
                "input": raw, "ctx": {"ge": min},
            }));
            return None;
        }
        Some(v)
    }

    pub(crate) fn bool(&mut self, key: &str) -> Option<bool> {
        let raw = self.map.get(key)?.clone();
        let v = lax_bool(&raw);
        if v.is_none() {
            self.fail(
                "bool_parsing",
                key,
                "Input should be a valid boolean, unable to interpret input",
                &raw,
            );
        }
        v
    }

    /// Unix seconds as `float()` reads them, non-negative, within the datetime range.
    fn timestamp(&mut self, keys: &[&str]) -> Option<Timestamp> {
        let (key, raw) = self.raw(keys)?;
        let parsed = lotledger_core::decimal::python_float_from_str(&raw);
        let result = match parsed {
            None => Err("Input should be a valid number, unable to parse string as a number"),
            Some(x) if !x.is_finite() => Err("Value error, timestamp must be a finite number"),
            Some(x) if x < 0.0 => Err("Value error, timestamp must not be negative"),
            Some(x) => Timestamp::from_unix_seconds_f64(x)
                .map_err(|_| "Value error, timestamp is out of range"),
        };
        match result {
            Ok(t) => Some(t),
            Err(msg) => {
                let kind = if parsed.is_none() {
                    "float_parsing"
                } else {
                    "value_error"
                };
                self.fail(kind, &key, msg, &raw);
                None
            }
        }
    }

    /// A required instant ([`Params::instant`]); its absence is an error.
    pub(crate) fn required_instant(&mut self, key: &str) -> Option<Timestamp> {
        if !self.map.contains_key(key) {
            self.errors.push(json!({
                "type": "missing", "loc": ["query", key], "msg": "Field required", "input": null,
            }));
            return None;
        }
        self.instant(key)
    }

    /// An instant: RFC 3339 (`2026-03-01T00:00:00Z`) or non-negative Unix seconds; `None`
    /// when absent or invalid (the error is recorded).
    pub(crate) fn instant(&mut self, key: &str) -> Option<Timestamp> {
        let raw = self.map.get(key)?.clone();
        let parsed = Timestamp::parse_rfc3339(&raw).ok().or_else(|| {
            lotledger_core::decimal::python_float_from_str(&raw)
                .filter(|x| x.is_finite() && *x >= 0.0)
                .and_then(|x| Timestamp::from_unix_seconds_f64(x).ok())
        });
        if parsed.is_none() {
            self.fail(
                "value_error",
                key,
                "Value error, expected an RFC 3339 instant or non-negative Unix seconds",
                &raw,
            );
        }
        parsed
    }

    /// The filters shared by the history listing, its count and the summary.
    pub(crate) fn history_filter(&mut self) -> HistoryFilter {
        let s = |p: &Params, k: &str| p.string(k);
        let list = |text: Option<String>| -> Vec<String> {
            text.map(|t| {
                t.split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
        };
        let direction = match self.string("direction") {
            None => None,
            Some(d) if d == "incoming" => Some(Direction::Incoming),
            Some(d) if d == "outgoing" => Some(Direction::Outgoing),
            Some(d) => {
                self.errors.push(json!({
                    "type": "enum", "loc": ["query", "direction"],
                    "msg": "Input should be 'incoming' or 'outgoing'", "input": d,
                    "ctx": {"expected": "'incoming' or 'outgoing'"},
                }));
                None
            }
        };
        let resource_types = match self.raw(&["resourceTypes", "resource_types"]) {
            None => Vec::new(),
            Some((key, raw)) => {
                let items = list(Some(raw.clone()));
                if let Some(bad) = items.iter().find(|t| !MESSAGE_TYPES.contains(&t.as_str())) {
                    self.fail(
                        "value_error",
                        &key,
                        &format!("Value error, Invalid resource type: {bad}"),
                        &raw,
                    );
                }
                items
            }
        };
        let start = self.timestamp(&["startDate", "start_date"]);
        let end = self.timestamp(&["endDate", "end_date"]);
        if let (Some(a), Some(b)) = (start, end)
            && b < a
        {
            self.errors.push(json!({
                "type": "value_error", "loc": ["query"],
                "msg": "Value error, end date cannot be lower than start date.",
                "input": {},
            }));
        }
        HistoryFilter {
            tx_hash: s(self, "tx_hash"),
            token: s(self, "token"),
            chain: s(self, "chain"),
            provider: s(self, "provider"),
            origin: s(self, "origin"),
            origin_ref: s(self, "origin_ref"),
            payment_method: s(self, "payment_method"),
            has_expiration: self.bool("has_expiration"),
            exclude_payment_method: list(self.string("exclude_payment_method")),
            start,
            end,
            direction,
            resource_types,
            resource: s(self, "resource"),
        }
    }

    /// Fails with every recorded error.
    pub(crate) fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lax_ints_like_pydantic() {
        assert_eq!(lax_int(" 12 "), Some(12));
        assert_eq!(lax_int("-1"), Some(-1));
        assert_eq!(lax_int("1_000"), Some(1000));
        assert_eq!(lax_int("3.0"), Some(3));
        assert_eq!(lax_int("3.5"), None);
        assert_eq!(lax_int("abc"), None);
        assert_eq!(lax_int(""), None);
        assert_eq!(lax_int("99999999999999999999"), None);
    }

    #[test]
    fn first_of_repeated_keys_wins() {
        let mut p = Params::from_query(Some("page=2&page=x"));
        assert_eq!(p.int("page", Some(1)), Some(2));
        assert!(p.finish().is_ok());
    }

    #[test]
    fn negative_and_reversed_dates_are_refused() {
        let mut p = Params::from_query(Some("startDate=-1"));
        p.history_filter();
        assert!(p.finish().is_err());
        let mut p = Params::from_query(Some("startDate=2&endDate=1"));
        p.history_filter();
        assert!(p.finish().is_err());
        let mut p = Params::from_query(Some("startDate=1&endDate=1"));
        p.history_filter();
        assert!(p.finish().is_ok());
    }
}
