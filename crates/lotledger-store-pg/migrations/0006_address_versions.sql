-- A version per address, advanced by every transaction that writes the address's history or
-- lots (while holding the address's advisory lock): a writer that kept an address's state in
-- memory after its commit knows it is still exact while the version is the one it left.
-- A constant default: no table rewrite.
ALTER TABLE addresses ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
