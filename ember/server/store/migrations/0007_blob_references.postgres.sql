-- 7 (PostgreSQL): what refers to blobs, so that the blob collector (blob_gc.py) deletes only what
-- nothing needs. As 0007_blob_references.sql.

-- The payload blobs (large arguments and results) of each call: they go with its outputs.
CREATE TABLE call_blobs (
    call_id TEXT NOT NULL,
    blob_id TEXT NOT NULL,
    PRIMARY KEY (call_id, blob_id)
);

-- File contents that earlier versions of a volume had: kept while that version is among the newest.
CREATE TABLE volume_old_blobs (
    volume_id TEXT NOT NULL,
    version BIGINT NOT NULL,          -- the last version that had the file
    blob_id TEXT NOT NULL,
    PRIMARY KEY (volume_id, version, blob_id)
);

-- A layer's sizes (unpacked, and its archive), and when a build last used it.
ALTER TABLE layers ADD COLUMN size BIGINT NOT NULL DEFAULT 0;
ALTER TABLE layers ADD COLUMN archive_size BIGINT NOT NULL DEFAULT 0;
ALTER TABLE layers ADD COLUMN used_at DOUBLE PRECISION NOT NULL DEFAULT 0;
