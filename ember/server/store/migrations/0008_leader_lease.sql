-- 8: the leader lease of control planes sharing one database: one leads (dispatches and
-- writes), the others stand by and take the lease over once it expires.

CREATE TABLE leader_lease (
    name TEXT PRIMARY KEY,                -- 'leader': the one row
    holder TEXT NOT NULL,                 -- the control plane holding it (an id new for each process)
    url TEXT NOT NULL,                    -- where clients and workers reach the holder
    epoch BIGINT NOT NULL,                -- one more each time it changes hands: fences an older holder's writes
    expires_at DOUBLE PRECISION NOT NULL  -- unix seconds; the holder renews it well before
);
