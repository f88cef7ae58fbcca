-- The credit history (append-only source of truth), the lot cache, and the processed messages.
-- Text keys use the "C" collation: byte order, the same as the core's and SQLite's.

CREATE TABLE credit_history (
    credit_ref        TEXT COLLATE "C" NOT NULL,
    credit_index      INTEGER     NOT NULL,
    address           TEXT COLLATE "C" NOT NULL,
    amount            BIGINT      NOT NULL,
    price             NUMERIC,
    bonus_amount      BIGINT,
    tx_hash           TEXT,
    token             TEXT,
    chain             TEXT,
    provider          TEXT,
    origin            TEXT,
    origin_ref        TEXT,
    payment_method    TEXT,
    expiration_date   TIMESTAMPTZ,
    message_timestamp TIMESTAMPTZ NOT NULL,
    last_update       TIMESTAMPTZ NOT NULL DEFAULT now(),
    expense_count     BIGINT,
    expense_size_mib  NUMERIC,
    CONSTRAINT credit_history_pkey PRIMARY KEY (credit_ref, credit_index)
);

-- Replay order per address; serves history by address and the out-of-order check.
CREATE INDEX ix_credit_history_address_order
    ON credit_history (address, message_timestamp, credit_ref, credit_index);

CREATE FUNCTION credit_history_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'credit_history is append-only';
END;
$$;

CREATE TRIGGER credit_history_no_update_delete BEFORE UPDATE OR DELETE ON credit_history
    FOR EACH ROW EXECUTE FUNCTION credit_history_append_only();
CREATE TRIGGER credit_history_no_truncate BEFORE TRUNCATE ON credit_history
    FOR EACH STATEMENT EXECUTE FUNCTION credit_history_append_only();

-- One lot per granting history row with something left. The key is in emission order, so a
-- drain reads an address's lots straight off the primary key.
CREATE TABLE credit_lots (
    address           TEXT COLLATE "C" NOT NULL,
    message_timestamp TIMESTAMPTZ NOT NULL,
    credit_ref        TEXT COLLATE "C" NOT NULL,
    credit_index      INTEGER     NOT NULL,
    amount_remaining  BIGINT      NOT NULL CHECK (amount_remaining > 0),
    expiration_date   TIMESTAMPTZ,
    CONSTRAINT credit_lots_pkey PRIMARY KEY (address, message_timestamp, credit_ref, credit_index)
);

-- Every message seen, so that one is applied once. Rejected ones may be processed again.
CREATE TABLE credit_messages (
    item_hash   TEXT        NOT NULL PRIMARY KEY,
    status      TEXT        NOT NULL CHECK (status IN ('processed', 'rejected')),
    ignored     TEXT,
    error       TEXT,
    recorded_at TIMESTAMPTZ NOT NULL
);

-- Where an interrupted repair resumes.
CREATE TABLE repair_checkpoint (
    id           INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    last_address TEXT    NOT NULL
);
