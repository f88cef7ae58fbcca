//! `Timestamp`: an instant in UTC, in microseconds since the Unix epoch.
//!
//! The conversions from Aleph's float seconds and integer milliseconds reproduce Python's
//! `datetime.fromtimestamp(x, UTC)` (round-half-even to the microsecond), and the valid range is
//! Python's (years 1 to 9999), so that every instant we accept is one the reference accepts.

use std::fmt;

/// Microseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

const MICROS_PER_SECOND: i64 = 1_000_000;
/// 0001-01-01T00:00:00Z.
const MIN_MICROS: i64 = -62_135_596_800 * MICROS_PER_SECOND;
/// 9999-12-31T23:59:59.999999Z.
const MAX_MICROS: i64 = 253_402_300_800 * MICROS_PER_SECOND - 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("timestamp is not a finite number")]
    NotFinite,
    #[error("timestamp out of range (years 1 to 9999)")]
    OutOfRange,
    #[error("invalid RFC 3339 timestamp: {0}")]
    Syntax(String),
}

impl Timestamp {
    pub const UNIX_EPOCH: Timestamp = Timestamp(0);

    /// From microseconds since the epoch; fails outside years 1..=9999.
    pub fn from_micros(micros: i64) -> Result<Timestamp, TimestampError> {
        if (MIN_MICROS..=MAX_MICROS).contains(&micros) {
            Ok(Timestamp(micros))
        } else {
            Err(TimestampError::OutOfRange)
        }
    }

    pub fn as_micros(self) -> i64 {
        self.0
    }

    pub fn from_unix_seconds(seconds: i64) -> Result<Timestamp, TimestampError> {
        seconds
            .checked_mul(MICROS_PER_SECOND)
            .ok_or(TimestampError::OutOfRange)
            .and_then(Timestamp::from_micros)
    }

    /// Epoch seconds as Python's `datetime.timestamp()` gives them: the correctly rounded float
    /// of micros / 10^6.
    pub fn as_unix_seconds_f64(self) -> f64 {
        let micros = self.as_micros();
        let sign = if micros < 0 { "-" } else { "" };
        let abs = micros.unsigned_abs();
        // Parsing the exact decimal quotient rounds it correctly, as Python's int / int does.
        format!("{sign}{}.{:06}", abs / 1_000_000, abs % 1_000_000)
            .parse()
            .unwrap_or(micros as f64 / 1e6)
    }

    /// Python's `datetime.fromtimestamp(seconds, timezone.utc)` for a float: split into integer
    /// and fractional parts, round the fraction to microseconds half-to-even, carry.
    pub fn from_unix_seconds_f64(seconds: f64) -> Result<Timestamp, TimestampError> {
        if !seconds.is_finite() {
            return Err(TimestampError::NotFinite);
        }
        let mut int_part = seconds.trunc();
        let mut frac_micros = ((seconds - int_part) * 1e6).round_ties_even();
        if frac_micros >= 1e6 {
            frac_micros -= 1e6;
            int_part += 1.0;
        } else if frac_micros < 0.0 {
            frac_micros += 1e6;
            int_part -= 1.0;
        }
        // Years 1..=9999 are well inside the exactly representable range of f64 integers.
        if !(-62_135_596_800.0..=253_402_300_799.0).contains(&int_part) {
            return Err(TimestampError::OutOfRange);
        }
        #[allow(clippy::cast_possible_truncation)]
        let micros = (int_part as i64) * MICROS_PER_SECOND + frac_micros as i64;
        Timestamp::from_micros(micros)
    }

    /// An Aleph expiration in milliseconds: Python's `fromtimestamp(ms / 1000)`.
    pub fn from_unix_millis_python(millis: i64) -> Result<Timestamp, TimestampError> {
        // `ms / 1000` is a correctly rounded float division in Python; for every value whose
        // result is within years 1..=9999, `millis` is below 2^53 and converts exactly.
        if millis.unsigned_abs() > (1u64 << 53) {
            return Err(TimestampError::OutOfRange);
        }
        #[allow(clippy::cast_precision_loss)]
        let seconds = millis as f64 / 1000.0;
        Timestamp::from_unix_seconds_f64(seconds)
    }

    fn civil(self) -> (i64, u32, u32, u32, u32, u32, u32) {
        let secs = self.0.div_euclid(MICROS_PER_SECOND);
        let micros = u32::try_from(self.0.rem_euclid(MICROS_PER_SECOND)).unwrap_or(0);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let h = u32::try_from(sod / 3600).unwrap_or(0);
        let mi = u32::try_from((sod % 3600) / 60).unwrap_or(0);
        let s = u32::try_from(sod % 60).unwrap_or(0);
        (y, m, d, h, mi, s, micros)
    }

    /// RFC 3339 in UTC with `Z`; fractional seconds only when not zero, trailing zeros trimmed
    /// (`2026-03-01T00:00:00Z`, `2026-03-01T00:00:00.5Z`).
    pub fn to_rfc3339(self) -> String {
        let (y, m, d, h, mi, s, micros) = self.civil();
        let mut out = format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
        if micros != 0 {
            let frac = format!("{micros:06}");
            out.push('.');
            out.push_str(frac.trim_end_matches('0'));
        }
        out.push('Z');
        out
    }

