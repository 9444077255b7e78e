//! Request keys (`request_id`) of create calls: a repeat with the same key
//! and content returns the resource that the first call created.

use agyn_core::{Error, Result};
use agyn_store::request_keys;
use agyn_store::sqlx::AnyConnection;

/// The request key of one create call, bound to its content.
pub(crate) struct CreateKey<'a> {
    scope: &'static str,
    caller_id: &'a str,
    request_id: &'a str,
    fingerprint: String,
}

impl<'a> CreateKey<'a> {
    /// Validates `request_id` and fingerprints `parts`, the request's
    /// content. `scope` names the method, such as `agents.CreateAgent`.
    pub(crate) fn new(
        scope: &'static str,
        caller_id: &'a str,
        request_id: &'a str,
        parts: &[&str],
    ) -> Result<Self> {
        request_keys::validate(request_id)?;
        Ok(Self {
            scope,
            caller_id,
            request_id,
            fingerprint: request_keys::fingerprint(parts.iter().copied()),
        })
    }

    /// Returns the id that an earlier call with this key created.
    pub(crate) async fn replayed(&self, connection: &mut AnyConnection) -> Result<Option<String>> {
        request_keys::replayed(
            connection,
            self.scope,
            self.caller_id,
            self.request_id,
            &self.fingerprint,
        )
        .await
    }

    /// Records the created id in the caller's transaction. A concurrent
    /// call that recorded the same key first fails this one with
    /// `unavailable`, and its retry returns what that call created.
    pub(crate) async fn record(&self, connection: &mut AnyConnection, id: &str) -> Result<()> {
        let recorded = request_keys::record(
            connection,
            self.scope,
            self.caller_id,
            self.request_id,
            &self.fingerprint,
            id,
        )
        .await;
        match recorded {
            Err(error) if error.is_unique_violation() => Err(Error::unavailable(
                "a concurrent call with the same request_id is in progress; retry the call",
            )),
            other => other,
        }
    }
}
