//! [`serve_tls`]: serving `RunnerService` over HTTP/2 and TLS with client
//! certificates of the platform's components.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agyn_api_runner::agynio::api::runner::v1 as pb;
use agyn_core::Result;
use connectrpc::{ConnectError, ConnectRpcService, Router};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::{Runner, RunnerRpc, tls};

/// Maximum time a new connection may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after an accept error such as EMFILE, so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The component allowed to call StreamWorkloadLogs.
const LOGS_COMPONENT: &str = "runners";

/// The component allowed to call every other method.
const CONTROL_COMPONENT: &str = "orchestrator";

/// Serves `runner` as `RunnerService` on every connection accepted from
/// `listener`, until the returned future is dropped.
///
/// The listener presents `server_cert_pem` (leaf first) with `key_pem` and
/// completes a handshake only with a client certificate that chains to
/// `ca_pem`. A request is then served only when the certificate names
/// the component its method needs: `agyn://component/runners` for
/// StreamWorkloadLogs and `agyn://component/orchestrator` for every other
/// method. Other requests get PERMISSION_DENIED.
///
/// NOTE: revocation is not checked, because a standalone runner has no
/// access to the platform's certificate records, and the certificate is
/// read once, so a renewed one takes effect only after a restart.
///
/// Returns an `invalid_argument` error when a PEM input or the TLS
/// configuration is invalid; otherwise it runs until dropped.
pub async fn serve_tls(
    listener: TcpListener,
    runner: Arc<dyn Runner>,
    server_cert_pem: &str,
    key_pem: &str,
    ca_pem: &str,
) -> Result<()> {
    let acceptor = TlsAcceptor::from(tls::server_config(server_cert_pem, key_pem, ca_pem)?);
    let router = Router::new().add_service(Arc::new(RunnerRpc::new(runner)));
    let service = ConnectRpcService::new(router);
    match listener.local_addr() {
        Ok(address) => tracing::info!(%address, "Serving the runner protocol over mutual TLS"),
        Err(error) => tracing::info!(%error, "Serving the runner protocol over mutual TLS"),
    }
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(serve_connection(
                    stream,
                    peer,
                    acceptor.clone(),
                    service.clone(),
                ));
            }
            Err(error) => {
                tracing::warn!(%error, "Failed to accept a runner protocol connection; retrying");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    service: ConnectRpcService,
) {
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let component = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| tls::component(leaf.as_ref()));
    let component: Arc<Option<String>> = Arc::new(component);
    let handler = hyper::service::service_fn(move |request: http::Request<Incoming>| {
        let service = service.clone();
        let component = component.clone();
        async move {
            if let Err(error) = authorize(component.as_deref(), request.uri().path()) {
                tracing::info!(
                    %peer,
                    component = component.as_deref().unwrap_or(""),
                    path = request.uri().path(),
                    "Rejected a runner protocol request"
                );
                return Ok(error.into_http_response(request.headers()));
            }
            service.oneshot(request).await
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    if let Err(error) = builder
        .serve_connection(TokioIo::new(stream), handler)
        .await
    {
        tracing::debug!(%peer, %error, "Runner protocol connection closed with an error");
    }
}

/// Checks that the client's component may call the method at `path`.
fn authorize(component: Option<&str>, path: &str) -> std::result::Result<(), ConnectError> {
    let required = if path == pb::RUNNER_SERVICE_STREAM_WORKLOAD_LOGS_SPEC.procedure {
        LOGS_COMPONENT
    } else {
        CONTROL_COMPONENT
    };
    match component {
        Some(name) if name == required => Ok(()),
        Some(name) => Err(ConnectError::permission_denied(format!(
            "permission denied: component {name} may not call {path}; \
             it needs a certificate for agyn://component/{required}"
        ))),
        None => Err(ConnectError::permission_denied(format!(
            "permission denied: the client certificate names no platform component; \
             {path} needs a certificate for agyn://component/{required}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_need_the_runners_component() {
        let logs = pb::RUNNER_SERVICE_STREAM_WORKLOAD_LOGS_SPEC.procedure;
        let start = pb::RUNNER_SERVICE_START_WORKLOAD_SPEC.procedure;
        assert!(authorize(Some("runners"), logs).is_ok());
        assert!(authorize(Some("orchestrator"), logs).is_err());
        assert!(authorize(Some("orchestrator"), start).is_ok());
        assert!(authorize(Some("runners"), start).is_err());
        assert!(authorize(None, start).is_err());
        assert!(authorize(Some("gateway"), start).is_err());
    }
}
