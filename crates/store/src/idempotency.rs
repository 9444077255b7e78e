//! Idempotency keys for create calls.
//!
//! A create call that carries a client request key first looks the key up
//! inside its write transaction. A hit returns the resource the first call
//! created; a miss does the work and records the key in the same
//! transaction, so the resource and its key commit together. Two racing
//! first calls cannot both commit: the second one's insert violates the
//! primary key, and it then retries as a repeat.

use sqlx::{AnyConnection, Row};

/// How long a key is remembered.
pub const RETENTION_MICROS: i64 = 24 * 3600 * 1_000_000;

/// The record that an earlier call with the same key stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub fingerprint: String,
    pub resource_id: String,
}

/// Returns the live record of `key`, ignoring one older than
/// [`RETENTION_MICROS`].
pub async fn lookup(
    connection: &mut AnyConnection,
    scope: &str,
    caller_id: &str,
    key: &str,
    now: i64,
) -> Result<Option<Recorded>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT fingerprint, resource_id FROM idempotency_keys \
         WHERE scope = $1 AND caller_id = $2 AND request_key = $3 AND created_at > $4",
    )
    .bind(scope)
    .bind(caller_id)
    .bind(key)
    .bind(now - RETENTION_MICROS)
    .fetch_optional(&mut *connection)
    .await?;
    row.map(|row| {
        Ok(Recorded {
            fingerprint: row.try_get("fingerprint")?,
            resource_id: row.try_get("resource_id")?,
        })
    })
    .transpose()
}

/// Records `key` for the resource just created, replacing an expired
/// record of the same key.
pub async fn record(
    connection: &mut AnyConnection,
    scope: &str,
    caller_id: &str,
    key: &str,
    recorded: &Recorded,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE scope = $1 AND caller_id = $2 \
         AND request_key = $3 AND created_at <= $4",
    )
    .bind(scope)
    .bind(caller_id)
    .bind(key)
    .bind(now - RETENTION_MICROS)
    .execute(&mut *connection)
    .await?;
    sqlx::query(
        "INSERT INTO idempotency_keys \
         (scope, caller_id, request_key, fingerprint, resource_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(scope)
    .bind(caller_id)
    .bind(key)
    .bind(&recorded.fingerprint)
    .bind(&recorded.resource_id)
    .bind(now)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Deletes keys past the retention window; returns how many.
pub async fn purge_expired(connection: &mut AnyConnection, now: i64) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at <= $1")
            .bind(now - RETENTION_MICROS)
            .execute(&mut *connection)
            .await?
            .rows_affected(),
    )
}

/// Checks a client request key: empty means none, otherwise 1 to 64
/// characters of `[A-Za-z0-9_-]`.
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 64
        && key
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
}
