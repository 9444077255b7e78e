//! Client request keys (`request_id`) of create, add and send calls, on
//! top of [`crate::idempotency`], with the errors that every service
//! returns for them.

use agyn_core::time::now_micros;
use agyn_core::{Error, Result};
use sqlx::AnyConnection;

use crate::idempotency::{self, Recorded};
use sha2::{Digest as _, Sha256};

/// Checks a request key: empty means none, otherwise 1 to 64 characters
/// of `[A-Za-z0-9_-]`.
pub fn validate(request_id: &str) -> Result<()> {
    if !request_id.is_empty() && !idempotency::is_valid_key(request_id) {
        return Err(Error::invalid_field(
            "request_id",
            "must be 1 to 64 characters of [A-Za-z0-9_-]",
        ));
    }
    Ok(())
}

/// Returns the hex SHA-256 of a request's content, bound to its key. Parts are
/// length-prefixed, so `("ab", "c")` and `("a", "bc")` differ.
pub fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Returns the resource an earlier call with `key` created, or `None` for
/// a first call or an empty key. The same key with a different request
/// fails with `already_exists` (reason `IDEMPOTENCY_KEY_REUSED`).
pub async fn replayed(
    connection: &mut AnyConnection,
    scope: &str,
    caller_id: &str,
    key: &str,
    fingerprint: &str,
) -> Result<Option<String>> {
    if key.is_empty() {
        return Ok(None);
    }
    match idempotency::lookup(connection, scope, caller_id, key, now_micros()).await? {
        None => Ok(None),
        Some(recorded) if recorded.fingerprint == fingerprint => Ok(Some(recorded.resource_id)),
        Some(_) => Err(key_reused()),
    }
}

/// Builds the error of a request key reused for a different request,
/// `already_exists` with reason `IDEMPOTENCY_KEY_REUSED`.
pub fn key_reused() -> Error {
    Error::already_exists("request_id was already used for a different request")
        .with_reason("IDEMPOTENCY_KEY_REUSED")
}

/// Records `key` for `resource_id` in the caller's transaction. An empty
/// key records nothing.
pub async fn record(
    connection: &mut AnyConnection,
    scope: &str,
    caller_id: &str,
    key: &str,
    fingerprint: &str,
    resource_id: &str,
) -> Result<()> {
    if key.is_empty() {
        return Ok(());
    }
    let recorded = Recorded {
        fingerprint: fingerprint.to_string(),
        resource_id: resource_id.to_string(),
    };
    idempotency::record(connection, scope, caller_id, key, &recorded, now_micros()).await?;
    Ok(())
}
