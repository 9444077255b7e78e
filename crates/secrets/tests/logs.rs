//! Trace-level logs of a full secrets workload never contain a value, a
//! token or a password, on SQLite and PostgreSQL.
//!
//! This test binary installs one global subscriber at TRACE (which also
//! receives `log` records, such as reqwest's) writing into memory, so
//! every line from every thread is captured.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use agyn_core::Secret;
use agyn_core::error::Code;
use agyn_secrets::{SecretChanges, SecretProviderChanges, Source, VaultSettings};
use agyn_store::{Backend, on_both_backends};
use serde_json::json;
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

async fn trace_logs_hold_no_secrets(backend: Backend) {
    captured();
    let w = World::new(backend).await;
    let vault_token = canary_with("vault-token");
    let vault = VaultServer::start(&vault_token).await;
    vault.put("secret/app", json!({"key": canary_with("remote-value")}));
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;

    let provider = w
        .provider(&owner, &org, "vault", &vault.address, &vault_token)
        .await;
    let local = w
        .local_secret(&owner, &org, "local", &canary_with("local-value"))
        .await;
    let remote_id = w
        .remote_secret(&owner, &org, "remote", &provider.id, "secret/app/key")
        .await;
    let pull = w
        .secrets
        .create_image_pull_secret(
            &owner,
            &image_pull_secret(&org, "ghcr.io", value(&canary_with("password"))),
        )
        .await
        .unwrap();
    w.secrets
        .update_secret(
            &owner,
            &local,
            &SecretChanges {
                value: Some(Secret::new(canary_with("local-value-2"))),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    let resolved = w
        .secrets
        .resolve_secret(&orchestrator(), &remote_id)
        .await
        .unwrap();
    assert_eq!(resolved.expose(), &canary_with("remote-value"));
    w.secrets
        .resolve_secret(&orchestrator(), &local)
        .await
        .unwrap();
    w.secrets
        .resolve_image_pull_secret(&orchestrator(), &pull.id)
        .await
        .unwrap();

    // Failures, each turned into a Connect status as the server would.
    let mut failures = Vec::new();
    failures.push(failure(
        w.secrets
            .create_secret(
                &owner,
                &local_secret(&org, "local", &canary_with("duplicate")),
            )
            .await,
    ));
    failures.push(failure(
        w.secrets
            .create_image_pull_secret(
                &owner,
                &image_pull_secret(&org, "BAD", value(&canary_with("bad-registry"))),
            )
            .await,
    ));
    w.secrets
        .update_secret_provider(
            &owner,
            &provider.id,
            &SecretProviderChanges {
                vault: Some(Some(VaultSettings {
                    address: vault.address.clone(),
                    token: Secret::new(canary_with("wrong-token")),
                })),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let denied = failure(w.secrets.resolve_secret(&orchestrator(), &remote_id).await);
    assert_eq!(denied.code(), Code::Unavailable);
    failures.push(denied);
    let mut stolen = image_pull_secret(&org, "ghcr.io", Source::Value(Secret::new("x".into())));
    stolen.description = "copied".into();
    let copy = w
        .secrets
        .create_image_pull_secret(&owner, &stolen)
        .await
        .unwrap();
    let sealed = w
        .column("image_pull_secrets", "sealed_password", &pull.id)
        .await
        .unwrap();
    agyn_store::sqlx::query("UPDATE image_pull_secrets SET sealed_password = $1 WHERE id = $2")
        .bind(sealed)
        .bind(&copy.id)
        .execute(w.db.pool())
        .await
        .unwrap();
    let internal = failure(
        w.secrets
            .resolve_image_pull_secret(&orchestrator(), &copy.id)
            .await,
    );
    assert_eq!(internal.code(), Code::Internal);
    failures.push(internal);
    for error in failures {
        let connect = connectrpc::ConnectError::from(error);
        assert!(!format!("{connect:?}").contains(&canary()));
    }

    let logs = captured();
    assert!(logs.contains("Secret created"), "nothing was captured");
    assert!(
        logs.contains("Internal error"),
        "the internal error was not logged"
    );
    assert!(logs.contains("Dependency unavailable"));
    for (index, line) in logs.lines().enumerate() {
        assert!(
            !line.contains(&canary()),
            "log line {index} contains a secret: {line}"
        );
    }
}

on_both_backends!(trace_logs_hold_no_secrets);
