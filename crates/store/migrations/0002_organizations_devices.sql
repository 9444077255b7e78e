-- Organizations, memberships and user devices. Times are microseconds
-- since the Unix epoch (UTC).

-- `state` is `active` or `deleting`; `deletion_step` names the cascade
-- step in progress while deleting and is empty otherwise.
CREATE TABLE organizations (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    slug          TEXT NOT NULL UNIQUE,
    state         TEXT NOT NULL,
    deletion_step TEXT NOT NULL DEFAULT '',
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE INDEX organizations_by_creation ON organizations (created_at, id);

-- `role` is `owner` or `member`; `status` is `pending` or `active`.
CREATE TABLE memberships (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    identity_id     TEXT NOT NULL REFERENCES identities (id) ON DELETE CASCADE,
    role            TEXT NOT NULL,
    status          TEXT NOT NULL,
    invited_by      TEXT NOT NULL,
    expires_at      BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (organization_id, identity_id)
);

CREATE INDEX memberships_by_org ON memberships (organization_id, created_at, id);
CREATE INDEX memberships_by_identity ON memberships (identity_id, created_at, id);

-- A user's machine holding a platform-issued client certificate. The
-- enrollment token is stored as its SHA-256 digest and cleared once used.
CREATE TABLE devices (
    id                     TEXT PRIMARY KEY,
    user_id                TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name                   TEXT NOT NULL,
    status                 TEXT NOT NULL,
    enrollment_token_hash  TEXT UNIQUE,
    enrollment_expires_at  BIGINT,
    enrolled_at            BIGINT,
    last_seen_at           BIGINT,
    certificate_expires_at BIGINT,
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL
);

CREATE INDEX devices_by_user ON devices (user_id, created_at, id);

-- Idempotency keys of create calls: the first call with a key records the
-- resource it created, and a repeat within the retention window returns
-- that resource. `fingerprint` is a digest of the request, so a repeat
-- with different content is refused.
CREATE TABLE idempotency_keys (
    scope       TEXT NOT NULL,
    caller_id   TEXT NOT NULL,
    request_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (scope, caller_id, request_key)
);
