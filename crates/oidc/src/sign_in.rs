//! Sign-in: from a verified access token to the user it names, created
//! on first sign-in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agyn_api_users::agynio::api::users::v1::ResolveOrCreateUserRequest;
use agyn_core::{Error, Secret};
use agyn_users::Users;

use crate::{Profile, ProfileSource, Verifier};

/// How long a subject's identity id is served from memory.
const SUBJECT_TTL: Duration = Duration::from_secs(600);
/// Entries kept in the subject cache; a full cache drops expired entries,
/// and then everything if that is not enough.
const SUBJECT_CACHE_CAPACITY: usize = 10_000;
/// Subjects of users that the platform itself creates, such as the
/// bootstrap admin. No token may sign in as one of them.
const RESERVED_SUBJECT_PREFIX: &str = "agyn:";

/// Signs users in with OIDC access tokens.
///
/// Every call verifies the token. The subject's identity id is then read
/// from a 10-minute cache or the users table. A subject without a user
/// gets one, with its profile read from the token or from userinfo as
/// configured. Concurrent first sign-ins of one subject in this process
/// wait for one another, so userinfo is called once.
#[derive(Clone)]
pub struct SignIn {
    inner: Arc<Inner>,
}

struct Inner {
    verifier: Verifier,
    users: Users,
    subjects: Mutex<HashMap<String, CachedSubject>>,
    /// One lock per subject whose first sign-in is in progress.
    first_sign_ins: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

struct CachedSubject {
    identity_id: String,
    expires: Instant,
}

impl SignIn {
    pub fn new(verifier: Verifier, users: Users) -> Self {
        Self {
            inner: Arc::new(Inner {
                verifier,
                users,
                subjects: Mutex::default(),
                first_sign_ins: Mutex::default(),
            }),
        }
    }

    pub fn verifier(&self) -> &Verifier {
        &self.inner.verifier
    }

    /// Verifies `token` and returns the identity id of its user, creating
    /// the user on first sign-in.
    ///
    /// Returns `unauthenticated` (`invalid credential`) for an invalid
    /// token. Returns `unavailable` when the issuer cannot be reached for
    /// keys or, on first sign-in, for userinfo, and then creates no user.
    pub async fn authenticate<T: AsRef<str>>(&self, token: &Secret<T>) -> Result<String, Error> {
        let verified = self.inner.verifier.verify(token).await?;
        let subject = verified.subject.as_str();
        if subject.starts_with(RESERVED_SUBJECT_PREFIX) {
            tracing::debug!(subject, "OIDC token rejected: the subject is reserved");
            return Err(Error::unauthenticated("invalid credential"));
        }
        if let Some(identity_id) = self.cached(subject) {
            return Ok(identity_id);
        }
        let gate = self.first_sign_in_gate(subject);
        let result = {
            let _guard = gate.lock.lock().await;
            match self.cached(subject) {
                Some(identity_id) => Ok(identity_id),
                None => self.resolve(token, subject, &verified.claims).await,
            }
        };
        drop(gate);
        let identity_id = result?;
        self.remember(subject, &identity_id);
        Ok(identity_id)
    }

    /// Looks the subject up, and creates its user when there is none.
    async fn resolve<T: AsRef<str>>(
        &self,
        token: &Secret<T>,
        subject: &str,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, Error> {
        let users = &self.inner.users;
        if let Some(user) = users.user_by_subject(subject).await? {
            return Ok(user.id);
        }
        let verifier = &self.inner.verifier;
        let profile = match verifier.config().profile_source {
            ProfileSource::Token => Profile::from_claims(claims, &verifier.config().claims),
            ProfileSource::Userinfo => verifier.userinfo(token, subject).await?,
        };
        let request = ResolveOrCreateUserRequest {
            oidc_subject: subject.to_string(),
            name: profile.name,
            email: profile.email,
            email_verified: profile.email_verified,
            photo_url: profile.picture,
            preferred_username: profile.username,
            ..Default::default()
        };
        let (user, created) = users.resolve_or_create_user(&request).await?;
        if created {
            tracing::info!(user_id = %user.id, "User created at first OIDC sign-in");
        }
        Ok(user.id)
    }

    fn cached(&self, subject: &str) -> Option<String> {
        let subjects = lock(&self.inner.subjects);
        subjects
            .get(subject)
            .filter(|entry| entry.expires > Instant::now())
            .map(|entry| entry.identity_id.clone())
    }

    fn remember(&self, subject: &str, identity_id: &str) {
        let now = Instant::now();
        let mut subjects = lock(&self.inner.subjects);
        if subjects.len() >= SUBJECT_CACHE_CAPACITY && !subjects.contains_key(subject) {
            subjects.retain(|_, entry| entry.expires > now);
            if subjects.len() >= SUBJECT_CACHE_CAPACITY {
                subjects.clear();
            }
        }
        subjects.insert(
            subject.to_string(),
            CachedSubject {
                identity_id: identity_id.to_string(),
                expires: now + SUBJECT_TTL,
            },
        );
    }

    fn first_sign_in_gate(&self, subject: &str) -> FirstSignInGate<'_> {
        let mut gates = lock(&self.inner.first_sign_ins);
        let lock = Arc::clone(gates.entry(subject.to_string()).or_default());
        FirstSignInGate {
            inner: &self.inner,
            subject: subject.to_string(),
            lock,
        }
    }
}

/// A reference to one subject's first sign-in lock. Dropping the last
/// reference removes the lock from the map, also when the request is
/// cancelled while it waits.
struct FirstSignInGate<'a> {
    inner: &'a Inner,
    subject: String,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for FirstSignInGate<'_> {
    fn drop(&mut self) {
        let mut gates = lock(&self.inner.first_sign_ins);
        // One reference is the map's and one is this gate's. Clones are
        // made only under this mutex, so the count cannot grow meanwhile.
        if Arc::strong_count(&self.lock) == 2 {
            gates.remove(&self.subject);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}
