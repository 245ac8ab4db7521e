-- 4 (PostgreSQL): what each workspace's containers used, per app and function, by the hour.

CREATE TABLE usage (
    workspace TEXT NOT NULL,
    app_name TEXT NOT NULL,
    function_name TEXT NOT NULL,
    hour DOUBLE PRECISION NOT NULL,                       -- unix seconds of the start of the hour
    cpu_seconds DOUBLE PRECISION NOT NULL DEFAULT 0,      -- used (cgroup or process tree)
    memory_gib_seconds DOUBLE PRECISION NOT NULL DEFAULT 0,  -- reserved, times lifetime
    gpu_seconds DOUBLE PRECISION NOT NULL DEFAULT 0,      -- reserved, times lifetime
    inputs BIGINT NOT NULL DEFAULT 0,                     -- inputs run
    PRIMARY KEY (workspace, hour, app_name, function_name)
);
