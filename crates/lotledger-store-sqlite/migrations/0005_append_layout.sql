-- A layout that appends. History rows, message records and interned keys live under INTEGER
-- row ids that grow with time, so a batch writes at the end of each b-tree instead of
-- scattering pages under random 64-character keys. Addresses and references (item hashes,
-- credit refs) are interned once; a reference that is 64 lower-case hex digits is kept as its
-- 32 bytes (a BLOB), anything else (names such as `no_expiry_credits`, upper-case hex, CIDs) as
-- its TEXT. The two never compare equal; code reading a reference back turns a BLOB into
-- lower-case hex, and sorts references by that text only (never by the stored value).

CREATE TABLE addresses (
    id      INTEGER PRIMARY KEY,
    address TEXT    NOT NULL UNIQUE
);

CREATE TABLE refs (
    id  INTEGER PRIMARY KEY,
    ref BLOB    NOT NULL UNIQUE
);

-- Interned in order of first appearance.
INSERT INTO addresses (address)
    SELECT address FROM credit_history GROUP BY address ORDER BY MIN(message_timestamp), address;
INSERT INTO addresses (address)
    SELECT DISTINCT address FROM credit_lots WHERE address NOT IN (SELECT address FROM addresses)
    ORDER BY address;

INSERT INTO refs (ref)
    SELECT CASE WHEN length(credit_ref) = 64 AND credit_ref NOT GLOB '*[^0-9a-f]*'
                THEN unhex(credit_ref) ELSE credit_ref END
    FROM credit_history GROUP BY credit_ref ORDER BY MIN(message_timestamp), credit_ref;
INSERT INTO refs (ref)
    SELECT k FROM (
        SELECT CASE WHEN length(item_hash) = 64 AND item_hash NOT GLOB '*[^0-9a-f]*'
                    THEN unhex(item_hash) ELSE item_hash END AS k, recorded_at
        FROM credit_messages)
    WHERE k NOT IN (SELECT ref FROM refs) ORDER BY recorded_at, k;
INSERT INTO refs (ref)
    SELECT DISTINCT k FROM (
        SELECT CASE WHEN length(credit_ref) = 64 AND credit_ref NOT GLOB '*[^0-9a-f]*'
                    THEN unhex(credit_ref) ELSE credit_ref END AS k
        FROM credit_lots)
    WHERE k NOT IN (SELECT ref FROM refs) ORDER BY k;

CREATE TEMP TABLE ref_ids AS
    SELECT r.id, CASE WHEN typeof(r.ref) = 'blob' THEN lower(hex(r.ref)) ELSE r.ref END AS text
    FROM refs r;
CREATE UNIQUE INDEX temp.ref_ids_text ON ref_ids (text);

CREATE TABLE credit_history_v5 (
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
    tx_hash           TEXT,
    token             TEXT,
    chain             TEXT,
    provider          TEXT,
    origin            TEXT,
    origin_ref        TEXT,
    payment_method    TEXT,
    expense_count     INTEGER,
    expense_size_mib  TEXT
);

INSERT INTO credit_history_v5 (ref_id, credit_index, address_id, message_timestamp, amount,
        expiration_date, last_update, price, bonus_amount, tx_hash, token, chain, provider, origin,
        origin_ref, payment_method, expense_count, expense_size_mib)
    SELECT r.id, h.credit_index, a.id, h.message_timestamp, h.amount, h.expiration_date,
        h.last_update, h.price, h.bonus_amount, h.tx_hash, h.token, h.chain, h.provider, h.origin,
        h.origin_ref, h.payment_method, h.expense_count, h.expense_size_mib
    FROM credit_history h
    JOIN ref_ids r ON r.text = h.credit_ref
    JOIN addresses a ON a.address = h.address
    ORDER BY h.message_timestamp, h.credit_ref, h.credit_index;

CREATE TABLE credit_lots_v5 (
    address_id        INTEGER NOT NULL,
    message_timestamp INTEGER NOT NULL,
    ref_id            INTEGER NOT NULL,
    credit_index      INTEGER NOT NULL,
    amount_remaining  INTEGER NOT NULL CHECK (amount_remaining > 0),
    expiration_date   INTEGER,
    PRIMARY KEY (address_id, message_timestamp, ref_id, credit_index)
) WITHOUT ROWID;

INSERT INTO credit_lots_v5
    SELECT a.id, l.message_timestamp, r.id, l.credit_index, l.amount_remaining, l.expiration_date
    FROM credit_lots l
    JOIN ref_ids r ON r.text = l.credit_ref
    JOIN addresses a ON a.address = l.address;

CREATE TABLE credit_messages_v5 (
    ref_id      INTEGER PRIMARY KEY,
    status      TEXT    NOT NULL CHECK (status IN ('processed', 'rejected')),
    ignored     TEXT,
    error       TEXT,
    recorded_at INTEGER NOT NULL
);

INSERT INTO credit_messages_v5 (ref_id, status, ignored, error, recorded_at)
    SELECT r.id, m.status, m.ignored, m.error, m.recorded_at
    FROM credit_messages m JOIN ref_ids r ON r.text = m.item_hash
    ORDER BY r.id;

DROP TABLE ref_ids;
DROP TABLE credit_history;
DROP TABLE credit_lots;
DROP TABLE credit_messages;
ALTER TABLE credit_history_v5 RENAME TO credit_history;
ALTER TABLE credit_lots_v5 RENAME TO credit_lots;
ALTER TABLE credit_messages_v5 RENAME TO credit_messages;

-- A history row's key, and the skip of rows stored already.
CREATE UNIQUE INDEX ux_credit_history_ref ON credit_history (ref_id, credit_index);
-- Replay order per address (ties on the instant are ordered by the reference's text).
CREATE INDEX ix_credit_history_address ON credit_history (address_id, message_timestamp);
-- Consumed credits per resource: expense rows by effective origin.
CREATE INDEX ix_credit_history_expense_resource
    ON credit_history (COALESCE(NULLIF(origin, ''), origin_ref))
    WHERE payment_method = 'credit_expense';

CREATE TRIGGER credit_history_no_update BEFORE UPDATE ON credit_history
BEGIN
    SELECT RAISE(ABORT, 'credit_history is append-only');
END;

CREATE TRIGGER credit_history_no_delete BEFORE DELETE ON credit_history
BEGIN
    SELECT RAISE(ABORT, 'credit_history is append-only');
END;
