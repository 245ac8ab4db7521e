-- 1 (PostgreSQL): the schema of the control plane as 0001_initial.sql makes it for SQLite.
--
-- SQLite's REAL is DOUBLE PRECISION here (PostgreSQL's REAL has 24 bits: not enough for a time),
-- BLOB is BYTEA, and counts and sizes are BIGINT.

CREATE TABLE apps (
    app_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    state TEXT NOT NULL,              -- running | superseded (an old deployed version, draining) | stopped
    created_at DOUBLE PRECISION NOT NULL,
    stopped_at DOUBLE PRECISION,
    deployed INTEGER NOT NULL DEFAULT 0,
    version BIGINT NOT NULL DEFAULT 0,  -- of a deployed app, once published
    deployed_at DOUBLE PRECISION
);
CREATE TABLE functions (
    function_id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    definition BYTEA NOT NULL,        -- FunctionDefinition
    created_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE calls (
    call_id TEXT PRIMARY KEY,
    function_id TEXT NOT NULL,
    num_inputs BIGINT,                -- NULL while inputs may still come
    num_done BIGINT NOT NULL DEFAULT 0,
    next_seq BIGINT NOT NULL DEFAULT 1,
    cancelled INTEGER NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL,
    done_at DOUBLE PRECISION
);
CREATE INDEX calls_by_done_at ON calls(done_at);
CREATE TABLE inputs (
    input_id TEXT PRIMARY KEY,
    call_id TEXT NOT NULL,
    idx BIGINT NOT NULL,
    args BYTEA NOT NULL,              -- Payload
    attempts BIGINT NOT NULL DEFAULT 0,
    lost BIGINT NOT NULL DEFAULT 0,   -- times its container vanished without an exit report
    container_id TEXT,                -- who holds it now, NULL while queued
    available_at DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE INDEX inputs_by_call ON inputs(call_id);
CREATE TABLE outputs (
    call_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    output BYTEA NOT NULL,            -- Output
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (call_id, seq)
);
CREATE INDEX outputs_by_time ON outputs(created_at);
CREATE TABLE workers (
    worker_id TEXT PRIMARY KEY,
    boot_id TEXT NOT NULL,
    name TEXT NOT NULL,
    cpu DOUBLE PRECISION NOT NULL,
    memory_mb BIGINT NOT NULL,
    last_seen DOUBLE PRECISION NOT NULL
);
CREATE TABLE layers (
    layer_id TEXT PRIMARY KEY,        -- hash of the parent layer and the build step
    blob_id TEXT NOT NULL,            -- its archive in the blob store; '' for an empty layer
    created_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE secrets (
    secret_id TEXT PRIMARY KEY,
    name TEXT UNIQUE,                 -- NULL for an anonymous secret
    ciphertext BYTEA NOT NULL,        -- the variables, encrypted with the control plane's key
    num_keys BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE schedule_runs (
    app_name TEXT NOT NULL,           -- a deployed app's schedules outlive its versions
    function_name TEXT NOT NULL,
    last_run DOUBLE PRECISION NOT NULL,  -- unix seconds of the last tick that made a call
    PRIMARY KEY (app_name, function_name)
);
CREATE TABLE proxy_tokens (
    token_id TEXT PRIMARY KEY,        -- the Ember-Key header
    secret_hash TEXT NOT NULL,        -- sha256 of the Ember-Secret header: the secret is not kept
    created_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE volume_files (
    volume_id TEXT NOT NULL,
    path TEXT NOT NULL,
    blob_id TEXT NOT NULL,
    size BIGINT NOT NULL,
    mode BIGINT NOT NULL,
    mtime DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (volume_id, path)
);
CREATE TABLE volume_versions (
    volume_id TEXT PRIMARY KEY,
    version BIGINT NOT NULL           -- bumped by every commit
);
CREATE TABLE objects (
    object_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,               -- dict | queue | volume
    name TEXT,                        -- NULL for an ephemeral object
    created_at DOUBLE PRECISION NOT NULL
);
CREATE UNIQUE INDEX objects_by_name ON objects(kind, name);
CREATE TABLE dict_entries (
    dict_id TEXT NOT NULL,
    key BYTEA NOT NULL,               -- cloudpickle bytes, compared as bytes
    value BYTEA NOT NULL,
    PRIMARY KEY (dict_id, key)
);
CREATE TABLE queue_items (
    queue_id TEXT NOT NULL,
    partition TEXT NOT NULL,
    seq BIGINT NOT NULL,              -- increasing per queue: FIFO order
    value BYTEA NOT NULL,
    PRIMARY KEY (queue_id, partition, seq)
);
CREATE TABLE containers (
    container_id TEXT PRIMARY KEY,
    function_id TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    state TEXT NOT NULL,              -- starting | running | exited
    exit_reason TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    ended_at DOUBLE PRECISION
);
