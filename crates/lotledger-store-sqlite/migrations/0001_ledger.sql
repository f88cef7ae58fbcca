-- The credit history (append-only source of truth), the lot cache, and the processed messages.
-- Instants are INTEGER microseconds since the Unix epoch (UTC); decimals are TEXT in PostgreSQL
-- NUMERIC form (normalised by the core).

CREATE TABLE credit_history (
    credit_ref        TEXT    NOT NULL,
    credit_index      INTEGER NOT NULL,
    address           TEXT    NOT NULL,
    amount            INTEGER NOT NULL,
    price             TEXT,
    bonus_amount      INTEGER,
    tx_hash           TEXT,
    token             TEXT,
    chain             TEXT,
    provider          TEXT,
    origin            TEXT,
    origin_ref        TEXT,
    payment_method    TEXT,
    expiration_date   INTEGER,
    message_timestamp INTEGER NOT NULL,
    last_update       INTEGER NOT NULL,
    expense_count     INTEGER,
    expense_size_mib  TEXT,
    CONSTRAINT credit_history_pkey PRIMARY KEY (credit_ref, credit_index)
) WITHOUT ROWID;

-- Replay order per address; serves history by address and the out-of-order check.
CREATE INDEX ix_credit_history_address_order
    ON credit_history (address, message_timestamp, credit_ref, credit_index);

CREATE TRIGGER credit_history_no_update BEFORE UPDATE ON credit_history
BEGIN
    SELECT RAISE(ABORT, 'credit_history is append-only');
END;

CREATE TRIGGER credit_history_no_delete BEFORE DELETE ON credit_history
BEGIN
    SELECT RAISE(ABORT, 'credit_history is append-only');
END;

-- One lot per granting history row with something left. The key is in emission order, so a
-- drain reads an address's lots straight off the primary key.
CREATE TABLE credit_lots (
    address           TEXT    NOT NULL,
    message_timestamp INTEGER NOT NULL,
    credit_ref        TEXT    NOT NULL,
    credit_index      INTEGER NOT NULL,
    amount_remaining  INTEGER NOT NULL CHECK (amount_remaining > 0),
    expiration_date   INTEGER,
    CONSTRAINT credit_lots_pkey PRIMARY KEY (address, message_timestamp, credit_ref, credit_index)
) WITHOUT ROWID;

-- Every message seen, so that one is applied once. Rejected ones may be processed again.
CREATE TABLE credit_messages (
    item_hash   TEXT    NOT NULL PRIMARY KEY,
    status      TEXT    NOT NULL CHECK (status IN ('processed', 'rejected')),
    ignored     TEXT,
    error       TEXT,
    recorded_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Where an interrupted repair resumes.
CREATE TABLE repair_checkpoint (
    id           INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    last_address TEXT    NOT NULL
);
