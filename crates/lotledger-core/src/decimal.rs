//! Exact decimals as the reference handles them: Python's `Decimal` grammar on input, PostgreSQL
//! `NUMERIC` text on output, and Python's `str(float)` for float prices.

/// A value accepted by Python's `Decimal(str)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PyDecimal {
    /// `(-1)^negative × digits × 10^exponent`; `digits` are ASCII digits, possibly with leading zeros.
    Finite {
        negative: bool,
        digits: String,
        exponent: i64,
    },
    Infinite {
        negative: bool,
    },
    NaN,
}

/// Largest number of integer or fractional digits we store; far beyond any price, well inside
/// PostgreSQL `NUMERIC`'s limits, so both stores hold exactly the same values.
const MAX_DIGITS: i64 = 1000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("decimal value out of range (more than {MAX_DIGITS} digits)")]
    OutOfRange,
}

impl PyDecimal {
    /// Parses like Python's `Decimal(text)`: surrounding whitespace, sign, digits with optional
    /// `_` separators between digits, fraction, exponent, `Inf`/`Infinity`/`NaN`/`sNaN` in any case.
    pub fn parse(text: &str) -> Option<PyDecimal> {
        let t = text.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c));
        let (negative, body) = match t.as_bytes().first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        let lower = body.to_ascii_lowercase();
        if lower == "inf" || lower == "infinity" {
            return Some(PyDecimal::Infinite { negative });
        }
        for prefix in ["nan", "snan"] {
            if let Some(rest) = lower.strip_prefix(prefix)
                && rest.bytes().all(|c| c.is_ascii_digit())
            {
                return Some(PyDecimal::NaN);
            }
        }
        let (mantissa, exp_text) = match lower.find('e') {
            Some(i) => (&lower[..i], Some(&lower[i + 1..])),
            None => (lower.as_str(), None),
        };
        let (int_part, frac_part) = match mantissa.find('.') {
            Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
            None => (mantissa, ""),
        };
        let int_digits = digits_with_underscores(int_part)?;
        let frac_digits = digits_with_underscores(frac_part)?;
        if int_digits.is_empty() && frac_digits.is_empty() {
            return None;
        }
        let mut exponent: i64 = 0;
        if let Some(e) = exp_text {
            let (eneg, ebody) = match e.as_bytes().first() {
                Some(b'-') => (true, &e[1..]),
                Some(b'+') => (false, &e[1..]),
                _ => (false, e),
            };
            let edigits = digits_with_underscores(ebody)?;
            if edigits.is_empty() {
                return None;
            }
            let trimmed = edigits.trim_start_matches('0');
            // Exponents beyond 18 digits are out of any range we store; keep them recognisable.
            let value: i64 = if trimmed.len() > 18 {
                i64::MAX / 4
            } else {
                trimmed.parse().unwrap_or(0)
            };
            exponent = if eneg { -value } else { value };
        }
        let frac_len = i64::try_from(frac_digits.len()).ok()?;
        Some(PyDecimal::Finite {
            negative,
            digits: format!("{int_digits}{frac_digits}"),
            exponent: exponent.checked_sub(frac_len)?,
        })
    }

    pub fn is_negative(&self) -> bool {
        match self {
            PyDecimal::Finite {
                negative, digits, ..
            } => *negative && digits.bytes().any(|c| c != b'0'),
            PyDecimal::Infinite { negative } => *negative,
            PyDecimal::NaN => false,
        }
    }

    pub fn is_finite(&self) -> bool {
        matches!(self, PyDecimal::Finite { .. })
    }

    /// The text PostgreSQL prints for this value stored in a `NUMERIC` column: plain notation,
    /// scale = fractional digits of the input minus its exponent (never below 0), no negative zero.
    pub fn to_numeric_text(&self) -> Result<String, DecimalError> {
        let (negative, digits, exponent) = match self {
            PyDecimal::NaN => return Ok("NaN".to_string()),
            PyDecimal::Infinite { negative: true } => return Ok("-Infinity".to_string()),
            PyDecimal::Infinite { negative: false } => return Ok("Infinity".to_string()),
            PyDecimal::Finite {
                negative,
                digits,
                exponent,
            } => (*negative, digits.as_str(), *exponent),
        };
        let significant = digits.trim_start_matches('0');
        let sig_len = i64::try_from(significant.len()).map_err(|_| DecimalError::OutOfRange)?;
        let scale = exponent
            .checked_neg()
            .ok_or(DecimalError::OutOfRange)?
            .max(0);
        let int_len = if significant.is_empty() {
            0
        } else {
            sig_len.saturating_add(exponent)
        };
        if scale > MAX_DIGITS || int_len > MAX_DIGITS {
            return Err(DecimalError::OutOfRange);
        }
        // Integer and fraction digits of significant × 10^exponent.
        let mut all = significant.to_string();
        if exponent > 0 {
            all.push_str(
                &"0".repeat(usize::try_from(exponent).map_err(|_| DecimalError::OutOfRange)?),
            );
        }
        let scale_u = usize::try_from(scale).map_err(|_| DecimalError::OutOfRange)?;
        if all.len() < scale_u + 1 {
            all = format!("{}{all}", "0".repeat(scale_u + 1 - all.len()));
        }
        let split = all.len() - scale_u;
        let (int_s, frac_s) = all.split_at(split);
        let mut out = String::new();
        let is_zero = significant.is_empty();
        if negative && !is_zero {
            out.push('-');
        }
        out.push_str(int_s);
        if scale_u > 0 {
            out.push('.');
            out.push_str(frac_s);
        }
        Ok(out)
    }
}

