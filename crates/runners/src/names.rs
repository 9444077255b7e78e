//! Names resolved when records are read: runner names from `runners`, and
//! agent and volume definition names from the agents service's `agents`
//! and `volumes` tables, which this service reads only by `id` and `name`.

use std::collections::HashMap;

use agyn_core::Result;
use agyn_store::sqlx::{self, AnyConnection, Row};

use crate::model::{VolumeRecord, WorkloadRecord};
use crate::store::Sql;

/// Fills `runner_name` and `agent_name` of every record. A runner or agent
/// that no longer exists leaves its name empty.
pub(crate) async fn resolve_workloads(
    connection: &mut AnyConnection,
    records: &mut [WorkloadRecord],
) -> Result<()> {
    let runner_ids = distinct(records.iter().map(|record| record.runner_id.as_str()));
    let agent_ids = distinct(records.iter().map(|record| record.agent_id.as_str()));
    let runner_names = names_by_id(connection, "runners", &runner_ids).await?;
    let agent_names = names_by_id(connection, "agents", &agent_ids).await?;
    for record in records {
        record.runner_name = name_of(&runner_names, &record.runner_id);
        record.agent_name = name_of(&agent_names, &record.agent_id);
    }
    Ok(())
}

/// Fills `volume_name` of every record. A deleted volume definition leaves
/// it empty.
///
/// NOTE: `attachments` stay empty. They name the agents, MCP servers and
/// hooks that mount the definition, which the agents service stores in
/// tables this service does not read.
pub(crate) async fn resolve_volumes(
    connection: &mut AnyConnection,
    records: &mut [VolumeRecord],
) -> Result<()> {
    let volume_ids = distinct(records.iter().map(|record| record.volume_id.as_str()));
    let volume_names = names_by_id(connection, "volumes", &volume_ids).await?;
    for record in records {
        record.volume_name = name_of(&volume_names, &record.volume_id);
    }
    Ok(())
}

fn name_of(names: &HashMap<String, String>, id: &str) -> String {
    names.get(id).cloned().unwrap_or_default()
}

fn distinct<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut ids: Vec<String> = ids
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Reads the `name` of the rows of `table` whose `id` is in `ids`.
async fn names_by_id(
    connection: &mut AnyConnection,
    table: &str,
    ids: &[String],
) -> Result<HashMap<String, String>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut sql = Sql::new(&format!("SELECT id, name FROM {table} WHERE 1 = 1"));
    sql.and_in_text("id", ids);
    let rows = sql.query().fetch_all(&mut *connection).await?;
    Ok(rows
        .iter()
        .map(|row| Ok((row.try_get("id")?, row.try_get("name")?)))
        .collect::<Result<_, sqlx::Error>>()?)
}
