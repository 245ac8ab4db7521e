-- 14: an input's arguments in a table of their own, as on SQLite (0014_input_args.sql says why;
-- PostgreSQL would not write them again, but both engines keep one schema).

CREATE TABLE input_args (
    input_id TEXT PRIMARY KEY,
    args BYTEA NOT NULL             -- Payload
);
