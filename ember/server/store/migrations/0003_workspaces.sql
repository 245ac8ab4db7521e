-- 3: workspaces own everything users name; tokens identify people, programs and workers.
--
-- Everything stored before belongs to the workspace `main`. Names become unique per workspace:
-- the tables whose uniqueness was global are rebuilt (SQLite cannot alter a constraint).

CREATE TABLE workspaces (
    name TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    -- quotas, NULL for none
    max_containers INTEGER,
    max_cpu REAL,
    max_memory_mb INTEGER,
    max_gpus INTEGER
);
INSERT INTO workspaces (name, created_at) VALUES ('main', (julianday('now') - 2440587.5) * 86400.0);

CREATE TABLE tokens (
    token_id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,        -- sha256 of the secret: the secret itself is not kept
    role TEXT NOT NULL,               -- admin | workspace | worker
    workspace TEXT NOT NULL,          -- its workspace ('' for a worker token)
    name TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,                  -- NULL: never
    revoked_at REAL,
    max_cpu REAL,                     -- a worker token: the most a worker may offer (NULL: any)
    max_memory_mb INTEGER
);

ALTER TABLE apps ADD COLUMN workspace TEXT NOT NULL DEFAULT 'main';
CREATE INDEX apps_by_name ON apps(workspace, name);

ALTER TABLE secrets RENAME TO secrets_0002;
CREATE TABLE secrets (
    secret_id TEXT PRIMARY KEY,
    workspace TEXT NOT NULL,
    name TEXT,                        -- NULL for an anonymous secret
    ciphertext BLOB NOT NULL,         -- the variables, encrypted with the control plane's key
    num_keys INTEGER NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (workspace, name)
);
INSERT INTO secrets SELECT secret_id, 'main', name, ciphertext, num_keys, created_at FROM secrets_0002;
DROP TABLE secrets_0002;

ALTER TABLE schedule_runs RENAME TO schedule_runs_0002;
CREATE TABLE schedule_runs (
    workspace TEXT NOT NULL,
    app_name TEXT NOT NULL,           -- a deployed app's schedules outlive its versions
    function_name TEXT NOT NULL,
    last_run REAL NOT NULL,           -- unix seconds of the last tick that made a call
    PRIMARY KEY (workspace, app_name, function_name)
);
INSERT INTO schedule_runs SELECT 'main', app_name, function_name, last_run FROM schedule_runs_0002;
DROP TABLE schedule_runs_0002;

ALTER TABLE proxy_tokens ADD COLUMN workspace TEXT NOT NULL DEFAULT 'main';

ALTER TABLE objects ADD COLUMN workspace TEXT NOT NULL DEFAULT 'main';
DROP INDEX objects_by_name;
CREATE UNIQUE INDEX objects_by_name ON objects(workspace, kind, name);

-- A container's credential, as the hash of its secret: it reconnects with it after a restart.
ALTER TABLE containers ADD COLUMN credential_hash TEXT NOT NULL DEFAULT '';
-- Which worker token a worker registered with: another token cannot take over its name.
ALTER TABLE workers ADD COLUMN token_id TEXT NOT NULL DEFAULT '';
