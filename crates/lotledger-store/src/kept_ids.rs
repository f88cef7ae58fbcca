//! Interned ids kept across a store's transactions. A committed row of `addresses` or `refs`
//! keeps its id forever (no row of either table is deleted or renumbered, on either store), so
//! a writer that resolved an address or a reference once need not look it up again. Only ids
//! a transaction resolved and then committed may be kept: one it interned and rolled back
//! names no row.

use foldhash::HashMap;

/// Entries (addresses and references) kept at most, about 100 bytes each: past it, the map
/// is emptied and refills from the next transactions.
pub const KEPT_IDS_MAX: usize = 400_000;

/// The ids of committed addresses and references, by their text.
#[derive(Debug, Default)]
pub struct KeptIds {
    addresses: HashMap<String, i64>,
    refs: HashMap<String, i64>,
}

impl KeptIds {
    pub fn address(&self, address: &str) -> Option<i64> {
        self.addresses.get(address).copied()
    }

    pub fn reference(&self, reference: &str) -> Option<i64> {
        self.refs.get(reference).copied()
    }

    /// Keeps the ids a transaction that has just committed resolved.
    pub fn keep(
        &mut self,
        addresses: impl IntoIterator<Item = (String, i64)>,
        refs: impl IntoIterator<Item = (String, i64)>,
    ) {
        if self.addresses.len() + self.refs.len() > KEPT_IDS_MAX {
            *self = KeptIds::default();
        }
        self.addresses.extend(addresses);
        self.refs.extend(refs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_ids_are_found_and_emptied_past_the_bound() {
        let mut kept = KeptIds::default();
        kept.keep([("0xa".to_string(), 1)], [("h".to_string(), 7)]);
        assert_eq!(kept.address("0xa"), Some(1));
        assert_eq!(kept.reference("h"), Some(7));
        assert_eq!(kept.address("h"), None);
        let many = (0..=KEPT_IDS_MAX as i64).map(|i| (format!("r{i}"), i));
        kept.keep([], many);
        assert_eq!(
            kept.reference("h"),
            Some(7),
            "emptied only at the next keep"
        );
        kept.keep([("0xb".to_string(), 2)], []);
        assert_eq!(kept.reference("h"), None);
        assert_eq!(kept.address("0xb"), Some(2));
    }
}
