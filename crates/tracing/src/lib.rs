//! Tracing: OpenTelemetry spans from agent workloads, queried per run.
//!
//! Producers export spans over OTLP ([`service::TraceServiceRpc`] for
//! gRPC, [`http::otlp_router`] for `POST /v1/traces`). A span is exported
//! while it runs and once more when it ends, so spans are upserted by
//! `(trace_id, span_id)`. A run is one workload, and its trace id is the
//! 16 bytes of the workload UUID.
//!
//! [`Tracing`] contains the logic and storage, and [`service`] serves it
//! as the internal `TracingService` and the public `TracingGateway`.
//! [`PlatformDirectory`] looks up agents, messages and workloads in the
//! in-process services. Organization deletion keeps spans, so there is no
//! purge step, and [`Tracing::prune`] deletes spans past the retention.

#![allow(refining_impl_trait_internal, refining_impl_trait_reachable)]

mod directory;
mod envelope;
mod feed;
pub mod http;
mod ids;
mod ingest;
mod platform;
mod query;
mod retention;
mod run_events;
pub mod service;
mod store;
mod stream;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agyn_authz::{Authorizer, ObjectRef};
use agyn_core::events::EventSink;
use agyn_core::{Caller, Result};
use agyn_store::Db;

pub use directory::{AgentIdentity, Lookup, MessageThread, TraceDirectory, WorkloadState};
pub use feed::{FeedEvent, SpanFeed};
pub use platform::PlatformDirectory;
pub use retention::DEFAULT_RETENTION;
pub use stream::StreamTiming;

/// Span ingest, queries and run-event streams over one database.
#[derive(Clone)]
pub struct Tracing {
    db: Db,
    authorizer: Authorizer,
    events: Arc<dyn EventSink>,
    feed: Arc<dyn SpanFeed>,
    directory: Arc<dyn TraceDirectory>,
    messages: Arc<Mutex<ingest::MessageCache>>,
    timing: StreamTiming,
}

impl Tracing {
    /// Builds the service. Ingest publishes `span.created` and
    /// `span.updated` to `events`, StreamRunEvents receives them from
    /// `feed`, and `directory` looks up agents, messages and workloads in
    /// the services that own them.
    pub fn new(
        db: Db,
        events: Arc<dyn EventSink>,
        feed: Arc<dyn SpanFeed>,
        directory: Arc<dyn TraceDirectory>,
    ) -> Self {
        Self {
            authorizer: Authorizer::new(db.clone()),
            db,
            events,
            feed,
            directory,
            messages: Arc::new(Mutex::new(ingest::MessageCache::default())),
            timing: StreamTiming::default(),
        }
    }

    /// Replaces the intervals of StreamRunEvents, such as the heartbeat.
    pub fn with_stream_timing(mut self, timing: StreamTiming) -> Self {
        self.timing = timing;
        self
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Returns whether `caller` may read spans of `organization_id`:
    /// `can_read` on the organization, and for spans without an
    /// organization, `admin` on the cluster. Components may read every
    /// span.
    async fn can_read_org(&self, caller: &Caller, organization_id: Option<&str>) -> Result<bool> {
        let Caller::Identity { identity_id, .. } = caller else {
            return Ok(true);
        };
        let user = ObjectRef::identity(identity_id);
        match organization_id {
            Some(org) => {
                self.authorizer
                    .check(&user, "can_read", &ObjectRef::new("organization", org))
                    .await
            }
            None => {
                self.authorizer
                    .check(&user, "admin", &ObjectRef::new("cluster", "global"))
                    .await
            }
        }
    }
}

/// Returns the SpanStatus value name, as event payloads and summary
/// counts use it.
fn span_status_name(
    status: agyn_api_tracing::agynio::api::tracing::v1::SpanStatus,
) -> &'static str {
    use agyn_api_tracing::agynio::api::tracing::v1::SpanStatus;
    match status {
        SpanStatus::SPAN_STATUS_UNSPECIFIED => "SPAN_STATUS_UNSPECIFIED",
        SpanStatus::SPAN_STATUS_RUNNING => "SPAN_STATUS_RUNNING",
        SpanStatus::SPAN_STATUS_OK => "SPAN_STATUS_OK",
        SpanStatus::SPAN_STATUS_ERROR => "SPAN_STATUS_ERROR",
    }
}

/// Converts a `Duration` to microseconds, saturating at `i64::MAX`.
fn duration_micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}
