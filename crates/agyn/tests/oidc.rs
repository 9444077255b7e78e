//! Black-box tests of OIDC sign-in: the real `agyn serve` binary pointed
//! at an issuer that the test serves on loopback, on SQLite and on
//! PostgreSQL.

mod support;

use agyn_api_users::agynio::api::users::v1::{
    ClusterRole, CreateAPITokenRequest, GetMeRequest, GetMeResponse, ListAPITokensRequest,
    SearchUsersRequest, UsersGatewayClient,
};
use agyn_oidc::testing::{SigningKey, TestIssuer, unix_now};
use agyn_store::{Backend, on_both_backends};
use connectrpc::client::{CallOptions, HttpClient};
use connectrpc::{ConnectError, ErrorCode};
use serde_json::json;
use support::Server;

on_both_backends!(sign_in_provisions_one_user);

fn bearer(token: &str) -> CallOptions {
    CallOptions::default().with_header("authorization", format!("Bearer {token}"))
}

async fn get_me(
    client: &UsersGatewayClient<HttpClient>,
    token: &str,
) -> Result<GetMeResponse, ConnectError> {
    client
        .get_me_with_options(GetMeRequest::default(), bearer(token))
        .await
        .map(|response| response.into_owned())
}

fn user_id(response: &GetMeResponse) -> String {
    let user = response.user.as_option().expect("user is set");
    user.meta.as_option().expect("meta is set").id.clone()
}

/// Returns how many users have a username starting with `prefix`.
async fn count_users(client: &UsersGatewayClient<HttpClient>, admin: &str, prefix: &str) -> usize {
    client
        .search_users_with_options(
            SearchUsersRequest {
                prefix: prefix.to_string(),
                limit: 20,
                ..Default::default()
            },
            bearer(admin),
        )
        .await
        .unwrap()
        .into_owned()
        .users
        .len()
}

async fn start_server(issuer: &str, backend: Backend) -> Server {
    let mut args = vec!["--oidc-issuer".to_string(), issuer.to_string()];
    if backend == Backend::Postgres {
        args.push("--database-url".to_string());
        args.push(support::fresh_postgres_url().await);
    }
    Server::start_with(&args)
}

