-- PostgreSQL's migration 0006 adds a version per address, so that its concurrent writers can
-- keep address states across batches. SQLite's writers are strictly ordered, and a batch cache
-- there is checked against the file's generation (PRAGMA user_version) instead: nothing to
-- change. Kept so that both stores carry the same migration versions.
SELECT 1;
