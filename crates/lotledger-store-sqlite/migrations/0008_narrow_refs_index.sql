-- `refs` loses its UNIQUE index on the whole reference. Nearly every reference is a 32-byte
-- hash, random, so that index took ~40 bytes an entry and every batch of new messages dirtied
-- leaves all over it (W1 and W2 intern one new reference a message). It gives way to an index
-- on a key of the reference, `ix_refs_key`: a hash BLOB's first 4 and last 4 bytes (so that
-- hashes made by counting, padded with zeros on either side, still differ), a TEXT reference
-- whole (names such as `no_expiry_credits` often begin alike). A lookup by value matches the
-- key, then the value (`ref_is!()` in the store). A key shared by many references would make
-- each lookup walk them: item hashes of verified messages are SHA-256 digests, whose 8 bytes
-- nobody can make equal at will; a file ingested `--trusted` is the operator's.
-- Uniqueness stays in the database: the trigger `refs_unique` probes the same index before
-- every insert. The table is rebuilt with the same ids.

CREATE TABLE refs_v8 (
    id  INTEGER PRIMARY KEY,
    ref BLOB    NOT NULL
);

INSERT INTO refs_v8 (id, ref) SELECT id, ref FROM refs ORDER BY id;

DROP TABLE refs;
ALTER TABLE refs_v8 RENAME TO refs;

CREATE INDEX ix_refs_key
    ON refs (CASE WHEN typeof(ref) = 'blob' THEN substr(ref, 1, 4) || substr(ref, 29, 4) ELSE ref END);

CREATE TRIGGER refs_unique BEFORE INSERT ON refs
WHEN EXISTS (
    SELECT 1 FROM refs
    WHERE (CASE WHEN typeof(ref) = 'blob' THEN substr(ref, 1, 4) || substr(ref, 29, 4) ELSE ref END)
        = (CASE WHEN typeof(NEW.ref) = 'blob' THEN substr(NEW.ref, 1, 4) || substr(NEW.ref, 29, 4) ELSE NEW.ref END)
      AND ref = NEW.ref
)
BEGIN
    SELECT RAISE(ABORT, 'refs: reference interned already');
END;

CREATE TRIGGER refs_no_update BEFORE UPDATE ON refs
BEGIN
    SELECT RAISE(ABORT, 'refs is append-only');
END;
