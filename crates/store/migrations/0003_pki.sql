-- The platform certificate authority and every certificate it issued.
-- Times are microseconds since the Unix epoch (UTC).

-- One row: the CA certificate and its private key sealed with the master
-- key (AES-256-GCM), so that every replica issues and verifies the same
-- certificates.
CREATE TABLE platform_ca (
    id                 BIGINT PRIMARY KEY CHECK (id = 1),
    certificate_pem    TEXT NOT NULL,
    sealed_private_key TEXT NOT NULL,
    created_at         BIGINT NOT NULL
);

-- `kind` is one of device, runner, app, workload, component, server;
-- `subject_id` is the device, runner, app, workload or component the
-- certificate was issued to.
CREATE TABLE certificates (
    serial        TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    subject_id    TEXT NOT NULL,
    identity_id   TEXT,
    identity_type TEXT,
    workload_id   TEXT,
    not_before    BIGINT NOT NULL,
    not_after     BIGINT NOT NULL,
    revoked_at    BIGINT,
    created_at    BIGINT NOT NULL
);

CREATE INDEX certificates_by_subject ON certificates (kind, subject_id);
