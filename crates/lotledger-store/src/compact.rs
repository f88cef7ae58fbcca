//! Texts kept compactly (history's `tx_hash`, `origin` and `origin_ref`, since migration 0007):
//! hashes and addresses are hex, and hex stored as its bytes takes half the room.
//!
//! A stored value is one tag byte, then:
//! - [`HEX`]: the bytes of a text that is lower-case hex digits, an even number of them, at
//!   least two (`00ff`, a 64-digit item hash);
//! - [`HEX_0X`]: the bytes of a text that is `0x` followed by such digits (a transaction hash,
//!   an EVM address in lower case);
//! - [`TEXT`]: the text's UTF-8 bytes (anything else: upper-case hex, odd lengths, names, `""`).
//!
//! The mapping is one-to-one, so equality of texts is equality of stored values (the
//! consumed-credits index compares them), but it keeps no order: never sort by a stored value.
//! Both stores' migration 0007 compute the same mapping in SQL; the migration test checks
//! they agree with [`encode`] on texts of every shape.

use crate::{StoreError, lower_hex_digit};

/// Tag of a text kept as its UTF-8 bytes.
pub const TEXT: u8 = 0;
/// Tag of lower-case hex kept as its bytes.
pub const HEX: u8 = 1;
/// Tag of `0x` and lower-case hex kept as its bytes.
pub const HEX_0X: u8 = 2;

/// Appends the bytes of `digits` to `out` when they are lower-case hex, an even number of them,
/// at least two; otherwise leaves `out` as it was and says so.
fn push_hex_bytes(digits: &[u8], out: &mut Vec<u8>) -> bool {
    if digits.is_empty() || !digits.len().is_multiple_of(2) {
        return false;
    }
    let start = out.len();
    for pair in digits.chunks_exact(2) {
        match (lower_hex_digit(pair[0]), lower_hex_digit(pair[1])) {
            (Some(high), Some(low)) => out.push((high << 4) | low),
            _ => {
                out.truncate(start);
                return false;
            }
        }
    }
    true
}

/// The stored form of `text` (one allocation: history's inserts encode three per row).
pub fn encode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() / 2 + 2);
    out.push(HEX);
    if push_hex_bytes(text.as_bytes(), &mut out) {
        return out;
    }
    if let Some(digits) = text.strip_prefix("0x") {
        out[0] = HEX_0X;
        if push_hex_bytes(digits.as_bytes(), &mut out) {
            return out;
        }
    }
    out[0] = TEXT;
    out.extend_from_slice(text.as_bytes());
    out
}

/// `prefix`, then `bytes` as lower-case hex digits.
pub fn lower_hex(prefix: &str, bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(prefix.len() + bytes.len() * 2);
    s.push_str(prefix);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// The text a stored value holds.
pub fn decode(stored: &[u8]) -> Result<String, StoreError> {
    match stored.split_first() {
        Some((&TEXT, body)) => String::from_utf8(body.to_vec())
            .map_err(|_| StoreError::Corrupt("a stored text is not UTF-8".into())),
        Some((&HEX, body)) if !body.is_empty() => Ok(lower_hex("", body)),
        Some((&HEX_0X, body)) if !body.is_empty() => Ok(lower_hex("0x", body)),
        _ => Err(StoreError::Corrupt(format!(
            "a stored text has an unknown form ({} bytes, tag {:?})",
            stored.len(),
            stored.first()
        ))),
    }
}

/// How many bytes of a resource the consumed-credits index keys it by (migration 0009).
pub const RESOURCE_KEY_BYTES: usize = 8;

/// The key the consumed-credits index gives an expense row's resource (a stored value): its
/// last [`RESOURCE_KEY_BYTES`] bytes (of a hash, random; of hashes made by counting, the
/// count), the whole value when it is not longer. Both stores' migration 0009 index the same
/// expression; `pooled::resource_key_sql` writes it for the reads.
pub fn resource_key(stored: &[u8]) -> &[u8] {
    stored
        .split_at(stored.len().saturating_sub(RESOURCE_KEY_BYTES))
        .1
}

/// [`decode`] of a column that may be NULL.
pub fn decode_opt(stored: Option<&[u8]>) -> Result<Option<String>, StoreError> {
    stored.map(decode).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_round_trips_and_hex_halves() {
        let cases = [
            ("", TEXT, 1),
            ("00ff", HEX, 3),
            ("0x", TEXT, 3),
            ("0x0", TEXT, 4),
            ("0x00", HEX_0X, 2),
            ("abc", TEXT, 4),
            ("ABCDEF", TEXT, 7),
            ("0xABCDEF", TEXT, 9),
            ("Ab12", TEXT, 5),
            ("job-5", TEXT, 6),
            ("0x0x00", TEXT, 7),
            ("é", TEXT, 3),
        ];
        for (text, tag, len) in cases {
            let stored = encode(text);
            assert_eq!((stored[0], stored.len()), (tag, len), "{text:?}");
            assert_eq!(decode(&stored).unwrap(), text);
        }
        let hash = "c".repeat(64);
        assert_eq!(encode(&hash).len(), 33);
        let tx = format!("0x{}", "ab".repeat(32));
        assert_eq!(encode(&tx).len(), 33);
        assert_eq!(decode(&encode(&tx)).unwrap(), tx);
    }

    #[test]
    fn a_resource_is_keyed_by_its_last_bytes() {
        let hash = encode(&format!("{:064x}", 7));
        assert_eq!(resource_key(&hash), &[0, 0, 0, 0, 0, 0, 0, 7]);
        let name = encode("job-5");
        assert_eq!(resource_key(&name), &name[..]);
        let eight = encode("0x00112233445566");
        assert_eq!(eight.len(), RESOURCE_KEY_BYTES);
        assert_eq!(resource_key(&eight), &eight[..]);
        assert_eq!(resource_key(&encode("")), &[TEXT]);
    }

    #[test]
    fn malformed_stored_values_are_errors() {
        for bad in [&[][..], &[HEX], &[HEX_0X], &[7, 1], &[TEXT, 0xff]] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }
}
