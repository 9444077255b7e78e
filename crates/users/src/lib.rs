//! Users: the identity registry, user records, cluster-admin grants and
//! API tokens.
//!
//! [`Users`] contains the logic and storage. [`service::UsersRpc`] serves it
//! as the internal `UsersService` and [`service::UsersGatewayRpc`] as the
//! public `UsersGateway`; [`identity::IdentityRpc`] serves the registry.

#![allow(refining_impl_trait_internal, refining_impl_trait_reachable)]

pub mod bootstrap;
mod cache;
pub mod devices;
pub mod encoded;
pub mod identity;
mod ops;
pub mod rate_limit;
pub mod service;
mod store;
pub mod tokens;
mod username;

use std::sync::Arc;

use agyn_core::{Error, IdentityKind, Result, Secret};
use agyn_store::Db;

pub use cache::CachedUser;
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
    authorizer: agyn_authz::Authorizer,
    search_limiter: Arc<rate_limit::RateLimiter>,
    /// Present only when this process is the database's sole user.
    cache: Option<Arc<cache::AuthCache>>,
    /// The platform CA, which device enrollment and deletion need.
    pki: Option<agyn_pki::Pki>,
    seen_devices: Arc<devices::SeenDevices>,
}

impl Users {
    pub fn new(db: Db) -> Self {
        let cache = db
            .is_exclusive()
            .then(|| Arc::new(cache::AuthCache::default()));
        Self {
            authorizer: agyn_authz::Authorizer::new(db.clone()),
            db,
            search_limiter: Arc::new(rate_limit::RateLimiter::per_minute(30)),
            cache,
            pki: None,
            seen_devices: Arc::default(),
        }
    }

    /// Adds the platform CA, which devices need.
    pub fn with_pki(mut self, pki: agyn_pki::Pki) -> Self {
        self.pki = Some(pki);
        self
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Loads a user with its cluster role.
    pub(crate) async fn load_user(&self, id: &str) -> Result<Option<UserRecord>> {
        let Some(mut user) = store::user_by_id(&self.db, id).await? else {
            return Ok(None);
        };
        user.cluster_admin = self.is_cluster_admin(id).await?;
        Ok(Some(user))
    }

    /// Returns whether `identity_id` has `admin` on `cluster:global`.
    pub(crate) async fn is_cluster_admin(&self, identity_id: &str) -> Result<bool> {
        self.authorizer
            .check(
                &agyn_authz::ObjectRef::identity(identity_id),
                "admin",
                &cluster(),
            )
            .await
    }

    /// Grants or revokes cluster admin inside `connection`'s transaction,
    /// recording who granted it (`bootstrap`, `config` or `admin`).
    pub(crate) async fn set_admin_in(
        &self,
        connection: &mut agyn_store::sqlx::AnyConnection,
        identity_id: &str,
        admin: bool,
        source: &str,
        now: i64,
    ) -> Result<()> {
        let tuple = agyn_authz::Tuple::new(
            agyn_authz::ObjectRef::identity(identity_id),
            "admin",
            cluster(),
        );
        if admin {
            self.authorizer.write_in(connection, &[tuple], &[]).await?;
        } else {
            self.authorizer.write_in(connection, &[], &[tuple]).await?;
        }
        store::set_admin_grant(connection, identity_id, admin, source, now).await
    }

    /// Resolves a bearer API token to its identity.
    ///
    /// Revocation and expiry take effect on the next request: with
    /// PostgreSQL every call reads the database, and with SQLite the
    /// write-through cache is updated by the revoking call itself.
    /// `last_used_at` is refreshed in the background at most once per
    /// minute per token.
    pub async fn authenticate_token<T: AsRef<str>>(
        &self,
        token: &Secret<T>,
    ) -> Result<TokenIdentity> {
        let digest = tokens::digest(token.expose().as_ref());
        let now = agyn_core::time::now_micros();
        if let Some(cached) = self.cache.as_ref().and_then(|cache| cache.token(&digest)) {
            if cached.expires_at.is_some_and(|expires| expires <= now) {
                return Err(expired());
            }
            if cached.claim_touch(now, tokens::LAST_USED_RESOLUTION_MICROS) {
                self.touch_later(cached.token_id.clone(), now);
            }
            return Ok(TokenIdentity {
                identity_id: cached.identity_id.clone(),
                kind: cached.kind,
                token_id: cached.token_id.clone(),
            });
        }
        let generation = self.cache.as_ref().map(|cache| cache.generation());
        let record = store::token_by_hash(&self.db, &tokens::hex(&digest))
            .await?
            .ok_or_else(|| Error::unauthenticated("invalid credential"))?;
        if record
            .token
            .expires_at
            .is_some_and(|expires| expires <= now)
        {
            return Err(expired());
        }
        let kind = IdentityKind::parse(&record.identity_type)
            .ok_or_else(|| Error::unauthenticated("invalid credential"))?;
        let last_used = record.token.last_used_at.unwrap_or(i64::MIN / 2);
        let stale = now - last_used >= tokens::LAST_USED_RESOLUTION_MICROS;
        if stale {
            self.touch_later(record.token.id.clone(), now);
        }
        if let (Some(cache), Some(generation)) = (&self.cache, generation) {
            cache.insert_token(
                digest,
                cache::CachedToken {
                    token_id: record.token.id.clone(),
                    identity_id: record.token.identity_id.clone(),
                    kind,
                    expires_at: record.token.expires_at,
                    last_touch: std::sync::atomic::AtomicI64::new(if stale {
                        now
                    } else {
                        last_used
                    }),
                },
                generation,
            );
        }
        Ok(TokenIdentity {
            identity_id: record.token.identity_id,
            kind,
            token_id: record.token.id,
        })
    }

    /// Writes `last_used_at` in the background; failures are logged and
    /// otherwise ignored.
    fn touch_later(&self, token_id: String, now: i64) {
        let db = self.db.clone();
        tokio::spawn(async move {
            if let Err(error) = store::touch_token(&db, &token_id, now).await {
                tracing::debug!(%error, %token_id, "Failed to record token use");
            }
        });
    }
}

fn cluster() -> agyn_authz::ObjectRef {
    agyn_authz::ObjectRef::new("cluster", "global")
}

fn expired() -> Error {
    Error::unauthenticated("token expired").with_reason("TOKEN_EXPIRED")
}
