//! JSON comparison by the conformance format's rules: object keys regardless of order,
//! timestamps as instants, decimal strings by numeric value, numbers by value.

use lotledger_core::Timestamp;
use lotledger_core::decimal::PyDecimal;
use serde_json::Value;

/// Keys whose string values are decimals.
const DECIMAL_KEYS: [&str; 2] = ["price", "expense_size_mib"];

/// `Ok` when `actual` matches `expected`; otherwise where and how they differ.
pub fn matches(expected: &Value, actual: &Value) -> Result<(), String> {
    walk(expected, actual, "$", None, false)
}

/// Like [`matches`], but objects only need the expected keys (`expect_partial`).
pub fn matches_partial(expected: &Value, actual: &Value) -> Result<(), String> {
    walk(expected, actual, "$", None, true)
}

fn walk(
    expected: &Value,
    actual: &Value,
    path: &str,
    key: Option<&str>,
    partial: bool,
) -> Result<(), String> {
    let differ = || Err(format!("at {path}: expected {expected}, got {actual}"));
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            if !partial && e.len() != a.len() {
                let mut ek: Vec<_> = e.keys().collect();
                let mut ak: Vec<_> = a.keys().collect();
                ek.sort();
                ak.sort();
                return Err(format!("at {path}: expected keys {ek:?}, got {ak:?}"));
            }
            for (k, ev) in e {
                let av = a
                    .get(k)
                    .ok_or_else(|| format!("at {path}: missing key {k:?}"))?;
                walk(ev, av, &format!("{path}.{k}"), Some(k), partial)?;
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Err(format!(
                    "at {path}: expected {} items, got {}: {actual}",
                    e.len(),
                    a.len()
                ));
            }
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                walk(ev, av, &format!("{path}[{i}]"), key, partial)?;
            }
            Ok(())
        }
        (Value::String(e), Value::String(a)) => {
            if e == a {
                return Ok(());
            }
            if let (Ok(te), Ok(ta)) = (Timestamp::parse_rfc3339(e), Timestamp::parse_rfc3339(a)) {
                return if te == ta { Ok(()) } else { differ() };
            }
            if key.is_some_and(|k| DECIMAL_KEYS.contains(&k)) && decimal_eq(e, a) {
                return Ok(());
            }
            differ()
        }
        (Value::Number(e), Value::Number(a)) => {
            let same = match (e.as_i64(), a.as_i64()) {
                (Some(x), Some(y)) => x == y,
                _ => e.as_f64() == a.as_f64(),
            };
            if same { Ok(()) } else { differ() }
        }
        // A decimal may be given as a number on one side (cursor-mode bodies).
        (Value::String(s), Value::Number(n)) | (Value::Number(n), Value::String(s))
            if key.is_some_and(|k| DECIMAL_KEYS.contains(&k)) =>
        {
            if decimal_eq(s, &n.to_string()) {
                Ok(())
            } else {
                differ()
            }
        }
        (e, a) if e == a => Ok(()),
        _ => differ(),
    }
}

/// Numeric equality of two decimal texts (`"0.5"` = `"0.50"`, `"1e-06"` = `"0.000001"`).
pub fn decimal_eq(a: &str, b: &str) -> bool {
    match (canonical(a), canonical(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

fn canonical(text: &str) -> Option<(bool, String, i64)> {
    match PyDecimal::parse(text)? {
        PyDecimal::Finite {
            negative,
            digits,
            exponent,
        } => {
            let trimmed = digits.trim_start_matches('0');
            if trimmed.is_empty() {
                return Some((false, String::new(), 0));
            }
            let without_zeros = trimmed.trim_end_matches('0');
            let shift = i64::try_from(trimmed.len() - without_zeros.len()).ok()?;
            Some((negative, without_zeros.to_string(), exponent + shift))
        }
        PyDecimal::Infinite { negative } => Some((negative, "inf".into(), 0)),
        PyDecimal::NaN => Some((false, "nan".into(), 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules() {
        assert!(
            matches(
                &json!({"price": "0.5", "t": "2026-03-01T00:00:00Z"}),
                &json!({"t": "2026-03-01T00:00:00.000Z", "price": "0.50"})
            )
            .is_ok()
        );
        assert!(matches(&json!({"price": "1e-06"}), &json!({"price": "0.000001"})).is_ok());
        assert!(matches(&json!({"price": "1e-06"}), &json!({"price": "0.00001"})).is_err());
        assert!(matches(&json!({"a": "0.5"}), &json!({"a": "0.50"})).is_err());
        assert!(matches(&json!([1, 2]), &json!([1])).is_err());
        assert!(matches(&json!({"a": 1}), &json!({"a": 1, "b": 2})).is_err());
        assert!(matches_partial(&json!({"a": 1}), &json!({"a": 1, "b": 2})).is_ok());
        assert!(matches(&json!(5), &json!(5.0)).is_ok());
    }
}
