-- An address's history as a replay reads it (`replay_history`: the ledger as of an instant,
-- `explain --address`, the dry run's re-derived addresses) is answered from the address's
-- index alone: the index carries every column the replay reads after its keys (SQLite has no
-- INCLUDE), so a long-lived address's rows, which lie on as many table pages as it has rows,
-- are read in index order from a few pages. The same leading keys as before, so every other
-- reader of the index reads it as before.
DROP INDEX ix_credit_history_address;
CREATE INDEX ix_credit_history_address ON credit_history
    (address_id, message_timestamp, ref_id, credit_index, amount, expiration_date, policy);
