//! The storage suite: users, identities and API tokens against real
//! SQLite and PostgreSQL databases. Every test runs once per backend.

use std::collections::HashSet;

use agyn_api_users::agynio::api::users::v1::ResolveOrCreateUserRequest;
use agyn_core::error::Code;
use agyn_core::{Caller, CredentialKind, IdentityKind, Secret};
use agyn_store::sqlx::{self, Row};
use agyn_store::{Backend, Db};
use agyn_users::bootstrap::Outcome;
use agyn_users::{Users, tokens};

use agyn_store::on_both_backends;

on_both_backends!(
    bootstrap_runs_once,
    token_lifecycle,
    expired_token_is_rejected,
    token_use_is_recorded,
    token_input_is_validated,
    token_pages_are_stable,
    page_token_is_bound_to_caller,
    users_are_provisioned_once,
    usernames_do_not_collide,
    concurrent_first_logins_create_one_user,
    search_orders_exact_match_first,
    get_user_redacts_for_others,
    identity_registry_round_trips,
    concurrent_writes_all_succeed,
    control_characters_are_rejected,
);

async fn users_on(backend: Backend) -> Users {
    Users::new(agyn_store::testing::fresh(backend).await)
}

fn user_caller(id: &str) -> Caller {
    Caller::Identity {
        identity_id: id.to_string(),
        kind: IdentityKind::User,
        workload_id: None,
        credential: CredentialKind::ApiToken,
    }
}

fn temp_dir(label: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("agyn-{label}-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn uuid_like() -> String {
    agyn_core::id::new_id()
}

async fn new_user(users: &Users, subject: &str, preferred: &str) -> String {
    let request = ResolveOrCreateUserRequest {
        oidc_subject: subject.to_string(),
        name: format!("User {preferred}"),
        email: format!("{preferred}@example.com"),
        email_verified: true,
        preferred_username: preferred.to_string(),
        ..Default::default()
    };
    let (user, created) = users.resolve_or_create_user(&request).await.unwrap();
    assert!(created, "user {subject} should be new");
    user.id
}

async fn bootstrap_runs_once(backend: Backend) {
    let users = users_on(backend).await;
    let dir = temp_dir("bootstrap");
    let Outcome::Created {
        admin_id,
        token_prefix,
        token_file,
    } = users.bootstrap(&dir).await.unwrap()
    else {
        panic!("first bootstrap must create the admin");
    };
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(token.starts_with(&token_prefix));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let identity = users
        .authenticate_token(&Secret::new(token.clone()))
        .await
        .unwrap();
    assert_eq!(identity.identity_id, admin_id);
    assert_eq!(identity.kind, IdentityKind::User);
    let admin = users.get_me(&user_caller(&admin_id)).await.unwrap();
    assert_eq!(admin.record.username, "admin");
    assert!(admin.record.cluster_admin);

    match users.bootstrap(&dir).await.unwrap() {
        Outcome::AlreadyDone { admin_id: again } => assert_eq!(again, admin_id),
        Outcome::Created { .. } => panic!("second bootstrap must not create another admin"),
    }
    let unchanged = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(unchanged.trim(), token);

    let Outcome::Created { token_file, .. } = users.reset_admin_token(&dir).await.unwrap() else {
        panic!("reset must mint a token");
    };
    let fresh = std::fs::read_to_string(token_file)
        .unwrap()
        .trim()
        .to_string();
    assert_ne!(fresh, token);
    let old = users
        .authenticate_token(&Secret::new(token))
        .await
        .unwrap_err();
    assert_eq!(old.code(), Code::Unauthenticated);
    users.authenticate_token(&Secret::new(fresh)).await.unwrap();
}

async fn token_lifecycle(backend: Backend) {
    let users = users_on(backend).await;
    let alice = new_user(&users, "sub-alice", "alice").await;
    let bob = new_user(&users, "sub-bob", "bob").await;
    let caller = user_caller(&alice);

    let created = users
        .create_api_token(&caller, "  laptop  ", None)
        .await
        .unwrap();
    assert_eq!(created.token.name, "laptop");
    assert!(tokens::looks_like_api_token(created.plaintext.expose()));
    assert_eq!(created.token.token_prefix, &created.plaintext.expose()[..8]);

    let stored: String = sqlx::query("SELECT token_hash FROM api_tokens WHERE id = $1")
        .bind(&created.token.id)
        .fetch_one(users.db().pool())
        .await
        .unwrap()
        .get("token_hash");
    assert_eq!(stored, tokens::hash(created.plaintext.expose()));
    assert!(!stored.contains(created.plaintext.expose()));

    let identity = users.authenticate_token(&created.plaintext).await.unwrap();
    assert_eq!(identity.identity_id, alice);

    let (listed, next) = users.list_api_tokens(&caller, 0, "").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(next.is_empty());
    let (others, _) = users
        .list_api_tokens(&user_caller(&bob), 0, "")
        .await
        .unwrap();
    assert!(others.is_empty());

    let foreign = users
        .revoke_api_token(&user_caller(&bob), &created.token.id)
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);
    assert_eq!(
        foreign.message(),
        format!("api token {} not found", created.token.id)
    );

    users
        .revoke_api_token(&caller, &created.token.id)
        .await
        .unwrap();
    let revoked = users
        .authenticate_token(&created.plaintext)
        .await
        .unwrap_err();
    assert_eq!(revoked.code(), Code::Unauthenticated);
    assert_eq!(revoked.message(), "invalid credential");
    let again = users
        .revoke_api_token(&caller, &created.token.id)
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
}

