-- 9: which workspaces may read which blobs. A blob's id is the hash of its content, so naming
-- one proves nothing: a workspace may read a blob once one of its callers put its bytes.

CREATE TABLE blob_grants (
    workspace TEXT NOT NULL,
    blob_id TEXT NOT NULL,
    PRIMARY KEY (workspace, blob_id)
);

-- What was put before: a call's payloads belong to the workspace of its app, a volume's files to
-- the volume's. (Functions' code and packages are their apps' workspace's, without a grant.)
INSERT INTO blob_grants (workspace, blob_id)
    SELECT DISTINCT a.workspace, cb.blob_id FROM call_blobs cb
    JOIN calls c ON c.call_id = cb.call_id JOIN functions f ON f.function_id = c.function_id
    JOIN apps a ON a.app_id = f.app_id
    UNION SELECT o.workspace, vf.blob_id FROM volume_files vf JOIN objects o ON o.object_id = vf.volume_id
    UNION SELECT o.workspace, vb.blob_id FROM volume_old_blobs vb JOIN objects o ON o.object_id = vb.volume_id;
CREATE INDEX blob_grants_by_blob ON blob_grants(blob_id);