    /// ISO 8601 as pydantic prints an aware UTC datetime: `2026-03-01T00:00:00Z`, and with
    /// six fractional digits when microseconds are present (`…T00:00:00.123000Z`).
    pub fn to_iso_pydantic(self) -> String {
        let (y, m, d, h, mi, s, micros) = self.civil();
        if micros == 0 {
            format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
        } else {
            format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{micros:06}Z")
        }
    }

    /// Python's `datetime.isoformat()` for an aware UTC datetime (`…+00:00`).
    pub fn to_iso_python(self) -> String {
        let (y, m, d, h, mi, s, micros) = self.civil();
        if micros == 0 {
            format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}+00:00")
        } else {
            format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{micros:06}+00:00")
        }
    }

    /// Parses RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`); `t`/space separators and a
    /// lower-case `z` are accepted. Fractions beyond microseconds are truncated.
    pub fn parse_rfc3339(text: &str) -> Result<Timestamp, TimestampError> {
        let err = || TimestampError::Syntax(text.to_string());
        let b = text.as_bytes();
        if b.len() < 20 {
            return Err(err());
        }
        let num = |range: std::ops::Range<usize>| -> Result<i64, TimestampError> {
            let part = text.get(range).ok_or_else(err)?;
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return Err(err());
            }
            part.parse::<i64>().map_err(|_| err())
        };
        let sep = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
        if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
            return Err(err());
        }
        let (y, mo, d, h, mi, s) = (
            num(0..4)?,
            num(5..7)?,
            num(8..10)?,
            num(11..13)?,
            num(14..16)?,
            num(17..19)?,
        );
        if !(1..=12).contains(&mo)
            || d < 1
            || d > days_in_month(y, mo)
            || h > 23
            || mi > 59
            || s > 59
        {
            return Err(err());
        }
        let mut i = 19;
        let mut micros = 0i64;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == start {
                return Err(err());
            }
            let digits = text.get(start..i).ok_or_else(err)?;
            let mut padded: String = digits.chars().take(6).collect();
            while padded.len() < 6 {
                padded.push('0');
            }
            micros = padded.parse::<i64>().map_err(|_| err())?;
        }
        let offset_secs = match b.get(i) {
            Some(b'Z' | b'z') if i + 1 == b.len() => 0,
            Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b.get(i + 3) == Some(&b':') => {
                let oh = num(i + 1..i + 3)?;
                let om = num(i + 4..i + 6)?;
                if oh > 23 || om > 59 {
                    return Err(err());
                }
                let o = oh * 3600 + om * 60;
                if *sign == b'-' { -o } else { o }
            }
            _ => return Err(err()),
        };
        let days = days_from_civil(y, mo, d);
        let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset_secs;
        Timestamp::from_micros(secs * MICROS_PER_SECOND + micros)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        for text in [
            "2026-03-01T00:00:00Z",
            "2026-03-01T00:00:00.5Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999Z",
            "1969-12-31T23:59:59.25Z",
        ] {
            let ts = Timestamp::parse_rfc3339(text).unwrap();
            assert_eq!(ts.to_rfc3339(), text);
        }
        assert_eq!(
            Timestamp::parse_rfc3339("2026-03-01T00:00:00+01:00")
                .unwrap()
                .to_rfc3339(),
            "2026-02-28T23:00:00Z"
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2026-03-01T00:00:00Z")
                .unwrap()
                .as_micros(),
            1_772_323_200_000_000
        );
        assert!(Timestamp::parse_rfc3339("2026-02-30T00:00:00Z").is_err());
        assert!(Timestamp::parse_rfc3339("2026-03-01 00:00:00").is_err());
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
    }

    #[test]
    fn python_float_conversion() {
        assert_eq!(
            Timestamp::from_unix_seconds_f64(1672574400.0)
                .unwrap()
                .to_rfc3339(),
            "2023-01-01T12:00:00Z"
        );
        assert_eq!(
            Timestamp::from_unix_seconds_f64(1.0000005)
                .unwrap()
                .as_micros(),
            1_000_001
        );
        assert_eq!(
            Timestamp::from_unix_seconds_f64(1.0000025)
                .unwrap()
                .as_micros(),
            1_000_002
        );
        assert_eq!(
            Timestamp::from_unix_seconds_f64(-0.5).unwrap().as_micros(),
            -500_000
        );
        assert_eq!(
            Timestamp::from_unix_millis_python(1_700_000_000_123)
                .unwrap()
                .as_micros(),
            1_700_000_000_123_000
        );
        assert_eq!(
            Timestamp::from_unix_millis_python(1_700_000_000_000)
                .unwrap()
                .to_rfc3339(),
            "2023-11-14T22:13:20Z"
        );
        assert!(Timestamp::from_unix_seconds_f64(f64::NAN).is_err());
        assert!(Timestamp::from_unix_seconds_f64(1e20).is_err());
        assert!(Timestamp::from_unix_millis_python(i64::MAX).is_err());
    }

    #[test]
    fn pydantic_and_python_iso() {
        let ts = Timestamp::from_micros(1_772_323_200_123_000).unwrap();
        assert_eq!(ts.to_iso_pydantic(), "2026-03-01T00:00:00.123000Z");
        assert_eq!(ts.to_iso_python(), "2026-03-01T00:00:00.123000+00:00");
    }
}
