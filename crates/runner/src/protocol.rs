//! [`Runner`]: the operations the platform calls on a runner.
//!
//! The methods mirror `RunnerService` one to one and take and return its
//! messages, so an in-process runner and a remote one are interchangeable.
//! Errors carry the protocol's codes: `invalid_argument` for a bad spec,
//! `failed_precondition` for a capability the runner lacks, `not_found`
//! for an unknown workload or container, `unavailable` for transient
//! trouble.

use std::future::Future;
use std::pin::Pin;

use agyn_api_runner::agynio::api::runner::v1 as pb;
use agyn_core::Result;
use futures::Stream;

/// The future every [`Runner`] method returns.
pub type RunnerFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// Log chunks of one container, in order. The stream ends when the logs
/// end, or with `follow` when the container exits.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<pb::LogChunk>> + Send + 'static>>;

/// A runner: starts, stops, inspects and lists workloads and named volumes.
pub trait Runner: Send + Sync + 'static {
    /// Reports that the runner is up; a cheap health check.
    fn ready(&self) -> RunnerFuture<'_, pb::ReadyResponse>;

    /// Creates and starts a workload. Idempotent by `workload_id`: a second
    /// call returns the existing instance.
    fn start_workload(
        &self,
        request: pb::StartWorkloadRequest,
    ) -> RunnerFuture<'_, pb::StartWorkloadResponse>;

    /// Stops a workload gracefully (TERM, wait `timeout_sec`, KILL) and
    /// removes its ephemeral volumes and inline files; named volumes stay.
    /// An unknown id succeeds.
    fn stop_workload(&self, request: pb::StopWorkloadRequest) -> RunnerFuture<'_, ()>;

    /// Deletes every trace of a workload, and its named volumes when asked.
    /// An unknown id succeeds.
    fn remove_workload(&self, request: pb::RemoveWorkloadRequest) -> RunnerFuture<'_, ()>;

    /// Returns the state of one workload, or `not_found` for an unknown one.
    fn inspect_workload(
        &self,
        request: pb::InspectWorkloadRequest,
    ) -> RunnerFuture<'_, pb::InspectWorkloadResponse>;

    /// Lists every workload the runner still has, exited ones included.
    fn list_workloads(&self) -> RunnerFuture<'_, Vec<pb::WorkloadSummary>>;

    /// Lists every named volume.
    fn list_volumes(&self) -> RunnerFuture<'_, Vec<pb::VolumeSummary>>;

    /// Removes a named volume. An unknown name succeeds.
    fn remove_volume(&self, request: pb::RemoveVolumeRequest) -> RunnerFuture<'_, ()>;

    /// Streams one container's log; `not_found` for an unknown workload or
    /// container.
    fn stream_workload_logs(
        &self,
        request: pb::StreamWorkloadLogsRequest,
    ) -> RunnerFuture<'_, LogStream>;
}
