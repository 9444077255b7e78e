//! SQL for users, API tokens and cluster-admin tuples.

use agyn_core::Result;
use agyn_core::page::{Cursor, Page, SortOrder};
use agyn_store::Db;
use agyn_store::sqlx::{self, AnyConnection, Row, any::AnyRow};

/// A stored user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: String,
    pub oidc_subject: String,
    pub username: String,
    pub name: String,
    pub email: String,
    pub email_verified: bool,
    pub photo_url: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// Whether the user has `admin` on `cluster:global`. Filled in from
    /// the authorization tuples by [`crate::Users`], not by the row.
    pub cluster_admin: bool,
}

/// A stored API token, without its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub identity_id: String,
    pub name: String,
    pub token_prefix: String,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// A token looked up by hash, with its owner's identity type.
pub struct ResolvedToken {
    pub token: TokenRecord,
    pub identity_type: String,
}

const USER_COLUMNS: &str = "u.id, u.oidc_subject, u.username, u.name, u.email, \
    u.email_verified, u.photo_url, u.created_at, u.updated_at";

const TOKEN_COLUMNS: &str =
    "t.id, t.identity_id, t.name, t.token_prefix, t.expires_at, t.created_at, t.last_used_at";

fn user_from_row(row: &AnyRow) -> Result<UserRecord, sqlx::Error> {
    Ok(UserRecord {
        id: row.try_get("id")?,
        oidc_subject: row.try_get("oidc_subject")?,
        username: row.try_get("username")?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        email_verified: row.try_get::<i64, _>("email_verified")? != 0,
        photo_url: row.try_get("photo_url")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        cluster_admin: false,
    })
}

fn token_from_row(row: &AnyRow) -> Result<TokenRecord, sqlx::Error> {
    Ok(TokenRecord {
        id: row.try_get("id")?,
        identity_id: row.try_get("identity_id")?,
        name: row.try_get("name")?,
        token_prefix: row.try_get("token_prefix")?,
        expires_at: row.try_get("expires_at")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

pub async fn user_by_id(db: &Db, id: &str) -> Result<Option<UserRecord>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1");
    let row = sqlx::query(&sql).bind(id).fetch_optional(db.pool()).await?;
    Ok(row.as_ref().map(user_from_row).transpose()?)
}

pub async fn user_by_subject(
    connection: &mut AnyConnection,
    subject: &str,
) -> Result<Option<UserRecord>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.oidc_subject = $1");
    let row = sqlx::query(&sql)
        .bind(subject)
        .fetch_optional(&mut *connection)
        .await?;
    Ok(row.as_ref().map(user_from_row).transpose()?)
}

/// Users whose username starts with `prefix`: the exact match first, then
/// by username ascending.
pub async fn search_users(db: &Db, prefix: &str, limit: i64) -> Result<Vec<UserRecord>> {
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM users u \
         WHERE u.username >= $1 AND u.username < $2 \
         ORDER BY CASE WHEN u.username = $1 THEN 0 ELSE 1 END, u.username LIMIT $3"
    );
    // `prefix` contains only [a-z0-9_-], so the range [prefix, prefix + '~')
    // is exactly the usernames that start with it, in both collations.
    let upper = format!("{prefix}~");
    let rows = sqlx::query(&sql)
        .bind(prefix)
        .bind(upper)
        .bind(limit)
        .fetch_all(db.pool())
        .await?;
    Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
}

pub struct NewUser<'a> {
    pub id: &'a str,
    pub oidc_subject: &'a str,
    pub username: &'a str,
    pub name: &'a str,
    pub email: &'a str,
    pub email_verified: bool,
    pub photo_url: &'a str,
    pub now: i64,
}

/// Inserts the user row; the identity must be registered in the same
/// transaction first.
pub async fn insert_user(
    connection: &mut AnyConnection,
    user: &NewUser<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO users (id, oidc_subject, username, name, email, email_verified, \
         photo_url, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
    )
    .bind(user.id)
    .bind(user.oidc_subject)
    .bind(user.username)
    .bind(user.name)
    .bind(user.email)
    .bind(i64::from(user.email_verified))
    .bind(user.photo_url)
    .bind(user.now)
    .execute(&mut *connection)
    .await
    .map(|_| ())
}

pub async fn username_taken(connection: &mut AnyConnection, username: &str) -> Result<bool> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM users WHERE username = $1")
        .bind(username)
        .fetch_one(&mut *connection)
        .await?;
    Ok(row.try_get::<i64, _>("n")? > 0)
}

