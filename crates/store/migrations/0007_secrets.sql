-- Secret providers, secrets and image pull secrets. Times are
-- microseconds since the Unix epoch (UTC).
--
-- Columns named `sealed_*` hold base64 of an AES-256-GCM value sealed with
-- the master key, whose associated data is `<table>/<row id>/<column>`, so
-- a sealed value copied to another row or column cannot be opened.

-- `provider_type` is `vault`, the only type so far.
CREATE TABLE secret_providers (
    id                 TEXT PRIMARY KEY,
    organization_id    TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name               TEXT NOT NULL,
    description        TEXT NOT NULL DEFAULT '',
    provider_type      TEXT NOT NULL,
    vault_address      TEXT NOT NULL,
    sealed_vault_token TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    UNIQUE (organization_id, name)
);

CREATE INDEX secret_providers_by_org ON secret_providers (organization_id, created_at, id);

-- `storage` is `local` (the value is in `sealed_value`) or `remote` (the
-- value is read from `secret_provider_id` at `remote_name`). A referenced
-- provider cannot be deleted, so the provider key has no ON DELETE action.
CREATE TABLE secrets (
    id                 TEXT PRIMARY KEY,
    organization_id    TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name               TEXT NOT NULL,
    description        TEXT NOT NULL DEFAULT '',
    storage            TEXT NOT NULL,
    sealed_value       TEXT,
    secret_provider_id TEXT REFERENCES secret_providers (id),
    remote_name        TEXT,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    UNIQUE (organization_id, name),
    CHECK (
        (storage = 'local' AND sealed_value IS NOT NULL
            AND secret_provider_id IS NULL AND remote_name IS NULL)
        OR (storage = 'remote' AND sealed_value IS NULL
            AND secret_provider_id IS NOT NULL AND remote_name IS NOT NULL)
    )
);

CREATE INDEX secrets_by_org ON secrets (organization_id, created_at, id);
CREATE INDEX secrets_by_provider ON secrets (secret_provider_id, created_at, id);

-- Registry credentials. `storage` works as in `secrets`, for the password.
CREATE TABLE image_pull_secrets (
    id                 TEXT PRIMARY KEY,
    organization_id    TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    description        TEXT NOT NULL DEFAULT '',
    registry           TEXT NOT NULL,
    username           TEXT NOT NULL,
    storage            TEXT NOT NULL,
    sealed_password    TEXT,
    secret_provider_id TEXT REFERENCES secret_providers (id),
    remote_name        TEXT,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    CHECK (
        (storage = 'local' AND sealed_password IS NOT NULL
            AND secret_provider_id IS NULL AND remote_name IS NULL)
        OR (storage = 'remote' AND sealed_password IS NULL
            AND secret_provider_id IS NOT NULL AND remote_name IS NOT NULL)
    )
);

CREATE INDEX image_pull_secrets_by_org ON image_pull_secrets (organization_id, created_at, id);
CREATE INDEX image_pull_secrets_by_provider ON image_pull_secrets (secret_provider_id);
