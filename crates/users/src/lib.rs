//! Users: the identity registry, user records, cluster-admin grants and
//! API tokens.
//!
//! [`Users`] holds the logic and storage. [`service::UsersRpc`] serves it
//! as the internal `UsersService` and [`service::UsersGatewayRpc`] as the
//! public `UsersGateway`; [`identity::IdentityRpc`] serves the registry.

#![allow(refining_impl_trait_internal, refining_impl_trait_reachable)]

pub mod bootstrap;
pub mod identity;
mod ops;
mod rate_limit;
pub mod service;
mod store;
pub mod tokens;
mod username;

use std::sync::Arc;

use agyn_core::{Error, IdentityKind, Result, Secret};
use agyn_store::Db;

pub use ops::CreatedToken;
pub use store::{TokenRecord, UserRecord};

/// `oidc_subject` of the user created by bootstrap.
pub const BOOTSTRAP_ADMIN_SUBJECT: &str = "agyn:bootstrap-admin";

/// A user may hold at most this many API tokens.
pub const MAX_TOKENS_PER_USER: i64 = 1000;

/// The identity behind a valid API token.
#[derive(Debug, Clone)]
pub struct TokenIdentity {
    pub identity_id: String,
    pub kind: IdentityKind,
    pub token_id: String,
}

/// Users, identities and API tokens over one database.
#[derive(Clone)]
pub struct Users {
    db: Db,
    search_limiter: Arc<rate_limit::RateLimiter>,
}

impl Users {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            search_limiter: Arc::new(rate_limit::RateLimiter::per_minute(30)),
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Resolves a bearer API token to its identity.
    ///
    /// Every call reads the database, so revocation and expiry take effect
    /// on the next request on every replica. `last_used_at` is refreshed in
    /// the background at most once per minute per token.
    pub async fn authenticate_token(&self, token: &Secret<String>) -> Result<TokenIdentity> {
        let hash = tokens::hash(token.expose());
        let record = store::token_by_hash(&self.db, &hash)
            .await?
            .ok_or_else(|| Error::unauthenticated("invalid credential"))?;
        let now = agyn_core::time::now_micros();
        if record
            .token
            .expires_at
            .is_some_and(|expires| expires <= now)
        {
            return Err(Error::unauthenticated("token expired").with_reason("TOKEN_EXPIRED"));
        }
        let kind = IdentityKind::parse(&record.identity_type)
            .ok_or_else(|| Error::unauthenticated("invalid credential"))?;
        let stale = record
            .token
            .last_used_at
            .is_none_or(|used| now - used >= tokens::LAST_USED_RESOLUTION_MICROS);
        if stale {
            let db = self.db.clone();
            let token_id = record.token.id.clone();
            tokio::spawn(async move {
                if let Err(error) = store::touch_token(&db, &token_id, now).await {
                    tracing::debug!(%error, %token_id, "Failed to record token use");
                }
            });
        }
        Ok(TokenIdentity {
            identity_id: record.token.identity_id,
            kind,
            token_id: record.token.id,
        })
    }
}
