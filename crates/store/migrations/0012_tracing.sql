-- tracing: OpenTelemetry spans, one row per (trace_id, span_id).
--
-- Ids are lowercase hex (trace 32 characters, span 16, parent '' for a
-- root span), and the encoded Span, Resource and InstrumentationScope
-- messages are standard base64, because the two backends share no binary
-- column type. Times ending in _ns are nanoseconds since the Unix epoch
-- (end_ns 0 while the span runs); created_at and updated_at are server
-- microseconds.
CREATE TABLE spans (
    trace_id        TEXT NOT NULL,
    span_id         TEXT NOT NULL,
    parent_span_id  TEXT NOT NULL,
    name            TEXT NOT NULL,
    kind            BIGINT NOT NULL,
    start_ns        BIGINT NOT NULL,
    end_ns          BIGINT NOT NULL,
    status_code     BIGINT NOT NULL,
    status_message  TEXT NOT NULL,
    organization_id TEXT,
    workload_id     TEXT,
    message_id      TEXT,
    span_pb         TEXT NOT NULL,
    resource_pb     TEXT NOT NULL,
    scope_pb        TEXT NOT NULL,
    resource_hash   TEXT NOT NULL,
    scope_hash      TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (trace_id, span_id)
);

-- The primary key serves lookups by trace_id.
CREATE INDEX spans_organization_start ON spans (organization_id, start_ns);
CREATE INDEX spans_message ON spans (message_id);
CREATE INDEX spans_parent ON spans (parent_span_id);
CREATE INDEX spans_updated ON spans (updated_at);
