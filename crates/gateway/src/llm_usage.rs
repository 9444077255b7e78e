//! The usage record of each LLM proxy call.

use agyn_store::Db;
use agyn_store::sqlx;

/// One finished call. Token counts are `None` when the response carried no
/// usage.
#[derive(Debug)]
pub(crate) struct Usage<'a> {
    pub request_id: &'a str,
    pub organization_id: &'a str,
    pub model_id: &'a str,
    pub provider_id: &'a str,
    pub identity_id: &'a str,
    pub workload_id: &'a str,
    pub thread_id: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub streamed: bool,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub duration_ms: u64,
}

/// Stores one call's usage row.
pub(crate) async fn record(db: &Db, usage: &Usage<'_>) -> Result<(), sqlx::Error> {
    let count = |value: Option<u64>| value.map(|value| i64::try_from(value).unwrap_or(i64::MAX));
    sqlx::query(
        "INSERT INTO llm_usage (id, request_id, organization_id, model_id, provider_id, \
         identity_id, workload_id, thread_id, route, status, streamed, input_tokens, \
         output_tokens, duration_ms, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(usage.request_id)
    .bind(usage.organization_id)
    .bind(usage.model_id)
    .bind(usage.provider_id)
    .bind(usage.identity_id)
    .bind(usage.workload_id)
    .bind(usage.thread_id)
    .bind(usage.route)
    .bind(i64::from(usage.status))
    .bind(i64::from(usage.streamed))
    .bind(count(usage.input_tokens))
    .bind(count(usage.output_tokens))
    .bind(i64::try_from(usage.duration_ms).unwrap_or(i64::MAX))
    .bind(agyn_core::time::now_micros())
    .execute(db.pool())
    .await?;
    Ok(())
}