async fn sign_in_provisions_one_user(backend: Backend) {
    let issuer = TestIssuer::start();
    let key = SigningKey::rsa("rsa-1", 0);
    issuer.publish(&[&key]);
    issuer.set_profile(
        "idp|alice",
        json!({
            "name": "Alice Liddell",
            "email": "alice@example.com",
            "email_verified": true,
            "picture": "https://example.com/alice.png",
            "preferred_username": "Alice",
        }),
    );
    let server = start_server(issuer.issuer(), backend).await;
    let clients = server.clients(&server.base_url());
    let client = &clients[0].1;
    let mut tokens = Vec::new();

    // First sign-in provisions the user from userinfo.
    let first = issuer.token(&key, "idp|alice");
    tokens.push(first.clone());
    let me = get_me(client, &first).await.expect("first sign-in");
    let user = me.user.as_option().unwrap();
    assert_eq!(user.oidc_subject, "idp|alice");
    assert_eq!(user.username, "alice");
    assert_eq!(user.name, "Alice Liddell");
    assert_eq!(user.email, "alice@example.com");
    assert!(user.email_verified);
    assert_eq!(user.photo_url, "https://example.com/alice.png");
    assert_eq!(
        me.cluster_role.as_known(),
        Some(ClusterRole::CLUSTER_ROLE_UNSPECIFIED)
    );
    let alice = user_id(&me);
    assert_eq!(issuer.userinfo_calls(), 1);

    // Later sign-ins, over every protocol, find the same user without
    // calling userinfo.
    let second = issuer.token(&key, "idp|alice");
    tokens.push(second.clone());
    for (label, client) in &clients {
        let me = get_me(client, &second)
            .await
            .unwrap_or_else(|error| panic!("{label}: {error:?}"));
        assert_eq!(user_id(&me), alice, "{label}");
    }
    assert_eq!(issuer.userinfo_calls(), 1, "userinfo only at creation");

    // An OIDC caller acts like an API-token caller of the same user.
    let created = client
        .create_api_token_with_options(
            CreateAPITokenRequest {
                name: "laptop".into(),
                ..Default::default()
            },
            bearer(&second),
        )
        .await
        .expect("create an API token with an OIDC token")
        .into_owned();
    let api_token = created.plaintext_token.clone();
    assert_eq!(
        user_id(&get_me(client, &api_token).await.unwrap()),
        alice,
        "the API token belongs to the OIDC user"
    );
    let listed = client
        .list_api_tokens_with_options(ListAPITokensRequest::default(), bearer(&second))
        .await
        .unwrap()
        .into_owned();
    let names: Vec<&str> = listed
        .tokens
        .iter()
        .map(|token| token.name.as_str())
        .collect();
    assert_eq!(names, vec!["laptop"]);

    // Expired and forged tokens are rejected alike.
    let mut expired_claims = issuer.claims("idp|alice");
    expired_claims["exp"] = json!(unix_now() - 3600);
    let expired = key.sign(&expired_claims);
    let forged = issuer.token(&SigningKey::rsa("rsa-1", 1), "idp|alice");
    tokens.push(expired.clone());
    tokens.push(forged.clone());
    for (case, token) in [("expired", &expired), ("forged", &forged)] {
        for (label, client) in &clients {
            let error = get_me(client, token).await.expect_err(case);
            assert_eq!(error.code, ErrorCode::Unauthenticated, "{label}: {case}");
            assert_eq!(
                error.message.as_deref(),
                Some("invalid credential"),
                "{label}: {case}"
            );
        }
    }

    // Ten concurrent first sign-ins of one subject create one user.
    issuer.set_profile("idp|bob", json!({ "preferred_username": "bob" }));
    let calls_before = issuer.userinfo_calls();
    let mut tasks = Vec::new();
    for index in 0..10 {
        let token = issuer.token(&key, "idp|bob");
        tokens.push(token.clone());
        let client = clients[index % clients.len()].1.clone();
        tasks.push(tokio::spawn(async move { get_me(&client, &token).await }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        let me = task.await.unwrap().expect("concurrent first sign-in");
        ids.push(user_id(&me));
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one identity for all ten: {ids:?}");
    assert_ne!(ids[0], alice);
    assert_eq!(count_users(client, &server.admin_token, "bob").await, 1);
    assert_eq!(
        issuer.userinfo_calls(),
        calls_before + 1,
        "one userinfo call for ten first sign-ins"
    );

    // A failing userinfo endpoint makes first sign-in unavailable and
    // creates no user.
    issuer.set_profile("idp|carol", json!({ "preferred_username": "carol" }));
    issuer.fail_userinfo(Some(503));
    let carol = issuer.token(&key, "idp|carol");
    tokens.push(carol.clone());
    let error = get_me(client, &carol).await.expect_err("userinfo is down");
    assert_eq!(error.code, ErrorCode::Unavailable, "{error:?}");
    assert_eq!(count_users(client, &server.admin_token, "carol").await, 0);
    issuer.fail_userinfo(None);
    get_me(client, &carol).await.expect("userinfo is back");
    assert_eq!(count_users(client, &server.admin_token, "carol").await, 1);

    // The admin's API token still works next to OIDC.
    get_me(client, &server.admin_token).await.unwrap();

    let log = server.log();
    for token in &tokens {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!log.contains(signature), "a token appears in the log");
    }
    assert!(log.contains("OIDC sign-in enabled"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_issuer_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let issuer = format!("http://127.0.0.1:{port}");
    let server = Server::start_with(&["--oidc-issuer".to_string(), issuer.clone()]);
    let key = SigningKey::p256("ec-1");
    let token = key.sign(&json!({ "iss": issuer, "sub": "idp|dave", "exp": unix_now() + 300 }));
    let client = &server.clients(&server.base_url())[0].1;
    let error = get_me(client, &token).await.expect_err("issuer is down");
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert_eq!(
        error.message.as_deref(),
        Some("the OIDC issuer is unavailable: its signing keys could not be fetched; retry later")
    );
    // API tokens do not depend on the issuer.
    get_me(client, &server.admin_token).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_is_rejected_without_issuer() {
    let issuer = TestIssuer::start();
    let key = SigningKey::p256("ec-1");
    issuer.publish(&[&key]);
    let server = Server::start();
    let client = &server.clients(&server.base_url())[0].1;
    let error = get_me(client, &issuer.token(&key, "idp|erin"))
        .await
        .expect_err("OIDC is off");
    assert_eq!(error.code, ErrorCode::Unauthenticated);
    assert_eq!(error.message.as_deref(), Some("invalid credential"));
    assert_eq!(issuer.discovery_fetches(), 0);
}
