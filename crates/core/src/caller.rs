//! The authenticated caller of a request.
//!
//! The gateway builds one `Caller` per request from its credential and
//! attaches it to the request extensions. Services read it from there and
//! never trust identity headers sent by clients.

use crate::Error;

/// Kind of an identity, as stored in the identity registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentityKind {
    Agent,
    Runner,
    User,
    App,
    Platform,
}

impl IdentityKind {
    /// Returns the name used in storage and metadata (`user`, `agent`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Runner => "runner",
            Self::User => "user",
            Self::App => "app",
            Self::Platform => "platform",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "agent" => Some(Self::Agent),
            "runner" => Some(Self::Runner),
            "user" => Some(Self::User),
            "app" => Some(Self::App),
            "platform" => Some(Self::Platform),
            _ => None,
        }
    }

    /// Returns the `agynio.api.identity.v1.IdentityType` number.
    pub fn proto_number(self) -> i32 {
        match self {
            Self::Agent => 1,
            Self::Runner => 2,
            Self::User => 4,
            Self::App => 5,
            Self::Platform => 8,
        }
    }
}

/// Kind of credential the caller presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    ApiToken,
    Oidc,
    Certificate,
}

/// Identity or component that makes a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// An authenticated identity (a user, agent, runner or app).
    Identity {
        identity_id: String,
        kind: IdentityKind,
        /// Set only for an agent workload authenticated by its workload
        /// certificate.
        workload_id: Option<String>,
        credential: CredentialKind,
    },
    /// Trusted platform code acting on its own behalf, named by its
    /// component (`orchestrator`, `bootstrap`, ...).
    Component(&'static str),
}

impl Caller {
    /// Returns the caller's identity id, or `unauthenticated` for callers
    /// that act as a component.
    pub fn identity_id(&self) -> Result<&str, Error> {
        match self {
            Self::Identity { identity_id, .. } => Ok(identity_id),
            Self::Component(_) => Err(Error::unauthenticated("an identity is required")),
        }
    }

    /// Returns the id of the calling user, or `err` when the caller is not
    /// a user.
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Self::Identity {
                identity_id,
                kind: IdentityKind::User,
                ..
            } => Some(identity_id),
            _ => None,
        }
    }

    /// Returns the caller carried by a request, or `unauthenticated` if the
    /// transport attached none (a routing bug, never a client mistake).
    pub fn from_extensions(extensions: &http::Extensions) -> Result<&Caller, Error> {
        extensions
            .get::<Caller>()
            .ok_or_else(|| Error::unauthenticated("missing credential"))
    }
}

/// Returns the caller of an RPC, as [`Caller::from_extensions`] does, with
/// the error converted to a Connect status for handlers.
pub fn request_caller(
    ctx: &connectrpc::RequestContext,
) -> Result<&Caller, connectrpc::ConnectError> {
    Ok(Caller::from_extensions(ctx.extensions())?)
}