fn digits_with_underscores(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some(String::new());
    }
    if s.starts_with('_') || s.ends_with('_') || s.contains("__") {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '0'..='9' => out.push(c),
            '_' => {}
            _ => return None,
        }
    }
    Some(out)
}

/// Python's `str(Decimal(numeric_text))` for a PostgreSQL `NUMERIC` text (what pydantic
/// writes for a decimal read from the database): plain notation unless the adjusted exponent
/// is below -6 (`0.0000001` → `1E-7`). Text that is not plain `NUMERIC` is returned as is.
pub fn python_decimal_str(numeric_text: &str) -> String {
    let (sign, body) = match numeric_text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", numeric_text),
    };
    let (int_part, frac) = body.split_once('.').unwrap_or((body, ""));
    if int_part.is_empty()
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return numeric_text.to_string();
    }
    let all: String = format!("{int_part}{frac}");
    let digits = all.trim_start_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let exponent = -(frac.len() as i64);
    let adjusted = exponent + digits.len() as i64 - 1;
    if adjusted >= -6 {
        return numeric_text.to_string();
    }
    let (first, rest) = digits.split_at(1);
    if rest.is_empty() {
        format!("{sign}{first}E{adjusted}")
    } else {
        format!("{sign}{first}.{rest}E{adjusted}")
    }
}

/// Python's `float(text)` for a string: surrounding whitespace stripped, an optional sign, then
/// `inf`/`infinity`/`nan` (any case) or a decimal literal whose underscores each sit between two
/// digits. The value is correctly rounded, as Python's. `None` where Python raises `ValueError`.
pub fn python_float_from_str(text: &str) -> Option<f64> {
    let t = crate::validate::python_strip(text);
    let b = t.as_bytes();
    let mut cleaned = String::with_capacity(t.len());
    for (i, &c) in b.iter().enumerate() {
        if c == b'_' {
            let digit_at =
                |j: Option<usize>| j.and_then(|j| b.get(j)).is_some_and(u8::is_ascii_digit);
            if !(digit_at(i.checked_sub(1)) && digit_at(Some(i + 1))) {
                return None;
            }
        } else if c.is_ascii() {
            cleaned.push(char::from(c));
        } else {
            return None;
        }
    }
    let body = cleaned.strip_prefix(['+', '-']).unwrap_or(&cleaned);
    let named = ["inf", "infinity", "nan"].contains(&body.to_ascii_lowercase().as_str());
    if !named
        && !body
            .bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    cleaned.parse::<f64>().ok()
}

