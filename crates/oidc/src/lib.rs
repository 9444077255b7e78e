//! OIDC sign-in.
//!
//! [`Verifier`] checks access tokens (JWTs) against one issuer: it reads
//! the issuer's discovery document and JWKS, verifies the signature with
//! an asymmetric algorithm, and checks `iss`, `exp`, `nbf`, `iat`, `aud`
//! and `sub`. [`SignIn`] maps a verified token's subject to a user in
//! [`agyn_users::Users`], and creates the user at first sign-in with a
//! profile from the token or the userinfo endpoint.

mod claims;
mod config;
mod http;
mod keys;
mod profile;
mod sign_in;
#[cfg(feature = "testing")]
pub mod testing;
mod verifier;

pub use config::{ClaimNames, InvalidConfig, OidcConfig, ProfileSource};
pub use profile::Profile;
pub use sign_in::SignIn;
pub use verifier::{VerifiedToken, Verifier};
