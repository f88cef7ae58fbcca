-- Messages are kept as received (issue 11): the envelope of every recorded message, under its
-- record's key (`credit_messages.ref_id`). `signature` is a compact value
-- (lotledger_store::compact: `0x` and lower-case hex as its bytes); `item_content` is the
-- content's JSON text byte for byte; `time` the envelope's epoch seconds. Records written
-- before this layout have no envelope: nothing was kept of it.
CREATE TABLE message_envelopes (
    ref_id       BIGINT           PRIMARY KEY,
    time         DOUBLE PRECISION NOT NULL,
    type         TEXT             NOT NULL,
    sender       TEXT,
    chain        TEXT,
    channel      TEXT,
    item_type    TEXT,
    signature    BYTEA,
    item_content TEXT
);