/// Records who granted `identity_id` cluster admin, or deletes the record.
pub async fn set_admin_grant(
    connection: &mut AnyConnection,
    identity_id: &str,
    admin: bool,
    source: &str,
    now: i64,
) -> Result<()> {
    if admin {
        sqlx::query(
            "INSERT INTO cluster_admin_grants (identity_id, source, created_at) \
             VALUES ($1, $2, $3) ON CONFLICT (identity_id) DO UPDATE SET source = $2",
        )
        .bind(identity_id)
        .bind(source)
        .bind(now)
        .execute(&mut *connection)
        .await?;
    } else {
        sqlx::query("DELETE FROM cluster_admin_grants WHERE identity_id = $1")
            .bind(identity_id)
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

pub async fn token_by_hash(db: &Db, hash: &str) -> Result<Option<ResolvedToken>> {
    let sql = format!(
        "SELECT {TOKEN_COLUMNS}, i.identity_type FROM api_tokens t \
         JOIN identities i ON i.id = t.identity_id WHERE t.token_hash = $1"
    );
    let Some(row) = sqlx::query(&sql)
        .bind(hash)
        .fetch_optional(db.pool())
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(ResolvedToken {
        token: token_from_row(&row)?,
        identity_type: row.try_get("identity_type")?,
    }))
}

pub async fn touch_token(db: &Db, id: &str, now: i64) -> Result<()> {
    sqlx::query(
        "UPDATE api_tokens SET last_used_at = $1 WHERE id = $2 \
         AND (last_used_at IS NULL OR last_used_at < $3)",
    )
    .bind(now)
    .bind(id)
    .bind(now - crate::tokens::LAST_USED_RESOLUTION_MICROS)
    .execute(db.pool())
    .await?;
    Ok(())
}

pub struct NewToken<'a> {
    pub id: &'a str,
    pub identity_id: &'a str,
    pub name: &'a str,
    pub token_hash: &'a str,
    pub token_prefix: &'a str,
    pub expires_at: Option<i64>,
    pub now: i64,
}

pub async fn count_tokens(connection: &mut AnyConnection, identity_id: &str) -> Result<i64> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM api_tokens WHERE identity_id = $1")
        .bind(identity_id)
        .fetch_one(&mut *connection)
        .await?;
    Ok(row.try_get("n")?)
}

pub async fn insert_token(connection: &mut AnyConnection, token: &NewToken<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO api_tokens (id, identity_id, name, token_hash, token_prefix, expires_at, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(token.id)
    .bind(token.identity_id)
    .bind(token.name)
    .bind(token.token_hash)
    .bind(token.token_prefix)
    .bind(token.expires_at)
    .bind(token.now)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Lists one page of a user's tokens in `page.order` of `(created_at, id)`.
pub async fn list_tokens(
    db: &Db,
    identity_id: &str,
    page: &Page,
) -> Result<(Vec<TokenRecord>, String)> {
    let (comparison, direction) = match page.order {
        SortOrder::Ascending => (">", "ASC"),
        SortOrder::Descending => ("<", "DESC"),
    };
    let rows = match &page.after {
        None => {
            let sql = format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens t WHERE t.identity_id = $1 \
                 ORDER BY t.created_at {direction}, t.id {direction} LIMIT $2"
            );
            sqlx::query(&sql)
                .bind(identity_id)
                .bind(page.fetch_limit())
                .fetch_all(db.pool())
                .await?
        }
        Some(cursor) => {
            let sql = format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens t WHERE t.identity_id = $1 \
                 AND (t.created_at {comparison} $2 OR (t.created_at = $2 AND t.id {comparison} $3)) \
                 ORDER BY t.created_at {direction}, t.id {direction} LIMIT $4"
            );
            sqlx::query(&sql)
                .bind(identity_id)
                .bind(cursor.position)
                .bind(&cursor.id)
                .bind(page.fetch_limit())
                .fetch_all(db.pool())
                .await?
        }
    };
    let tokens = rows
        .iter()
        .map(token_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page.finish(tokens, |token| Cursor {
        position: token.created_at,
        id: token.id.clone(),
    }))
}

/// Deletes a token owned by `identity_id`; returns false when no such
/// token exists for that owner.
pub async fn delete_token(db: &Db, identity_id: &str, id: &str) -> Result<bool> {
    let result = sqlx::query("DELETE FROM api_tokens WHERE id = $1 AND identity_id = $2")
        .bind(id)
        .bind(identity_id)
        .execute(db.pool())
        .await?;
    Ok(result.rows_affected() > 0)
}

/// Deletes the tokens of `identity_id` named `name`.
pub async fn delete_tokens_named(
    connection: &mut AnyConnection,
    identity_id: &str,
    name: &str,
) -> Result<u64> {
    let result = sqlx::query("DELETE FROM api_tokens WHERE identity_id = $1 AND name = $2")
        .bind(identity_id)
        .bind(name)
        .execute(&mut *connection)
        .await?;
    Ok(result.rows_affected())
}
