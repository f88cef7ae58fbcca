-- Messages are kept as received (issue 11): the envelope of every recorded message, under its
-- record's key (`credit_messages.ref_id`). `signature` is a compact value
-- (lotledger_store::compact: `0x` and lower-case hex as its bytes); `item_content` keeps the
-- content's JSON text byte for byte, packed (lotledger_store::kept: a tag byte, then the text
-- or its zstd frame made with a dictionary of credit posts' shapes); `time` the envelope's
-- epoch seconds. Records written before this layout have no envelope: nothing was kept of
-- them.
CREATE TABLE message_envelopes (
    ref_id       INTEGER PRIMARY KEY,
    time         REAL    NOT NULL,
    type         TEXT    NOT NULL,
    sender       TEXT,
    chain        TEXT,
    channel      TEXT,
    item_type    TEXT,
    signature    BLOB,
    item_content BLOB
);
