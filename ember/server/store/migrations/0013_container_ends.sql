-- 13: containers are found by when they ended: the dashboard lists the latest ends, with their
-- causes, without reading every container that ever ran.

CREATE INDEX containers_by_end ON containers(ended_at);
