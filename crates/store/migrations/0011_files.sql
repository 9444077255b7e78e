-- Uploaded files. Times are microseconds since the Unix epoch (UTC).
--
-- Files are immutable and survive the deletion of their organization, so
-- `organization_id` has no foreign key. It is NULL when the upload named
-- no organization. The content is in the object store under the file id.
CREATE TABLE files (
    id              TEXT PRIMARY KEY,
    filename        TEXT NOT NULL,
    content_type    TEXT NOT NULL,
    size_bytes      BIGINT NOT NULL,
    sha256          TEXT NOT NULL,
    organization_id TEXT,
    uploader_id     TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);

CREATE INDEX files_by_org ON files (organization_id, created_at, id);
