-- 14: an input's arguments in a table of their own (SQLite). SQLite writes a row whole when one
-- of its columns changes size, so each lease of an input (container_id set, then cleared) wrote
-- its inline arguments, up to 2 MiB, again: a backlog leased at once grew the write-ahead log
-- by all of them. Rows from before keep theirs in inputs.args (read where input_args has none).

CREATE TABLE input_args (
    input_id TEXT PRIMARY KEY,
    args BLOB NOT NULL              -- Payload
);
