//! The users operations, independent of the RPC layer. Each method takes
//! the caller and validated inputs, and states its authorization rule
//! first.

use agyn_api_users::agynio::api::users::v1 as pb;
use agyn_core::page::{Fingerprint, Page, SortOrder};
use agyn_core::time::{now_micros, timestamp};
use agyn_core::{Caller, Error, IdentityKind, Result, Secret};

use std::sync::Arc;

use crate::cache::CachedUser;
use crate::identity::MAX_BATCH;
use crate::store::{self, NewToken, NewUser, TokenRecord, UserRecord};
use crate::{MAX_TOKENS_PER_USER, Users, identity, tokens, username};

const SEARCH_DEFAULT_LIMIT: i64 = 10;
const SEARCH_MAX_LIMIT: i64 = 20;
const TOKEN_NAME_MAX_CHARS: usize = 100;

/// A new API token: its metadata and the plaintext, returned once. The
/// plaintext prints as `[redacted]` in `Debug` output.
#[derive(Debug)]
pub struct CreatedToken {
    pub token: TokenRecord,
    pub plaintext: Secret<String>,
}

impl Users {
    /// GetMe: the calling user and its cluster role. Callers that are not
    /// users get `not_found`.
    pub async fn get_me(&self, caller: &Caller) -> Result<Arc<CachedUser>> {
        let user_id = caller
            .user_id()
            .ok_or_else(|| Error::new(agyn_core::error::Code::NotFound, "caller is not a user"))?;
        if let Some(user) = self.cache.as_ref().and_then(|cache| cache.user(user_id)) {
            return Ok(user);
        }
        let generation = self.cache.as_ref().map(|cache| cache.generation());
        let record = self
            .load_user(user_id)
            .await?
            .ok_or_else(|| Error::not_found("user", user_id))?;
        let user = CachedUser::new(record);
        if let (Some(cache), Some(generation)) = (&self.cache, generation) {
            cache.insert_user(Arc::clone(&user), generation);
        }
        Ok(user)
    }

    /// GetUser: any authenticated caller. Returns the user and whether the
    /// caller may see the full record (itself or a cluster admin).
    pub async fn get_user(&self, caller: &Caller, id: &str) -> Result<(UserRecord, bool)> {
        let caller_id = caller.identity_id()?;
        let id = agyn_core::id::parse_id("id", id)?;
        let user = self
            .load_user(&id)
            .await?
            .ok_or_else(|| Error::not_found("user", &id))?;
        let full = caller_id == user.id || self.is_cluster_admin(caller_id).await?;
        Ok((user, full))
    }

    /// SearchUsers: any authenticated caller, 30 calls per minute each.
    pub async fn search_users(
        &self,
        caller: &Caller,
        prefix: &str,
        limit: i32,
    ) -> Result<Vec<UserRecord>> {
        let caller_id = caller.identity_id()?;
        let prefix = prefix.to_lowercase();
        if prefix.is_empty() {
            return Err(Error::invalid_field("prefix", "is required"));
        }
        if !username::is_valid(&prefix) {
            return Err(Error::invalid_field(
                "prefix",
                "must match ^[a-z0-9_-]{1,32}$",
            ));
        }
        let limit = match limit {
            limit if limit < 0 => {
                return Err(Error::invalid_field("limit", "must not be negative"));
            }
            0 => SEARCH_DEFAULT_LIMIT,
            limit => i64::from(limit).min(SEARCH_MAX_LIMIT),
        };
        if let Err(retry_after) = self.search_limiter.check(caller_id) {
            return Err(
                Error::resource_exhausted("rate limit exceeded for SearchUsers")
                    .with_reason("RATE_LIMITED")
                    .with_metadata("retry_after_s", retry_after.to_string()),
            );
        }
        store::search_users(&self.db, &prefix, limit).await
    }

    /// CreateAPIToken: users only.
    pub async fn create_api_token(
        &self,
        caller: &Caller,
        name: &str,
        expires_at: Option<i64>,
    ) -> Result<CreatedToken> {
        let user_id = caller
            .user_id()
            .ok_or_else(|| Error::permission_denied("only users can create api tokens"))?;
        let name = agyn_core::text::display_name("name", name, TOKEN_NAME_MAX_CHARS)?;
        let now = now_micros();
        if expires_at.is_some_and(|expires| expires <= now) {
            return Err(Error::invalid_field("expires_at", "must be in the future"));
        }
        let mut tx = self.db.begin_write().await?;
        if store::count_tokens(&mut tx, user_id).await? >= MAX_TOKENS_PER_USER {
            return Err(Error::failed_precondition("token limit reached"));
        }
        let created = insert_token(&mut tx, user_id, name, expires_at, now).await?;
        tx.commit().await?;
        tracing::info!(token_id = %created.token.id, identity_id = %user_id, "API token created");
        Ok(created)
    }

