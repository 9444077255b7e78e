//! Names resolved when records are read: runner names from `runners` and
//! agent names from the agents service's `agents` table.

use std::collections::HashMap;

use agyn_core::Result;
use agyn_store::sqlx::{self, AnyConnection, Row};

use crate::model::WorkloadRecord;
use crate::store::{Sql, runners};

/// Fills `runner_name` and `agent_name` of every record. A runner or agent
/// that no longer exists leaves its name empty.
pub(crate) async fn resolve_workloads(
    connection: &mut AnyConnection,
    records: &mut [WorkloadRecord],
) -> Result<()> {
    let runner_ids = distinct(records.iter().map(|record| record.runner_id.as_str()));
    let agent_ids = distinct(records.iter().map(|record| record.agent_id.as_str()));
    let runner_names: HashMap<String, String> = runners::names(connection, &runner_ids)
        .await?
        .into_iter()
        .collect();
    let agent_names = agent_names(connection, &agent_ids).await?;
    for record in records {
        record.runner_name = runner_names
            .get(&record.runner_id)
            .cloned()
            .unwrap_or_default();
        record.agent_name = agent_names
            .get(&record.agent_id)
            .cloned()
            .unwrap_or_default();
    }
    Ok(())
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

/// Reads agent names by id from the agents service's table, which this
/// service reads only by `id` and `name`.
async fn agent_names(
    connection: &mut AnyConnection,
    ids: &[String],
) -> Result<HashMap<String, String>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut sql = Sql::new("SELECT id, name FROM agents WHERE 1 = 1");
    sql.and_in_text("id", ids);
    let rows = sql.query().fetch_all(&mut *connection).await?;
    Ok(rows
        .iter()
        .map(|row| Ok((row.try_get("id")?, row.try_get("name")?)))
        .collect::<Result<_, sqlx::Error>>()?)
}
