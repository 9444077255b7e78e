-- Apps and their installations. Times are microseconds since the Unix
-- epoch (UTC).

-- An app's id is also its identity id (type `app`). `visibility`: 1
-- PUBLIC, 2 INTERNAL, the numbers of agynio.api.apps.v1.AppVisibility.
-- `permissions` is a JSON array of permission names such as
-- "thread:create". `token_hash` is the lowercase hex SHA-256 of the
-- service token.
CREATE TABLE apps (
    id              TEXT PRIMARY KEY REFERENCES identities (id),
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    slug            TEXT NOT NULL,
    name            TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    icon            TEXT NOT NULL DEFAULT '',
    visibility      BIGINT NOT NULL,
    permissions     TEXT NOT NULL DEFAULT '[]',
    endpoint        TEXT NOT NULL DEFAULT '',
    token_hash      TEXT NOT NULL UNIQUE,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (organization_id, slug)
);

CREATE INDEX apps_by_created ON apps (created_at, id);
CREATE INDEX apps_public ON apps (visibility, created_at, id);

-- One app installed into one organization. `slug` is also the app's
-- nickname in that organization. `configuration` is a JSON object.
CREATE TABLE app_installations (
    id              TEXT PRIMARY KEY,
    app_id          TEXT NOT NULL REFERENCES apps (id),
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    slug            TEXT NOT NULL,
    configuration   TEXT NOT NULL DEFAULT '{}',
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (app_id, organization_id),
    UNIQUE (organization_id, slug)
);

CREATE INDEX app_installations_by_org ON app_installations (organization_id, created_at, id);
CREATE INDEX app_installations_by_app ON app_installations (app_id, created_at, id);
