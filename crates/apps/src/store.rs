//! SQL for `apps` and `app_installations`.

use agyn_core::Result;
use agyn_core::page::{Cursor, Page};
use agyn_store::Backend;
use agyn_store::sqlx::{self, AnyConnection, Row, any::AnyRow};

use crate::model::{AppRecord, InstallationRecord, Permission, Visibility};

const APP_COLUMNS: &str = "id, organization_id, slug, name, description, icon, visibility, \
    permissions, endpoint, created_at, updated_at";

/// Installation columns, read joined with the app row for `app_slug`.
const INSTALLATION_COLUMNS: &str = "i.id, i.app_id, a.slug AS app_slug, i.organization_id, \
    i.slug, i.configuration, i.created_at, i.updated_at";

const INSTALLATION_FROM: &str = "app_installations i JOIN apps a ON a.id = i.app_id";

/// Maximum number of installation ids a `REFERENCED` error lists.
pub(crate) const MAX_REFERENCED_IDS: i64 = 10;

/// Returns the row lock clause of a read inside a write transaction:
/// `FOR UPDATE` on PostgreSQL, nothing on SQLite, whose write transaction
/// already holds the database lock.
fn lock_clause(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => " FOR UPDATE",
        Backend::Sqlite => "",
    }
}

fn decode_error(message: String) -> sqlx::Error {
    sqlx::Error::Decode(message.into())
}

