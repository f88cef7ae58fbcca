-- History's tx_hash, origin and origin_ref are mostly hashes and addresses in hex: they are
-- kept as BLOBs of one tag byte and then either the hex's bytes (half the room) or the text's
-- UTF-8 (lotledger_store::compact; the expressions below compute the same mapping):
--   01 || bytes   lower-case hex digits, an even number of them, at least two;
--   02 || bytes   `0x` and such digits;
--   00 || UTF-8   anything else (upper-case hex, odd lengths, names, '').
-- The table is rebuilt (same ids, same order) with BLOB columns, and the consumed-credits
-- index follows the new values ('' is now x'00').

CREATE TABLE credit_history_v7 (
    id                INTEGER PRIMARY KEY,
    ref_id            INTEGER NOT NULL,
    credit_index      INTEGER NOT NULL,
    address_id        INTEGER NOT NULL,
    message_timestamp INTEGER NOT NULL,
    amount            INTEGER NOT NULL,
    expiration_date   INTEGER,
    last_update       INTEGER NOT NULL,
    price             TEXT,
    bonus_amount      INTEGER,
    tx_hash           BLOB,
    token             TEXT,
    chain             TEXT,
    provider          TEXT,
    origin            BLOB,
    origin_ref        BLOB,
    payment_method    TEXT,
    expense_count     INTEGER,
    expense_size_mib  TEXT
);

INSERT INTO credit_history_v7
    SELECT id, ref_id, credit_index, address_id, message_timestamp, amount, expiration_date,
        last_update, price, bonus_amount,
        CASE
            WHEN tx_hash IS NULL THEN NULL
            WHEN length(tx_hash) > 0 AND length(tx_hash) % 2 = 0
                 AND tx_hash NOT GLOB '*[^0-9a-f]*' THEN unhex('01' || tx_hash)
            WHEN length(tx_hash) > 2 AND length(tx_hash) % 2 = 0 AND substr(tx_hash, 1, 2) = '0x'
                 AND substr(tx_hash, 3) NOT GLOB '*[^0-9a-f]*' THEN unhex('02' || substr(tx_hash, 3))
            ELSE unhex('00' || hex(tx_hash))
        END,
        token, chain, provider,
        CASE
            WHEN origin IS NULL THEN NULL
            WHEN length(origin) > 0 AND length(origin) % 2 = 0
                 AND origin NOT GLOB '*[^0-9a-f]*' THEN unhex('01' || origin)
            WHEN length(origin) > 2 AND length(origin) % 2 = 0 AND substr(origin, 1, 2) = '0x'
                 AND substr(origin, 3) NOT GLOB '*[^0-9a-f]*' THEN unhex('02' || substr(origin, 3))
            ELSE unhex('00' || hex(origin))
        END,
        CASE
            WHEN origin_ref IS NULL THEN NULL
            WHEN length(origin_ref) > 0 AND length(origin_ref) % 2 = 0
                 AND origin_ref NOT GLOB '*[^0-9a-f]*' THEN unhex('01' || origin_ref)
            WHEN length(origin_ref) > 2 AND length(origin_ref) % 2 = 0
                 AND substr(origin_ref, 1, 2) = '0x'
                 AND substr(origin_ref, 3) NOT GLOB '*[^0-9a-f]*'
                 THEN unhex('02' || substr(origin_ref, 3))
            ELSE unhex('00' || hex(origin_ref))
        END,
        payment_method, expense_count, expense_size_mib
    FROM credit_history ORDER BY id;

DROP TABLE credit_history;
ALTER TABLE credit_history_v7 RENAME TO credit_history;

-- A history row's key, and the skip of rows stored already.
CREATE UNIQUE INDEX ux_credit_history_ref ON credit_history (ref_id, credit_index);
-- Replay order per address (ties on the instant are ordered by the reference's text).
CREATE INDEX ix_credit_history_address ON credit_history (address_id, message_timestamp);
-- Consumed credits per resource: expense rows by effective origin.
CREATE INDEX ix_credit_history_expense_resource
    ON credit_history (COALESCE(NULLIF(origin, x'00'), origin_ref))
    WHERE payment_method = 'credit_expense';

CREATE TRIGGER credit_history_no_update BEFORE UPDATE ON credit_history
BEGIN
    SELECT RAISE(ABORT, 'credit_history is append-only');
END;

CREATE TRIGGER credit_history_no_delete BEFORE DELETE ON credit_history
BEGIN
    SELECT RAISE(ABORT, 'credit_history is append-only');
END;
