//! SQL for organizations and memberships.

use agyn_core::Result;
use agyn_core::page::{Cursor, Page};
use agyn_store::sqlx::{self, AnyConnection, Row, any::AnyRow};
use agyn_store::{Backend, Db};

/// Lifecycle state of an organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrgState {
    Active,
    Deleting,
}

impl OrgState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Deleting => "deleting",
        }
    }

    fn parse(value: &str) -> Result<Self, sqlx::Error> {
        match value {
            "active" => Ok(Self::Active),
            "deleting" => Ok(Self::Deleting),
            other => Err(sqlx::Error::Decode(
                format!("unknown organization state {other:?}").into(),
            )),
        }
    }
}

/// A stored organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgRecord {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub state: OrgState,
    pub deletion_step: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Role of a membership; the name is also the tuple relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Owner,
    Member,
}

impl Role {
    pub fn relation(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Member => "member",
        }
    }

    fn parse(value: &str) -> Result<Self, sqlx::Error> {
        match value {
            "owner" => Ok(Self::Owner),
            "member" => Ok(Self::Member),
            other => Err(sqlx::Error::Decode(
                format!("unknown membership role {other:?}").into(),
            )),
        }
    }
}

/// Invitation state of a membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Active,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
        }
    }

    fn parse(value: &str) -> Result<Self, sqlx::Error> {
        match value {
            "pending" => Ok(Self::Pending),
            "active" => Ok(Self::Active),
            other => Err(sqlx::Error::Decode(
                format!("unknown membership status {other:?}").into(),
            )),
        }
    }
}

/// A stored membership with the names resolved at read time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipRecord {
    pub id: String,
    pub organization_id: String,
    pub organization_name: String,
    pub organization_slug: String,
    pub identity_id: String,
    pub username: String,
    pub display_name: String,
    pub role: Role,
    pub status: Status,
    pub invited_by: String,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

const ORG_COLUMNS: &str =
    "o.id, o.name, o.slug, o.state, o.deletion_step, o.created_at, o.updated_at";

const MEMBERSHIP_SELECT: &str = "SELECT m.id, m.organization_id, o.name AS organization_name, \
    o.slug AS organization_slug, m.identity_id, COALESCE(u.username, '') AS username, \
    COALESCE(u.name, '') AS display_name, m.role, m.status, m.invited_by, m.expires_at, \
    m.created_at, m.updated_at FROM memberships m \
    JOIN organizations o ON o.id = m.organization_id \
    LEFT JOIN users u ON u.id = m.identity_id";

