//! Trace-level logs of registration and enrollment never contain a
//! service token, a private key or the identity JSON, on SQLite and
//! PostgreSQL.
//!
//! This test binary installs one global subscriber at TRACE writing into
//! memory, so every line from every thread is captured.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use agyn_core::Secret;
use agyn_core::error::Code;
use agyn_runners::{Enrollment, NewRunner};
use agyn_store::{Backend, on_both_backends};
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

async fn enrollment_logs_no_secrets(backend: Backend) {
    captured();
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let registered = w
        .runners
        .register_runner(
            &owner,
            &NewRunner {
                name: "edge".into(),
                organization_id: Some(org),
                ..NewRunner::default()
            },
        )
        .await
        .unwrap();
    let token = registered.service_token.expose().clone();
    let enrolled = w
        .runners
        .enroll_runner(
            "10.0.0.9",
            &Enrollment {
                service_token: &Secret::new(token.clone()),
                endpoint: "https://runner.example.com:8443",
                csr_pem: None,
            },
        )
        .await
        .unwrap();
    let identity: serde_json::Value =
        serde_json::from_slice(enrolled.identity_json.expose()).unwrap();
    let private_key = identity["private_key_pem"].as_str().unwrap().to_string();
    let last = if token.ends_with('x') { 'y' } else { 'x' };
    let wrong = format!("{}{last}", &token[..token.len() - 1]);
    assert_ne!(wrong, token);
    let error = failure(
        w.runners
            .enroll_runner(
                "10.0.0.9",
                &Enrollment {
                    service_token: &Secret::new(wrong.clone()),
                    endpoint: "https://runner.example.com:8443",
                    csr_pem: None,
                },
            )
            .await,
    );
    assert_eq!(error.code(), Code::Unauthenticated);

    let logs = captured();
    assert!(logs.contains("Runner enrolled"), "enrollment is logged");
    let key_body = private_key
        .lines()
        .nth(1)
        .expect("a PEM key has a body line");
    for (secret, what) in [
        (token.as_str(), "service token"),
        (wrong.as_str(), "rejected token"),
        (key_body, "private key"),
    ] {
        assert!(!logs.contains(secret), "the logs contain the {what}");
    }
}

on_both_backends!(enrollment_logs_no_secrets);
