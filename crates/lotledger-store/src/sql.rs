//! The SELECTs and orders both stores run, written once around what differs by dialect: the
//! caller names its macro that turns the `refs` row aliased `r` into the reference's text (the
//! stores keep a reference as bytes or text), and gives PostgreSQL's `NUMERIC` columns as text.
//! The row mappings (`wrappers` in each store) read the columns by these names.

/// History rows (`h`): `sql_history_select!(ref_text, "h.price", "h.expense_size_mib")`.
#[macro_export]
macro_rules! sql_history_select {
    ($ref_text:ident, $price:literal, $size:literal) => {
        concat!(
            "SELECT a.address, h.amount, ",
            $price,
            " AS price, h.bonus_amount, h.tx_hash, h.token, h.chain, h.provider, h.origin, \
             h.origin_ref, h.payment_method, ",
            $ref_text!(),
            " AS credit_ref, h.credit_index, h.expiration_date, h.message_timestamp, \
             h.expense_count, ",
            $size,
            " AS expense_size_mib, h.policy FROM credit_history h \
             JOIN addresses a ON a.id = h.address_id JOIN refs r ON r.id = h.ref_id"
        )
    };
}

/// Lots (`l`).
#[macro_export]
macro_rules! sql_lot_select {
    ($ref_text:ident) => {
        concat!(
            "SELECT a.address, l.message_timestamp, ",
            $ref_text!(),
            " AS credit_ref, l.credit_index, l.amount_remaining, l.expiration_date \
             FROM credit_lots l JOIN addresses a ON a.id = l.address_id JOIN refs r ON r.id = l.ref_id"
        )
    };
}

/// The columns `rows::message_record` reads, of a record `m` and its reference `r`.
#[doc(hidden)]
#[macro_export]
macro_rules! sql_message_columns {
    ($ref_text:ident) => {
        concat!(
            "SELECT ",
            $ref_text!(),
            " AS item_hash, m.status, m.ignored, m.error, m.recorded_at"
        )
    };
}

/// Message records (`m`).
#[macro_export]
macro_rules! sql_message_select {
    ($ref_text:ident) => {
        concat!(
            $crate::sql_message_columns!($ref_text),
            " FROM credit_messages m JOIN refs r ON r.id = m.ref_id"
        )
    };
}

/// Message records (`m`) with the envelope each came in (`e`, columns `e_*`; nulls where none
/// was kept).
#[macro_export]
macro_rules! sql_stored_message_select {
    ($ref_text:ident) => {
        concat!(
            $crate::sql_message_columns!($ref_text),
            ", e.type AS e_type, e.time AS e_time, e.sender AS e_sender, e.chain AS e_chain, \
             e.signature AS e_signature, e.item_type AS e_item_type, \
             e.item_content AS e_item_content, e.channel AS e_channel \
             FROM credit_messages m JOIN refs r ON r.id = m.ref_id \
             LEFT JOIN message_envelopes e ON e.ref_id = m.ref_id"
        )
    };
}

/// A chunk of kept processed messages in the list's order (NODE-API §2.3): envelope time
/// (`$order`, `ASC` or `DESC`), then the item hash ascending; `time` within `[$lo, $hi)`, and at
/// the instant `$t` only hashes after `$h` ([`crate::EnvelopeScan::bounds`]).
#[macro_export]
macro_rules! sql_kept_scan {
    ($ref_text:ident, $order:literal, $lo:literal, $hi:literal, $t:literal, $h:literal, $limit:literal) => {
        concat!(
            $crate::sql_stored_message_select!($ref_text),
            " WHERE m.status = 'processed' AND e.time >= ",
            $lo,
            " AND e.time < ",
            $hi,
            " AND (e.time <> ",
            $t,
            " OR ",
            $ref_text!(),
            " > ",
            $h,
            ") ORDER BY e.time ",
            $order,
            ", ",
            $ref_text!(),
            " LIMIT ",
            $limit
        )
    };
}

/// Lots `l` still holding credits at the instant `$now` that expire before `$before`.
#[macro_export]
macro_rules! sql_expiring {
    ($now:literal, $before:literal) => {
        concat!(
            "l.amount_remaining > 0 AND l.expiration_date > ",
            $now,
            " AND l.expiration_date < ",
            $before
        )
    };
}

