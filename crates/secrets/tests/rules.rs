//! The secrets rules, on SQLite and PostgreSQL: validation, uniqueness,
//! updates, delete guards, idempotency, pagination, authorization,
//! organization deletion and encryption at rest.

mod support;

use agyn_core::error::Code;
use agyn_core::{Caller, Secret};
use agyn_pki::MasterKey;
use agyn_secrets::{
    ImagePullSecretChanges, NewSecretProvider, ProviderType, SecretChanges, SecretProviderChanges,
    Source, Storage, VaultSettings,
};
use agyn_store::sqlx;
use agyn_store::{Backend, on_both_backends};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use support::*;

const ADDRESS: &str = "https://vault.example.com:8200";

async fn provider_create_rules(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let create = |input: NewSecretProvider| {
        let secrets = w.secrets.clone();
        let owner = owner.clone();
        async move { secrets.create_secret_provider(&owner, &input).await }
    };

    let mut input = vault_provider("nope", "vault", ADDRESS, "t");
    assert_error(
        create(input.clone()).await,
        Code::InvalidArgument,
        "organization_id: must be a UUID",
    );
    input.organization_id = org.clone();
    input.name = "  ".into();
    assert_error(
        create(input.clone()).await,
        Code::InvalidArgument,
        "name: must not be empty",
    );
    input.name = "x".repeat(65);
    assert_error(
        create(input.clone()).await,
        Code::InvalidArgument,
        "name: must be at most 64 characters",
    );
    input.name = "vault".into();
    input.description = "d".repeat(1_025);
    assert_error(
        create(input.clone()).await,
        Code::InvalidArgument,
        "description: must be at most 1024 characters",
    );
    input.description = String::new();
    input.provider_type = None;
    assert_error(
        create(input.clone()).await,
        Code::InvalidArgument,
        "provider_type: must not be SECRET_PROVIDER_TYPE_UNSPECIFIED",
    );
    input.provider_type = Some(ProviderType::Vault);
    let vault = input.vault.take();
    assert_error(
        create(input.clone()).await,
        Code::InvalidArgument,
        "config.vault: is required for SECRET_PROVIDER_TYPE_VAULT",
    );
    input.vault = vault;
    for (address, message) in [
        ("", "config.vault.address: is required"),
        (
            "vault.example.com",
            "config.vault.address: must be an absolute http or https URL",
        ),
        (
            "ftp://vault.example.com",
            "config.vault.address: must use http or https",
        ),
        (
            "https://user:pw@vault.example.com",
            "config.vault.address: must not contain user info; put the token in config.vault.token",
        ),
        (
            "https://vault.example.com/?a=1",
            "config.vault.address: must not have a query or fragment",
        ),
    ] {
        let mut bad = input.clone();
        bad.vault.as_mut().unwrap().address = address.into();
        assert_error(create(bad).await, Code::InvalidArgument, message);
    }
    let mut no_token = input.clone();
    no_token.vault.as_mut().unwrap().token = Secret::new(String::new());
    assert_error(
        create(no_token).await,
        Code::InvalidArgument,
        "config.vault.token: is required",
    );
    let mut bad_key = input.clone();
    bad_key.request_id = "no spaces".into();
    assert_error(
        create(bad_key).await,
        Code::InvalidArgument,
        "request_id: must be 1 to 64 characters of [A-Za-z0-9_-]",
    );

    let created = create(input.clone()).await.unwrap();
    assert_eq!(created.name, "vault");
    assert_eq!(created.organization_id, org);
    assert_eq!(created.provider_type, ProviderType::Vault);
    assert_eq!(created.vault_address, ADDRESS);
    assert_eq!(created.created_at, created.updated_at);
    assert_eq!(
        w.secrets
            .get_secret_provider(&owner, &created.id)
            .await
            .unwrap(),
        created
    );

    // Names are unique per organization only.
    assert_error(
        create(input.clone()).await,
        Code::AlreadyExists,
        &format!(
            "secret provider name \"vault\" is already used in organization {org}; choose another name"
        ),
    );
    let other_org = w.org(&owner, "Other").await;
    let mut elsewhere = input.clone();
    elsewhere.organization_id = other_org;
    create(elsewhere).await.unwrap();
}

