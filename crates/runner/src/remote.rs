//! [`RemoteRunner`]: a [`Runner`] that calls a standalone runner's
//! `RunnerService` over gRPC with mutual TLS.

use std::sync::Arc;
use std::time::Duration;

use agyn_api_runner::agynio::api::runner::v1 as pb;
use agyn_core::error::Code;
use agyn_core::{Error, Result};
use connectrpc::client::{CallOptions, ClientConfig, Http2Connection, SharedHttp2Connection};
use connectrpc::{ConnectError, ErrorCode, Protocol};
use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::{LogStream, Runner, RunnerFuture, tls};

/// Maximum number of requests queued on the shared HTTP/2 connection.
const MAX_QUEUED_REQUESTS: usize = 1024;

/// Deadline of a unary call. StopWorkload gets its `timeout_sec` on top,
/// because the runner waits that long before SIGKILL. Log streams have no
/// deadline, because a followed log lasts as long as its container.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The client side of the runner protocol for one enrolled runner.
///
/// Connects lazily on the first call and reconnects after the
/// connection fails.
#[derive(Clone)]
pub struct RemoteRunner {
    client: pb::RunnerServiceClient<SharedHttp2Connection>,
    runner_id: Arc<str>,
    endpoint: Arc<str>,
}

impl std::fmt::Debug for RemoteRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteRunner")
            .field("runner_id", &self.runner_id)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl RemoteRunner {
    /// Builds a client for the runner `runner_id` at `endpoint`
    /// (`https://<host>:<port>`).
    ///
    /// The client presents `client_cert_pem` (leaf first) with
    /// `client_key_pem`, trusts only `ca_pem`, and accepts only a server
    /// certificate named `agyn://identity/runner/<runner_id>`, whatever
    /// host name the endpoint has. Must be called within a Tokio runtime,
    /// which runs the connection.
    pub fn new(
        endpoint: &str,
        runner_id: &str,
        client_cert_pem: &str,
        client_key_pem: &str,
        ca_pem: &str,
    ) -> Result<Self> {
        let uri: Uri = endpoint.parse().map_err(|error| {
            Error::invalid_field("endpoint", &format!("{endpoint:?} is not a URI: {error}"))
        })?;
        if uri.scheme_str() != Some("https") {
            return Err(Error::invalid_field(
                "endpoint",
                &format!("{endpoint:?} must start with https://"),
            ));
        }
        let Some(authority) = uri.authority().cloned() else {
            return Err(Error::invalid_field(
                "endpoint",
                &format!("{endpoint:?} has no host"),
            ));
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let server_name = ServerName::try_from(host.to_string()).map_err(|error| {
            Error::invalid_field("endpoint", &format!("invalid host {host:?}: {error}"))
        })?;
        let address = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(443)
        );
        let config = tls::client_config(client_cert_pem, client_key_pem, ca_pem, runner_id)?;
        let connector = TlsConnector::from(config);

        let connect = tower::service_fn(move |_: Uri| {
            let connector = connector.clone();
            let server_name = server_name.clone();
            let address = address.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(&address).await?;
                tcp.set_nodelay(true)?;
                let stream = connector.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        });
        let connection =
            Http2Connection::lazy_with_connector(connect, uri.clone()).shared(MAX_QUEUED_REQUESTS);
        let config = ClientConfig::new(uri).with_protocol(Protocol::Grpc);
        Ok(Self {
            client: pb::RunnerServiceClient::new(connection, config),
            runner_id: runner_id.into(),
            endpoint: endpoint.into(),
        })
    }

    fn options() -> CallOptions {
        CallOptions::default().with_timeout(CALL_TIMEOUT)
    }

    /// Converts a failed call into the platform's error, keeping the code
    /// the runner sent.
    fn error(&self, error: ConnectError) -> Error {
        let message = error.message.clone().unwrap_or_default();
        let code = match error.code {
            ErrorCode::InvalidArgument | ErrorCode::OutOfRange => Code::InvalidArgument,
            ErrorCode::NotFound => Code::NotFound,
            ErrorCode::AlreadyExists => Code::AlreadyExists,
            ErrorCode::FailedPrecondition | ErrorCode::Aborted => Code::FailedPrecondition,
            ErrorCode::PermissionDenied => Code::PermissionDenied,
            ErrorCode::Unauthenticated => Code::Unauthenticated,
            ErrorCode::ResourceExhausted => Code::ResourceExhausted,
            ErrorCode::Unimplemented => Code::Unimplemented,
            ErrorCode::Unavailable | ErrorCode::DeadlineExceeded | ErrorCode::Canceled => {
                return Error::unavailable(format!(
                    "runner {} at {} is unavailable: {message}",
                    self.runner_id, self.endpoint
                ));
            }
            _ => {
                return Error::internal(
                    format!("runner {} at {} failed", self.runner_id, self.endpoint),
                    error,
                );
            }
        };
        Error::new(code, message)
    }
}

