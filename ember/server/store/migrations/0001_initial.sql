-- 1: the schema of the control plane before numbered migrations.
--
-- Every statement is IF NOT EXISTS so that a database made by that earlier code, which
-- created its tables this way on every start, is adopted by applying this file too: it
-- creates whatever tables that database lacks and leaves the others alone (the runner first
-- adds the apps columns that the old code added ad hoc). Later migrations need not be written so.

CREATE TABLE IF NOT EXISTS apps (
    app_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    state TEXT NOT NULL,              -- running | superseded (an old deployed version, draining) | stopped
    created_at REAL NOT NULL,
    stopped_at REAL,
    deployed INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 0,  -- of a deployed app, once published
    deployed_at REAL
);
CREATE TABLE IF NOT EXISTS functions (
    function_id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    definition BLOB NOT NULL,         -- FunctionDefinition
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS calls (
    call_id TEXT PRIMARY KEY,
    function_id TEXT NOT NULL,
    num_inputs INTEGER,               -- NULL while inputs may still come
    num_done INTEGER NOT NULL DEFAULT 0,
    next_seq INTEGER NOT NULL DEFAULT 1,
    cancelled INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    done_at REAL
);
CREATE TABLE IF NOT EXISTS inputs (
    input_id TEXT PRIMARY KEY,
    call_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    args BLOB NOT NULL,               -- Payload
    attempts INTEGER NOT NULL DEFAULT 0,
    lost INTEGER NOT NULL DEFAULT 0,  -- times its container vanished without an exit report
    container_id TEXT,                -- who holds it now, NULL while queued
    available_at REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS inputs_by_call ON inputs(call_id);
CREATE TABLE IF NOT EXISTS outputs (
    call_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    output BLOB NOT NULL,             -- Output
    created_at REAL NOT NULL,
    PRIMARY KEY (call_id, seq)
);
CREATE INDEX IF NOT EXISTS outputs_by_time ON outputs(created_at);
CREATE TABLE IF NOT EXISTS workers (
    worker_id TEXT PRIMARY KEY,
    boot_id TEXT NOT NULL,
    name TEXT NOT NULL,
    cpu REAL NOT NULL,
    memory_mb INTEGER NOT NULL,
    last_seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS layers (
    layer_id TEXT PRIMARY KEY,        -- hash of the parent layer and the build step
    blob_id TEXT NOT NULL,            -- its archive in the blob store; '' for an empty layer
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS secrets (
    secret_id TEXT PRIMARY KEY,
    name TEXT UNIQUE,                 -- NULL for an anonymous secret
    ciphertext BLOB NOT NULL,         -- the variables, encrypted with the control plane's key
    num_keys INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS schedule_runs (
    app_name TEXT NOT NULL,           -- a deployed app's schedules outlive its versions
    function_name TEXT NOT NULL,
    last_run REAL NOT NULL,           -- unix seconds of the last tick that made a call
    PRIMARY KEY (app_name, function_name)
);
CREATE TABLE IF NOT EXISTS proxy_tokens (
    token_id TEXT PRIMARY KEY,        -- the Ember-Key header
    secret_hash TEXT NOT NULL,        -- sha256 of the Ember-Secret header: the secret is not kept
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS volume_files (
    volume_id TEXT NOT NULL,
    path TEXT NOT NULL,
    blob_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    mtime REAL NOT NULL,
    PRIMARY KEY (volume_id, path)
);
CREATE TABLE IF NOT EXISTS volume_versions (
    volume_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL          -- bumped by every commit
);
CREATE TABLE IF NOT EXISTS objects (
    object_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,               -- dict | queue | volume
    name TEXT,                        -- NULL for an ephemeral object
    created_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS objects_by_name ON objects(kind, name);
CREATE TABLE IF NOT EXISTS dict_entries (
    dict_id TEXT NOT NULL,
    key BLOB NOT NULL,                -- cloudpickle bytes, compared as bytes
    value BLOB NOT NULL,
    PRIMARY KEY (dict_id, key)
);
CREATE TABLE IF NOT EXISTS queue_items (
    queue_id TEXT NOT NULL,
    partition TEXT NOT NULL,
    seq INTEGER NOT NULL,             -- increasing per queue: FIFO order
    value BLOB NOT NULL,
    PRIMARY KEY (queue_id, partition, seq)
);
CREATE TABLE IF NOT EXISTS containers (
    container_id TEXT PRIMARY KEY,
    function_id TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    state TEXT NOT NULL,              -- starting | running | exited
    exit_reason TEXT,
    created_at REAL NOT NULL,
    ended_at REAL
);
