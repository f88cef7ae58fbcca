//! Field validation in the manner of the reference's pydantic v2 models: every failing field is
//! reported with its location, pydantic's error type and its standard message.

use serde_json::{Map, Value};
use std::fmt::Write as _;

use crate::decimal::{PyDecimal, python_float_from_str, python_float_repr};
use crate::pyrepr::{repr, repr_str, type_name};

/// One element of an error location: a key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loc {
    Key(String),
    Index(usize),
}

/// One failing field, as pydantic reports it in `ValidationError.errors()`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub kind: &'static str,
    pub loc: Vec<Loc>,
    pub msg: String,
    pub input: Value,
}

/// Python repr of an error list: `[{'type': …, 'loc': (…), 'msg': …, 'input': …}]`.
pub fn format_errors(errors: &[FieldError]) -> String {
    let mut out = String::from("[");
    for (i, e) in errors.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let loc = match e.loc.as_slice() {
            [] => "()".to_string(),
            [one] => format!("({},)", loc_repr(one)),
            many => format!(
                "({})",
                many.iter().map(loc_repr).collect::<Vec<_>>().join(", ")
            ),
        };
        let _ = write!(
            out,
            "{{'type': {}, 'loc': {loc}, 'msg': {}, 'input': {}}}",
            repr_str(e.kind),
            repr_str(&e.msg),
            repr(&e.input)
        );
    }
    out.push(']');
    out
}

fn loc_repr(l: &Loc) -> String {
    match l {
        Loc::Key(k) => repr_str(k),
        Loc::Index(i) => i.to_string(),
    }
}

/// A field failed; its error is in [`Validator::errors`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded;

/// Collects errors while walking a JSON document.
#[derive(Default)]
pub struct Validator {
    path: Vec<Loc>,
    pub errors: Vec<FieldError>,
}

