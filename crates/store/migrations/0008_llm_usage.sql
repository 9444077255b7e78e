-- One row per call through the LLM proxy: who called which model, the
-- upstream status and the token usage when the answer reported it.
CREATE TABLE llm_usage (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    -- A call that ends while its organization is purged is not kept.
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    model_id TEXT NOT NULL,
    provider_id TEXT NOT NULL,
    identity_id TEXT NOT NULL,
    workload_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    route TEXT NOT NULL,
    status BIGINT NOT NULL,
    streamed BIGINT NOT NULL,
    input_tokens BIGINT,
    output_tokens BIGINT,
    duration_ms BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE INDEX llm_usage_by_organization ON llm_usage (organization_id, created_at);
CREATE INDEX llm_usage_by_model ON llm_usage (model_id, created_at);
