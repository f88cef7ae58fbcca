-- A reference is a hash or a name, never both (refs_check), yet both columns had a full UNIQUE
-- index: every hash put a NULL into the name index, every name a NULL into the hash index
-- (B-tree indexes keep NULLs). Partial unique indexes keep only the values. Every lookup
-- (`hash = …`, `name = …`) implies its column is not NULL, so it still probes them, and
-- `ON CONFLICT DO NOTHING` (no target) still meets them. SQLite's 0008 narrows its own
-- `refs` index differently (one column, a key of it).

ALTER TABLE refs DROP CONSTRAINT refs_hash_key;
ALTER TABLE refs DROP CONSTRAINT refs_name_key;
CREATE UNIQUE INDEX ux_refs_hash ON refs (hash) WHERE hash IS NOT NULL;
CREATE UNIQUE INDEX ux_refs_name ON refs (name) WHERE name IS NOT NULL;
