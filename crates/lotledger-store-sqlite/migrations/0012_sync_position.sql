-- `lotledger sync` (issue 11) follows another node and records where it is in the same
-- transaction as each batch it applies, in ingest_progress under the source `sync <url>`:
-- `resume_at` is the list position of the newest message applied, `<envelope time in
-- microseconds> <item hash>`. Rows of file ingests leave it null.
ALTER TABLE ingest_progress ADD COLUMN resume_at TEXT;
