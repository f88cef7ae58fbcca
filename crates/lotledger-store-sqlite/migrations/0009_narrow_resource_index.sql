-- The consumed-credits index keys an expense row by its resource (its origin, else its
-- origin_ref: a compact value, migration 0007), which is most often a 32-byte hash, random:
-- 33 bytes an entry, and every batch of expenses dirtied leaves all over the index. It now
-- keys a resource by its last 8 bytes (of a hash, random; of hashes made by counting, the
-- count), a resource of 8 bytes or fewer whole (lotledger_store::compact::resource_key
-- computes the same key). A lookup matches the key, then the value (`pooled::Reads::
-- consumed_credits`); resources sharing a key are only walked by that read.

DROP INDEX ix_credit_history_expense_resource;
CREATE INDEX ix_credit_history_expense_resource
    ON credit_history (
        CASE WHEN length(COALESCE(NULLIF(origin, x'00'), origin_ref)) > 8
            THEN substr(COALESCE(NULLIF(origin, x'00'), origin_ref),
                        length(COALESCE(NULLIF(origin, x'00'), origin_ref)) - 7)
            ELSE COALESCE(NULLIF(origin, x'00'), origin_ref) END)
    WHERE payment_method = 'credit_expense';
