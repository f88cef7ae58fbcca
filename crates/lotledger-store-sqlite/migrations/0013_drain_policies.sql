-- Versioned drain policies (issue 12, part 1): every history row records the policy that
-- planned its message (1 = v1, emission order, the only one before this layout; 2 = v2,
-- soonest expiry first), and the ledger keeps its schedule of policies (`drain_schedule`, as
-- `lotledger --policy` writes it, e.g. `v1,v2@2027-01-01T00:00:00Z`) so that replay, repair
-- and verify never depend on the configuration of the day.
ALTER TABLE credit_history ADD COLUMN policy INTEGER NOT NULL DEFAULT 1;
CREATE TABLE ledger_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- History stays append-only except for the recorded policy, which `lotledger policy set
-- --rederive` rewrites when the operator re-plans the past under another schedule.
DROP TRIGGER credit_history_no_update;
CREATE TRIGGER credit_history_no_update BEFORE UPDATE OF id, ref_id, credit_index, address_id, message_timestamp, amount, expiration_date, last_update, price, bonus_amount, tx_hash, token, chain, provider, origin, origin_ref, payment_method, expense_count, expense_size_mib ON credit_history
BEGIN
    SELECT RAISE(ABORT, 'credit_history is append-only');
END;
