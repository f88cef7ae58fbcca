//! The mapping from a stored row to the core's types, written once: each store reads its
//! columns through [`Columns`] (its dialect's types: SQLite's INTEGER microseconds, PostgreSQL's
//! `TIMESTAMPTZ`), and the shapes, names and checks are here. The column names are the ones
//! [`sql_history_select!`](crate::sql_history_select), [`sql_lot_select!`](crate::sql_lot_select)
//! and [`sql_message_select!`](crate::sql_message_select) give.

use std::sync::Arc;

use lotledger_core::node_json::StoredEnvelope;
use lotledger_core::{Credits, HistoryRow, Lot, Policy, Timestamp};

use crate::{MessageRecord, MessageStatus, StoreError};

/// One row's columns, by name, as a store reads them.
pub trait Columns {
    fn text(&self, column: &str) -> Result<String, StoreError>;
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError>;
    fn int(&self, column: &str) -> Result<i64, StoreError>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError>;
    fn int32(&self, column: &str) -> Result<i32, StoreError>;
    fn instant(&self, column: &str) -> Result<Timestamp, StoreError>;
    fn opt_instant(&self, column: &str) -> Result<Option<Timestamp>, StoreError>;
    fn opt_float(&self, column: &str) -> Result<Option<f64>, StoreError>;
    /// A kept message's content ([`crate::kept`]), unpacked.
    fn kept_text(&self, column: &str) -> Result<Option<String>, StoreError>;
    /// A column of texts kept by [`crate::compact`], decoded ([`crate::compact::decode_opt`]).
    fn compact_text(&self, column: &str) -> Result<Option<String>, StoreError>;
}

/// An instant stored as INTEGER microseconds (SQLite's columns, the scans' entries).
pub fn instant_from_micros(micros: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_micros(micros)
        .map_err(|e| StoreError::Corrupt(format!("instant {micros}: {e}")))
}

/// A history row (`sql_history_select!`).
pub fn history_row(r: &impl Columns) -> Result<HistoryRow, StoreError> {
    Ok(HistoryRow {
        address: r.text("address")?,
        amount: Credits(r.int("amount")?),
        price: r.opt_text("price")?,
        bonus_amount: r.opt_int("bonus_amount")?,
        tx_hash: r.compact_text("tx_hash")?,
        token: r.opt_text("token")?,
        chain: r.opt_text("chain")?,
        provider: r.opt_text("provider")?,
        origin: r.compact_text("origin")?,
        origin_ref: r.compact_text("origin_ref")?,
        payment_method: r.opt_text("payment_method")?,
        credit_ref: r.text("credit_ref")?,
        credit_index: r.int32("credit_index")?,
        expiration_date: r.opt_instant("expiration_date")?,
        message_timestamp: r.instant("message_timestamp")?,
        expense_count: r.opt_int("expense_count")?,
        expense_size_mib: r.opt_text("expense_size_mib")?,
        policy: policy(r.int32("policy")?)?,
    })
}

/// The drain policy a history row records by number.
pub fn policy(code: i32) -> Result<Policy, StoreError> {
    Policy::from_code(i64::from(code))
        .ok_or_else(|| StoreError::Corrupt(format!("unknown drain policy number {code}")))
}

/// A history row of `address` as a replay reads it (`sql_replay_select!`): the other columns
/// are left empty.
pub fn replay_row(address: &str, r: &impl Columns) -> Result<HistoryRow, StoreError> {
    let mut row = HistoryRow::bare(
        address,
        Credits(r.int("amount")?),
        &r.text("credit_ref")?,
        r.int32("credit_index")?,
        r.instant("message_timestamp")?,
    );
    row.expiration_date = r.opt_instant("expiration_date")?;
    row.policy = policy(r.int32("policy")?)?;
    Ok(row)
}

/// A lot (`sql_lot_select!`).
pub fn lot(r: &impl Columns) -> Result<Lot, StoreError> {
    Ok(Lot {
        address: r.text("address")?,
        credit_ref: r.text("credit_ref")?,
        credit_index: r.int32("credit_index")?,
        amount_remaining: Credits(r.int("amount_remaining")?),
        expiration_date: r.opt_instant("expiration_date")?,
        message_timestamp: r.instant("message_timestamp")?,
    })
}

/// A message record (`sql_message_select!`).
pub fn message_record(r: &impl Columns) -> Result<MessageRecord, StoreError> {
    let status = match r.text("status")?.as_str() {
        "processed" => MessageStatus::Processed,
        "rejected" => MessageStatus::Rejected {
            error: r.opt_text("error")?.unwrap_or_default(),
        },
        other => {
            return Err(StoreError::Corrupt(format!(
                "unknown message status {other:?}"
            )));
        }
    };
    Ok(MessageRecord {
        item_hash: r.text("item_hash")?,
        status,
        ignored: r.opt_text("ignored")?,
        recorded_at: r.instant("recorded_at")?,
        envelope: None,
    })
}

/// A message record with the envelope it came in, if one was kept
/// (`sql_stored_message_select!`).
pub fn stored_message(r: &impl Columns) -> Result<MessageRecord, StoreError> {
    let mut record = message_record(r)?;
    if let (Some(message_type), Some(time)) = (r.opt_text("e_type")?, r.opt_float("e_time")?) {
        record.envelope = Some(Arc::new(StoredEnvelope {
            item_hash: record.item_hash.clone(),
            sender: r.opt_text("e_sender")?,
            chain: r.opt_text("e_chain")?,
            signature: r.compact_text("e_signature")?,
            message_type,
            item_type: r.opt_text("e_item_type")?,
            item_content: r.kept_text("e_item_content")?,
            channel: r.opt_text("e_channel")?,
            time,
        }));
    }
    Ok(record)
}
