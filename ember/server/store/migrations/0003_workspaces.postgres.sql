-- 3 (PostgreSQL): workspaces own everything users name; tokens identify people, programs and
-- workers. As 0003_workspaces.sql, with PostgreSQL's ALTER TABLE where SQLite rebuilds a table.

CREATE TABLE workspaces (
    name TEXT PRIMARY KEY,
    created_at DOUBLE PRECISION NOT NULL,
    -- quotas, NULL for none
    max_containers BIGINT,
    max_cpu DOUBLE PRECISION,
    max_memory_mb BIGINT,
    max_gpus BIGINT
);
INSERT INTO workspaces (name, created_at) VALUES ('main', extract(epoch FROM now()));

CREATE TABLE tokens (
    token_id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,        -- sha256 of the secret: the secret itself is not kept
    role TEXT NOT NULL,               -- admin | workspace | worker
    workspace TEXT NOT NULL,          -- its workspace ('' for a worker token)
    name TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION,      -- NULL: never
    revoked_at DOUBLE PRECISION,
    max_cpu DOUBLE PRECISION,         -- a worker token: the most a worker may offer (NULL: any)
    max_memory_mb BIGINT
);

ALTER TABLE apps ADD COLUMN workspace TEXT NOT NULL DEFAULT 'main';
CREATE INDEX apps_by_name ON apps(workspace, name);

ALTER TABLE secrets ADD COLUMN workspace TEXT NOT NULL DEFAULT 'main';
ALTER TABLE secrets ALTER COLUMN workspace DROP DEFAULT;
ALTER TABLE secrets DROP CONSTRAINT secrets_name_key;
ALTER TABLE secrets ADD UNIQUE (workspace, name);

ALTER TABLE schedule_runs ADD COLUMN workspace TEXT NOT NULL DEFAULT 'main';
ALTER TABLE schedule_runs ALTER COLUMN workspace DROP DEFAULT;
ALTER TABLE schedule_runs DROP CONSTRAINT schedule_runs_pkey;
ALTER TABLE schedule_runs ADD PRIMARY KEY (workspace, app_name, function_name);

ALTER TABLE proxy_tokens ADD COLUMN workspace TEXT NOT NULL DEFAULT 'main';

ALTER TABLE objects ADD COLUMN workspace TEXT NOT NULL DEFAULT 'main';
DROP INDEX objects_by_name;
CREATE UNIQUE INDEX objects_by_name ON objects(workspace, kind, name);

-- A container's credential, as the hash of its secret: it reconnects with it after a restart.
ALTER TABLE containers ADD COLUMN credential_hash TEXT NOT NULL DEFAULT '';
-- Which worker token a worker registered with: another token cannot take over its name.
ALTER TABLE workers ADD COLUMN token_id TEXT NOT NULL DEFAULT '';