fn org_from_row(row: &AnyRow) -> Result<OrgRecord, sqlx::Error> {
    Ok(OrgRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        slug: row.try_get("slug")?,
        state: OrgState::parse(row.try_get("state")?)?,
        deletion_step: row.try_get("deletion_step")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn membership_from_row(row: &AnyRow) -> Result<MembershipRecord, sqlx::Error> {
    Ok(MembershipRecord {
        id: row.try_get("id")?,
        organization_id: row.try_get("organization_id")?,
        organization_name: row.try_get("organization_name")?,
        organization_slug: row.try_get("organization_slug")?,
        identity_id: row.try_get("identity_id")?,
        username: row.try_get("username")?,
        display_name: row.try_get("display_name")?,
        role: Role::parse(row.try_get("role")?)?,
        status: Status::parse(row.try_get("status")?)?,
        invited_by: row.try_get("invited_by")?,
        expires_at: row.try_get("expires_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub async fn org_by_id(connection: &mut AnyConnection, id: &str) -> Result<Option<OrgRecord>> {
    let sql = format!("SELECT {ORG_COLUMNS} FROM organizations o WHERE o.id = $1");
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?;
    Ok(row.as_ref().map(org_from_row).transpose()?)
}

/// Locks the organization row until the transaction ends, so that checks
/// such as "is this the last owner" cannot race on PostgreSQL. SQLite
/// write transactions are already exclusive.
pub async fn lock_org(connection: &mut AnyConnection, backend: Backend, id: &str) -> Result<()> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT id FROM organizations WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *connection)
            .await?;
    }
    Ok(())
}

pub async fn slug_taken(connection: &mut AnyConnection, slug: &str) -> Result<bool> {
    let row = sqlx::query("SELECT 1 AS taken FROM organizations WHERE slug = $1")
        .bind(slug)
        .fetch_optional(&mut *connection)
        .await?;
    Ok(row.is_some())
}

pub async fn insert_org(connection: &mut AnyConnection, org: &OrgRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO organizations (id, name, slug, state, deletion_step, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&org.id)
    .bind(&org.name)
    .bind(&org.slug)
    .bind(org.state.as_str())
    .bind(&org.deletion_step)
    .bind(org.created_at)
    .bind(org.updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub async fn update_org(connection: &mut AnyConnection, org: &OrgRecord) -> Result<()> {
    sqlx::query(
        "UPDATE organizations SET name = $2, slug = $3, state = $4, deletion_step = $5, \
         updated_at = $6 WHERE id = $1",
    )
    .bind(&org.id)
    .bind(&org.name)
    .bind(&org.slug)
    .bind(org.state.as_str())
    .bind(&org.deletion_step)
    .bind(org.updated_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub async fn delete_org(connection: &mut AnyConnection, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM memberships WHERE organization_id = $1")
        .bind(id)
        .execute(&mut *connection)
        .await?;
    sqlx::query("DELETE FROM organizations WHERE id = $1")
        .bind(id)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Ids of organizations being deleted, oldest first.
pub async fn deleting_orgs(db: &Db) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT id FROM organizations WHERE state = 'deleting' ORDER BY updated_at, id",
    )
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .iter()
        .map(|row| row.try_get("id"))
        .collect::<Result<_, _>>()?)
}

/// One page of organizations in `(created_at, id)` order: all of them, or
/// only the ACTIVE ones among `ids` when given.
pub async fn list_orgs(
    db: &Db,
    ids: Option<&[String]>,
    page: &Page,
) -> Result<(Vec<OrgRecord>, String)> {
    let mut sql = format!("SELECT {ORG_COLUMNS} FROM organizations o WHERE 1 = 1");
    let mut next = 1;
    if let Some(ids) = ids {
        if ids.is_empty() {
            return Ok((Vec::new(), String::new()));
        }
        let placeholders: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 1)).collect();
        sql.push_str(&format!(
            " AND o.state = 'active' AND o.id IN ({})",
            placeholders.join(", ")
        ));
        next += ids.len();
    }
    if page.after.is_some() {
        sql.push_str(&format!(
            " AND (o.created_at > ${next} OR (o.created_at = ${next} AND o.id > ${}))",
            next + 1
        ));
        next += 2;
    }
    sql.push_str(&format!(" ORDER BY o.created_at, o.id LIMIT ${next}"));
    let mut query = sqlx::query(&sql);
    for id in ids.unwrap_or_default() {
        query = query.bind(id);
    }
    if let Some(cursor) = &page.after {
        query = query.bind(cursor.position).bind(&cursor.id);
    }
    let rows = query.bind(page.fetch_limit()).fetch_all(db.pool()).await?;
    let orgs = rows
        .iter()
        .map(org_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page.finish(orgs, |org| Cursor {
        position: org.created_at,
        id: org.id.clone(),
    }))
}

pub async fn membership_by_id(
    connection: &mut AnyConnection,
    id: &str,
) -> Result<Option<MembershipRecord>> {
    let sql = format!("{MEMBERSHIP_SELECT} WHERE m.id = $1");
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?;
    Ok(row.as_ref().map(membership_from_row).transpose()?)
}

pub async fn membership_of(
    connection: &mut AnyConnection,
    organization_id: &str,
    identity_id: &str,
) -> Result<Option<MembershipRecord>> {
    let sql = format!("{MEMBERSHIP_SELECT} WHERE m.organization_id = $1 AND m.identity_id = $2");
    let row = sqlx::query(&sql)
        .bind(organization_id)
        .bind(identity_id)
        .fetch_optional(&mut *connection)
        .await?;
    Ok(row.as_ref().map(membership_from_row).transpose()?)
}

/// Plain columns of a new membership; names are resolved on read.
pub struct NewMembership<'a> {
    pub id: &'a str,
    pub organization_id: &'a str,
    pub identity_id: &'a str,
    pub role: Role,
    pub status: Status,
    pub invited_by: &'a str,
    pub expires_at: Option<i64>,
    pub now: i64,
}

pub async fn insert_membership(
    connection: &mut AnyConnection,
    membership: &NewMembership<'_>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO memberships (id, organization_id, identity_id, role, status, invited_by, \
         expires_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
    )
    .bind(membership.id)
    .bind(membership.organization_id)
    .bind(membership.identity_id)
    .bind(membership.role.relation())
    .bind(membership.status.as_str())
    .bind(membership.invited_by)
    .bind(membership.expires_at)
    .bind(membership.now)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub async fn set_membership(
    connection: &mut AnyConnection,
    id: &str,
    role: Role,
    status: Status,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE memberships SET role = $2, status = $3, updated_at = $4 WHERE id = $1")
        .bind(id)
        .bind(role.relation())
        .bind(status.as_str())
        .bind(now)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

pub async fn delete_membership(connection: &mut AnyConnection, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM memberships WHERE id = $1")
        .bind(id)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

pub async fn count_active_owners(
    connection: &mut AnyConnection,
    organization_id: &str,
) -> Result<i64> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS owners FROM memberships WHERE organization_id = $1 \
         AND role = 'owner' AND status = 'active'",
    )
    .bind(organization_id)
    .fetch_one(&mut *connection)
    .await?;
    Ok(row.try_get("owners")?)
}

/// The set of memberships that a membership list returns.
pub enum MembershipScope<'a> {
    /// The memberships of one organization.
    Organization(&'a str),
    /// One identity's memberships in organizations that are not being
    /// deleted.
    Identity(&'a str),
}

/// One page of memberships in `(created_at, id)` order.
pub async fn list_memberships(
    db: &Db,
    scope: MembershipScope<'_>,
    status: Option<Status>,
    page: &Page,
) -> Result<(Vec<MembershipRecord>, String)> {
    let mut sql = match scope {
        MembershipScope::Organization(_) => {
            format!("{MEMBERSHIP_SELECT} WHERE m.organization_id = $1")
        }
        MembershipScope::Identity(_) => {
            format!("{MEMBERSHIP_SELECT} WHERE m.identity_id = $1 AND o.state = 'active'")
        }
    };
    let mut next = 2;
    if status.is_some() {
        sql.push_str(&format!(" AND m.status = ${next}"));
        next += 1;
    }
    if page.after.is_some() {
        sql.push_str(&format!(
            " AND (m.created_at > ${next} OR (m.created_at = ${next} AND m.id > ${}))",
            next + 1
        ));
        next += 2;
    }
    sql.push_str(&format!(" ORDER BY m.created_at, m.id LIMIT ${next}"));
    let key = match scope {
        MembershipScope::Organization(id) | MembershipScope::Identity(id) => id,
    };
    let mut query = sqlx::query(&sql).bind(key);
    if let Some(status) = status {
        query = query.bind(status.as_str());
    }
    if let Some(cursor) = &page.after {
        query = query.bind(cursor.position).bind(&cursor.id);
    }
    let rows = query.bind(page.fetch_limit()).fetch_all(db.pool()).await?;
    let memberships = rows
        .iter()
        .map(membership_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page.finish(memberships, |membership| Cursor {
        position: membership.created_at,
        id: membership.id.clone(),
    }))
}