    /// ListAPITokens: the caller's own tokens, newest first.
    pub async fn list_api_tokens(
        &self,
        caller: &Caller,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<TokenRecord>, String)> {
        let caller_id = caller.identity_id()?;
        let fingerprint =
            Fingerprint::new("agynio.api.users.v1.UsersService/ListAPITokens").with(caller_id);
        let page = Page::parse(page_size, page_token, SortOrder::Descending, fingerprint)?;
        store::list_tokens(&self.db, caller_id, &page).await
    }

    /// RevokeAPIToken: the caller's own tokens; another user's token is
    /// `not_found` so that its existence does not leak.
    pub async fn revoke_api_token(&self, caller: &Caller, id: &str) -> Result<()> {
        let caller_id = caller.identity_id()?;
        let id = agyn_core::id::parse_id("id", id)?;
        if !store::delete_token(&self.db, caller_id, &id).await? {
            return Err(Error::not_found("api token", &id));
        }
        if let Some(cache) = &self.cache {
            cache.forget_token(&id);
        }
        tracing::info!(token_id = %id, identity_id = %caller_id, "API token revoked");
        Ok(())
    }

    /// ResolveAPIToken (internal): the token with SHA-256 `token_hash`.
    pub async fn resolve_api_token(&self, token_hash: &str) -> Result<TokenRecord> {
        let resolved = store::token_by_hash(&self.db, token_hash)
            .await?
            .ok_or_else(|| Error::new(agyn_core::error::Code::NotFound, "api token not found"))?;
        if resolved
            .token
            .expires_at
            .is_some_and(|expires| expires <= now_micros())
        {
            return Err(
                Error::new(agyn_core::error::Code::NotFound, "api token expired")
                    .with_reason("TOKEN_EXPIRED"),
            );
        }
        Ok(resolved.token)
    }

    /// BatchGetUsers (internal): unknown ids are omitted.
    pub async fn batch_get_users(&self, ids: &[String]) -> Result<Vec<UserRecord>> {
        if ids.len() > MAX_BATCH {
            return Err(Error::invalid_field(
                "identity_ids",
                "must name at most 500 ids",
            ));
        }
        let ids = ids
            .iter()
            .enumerate()
            .map(|(index, id)| agyn_core::id::parse_id(&format!("identity_ids[{index}]"), id))
            .collect::<Result<Vec<_>>>()?;
        let mut users = Vec::with_capacity(ids.len());
        for id in &ids {
            if let Some(user) = self.load_user(id).await? {
                users.push(user);
            }
        }
        Ok(users)
    }

    /// SetClusterAdmin (internal): grants or revokes cluster admin.
    pub async fn set_cluster_admin(
        &self,
        identity_id: &str,
        admin: bool,
        source: &str,
    ) -> Result<()> {
        let id = agyn_core::id::parse_id("identity_id", identity_id)?;
        if identity::kind_of(&self.db, &id).await? != Some(IdentityKind::User) {
            return Err(Error::not_found("user", &id));
        }
        let mut tx = self.db.begin_write().await?;
        self.set_admin_in(&mut tx, &id, admin, source, now_micros())
            .await?;
        tx.commit().await?;
        if let Some(cache) = &self.cache {
            cache.forget_user(&id);
        }
        Ok(())
    }

    /// Looks up the user with `oidc_subject`; `None` before its first
    /// sign-in. The record's `cluster_admin` is always false.
    pub async fn user_by_subject(&self, oidc_subject: &str) -> Result<Option<UserRecord>> {
        let mut connection = self.db.pool().acquire().await?;
        store::user_by_subject(&mut connection, oidc_subject).await
    }

