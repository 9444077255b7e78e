-- Runners, workload records and provisioned volumes. Times are
-- microseconds since the Unix epoch (UTC). Status, state, reason and role
-- columns hold the numbers of the agynio.api.runners.v1 enums, so that a
-- sort by status follows the enum order.

-- `organization_id` is NULL for a cluster runner. `labels` is a JSON
-- object and `capabilities` a JSON array of strings. `builtin` is 0 or 1.
-- `token_hash` is the lowercase hex SHA-256 of the service token.
-- `status`: 1 PENDING, 2 ENROLLED, 3 OFFLINE.
CREATE TABLE runners (
    id              TEXT PRIMARY KEY,
    organization_id TEXT REFERENCES organizations (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    status          BIGINT NOT NULL,
    labels          TEXT NOT NULL DEFAULT '{}',
    capabilities    TEXT NOT NULL DEFAULT '[]',
    endpoint        TEXT NOT NULL DEFAULT '',
    builtin         BIGINT NOT NULL DEFAULT 0,
    token_hash      TEXT NOT NULL UNIQUE,
    enrolled_at     BIGINT,
    last_seen_at    BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- Names are unique within the organization, and cluster runner names
-- among cluster runners.
CREATE UNIQUE INDEX runners_org_name ON runners (organization_id, name)
    WHERE organization_id IS NOT NULL;
CREATE UNIQUE INDEX runners_cluster_name ON runners (name)
    WHERE organization_id IS NULL;
CREATE INDEX runners_by_created ON runners (created_at, id);

-- One start attempt of one (thread, agent) pair. `runner_id` has no
-- foreign key because terminal records outlive their runner, and it is ''
-- for a record created directly as FAILED. `containers` is a JSON array of
-- agynio.api.runners.v1.Container in the protobuf JSON mapping.
-- `status`: 1 STARTING, 2 RUNNING, 3 STOPPING, 4 STOPPED, 5 FAILED.
-- `agent_state`: 1 PROCESSING, 2 IDLE.
CREATE TABLE workloads (
    id                       TEXT PRIMARY KEY,
    runner_id                TEXT NOT NULL DEFAULT '',
    thread_id                TEXT NOT NULL,
    agent_id                 TEXT NOT NULL,
    organization_id          TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    status                   BIGINT NOT NULL,
    agent_state              BIGINT NOT NULL,
    containers               TEXT NOT NULL DEFAULT '[]',
    instance_id              TEXT NOT NULL DEFAULT '',
    credential_id            TEXT NOT NULL DEFAULT '',
    last_activity_at         BIGINT NOT NULL,
    started_at               BIGINT,
    removed_at               BIGINT,
    failure_reason           BIGINT NOT NULL DEFAULT 0,
    failure_message          TEXT NOT NULL DEFAULT '',
    allocated_cpu_millicores BIGINT NOT NULL DEFAULT 0,
    allocated_ram_bytes      BIGINT NOT NULL DEFAULT 0,
    created_at               BIGINT NOT NULL,
    updated_at               BIGINT NOT NULL
);

-- At most one non-terminal (STARTING, RUNNING or STOPPING) workload per
-- (thread, agent) pair.
CREATE UNIQUE INDEX workloads_active_pair ON workloads (thread_id, agent_id)
    WHERE status IN (1, 2, 3);
CREATE INDEX workloads_by_org ON workloads (organization_id, created_at, id);
CREATE INDEX workloads_by_thread ON workloads (thread_id, created_at, id);
CREATE INDEX workloads_by_runner ON workloads (runner_id, status);
CREATE INDEX workloads_by_credential ON workloads (credential_id);

-- A disk provisioned from a persistent volume definition for one thread.
-- `volume_id` names the definition, which the agents service owns.
-- `status`: 1 PROVISIONING, 2 ACTIVE, 3 DEPROVISIONING, 4 DELETED, 5 FAILED.
CREATE TABLE provisioned_volumes (
    id              TEXT PRIMARY KEY,
    volume_id       TEXT NOT NULL,
    thread_id       TEXT NOT NULL,
    agent_id        TEXT NOT NULL,
    runner_id       TEXT NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    size            TEXT NOT NULL DEFAULT '',
    persistent_name TEXT NOT NULL,
    instance_id     TEXT NOT NULL DEFAULT '',
    status          BIGINT NOT NULL,
    removed_at      BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- At most one non-terminal (PROVISIONING, ACTIVE or DEPROVISIONING) record
-- per (volume definition, thread) pair.
CREATE UNIQUE INDEX provisioned_volumes_active_pair ON provisioned_volumes (volume_id, thread_id)
    WHERE status IN (1, 2, 3);
CREATE INDEX provisioned_volumes_by_org ON provisioned_volumes (organization_id, created_at, id);
CREATE INDEX provisioned_volumes_by_thread ON provisioned_volumes (thread_id, created_at, id);
CREATE INDEX provisioned_volumes_by_runner ON provisioned_volumes (runner_id, status);
