//! Trace-level logs of creating, enrolling and calling an app through the
//! proxy never contain the service token, the issued private key or the
//! caller's Authorization header, on SQLite and PostgreSQL.
//!
//! This test binary installs one global subscriber at TRACE writing into
//! memory, so every line from every thread is captured.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use agyn_apps::{AppChanges, AppProxy, Visibility};
use agyn_store::{Backend, on_both_backends};
use serde_json::Value;
use support::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Returns everything logged so far in this test binary.
fn captured() -> String {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    let logs = LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init()
            .expect("install the test subscriber");
        logs
    });
    String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned()
}

/// Passes the caller through as the user named in `Authorization:
/// Bearer user:<id>:<secret>`, so that the header carries a secret part.
async fn authenticate(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let user = request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer user:"))
        .and_then(|value| value.split(':').next())
        .map(str::to_string);
    if let Some(user) = user {
        request.extensions_mut().insert(user_caller(&user));
    }
    next.run(request).await
}

async fn trace_logs_contain_no_secrets(backend: Backend) {
    captured();
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let created = w.app(&owner, &org, "bot", Visibility::Internal, &[]).await;
    let token = created.service_token.expose().clone();

    let enrolled = w
        .apps
        .enroll_app("10.0.0.1", &created.service_token, None)
        .await
        .unwrap();
    let identity: Value = serde_json::from_slice(enrolled.identity_json.expose()).unwrap();
    let private_key = identity["private_key_pem"].as_str().unwrap().to_string();
    let key_body = private_key
        .lines()
        .nth(1)
        .expect("a PEM key has a body line")
        .to_string();

    // A proxy call to an endpoint that refuses connections logs its error.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    w.apps
        .update_app(
            &owner,
            &created.app.id,
            &AppChanges {
                endpoint: Some(endpoint),
                ..AppChanges::default()
            },
        )
        .await
        .unwrap();
    w.install(&owner, &created.app.id, &org).await;
    let router = AppProxy::new(w.apps.clone(), None)
        .router()
        .layer(axum::middleware::from_fn(authenticate));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let bearer_secret = "bearer-secret-5d1c";
    let response = reqwest::Client::new()
        .post(format!("{address}/apps/bot/Echo?organization_id={org}"))
        .header(
            "authorization",
            format!("Bearer user:{}:{bearer_secret}", id(&owner)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 502);

    let logs = captured();
    assert!(
        logs.contains("App enrolled"),
        "the enrollment was not logged"
    );
    assert!(
        logs.contains("App request failed"),
        "the proxy failure was not logged"
    );
    assert!(!logs.contains(&token), "the service token was logged");
    assert!(!logs.contains(&key_body), "the private key was logged");
    assert!(
        !logs.contains(bearer_secret),
        "the Authorization header was logged"
    );
}

on_both_backends!(trace_logs_contain_no_secrets);
