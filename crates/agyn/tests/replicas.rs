//! Two `agyn serve` replicas on one PostgreSQL database and one Redis: an
//! event caused through one replica reaches a subscriber on the other.

mod support;

use std::time::{Duration, Instant};

use agyn_oidc::testing::{SigningKey, TestIssuer};
use serde_json::{Value, json};
use support::{ConnectStream, Server, connect_json};

fn redis_url() -> String {
    std::env::var("AGYN_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

async fn call(server: &Server, token: &str, method: &str, body: Value) -> Value {
    let (status, response) = connect_json(
        &reqwest::Client::new(),
        &server.base_url(),
        method,
        body,
        Some(token),
    )
    .await;
    assert_eq!(status, 200, "{method}: {response}");
    response
}

#[tokio::test]
async fn message_event_crosses_replicas() {
    let issuer = TestIssuer::start();
    let key = SigningKey::p256("p256-1");
    issuer.publish(&[&key]);
    issuer.set_profile(
        "idp|bob",
        json!({"preferred_username": "bob", "name": "Bob"}),
    );
    let args = vec![
        "--database-url".to_string(),
        support::fresh_postgres_url().await,
        "--redis-url".to_string(),
        redis_url(),
        // Both replicas must open the CA stored in the shared database.
        "--master-key".to_string(),
        agyn_pki::MasterKey::generate().to_base64(),
        "--oidc-issuer".to_string(),
        issuer.issuer().to_string(),
    ];
    let first = Server::start_with(&args);
    let second = Server::start_replica(&args);
    let admin = first.admin_token.clone();

    // Bob signs in through the first replica and subscribes there.
    let bob = issuer.token(&key, "idp|bob");
    let me = call(
        &first,
        &bob,
        "agynio.api.users.v1.UsersGateway/GetMe",
        json!({}),
    )
    .await;
    let bob_id = me["user"]["meta"]["id"].as_str().unwrap().to_string();
    let mut stream = ConnectStream::open(
        &reqwest::Client::new(),
        &first.base_url(),
        "agynio.api.notifications.v1.NotificationsGateway/Subscribe",
        json!({"rooms": ["thread_participant:me"]}),
        &bob,
    )
    .await;
    let ready = stream.next(Duration::from_secs(5)).await.unwrap().unwrap();
    assert_eq!(
        ready["ready"]["rooms"][0],
        format!("thread_participant:{bob_id}")
    );

    // The admin works through the second replica.
    let org = call(
        &second,
        &admin,
        "agynio.api.organizations.v1.OrganizationsGateway/CreateOrganization",
        json!({"name": "Replicas"}),
    )
    .await;
    let org_id = org["organization"]["meta"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let thread = call(
        &second,
        &admin,
        "agynio.api.threads.v1.ThreadsGateway/CreateThread",
        json!({"organizationId": org_id, "participants": [{"id": bob_id}]}),
    )
    .await;
    let thread_id = thread["thread"]["meta"]["id"].as_str().unwrap().to_string();
    let sent_at = Instant::now();
    let sent = call(
        &second,
        &admin,
        "agynio.api.threads.v1.ThreadsGateway/SendMessage",
        json!({"threadId": thread_id, "body": "hello from the second replica"}),
    )
    .await;
    let message_id = sent["message"]["meta"]["id"].as_str().unwrap().to_string();

    let envelope = loop {
        let next = stream
            .next(Duration::from_secs(1).saturating_sub(sent_at.elapsed()))
            .await
            .expect("no message.created within a second of the send");
        let message = next.expect("the stream ended");
        if message.get("heartbeat").is_some() {
            continue;
        }
        break message["envelope"].clone();
    };
    assert_eq!(envelope["event"], "message.created");
    assert_eq!(envelope["rooms"][0], format!("thread_participant:{bob_id}"));
    assert_eq!(envelope["payload"]["message_id"], message_id.as_str());
    assert_eq!(envelope["payload"]["thread_id"], thread_id.as_str());
}
