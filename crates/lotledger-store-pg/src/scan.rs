//! A maintenance batch read by ids for [`lotledger_store::scan`]: the batch's address ids,
//! then its history rows and lots by `address_id = ANY(…)` streamed as binary `COPY` (no
//! join, no text and no row decoding per row: each tuple is a few big-endian integers), then
//! the texts of the references they name.

use std::collections::HashMap;
use std::fmt::Write as _;

use futures_util::StreamExt as _;
use lotledger_core::Policy;
use lotledger_store::StoreError;
use lotledger_store::scan::{Entry, IdMap, Pass, SlotTable, Slotted};
use sqlx::PgConnection;

use crate::wrappers::{db_err, ref_text};

/// µs from the Unix epoch to PostgreSQL's (2000-01-01T00:00:00Z), the origin of a binary
/// `timestamptz`.
pub(crate) const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The 11-byte signature that opens a binary `COPY` stream.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

fn malformed(what: &str) -> StoreError {
    StoreError::Corrupt(format!("binary COPY stream: {what}"))
}

/// A field of a tuple: its bytes, or `None` for NULL.
type Field<'b> = Option<&'b [u8]>;

fn int(field: Field<'_>, what: &str) -> Result<i64, StoreError> {
    match field {
        Some(b) if b.len() == 8 => Ok(i64::from_be_bytes(
            b.try_into().map_err(|_| malformed(what))?,
        )),
        Some(b) if b.len() == 4 => Ok(i64::from(i32::from_be_bytes(
            b.try_into().map_err(|_| malformed(what))?,
        ))),
        _ => Err(malformed(what)),
    }
}

/// A binary `timestamptz` as µs since the Unix epoch.
fn instant(field: Field<'_>, what: &str) -> Result<i64, StoreError> {
    int(field, what)?
        .checked_add(PG_EPOCH_MICROS)
        .ok_or_else(|| malformed(what))
}

