//! Write-through cache of API tokens and users for the authentication hot
//! path.
//!
//! It is enabled only when this process is the database's sole user
//! (SQLite, whose file [`agyn_store::Db`] locks). Every write to
//! `api_tokens`, `users` and cluster-admin tuples goes through [`crate::Users`],
//! which updates or drops the cached entry in the same call, so a revoked
//! token fails on the very next request. Expiry is checked on every hit.
//! With PostgreSQL, which several replicas share, the cache is off and
//! every request reads the database.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use agyn_core::IdentityKind;

use agyn_api_users::agynio::api::users::v1::GetMeResponse;

use crate::encoded::Encoded;
use crate::store::UserRecord;

/// A cached user with its GetMe response, encoded on first use.
pub struct CachedUser {
    pub record: UserRecord,
    pub me: std::sync::OnceLock<std::sync::Arc<Encoded<GetMeResponse>>>,
}

impl CachedUser {
    pub fn new(record: UserRecord) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            record,
            me: std::sync::OnceLock::new(),
        })
    }
}

/// Key of the token map: the SHA-256 digest of the token.
pub type TokenDigest = [u8; 32];

/// Hashes a token digest by taking its first eight bytes. The digest is
/// already uniformly distributed, and entries are only added for tokens
/// found in the database, so no client can choose colliding keys.
#[derive(Default, Clone, Copy)]
pub struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]` hashes as one 32-byte write; fold anything else in.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
            if bytes.len() >= 8 {
                break;
            }
        }
    }
}

type DigestMap<V> = HashMap<TokenDigest, V, std::hash::BuildHasherDefault<DigestHasher>>;

/// Entries kept before the maps are cleared; refilled on demand.
const MAX_ENTRIES: usize = 100_000;

pub struct CachedToken {
    pub token_id: String,
    pub identity_id: String,
    pub kind: IdentityKind,
    pub expires_at: Option<i64>,
    /// Last `last_used_at` written or scheduled, in microseconds.
    pub last_touch: AtomicI64,
}

#[derive(Default)]
pub struct AuthCache {
    tokens: RwLock<DigestMap<std::sync::Arc<CachedToken>>>,
    users: RwLock<HashMap<String, std::sync::Arc<CachedUser>>>,
    /// Count of invalidations. A caller reads it before loading a row from
    /// the database and passes it to `insert_*`, which skips the insert if
    /// an invalidation happened meanwhile, because the row it loaded may
    /// already be revoked or changed.
    generation: AtomicU64,
}

impl AuthCache {
    /// Returns the invalidation count to pass to `insert_token` or
    /// `insert_user` after a database read.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn invalidated(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn token(&self, digest: &TokenDigest) -> Option<std::sync::Arc<CachedToken>> {
        self.tokens
            .read()
            .expect("token cache lock")
            .get(digest)
            .cloned()
    }

    pub fn insert_token(&self, digest: TokenDigest, token: CachedToken, generation: u64) {
        let mut tokens = self.tokens.write().expect("token cache lock");
        if self.generation() != generation {
            return;
        }
        if tokens.len() >= MAX_ENTRIES {
            tokens.clear();
        }
        tokens.insert(digest, std::sync::Arc::new(token));
    }

    /// Drops the token with id `token_id`.
    pub fn forget_token(&self, token_id: &str) {
        let mut tokens = self.tokens.write().expect("token cache lock");
        tokens.retain(|_, token| token.token_id != token_id);
        self.invalidated();
    }

    /// Drops every token of `identity_id`.
    pub fn forget_tokens_of(&self, identity_id: &str) {
        let mut tokens = self.tokens.write().expect("token cache lock");
        tokens.retain(|_, token| token.identity_id != identity_id);
        self.invalidated();
    }

    pub fn user(&self, id: &str) -> Option<std::sync::Arc<CachedUser>> {
        self.users.read().expect("user cache lock").get(id).cloned()
    }

    pub fn insert_user(&self, user: std::sync::Arc<CachedUser>, generation: u64) {
        let mut users = self.users.write().expect("user cache lock");
        if self.generation() != generation {
            return;
        }
        if users.len() >= MAX_ENTRIES {
            users.clear();
        }
        users.insert(user.record.id.clone(), user);
    }

    pub fn forget_user(&self, id: &str) {
        let mut users = self.users.write().expect("user cache lock");
        users.remove(id);
        self.invalidated();
    }
}

impl CachedToken {
    /// Returns true when `last_used_at` should be written now, and records
    /// that it was scheduled so concurrent requests do not write it again.
    pub fn claim_touch(&self, now: i64, resolution: i64) -> bool {
        let last = self.last_touch.load(Ordering::Relaxed);
        now - last >= resolution
            && self
                .last_touch
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: &str) -> CachedToken {
        CachedToken {
            token_id: id.to_string(),
            identity_id: "alice".to_string(),
            kind: IdentityKind::User,
            expires_at: None,
            last_touch: AtomicI64::new(0),
        }
    }

    #[test]
    fn stale_insert_after_revocation_is_skipped() {
        let cache = AuthCache::default();
        // A lookup reads the generation, then loads the token from the
        // database while another request revokes it.
        let seen = cache.generation();
        cache.forget_token("t1");
        cache.insert_token([1; 32], token("t1"), seen);
        assert!(cache.token(&[1; 32]).is_none());
    }

    #[test]
    fn current_insert_is_kept_until_forgotten() {
        let cache = AuthCache::default();
        cache.insert_token([2; 32], token("t2"), cache.generation());
        assert!(cache.token(&[2; 32]).is_some());
        cache.forget_tokens_of("alice");
        assert!(cache.token(&[2; 32]).is_none());
    }
}
