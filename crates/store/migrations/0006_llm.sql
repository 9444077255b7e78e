-- LLM providers and the models that agents call through them. Times are
-- microseconds since the Unix epoch (UTC).
--
-- Columns named `sealed_*` hold base64 of an AES-256-GCM value sealed with
-- the master key, whose associated data is `<table>/<row id>/<column>`, so
-- a sealed value copied to another row or column cannot be opened.

-- `protocol` is `responses`, `anthropic_messages` or `chat_completions`.
-- `auth_method` is `bearer`, `x_api_key`, `custom_headers`, or
-- `unspecified` for a scripted provider, which has no endpoint and no
-- credential. `sealed_token` is set for `bearer` and `x_api_key`.
-- `sealed_headers` is the JSON object of every custom header, name to
-- value, sealed as one value and set for `custom_headers` only.
-- `header_names` is the JSON array of the lowercase header names, so reads
-- need no decryption. `script` is the proto JSON of a scripted provider's
-- script and NULL for every other provider.
CREATE TABLE llm_providers (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    endpoint        TEXT NOT NULL,
    protocol        TEXT NOT NULL,
    auth_method     TEXT NOT NULL,
    sealed_token    TEXT,
    header_names    TEXT NOT NULL DEFAULT '[]',
    sealed_headers  TEXT,
    script          TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (organization_id, name)
);

CREATE INDEX llm_providers_by_org ON llm_providers (organization_id, created_at, id);

-- A model names the provider's own model id (`remote_name`). Its protocol
-- is the provider's, read at query time. A referenced provider cannot be
-- deleted, so the provider key has no ON DELETE action.
CREATE TABLE llm_models (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    provider_id     TEXT NOT NULL REFERENCES llm_providers (id),
    name            TEXT NOT NULL,
    remote_name     TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE INDEX llm_models_by_org ON llm_models (organization_id, created_at, id);
CREATE INDEX llm_models_by_provider ON llm_models (provider_id, created_at, id);