impl Validator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, loc: Loc) {
        self.path.push(loc);
    }

    pub fn pop(&mut self) {
        self.path.pop();
    }

    pub fn error(&mut self, kind: &'static str, msg: impl Into<String>, input: &Value) {
        self.errors.push(FieldError {
            kind,
            loc: self.path.clone(),
            msg: msg.into(),
            input: input.clone(),
        });
    }

    fn error_at(&mut self, key: &str, kind: &'static str, msg: impl Into<String>, input: &Value) {
        self.push(Loc::Key(key.to_string()));
        self.error(kind, msg, input);
        self.pop();
    }

    pub fn value_error(&mut self, key: &str, msg: &str, input: &Value) {
        self.error_at(key, "value_error", format!("Value error, {msg}"), input);
    }

    /// The object at the current location, or a `model_type` error naming `model`.
    pub fn object<'a>(&mut self, value: &'a Value, model: &str) -> Option<&'a Map<String, Value>> {
        match value {
            Value::Object(map) => Some(map),
            other => {
                self.error(
                    "model_type",
                    format!("Input should be a valid dictionary or instance of {model}"),
                    other,
                );
                None
            }
        }
    }

    /// A required key of `obj`, or `Field required`.
    pub fn required<'a>(&mut self, obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
        match obj.get(key) {
            Some(v) => Some(v),
            None => {
                self.error_at(
                    key,
                    "missing",
                    "Field required",
                    &Value::Object(obj.clone()),
                );
                None
            }
        }
    }

    /// A required `str` field.
    pub fn string(&mut self, obj: &Map<String, Value>, key: &str) -> Option<String> {
        let v = self.required(obj, key)?;
        self.string_value(key, v)
    }

    fn string_value(&mut self, key: &str, v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            other => {
                self.error_at(key, "string_type", "Input should be a valid string", other);
                None
            }
        }
    }

    /// An `Optional[str]` field: absent and null are `None`. `Err(Recorded)` when invalid.
    pub fn opt_string(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
    ) -> Result<Option<String>, Recorded> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => self.string_value(key, v).map(Some).ok_or(Recorded),
        }
    }

    /// `address`: a string whose stripped form is not empty (stored unstripped).
    pub fn address(&mut self, obj: &Map<String, Value>) -> Option<String> {
        let s = self.string(obj, "address")?;
        if python_strip(&s).is_empty() {
            self.value_error("address", "address must not be empty", &Value::String(s));
            return None;
        }
        Some(s)
    }

    /// `amount`: a JSON integer (checked before any coercion), then `> 0`.
    pub fn amount(&mut self, obj: &Map<String, Value>) -> Option<i64> {
        let v = self.required(obj, "amount")?;
        let n = match v {
            Value::Number(n) if !n.is_f64() => n,
            other => {
                let msg = format!("amount must be an integer, got {}", type_name(other));
                self.value_error("amount", &msg, other);
                return None;
            }
        };
        match n.as_i64() {
            Some(a) if a > 0 => Some(a),
            Some(_) => {
                self.error_at(
                    "amount",
                    "greater_than",
                    "Input should be greater than 0",
                    v,
                );
                None
            }
            None => {
                self.value_error("amount", "amount must fit in a signed 64-bit integer", v);
                None
            }
        }
    }

    /// `price`: ints and floats (not bools) go through Python's `str()`, then the text must parse
    /// as a Python `Decimal`. Returns the value as PostgreSQL `NUMERIC` text.
    pub fn price(
        &mut self,
        obj: &Map<String, Value>,
        required: bool,
    ) -> Result<Option<String>, Recorded> {
        let v = if required {
            self.required(obj, "price").ok_or(Recorded)?
        } else {
            match obj.get("price") {
                None | Some(Value::Null) => return Ok(None),
                Some(v) => v,
            }
        };
        let text = match v {
            Value::Number(n) => number_str(n),
            Value::String(s) => s.clone(),
            other => {
                let msg = format!("price must be a valid decimal string, got {}", repr(other));
                self.value_error("price", &msg, other);
                return Err(Recorded);
            }
        };
        let parsed = PyDecimal::parse(&text);
        match parsed.map(|d| d.to_numeric_text()) {
            Some(Ok(numeric)) => Ok(Some(numeric)),
            Some(Err(e)) => {
                self.value_error("price", &format!("price {e}"), v);
                Err(Recorded)
            }
            None => {
                let msg = format!(
                    "price must be a valid decimal string, got {}",
                    repr_str(&text)
                );
                self.value_error("price", &msg, v);
                Err(Recorded)
            }
        }
    }

    /// An `Optional[int]` in pydantic's lax mode: integral floats, numeric strings and bools are
    /// accepted; `ge` is an optional lower bound.
    pub fn opt_lax_int(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        ge: Option<i64>,
    ) -> Result<Option<i64>, Recorded> {
        let v = match obj.get(key) {
            None | Some(Value::Null) => return Ok(None),
            Some(v) => v,
        };
        let parsed: Result<i64, (&'static str, &'static str)> = match v {
            Value::Bool(b) => Ok(i64::from(*b)),
            Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Ok(i),
                (None, Some(f)) if n.is_f64() => float_to_int(f),
                _ => Err((
                    "int_parsing_size",
                    "Input should be a valid integer, unable to parse number as an integer",
                )),
            },
            Value::String(s) => str_to_int(s),
            _ => Err(("int_type", "Input should be a valid integer")),
        };
        match parsed {
            Ok(i) => match ge {
                Some(min) if i < min => {
                    self.error_at(
                        key,
                        "greater_than_equal",
                        format!("Input should be greater than or equal to {min}"),
                        v,
                    );
                    Err(Recorded)
                }
                _ => Ok(Some(i)),
            },
            Err((kind, msg)) => {
                self.error_at(key, kind, msg, v);
                Err(Recorded)
            }
        }
    }

    /// An `Optional[float]` in lax mode (value unused: the reference does not persist it).
    pub fn opt_lax_float(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
    ) -> Result<Option<f64>, Recorded> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match lax_float(v) {
                Ok(f) => Ok(Some(f)),
                Err((kind, msg)) => {
                    self.error_at(key, kind, msg, v);
                    Err(Recorded)
                }
            },
        }
    }

    /// An `Optional[Decimal]` with `ge=0`, finite only. Returns `NUMERIC` text.
    pub fn opt_nonneg_decimal(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
    ) -> Result<Option<String>, Recorded> {
        let v = match obj.get(key) {
            None | Some(Value::Null) => return Ok(None),
            Some(v) => v,
        };
        let text = match v {
            Value::Number(n) => number_str(n),
            Value::String(s) => s.clone(),
            other => {
                self.error_at(
                    key,
                    "decimal_type",
                    "Decimal input should be an integer, float, string or Decimal object",
                    other,
                );
                return Err(Recorded);
            }
        };
        let Some(d) = PyDecimal::parse(&text) else {
            self.error_at(key, "decimal_parsing", "Input should be a valid decimal", v);
            return Err(Recorded);
        };
        if !d.is_finite() {
            self.error_at(key, "finite_number", "Input should be a finite number", v);
            return Err(Recorded);
        }
        if d.is_negative() {
            self.error_at(
                key,
                "greater_than_equal",
                "Input should be greater than or equal to 0",
                v,
            );
            return Err(Recorded);
        }
        match d.to_numeric_text() {
            Ok(t) => Ok(Some(t)),
            Err(e) => {
                self.error_at(key, "value_error", format!("Value error, {key} {e}"), v);
                Err(Recorded)
            }
        }
    }
}