fn app_from_row(row: &AnyRow) -> Result<AppRecord, sqlx::Error> {
    let visibility: i64 = row.try_get("visibility")?;
    let permissions: String = row.try_get("permissions")?;
    let names: Vec<String> = serde_json::from_str(&permissions)
        .map_err(|error| decode_error(format!("invalid JSON in permissions: {error}")))?;
    let permissions = names
        .iter()
        .map(|name| {
            Permission::parse(name)
                .ok_or_else(|| decode_error(format!("unknown stored permission {name:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AppRecord {
        id: row.try_get("id")?,
        organization_id: row.try_get("organization_id")?,
        slug: row.try_get("slug")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        icon: row.try_get("icon")?,
        visibility: Visibility::from_number(visibility)
            .ok_or_else(|| decode_error(format!("unknown visibility number {visibility}")))?,
        permissions,
        endpoint: row.try_get("endpoint")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn permissions_json(record: &AppRecord) -> String {
    let names: Vec<&str> = record
        .permissions
        .iter()
        .map(|permission| permission.name())
        .collect();
    serde_json::to_string(&names).expect("a string list serializes")
}

fn installation_from_row(row: &AnyRow) -> Result<InstallationRecord, sqlx::Error> {
    let configuration: String = row.try_get("configuration")?;
    Ok(InstallationRecord {
        id: row.try_get("id")?,
        app_id: row.try_get("app_id")?,
        app_slug: row.try_get("app_slug")?,
        organization_id: row.try_get("organization_id")?,
        slug: row.try_get("slug")?,
        configuration: serde_json::from_str(&configuration)
            .map_err(|error| decode_error(format!("invalid JSON in configuration: {error}")))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn cursor(created_at: i64, id: &str) -> Cursor {
    Cursor {
        position: created_at,
        id: id.to_string(),
    }
}

pub(crate) async fn insert_app(
    connection: &mut AnyConnection,
    record: &AppRecord,
    token_hash: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO apps (id, organization_id, slug, name, description, icon, visibility, \
         permissions, endpoint, token_hash, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&record.id)
    .bind(&record.organization_id)
    .bind(&record.slug)
    .bind(&record.name)
    .bind(&record.description)
    .bind(&record.icon)
    .bind(i64::from(record.visibility.number()))
    .bind(permissions_json(record))
    .bind(&record.endpoint)
    .bind(token_hash)
    .bind(record.created_at)
    .bind(record.updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub(crate) async fn app_by_id(
    connection: &mut AnyConnection,
    id: &str,
) -> Result<Option<AppRecord>> {
    select_app(connection, "id = $1", &[id], "").await
}

/// Reads app `id` inside a write transaction, locking the row on
/// PostgreSQL.
pub(crate) async fn lock_app(
    connection: &mut AnyConnection,
    backend: Backend,
    id: &str,
) -> Result<Option<AppRecord>> {
    select_app(connection, "id = $1", &[id], lock_clause(backend)).await
}

pub(crate) async fn app_by_slug(
    connection: &mut AnyConnection,
    org_id: &str,
    slug: &str,
) -> Result<Option<AppRecord>> {
    select_app(
        connection,
        "organization_id = $1 AND slug = $2",
        &[org_id, slug],
        "",
    )
    .await
}

async fn select_app(
    connection: &mut AnyConnection,
    condition: &str,
    values: &[&str],
    lock: &str,
) -> Result<Option<AppRecord>> {
    let sql = format!("SELECT {APP_COLUMNS} FROM apps WHERE {condition}{lock}");
    let row = fetch_optional(connection, &sql, values).await?;
    Ok(row.as_ref().map(app_from_row).transpose()?)
}

/// Runs `sql` with text `values` bound to `$1`, `$2`, … and returns the
/// row it finds, if any.
async fn fetch_optional(
    connection: &mut AnyConnection,
    sql: &str,
    values: &[&str],
) -> Result<Option<AnyRow>> {
    let mut query = sqlx::query(sql);
    for value in values {
        query = query.bind(value.to_string());
    }
    Ok(query.fetch_optional(&mut *connection).await?)
}

/// Returns the app whose service token hashes to `token_hash`, with the
/// stored hash for the constant-time comparison, and locks its row on
/// PostgreSQL.
pub(crate) async fn lock_app_by_token_hash(
    connection: &mut AnyConnection,
    backend: Backend,
    token_hash: &str,
) -> Result<Option<(AppRecord, String)>> {
    let lock = lock_clause(backend);
    let sql = format!("SELECT {APP_COLUMNS}, token_hash FROM apps WHERE token_hash = $1{lock}");
    let row = sqlx::query(&sql)
        .bind(token_hash)
        .fetch_optional(&mut *connection)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some((app_from_row(&row)?, row.try_get("token_hash")?)))
}

/// Apps a list returns.
pub(crate) enum AppScope<'a> {
    /// The apps owned by one organization, optionally of one visibility.
    Organization(&'a str, Option<Visibility>),
    /// PUBLIC apps of every organization.
    Public,
}

/// Returns one page of apps in `(created_at, id)` order.
pub(crate) async fn list_apps(
    connection: &mut AnyConnection,
    scope: AppScope<'_>,
    page: &Page,
) -> Result<(Vec<AppRecord>, String)> {
    let mut sql = format!("SELECT {APP_COLUMNS} FROM apps WHERE ");
    let mut texts: Vec<String> = Vec::new();
    let mut numbers: Vec<i64> = Vec::new();
    match scope {
        AppScope::Organization(org_id, visibility) => {
            texts.push(org_id.to_string());
            sql.push_str("organization_id = $1");
            if let Some(visibility) = visibility {
                numbers.push(i64::from(visibility.number()));
                sql.push_str(" AND visibility = $2");
            }
        }
        AppScope::Public => {
            numbers.push(i64::from(Visibility::Public.number()));
            sql.push_str("visibility = $1");
        }
    }
    let rows = fetch_page(connection, sql, "", texts, numbers, page).await?;
    let records = rows
        .iter()
        .map(app_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page.finish(records, |record| cursor(record.created_at, &record.id)))
}

/// Appends the keyset condition, order and limit of `page` to a query
/// whose text values come first and number values second, and runs it.
/// `prefix` qualifies the `created_at` and `id` columns, such as `i.`.
async fn fetch_page(
    connection: &mut AnyConnection,
    mut sql: String,
    prefix: &str,
    texts: Vec<String>,
    mut numbers: Vec<i64>,
    page: &Page,
) -> Result<Vec<AnyRow>> {
    let mut after_id = None;
    if let Some(after) = &page.after {
        numbers.push(after.position);
        let created = texts.len() + numbers.len();
        after_id = Some(after.id.clone());
        let id = texts.len() + numbers.len() + 1;
        sql.push_str(&format!(
            " AND ({prefix}created_at > ${created} OR ({prefix}created_at = ${created} \
             AND {prefix}id > ${id}))"
        ));
    }
    let limit = texts.len() + numbers.len() + usize::from(after_id.is_some()) + 1;
    sql.push_str(&format!(
        " ORDER BY {prefix}created_at, {prefix}id LIMIT ${limit}"
    ));
    let mut query = sqlx::query(&sql);
    for text in texts {
        query = query.bind(text);
    }
    for number in numbers {
        query = query.bind(number);
    }
    if let Some(id) = after_id {
        query = query.bind(id);
    }
    Ok(query
        .bind(page.fetch_limit())
        .fetch_all(&mut *connection)
        .await?)
}

/// Writes the mutable columns of an app.
pub(crate) async fn update_app(connection: &mut AnyConnection, record: &AppRecord) -> Result<()> {
    sqlx::query(
        "UPDATE apps SET name = $2, description = $3, icon = $4, visibility = $5, \
         endpoint = $6, updated_at = $7 WHERE id = $1",
    )
    .bind(&record.id)
    .bind(&record.name)
    .bind(&record.description)
    .bind(&record.icon)
    .bind(i64::from(record.visibility.number()))
    .bind(&record.endpoint)
    .bind(record.updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Deletes the app row and its identity.
pub(crate) async fn delete_app(connection: &mut AnyConnection, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM apps WHERE id = $1")
        .bind(id)
        .execute(&mut *connection)
        .await?;
    sqlx::query("DELETE FROM identities WHERE id = $1")
        .bind(id)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Returns the ids of the apps owned by `org_id`.
pub(crate) async fn apps_of_organization(
    connection: &mut AnyConnection,
    org_id: &str,
) -> Result<Vec<String>> {
    let rows = sqlx::query("SELECT id FROM apps WHERE organization_id = $1 ORDER BY id")
        .bind(org_id)
        .fetch_all(&mut *connection)
        .await?;
    Ok(rows
        .iter()
        .map(|row| row.try_get("id"))
        .collect::<Result<_, _>>()?)
}

pub(crate) async fn insert_installation(
    connection: &mut AnyConnection,
    record: &InstallationRecord,
    configuration_json: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO app_installations (id, app_id, organization_id, slug, configuration, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&record.id)
    .bind(&record.app_id)
    .bind(&record.organization_id)
    .bind(&record.slug)
    .bind(configuration_json)
    .bind(record.created_at)
    .bind(record.updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub(crate) async fn installation_by_id(
    connection: &mut AnyConnection,
    id: &str,
) -> Result<Option<InstallationRecord>> {
    select_installation(connection, "i.id = $1", &[id]).await
}

pub(crate) async fn installation_by_slug(
    connection: &mut AnyConnection,
    org_id: &str,
    slug: &str,
) -> Result<Option<InstallationRecord>> {
    select_installation(
        connection,
        "i.organization_id = $1 AND i.slug = $2",
        &[org_id, slug],
    )
    .await
}

pub(crate) async fn installation_of_app(
    connection: &mut AnyConnection,
    app_id: &str,
    org_id: &str,
) -> Result<Option<InstallationRecord>> {
    select_installation(
        connection,
        "i.app_id = $1 AND i.organization_id = $2",
        &[app_id, org_id],
    )
    .await
}

async fn select_installation(
    connection: &mut AnyConnection,
    condition: &str,
    values: &[&str],
) -> Result<Option<InstallationRecord>> {
    let sql = format!("SELECT {INSTALLATION_COLUMNS} FROM {INSTALLATION_FROM} WHERE {condition}");
    let row = fetch_optional(connection, &sql, values).await?;
    Ok(row.as_ref().map(installation_from_row).transpose()?)
}

/// Returns one page of installations in `(created_at, id)` order, filtered
/// by organization, app or both.
pub(crate) async fn list_installations(
    connection: &mut AnyConnection,
    org_id: Option<&str>,
    app_id: Option<&str>,
    page: &Page,
) -> Result<(Vec<InstallationRecord>, String)> {
    let mut sql = format!("SELECT {INSTALLATION_COLUMNS} FROM {INSTALLATION_FROM} WHERE 1 = 1");
    let mut texts = Vec::new();
    for (column, value) in [("i.organization_id", org_id), ("i.app_id", app_id)] {
        if let Some(value) = value {
            texts.push(value.to_string());
            sql.push_str(&format!(" AND {column} = ${}", texts.len()));
        }
    }
    let rows = fetch_page(connection, sql, "i.", texts, Vec::new(), page).await?;
    let records = rows
        .iter()
        .map(installation_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page.finish(records, |record| cursor(record.created_at, &record.id)))
}

/// Writes the slug and configuration of an installation.
pub(crate) async fn update_installation(
    connection: &mut AnyConnection,
    record: &InstallationRecord,
    configuration_json: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE app_installations SET slug = $2, configuration = $3, updated_at = $4 \
         WHERE id = $1",
    )
    .bind(&record.id)
    .bind(&record.slug)
    .bind(configuration_json)
    .bind(record.updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Deletes installation `id` and returns whether a row was deleted.
pub(crate) async fn delete_installation(connection: &mut AnyConnection, id: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM app_installations WHERE id = $1")
        .bind(id)
        .execute(&mut *connection)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Returns up to `limit` ids of installations of app `app_id`, oldest
/// first.
pub(crate) async fn installation_ids_of_app(
    connection: &mut AnyConnection,
    app_id: &str,
    limit: i64,
) -> Result<Vec<String>> {
    ids(
        connection,
        "SELECT id FROM app_installations WHERE app_id = $1 ORDER BY created_at, id LIMIT $2",
        app_id,
        limit,
    )
    .await
}

/// Returns up to `limit` ids of installations into organization `org_id`.
pub(crate) async fn installation_ids_in_organization(
    connection: &mut AnyConnection,
    org_id: &str,
    limit: i64,
) -> Result<Vec<String>> {
    ids(
        connection,
        "SELECT id FROM app_installations WHERE organization_id = $1 \
         ORDER BY created_at, id LIMIT $2",
        org_id,
        limit,
    )
    .await
}

async fn ids(
    connection: &mut AnyConnection,
    sql: &str,
    key: &str,
    limit: i64,
) -> Result<Vec<String>> {
    let rows = sqlx::query(sql)
        .bind(key)
        .bind(limit)
        .fetch_all(&mut *connection)
        .await?;
    Ok(rows
        .iter()
        .map(|row| row.try_get("id"))
        .collect::<Result<_, _>>()?)
}

/// Returns whether an agent of `org_id` has the nickname `nickname`.
pub(crate) async fn agent_nickname_taken(
    connection: &mut AnyConnection,
    org_id: &str,
    nickname: &str,
) -> Result<bool> {
    let row =
        sqlx::query("SELECT 1 AS taken FROM agents WHERE organization_id = $1 AND nickname = $2")
            .bind(org_id)
            .bind(nickname)
            .fetch_optional(&mut *connection)
            .await?;
    Ok(row.is_some())
}
