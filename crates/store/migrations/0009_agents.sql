-- Agents and their configuration. Times are microseconds since the Unix
-- epoch (UTC) and durations are milliseconds.
--
-- `resources` columns hold a JSON object with the keys `requests_cpu`,
-- `requests_memory`, `limits_cpu` and `limits_memory`; an absent key means
-- no quantity.

-- An agent's id is also its identity id (type `agent`). `availability` is
-- `internal` or `private`. `nickname` is NULL when the agent has no handle.
-- `capabilities` is a JSON array of strings.
CREATE TABLE agents (
    id              TEXT PRIMARY KEY REFERENCES identities (id),
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    nickname        TEXT,
    role            TEXT NOT NULL DEFAULT '',
    description     TEXT NOT NULL DEFAULT '',
    availability    TEXT NOT NULL,
    model           TEXT NOT NULL DEFAULT '',
    configuration   TEXT NOT NULL DEFAULT '{}',
    image           TEXT NOT NULL DEFAULT '',
    init_image      TEXT NOT NULL DEFAULT '',
    resources       TEXT NOT NULL DEFAULT '{}',
    idle_timeout_ms BIGINT NOT NULL,
    capabilities    TEXT NOT NULL DEFAULT '[]',
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (organization_id, nickname)
);

CREATE INDEX agents_by_org ON agents (organization_id, created_at, id);

-- `transport` is `http` or `stdio`.
CREATE TABLE agent_mcps (
    id              TEXT PRIMARY KEY,
    agent_id        TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    image           TEXT NOT NULL DEFAULT '',
    command         TEXT NOT NULL,
    transport       TEXT NOT NULL,
    http_path       TEXT NOT NULL,
    resources       TEXT NOT NULL DEFAULT '{}',
    tool_timeout_ms BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (agent_id, name)
);

CREATE INDEX agent_mcps_by_agent ON agent_mcps (agent_id, created_at, id);

CREATE TABLE agent_skills (
    id          TEXT PRIMARY KEY,
    agent_id    TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    body        TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    UNIQUE (agent_id, name)
);

CREATE INDEX agent_skills_by_agent ON agent_skills (agent_id, created_at, id);

-- `event` is `workload_start`, `turn_start`, `turn_end` or `workload_stop`.
CREATE TABLE agent_hooks (
    id          TEXT PRIMARY KEY,
    agent_id    TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    event       TEXT NOT NULL,
    function    TEXT NOT NULL,
    image       TEXT NOT NULL DEFAULT '',
    resources   TEXT NOT NULL DEFAULT '{}',
    description TEXT NOT NULL DEFAULT '',
    timeout_ms  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE INDEX agent_hooks_by_agent ON agent_hooks (agent_id, created_at, id);

-- The tables below belong to a target container: `target_type` is
-- `agent`, `mcp` or `hook` and `target_id` is the id of that row.
-- `agent_id` is the agent that owns the target, so that deleting an agent
-- deletes them all. Deleting an MCP server or a hook deletes its rows
-- explicitly, because `target_id` cannot carry a foreign key.

-- Exactly one of `value` and `secret_id` is set.
CREATE TABLE agent_envs (
    id          TEXT PRIMARY KEY,
    agent_id    TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    target_type TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    value       TEXT,
    secret_id   TEXT REFERENCES secrets (id),
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    UNIQUE (target_type, target_id, name),
    CHECK ((value IS NULL AND secret_id IS NOT NULL) OR (value IS NOT NULL AND secret_id IS NULL))
);

CREATE INDEX agent_envs_by_target ON agent_envs (target_type, target_id, created_at, id);
CREATE INDEX agent_envs_by_agent ON agent_envs (agent_id, created_at, id);
CREATE INDEX agent_envs_by_secret ON agent_envs (secret_id);

CREATE TABLE agent_init_scripts (
    id          TEXT PRIMARY KEY,
    agent_id    TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    target_type TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    script      TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE INDEX agent_init_scripts_by_target ON agent_init_scripts (target_type, target_id, created_at, id);
CREATE INDEX agent_init_scripts_by_agent ON agent_init_scripts (agent_id, created_at, id);

-- Volume definitions belong to the organization, not to an agent.
-- `persistent` is 0 or 1. `size` is '' for scratch volumes. `ttl_ms` is
-- NULL when a persistent volume's disks are kept until the organization is
-- deleted.
CREATE TABLE volumes (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    persistent      BIGINT NOT NULL,
    mount_path      TEXT NOT NULL,
    size            TEXT NOT NULL DEFAULT '',
    ttl_ms          BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (organization_id, name)
);

CREATE INDEX volumes_by_org ON volumes (organization_id, created_at, id);

-- An attached volume cannot be deleted, so `volume_id` has no ON DELETE
-- action. `read_only` is 0 or 1. `mount_path` is a copy of the volume's,
-- kept equal by UpdateVolume, so that the database rejects two volumes
-- with one mount path on a target even under concurrent writes.
CREATE TABLE volume_attachments (
    id          TEXT PRIMARY KEY,
    volume_id   TEXT NOT NULL REFERENCES volumes (id),
    agent_id    TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    target_type TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    mount_path  TEXT NOT NULL,
    read_only   BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    UNIQUE (volume_id, target_type, target_id),
    UNIQUE (target_type, target_id, mount_path)
);

CREATE INDEX volume_attachments_by_target ON volume_attachments (target_type, target_id, created_at, id);
CREATE INDEX volume_attachments_by_agent ON volume_attachments (agent_id, created_at, id);

CREATE TABLE image_pull_secret_attachments (
    id                   TEXT PRIMARY KEY,
    image_pull_secret_id TEXT NOT NULL REFERENCES image_pull_secrets (id),
    agent_id             TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    target_type          TEXT NOT NULL,
    target_id            TEXT NOT NULL,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    UNIQUE (image_pull_secret_id, target_type, target_id)
);

CREATE INDEX image_pull_secret_attachments_by_target ON image_pull_secret_attachments (target_type, target_id, created_at, id);
CREATE INDEX image_pull_secret_attachments_by_agent ON image_pull_secret_attachments (agent_id, created_at, id);
