//! Remote values read from a Vault KV version 2 server on loopback, on
//! SQLite and PostgreSQL.

mod support;

use std::time::{Duration, Instant};

use agyn_core::Secret;
use agyn_core::error::Code;
use agyn_secrets::{
    ImagePullSecretChanges, SecretChanges, SecretProviderChanges, Source, VaultSettings,
};
use agyn_store::{Backend, on_both_backends};
use serde_json::json;
use support::*;

const TOKEN: &str = "hvs.test-token";

async fn remote_secret_resolves(backend: Backend) {
    let w = World::new(backend).await;
    let vault = VaultServer::start(TOKEN).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    vault.put(
        "secret/team a/app",
        json!({"password": "s3cret", "port": 5432}),
    );

    // Creating and updating never contacts Vault.
    let provider = w
        .provider(&owner, &org, "vault", &vault.address, TOKEN)
        .await;
    let id = w
        .remote_secret(
            &owner,
            &org,
            "db",
            &provider.id,
            "secret/team a/app/password",
        )
        .await;
    w.secrets
        .update_secret(
            &owner,
            &id,
            &SecretChanges {
                description: Some("database".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    w.secrets
        .update_secret_provider(
            &owner,
            &provider.id,
            &SecretProviderChanges {
                name: Some("renamed".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(vault.requests(), 0);

    let value = w
        .secrets
        .resolve_secret(&orchestrator(), &id)
        .await
        .unwrap();
    assert_eq!(value.expose(), "s3cret");
    assert_eq!(
        vault.paths(),
        vec!["/v1/secret/data/team a/app".to_string()]
    );

    // Nothing is cached, so a changed value is read on the next call.
    vault.put("secret/team a/app", json!({"password": "rotated"}));
    let value = w
        .secrets
        .resolve_secret(&orchestrator(), &id)
        .await
        .unwrap();
    assert_eq!(value.expose(), "rotated");
    assert_eq!(vault.requests(), 2);
}

async fn remote_failures_map_to_codes(backend: Backend) {
    let w = World::new(backend).await;
    let vault = VaultServer::start(TOKEN).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let provider = w
        .provider(&owner, &org, "vault", &vault.address, TOKEN)
        .await;
    vault.put(
        "kv/app",
        json!({"number": 7, "nested": {"a": "b"}, "empty": null}),
    );
    vault.put_raw("kv/not-json", "<html>proxy error</html>");
    let resolve = |name: &str, remote_name: &str| {
        let w = &w;
        let owner = owner.clone();
        let org = org.clone();
        let provider_id = provider.id.clone();
        let name = name.to_string();
        let remote_name = remote_name.to_string();
        async move {
            let id = w
                .remote_secret(&owner, &org, &name, &provider_id, &remote_name)
                .await;
            w.secrets.resolve_secret(&orchestrator(), &id).await
        }
    };

    assert_error(
        resolve("unknown-path", "kv/missing/key").await,
        Code::NotFound,
        "remote secret not found",
    );
    assert_error(
        resolve("unknown-key", "kv/app/password").await,
        Code::NotFound,
        "remote secret not found",
    );
    for (name, key) in [
        ("number", "number"),
        ("nested", "nested"),
        ("null", "empty"),
    ] {
        let remote_name = format!("kv/app/{key}");
        assert_error(
            resolve(name, &remote_name).await,
            Code::FailedPrecondition,
            &format!(
                "remote secret {remote_name} is not a string; store the key {key:?} as a string"
            ),
        );
    }
    let error = failure(resolve("not-json", "kv/not-json/key").await);
    assert_eq!(error.code(), Code::Unavailable);
    assert_eq!(
        error.message(),
        format!(
            "secret provider {} returned a body that is not a KV version 2 read response",
            provider.id
        )
    );

    // The server rejects a wrong token with 403.
    vault.set_token("hvs.another");
    vault.put("kv/app", json!({"password": "p"}));
    assert_error(
        resolve("wrong-token", "kv/app/password").await,
        Code::Unavailable,
        &format!("secret provider {} returned HTTP 403", provider.id),
    );
}

async fn token_updates_reach_vault(backend: Backend) {
    let w = World::new(backend).await;
    let vault = VaultServer::start(TOKEN).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    vault.put("secret/app", json!({"key": "v"}));
    let provider = w
        .provider(&owner, &org, "vault", &vault.address, TOKEN)
        .await;
    let id = w
        .remote_secret(&owner, &org, "app", &provider.id, "secret/app/key")
        .await;
    let set_config = |token: &str| {
        let w = &w;
        let owner = owner.clone();
        let provider_id = provider.id.clone();
        let changes = SecretProviderChanges {
            vault: Some(Some(VaultSettings {
                address: vault.address.clone(),
                token: Secret::new(token.to_string()),
            })),
            ..Default::default()
        };
        async move {
            w.secrets
                .update_secret_provider(&owner, &provider_id, &changes)
                .await
                .unwrap();
        }
    };

    // An empty token keeps the stored one.
    set_config("").await;
    assert_eq!(
        w.secrets
            .resolve_secret(&orchestrator(), &id)
            .await
            .unwrap()
            .expose(),
        "v"
    );
    vault.set_token("hvs.rotated");
    assert_eq!(
        failure(w.secrets.resolve_secret(&orchestrator(), &id).await).code(),
        Code::Unavailable
    );
    set_config("hvs.rotated").await;
    assert_eq!(
        w.secrets
            .resolve_secret(&orchestrator(), &id)
            .await
            .unwrap()
            .expose(),
        "v"
    );
}

async fn image_pull_password_from_vault(backend: Backend) {
    let w = World::new(backend).await;
    let vault = VaultServer::start(TOKEN).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    vault.put("secret/registry", json!({"password": "registry-password"}));
    let provider = w
        .provider(&owner, &org, "vault", &vault.address, TOKEN)
        .await;
    let pull = w
        .secrets
        .create_image_pull_secret(
            &owner,
            &image_pull_secret(
                &org,
                "ghcr.io",
                Source::Remote(remote(&provider.id, "secret/registry/password")),
            ),
        )
        .await
        .unwrap();
    assert_eq!(vault.requests(), 0);
    let credentials = w
        .secrets
        .resolve_image_pull_secret(&orchestrator(), &pull.id)
        .await
        .unwrap();
    assert_eq!(credentials.registry, "ghcr.io");
    assert_eq!(credentials.username, "robot");
    assert_eq!(credentials.password.expose(), "registry-password");

    w.secrets
        .update_image_pull_secret(
            &owner,
            &pull.id,
            &ImagePullSecretChanges {
                remote: Some(remote(&provider.id, "secret/registry/missing")),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_error(
        w.secrets
            .resolve_image_pull_secret(&orchestrator(), &pull.id)
            .await,
        Code::NotFound,
        "remote secret not found",
    );
}

async fn unreachable_vault_is_unavailable(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let provider = w
        .provider(&owner, &org, "down", &closed_address(), TOKEN)
        .await;
    let id = w
        .remote_secret(&owner, &org, "app", &provider.id, "secret/app/key")
        .await;
    let error = failure(w.secrets.resolve_secret(&orchestrator(), &id).await);
    assert_eq!(error.code(), Code::Unavailable);
    let prefix = format!("secret provider {} is unreachable: ", provider.id);
    assert!(error.message().starts_with(&prefix), "{error:?}");
}

async fn slow_vault_times_out(backend: Backend) {
    let w = World::new(backend).await;
    let vault = VaultServer::start(TOKEN).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    vault.put("secret/app", json!({"key": "v"}));
    vault.set_delay(agyn_secrets::VAULT_TIMEOUT + Duration::from_secs(5));
    let provider = w
        .provider(&owner, &org, "slow", &vault.address, TOKEN)
        .await;
    let id = w
        .remote_secret(&owner, &org, "app", &provider.id, "secret/app/key")
        .await;
    let started = Instant::now();
    assert_error(
        w.secrets.resolve_secret(&orchestrator(), &id).await,
        Code::Unavailable,
        &format!(
            "secret provider {} did not respond within 10 s",
            provider.id
        ),
    );
    let elapsed = started.elapsed();
    assert!(elapsed >= agyn_secrets::VAULT_TIMEOUT, "{elapsed:?}");
    assert!(
        elapsed < agyn_secrets::VAULT_TIMEOUT + Duration::from_secs(4),
        "{elapsed:?}"
    );
}

on_both_backends!(
    remote_secret_resolves,
    remote_failures_map_to_codes,
    token_updates_reach_vault,
    image_pull_password_from_vault,
    unreachable_vault_is_unavailable,
    slow_vault_times_out,
);