impl Runner for RemoteRunner {
    fn ready(&self) -> RunnerFuture<'_, pb::ReadyResponse> {
        Box::pin(async move {
            let response = self
                .client
                .ready_with_options(pb::ReadyRequest::default(), Self::options())
                .await
                .map_err(|error| self.error(error))?;
            Ok(response.into_owned())
        })
    }

    fn start_workload(
        &self,
        request: pb::StartWorkloadRequest,
    ) -> RunnerFuture<'_, pb::StartWorkloadResponse> {
        Box::pin(async move {
            let response = self
                .client
                .start_workload_with_options(request, Self::options())
                .await
                .map_err(|error| self.error(error))?;
            Ok(response.into_owned())
        })
    }

    fn stop_workload(&self, request: pb::StopWorkloadRequest) -> RunnerFuture<'_, ()> {
        Box::pin(async move {
            let grace = Duration::from_secs(request.timeout_sec.max(0) as u64);
            let options = CallOptions::default().with_timeout(CALL_TIMEOUT + grace);
            self.client
                .stop_workload_with_options(request, options)
                .await
                .map_err(|error| self.error(error))?;
            Ok(())
        })
    }

    fn remove_workload(&self, request: pb::RemoveWorkloadRequest) -> RunnerFuture<'_, ()> {
        Box::pin(async move {
            self.client
                .remove_workload_with_options(request, Self::options())
                .await
                .map_err(|error| self.error(error))?;
            Ok(())
        })
    }

    fn inspect_workload(
        &self,
        request: pb::InspectWorkloadRequest,
    ) -> RunnerFuture<'_, pb::InspectWorkloadResponse> {
        Box::pin(async move {
            let response = self
                .client
                .inspect_workload_with_options(request, Self::options())
                .await
                .map_err(|error| self.error(error))?;
            Ok(response.into_owned())
        })
    }

    fn list_workloads(&self) -> RunnerFuture<'_, Vec<pb::WorkloadSummary>> {
        Box::pin(async move {
            let response = self
                .client
                .list_workloads_with_options(pb::ListWorkloadsRequest::default(), Self::options())
                .await
                .map_err(|error| self.error(error))?;
            Ok(response.into_owned().workloads)
        })
    }

    fn list_volumes(&self) -> RunnerFuture<'_, Vec<pb::VolumeSummary>> {
        Box::pin(async move {
            let response = self
                .client
                .list_volumes_with_options(pb::ListVolumesRequest::default(), Self::options())
                .await
                .map_err(|error| self.error(error))?;
            Ok(response.into_owned().volumes)
        })
    }

    fn remove_volume(&self, request: pb::RemoveVolumeRequest) -> RunnerFuture<'_, ()> {
        Box::pin(async move {
            self.client
                .remove_volume_with_options(request, Self::options())
                .await
                .map_err(|error| self.error(error))?;
            Ok(())
        })
    }

    fn stream_workload_logs(
        &self,
        request: pb::StreamWorkloadLogsRequest,
    ) -> RunnerFuture<'_, LogStream> {
        Box::pin(async move {
            let stream = self
                .client
                .stream_workload_logs(request)
                .await
                .map_err(|error| self.error(error))?;
            let runner = self.clone();
            let chunks = futures::stream::unfold(Some((stream, runner)), |state| async move {
                let (mut stream, runner) = state?;
                match stream.message().await {
                    Ok(Some(message)) => {
                        let chunk = message.to_owned_message().chunk.into_option();
                        Some((Ok(chunk.unwrap_or_default()), Some((stream, runner))))
                    }
                    Ok(None) => None,
                    Err(error) => Some((Err(runner.error(error)), None)),
                }
            });
            Ok(Box::pin(chunks) as LogStream)
        })
    }
}