/// Parses the complete tuples at the front of `buf` (after the header, once `header` is
/// done), handing each one's fields to `each`. Returns how many bytes were consumed and
/// whether the trailer was seen.
fn parse(
    buf: &[u8],
    header: &mut bool,
    fields: &mut Vec<(usize, Option<usize>)>,
    each: &mut impl FnMut(&[Field<'_>]) -> Result<(), StoreError>,
) -> Result<(usize, bool), StoreError> {
    let mut at = 0usize;
    let take = |at: usize, n: usize| buf.get(at..at.checked_add(n)?);
    if !*header {
        let fixed = SIGNATURE.len() + 8;
        let Some(head) = take(0, fixed) else {
            return Ok((0, false));
        };
        if head.get(..SIGNATURE.len()) != Some(SIGNATURE) {
            return Err(malformed("no signature"));
        }
        let ext = head
            .get(fixed - 4..)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| malformed("header"))?;
        let ext = usize::try_from(ext).map_err(|_| malformed("header extension"))?;
        if take(fixed, ext).is_none() {
            return Ok((0, false));
        }
        at = fixed + ext;
        *header = true;
    }
    let mut refs: Vec<Field<'_>> = Vec::new();
    loop {
        let Some(count) = take(at, 2).and_then(|b| <[u8; 2]>::try_from(b).ok()) else {
            return Ok((at, false));
        };
        let count = i16::from_be_bytes(count);
        if count == -1 {
            return Ok((at + 2, true));
        }
        let count = usize::try_from(count).map_err(|_| malformed("field count"))?;
        let mut pos = at + 2;
        fields.clear();
        for _ in 0..count {
            let Some(len) = take(pos, 4).and_then(|b| <[u8; 4]>::try_from(b).ok()) else {
                return Ok((at, false));
            };
            let len = i32::from_be_bytes(len);
            pos += 4;
            if len < 0 {
                fields.push((pos, None));
                continue;
            }
            let len = usize::try_from(len).map_err(|_| malformed("field length"))?;
            if take(pos, len).is_none() {
                return Ok((at, false));
            }
            fields.push((pos, Some(len)));
            pos += len;
        }
        refs.clear();
        refs.extend(
            fields
                .iter()
                .map(|(start, len)| len.and_then(|n| take(*start, n))),
        );
        each(&refs)?;
        at = pos;
    }
}

/// Runs `COPY (query) TO STDOUT (FORMAT binary)` and hands each tuple's fields to `each`.
async fn copy_out(
    conn: &mut PgConnection,
    query: &str,
    mut each: impl FnMut(&[Field<'_>]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut stream = conn
        .copy_out_raw(&format!("COPY ({query}) TO STDOUT (FORMAT binary)"))
        .await
        .map_err(db_err)?;
    let mut buf: Vec<u8> = Vec::new();
    let mut header = false;
    let mut fields = Vec::new();
    let mut ended = false;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(db_err)?;
        if ended {
            return Err(malformed("data after the trailer"));
        }
        buf.extend_from_slice(&chunk);
        let (used, trailer) = parse(&buf, &mut header, &mut fields, &mut each)?;
        buf.drain(..used);
        ended = trailer;
    }
    if !ended || !buf.is_empty() {
        return Err(malformed("ends inside a tuple"));
    }
    Ok(())
}

/// `ids` as a PostgreSQL array literal (integers only: nothing to quote).
fn id_array(ids: &[i64]) -> String {
    let mut s = String::with_capacity(ids.len() * 8 + 16);
    s.push_str("'{");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{id}");
    }
    s.push_str("}'::bigint[]");
    s
}

/// The rows of `table` (`amount` its amount column) for the pass's address ids, each under its
/// address's slot.
async fn slotted(
    conn: &mut PgConnection,
    table: &str,
    amount: &str,
    policy: &str,
    ids: &str,
    slots: &SlotTable,
) -> Result<Vec<Slotted>, StoreError> {
    let mut out = Vec::new();
    let query = format!(
        "SELECT address_id, message_timestamp, ref_id, credit_index, {amount}, expiration_date, \
         {policy} FROM {table} WHERE address_id = ANY({ids})"
    );
    copy_out(conn, &query, |f| {
        let [address_id, ts, ref_id, index, amount, expiry, policy] = f else {
            return Err(malformed("not seven fields"));
        };
        let Some(slot) = slots.get(int(*address_id, "address_id")?) else {
            return Ok(());
        };
        let index =
            i32::try_from(int(*index, "credit_index")?).map_err(|_| malformed("credit_index"))?;
        out.push((
            slot,
            Entry {
                ts: instant(*ts, "message_timestamp")?,
                ref_id: int(*ref_id, "ref_id")?,
                index,
                amount: int(*amount, "amount")?,
                expiry: match expiry {
                    None => None,
                    Some(_) => Some(instant(*expiry, "expiration_date")?),
                },
                policy: Policy::from_code(int(*policy, "policy")?)
                    .ok_or_else(|| malformed("policy"))?,
            },
        ));
        Ok(())
    })
    .await?;
    Ok(out)
}

/// Reads the history rows, lots and reference texts of `addresses` on `conn` (in the caller's
/// transaction, so that they are one snapshot).
pub async fn load<'a>(
    conn: &mut PgConnection,
    addresses: &'a [String],
) -> Result<Pass<'a>, StoreError> {
    let position: HashMap<&str, usize> = addresses
        .iter()
        .enumerate()
        .map(|(i, a)| (a.as_str(), i))
        .collect();
    let found: Vec<(String, i64)> =
        sqlx::query_as("SELECT address, id FROM addresses WHERE address = ANY($1::text[])")
            .bind(addresses)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?;
    let mut ids = vec![None; addresses.len()];
    for (address, id) in found {
        if let Some(slot) = position.get(address.as_str()).and_then(|i| ids.get_mut(*i)) {
            *slot = Some(id);
        }
    }
    let id_list: Vec<i64> = ids.iter().flatten().copied().collect();
    let literal = id_array(&id_list);
    let slots = SlotTable::new(&ids);
    let history = slotted(conn, "credit_history", "amount", "policy", &literal, &slots).await?;
    let lots = slotted(
        conn,
        "credit_lots",
        "amount_remaining",
        "1",
        &literal,
        &slots,
    )
    .await?;
    let mut pass = Pass::new(addresses, ids, history, lots);
    let mut wanted: IdMap<Option<String>> = pass.wanted_refs()?;
    let ref_ids: Vec<i64> = wanted.keys().copied().collect();
    let texts: Vec<(i64, Option<Vec<u8>>, Option<String>)> = if ref_ids.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as("SELECT id, hash, name FROM refs WHERE id = ANY($1::bigint[])")
            .bind(&ref_ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?
    };
    for (id, hash, name) in texts {
        if let Some(text) = wanted.get_mut(&id) {
            *text = ref_text(hash, name);
        }
    }
    pass.set_refs(wanted)?;
    Ok(pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(fields: &[Option<&[u8]>]) -> Vec<u8> {
        let mut out = i16::try_from(fields.len()).unwrap().to_be_bytes().to_vec();
        for f in fields {
            match f {
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(b) => {
                    out.extend_from_slice(&i32::try_from(b.len()).unwrap().to_be_bytes());
                    out.extend_from_slice(b);
                }
            }
        }
        out
    }

    /// Tuples split anywhere across chunks parse the same; NULLs and the trailer are seen.
    #[test]
    fn binary_copy_parses_across_any_split() {
        let mut stream = SIGNATURE.to_vec();
        stream.extend_from_slice(&0u32.to_be_bytes());
        stream.extend_from_slice(&4u32.to_be_bytes());
        stream.extend_from_slice(b"ext!");
        let one = 7i64.to_be_bytes();
        let two = (-3i32).to_be_bytes();
        stream.extend(tuple(&[Some(&one), None, Some(&two)]));
        stream.extend(tuple(&[Some(b""), Some(&one), None]));
        stream.extend_from_slice(&(-1i16).to_be_bytes());
        for split in 0..=stream.len() {
            let (a, b) = stream.split_at(split);
            let mut seen: Vec<Vec<Option<Vec<u8>>>> = Vec::new();
            let mut each = |f: &[Field<'_>]| {
                seen.push(f.iter().map(|x| x.map(<[u8]>::to_vec)).collect());
                Ok(())
            };
            let (mut header, mut fields) = (false, Vec::new());
            let mut buf = a.to_vec();
            let (used, first_end) = parse(&buf, &mut header, &mut fields, &mut each).unwrap();
            buf.drain(..used);
            assert!(!first_end || split == stream.len());
            buf.extend_from_slice(b);
            let (used, end) = parse(&buf, &mut header, &mut fields, &mut each).unwrap();
            assert!(first_end || end, "split at {split}");
            assert_eq!(used, buf.len());
            assert_eq!(seen.len(), 2, "split at {split}");
            assert_eq!(seen[0], [Some(one.to_vec()), None, Some(two.to_vec())]);
            assert_eq!(seen[1], [Some(vec![]), Some(one.to_vec()), None]);
        }
        assert_eq!(int(Some(&one), "x").unwrap(), 7);
        assert_eq!(int(Some(&two), "x").unwrap(), -3);
        assert!(int(None, "x").is_err() && int(Some(b"abc"), "x").is_err());
        let mut bad = b"NOTCOPY\n\xff\r\n\0".to_vec();
        bad.extend_from_slice(&[0; 8]);
        let mut each = |_: &[Field<'_>]| Ok(());
        assert!(parse(&bad, &mut false, &mut Vec::new(), &mut each).is_err());
    }
}