/// Python's `repr(float)` (= `str(float)`): shortest round-trip digits, scientific notation when
/// the decimal exponent is below -4 or at least 16 (`1e-06`, `1e+16`), else fixed with a `.0`.
pub fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".to_string();
    }
    if x.is_infinite() {
        return if x > 0.0 {
            "inf".to_string()
        } else {
            "-inf".to_string()
        };
    }
    if x == 0.0 {
        return if x.is_sign_negative() {
            "-0.0".to_string()
        } else {
            "0.0".to_string()
        };
    }
    // Rust's `{:e}` prints the shortest round-trip digits: `d[.ddd]e[-]x`.
    let sci = format!("{:e}", x.abs());
    let (mant, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i64 = exp.parse().unwrap_or(0);
    let digits: String = mant.chars().filter(char::is_ascii_digit).collect();
    let sign = if x < 0.0 { "-" } else { "" };
    if !(-4..16).contains(&exp) {
        let mut m = digits[..1].to_string();
        if digits.len() > 1 {
            m.push('.');
            m.push_str(&digits[1..]);
        }
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{m}e{esign}{:02}", exp.abs());
    }
    let n = digits.len() as i64;
    if exp < 0 {
        let zeros = "0".repeat(usize::try_from(-exp - 1).unwrap_or(0));
        format!("{sign}0.{zeros}{digits}")
    } else if exp + 1 >= n {
        let zeros = "0".repeat(usize::try_from(exp + 1 - n).unwrap_or(0));
        format!("{sign}{digits}{zeros}.0")
    } else {
        let point = usize::try_from(exp + 1).unwrap_or(0);
        format!("{sign}{}.{}", &digits[..point], &digits[point..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_str_like_python() {
        for (numeric, python) in [
            ("0.000001", "0.000001"),
            ("0.0000001", "1E-7"),
            ("0.00000012", "1.2E-7"),
            ("-0.00000010", "-1.0E-7"),
            ("0.0000000", "0E-7"),
            ("512.25", "512.25"),
            ("5", "5"),
            ("1.0", "1.0"),
        ] {
            assert_eq!(python_decimal_str(numeric), python, "{numeric}");
        }
    }

    fn norm(s: &str) -> String {
        PyDecimal::parse(s).unwrap().to_numeric_text().unwrap()
    }

    #[test]
    fn numeric_text_like_postgres() {
        assert_eq!(norm("0.000001"), "0.000001");
        assert_eq!(norm("1e-06"), "0.000001");
        assert_eq!(norm("1.50"), "1.50");
        assert_eq!(norm("1.5e3"), "1500");
        assert_eq!(norm("1.50e1"), "15.0");
        assert_eq!(norm(" 42 "), "42");
        assert_eq!(norm("-0.00"), "0.00");
        assert_eq!(norm(".5"), "0.5");
        assert_eq!(norm("5."), "5");
        assert_eq!(norm("1_000"), "1000");
        assert_eq!(norm("NaN"), "NaN");
        assert_eq!(norm("-inf"), "-Infinity");
        assert_eq!(norm("2048.5"), "2048.5");
        assert!(PyDecimal::parse("not-a-number").is_none());
        assert!(PyDecimal::parse("").is_none());
        assert!(PyDecimal::parse("1e").is_none());
        assert!(PyDecimal::parse("1__0").is_none());
        assert!(
            PyDecimal::parse("1e999999")
                .unwrap()
                .to_numeric_text()
                .is_err()
        );
    }

    #[test]
    fn float_repr_like_python() {
        assert_eq!(python_float_repr(0.000001), "1e-06");
        assert_eq!(python_float_repr(1.0), "1.0");
        assert_eq!(python_float_repr(0.001), "0.001");
        assert_eq!(python_float_repr(0.0001), "0.0001");
        assert_eq!(python_float_repr(1e16), "1e+16");
        assert_eq!(python_float_repr(1.5e16), "1.5e+16");
        assert_eq!(python_float_repr(123456789012345.6), "123456789012345.6");
        assert_eq!(python_float_repr(2048.5), "2048.5");
        assert_eq!(python_float_repr(-0.5), "-0.5");
        assert_eq!(python_float_repr(100.0), "100.0");
    }
}
