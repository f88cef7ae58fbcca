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
