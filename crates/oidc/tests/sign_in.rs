//! Sign-in against a real issuer on loopback and real SQLite and
//! PostgreSQL databases. Every test runs once per backend.

use agyn_core::error::Code;
use agyn_core::{Caller, CredentialKind, IdentityKind, Secret};
use agyn_oidc::testing::{SigningKey, TestIssuer};
use agyn_oidc::{OidcConfig, ProfileSource, SignIn, Verifier};
use agyn_store::{Backend, on_both_backends};
use agyn_users::Users;
use serde_json::json;

on_both_backends!(
    first_sign_in_reads_userinfo_once,
    profile_from_token_claims,
    userinfo_failure_creates_no_user,
    concurrent_first_sign_ins_create_one_user,
    reserved_subject_is_rejected,
);

struct Fixture {
    issuer: TestIssuer,
    key: SigningKey,
    users: Users,
    sign_in: SignIn,
}

async fn fixture(backend: Backend, source: ProfileSource) -> Fixture {
    let issuer = TestIssuer::start();
    let key = SigningKey::rsa("rsa-1", 0);
    issuer.publish(&[&key]);
    let users = Users::new(agyn_store::testing::fresh(backend).await);
    let mut config = OidcConfig::new(issuer.issuer());
    config.profile_source = source;
    let sign_in = SignIn::new(Verifier::new(config).unwrap(), users.clone());
    Fixture {
        issuer,
        key,
        users,
        sign_in,
    }
}

fn caller(identity_id: &str) -> Caller {
    Caller::Identity {
        identity_id: identity_id.to_string(),
        kind: IdentityKind::User,
        workload_id: None,
        credential: CredentialKind::Oidc,
    }
}

async fn first_sign_in_reads_userinfo_once(backend: Backend) {
    let fixture = fixture(backend, ProfileSource::Userinfo).await;
    fixture.issuer.set_profile(
        "idp|alice",
        json!({
            "name": "Alice Liddell",
            "email": "alice@example.com",
            "email_verified": true,
            "picture": "https://example.com/alice.png",
            "preferred_username": "alice",
        }),
    );
    let token = fixture.issuer.token(&fixture.key, "idp|alice");
    let identity_id = fixture
        .sign_in
        .authenticate(&Secret::new(&token))
        .await
        .unwrap();
    assert_eq!(fixture.issuer.userinfo_calls(), 1);

    let me = fixture.users.get_me(&caller(&identity_id)).await.unwrap();
    let user = &me.record;
    assert_eq!(user.oidc_subject, "idp|alice");
    assert_eq!(user.username, "alice");
    assert_eq!(user.name, "Alice Liddell");
    assert_eq!(user.email, "alice@example.com");
    assert!(user.email_verified);
    assert_eq!(user.photo_url, "https://example.com/alice.png");

    let again = fixture.issuer.token(&fixture.key, "idp|alice");
    let second = fixture
        .sign_in
        .authenticate(&Secret::new(&again))
        .await
        .unwrap();
    assert_eq!(second, identity_id);
    assert_eq!(
        fixture.issuer.userinfo_calls(),
        1,
        "userinfo only at creation"
    );

    // Another process, without this one's subject cache, finds the user
    // in the database and does not call userinfo either.
    let fresh = SignIn::new(
        Verifier::new(OidcConfig::new(fixture.issuer.issuer())).unwrap(),
        fixture.users.clone(),
    );
    let third = fresh.authenticate(&Secret::new(&again)).await.unwrap();
    assert_eq!(third, identity_id);
    assert_eq!(fixture.issuer.userinfo_calls(), 1);
}

async fn profile_from_token_claims(backend: Backend) {
    let fixture = fixture(backend, ProfileSource::Token).await;
    let mut claims = fixture.issuer.claims("idp|bob");
    claims["name"] = json!("Bob Builder");
    claims["email"] = json!("bob@example.com");
    claims["preferred_username"] = json!("bob");
    let token = fixture.key.sign(&claims);
    let identity_id = fixture
        .sign_in
        .authenticate(&Secret::new(&token))
        .await
        .unwrap();
    assert_eq!(fixture.issuer.userinfo_calls(), 0);
    let me = fixture.users.get_me(&caller(&identity_id)).await.unwrap();
    let user = &me.record;
    assert_eq!(user.username, "bob");
    assert_eq!(user.name, "Bob Builder");
    assert_eq!(user.email, "bob@example.com");
    assert!(!user.email_verified, "a missing email_verified is false");
    assert_eq!(user.photo_url, "", "a missing picture is empty");
}

async fn userinfo_failure_creates_no_user(backend: Backend) {
    let fixture = fixture(backend, ProfileSource::Userinfo).await;
    fixture.issuer.fail_userinfo(Some(503));
    let token = fixture.issuer.token(&fixture.key, "idp|carol");
    let error = fixture
        .sign_in
        .authenticate(&Secret::new(&token))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unavailable, "{error:?}");
    assert!(
        fixture
            .users
            .user_by_subject("idp|carol")
            .await
            .unwrap()
            .is_none(),
        "no user is created"
    );

    fixture.issuer.fail_userinfo(None);
    fixture
        .sign_in
        .authenticate(&Secret::new(&token))
        .await
        .unwrap();
    assert!(
        fixture
            .users
            .user_by_subject("idp|carol")
            .await
            .unwrap()
            .is_some()
    );
}

async fn concurrent_first_sign_ins_create_one_user(backend: Backend) {
    let fixture = fixture(backend, ProfileSource::Userinfo).await;
    fixture
        .issuer
        .set_profile("idp|dave", json!({ "preferred_username": "dave" }));
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let sign_in = fixture.sign_in.clone();
            let token = fixture.issuer.token(&fixture.key, "idp|dave");
            tokio::spawn(async move { sign_in.authenticate(&Secret::new(token)).await })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap().unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one identity for every sign-in: {ids:?}");
    assert_eq!(fixture.issuer.userinfo_calls(), 1);

    // Two processes (two SignIn values without a shared cache or lock)
    // racing on one new subject still create one user.
    fixture
        .issuer
        .set_profile("idp|erin", json!({ "preferred_username": "erin" }));
    let other = SignIn::new(
        Verifier::new(OidcConfig::new(fixture.issuer.issuer())).unwrap(),
        fixture.users.clone(),
    );
    let tasks: Vec<_> = (0..10)
        .map(|index| {
            let sign_in = if index % 2 == 0 {
                fixture.sign_in.clone()
            } else {
                other.clone()
            };
            let token = fixture.issuer.token(&fixture.key, "idp|erin");
            tokio::spawn(async move { sign_in.authenticate(&Secret::new(token)).await })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap().unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one identity across processes: {ids:?}");
    let users = fixture
        .users
        .search_users(&caller(&ids[0]), "erin", 20)
        .await
        .unwrap();
    assert_eq!(users.len(), 1, "one user named erin*");
}

async fn reserved_subject_is_rejected(backend: Backend) {
    let fixture = fixture(backend, ProfileSource::Token).await;
    let token = fixture
        .issuer
        .token(&fixture.key, agyn_users::BOOTSTRAP_ADMIN_SUBJECT);
    let error = fixture
        .sign_in
        .authenticate(&Secret::new(&token))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unauthenticated);
    assert_eq!(error.message(), "invalid credential");
}
