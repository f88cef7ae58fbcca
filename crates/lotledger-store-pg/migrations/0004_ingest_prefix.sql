-- A resumed ingest must never skip input it has not applied: with the line count, keep the
-- committed prefix's length in bytes and its SHA-256, and resume only when the file still
-- begins with exactly those bytes. Rows of earlier releases keep their line count; lacking a
-- digest they are never resumed from (their files are read again from the start).
ALTER TABLE ingest_progress ADD COLUMN bytes BIGINT CHECK (bytes >= 0);
ALTER TABLE ingest_progress ADD COLUMN prefix_sha256 TEXT;