/// Python's `str()` of a JSON number.
fn number_str(n: &serde_json::Number) -> String {
    match (n.as_i64(), n.as_u64(), n.as_f64()) {
        (Some(i), _, _) => i.to_string(),
        (None, Some(u), _) => u.to_string(),
        (_, _, Some(f)) => python_float_repr(f),
        _ => n.to_string(),
    }
}

fn float_to_int(f: f64) -> Result<i64, (&'static str, &'static str)> {
    if !f.is_finite() {
        return Err(("finite_number", "Input should be a finite number"));
    }
    if f.fract() != 0.0 {
        return Err((
            "int_from_float",
            "Input should be a valid integer, got a number with a fractional part",
        ));
    }
    // 2^63 as f64; anything at or beyond it does not fit.
    if !(-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f) {
        return Err((
            "int_parsing_size",
            "Input should be a valid integer, unable to parse number as an integer",
        ));
    }
    #[allow(clippy::cast_possible_truncation)]
    Ok(f as i64)
}

/// pydantic's lax `str → int`: surrounding whitespace, a sign, digits, and an optional fraction
/// made only of zeros (`"12.00"`).
fn str_to_int(s: &str) -> Result<i64, (&'static str, &'static str)> {
    const PARSE: (&str, &str) = (
        "int_parsing",
        "Input should be a valid integer, unable to parse string as an integer",
    );
    let t = python_strip(s);
    let t = match t.split_once('.') {
        Some((int, frac)) if frac.bytes().all(|c| c == b'0') => int,
        Some(_) => return Err(PARSE),
        None => t,
    };
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(PARSE);
    }
    t.parse::<i64>().map_err(|_| {
        (
            "int_parsing_size",
            "Input should be a valid integer, unable to parse string as an integer",
        )
    })
}

fn lax_float(v: &Value) -> Result<f64, (&'static str, &'static str)> {
    match v {
        Value::Bool(b) => Ok(f64::from(u8::from(*b))),
        Value::Number(n) => n
            .as_f64()
            .ok_or(("float_type", "Input should be a valid number")),
        // pydantic reads a string as Python's `float()` does (whitespace, underscores, inf, nan).
        Value::String(s) => python_float_from_str(s).ok_or((
            "float_parsing",
            "Input should be a valid number, unable to parse string as a number",
        )),
        _ => Err(("float_type", "Input should be a valid number")),
    }
}

/// Python's `str.strip()` with no argument (Unicode whitespace, including `\x1c`–`\x1f`).
pub fn python_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn lax_ints() {
        let mut v = Validator::new();
        let o = obj(
            json!({"a": "1700000000000", "b": 1.7e12, "c": 1.5, "d": "x", "e": -1, "f": " 12.00 "}),
        );
        assert_eq!(v.opt_lax_int(&o, "a", None), Ok(Some(1_700_000_000_000)));
        assert_eq!(v.opt_lax_int(&o, "b", None), Ok(Some(1_700_000_000_000)));
        assert_eq!(v.opt_lax_int(&o, "f", None), Ok(Some(12)));
        assert!(v.opt_lax_int(&o, "c", None).is_err());
        assert!(v.opt_lax_int(&o, "d", None).is_err());
        assert!(v.opt_lax_int(&o, "e", Some(0)).is_err());
        assert_eq!(v.opt_lax_int(&o, "zz", None), Ok(None));
        let msgs: Vec<_> = v.errors.iter().map(|e| e.msg.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "Input should be a valid integer, got a number with a fractional part",
                "Input should be a valid integer, unable to parse string as an integer",
                "Input should be greater than or equal to 0"
            ]
        );
    }

    #[test]
    fn error_list_format() {
        let e = FieldError {
            kind: "greater_than",
            loc: vec![
                Loc::Key("transfer".into()),
                Loc::Key("credits".into()),
                Loc::Index(0),
                Loc::Key("amount".into()),
            ],
            msg: "Input should be greater than 0".into(),
            input: json!(0),
        };
        assert_eq!(
            format_errors(&[e]),
            "[{'type': 'greater_than', 'loc': ('transfer', 'credits', 0, 'amount'), 'msg': 'Input should be greater than 0', 'input': 0}]"
        );
        let single = FieldError {
            kind: "missing",
            loc: vec![Loc::Key("transfer".into())],
            msg: "Field required".into(),
            input: json!({}),
        };
        assert!(format_errors(&[single]).contains("'loc': ('transfer',)"));
    }
}