async fn provider_update_rules(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let first = w.provider(&owner, &org, "first", ADDRESS, "token-1").await;
    w.provider(&owner, &org, "second", ADDRESS, "token-2").await;
    let stored_token = |w: &World, id: String| {
        let db = w.db.clone();
        let key = w.key.clone();
        async move {
            let sealed = column_of(&db, "secret_providers", "sealed_vault_token", &id).await;
            open(
                &key,
                &format!("secret_providers/{id}/sealed_vault_token"),
                &sealed,
            )
        }
    };

    let update = |changes: SecretProviderChanges| {
        let secrets = w.secrets.clone();
        let owner = owner.clone();
        let id = first.id.clone();
        async move { secrets.update_secret_provider(&owner, &id, &changes).await }
    };
    assert_error(
        update(SecretProviderChanges::default()).await,
        Code::InvalidArgument,
        "no fields to update",
    );
    assert_error(
        update(SecretProviderChanges {
            vault: Some(None),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "config.vault: is required for SECRET_PROVIDER_TYPE_VAULT",
    );
    assert_error(
        update(SecretProviderChanges {
            name: Some("second".into()),
            ..Default::default()
        })
        .await,
        Code::AlreadyExists,
        &format!(
            "secret provider name \"second\" is already used in organization {org}; choose another name"
        ),
    );

    // An empty token keeps the stored one while the address changes.
    let updated = update(SecretProviderChanges {
        name: Some("renamed".into()),
        description: Some("primary Vault".into()),
        vault: Some(Some(VaultSettings {
            address: "http://127.0.0.1:8200".into(),
            token: Secret::new(String::new()),
        })),
    })
    .await
    .unwrap();
    assert_eq!(updated.name, "renamed");
    assert_eq!(updated.description, "primary Vault");
    assert_eq!(updated.vault_address, "http://127.0.0.1:8200");
    assert_eq!(updated.provider_type, ProviderType::Vault);
    assert!(updated.updated_at >= first.updated_at);
    assert_eq!(stored_token(&w, first.id.clone()).await, "token-1");

    // A non-empty token replaces it.
    update(SecretProviderChanges {
        vault: Some(Some(VaultSettings {
            address: ADDRESS.into(),
            token: Secret::new("token-3".into()),
        })),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(stored_token(&w, first.id.clone()).await, "token-3");

    // Its own name is not a conflict.
    update(SecretProviderChanges {
        name: Some("renamed".into()),
        ..Default::default()
    })
    .await
    .unwrap();

    let unknown = agyn_core::id::new_id();
    assert_error(
        w.secrets
            .update_secret_provider(
                &owner,
                &unknown,
                &SecretProviderChanges {
                    name: Some("x".into()),
                    ..Default::default()
                },
            )
            .await,
        Code::NotFound,
        &format!("secret provider {unknown} not found"),
    );
}

async fn secret_create_rules(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let other_org = w.org(&owner, "Other").await;
    let provider = w.provider(&owner, &org, "vault", ADDRESS, "t").await;
    let foreign = w.provider(&owner, &other_org, "vault", ADDRESS, "t").await;

    let create = |input: agyn_secrets::NewSecret| {
        let secrets = w.secrets.clone();
        let owner = owner.clone();
        async move { secrets.create_secret(&owner, &input).await }
    };
    assert_error(
        create(local_secret(&org, "", "v")).await,
        Code::InvalidArgument,
        "name: must not be empty",
    );
    assert_error(
        create(local_secret(&org, &"n".repeat(129), "v")).await,
        Code::InvalidArgument,
        "name: must be at most 128 characters",
    );
    assert_error(
        create(local_secret(&org, "empty", "")).await,
        Code::InvalidArgument,
        "value: must not be empty",
    );
    assert_error(
        create(local_secret(&org, "big", &"v".repeat(64 * 1024 + 1))).await,
        Code::InvalidArgument,
        "value: must be at most 65536 bytes",
    );
    let mut no_source = local_secret(&org, "none", "v");
    no_source.source = None;
    assert_error(
        create(no_source).await,
        Code::InvalidArgument,
        "source: set exactly one of value and remote",
    );
    assert_error(
        create(remote_secret(&org, "short", &provider.id, "secret/key")).await,
        Code::InvalidArgument,
        "remote.remote_name: must be <mount>/<path>/<key> with at least three non-empty segments",
    );
    assert_error(
        create(remote_secret(&org, "bad-id", "x", "secret/app/key")).await,
        Code::InvalidArgument,
        "remote.secret_provider_id: must be a UUID",
    );
    for provider_id in [foreign.id.clone(), agyn_core::id::new_id()] {
        assert_error(
            create(remote_secret(
                &org,
                "elsewhere",
                &provider_id,
                "secret/app/key",
            ))
            .await,
            Code::InvalidArgument,
            "remote.secret_provider_id: secret provider not found in organization",
        );
    }

    let largest = create(local_secret(&org, "largest", &"v".repeat(64 * 1024)))
        .await
        .unwrap();
    assert_eq!(largest.storage, Storage::Local);
    let remote_record = create(remote_secret(
        &org,
        "db-password",
        &provider.id,
        "secret/app/db",
    ))
    .await
    .unwrap();
    assert_eq!(
        remote_record.storage,
        Storage::Remote(remote(&provider.id, "secret/app/db"))
    );
    assert_error(
        create(local_secret(&org, "db-password", "v")).await,
        Code::AlreadyExists,
        &format!(
            "secret name \"db-password\" is already used in organization {org}; choose another name"
        ),
    );
    create(local_secret(&other_org, "db-password", "v"))
        .await
        .unwrap();
    // Upper-case provider ids are accepted and stored in canonical form.
    let upper = create(remote_secret(
        &org,
        "upper",
        &provider.id.to_uppercase(),
        "secret/app/db",
    ))
    .await
    .unwrap();
    assert_eq!(
        upper.storage,
        Storage::Remote(remote(&provider.id, "secret/app/db"))
    );
}

async fn secret_update_switches_storage(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let other_org = w.org(&owner, "Other").await;
    let provider = w.provider(&owner, &org, "vault", ADDRESS, "t").await;
    let foreign = w.provider(&owner, &other_org, "vault", ADDRESS, "t").await;
    let id = w.local_secret(&owner, &org, "api-key", "first").await;
    w.local_secret(&owner, &org, "taken", "x").await;
    let update = |changes: SecretChanges| {
        let secrets = w.secrets.clone();
        let owner = owner.clone();
        let id = id.clone();
        async move { secrets.update_secret(&owner, &id, &changes).await }
    };

    assert_error(
        update(SecretChanges::default()).await,
        Code::InvalidArgument,
        "no fields to update",
    );
    assert_error(
        update(SecretChanges {
            value: Some(Secret::new("v".into())),
            remote: Some(remote(&provider.id, "secret/app/key")),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "remote: must not be set together with value; set at most one of them",
    );
    assert_error(
        update(SecretChanges {
            name: Some("taken".into()),
            ..Default::default()
        })
        .await,
        Code::AlreadyExists,
        &format!(
            "secret name \"taken\" is already used in organization {org}; choose another name"
        ),
    );
    assert_error(
        update(SecretChanges {
            remote: Some(remote(&foreign.id, "secret/app/key")),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "remote.secret_provider_id: secret provider not found in organization",
    );
    assert_error(
        update(SecretChanges {
            value: Some(Secret::new(String::new())),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "value: must not be empty",
    );

    // LOCAL to REMOTE deletes the stored value.
    let switched = update(SecretChanges {
        remote: Some(remote(&provider.id, "secret/app/key")),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        switched.storage,
        Storage::Remote(remote(&provider.id, "secret/app/key"))
    );
    assert_eq!(w.column("secrets", "sealed_value", &id).await, None);
    assert_eq!(
        w.column("secrets", "secret_provider_id", &id).await,
        Some(provider.id.clone())
    );

    // REMOTE to LOCAL clears the reference and stores the new value.
    let back = update(SecretChanges {
        name: Some("api-key-2".into()),
        description: Some("rotated".into()),
        value: Some(Secret::new("second".into())),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(back.storage, Storage::Local);
    assert_eq!(back.name, "api-key-2");
    assert_eq!(back.description, "rotated");
    assert_eq!(w.column("secrets", "secret_provider_id", &id).await, None);
    assert_eq!(w.column("secrets", "remote_name", &id).await, None);
    let value = w
        .secrets
        .resolve_secret(&orchestrator(), &id)
        .await
        .unwrap();
    assert_eq!(value.expose(), "second");

    // A description change leaves the value alone.
    update(SecretChanges {
        description: Some(String::new()),
        ..Default::default()
    })
    .await
    .unwrap();
    let value = w
        .secrets
        .resolve_secret(&orchestrator(), &id)
        .await
        .unwrap();
    assert_eq!(value.expose(), "second");
}

async fn image_pull_secret_rules(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let provider = w.provider(&owner, &org, "vault", ADDRESS, "t").await;
    let create = |input: agyn_secrets::NewImagePullSecret| {
        let secrets = w.secrets.clone();
        let owner = owner.clone();
        async move { secrets.create_image_pull_secret(&owner, &input).await }
    };

    assert_error(
        create(image_pull_secret(&org, "GHCR.io", value("p"))).await,
        Code::InvalidArgument,
        "registry: must be lowercase",
    );
    assert_error(
        create(image_pull_secret(&org, "https://ghcr.io", value("p"))).await,
        Code::InvalidArgument,
        "registry: must be a host name with an optional port and no scheme or path, such as ghcr.io or registry.example.com:5000",
    );
    assert_error(
        create(image_pull_secret(&org, "ghcr.io:99999", value("p"))).await,
        Code::InvalidArgument,
        "registry: port must be a number from 1 to 65535",
    );
    let mut no_user = image_pull_secret(&org, "ghcr.io", value("p"));
    no_user.username = String::new();
    assert_error(
        create(no_user).await,
        Code::InvalidArgument,
        "username: is required",
    );
    let mut long_user = image_pull_secret(&org, "ghcr.io", value("p"));
    long_user.username = "u".repeat(257);
    assert_error(
        create(long_user).await,
        Code::InvalidArgument,
        "username: must be at most 256 characters",
    );
    assert_error(
        create(image_pull_secret(
            &org,
            "ghcr.io",
            value(&"p".repeat(8 * 1024 + 1)),
        ))
        .await,
        Code::InvalidArgument,
        "value: must be at most 8192 bytes",
    );

    let created = create(image_pull_secret(
        &org,
        "registry.example.com:5000",
        value(&"p".repeat(8 * 1024)),
    ))
    .await
    .unwrap();
    assert_eq!(created.registry, "registry.example.com:5000");
    assert_eq!(created.username, "robot");
    assert_eq!(created.storage, Storage::Local);
    // Image pull secrets have no name, so two may share a registry.
    create(image_pull_secret(
        &org,
        "registry.example.com:5000",
        value("p"),
    ))
    .await
    .unwrap();

    let update = |changes: ImagePullSecretChanges| {
        let secrets = w.secrets.clone();
        let owner = owner.clone();
        let id = created.id.clone();
        async move {
            secrets
                .update_image_pull_secret(&owner, &id, &changes)
                .await
        }
    };
    assert_error(
        update(ImagePullSecretChanges::default()).await,
        Code::InvalidArgument,
        "no fields to update",
    );
    assert_error(
        update(ImagePullSecretChanges {
            value: Some(Secret::new("p".into())),
            remote: Some(remote(&provider.id, "secret/registry/password")),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "remote: must not be set together with value; set at most one of them",
    );
    assert_error(
        update(ImagePullSecretChanges {
            registry: Some("Bad".into()),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "registry: must be lowercase",
    );
    let switched = update(ImagePullSecretChanges {
        registry: Some("ghcr.io".into()),
        username: Some("bot".into()),
        description: Some("CI pulls".into()),
        remote: Some(remote(&provider.id, "secret/registry/password")),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(switched.registry, "ghcr.io");
    assert_eq!(switched.username, "bot");
    assert_eq!(switched.description, "CI pulls");
    assert_eq!(
        switched.storage,
        Storage::Remote(remote(&provider.id, "secret/registry/password"))
    );
    assert_eq!(
        w.column("image_pull_secrets", "sealed_password", &created.id)
            .await,
        None
    );
    let local = update(ImagePullSecretChanges {
        value: Some(Secret::new("new-password".into())),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(local.storage, Storage::Local);
    let credentials = w
        .secrets
        .resolve_image_pull_secret(&orchestrator(), &created.id)
        .await
        .unwrap();
    assert_eq!(credentials.registry, "ghcr.io");
    assert_eq!(credentials.username, "bot");
    assert_eq!(credentials.password.expose(), "new-password");
}

async fn provider_delete_names_referrers(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let provider = w.provider(&owner, &org, "vault", ADDRESS, "t").await;
    let secret_id = w
        .remote_secret(&owner, &org, "remote", &provider.id, "secret/app/key")
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

    let error = failure(w.secrets.delete_secret_provider(&owner, &provider.id).await);
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(error.reason(), Some("REFERENCED"));
    assert_eq!(
        error.message(),
        format!(
            "secret provider is referenced by secret {secret_id}, image pull secret {}; remove the references first",
            pull.id
        )
    );

    w.secrets.delete_secret(&owner, &secret_id).await.unwrap();
    let error = failure(w.secrets.delete_secret_provider(&owner, &provider.id).await);
    assert_eq!(
        error.message(),
        format!(
            "secret provider is referenced by image pull secret {}; remove the references first",
            pull.id
        )
    );
    // Switching the image pull secret to a stored password releases it.
    w.secrets
        .update_image_pull_secret(
            &owner,
            &pull.id,
            &ImagePullSecretChanges {
                value: Some(Secret::new("p".into())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    w.secrets
        .delete_secret_provider(&owner, &provider.id)
        .await
        .unwrap();
    assert_error(
        w.secrets.get_secret_provider(&owner, &provider.id).await,
        Code::NotFound,
        &format!("secret provider {} not found", provider.id),
    );
    assert_error(
        w.secrets.delete_secret_provider(&owner, &provider.id).await,
        Code::NotFound,
        &format!("secret provider {} not found", provider.id),
    );
}

async fn agent_references_block_deletes(backend: Backend) {
    let w = World::with_references(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let secret_id = w.local_secret(&owner, &org, "api-key", "v").await;
    let pull = w
        .secrets
        .create_image_pull_secret(&owner, &image_pull_secret(&org, "ghcr.io", value("p")))
        .await
        .unwrap();
    let env_a = agyn_core::id::new_id();
    let env_b = agyn_core::id::new_id();
    let attachment = agyn_core::id::new_id();
    w.agents
        .envs
        .lock()
        .unwrap()
        .insert(secret_id.clone(), vec![env_a.clone(), env_b.clone()]);
    w.agents
        .attachments
        .lock()
        .unwrap()
        .insert(pull.id.clone(), vec![attachment.clone()]);

    let error = failure(w.secrets.delete_secret(&owner, &secret_id).await);
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(error.reason(), Some("REFERENCED"));
    assert_eq!(
        error.message(),
        format!("secret is referenced by env {env_a}, env {env_b}; remove the references first")
    );
    let error = failure(w.secrets.delete_image_pull_secret(&owner, &pull.id).await);
    assert_eq!(error.reason(), Some("REFERENCED"));
    assert_eq!(
        error.message(),
        format!(
            "image pull secret is referenced by attachment {attachment}; remove the references first"
        )
    );

    // A check that cannot complete refuses the delete.
    w.agents
        .fail
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert_error(
        w.secrets.delete_secret(&owner, &secret_id).await,
        Code::Unavailable,
        &format!(
            "failed to check the references to secret {secret_id}: agents service unreachable; retry later"
        ),
    );
    assert_error(
        w.secrets.delete_image_pull_secret(&owner, &pull.id).await,
        Code::Unavailable,
        &format!(
            "failed to check the references to image pull secret {}: agents service unreachable; retry later",
            pull.id
        ),
    );
    w.agents
        .fail
        .store(false, std::sync::atomic::Ordering::SeqCst);

    w.agents.envs.lock().unwrap().clear();
    w.agents.attachments.lock().unwrap().clear();
    w.secrets.delete_secret(&owner, &secret_id).await.unwrap();
    w.secrets
        .delete_image_pull_secret(&owner, &pull.id)
        .await
        .unwrap();
    assert!(
        w.secrets
            .secret_exists(&Caller::Component("agents"), &secret_id)
            .await
            .unwrap()
            .is_none()
    );
    assert_error(
        w.secrets.delete_secret(&owner, &secret_id).await,
        Code::NotFound,
        &format!("secret {secret_id} not found"),
    );
}

async fn deletes_without_reference_source(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let secret_id = w.local_secret(&owner, &org, "api-key", "v").await;
    let pull = w
        .secrets
        .create_image_pull_secret(&owner, &image_pull_secret(&org, "ghcr.io", value("p")))
        .await
        .unwrap();
    w.secrets.delete_secret(&owner, &secret_id).await.unwrap();
    w.secrets
        .delete_image_pull_secret(&owner, &pull.id)
        .await
        .unwrap();
    assert_eq!(w.count("secrets", &org).await, 0);
    assert_eq!(w.count("image_pull_secrets", &org).await, 0);
}

async fn create_is_idempotent(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let admin = w.admin("admin").await;
    let org = w.org(&owner, "Acme").await;
    let password = canary_with("idempotent");

    let mut provider = vault_provider(&org, "vault", ADDRESS, &password);
    provider.request_id = "provider-1".into();
    let first = w
        .secrets
        .create_secret_provider(&owner, &provider)
        .await
        .unwrap();
    let again = w
        .secrets
        .create_secret_provider(&owner, &provider)
        .await
        .unwrap();
    assert_eq!(again.id, first.id);
    let mut other_token = provider.clone();
    other_token.vault.as_mut().unwrap().token = Secret::new("another-token".into());
    let error = failure(w.secrets.create_secret_provider(&owner, &other_token).await);
    assert_eq!(error.code(), Code::AlreadyExists);
    assert_eq!(error.reason(), Some("IDEMPOTENCY_KEY_REUSED"));

    let mut secret = local_secret(&org, "api-key", &password);
    secret.request_id = "secret-1".into();
    let first_secret = w.secrets.create_secret(&owner, &secret).await.unwrap();
    let replayed = w.secrets.create_secret(&owner, &secret).await.unwrap();
    assert_eq!(replayed, first_secret);
    let mut other_value = secret.clone();
    other_value.source = Some(value("different"));
    let error = failure(w.secrets.create_secret(&owner, &other_value).await);
    assert_eq!(error.reason(), Some("IDEMPOTENCY_KEY_REUSED"));
    let mut other_name = secret.clone();
    other_name.name = "other".into();
    let error = failure(w.secrets.create_secret(&owner, &other_name).await);
    assert_eq!(error.reason(), Some("IDEMPOTENCY_KEY_REUSED"));
    let mut as_remote = secret.clone();
    as_remote.source = Some(Source::Remote(remote(&first.id, "secret/app/key")));
    let error = failure(w.secrets.create_secret(&owner, &as_remote).await);
    assert_eq!(error.reason(), Some("IDEMPOTENCY_KEY_REUSED"));
    // Keys belong to their caller, so the admin's same key is a new
    // request, which then meets the name rule.
    assert_error(
        w.secrets.create_secret(&admin, &secret).await,
        Code::AlreadyExists,
        &format!(
            "secret name \"api-key\" is already used in organization {org}; choose another name"
        ),
    );
    assert_eq!(w.count("secrets", &org).await, 1);

    let mut pull = image_pull_secret(&org, "ghcr.io", value(&password));
    pull.request_id = "pull-1".into();
    let first_pull = w
        .secrets
        .create_image_pull_secret(&owner, &pull)
        .await
        .unwrap();
    let replayed = w
        .secrets
        .create_image_pull_secret(&owner, &pull)
        .await
        .unwrap();
    assert_eq!(replayed.id, first_pull.id);
    let mut other_password = pull.clone();
    other_password.source = Some(value("other"));
    let error = failure(
        w.secrets
            .create_image_pull_secret(&owner, &other_password)
            .await,
    );
    assert_eq!(error.reason(), Some("IDEMPOTENCY_KEY_REUSED"));
    assert_eq!(w.count("image_pull_secrets", &org).await, 1);

    // The stored fingerprints do not reveal the values.
    let rows = sqlx::query("SELECT fingerprint FROM idempotency_keys")
        .fetch_all(w.db.pool())
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    for row in rows {
        let fingerprint: String = sqlx::Row::try_get(&row, "fingerprint").unwrap();
        assert!(!fingerprint.contains(&password));
        assert!(!fingerprint.contains(&BASE64.encode(&password)));
    }
}

async fn lists_page_in_creation_order(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let other_org = w.org(&owner, "Other").await;
    let provider = w.provider(&owner, &org, "vault", ADDRESS, "t").await;
    w.provider(&owner, &other_org, "vault", ADDRESS, "t").await;
    let mut ids = Vec::new();
    for index in 0..5 {
        let name = format!("secret-{index}");
        let id = if index % 2 == 0 {
            w.local_secret(&owner, &org, &name, "v").await
        } else {
            w.remote_secret(&owner, &org, &name, &provider.id, "secret/app/key")
                .await
        };
        ids.push(id);
    }
    w.local_secret(&owner, &other_org, "elsewhere", "v").await;

    let mut listed = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let (page, next) = w
            .secrets
            .list_secrets(&owner, &org, None, 2, &token)
            .await
            .unwrap();
        pages += 1;
        assert!(page.len() <= 2);
        listed.extend(page.into_iter().map(|record| record.id));
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!(pages, 3);
    assert_eq!(listed, ids);

    let (remote_only, next) = w
        .secrets
        .list_secrets(&owner, &org, Some(&provider.id), 0, "")
        .await
        .unwrap();
    assert!(next.is_empty());
    let remote_ids: Vec<&str> = remote_only
        .iter()
        .map(|record| record.id.as_str())
        .collect();
    assert_eq!(remote_ids, vec![ids[1].as_str(), ids[3].as_str()]);

    // A token is bound to its filters.
    let (_, token) = w
        .secrets
        .list_secrets(&owner, &org, None, 2, "")
        .await
        .unwrap();
    let error = failure(
        w.secrets
            .list_secrets(&owner, &org, Some(&provider.id), 2, &token)
            .await,
    );
    assert_eq!(error.reason(), Some("PAGE_TOKEN_INVALID"));
    let error = failure(
        w.secrets
            .list_secrets(&owner, &other_org, None, 2, &token)
            .await,
    );
    assert_eq!(error.reason(), Some("PAGE_TOKEN_INVALID"));
    assert_error(
        w.secrets.list_secrets(&owner, &org, None, -1, "").await,
        Code::InvalidArgument,
        "page_size: must not be negative",
    );
    assert_error(
        w.secrets.list_secrets(&owner, &org, Some("x"), 0, "").await,
        Code::InvalidArgument,
        "secret_provider_id: must be a UUID",
    );

    let (providers, _) = w
        .secrets
        .list_secret_providers(&owner, &org, 0, "")
        .await
        .unwrap();
    assert_eq!(providers.len(), 1);
    assert_eq!(providers[0].id, provider.id);

    let mut pull_ids = Vec::new();
    for _ in 0..3 {
        let created = w
            .secrets
            .create_image_pull_secret(&owner, &image_pull_secret(&org, "ghcr.io", value("p")))
            .await
            .unwrap();
        pull_ids.push(created.id);
    }
    let (first_page, token) = w
        .secrets
        .list_image_pull_secrets(&owner, &org, 2, "")
        .await
        .unwrap();
    let (second_page, last) = w
        .secrets
        .list_image_pull_secrets(&owner, &org, 2, &token)
        .await
        .unwrap();
    assert!(last.is_empty());
    let listed: Vec<String> = first_page
        .into_iter()
        .chain(second_page)
        .map(|record| record.id)
        .collect();
    assert_eq!(listed, pull_ids);
}

async fn authorization_follows_the_organization(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let member = w.user("member").await;
    let stranger = w.user("stranger").await;
    let org = w.org(&owner, "Acme").await;
    w.join(&org, &owner, &member).await;
    let provider = w.provider(&owner, &org, "vault", ADDRESS, "t").await;
    let secret_id = w.local_secret(&owner, &org, "api-key", "v").await;
    let pull = w
        .secrets
        .create_image_pull_secret(&owner, &image_pull_secret(&org, "ghcr.io", value("p")))
        .await
        .unwrap();

    // Members may read, but only can_manage may write.
    w.secrets
        .get_secret_provider(&member, &provider.id)
        .await
        .unwrap();
    w.secrets.get_secret(&member, &secret_id).await.unwrap();
    w.secrets
        .get_image_pull_secret(&member, &pull.id)
        .await
        .unwrap();
    w.secrets
        .list_secrets(&member, &org, None, 0, "")
        .await
        .unwrap();
    let manage_denied = "permission denied: can_manage on organization";
    assert_error(
        w.secrets
            .create_secret(&member, &local_secret(&org, "mine", "v"))
            .await,
        Code::PermissionDenied,
        manage_denied,
    );
    assert_error(
        w.secrets
            .update_secret(
                &member,
                &secret_id,
                &SecretChanges {
                    description: Some("x".into()),
                    ..Default::default()
                },
            )
            .await,
        Code::PermissionDenied,
        manage_denied,
    );
    assert_error(
        w.secrets
            .delete_secret_provider(&member, &provider.id)
            .await,
        Code::PermissionDenied,
        manage_denied,
    );
    assert_error(
        w.secrets.delete_image_pull_secret(&member, &pull.id).await,
        Code::PermissionDenied,
        manage_denied,
    );

    // Outsiders get permission_denied on existing resources, as in the
    // threads service.
    let read_denied = "permission denied: can_read on organization";
    assert_error(
        w.secrets.get_secret(&stranger, &secret_id).await,
        Code::PermissionDenied,
        read_denied,
    );
    assert_error(
        w.secrets.get_secret_provider(&stranger, &provider.id).await,
        Code::PermissionDenied,
        read_denied,
    );
    assert_error(
        w.secrets.get_image_pull_secret(&stranger, &pull.id).await,
        Code::PermissionDenied,
        read_denied,
    );
    assert_error(
        w.secrets
            .list_secret_providers(&stranger, &org, 0, "")
            .await,
        Code::PermissionDenied,
        read_denied,
    );
    assert_error(
        w.secrets
            .list_image_pull_secrets(&stranger, &org, 0, "")
            .await,
        Code::PermissionDenied,
        read_denied,
    );

    // Unknown targets are not found, before any permission check.
    let unknown = agyn_core::id::new_id();
    assert_error(
        w.secrets.get_secret(&stranger, &unknown).await,
        Code::NotFound,
        &format!("secret {unknown} not found"),
    );
    assert_error(
        w.secrets
            .create_secret(&stranger, &local_secret(&unknown, "x", "v"))
            .await,
        Code::NotFound,
        &format!("organization {unknown} not found"),
    );
    assert_error(
        w.secrets
            .list_secrets(&stranger, &unknown, None, 0, "")
            .await,
        Code::NotFound,
        &format!("organization {unknown} not found"),
    );

    // Components act for no identity on the gateway methods, and
    // identities cannot call the internal ones.
    assert_error(
        w.secrets.get_secret(&orchestrator(), &secret_id).await,
        Code::Unauthenticated,
        "an identity is required",
    );
    for (result, method) in [
        (
            w.secrets
                .resolve_secret(&owner, &secret_id)
                .await
                .map(|_| ()),
            "ResolveSecret",
        ),
        (
            w.secrets
                .resolve_image_pull_secret(&owner, &pull.id)
                .await
                .map(|_| ()),
            "ResolveImagePullSecret",
        ),
        (
            w.secrets
                .secret_exists(&owner, &secret_id)
                .await
                .map(|_| ()),
            "SecretExists",
        ),
        (
            w.secrets
                .image_pull_secret_exists(&owner, &pull.id)
                .await
                .map(|_| ()),
            "ImagePullSecretExists",
        ),
        (
            w.secrets.delete_organization_resources(&owner, &org).await,
            "DeleteOrganizationResources",
        ),
    ] {
        assert_error(
            result,
            Code::PermissionDenied,
            &format!("permission denied: {method} is only for platform components"),
        );
    }
}

async fn internal_lookups(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let secret_id = w.local_secret(&owner, &org, "api-key", "the value").await;
    let pull = w
        .secrets
        .create_image_pull_secret(&owner, &image_pull_secret(&org, "ghcr.io", value("pw")))
        .await
        .unwrap();
    let agents = Caller::Component("agents");

    assert_eq!(
        w.secrets
            .resolve_secret(&orchestrator(), &secret_id)
            .await
            .unwrap()
            .expose(),
        "the value"
    );
    let credentials = w
        .secrets
        .resolve_image_pull_secret(&orchestrator(), &pull.id)
        .await
        .unwrap();
    assert_eq!(credentials.registry, "ghcr.io");
    assert_eq!(credentials.username, "robot");
    assert_eq!(credentials.password.expose(), "pw");
    assert!(!format!("{credentials:?}").contains("\"pw\""));

    assert_eq!(
        w.secrets.secret_exists(&agents, &secret_id).await.unwrap(),
        Some(org.clone())
    );
    assert_eq!(
        w.secrets
            .image_pull_secret_exists(&agents, &pull.id)
            .await
            .unwrap(),
        Some(org.clone())
    );
    let unknown = agyn_core::id::new_id();
    assert_eq!(
        w.secrets.secret_exists(&agents, &unknown).await.unwrap(),
        None
    );
    assert_eq!(
        w.secrets
            .image_pull_secret_exists(&agents, &unknown)
            .await
            .unwrap(),
        None
    );
    assert_error(
        w.secrets.resolve_secret(&orchestrator(), &unknown).await,
        Code::NotFound,
        &format!("secret {unknown} not found"),
    );
    assert_error(
        w.secrets
            .resolve_image_pull_secret(&orchestrator(), &unknown)
            .await,
        Code::NotFound,
        &format!("image pull secret {unknown} not found"),
    );
    assert_error(
        w.secrets.secret_exists(&agents, "nope").await,
        Code::InvalidArgument,
        "id: must be a UUID",
    );
}

async fn deleting_organization_blocks_writes(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let admin = w.admin("admin").await;
    let org = w.org(&owner, "Acme").await;
    let secret_id = w.local_secret(&owner, &org, "api-key", "v").await;
    w.orgs.delete_organization(&owner, &org).await.unwrap();

    let deleting = format!("organization {org} is being deleted");
    let error = failure(
        w.secrets
            .create_secret(&admin, &local_secret(&org, "new", "v"))
            .await,
    );
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(error.message(), deleting);
    assert_eq!(error.reason(), Some("ORGANIZATION_DELETING"));
    let error = failure(
        w.secrets
            .update_secret(
                &admin,
                &secret_id,
                &SecretChanges {
                    description: Some("x".into()),
                    ..Default::default()
                },
            )
            .await,
    );
    assert_eq!(error.reason(), Some("ORGANIZATION_DELETING"));
    let error = failure(w.secrets.delete_secret(&admin, &secret_id).await);
    assert_eq!(error.reason(), Some("ORGANIZATION_DELETING"));
    // The former owner lost its tuples when the deletion started.
    assert_error(
        w.secrets
            .create_secret(&owner, &local_secret(&org, "new", "v"))
            .await,
        Code::PermissionDenied,
        "permission denied: can_manage on organization",
    );
    // Reads still work for those who may read.
    w.secrets.get_secret(&admin, &secret_id).await.unwrap();
}

async fn organization_purge_deletes_everything(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let kept_org = w.org(&owner, "Kept").await;
    for org in [&org, &kept_org] {
        let provider = w.provider(&owner, org, "vault", ADDRESS, "t").await;
        w.local_secret(&owner, org, "local", "v").await;
        w.remote_secret(&owner, org, "remote", &provider.id, "secret/app/key")
            .await;
        w.secrets
            .create_image_pull_secret(
                &owner,
                &image_pull_secret(
                    org,
                    "ghcr.io",
                    Source::Remote(remote(&provider.id, "secret/registry/password")),
                ),
            )
            .await
            .unwrap();
    }
    w.orgs.delete_organization(&owner, &org).await.unwrap();
    w.orgs.purge(&org).await.unwrap();
    for table in ["secret_providers", "secrets", "image_pull_secrets"] {
        assert_eq!(w.count(table, &org).await, 0, "{table}");
    }
    assert_eq!(w.count("secret_providers", &kept_org).await, 1);
    assert_eq!(w.count("secrets", &kept_org).await, 2);
    assert_eq!(w.count("image_pull_secrets", &kept_org).await, 1);

    // The internal method does the same and is idempotent.
    let organizations = Caller::Component("organizations");
    w.secrets
        .delete_organization_resources(&organizations, &kept_org)
        .await
        .unwrap();
    w.secrets
        .delete_organization_resources(&organizations, &kept_org)
        .await
        .unwrap();
    for table in ["secret_providers", "secrets", "image_pull_secrets"] {
        assert_eq!(w.count(table, &kept_org).await, 0, "{table}");
    }
}

async fn values_are_sealed_per_row(backend: Backend) {
    let w = World::new(backend).await;
    let owner = w.user("owner").await;
    let org = w.org(&owner, "Acme").await;
    let token = canary_with("vault-token");
    let secret_value = canary_with("secret-value");
    let password = canary_with("password");
    let provider = w.provider(&owner, &org, "vault", ADDRESS, &token).await;
    let first = w.local_secret(&owner, &org, "first", &secret_value).await;
    let second = w.local_secret(&owner, &org, "second", "other").await;
    let pull = w
        .secrets
        .create_image_pull_secret(
            &owner,
            &image_pull_secret(&org, "ghcr.io", value(&password)),
        )
        .await
        .unwrap();

    for (table, column, id, plaintext) in [
        (
            "secret_providers",
            "sealed_vault_token",
            &provider.id,
            &token,
        ),
        ("secrets", "sealed_value", &first, &secret_value),
        ("image_pull_secrets", "sealed_password", &pull.id, &password),
    ] {
        let stored = w.column(table, column, id).await.unwrap();
        assert!(!stored.contains(plaintext.as_str()), "{table}");
        assert!(!stored.contains(&BASE64.encode(plaintext)), "{table}");
        let sealed = BASE64.decode(&stored).unwrap();
        assert_eq!(sealed[0], 1, "{table}: version byte");
        let own = format!("{table}/{id}/{column}");
        assert_eq!(open(&w.key, &own, &stored), *plaintext, "{table}");
        let other_row = format!("{table}/{second}/{column}");
        assert!(
            w.key.open(&sealed, other_row.as_bytes()).is_err(),
            "{table}"
        );
        let other_column = format!("{table}/{id}/description");
        assert!(
            w.key.open(&sealed, other_column.as_bytes()).is_err(),
            "{table}"
        );
        assert!(
            MasterKey::generate().open(&sealed, own.as_bytes()).is_err(),
            "{table}"
        );
    }

    // A sealed value copied into another row does not open there.
    let stolen = w.column("secrets", "sealed_value", &first).await.unwrap();
    sqlx::query("UPDATE secrets SET sealed_value = $1 WHERE id = $2")
        .bind(&stolen)
        .bind(&second)
        .execute(w.db.pool())
        .await
        .unwrap();
    let error = failure(w.secrets.resolve_secret(&orchestrator(), &second).await);
    assert_eq!(error.code(), Code::Internal);
    assert!(!format!("{error:?}").contains(&secret_value));
    assert_eq!(
        w.secrets
            .resolve_secret(&orchestrator(), &first)
            .await
            .unwrap()
            .expose(),
        &secret_value
    );
}

/// Opens base64 sealed text under `associated_data` as a string.
fn open(key: &MasterKey, associated_data: &str, stored: &str) -> String {
    let sealed = BASE64.decode(stored).unwrap();
    String::from_utf8(key.open(&sealed, associated_data.as_bytes()).unwrap()).unwrap()
}

async fn column_of(db: &agyn_store::Db, table: &str, column: &str, id: &str) -> String {
    let sql = format!("SELECT {column} AS value FROM {table} WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_one(db.pool())
        .await
        .unwrap();
    sqlx::Row::try_get(&row, "value").unwrap()
}

on_both_backends!(
    provider_create_rules,
    provider_update_rules,
    secret_create_rules,
    secret_update_switches_storage,
    image_pull_secret_rules,
    provider_delete_names_referrers,
    agent_references_block_deletes,
    deletes_without_reference_source,
    create_is_idempotent,
    lists_page_in_creation_order,
    authorization_follows_the_organization,
    internal_lookups,
    deleting_organization_blocks_writes,
    organization_purge_deletes_everything,
    values_are_sealed_per_row,
);
