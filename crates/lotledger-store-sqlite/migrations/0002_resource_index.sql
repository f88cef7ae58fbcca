-- Consumed credits per resource (GET /api/v0/messages/{hash}/consumed_credits, /api/v0/costs):
-- expense rows by effective origin, so the read is an index range, not a table scan.
CREATE INDEX ix_credit_history_expense_resource
    ON credit_history (COALESCE(NULLIF(origin, ''), origin_ref))
    WHERE payment_method = 'credit_expense';
