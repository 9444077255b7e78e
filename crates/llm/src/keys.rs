//! Client request keys (`request_id`) of CreateProvider and CreateModel,
//! on top of [`agyn_store::idempotency`].

use agyn_core::time::now_micros;
use agyn_core::{Error, Result};
use agyn_store::idempotency::{self, Recorded};
use agyn_store::sqlx::AnyConnection;
use sha2::{Digest as _, Sha256};

/// Checks a request key: empty means none, otherwise 1 to 64 characters of
/// `[A-Za-z0-9_-]`.
pub(crate) fn validate(request_id: &str) -> Result<()> {
    if request_id.is_empty() || idempotency::is_valid_key(request_id) {
        return Ok(());
    }
    Err(Error::invalid_field(
        "request_id",
        "must be 1 to 64 characters of [A-Za-z0-9_-]",
    ))
}

/// Hex SHA-256 over the length-prefixed parts of a request, so that
/// `("ab", "c")` and `("a", "bc")` differ.
pub(crate) struct Fingerprint(Sha256);

impl Fingerprint {
    pub(crate) fn new(scope: &str) -> Self {
        Self(Sha256::new()).with(scope)
    }

    pub(crate) fn with(mut self, part: &str) -> Self {
        self.0.update((part.len() as u64).to_be_bytes());
        self.0.update(part.as_bytes());
        self
    }

    pub(crate) fn finish(self) -> String {
        self.0
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

/// Returns the id of the resource that an earlier call with `key` created,
/// or `None` for a first call or an empty key. The same key with a
/// different request fails with `already_exists` (reason
/// `IDEMPOTENCY_KEY_REUSED`).
pub(crate) async fn replayed(
    connection: &mut AnyConnection,
    scope: &str,
    caller_id: &str,
    key: &str,
    fingerprint: &str,
) -> Result<Option<String>> {
    if key.is_empty() {
        return Ok(None);
    }
    let Some(recorded) =
        idempotency::lookup(connection, scope, caller_id, key, now_micros()).await?
    else {
        return Ok(None);
    };
    if recorded.fingerprint != fingerprint {
        return Err(
            Error::already_exists("request_id was already used for a different request")
                .with_reason("IDEMPOTENCY_KEY_REUSED"),
        );
    }
    Ok(Some(recorded.resource_id))
}

/// Records `key` for `resource_id` in the caller's transaction. An empty key
/// records nothing.
pub(crate) async fn record(
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
