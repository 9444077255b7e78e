//! SQL for every table of the agents service. Lists are ordered by
//! `(created_at, id)` ascending.

pub(crate) mod agents;
pub(crate) mod attachments;
pub(crate) mod envs;
pub(crate) mod hooks;
pub(crate) mod init_scripts;
pub(crate) mod mcps;
pub(crate) mod skills;
pub(crate) mod volumes;

use agyn_core::Result;
use agyn_core::page::{Cursor, Page};
use agyn_store::sqlx::{self, AnyConnection, Row, any::AnyRow};

use crate::model::{Resources, Target};

/// Rows deleted per statement during the organization purge.
pub(crate) const DELETE_BATCH: i64 = 1_000;

/// Appends the keyset condition and order of an ascending `(created_at,
/// id)` page to `sql`, whose last placeholder is `$<next - 1>`, and
/// returns the number of the next placeholder.
fn push_page(sql: &mut String, page: &Page, mut next: usize) -> usize {
    if page.after.is_some() {
        sql.push_str(&format!(
            " AND (created_at > ${next} OR (created_at = ${next} AND id > ${}))",
            next + 1
        ));
        next += 2;
    }
    sql.push_str(&format!(" ORDER BY created_at, id LIMIT ${next}"));
    next + 1
}

/// Reads one record from a row.
pub(crate) type FromRow<T> = fn(&AnyRow) -> Result<T, sqlx::Error>;

/// Runs `select` (`SELECT <columns> FROM <table>`) for row `id`.
pub(crate) async fn select_by_id<T>(
    connection: &mut AnyConnection,
    select: &str,
    id: &str,
    from_row: FromRow<T>,
) -> Result<Option<T>> {
    let sql = format!("{select} WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?;
    Ok(row.as_ref().map(from_row).transpose()?)
}

/// Runs `select` for every row where `column = value`, in list order.
pub(crate) async fn select_all<T>(
    connection: &mut AnyConnection,
    select: &str,
    column: &str,
    value: &str,
    from_row: FromRow<T>,
) -> Result<Vec<T>> {
    let sql = format!("{select} WHERE {column} = $1 ORDER BY created_at, id");
    let rows = sqlx::query(&sql)
        .bind(value)
        .fetch_all(&mut *connection)
        .await?;
    Ok(rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?)
}

/// Runs `select` for one page of the rows matching every `(column,
/// value)` of `filters`, and returns them with the next page token.
/// `key` returns a record's `(created_at, id)` cursor.
pub(crate) async fn select_page<T>(
    connection: &mut AnyConnection,
    select: &str,
    filters: &[(&str, &str)],
    page: &Page,
    from_row: FromRow<T>,
    key: fn(&T) -> Cursor,
) -> Result<(Vec<T>, String)> {
    let conditions: Vec<String> = filters
        .iter()
        .enumerate()
        .map(|(index, (column, _))| format!("{column} = ${}", index + 1))
        .collect();
    let mut sql = format!("{select} WHERE {}", conditions.join(" AND "));
    push_page(&mut sql, page, filters.len() + 1);
    let mut query = sqlx::query(&sql);
    for (_, value) in filters {
        query = query.bind(*value);
    }
    let rows = bind_page(query, page).fetch_all(&mut *connection).await?;
    let records = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(page.finish(records, key))
}

/// Binds the page cursor and limit that [`push_page`] referenced.
fn bind_page<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    page: &'q Page,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    if let Some(after) = &page.after {
        query = query.bind(after.position).bind(after.id.as_str());
    }
    query.bind(page.fetch_limit())
}

/// Returns the cursor of a row for the next page token.
pub(crate) fn cursor(created_at: i64, id: &str) -> Cursor {
    Cursor {
        position: created_at,
        id: id.to_string(),
    }
}

pub(crate) fn resources_json(resources: &Resources) -> String {
    serde_json::to_string(resources).expect("resources serialize")
}

pub(crate) fn resources_from_row(row: &AnyRow) -> Result<Resources, sqlx::Error> {
    let text: String = row.try_get("resources")?;
    serde_json::from_str(&text).map_err(|error| sqlx::Error::Decode(Box::new(error)))
}

pub(crate) fn target_from_row(row: &AnyRow) -> Result<Target, sqlx::Error> {
    let target_type: String = row.try_get("target_type")?;
    let target_id: String = row.try_get("target_id")?;
    Target::from_stored(&target_type, target_id)
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown target type {target_type:?}").into()))
}

pub(crate) fn decode_error(what: &str, value: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("unknown {what} {value:?}").into())
}

/// Sets `updated_at = now` on agent `agent_id`, never moving it back, and
/// returns the new value.
pub(crate) async fn bump_agent(
    connection: &mut AnyConnection,
    agent_id: &str,
    now: i64,
) -> Result<i64> {
    let row = sqlx::query(
        "UPDATE agents SET updated_at = CASE WHEN updated_at >= $2 THEN updated_at + 1 ELSE $2 END \
         WHERE id = $1 RETURNING updated_at",
    )
    .bind(agent_id)
    .bind(now)
    .fetch_one(&mut *connection)
    .await?;
    Ok(row.try_get("updated_at")?)
}

/// Deletes the rows of `table` that belong to `target`.
pub(crate) async fn delete_by_target(
    connection: &mut AnyConnection,
    table: &str,
    target: &Target,
) -> Result<u64> {
    let sql = format!("DELETE FROM {table} WHERE target_type = $1 AND target_id = $2");
    let done = sqlx::query(&sql)
        .bind(target.type_name())
        .bind(target.id())
        .execute(&mut *connection)
        .await?;
    Ok(done.rows_affected())
}

/// Tables whose rows belong to a target container.
pub(crate) const TARGET_TABLES: [&str; 4] = [
    "agent_envs",
    "agent_init_scripts",
    "volume_attachments",
    "image_pull_secret_attachments",
];

/// Deletes every row of `table` with this id and returns whether one
/// existed.
pub(crate) async fn delete_by_id(
    connection: &mut AnyConnection,
    table: &str,
    id: &str,
) -> Result<bool> {
    let sql = format!("DELETE FROM {table} WHERE id = $1");
    let done = sqlx::query(&sql).bind(id).execute(&mut *connection).await?;
    Ok(done.rows_affected() > 0)
}
