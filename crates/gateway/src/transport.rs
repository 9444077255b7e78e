//! Accepting connections and serving an axum application on them over
//! HTTP/1.1 and HTTP/2, in plaintext (including h2c with prior knowledge)
//! or TLS.
//!
//! In [`Transport::Mixed`] one port takes both: the first byte of a TLS
//! connection is always 0x16 (a handshake record), and no HTTP/1.1 request
//! line or HTTP/2 preface starts with it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agyn_pki::PeerCertificate;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

/// Maximum time a new connection may take to send its first byte and,
/// for TLS, to finish the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after an accept error such as EMFILE, so the loop does not spin
/// while the process is out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Minimum time between two logs of repeated accept errors.
const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// First byte of a TLS record carrying a handshake message.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The security mode of a listener's connections.
#[derive(Clone)]
pub enum Transport {
    /// Plaintext HTTP/1.1 and h2c.
    Plain,
    /// Plaintext HTTP/1.1, h2c and TLS on the same port (the public
    /// listener).
    Mixed(Arc<rustls::ServerConfig>),
    /// TLS only (the internal listener); other connections are closed when
    /// their handshake fails.
    TlsOnly(Arc<rustls::ServerConfig>),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Plain => "Plain",
            Self::Mixed(_) => "Mixed",
            Self::TlsOnly(_) => "TlsOnly",
        })
    }
}

/// Serves `app` on every connection accepted from `listener` until
/// `shutdown` completes.
///
/// Each request carries `ConnectInfo<SocketAddr>` with the peer address
/// and, on a TLS connection whose client presented a certificate, a
/// [`PeerCertificate`] with the leaf certificate that rustls verified.
/// After `shutdown` completes, no connection is accepted and idle
/// connections close. Returns once every open connection has finished, so
/// the caller bounds the wait with its own grace timeout.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    mode: Transport,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The timer enables HTTP/1.1's header read timeout, whose hyper 1
    // default is 30 seconds.
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);

    let mut accept_errors = AcceptErrors::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                accept_errors.reset();
                let connection = Connection {
                    peer,
                    app: app.clone(),
                    builder: builder.clone(),
                    watcher: graceful.watcher(),
                };
                tokio::spawn(connection.run(stream, mode.clone()));
            }
            Err(error) if is_per_connection(&error) => {
                tracing::debug!(%error, "Accepted connection failed before it was served");
            }
            Err(error) => {
                accept_errors.log(&error);
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }

    drop(listener);
    tracing::debug!(
        connections = graceful.count(),
        "stopped accepting; waiting for open connections"
    );
    graceful.shutdown().await;
    Ok(())
}

/// Returns true for accept errors that concern only the connection being
/// accepted, after which the listener works as before.
fn is_per_connection(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::Interrupted
    )
}

/// Rate-limited logging of listener errors such as EMFILE.
#[derive(Default)]
struct AcceptErrors {
    last_logged: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrors {
    fn log(&mut self, error: &std::io::Error) {
        let now = Instant::now();
        let due = self
            .last_logged
            .is_none_or(|last| now.duration_since(last) >= ACCEPT_ERROR_LOG_INTERVAL);
        if due {
            tracing::warn!(
                %error,
                suppressed = self.suppressed,
                "failed to accept a connection; retrying"
            );
            self.last_logged = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
    }

    fn reset(&mut self) {
        self.last_logged = None;
        self.suppressed = 0;
    }
}

/// One accepted connection and what serving it needs.
struct Connection {
    peer: SocketAddr,
    app: axum::Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    /// Held from accept on, so that shutdown also waits for connections
    /// that are still in their handshake.
    watcher: Watcher,
}

impl Connection {
    async fn run(self, stream: TcpStream, mode: Transport) {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(peer = %self.peer, %error, "Failed to set TCP_NODELAY");
        }
        // Plain mode peeks too, so that a client that sends nothing is
        // dropped after the handshake timeout in every mode.
        let tls = match mode {
            Transport::Plain => match self.first_byte(&stream).await {
                Some(_) => None,
                None => return,
            },
            Transport::TlsOnly(config) => Some(config),
            Transport::Mixed(config) => match self.first_byte(&stream).await {
                Some(TLS_HANDSHAKE_RECORD) => Some(config),
                Some(_) => None,
                None => return,
            },
        };
        match tls {
            Some(config) => self.serve_tls(stream, config).await,
            None => self.serve_http(stream, None).await,
        }
    }

    async fn serve_tls(self, stream: TcpStream, config: Arc<rustls::ServerConfig>) {
        let accept = TlsAcceptor::from(config).accept(stream);
        let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(peer = %self.peer, %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %self.peer, "TLS handshake timed out");
                return;
            }
        };
        let certificate = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| PeerCertificate(Arc::from(leaf.as_ref())));
        self.serve_http(stream, certificate).await;
    }

    /// Waits up to [`HANDSHAKE_TIMEOUT`] for the first byte without
    /// consuming it. Returns `None` when the peer closed, failed or stayed
    /// silent.
    async fn first_byte(&self, stream: &TcpStream) -> Option<u8> {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut byte)).await {
            Ok(Ok(1)) => Some(byte[0]),
            Ok(Ok(_)) => None,
            Ok(Err(error)) => {
                tracing::debug!(peer = %self.peer, %error, "Failed to read from a new connection");
                None
            }
            Err(_) => {
                tracing::debug!(peer = %self.peer, "New connection sent nothing before the timeout");
                None
            }
        }
    }

    async fn serve_http<I>(self, io: I, certificate: Option<PeerCertificate>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            peer,
            app,
            builder,
            watcher,
        } = self;
        let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
            let extensions = request.extensions_mut();
            extensions.insert(ConnectInfo(peer));
            if let Some(certificate) = &certificate {
                extensions.insert(certificate.clone());
            }
            app.clone().oneshot(request)
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        if let Err(error) = watcher.watch(connection).await {
            tracing::debug!(%peer, error = %error, "Connection closed with an error");
        }
    }
}