async fn expired_token_is_rejected(backend: Backend) {
    let users = users_on(backend).await;
    let alice = new_user(&users, "sub-alice", "alice").await;
    let soon = agyn_core::time::now_micros() + 300_000;
    let created = users
        .create_api_token(&user_caller(&alice), "short", Some(soon))
        .await
        .unwrap();
    users.authenticate_token(&created.plaintext).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let error = users
        .authenticate_token(&created.plaintext)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unauthenticated);
    assert_eq!(error.message(), "token expired");
    assert_eq!(error.reason(), Some("TOKEN_EXPIRED"));
    let (listed, _) = users
        .list_api_tokens(&user_caller(&alice), 0, "")
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "expired tokens stay listed");
}

async fn token_use_is_recorded(backend: Backend) {
    let users = users_on(backend).await;
    let alice = new_user(&users, "sub-alice", "alice").await;
    let created = users
        .create_api_token(&user_caller(&alice), "ci", None)
        .await
        .unwrap();
    assert_eq!(created.token.last_used_at, None);
    users.authenticate_token(&created.plaintext).await.unwrap();
    let mut recorded = None;
    for _ in 0..50 {
        let (listed, _) = users
            .list_api_tokens(&user_caller(&alice), 0, "")
            .await
            .unwrap();
        recorded = listed[0].last_used_at;
        if recorded.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(recorded.is_some(), "last_used_at was never written");
}

async fn token_input_is_validated(backend: Backend) {
    let users = users_on(backend).await;
    let alice = new_user(&users, "sub-alice", "alice").await;
    let caller = user_caller(&alice);
    let empty = users
        .create_api_token(&caller, "   ", None)
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert_eq!(empty.message(), "name: must not be empty");
    let long = users
        .create_api_token(&caller, &"x".repeat(101), None)
        .await
        .unwrap_err();
    assert_eq!(long.message(), "name: must be at most 100 characters");
    let past = users
        .create_api_token(&caller, "old", Some(agyn_core::time::now_micros() - 1))
        .await
        .unwrap_err();
    assert_eq!(past.message(), "expires_at: must be in the future");
    let bad_id = users
        .revoke_api_token(&caller, "not-a-uuid")
        .await
        .unwrap_err();
    assert_eq!(bad_id.message(), "id: must be a UUID");
    let negative = users.list_api_tokens(&caller, -1, "").await.unwrap_err();
    assert_eq!(negative.message(), "page_size: must not be negative");
    let component = users
        .create_api_token(&Caller::Component("orchestrator"), "x", None)
        .await
        .unwrap_err();
    assert_eq!(component.code(), Code::PermissionDenied);
}

/// Inserts `count` tokens for `owner` that all share `created_at`.
async fn insert_tokens_at(db: &Db, owner: &str, count: usize, created_at: i64) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for index in 0..count {
        let id = agyn_core::id::new_id();
        let plaintext = tokens::generate();
        sqlx::query(
            "INSERT INTO api_tokens (id, identity_id, name, token_hash, token_prefix, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(owner)
        .bind(format!("token-{index}"))
        .bind(tokens::hash(plaintext.expose()))
        .bind(tokens::display_prefix(plaintext.expose()))
        .bind(created_at)
        .execute(db.pool())
        .await
        .unwrap();
        ids.push(id);
    }
    ids
}

async fn token_pages_are_stable(backend: Backend) {
    let users = users_on(backend).await;
    let alice = new_user(&users, "sub-alice", "alice").await;
    let caller = user_caller(&alice);
    let same_time = agyn_core::time::now_micros();
    let originals: HashSet<String> = insert_tokens_at(users.db(), &alice, 250, same_time)
        .await
        .into_iter()
        .collect();

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let (page, next) = users.list_api_tokens(&caller, 20, &token).await.unwrap();
        assert!(page.len() <= 20);
        if !next.is_empty() {
            assert_eq!(page.len(), 20, "only the last page may be short");
        }
        seen.extend(page.into_iter().map(|token| token.id));
        pages += 1;
        // New tokens arrive between pages: some share the walked timestamp,
        // some are newer. Neither may appear in or shift later pages.
        insert_tokens_at(users.db(), &alice, 3, same_time + 1).await;
        users
            .create_api_token(&caller, "during walk", None)
            .await
            .unwrap();
        if next.is_empty() {
            break;
        }
        token = next;
    }
    let originals_seen: Vec<&String> = seen.iter().filter(|id| originals.contains(*id)).collect();
    assert_eq!(
        originals_seen.len(),
        250,
        "every original token exactly once"
    );
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no token listed twice");
    assert!(originals.iter().all(|id| unique.contains(id)));
    assert_eq!(pages, 13);
}

