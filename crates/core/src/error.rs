//! The error type every service returns, and the one place where it is
//! turned into a Connect/gRPC status.
//!
//! Messages are lowercase English without a trailing period:
//! `<field>: <problem>` for validation, `<resource> <id> not found`,
//! `permission denied: <permission> on <object type>`.

use std::fmt;

use agyn_api_rpc::google::rpc::{BadRequest, ErrorInfo, bad_request::FieldViolation};
use connectrpc::{ConnectError, ErrorCode, ErrorDetail};

/// `google.rpc.ErrorInfo.domain` of every agyn error.
pub const ERROR_DOMAIN: &str = "agyn.dev";

/// Result of a service operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Status codes the services use; each maps to one Connect code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    ResourceExhausted,
    Unavailable,
    Unimplemented,
    Internal,
}

/// A failed operation: its code, a message for the caller and optional
/// machine-readable details.
pub struct Error {
    code: Code,
    message: String,
    reason: Option<&'static str>,
    metadata: Vec<(String, String)>,
    violations: Vec<(String, String)>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            reason: None,
            metadata: Vec::new(),
            violations: Vec::new(),
            source: None,
        }
    }

    /// Builds a validation failure of one request field and attaches a
    /// `google.rpc.BadRequest` naming the field.
    pub fn invalid_field(field: &str, problem: &str) -> Self {
        let mut error = Self::new(Code::InvalidArgument, format!("{field}: {problem}"));
        error
            .violations
            .push((field.to_string(), problem.to_string()));
        error
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(Code::Unauthenticated, message)
    }

    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(Code::PermissionDenied, message)
    }

    /// `<resource> <id> not found`.
    pub fn not_found(resource: &str, id: &str) -> Self {
        Self::new(Code::NotFound, format!("{resource} {id} not found"))
    }

    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(Code::AlreadyExists, message)
    }

    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(Code::FailedPrecondition, message)
    }

    pub fn resource_exhausted(message: impl Into<String>) -> Self {
        Self::new(Code::ResourceExhausted, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, message)
    }

    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::new(Code::Unimplemented, message)
    }

    /// Builds an unexpected failure. The caller sees only a reference; the message
    /// and source are logged once, when the error is sent.
    pub fn internal(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        let mut error = Self::new(Code::Internal, message);
        error.source = Some(source.into());
        error
    }

    /// Attaches a `google.rpc.ErrorInfo` reason such as `TOKEN_EXPIRED`.
    pub fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    /// Adds `google.rpc.ErrorInfo` metadata; implies a reason was set.
    pub fn with_metadata(mut self, key: &str, value: impl Into<String>) -> Self {
        self.metadata.push((key.to_string(), value.into()));
        self
    }

    pub fn code(&self) -> Code {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn reason(&self) -> Option<&'static str> {
        self.reason
    }

    /// Returns whether this error wraps a database unique-key violation, the sign
    /// that a concurrent writer committed the same key first.
    pub fn is_unique_violation(&self) -> bool {
        match self
            .source
            .as_deref()
            .and_then(|source| source.downcast_ref::<sqlx::Error>())
        {
            Some(sqlx::Error::Database(database)) => database.is_unique_violation(),
            _ => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Error");
        debug
            .field("code", &self.code)
            .field("message", &self.message);
        if let Some(reason) = self.reason {
            debug.field("reason", &reason);
        }
        if let Some(source) = &self.source {
            debug.field("source", source);
        }
        debug.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolTimedOut => Self::unavailable("database busy"),
            // SQLITE_BUSY, SQLITE_LOCKED and their extended codes: the
            // database stayed locked past busy_timeout.
            sqlx::Error::Database(database)
                if matches!(
                    database.code().as_deref(),
                    Some("5" | "6" | "261" | "262" | "517")
                ) =>
            {
                Self::unavailable("database busy")
            }
            // PostgreSQL text cannot hold NUL characters; validation should
            // catch them first, and this keeps a missed field from being a
            // server error.
            sqlx::Error::Database(database) if database.code().as_deref() == Some("22021") => {
                Self::invalid_argument("text must not contain NUL characters")
            }
            other => Self::internal("database query failed", other),
        }
    }
}

impl From<Error> for ConnectError {
    fn from(error: Error) -> Self {
        let code = match error.code {
            Code::InvalidArgument => ErrorCode::InvalidArgument,
            Code::Unauthenticated => ErrorCode::Unauthenticated,
            Code::PermissionDenied => ErrorCode::PermissionDenied,
            Code::NotFound => ErrorCode::NotFound,
            Code::AlreadyExists => ErrorCode::AlreadyExists,
            Code::FailedPrecondition => ErrorCode::FailedPrecondition,
            Code::ResourceExhausted => ErrorCode::ResourceExhausted,
            Code::Unavailable => ErrorCode::Unavailable,
            Code::Unimplemented => ErrorCode::Unimplemented,
            Code::Internal => ErrorCode::Internal,
        };
        if error.code == Code::Internal {
            let reference = uuid::Uuid::new_v4();
            tracing::error!(%reference, error = ?error, "Internal error");
            return ConnectError::new(code, format!("internal error (ref {reference})"));
        }
        if error.code == Code::Unavailable {
            tracing::warn!(message = %error.message, "Dependency unavailable");
        }
        let mut connect = ConnectError::new(code, error.message);
        if !error.violations.is_empty() {
            let details = BadRequest {
                field_violations: error
                    .violations
                    .into_iter()
                    .map(|(field, description)| FieldViolation {
                        field,
                        description,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            connect =
                connect.with_detail(ErrorDetail::from_message("google.rpc.BadRequest", &details));
        }
        if let Some(reason) = error.reason {
            let info = ErrorInfo {
                reason: reason.to_string(),
                domain: ERROR_DOMAIN.to_string(),
                metadata: error.metadata.into_iter().collect(),
                ..Default::default()
            };
            connect = connect.with_detail(ErrorDetail::from_message("google.rpc.ErrorInfo", &info));
        }
        connect
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_hides_message() {
        let error = Error::internal("disk on fire", std::io::Error::other("EIO"));
        let connect = ConnectError::from(error);
        assert_eq!(connect.code, ErrorCode::Internal);
        assert!(
            connect
                .message
                .as_deref()
                .unwrap()
                .starts_with("internal error (ref ")
        );
        assert!(!connect.message.as_deref().unwrap().contains("disk"));
    }

    #[test]
    fn invalid_field_carries_bad_request() {
        let connect = ConnectError::from(Error::invalid_field("name", "must not be empty"));
        assert_eq!(connect.code, ErrorCode::InvalidArgument);
        assert_eq!(connect.message.as_deref(), Some("name: must not be empty"));
        assert_eq!(connect.details.len(), 1);
        assert_eq!(connect.details[0].type_url, "google.rpc.BadRequest");
    }

    #[test]
    fn reason_carries_error_info() {
        let error = Error::unauthenticated("token expired").with_reason("TOKEN_EXPIRED");
        let connect = ConnectError::from(error);
        assert_eq!(connect.code, ErrorCode::Unauthenticated);
        assert_eq!(connect.details[0].type_url, "google.rpc.ErrorInfo");
    }

    #[test]
    fn pool_timeout_is_unavailable() {
        let error = Error::from(sqlx::Error::PoolTimedOut);
        assert_eq!(error.code(), Code::Unavailable);
        assert_eq!(error.message(), "database busy");
    }
}