/// A page of [`sql_expiring`] lots in the order of their expiry, then holder, then emission.
#[macro_export]
macro_rules! sql_expiring_lots {
    ($ref_text:ident, $now:literal, $before:literal, $limit:literal, $offset:literal) => {
        concat!(
            $crate::sql_lot_select!($ref_text),
            " WHERE ",
            $crate::sql_expiring!($now, $before),
            " ORDER BY l.expiration_date, a.address, l.message_timestamp, ",
            $ref_text!(),
            ", l.credit_index LIMIT ",
            $limit,
            " OFFSET ",
            $offset
        )
    };
}

/// The sum and the count of [`sql_expiring`] lots.
#[macro_export]
macro_rules! sql_expiring_total {
    ($now:literal, $before:literal) => {
        concat!(
            "SELECT CAST(COALESCE(SUM(l.amount_remaining), 0) AS BIGINT), COUNT(*) \
             FROM credit_lots l WHERE ",
            $crate::sql_expiring!($now, $before)
        )
    };
}

/// An address's history rows with only what a replay reads (`rows::replay_row`), unordered
/// (the replay sorts); the address's id bound as `$address`.
#[macro_export]
macro_rules! sql_replay_select {
    ($ref_text:ident, $address:literal) => {
        concat!(
            "SELECT ",
            $ref_text!(),
            " AS credit_ref, h.credit_index, h.amount, h.expiration_date, h.message_timestamp, \
             h.policy FROM credit_history h JOIN refs r ON r.id = h.ref_id WHERE h.address_id = ",
            "(SELECT id FROM addresses WHERE address = ",
            $address,
            ")"
        )
    };
}

/// `message_envelopes`' columns in the order both stores insert them.
#[macro_export]
macro_rules! sql_envelope_columns {
    () => {
        "ref_id, time, type, sender, chain, channel, item_type, signature, item_content"
    };
}

/// The clause that makes an envelope insert replace the envelope a message was kept with
/// before (a rejection sent again, then processed).
#[macro_export]
macro_rules! sql_envelope_upsert {
    () => {
        " ON CONFLICT (ref_id) DO UPDATE SET time = excluded.time, type = excluded.type, \
         sender = excluded.sender, chain = excluded.chain, channel = excluded.channel, \
         item_type = excluded.item_type, signature = excluded.signature, \
         item_content = excluded.item_content"
    };
}

/// Emission (replay) order of lots `l` (`l`) or history rows (`h`): instant, the reference's
/// text, index.
#[macro_export]
macro_rules! sql_emission_order {
    ($ref_text:ident, $alias:literal) => {
        concat!(
            " ORDER BY ",
            $alias,
            ".message_timestamp, ",
            $ref_text!(),
            ", ",
            $alias,
            ".credit_index"
        )
    };
}

/// An address's unexpired lots summed by expiry: `expiration_date` and the sum (`BIGINT`), one
/// row per expiry; `$address` and `$at` are the dialect's placeholders for the address's text
/// and the instant. See [`crate::pooled::Dialect::BALANCE_GROUPS`].
#[macro_export]
macro_rules! sql_balance_groups {
    ($address:literal, $at:literal) => {
        concat!(
            "SELECT expiration_date, CAST(SUM(amount_remaining) AS BIGINT) FROM credit_lots \
             WHERE address_id = (SELECT id FROM addresses WHERE address = ",
            $address,
            ") AND (expiration_date IS NULL OR expiration_date > ",
            $at,
            ") GROUP BY expiration_date"
        )
    };
}

/// Rows of the ledger's three tables, as one row of three counts ([`crate::TableCounts`]).
#[macro_export]
macro_rules! sql_table_counts {
    () => {
        "SELECT (SELECT COUNT(*) FROM credit_history), (SELECT COUNT(*) FROM credit_lots), \
         (SELECT COUNT(*) FROM credit_messages)"
    };
}

