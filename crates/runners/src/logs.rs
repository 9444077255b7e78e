//! StreamWorkloadLogs: the one call the runners service makes to a
//! runner, relaying a container's log chunks to the client.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use agyn_api_runner::agynio::api::runner::v1 as runner_pb;
use agyn_api_runners::agynio::api::runners::v1 as pb;
use agyn_core::error::Code;
use agyn_core::id::parse_id;
use agyn_core::time::timestamp;
use agyn_core::{Caller, Error, Result};
use agyn_runner::{LogStream, Runner};
use futures::{Stream, StreamExt as _};

use crate::Runners;
use crate::model::{LogsRequest, RunnerRecord};

/// Time without output after which a following stream sends an empty
/// chunk, so that proxies and clients keep the stream open.
pub const LOG_KEEPALIVE: Duration = Duration::from_secs(15);

/// Lines sent first when a request leaves `tail_lines` at 0.
const DEFAULT_TAIL_LINES: i32 = 1_000;

/// Log chunks relayed to a client. An empty `data` is a keepalive.
pub type LogChunkStream = Pin<Box<dyn Stream<Item = Result<pb::LogChunk>> + Send + 'static>>;

/// Dials a runner for the log relay: in process for a built-in runner,
/// over gRPC with mutual TLS for a remote one.
pub trait RunnerConnector: Send + Sync {
    /// Returns a client of `runner`. A runner that cannot be reached
    /// gives `unavailable`.
    fn connect(&self, runner: &RunnerRecord) -> Result<Arc<dyn Runner>>;
}

fn logs_gone() -> Error {
    Error::new(Code::NotFound, "logs are no longer available")
}

/// Maps a runner failure. `not_found` means that the runner no longer keeps
/// the logs, `invalid_argument` passes through, and any other code means
/// that the runner is unreachable.
fn runner_failure(runner_id: &str, error: Error) -> Error {
    match error.code() {
        Code::NotFound => logs_gone(),
        Code::InvalidArgument => error,
        _ => Error::unavailable(format!(
            "runner {runner_id} is unreachable: {}",
            error.message()
        )),
    }
}

fn relay_chunk(chunk: runner_pb::LogChunk) -> pb::LogChunk {
    pb::LogChunk {
        data: chunk.data,
        ts: chunk.ts,
        ..Default::default()
    }
}

/// Relays `inner`, sending an empty chunk after [`LOG_KEEPALIVE`] without
/// output when `follow` is set. The relay ends after the first error.
fn relay(runner_id: String, inner: LogStream, follow: bool) -> LogChunkStream {
    let stream = futures::stream::unfold(Some(inner), move |state| {
        let runner_id = runner_id.clone();
        async move {
            let mut inner = state?;
            let next = if follow {
                match tokio::time::timeout(LOG_KEEPALIVE, inner.next()).await {
                    Ok(next) => next,
                    Err(_) => return Some((Ok(pb::LogChunk::default()), Some(inner))),
                }
            } else {
                inner.next().await
            };
            match next? {
                Ok(chunk) => Some((Ok(relay_chunk(chunk)), Some(inner))),
                Err(error) => {
                    let error = runner_failure(&runner_id, error);
                    tracing::warn!(runner_id = %runner_id, %error, "Log relay failed");
                    Some((Err(error), None))
                }
            }
        }
    });
    Box::pin(stream)
}

impl Runners {
    /// StreamWorkloadLogs: `can_view_workloads` on the workload's
    /// organization. Dials the workload's runner and relays the chunks of
    /// one container as they arrive.
    pub async fn stream_workload_logs(
        &self,
        caller: &Caller,
        request: &LogsRequest,
    ) -> Result<LogChunkStream> {
        let workload_id = parse_id("workload_id", &request.workload_id)?;
        if request.container_name.is_empty() {
            return Err(Error::invalid_field("container_name", "is required"));
        }
        if request.tail_lines < 0 {
            return Err(Error::invalid_field("tail_lines", "must not be negative"));
        }

        let workload = self.workload_or_not_found(&workload_id).await?;
        self.authorize_org_list(caller, &workload.organization_id, "can_view_workloads")
            .await?;
        if !workload
            .containers
            .iter()
            .any(|container| container.name == request.container_name)
        {
            return Err(Error::new(
                Code::NotFound,
                format!(
                    "container {:?} not found in workload {workload_id}",
                    request.container_name
                ),
            ));
        }
        if workload.runner_id.is_empty() {
            return Err(logs_gone());
        }

        let mut connection = self.db.pool().acquire().await?;
        let runner = crate::store::runners::by_id(&mut connection, &workload.runner_id)
            .await?
            .ok_or_else(logs_gone)?;
        drop(connection);
        let connector = self
            .connector
            .as_ref()
            .ok_or_else(|| Error::unavailable("log streaming is not configured on this server"))?;
        let client = connector
            .connect(&runner)
            .map_err(|error| runner_failure(&runner.id, error))?;

        let tail_lines = match request.tail_lines {
            0 => DEFAULT_TAIL_LINES,
            lines => lines,
        };
        let runner_request = runner_pb::StreamWorkloadLogsRequest {
            workload_id: workload_id.clone(),
            container_name: request.container_name.clone(),
            follow: request.follow,
            tail_lines,
            since_time: match request.since_time {
                Some(micros) => timestamp(micros).into(),
                None => Default::default(),
            },
            ..Default::default()
        };
        let inner = client
            .stream_workload_logs(runner_request)
            .await
            .map_err(|error| runner_failure(&runner.id, error))?;
        tracing::info!(
            workload_id = %workload_id,
            runner_id = %runner.id,
            container = %request.container_name,
            follow = request.follow,
            "Log relay started"
        );
        Ok(relay(runner.id, inner, request.follow))
    }
}
