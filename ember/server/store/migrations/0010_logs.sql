-- 10: what apps' containers printed, and what the control plane said about them, kept for
-- --log-retention hours. Lines are numbered per app (seq); the workspace and, for a deployed
-- app, its name are kept with them so that they are found after the app is gone.

CREATE TABLE logs (
    app_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,   -- unix time the control plane received it
    workspace TEXT NOT NULL,
    app_name TEXT NOT NULL,                 -- a deployed app's name; '' for an ephemeral one
    function_name TEXT NOT NULL,
    container_id TEXT NOT NULL,             -- '' for the control plane's own lines
    input_id TEXT NOT NULL,                 -- '' where not known
    fd INTEGER NOT NULL,                    -- 1 stdout, 2 stderr
    data TEXT NOT NULL,
    PRIMARY KEY (app_id, seq)
);
CREATE INDEX logs_by_time ON logs(created_at);
CREATE INDEX logs_by_name ON logs(workspace, app_name, created_at);
