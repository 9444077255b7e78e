//! Black-box tests of `agyn serve`: the real binary on loopback, called
//! with the generated Rust clients over every protocol and with raw HTTP.

mod support;

use agyn_api_users::agynio::api::users::v1::{
    ClusterRole, CreateAPITokenRequest, GetMeRequest, ListAPITokensRequest, RevokeAPITokenRequest,
    UsersServiceClient,
};
use connectrpc::ErrorCode;
use connectrpc::client::{CallOptions, ClientConfig, HttpClient};
use support::{Server, http_get, http_request};

fn bearer(token: &str) -> CallOptions {
    CallOptions::default().with_header("authorization", format!("Bearer {token}"))
}

#[tokio::test]
async fn get_me_over_every_protocol() {
    let server = Server::start();
    for base in [server.base_url(), format!("{}/api", server.base_url())] {
        for (label, client) in server.clients(&base) {
            let response = client
                .get_me_with_options(GetMeRequest::default(), bearer(&server.admin_token))
                .await
                .unwrap_or_else(|error| panic!("{label} at {base}: {error:?}"))
                .into_owned();
            let user = response.user.as_option().expect("user is set");
            assert_eq!(user.username, "admin", "{label} at {base}");
            assert_eq!(user.oidc_subject, "agyn:bootstrap-admin", "{label}");
            assert_eq!(
                response.cluster_role.as_known(),
                Some(ClusterRole::CLUSTER_ROLE_ADMIN),
                "{label}"
            );
        }
    }
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated() {
    let server = Server::start();
    let admin = &server.clients(&server.base_url())[0].1;
    let created = admin
        .create_api_token_with_options(
            CreateAPITokenRequest {
                name: "to revoke".into(),
                ..Default::default()
            },
            bearer(&server.admin_token),
        )
        .await
        .unwrap()
        .into_owned();
    let token = created.token.as_option().unwrap().clone();
    let plaintext = created.plaintext_token.clone();
    admin
        .revoke_api_token_with_options(
            RevokeAPITokenRequest {
                id: token.id.clone(),
                ..Default::default()
            },
            bearer(&plaintext),
        )
        .await
        .unwrap();

    let cases = [
        ("missing", CallOptions::default(), "missing credential"),
        (
            "malformed",
            CallOptions::default().with_header("authorization", "Bearer"),
            "malformed authorization header",
        ),
        (
            "wrong scheme",
            CallOptions::default().with_header("authorization", "Basic YTpi"),
            "unsupported authorization scheme: use Bearer",
        ),
        (
            "unknown",
            bearer(&format!("agyn_{}", "x".repeat(44))),
            "invalid credential",
        ),
        ("revoked", bearer(&plaintext), "invalid credential"),
        ("not a token", bearer("hello"), "invalid credential"),
        (
            "service token",
            bearer("agynsvc_abc"),
            "service tokens are accepted only by enrollment",
        ),
    ];
    for (label, client) in server.clients(&server.base_url()) {
        for (case, options, message) in &cases {
            let error = client
                .get_me_with_options(GetMeRequest::default(), options.clone())
                .await
                .expect_err(case);
            assert_eq!(error.code, ErrorCode::Unauthenticated, "{label}: {case}");
            assert_eq!(error.message.as_deref(), Some(*message), "{label}: {case}");
        }
    }
}

#[tokio::test]
async fn token_lists_page_over_the_wire() {
    let server = Server::start();
    let client = &server.clients(&server.base_url())[2].1;
    for index in 0..5 {
        client
            .create_api_token_with_options(
                CreateAPITokenRequest {
                    name: format!("t{index}"),
                    ..Default::default()
                },
                bearer(&server.admin_token),
            )
            .await
            .unwrap();
    }
    let mut names = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_api_tokens_with_options(
                ListAPITokensRequest {
                    page_size: 2,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
                bearer(&server.admin_token),
            )
            .await
            .unwrap()
            .into_owned();
        names.extend(page.tokens.iter().map(|token| token.name.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(names, ["t4", "t3", "t2", "t1", "t0", "bootstrap"]);
}

#[tokio::test]
async fn internal_methods_are_not_public() {
    let server = Server::start();
    let uri: http::Uri = server.base_url().parse().unwrap();
    // Internal services are not routed on the public listener.
    let public_internal = UsersServiceClient::new(HttpClient::plaintext(), ClientConfig::new(uri));
    let error = public_internal
        .get_me_with_options(GetMeRequest::default(), bearer(&server.admin_token))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Unimplemented);
}

#[tokio::test]
async fn forged_identity_headers_are_ignored() {
    let server = Server::start();
    let client = &server.clients(&server.base_url())[0].1;
    let error = client
        .get_me_with_options(
            GetMeRequest::default(),
            CallOptions::default()
                .with_header("x-identity-id", "0190a2b4-1c2d-7e8f-9a0b-1c2d3e4f5a6b")
                .with_header("x-identity-type", "user"),
        )
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Unauthenticated);
}

#[tokio::test]
async fn http_routes_and_cors() {
    let server = Server::start();
    assert!(http_get(server.port, "/healthz").starts_with("HTTP/1.1 200"));
    assert!(http_get(server.port, "/readyz").starts_with("HTTP/1.1 200"));

    let get_me = format!(
        "GET /api/agynio.api.users.v1.UsersGateway/GetMe?encoding=json&message=%7B%7D HTTP/1.1\r\n\
         Host: 127.0.0.1\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        server.admin_token
    );
    let response = http_request(server.port, &get_me);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"username\":\"admin\""), "{response}");
    assert!(
        response.contains("\"email\":\"\""),
        "defaults are written: {response}"
    );

    let unknown = http_request(
        server.port,
        "POST /nope.v1.Nope/Nope HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
    assert!(unknown.contains("unimplemented"), "{unknown}");

    let preflight = |origin: &str| {
        http_request(
            server.port,
            &format!(
                "OPTIONS /agynio.api.users.v1.UsersGateway/GetMe HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                 Origin: {origin}\r\nAccess-Control-Request-Method: POST\r\n\
                 Access-Control-Request-Headers: authorization,content-type,connect-protocol-version\r\n\
                 Connection: close\r\n\r\n"
            ),
        )
        .to_lowercase()
    };
    // With no --public-url the allowed origin is the listener's own.
    let own_origin = server.base_url();
    let allowed = preflight(&own_origin);
    assert!(
        allowed.contains(&format!("access-control-allow-origin: {own_origin}")),
        "{allowed}"
    );
    assert!(allowed.contains("connect-protocol-version"), "{allowed}");
    let denied = preflight("http://evil.example");
    assert!(!denied.contains("access-control-allow-origin"), "{denied}");
}

#[tokio::test]
async fn logs_never_contain_tokens() {
    let mut server = Server::start();
    let client = &server.clients(&server.base_url())[0].1;
    let created = client
        .create_api_token_with_options(
            CreateAPITokenRequest {
                name: "canary".into(),
                ..Default::default()
            },
            bearer(&server.admin_token),
        )
        .await
        .unwrap()
        .into_owned();
    let canary = format!("agyn_{}", "C4nary".repeat(8).get(..44).unwrap());
    for token in [&created.plaintext_token, &canary, &server.admin_token] {
        let _ = client
            .get_me_with_options(GetMeRequest::default(), bearer(token))
            .await;
    }
    assert_eq!(server.stop(), Some(0), "graceful shutdown exits 0");
    let log = server.log();
    assert!(log.contains("Stopped"), "shutdown is logged:\n{log}");
    assert!(log.contains("DEBUG"), "verbose logging was on:\n{log}");
    for secret in [&created.plaintext_token, &canary, &server.admin_token] {
        assert!(
            !log.contains(secret.as_str()),
            "a token leaked into the log"
        );
        assert!(
            !log.contains(&secret[5..]),
            "a token's secret part leaked into the log"
        );
    }
    assert!(
        !log.to_lowercase().contains("bearer agyn"),
        "an authorization header leaked"
    );
}

#[tokio::test]
async fn second_signal_stops_stalled_shutdown() {
    use std::io::Write as _;
    let mut server = Server::start();
    // A client that sent only part of its request keeps its connection
    // open, so graceful shutdown cannot finish on its own.
    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stalled
        .write_all(b"POST /agynio.api.users.v1.UsersGateway/GetMe HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    server.signal("TERM");
    assert_eq!(
        server.wait_exit(std::time::Duration::from_millis(500)),
        None,
        "the first signal waits for open connections"
    );
    server.signal("TERM");
    let exit = server.wait_exit(std::time::Duration::from_secs(3));
    assert_eq!(exit, Some(Some(0)), "the second signal stops the server");
    let log = server.log();
    assert!(log.contains("Second signal"), "{log}");
    drop(stalled);
}

#[tokio::test]
async fn authorization_service_on_internal_listener() {
    use serde_json::json;
    let server = Server::start();
    let admin = server.admin_credentials();
    let component = support::tls_client(&admin.ca_pem, Some((&admin.cert_pem, &admin.key_pem)));
    let internal = server.internal_url();
    let call = |method: &'static str, body: serde_json::Value| {
        let component = component.clone();
        let internal = internal.clone();
        async move {
            support::connect_json(
                &component,
                &internal,
                &format!("agynio.api.authorization.v1.AuthorizationService/{method}"),
                body,
                None,
            )
            .await
        }
    };
    let tuple = |user: &str, relation: &str, object: &str| json!({"user": user, "relation": relation, "object": object});
    let (status, body) = call(
        "Write",
        json!({"writes": [
            tuple("identity:alice", "owner", "organization:o1"),
            tuple("cluster:global", "cluster", "organization:o1"),
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let check = |user: &str, relation: &str| tuple(user, relation, "organization:o1");
    let (_, allowed) = call("Check", check("identity:alice", "can_manage")).await;
    assert_eq!(allowed["allowed"], true);
    let (_, denied) = call("Check", check("identity:bob", "can_read")).await;
    assert_eq!(denied["allowed"], false);
    let (status, invalid) = call(
        "Write",
        json!({"writes": [tuple("identity:bob", "can_read", "organization:o1")]}),
    )
    .await;
    assert_eq!(
        (status, invalid["code"].as_str()),
        (400, Some("invalid_argument"))
    );

    // The service is internal only: the public listener does not route it.
    let (status, body) = support::connect_json(
        &reqwest::Client::new(),
        &server.base_url(),
        "agynio.api.authorization.v1.AuthorizationService/Check",
        check("identity:alice", "can_manage"),
        Some(&server.admin_token),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("unimplemented"))
    );
}

#[tokio::test]
async fn json_arrays_are_not_messages() {
    let server = Server::start();
    let (status, body) = support::connect_json(
        &reqwest::Client::new(),
        &server.base_url(),
        "agynio.api.organizations.v1.OrganizationsGateway/CreateOrganization",
        serde_json::json!(["Positional Org", "positional"]),
        Some(&server.admin_token),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalid_argument");
    assert_eq!(body["message"], "request message must be a JSON object");
    let (status, body) = support::connect_json(
        &reqwest::Client::new(),
        &server.base_url(),
        "agynio.api.users.v1.UsersGateway/GetMe",
        serde_json::json!([]),
        Some(&server.admin_token),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_argument"))
    );
}

#[cfg(unix)]
#[test]
fn database_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let server = Server::start();
    for name in ["agyn.db", "master.key", "admin-token", "admin-client.key"] {
        let mode = std::fs::metadata(server.data_dir.join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{name} has mode {mode:o}");
    }
}
