//! SQL for `workloads`.

use agyn_api_runners::agynio::api::runners::v1 as pb;
use agyn_core::Result;
use agyn_core::page::Page;
use agyn_store::Backend;
use agyn_store::sqlx::{self, AnyConnection, Row, any::AnyRow};

use crate::model::{
    AgentState, FailureReason, ListSort, WorkloadFilter, WorkloadRecord, WorkloadStatus,
};
use crate::store::{Sql, cursor, enum_column, json_column, lock_clause};

const COLUMNS: &str = "id, runner_id, thread_id, agent_id, organization_id, status, agent_state, \
    containers, instance_id, credential_id, last_activity_at, started_at, removed_at, \
    failure_reason, failure_message, allocated_cpu_millicores, allocated_ram_bytes, \
    created_at, updated_at";

fn record_from_row(row: &AnyRow) -> Result<WorkloadRecord, sqlx::Error> {
    let containers: String = row.try_get("containers")?;
    let failure_reason: i64 = row.try_get("failure_reason")?;
    let cpu: i64 = row.try_get("allocated_cpu_millicores")?;
    Ok(WorkloadRecord {
        id: row.try_get("id")?,
        runner_id: row.try_get("runner_id")?,
        runner_name: String::new(),
        thread_id: row.try_get("thread_id")?,
        agent_id: row.try_get("agent_id")?,
        agent_name: String::new(),
        organization_id: row.try_get("organization_id")?,
        status: enum_column(
            "status",
            row.try_get("status")?,
            WorkloadStatus::from_number,
        )?,
        agent_state: enum_column(
            "agent_state",
            row.try_get("agent_state")?,
            AgentState::from_number,
        )?,
        containers: json_column::<Vec<pb::Container>>("containers", &containers)?,
        instance_id: row.try_get("instance_id")?,
        credential_id: row.try_get("credential_id")?,
        last_activity_at: row.try_get("last_activity_at")?,
        started_at: row.try_get("started_at")?,
        removed_at: row.try_get("removed_at")?,
        failure_reason: match failure_reason {
            0 => None,
            number => Some(enum_column(
                "failure_reason",
                number,
                FailureReason::from_number,
            )?),
        },
        failure_message: row.try_get("failure_message")?,
        allocated_cpu_millicores: i32::try_from(cpu).map_err(|_| {
            sqlx::Error::Decode(format!("allocated_cpu_millicores {cpu} is out of range").into())
        })?,
        allocated_ram_bytes: row.try_get("allocated_ram_bytes")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn containers_json(record: &WorkloadRecord) -> String {
    serde_json::to_string(&record.containers).expect("containers serialize")
}

fn reason_number(record: &WorkloadRecord) -> i64 {
    record
        .failure_reason
        .map_or(0, |reason| i64::from(reason.number()))
}

pub(crate) async fn insert(connection: &mut AnyConnection, record: &WorkloadRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO workloads (id, runner_id, thread_id, agent_id, organization_id, status, \
         agent_state, containers, instance_id, credential_id, last_activity_at, started_at, \
         removed_at, failure_reason, failure_message, allocated_cpu_millicores, \
         allocated_ram_bytes, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
         $18, $19)",
    )
    .bind(&record.id)
    .bind(&record.runner_id)
    .bind(&record.thread_id)
    .bind(&record.agent_id)
    .bind(&record.organization_id)
    .bind(i64::from(record.status.number()))
    .bind(i64::from(record.agent_state.number()))
    .bind(containers_json(record))
    .bind(&record.instance_id)
    .bind(&record.credential_id)
    .bind(record.last_activity_at)
    .bind(record.started_at)
    .bind(record.removed_at)
    .bind(reason_number(record))
    .bind(&record.failure_message)
    .bind(i64::from(record.allocated_cpu_millicores))
    .bind(record.allocated_ram_bytes)
    .bind(record.created_at)
    .bind(record.updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub(crate) async fn by_id(
    connection: &mut AnyConnection,
    id: &str,
) -> Result<Option<WorkloadRecord>> {
    select_one(connection, id, "").await
}

/// Reads row `id` inside a write transaction, locking it on PostgreSQL so
/// that concurrent updates apply one after the other. On SQLite the write
/// transaction already holds the database lock.
pub(crate) async fn lock(
    connection: &mut AnyConnection,
    backend: Backend,
    id: &str,
) -> Result<Option<WorkloadRecord>> {
    select_one(connection, id, lock_clause(backend)).await
}

async fn select_one(
    connection: &mut AnyConnection,
    id: &str,
    lock: &str,
) -> Result<Option<WorkloadRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM workloads WHERE id = $1{lock}");
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?;
    Ok(row.as_ref().map(record_from_row).transpose()?)
}

/// Returns the id of the non-terminal workload of a (thread, agent) pair.
pub(crate) async fn active_for_pair(
    connection: &mut AnyConnection,
    thread_id: &str,
    agent_id: &str,
) -> Result<Option<String>> {
    let row = sqlx::query(
        "SELECT id FROM workloads WHERE thread_id = $1 AND agent_id = $2 AND status IN (1, 2, 3)",
    )
    .bind(thread_id)
    .bind(agent_id)
    .fetch_optional(&mut *connection)
    .await?;
    Ok(row.map(|row| row.try_get("id")).transpose()?)
}

pub(crate) async fn by_credential(
    connection: &mut AnyConnection,
    credential_id: &str,
) -> Result<Option<WorkloadRecord>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM workloads WHERE credential_id = $1 \
         ORDER BY created_at DESC, id DESC LIMIT 1"
    );
    let row = sqlx::query(&sql)
        .bind(credential_id)
        .fetch_optional(&mut *connection)
        .await?;
    Ok(row.as_ref().map(record_from_row).transpose()?)
}

/// Writes every mutable column of a workload.
pub(crate) async fn update(connection: &mut AnyConnection, record: &WorkloadRecord) -> Result<()> {
    sqlx::query(
        "UPDATE workloads SET status = $2, agent_state = $3, containers = $4, instance_id = $5, \
         last_activity_at = $6, started_at = $7, removed_at = $8, failure_reason = $9, \
         failure_message = $10, updated_at = $11 WHERE id = $1",
    )
    .bind(&record.id)
    .bind(i64::from(record.status.number()))
    .bind(i64::from(record.agent_state.number()))
    .bind(containers_json(record))
    .bind(&record.instance_id)
    .bind(record.last_activity_at)
    .bind(record.started_at)
    .bind(record.removed_at)
    .bind(reason_number(record))
    .bind(&record.failure_message)
    .bind(record.updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Sets `last_activity_at` and `updated_at` to `now` and the agent state
/// to PROCESSING.
pub(crate) async fn record_activity(
    connection: &mut AnyConnection,
    id: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE workloads SET last_activity_at = $2, agent_state = $3, updated_at = $2 \
         WHERE id = $1",
    )
    .bind(id)
    .bind(now)
    .bind(i64::from(AgentState::Processing.number()))
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Rows a workload list reads.
pub(crate) enum Scope<'a> {
    /// One organization, or every organization for `None`.
    Organization(Option<&'a str>),
    /// One thread.
    Thread(&'a str),
}

/// Returns one page of workloads.
pub(crate) async fn list(
    connection: &mut AnyConnection,
    scope: Scope<'_>,
    filter: &WorkloadFilter,
    sort: ListSort,
    page: &Page,
) -> Result<(Vec<WorkloadRecord>, String)> {
    let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM workloads WHERE 1 = 1"));
    match scope {
        Scope::Organization(Some(org_id)) => {
            let org = sql.text(org_id);
            sql.push(&format!(" AND organization_id = {org}"));
        }
        Scope::Organization(None) => {}
        Scope::Thread(thread_id) => {
            let thread = sql.text(thread_id);
            sql.push(&format!(" AND thread_id = {thread}"));
        }
    }

    sql.and_in_text("agent_id", &filter.agent_ids);
    sql.and_in_text("runner_id", &filter.runner_ids);
    sql.and_in_text("thread_id", &filter.thread_ids);
    let statuses: Vec<i64> = filter
        .statuses
        .iter()
        .map(|status| i64::from(status.number()))
        .collect();
    sql.and_in_int("status", &statuses);
    if let Some(after) = filter.started_after {
        let after = sql.int(after);
        sql.push(&format!(" AND created_at >= {after}"));
    }
    if let Some(before) = filter.started_before {
        let before = sql.int(before);
        sql.push(&format!(" AND created_at < {before}"));
    }
    sql.push_page(sort, page);

    let rows = sql.query().fetch_all(&mut *connection).await?;
    let records = rows
        .iter()
        .map(record_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page.finish(records, |record| {
        cursor(
            sort.field,
            record.status.number(),
            record.created_at,
            &record.id,
        )
    }))
}

/// Returns whether the organization has a non-terminal workload.
pub(crate) async fn organization_has_active(
    connection: &mut AnyConnection,
    org_id: &str,
) -> Result<bool> {
    let row = sqlx::query(
        "SELECT 1 AS active FROM workloads WHERE organization_id = $1 AND status IN (1, 2, 3) \
         LIMIT 1",
    )
    .bind(org_id)
    .fetch_optional(&mut *connection)
    .await?;
    Ok(row.is_some())
}

/// Returns the ids of the RUNNING workloads whose agent is PROCESSING and
/// whose last activity came before `before` (µs).
pub(crate) async fn processing_before(
    connection: &mut AnyConnection,
    before: i64,
) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT id FROM workloads WHERE status = $1 AND agent_state = $2 \
         AND last_activity_at < $3 ORDER BY id",
    )
    .bind(i64::from(WorkloadStatus::Running.number()))
    .bind(i64::from(AgentState::Processing.number()))
    .bind(before)
    .fetch_all(&mut *connection)
    .await?;
    Ok(rows
        .iter()
        .map(|row| row.try_get("id"))
        .collect::<Result<Vec<String>, _>>()?)
}
