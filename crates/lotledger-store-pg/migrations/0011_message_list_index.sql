-- The message list (`GET /api/v0/messages.json`, issue 11) reads kept messages in envelope-time
-- order from a resume point: an index on `time` makes each page start where the last one ended
-- instead of sorting every kept message. Ties on the instant are ordered by the item hash
-- after the index (a few rows per instant).
CREATE INDEX ix_message_envelopes_time ON message_envelopes (time);