async fn page_token_is_bound_to_caller(backend: Backend) {
    let users = users_on(backend).await;
    let alice = new_user(&users, "sub-alice", "alice").await;
    let bob = new_user(&users, "sub-bob", "bob").await;
    insert_tokens_at(users.db(), &alice, 5, agyn_core::time::now_micros()).await;
    let (_, next) = users
        .list_api_tokens(&user_caller(&alice), 2, "")
        .await
        .unwrap();
    assert!(!next.is_empty());
    let error = users
        .list_api_tokens(&user_caller(&bob), 2, &next)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(error.reason(), Some("PAGE_TOKEN_INVALID"));
    let garbage = users
        .list_api_tokens(&user_caller(&alice), 2, "not a token")
        .await
        .unwrap_err();
    assert_eq!(garbage.reason(), Some("PAGE_TOKEN_INVALID"));
}

async fn users_are_provisioned_once(backend: Backend) {
    let users = users_on(backend).await;
    let request = ResolveOrCreateUserRequest {
        oidc_subject: "sub-carol".into(),
        name: "Carol".into(),
        email: "carol@example.com".into(),
        preferred_username: "Carol".into(),
        ..Default::default()
    };
    let (first, created) = users.resolve_or_create_user(&request).await.unwrap();
    assert!(created);
    assert_eq!(first.username, "carol");
    let changed = ResolveOrCreateUserRequest {
        name: "Someone Else".into(),
        ..request.clone()
    };
    let (second, created) = users.resolve_or_create_user(&changed).await.unwrap();
    assert!(!created);
    assert_eq!(second, first, "claims are read only at creation");
}

async fn usernames_do_not_collide(backend: Backend) {
    let users = users_on(backend).await;
    let mut names = Vec::new();
    for index in 0..3 {
        let id = new_user(&users, &format!("sub-{index}"), "Dave").await;
        names.push(
            users
                .get_me(&user_caller(&id))
                .await
                .unwrap()
                .record
                .username
                .clone(),
        );
    }
    assert_eq!(names, ["dave", "dave-2", "dave-3"]);
}

async fn concurrent_first_logins_create_one_user(backend: Backend) {
    let users = users_on(backend).await;
    let request = ResolveOrCreateUserRequest {
        oidc_subject: "sub-race".into(),
        preferred_username: "racer".into(),
        ..Default::default()
    };
    let attempts = (0..4).map(|_| {
        let users = users.clone();
        let request = request.clone();
        tokio::spawn(async move { users.resolve_or_create_user(&request).await })
    });
    let mut ids = HashSet::new();
    let mut created = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok((user, was_created)) => {
                ids.insert(user.id);
                created += usize::from(was_created);
            }
            // SQLite may report a lock instead of waiting; the caller retries.
            Err(error) => assert_eq!(error.code(), Code::Unavailable, "{error:?}"),
        }
    }
    assert_eq!(ids.len(), 1, "one user for one subject");
    assert!(created <= 1);
    let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM users WHERE oidc_subject = 'sub-race'")
        .fetch_one(users.db().pool())
        .await
        .unwrap()
        .get("n");
    assert_eq!(count, 1);
}