/// Every address with history or lots, in text order, with its number of history rows (`a`,
/// `n`); the same text in both dialects. The rows are counted in one pass over the history's
/// address index (grouped), not by a seek per address.
pub const ADDRESS_ROWS: &str = "SELECT a.address, COALESCE(h.n, 0) AS n FROM addresses a \
     LEFT JOIN (SELECT address_id, count(*) AS n FROM credit_history GROUP BY address_id) h \
     ON h.address_id = a.id \
     WHERE h.n IS NOT NULL OR EXISTS (SELECT 1 FROM credit_lots WHERE address_id = a.id) \
     ORDER BY a.address";

/// The rows of [`ADDRESS_ROWS`], counts as `u64`.
pub fn address_rows(rows: Vec<(String, i64)>) -> Vec<crate::AddressRows> {
    rows.into_iter()
        .map(|(address, n)| (address, crate::non_negative(n)))
        .collect()
}

/// Defines, in the calling module, the six SELECT and ORDER BY macros a backend's SQL is
/// written with: `history_select!()`, `lot_select!()`, `message_select!()`,
/// `stored_message_select!()` (the columns
/// [`crate::rows`] reads; `h`, `l`, `m` the rows) and `lot_order!()` / `history_order!()`
/// (emission order), each over the caller's `$ref_text` macro; `$price` and `$size` are the
/// history row's `NUMERIC` columns as the dialect reads them as text.
#[macro_export]
macro_rules! sql_selects {
    ($ref_text:ident, $price:literal, $size:literal) => {
        /// History rows with the columns `rows::history_row` reads; `h` the history row.
        #[allow(unused_macros)]
        macro_rules! history_select {
            () => {
                $crate::sql_history_select!($ref_text, $price, $size)
            };
        }
        /// Lots with the columns `rows::lot` reads; `l` the lot.
        #[allow(unused_macros)]
        macro_rules! lot_select {
            () => {
                $crate::sql_lot_select!($ref_text)
            };
        }
        /// Message records with the columns `rows::message_record` reads; `m` the record.
        #[allow(unused_macros)]
        macro_rules! message_select {
            () => {
                $crate::sql_message_select!($ref_text)
            };
        }
        /// Message records with their envelopes, the columns `rows::stored_message` reads.
        #[allow(unused_macros)]
        macro_rules! stored_message_select {
            () => {
                $crate::sql_stored_message_select!($ref_text)
            };
        }
        /// An address's rows as a replay reads them ([`sql_replay_select`]).
        #[allow(unused_macros)]
        macro_rules! replay_select {
            ($address:literal) => {
                $crate::sql_replay_select!($ref_text, $address)
            };
        }
        /// A page of expiring lots ([`sql_expiring_lots`]).
        #[allow(unused_macros)]
        macro_rules! expiring_lots {
            ($now:literal, $before:literal, $limit:literal, $offset:literal) => {
                $crate::sql_expiring_lots!($ref_text, $now, $before, $limit, $offset)
            };
        }
        /// A chunk of kept processed messages in the list's order ([`sql_kept_scan`]).
        #[allow(unused_macros)]
        macro_rules! kept_scan {
            ($order:literal, $lo:literal, $hi:literal, $t:literal, $h:literal, $limit:literal) => {
                $crate::sql_kept_scan!($ref_text, $order, $lo, $hi, $t, $h, $limit)
            };
        }
        /// Emission (replay) order of lots `l`.
        #[allow(unused_macros)]
        macro_rules! lot_order {
            () => {
                $crate::sql_emission_order!($ref_text, "l")
            };
        }
        /// Emission (replay) order of history rows `h`.
        #[allow(unused_macros)]
        macro_rules! history_order {
            () => {
                $crate::sql_emission_order!($ref_text, "h")
            };
        }
    };
}

/// What an insert of lots does with a lot already stored under its key; each store writes the
/// clause in its dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// Fails: the caller knows the lot is new ([`crate::LedgerTx::write_lots`]' `created`).
    /// No `ON CONFLICT` clause, whose checks cost PostgreSQL ×1.3–1.7 a plain insert on W1's
    /// lots (BENCHMARKS.md).
    Fail,
    /// Keeps the stored lot.
    Skip,
    /// Sets the stored lot's remainder.
    Update,
}
