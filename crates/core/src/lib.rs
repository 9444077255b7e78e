//! Plumbing shared by every agyn service.
//!
//! Services build on these pieces so that errors, identifiers, page tokens
//! and caller identities look the same on every method.

pub mod agent_config;
pub mod caller;
pub mod error;
pub mod events;
pub mod id;
pub mod page;
pub mod secret;
pub mod text;
pub mod time;

pub use caller::{Caller, CredentialKind, IdentityKind};
pub use error::{Error, Result};
pub use secret::Secret;
