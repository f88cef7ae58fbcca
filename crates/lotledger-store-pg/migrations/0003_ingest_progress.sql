-- How far an interrupted `lotledger ingest` got in each source file: lines committed, written in
-- the same transaction as the batch they end, so a resumed ingest neither skips nor repeats one.
CREATE TABLE ingest_progress (
    source TEXT    NOT NULL PRIMARY KEY,
    lines  BIGINT  NOT NULL CHECK (lines >= 0)
);