    /// ResolveOrCreateUser (internal): the user with `oidc_subject`,
    /// created with a derived username on first sign-in. Returns the user
    /// and whether it was created.
    pub async fn resolve_or_create_user(
        &self,
        profile: &pb::ResolveOrCreateUserRequest,
    ) -> Result<(UserRecord, bool)> {
        if profile.oidc_subject.is_empty() {
            return Err(Error::invalid_field("oidc_subject", "is required"));
        }
        let mut connection = self.db.pool().acquire().await?;
        if let Some(user) = store::user_by_subject(&mut connection, &profile.oidc_subject).await? {
            return Ok((user, false));
        }
        drop(connection);
        let base = username::base(
            &profile.preferred_username,
            &profile.email,
            &profile.name,
            &profile.oidc_subject,
        );
        let mut tx = self.db.begin_write().await?;
        let mut chosen = None;
        for candidate in username::candidates(&base) {
            if !store::username_taken(&mut tx, &candidate).await? {
                chosen = Some(candidate);
                break;
            }
        }
        let Some(chosen) = chosen else {
            return Err(Error::failed_precondition("could not allocate a username"));
        };
        let id = agyn_core::id::new_id();
        let now = now_micros();
        identity::register(&mut tx, &id, IdentityKind::User, now).await?;
        let insert = store::insert_user(
            &mut tx,
            &NewUser {
                id: &id,
                oidc_subject: &profile.oidc_subject,
                username: &chosen,
                name: &profile.name,
                email: &profile.email,
                email_verified: profile.email_verified,
                photo_url: &profile.photo_url,
                now,
            },
        )
        .await;
        match insert {
            Ok(()) => {}
            Err(error) if agyn_store::is_unique_violation(&error) => {
                // A concurrent first sign-in of the same subject won the
                // race (or took the username); return the stored user.
                drop(tx);
                let mut connection = self.db.pool().acquire().await?;
                return match store::user_by_subject(&mut connection, &profile.oidc_subject).await? {
                    Some(user) => Ok((user, false)),
                    None => Err(Error::unavailable(
                        "username allocation raced; retry the request",
                    )),
                };
            }
            Err(error) => return Err(error.into()),
        }
        tx.commit().await?;
        tracing::info!(user_id = %id, username = %chosen, "User created");
        let user = self
            .load_user(&id)
            .await?
            .ok_or_else(|| Error::internal("user vanished after insert", id.clone()))?;
        Ok((user, true))
    }
}

/// Inserts a new token for `user_id` inside `connection`'s transaction.
pub(crate) async fn insert_token(
    connection: &mut agyn_store::sqlx::AnyConnection,
    user_id: &str,
    name: &str,
    expires_at: Option<i64>,
    now: i64,
) -> Result<CreatedToken> {
    let plaintext = tokens::generate();
    let id = agyn_core::id::new_id();
    let token_prefix = tokens::display_prefix(plaintext.expose());
    let token_hash = tokens::hash(plaintext.expose());
    store::insert_token(
        connection,
        &NewToken {
            id: &id,
            identity_id: user_id,
            name,
            token_hash: &token_hash,
            token_prefix: &token_prefix,
            expires_at,
            now,
        },
    )
    .await?;
    Ok(CreatedToken {
        token: TokenRecord {
            id,
            identity_id: user_id.to_string(),
            name: name.to_string(),
            token_prefix,
            expires_at,
            created_at: now,
            last_used_at: None,
        },
        plaintext,
    })
}

/// Converts a user to protobuf; `full` false gives the redacted view.
pub fn user_to_proto(user: &UserRecord, full: bool) -> pb::User {
    pb::User {
        meta: pb::EntityMeta {
            id: user.id.clone(),
            created_at: timestamp(user.created_at).into(),
            updated_at: timestamp(user.updated_at).into(),
            ..Default::default()
        }
        .into(),
        oidc_subject: if full {
            user.oidc_subject.clone()
        } else {
            String::new()
        },
        username: user.username.clone(),
        name: user.name.clone(),
        email: if full {
            user.email.clone()
        } else {
            String::new()
        },
        email_verified: full && user.email_verified,
        photo_url: user.photo_url.clone(),
        ..Default::default()
    }
}

pub fn cluster_role(user: &UserRecord, full: bool) -> pb::ClusterRole {
    if full && user.cluster_admin {
        pb::ClusterRole::CLUSTER_ROLE_ADMIN
    } else {
        pb::ClusterRole::CLUSTER_ROLE_UNSPECIFIED
    }
}

pub fn token_to_proto(token: &TokenRecord) -> pb::APIToken {
    pb::APIToken {
        id: token.id.clone(),
        identity_id: token.identity_id.clone(),
        name: token.name.clone(),
        token_prefix: token.token_prefix.clone(),
        expires_at: token.expires_at.map(timestamp).into(),
        created_at: timestamp(token.created_at).into(),
        last_used_at: token.last_used_at.map(timestamp).into(),
        ..Default::default()
    }
}