async fn search_orders_exact_match_first(backend: Backend) {
    let users = users_on(backend).await;
    for name in ["eve-b", "eve", "eve-a", "evelyn", "frank"] {
        new_user(&users, &format!("sub-{name}"), name).await;
    }
    let caller = user_caller(&agyn_core::id::new_id());
    let found = users.search_users(&caller, "EVE", 0).await.unwrap();
    let names: Vec<&str> = found.iter().map(|user| user.username.as_str()).collect();
    assert_eq!(names, ["eve", "eve-a", "eve-b", "evelyn"]);
    let limited = users.search_users(&caller, "eve", 2).await.unwrap();
    assert_eq!(limited.len(), 2);
    let wildcard = users.search_users(&caller, "e%", 0).await.unwrap_err();
    assert_eq!(wildcard.message(), "prefix: must match ^[a-z0-9_-]{1,32}$");
    let empty = users.search_users(&caller, "", 0).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
}

async fn get_user_redacts_for_others(backend: Backend) {
    let users = users_on(backend).await;
    let alice = new_user(&users, "sub-alice", "alice").await;
    let bob = new_user(&users, "sub-bob", "bob").await;
    let (own, full) = users.get_user(&user_caller(&alice), &alice).await.unwrap();
    assert!(full);
    assert_eq!(own.email, "alice@example.com");
    let (_, full) = users.get_user(&user_caller(&bob), &alice).await.unwrap();
    assert!(!full, "another user gets the redacted view");
    let before = users.get_me(&user_caller(&bob)).await.unwrap();
    assert!(!before.record.cluster_admin);
    users.set_cluster_admin(&bob, true, "config").await.unwrap();
    let after = users.get_me(&user_caller(&bob)).await.unwrap();
    assert!(after.record.cluster_admin, "the grant is visible at once");
    let (_, full) = users.get_user(&user_caller(&bob), &alice).await.unwrap();
    assert!(full, "a cluster admin gets the full view");
    let missing = agyn_core::id::new_id();
    let error = users
        .get_user(&user_caller(&bob), &missing)
        .await
        .unwrap_err();
    assert_eq!(error.message(), format!("user {missing} not found"));
}

async fn identity_registry_round_trips(backend: Backend) {
    let users = users_on(backend).await;
    let alice = new_user(&users, "sub-alice", "alice").await;
    let kind = agyn_users::identity::kind_of(users.db(), &alice)
        .await
        .unwrap();
    assert_eq!(kind, Some(IdentityKind::User));
    let unknown = agyn_users::identity::kind_of(users.db(), &agyn_core::id::new_id())
        .await
        .unwrap();
    assert_eq!(unknown, None);
    let mut connection = users.db().pool().acquire().await.unwrap();
    let duplicate = agyn_users::identity::register(&mut connection, &alice, IdentityKind::Agent, 0)
        .await
        .unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);
}

async fn concurrent_writes_all_succeed(backend: Backend) {
    let users = users_on(backend).await;
    let alice = new_user(&users, "sub-alice", "alice").await;
    let first = users
        .create_api_token(&user_caller(&alice), "first", None)
        .await
        .unwrap();
    let tasks: Vec<_> = (0..10)
        .map(|index| {
            let users = users.clone();
            let caller = user_caller(&alice);
            let plaintext = first.plaintext.clone();
            tokio::spawn(async move {
                // Each use of a fresh token schedules a last_used_at write
                // that commits between the other transactions' statements.
                users.authenticate_token(&plaintext).await?;
                let created = users
                    .create_api_token(&caller, &format!("t{index}"), None)
                    .await?;
                users.authenticate_token(&created.plaintext).await?;
                users
                    .resolve_or_create_user(&ResolveOrCreateUserRequest {
                        oidc_subject: format!("sub-{index}"),
                        preferred_username: format!("user{index}"),
                        ..Default::default()
                    })
                    .await
                    .map(|_| ())
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let (listed, _) = users
        .list_api_tokens(&user_caller(&alice), 0, "")
        .await
        .unwrap();
    assert_eq!(listed.len(), 11);
}

async fn control_characters_are_rejected(backend: Backend) {
    let users = users_on(backend).await;
    let alice = new_user(&users, "sub-alice", "alice").await;
    for name in ["a\u{0}b", "bell\u{7}", "esc\u{1b}[31m"] {
        let error = users
            .create_api_token(&user_caller(&alice), name, None)
            .await
            .unwrap_err();
        assert_eq!(
            error.message(),
            "name: must not contain control characters",
            "{name:?}"
        );
    }
}
