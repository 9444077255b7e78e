-- Identity registry, users, API tokens, relationship tuples and the
-- bootstrap guard. Times are microseconds since the Unix epoch (UTC).

CREATE TABLE identities (
    id            TEXT PRIMARY KEY,
    identity_type TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE users (
    id             TEXT PRIMARY KEY REFERENCES identities (id) ON DELETE CASCADE,
    oidc_subject   TEXT NOT NULL UNIQUE,
    username       TEXT NOT NULL UNIQUE,
    name           TEXT NOT NULL,
    email          TEXT NOT NULL,
    email_verified BIGINT NOT NULL DEFAULT 0,
    photo_url      TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    identity_id  TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    token_prefix TEXT NOT NULL,
    expires_at   BIGINT,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT
);

CREATE INDEX api_tokens_by_owner ON api_tokens (identity_id, created_at, id);

-- Relationship tuples `<subject> <relation> <object>`, for example
-- `identity:<id> admin cluster:global`. Owned by the authorization module.
CREATE TABLE tuples (
    object_type      TEXT NOT NULL,
    object_id        TEXT NOT NULL,
    relation         TEXT NOT NULL,
    subject_type     TEXT NOT NULL,
    subject_id       TEXT NOT NULL,
    subject_relation TEXT NOT NULL DEFAULT '',
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (object_type, object_id, relation, subject_type, subject_id, subject_relation)
);

CREATE INDEX tuples_by_subject ON tuples (subject_type, subject_id, relation, object_type);

-- Who granted each cluster admin (`bootstrap`, `config` or `admin`), so
-- that configuration reconciliation revokes only its own grants.
CREATE TABLE cluster_admin_grants (
    identity_id TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    source      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- One row once the cluster has been bootstrapped; the first replica to
-- insert it runs the bootstrap.
CREATE TABLE bootstrap_state (
    id         BIGINT PRIMARY KEY CHECK (id = 1),
    admin_id   TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
