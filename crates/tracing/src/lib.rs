//! Tracing: OpenTelemetry spans from agent workloads, queried per run.
