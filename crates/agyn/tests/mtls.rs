//! Client certificates end to end against the real binary: a device
//! enrolls, calls the public listener over mutual TLS (with curl and with
//! a Rust client), is deleted and is refused; and the internal listener
//! accepts only platform-issued component certificates allowed to call
//! each method.

mod support;

use std::process::Command;

use serde_json::{Value, json};
use support::{Server, connect_json, tls_client};

const GET_ME: &str = "agynio.api.users.v1.UsersGateway/GetMe";

/// Starts a server on SQLite, or on a fresh PostgreSQL database.
async fn start(postgres: bool) -> Server {
    if postgres {
        let url = support::fresh_postgres_url().await;
        Server::start_with(&["--database-url".to_string(), url])
    } else {
        Server::start()
    }
}

/// A device's key and certificate request, made on the "device".
fn device_key_and_csr() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(vec!["ignored.example".to_string()])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    (key.serialize_pem(), csr)
}

async fn enroll(server: &Server, token: &str, csr: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/enroll", server.base_url()))
        .json(&json!({ "enrollment_token": token, "csr_pem": csr }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Runs curl with the device certificate against GetMe over HTTPS;
/// returns the HTTP status and body.
fn curl_get_me(server: &Server, dir: &std::path::Path) -> (u16, String) {
    let output = Command::new("curl")
        .arg("--silent")
        .arg("--show-error")
        .args(["--cacert", dir.join("ca.pem").to_str().unwrap()])
        .args(["--cert", dir.join("device.pem").to_str().unwrap()])
        .args(["--key", dir.join("device.key").to_str().unwrap()])
        .args(["-H", "content-type: application/json", "-d", "{}"])
        .args(["--write-out", "\n%{http_code}"])
        .arg(format!("{}/{GET_ME}", server.https_url()))
        .output()
        .expect("curl is installed");
    assert!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.trim().parse().unwrap(), body.to_string())
}

async fn device_lifecycle(postgres: bool) {
    let server = start(postgres).await;
    let plain = reqwest::Client::new();
    let base = server.base_url();
    let admin = Some(server.admin_token.as_str());

    let (status, created) = connect_json(
        &plain,
        &base,
        "agynio.api.users.v1.UsersGateway/CreateDevice",
        json!({"name": "  laptop  "}),
        admin,
    )
    .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["device"]["name"], "laptop");
    assert_eq!(created["device"]["status"], "DEVICE_STATUS_PENDING");
    let device_id = created["device"]["meta"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let token = created["enrollmentToken"].as_str().unwrap().to_string();
    assert!(
        token.starts_with("agynenr_") && token.len() == 51,
        "{token}"
    );

    // Bad input at the enrollment route.
    let (status, body) = enroll(&server, &token, "not a certificate request").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = enroll(&server, "agynenr_unknown", &device_key_and_csr().1).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid enrollment token"))
    );

    let (key_pem, csr) = device_key_and_csr();
    let (status, enrolled) = enroll(&server, &token, &csr).await;
    assert_eq!(status, 200, "{enrolled}");
    assert_eq!(enrolled["device_id"], device_id.as_str());
    let cert_pem = enrolled["certificate_pem"].as_str().unwrap();
    let ca_pem = enrolled["ca_pem"].as_str().unwrap();
    assert_eq!(ca_pem, server.admin_credentials().ca_pem);
    // The token is single use.
    let (status, _) = enroll(&server, &token, &device_key_and_csr().1).await;
    assert_eq!(status, 401);

    let dir = server.data_dir.join("device");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_pem).unwrap();
    std::fs::write(dir.join("device.pem"), cert_pem).unwrap();
    std::fs::write(dir.join("device.key"), &key_pem).unwrap();

    // curl with the device certificate is the admin user.
    let (status, body) = curl_get_me(&server, &dir);
    assert_eq!(status, 200, "{body}");
    let me: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(me["user"]["username"], "admin");

    // So is a Rust client, and the certificate wins over a bogus bearer.
    let device = tls_client(ca_pem, Some((cert_pem, &key_pem)));
    let (status, me) = connect_json(
        &device,
        &server.https_url(),
        GET_ME,
        json!({}),
        Some("agyn_bogus"),
    )
    .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user"]["username"], "admin");

    // TLS without a client certificate still takes bearer tokens, and
    // plaintext keeps working on the same port.
    let anonymous_tls = tls_client(ca_pem, None);
    let (status, _) = connect_json(
        &anonymous_tls,
        &server.https_url(),
        GET_ME,
        json!({}),
        admin,
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) =
        connect_json(&anonymous_tls, &server.https_url(), GET_ME, json!({}), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthenticated"))
    );

    // GET /me names the identity behind any credential.
    let me: Value = device
        .get(format!("{}/me", server.https_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["identity_type"], "user");
    assert_eq!(me["identity_id"], enrolled["identity_id"]);
    let response = plain.get(format!("{base}/me")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "missing credential");

    let (status, listed) = connect_json(
        &device,
        &server.https_url(),
        "agynio.api.users.v1.UsersGateway/ListDevices",
        json!({}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["devices"][0]["status"], "DEVICE_STATUS_ENROLLED");
    assert!(
        listed["devices"][0]["certificateExpiresAt"].is_string(),
        "{listed}"
    );

    // The LLM proxy takes the certificate too, and ignores the placeholder
    // key that LLM clients inside workloads send.
    let (_, org) = connect_json(
        &plain,
        &base,
        "agynio.api.organizations.v1.OrganizationsGateway/CreateOrganization",
        json!({"name": "Devices"}),
        admin,
    )
    .await;
    let org = org["organization"]["meta"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, provider) = connect_json(
        &plain,
        &base,
        "agynio.api.llm.v1.LLMGateway/CreateProvider",
        json!({"organizationId": org, "name": "scripted",
               "script": {"rules": [{"steps": [{"text": "hello, device"}]}]}}),
        admin,
    )
    .await;
    let provider = provider["provider"]["meta"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, model) = connect_json(
        &plain,
        &base,
        "agynio.api.llm.v1.LLMGateway/CreateModel",
        json!({"organizationId": org, "name": "m", "providerId": provider, "remoteName": "m"}),
        admin,
    )
    .await;
    let model = model["model"]["meta"]["id"].as_str().unwrap().to_string();
    let llm_call = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let response = device
        .post(format!("{}/v1/chat/completions", server.https_url()))
        .bearer_auth("sk-placeholder")
        .body(llm_call.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        400,
        "the model speaks Responses"
    );
    let response = device
        .post(format!("{}/v1/responses", server.https_url()))
        .bearer_auth("sk-placeholder")
        .body(json!({"model": model, "input": "hi"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["output"][0]["content"][0]["text"], "hello, device");

    let (status, body) = connect_json(
        &plain,
        &base,
        "agynio.api.users.v1.UsersGateway/DeleteDevice",
        json!({"id": device_id}),
        admin,
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // The next call with the certificate fails at once.
    let (status, body) = curl_get_me(&server, &dir);
    assert_eq!(status, 401, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["code"], "unauthenticated");
    assert_eq!(error["message"], "credential revoked");
    let (status, _) = connect_json(&device, &server.https_url(), GET_ME, json!({}), admin).await;
    assert_eq!(
        status, 401,
        "a revoked certificate never falls back to the bearer token"
    );
    let response = device
        .post(format!("{}/v1/responses", server.https_url()))
        .bearer_auth(&server.admin_token)
        .body(json!({"model": model, "input": "hi"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "authentication_error");
}

#[tokio::test]
async fn device_lifecycle_sqlite() {
    device_lifecycle(false).await;
}

#[tokio::test]
async fn device_lifecycle_postgres() {
    device_lifecycle(true).await;
}

/// A certificate that does not chain to the platform CA fails the TLS
/// handshake.
#[tokio::test]
async fn foreign_certificates_fail_the_handshake() {
    let server = Server::start();
    let ca_pem = server.admin_credentials().ca_pem;
    let key = rcgen::KeyPair::generate().unwrap();
    let foreign = rcgen::CertificateParams::new(vec!["device".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let client = tls_client(&ca_pem, Some((&foreign.pem(), &key.serialize_pem())));
    let result = client
        .post(format!("{}/{GET_ME}", server.https_url()))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await;
    assert!(
        result.is_err(),
        "a foreign certificate was accepted: {result:?}"
    );
}

async fn internal_listener(postgres: bool) {
    let server = start(postgres).await;
    let admin = server.admin_credentials();
    let internal = server.internal_url();
    let set_admin = "agynio.api.users.v1.UsersService/SetClusterAdmin";

    // Without a client certificate.
    let anonymous = tls_client(&admin.ca_pem, None);
    let (status, body) = connect_json(&anonymous, &internal, set_admin, json!({}), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthenticated")),
        "{body}"
    );
    // Plaintext is not served at all.
    let plain = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/{set_admin}",
            server.internal_port
        ))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await;
    assert!(plain.is_err(), "plaintext was answered: {plain:?}");

    // The admin component may call SetClusterAdmin, but not methods whose
    // allow-list leaves it out.
    let component = tls_client(&admin.ca_pem, Some((&admin.cert_pem, &admin.key_pem)));
    let (status, me) = connect_json(
        &reqwest::Client::new(),
        &server.base_url(),
        GET_ME,
        json!({}),
        Some(&server.admin_token),
    )
    .await;
    assert_eq!(status, 200);
    let admin_id = me["user"]["meta"]["id"].as_str().unwrap();
    let (status, body) = connect_json(
        &component,
        &internal,
        set_admin,
        json!({"identityId": admin_id, "admin": true}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for method in [
        "agynio.api.users.v1.UsersService/ResolveAPIToken",
        "agynio.api.users.v1.UsersService/GetMe",
        "agynio.api.organizations.v1.OrganizationsService/GetOrganizationState",
    ] {
        let (status, body) = connect_json(&component, &internal, method, json!({}), None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("permission_denied")),
            "{method}: {body}"
        );
        assert_eq!(
            body["message"].as_str().unwrap(),
            format!("component admin may not call {method}")
        );
    }
    let (status, body) = connect_json(
        &component,
        &internal,
        "agynio.api.authorization.v1.AuthorizationService/Check",
        json!({"user": format!("identity:{admin_id}"), "relation": "admin", "object": "cluster:global"}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["allowed"], true);

    // An identity certificate (a device) is not a component.
    let (status, created) = connect_json(
        &reqwest::Client::new(),
        &server.base_url(),
        "agynio.api.users.v1.UsersGateway/CreateDevice",
        json!({"name": "probe"}),
        Some(&server.admin_token),
    )
    .await;
    assert_eq!(status, 200);
    let (key_pem, csr) = device_key_and_csr();
    let (status, enrolled) =
        enroll(&server, created["enrollmentToken"].as_str().unwrap(), &csr).await;
    assert_eq!(status, 200);
    let device = tls_client(
        &admin.ca_pem,
        Some((enrolled["certificate_pem"].as_str().unwrap(), &key_pem)),
    );
    let (status, body) = connect_json(&device, &internal, set_admin, json!({}), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("permission_denied")),
        "{body}"
    );
    assert_eq!(
        body["message"],
        format!("user certificates cannot call internal methods such as {set_admin}")
    );

    // Internal-only methods do not exist on the public listener.
    let (status, body) = connect_json(
        &reqwest::Client::new(),
        &server.base_url(),
        set_admin,
        json!({}),
        Some(&server.admin_token),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("unimplemented")),
        "{body}"
    );
}

#[tokio::test]
async fn internal_listener_sqlite() {
    internal_listener(false).await;
}

#[tokio::test]
async fn internal_listener_postgres() {
    internal_listener(true).await;
}
