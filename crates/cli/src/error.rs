//! The error every command returns, and the exit status it maps to.

use std::fmt;
use std::sync::Mutex;

use agyn_client::{ConnectError, ErrorCode};

/// URL of the gateway that the command connected to last, for the
/// message of a call that did not reach it.
static GATEWAY_URL: Mutex<Option<String>> = Mutex::new(None);

/// Records `url` as the gateway that later calls go to.
pub fn set_gateway_url(url: &str) {
    *GATEWAY_URL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(url.to_string());
}

fn gateway_url() -> Option<String> {
    GATEWAY_URL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// Result of a command.
pub type Result<T, E = CliError> = std::result::Result<T, E>;

/// Failure of a command.
#[derive(Debug)]
pub enum CliError {
    /// The gateway rejected a call. Printed as `<code>: <message>`, with
    /// the Connect code in snake case (`permission_denied`, `not_found`).
    Gateway { code: &'static str, message: String },
    /// A call did not reach the gateway: the connection was refused, the
    /// host name did not resolve, or TLS failed. Printed with code
    /// `unavailable` and the gateway's URL. `cause` is the innermost
    /// error, such as `Connection refused (os error 111)`.
    Unreachable { cause: String },
    /// Invalid or missing input found after parsing, such as a flag that
    /// another flag requires. Exits 2, like clap's usage errors.
    Usage(String),
    /// A local failure: a file, the stored credentials, a timeout.
    Failed(String),
    /// Standard output was closed by its reader (`agyn logs ... | head`).
    /// The command stops quietly and exits 0.
    OutputClosed,
    /// The user pressed Ctrl-C. Exits 130, as shells report SIGINT.
    Interrupted(String),
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> Self {
        Self::Usage(message.into())
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(message.into())
    }

    /// Returns the process exit status: 2 for usage errors, 0 for a closed
    /// output, 130 after Ctrl-C, 1 otherwise.
    pub fn exit_status(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::OutputClosed => 0,
            Self::Interrupted(_) => 130,
            Self::Gateway { .. } | Self::Unreachable { .. } | Self::Failed(_) => 1,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Gateway { code, message } => write!(f, "{code}: {message}"),
            Self::Unreachable { cause } => match gateway_url() {
                Some(url) => write!(f, "unavailable: cannot reach the gateway at {url}: {cause}"),
                None => write!(f, "unavailable: cannot reach the gateway: {cause}"),
            },
            Self::Usage(message) | Self::Failed(message) | Self::Interrupted(message) => {
                f.write_str(message)
            }
            Self::OutputClosed => f.write_str("standard output was closed"),
        }
    }
}

impl std::error::Error for CliError {}

impl From<ConnectError> for CliError {
    fn from(error: ConnectError) -> Self {
        // The client attaches the transport's error as the source. An
        // error that the gateway returned has none.
        if error.code == ErrorCode::Unavailable
            && let Some(mut cause) = std::error::Error::source(&error)
        {
            while let Some(inner) = cause.source() {
                cause = inner;
            }
            return Self::Unreachable {
                cause: cause.to_string(),
            };
        }
        let code = error.code.as_str();
        let message = error
            .message
            .unwrap_or_else(|| format!("the gateway returned {code} without a message"));
        Self::Gateway { code, message }
    }
}

impl From<std::io::Error> for CliError {
    /// Converts a failed write to standard output. Other I/O errors are
    /// converted where they happen, with the path involved.
    fn from(error: std::io::Error) -> Self {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            Self::OutputClosed
        } else {
            Self::failed(format!("failed to write the output: {error}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_error_shows_code_and_message() {
        let error = CliError::from(ConnectError::new(
            ErrorCode::PermissionDenied,
            "missing can_manage on organization:x",
        ));
        assert_eq!(
            error.to_string(),
            "permission_denied: missing can_manage on organization:x"
        );
        assert_eq!(error.exit_status(), 1);
    }

    #[test]
    fn transport_error_names_gateway() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = CliError::from(ConnectError::unavailable_from_transport(
            "h2 send failed",
            refused,
        ));
        let CliError::Unreachable { cause } = &error else {
            panic!("expected an unreachable gateway, got {error:?}");
        };
        assert_eq!(cause, "refused");
        set_gateway_url("http://127.0.0.1:9");
        assert_eq!(
            error.to_string(),
            "unavailable: cannot reach the gateway at http://127.0.0.1:9: refused"
        );
        assert_eq!(error.exit_status(), 1);
    }

    #[test]
    fn returned_unavailable_is_a_gateway_error() {
        let error = CliError::from(ConnectError::new(
            ErrorCode::Unavailable,
            "server is shutting down",
        ));
        assert_eq!(error.to_string(), "unavailable: server is shutting down");
    }

    #[test]
    fn usage_error_exits_two() {
        assert_eq!(CliError::usage("--base-url is required").exit_status(), 2);
    }

    #[test]
    fn interrupt_exits_130() {
        assert_eq!(CliError::Interrupted("stopped".into()).exit_status(), 130);
    }

    #[test]
    fn broken_pipe_is_a_quiet_stop() {
        let error = CliError::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(matches!(error, CliError::OutputClosed));
        assert_eq!(error.exit_status(), 0);
    }
}
