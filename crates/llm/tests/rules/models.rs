//! Model rules: validation, the provider of the same organization, access
//! through the `org` tuple, listing and the organization purge.

use agyn_api_llm::agynio::api::llm::v1::{AuthMethod, Protocol};
use agyn_core::Caller;
use agyn_core::error::Code;
use agyn_llm::{ModelUpdate, NewModel, ProviderUpdate};
use agyn_store::{Backend, on_both_backends};

use crate::common::{World, assert_error};

const ENDPOINT: &str = "https://api.example.com";

async fn model_lifecycle(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let org = w.org(&alice, "Acme").await;
    let openai = w
        .bearer_provider(&alice, &org, "OpenAI", ENDPOINT, "t")
        .await;
    let anthropic = w
        .provider(
            &alice,
            &org,
            ENDPOINT,
            Protocol::PROTOCOL_ANTHROPIC_MESSAGES,
            AuthMethod::AUTH_METHOD_X_API_KEY,
            "k",
            &[],
        )
        .await;

    let created = w
        .llm
        .create_model(
            &alice,
            &NewModel {
                organization_id: &org,
                name: " Fast ",
                provider_id: &openai.id,
                remote_name: "gpt-5-mini",
                request_id: "",
            },
        )
        .await
        .unwrap();
    assert_eq!(created.name, "Fast");
    assert_eq!(created.remote_name, "gpt-5-mini");
    assert_eq!(created.provider_id, openai.id);
    assert_eq!(created.organization_id, org);
    assert_eq!(created.protocol, Protocol::PROTOCOL_RESPONSES);
    assert_eq!(w.llm.get_model(&alice, &created.id).await.unwrap(), created);
    assert_eq!(w.model_tuples(&created.id).await, 1);

    let updated = w
        .llm
        .update_model(
            &alice,
            &created.id,
            &ModelUpdate {
                name: Some("Careful"),
                provider_id: Some(&anthropic.id),
                remote_name: Some("claude-sonnet"),
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.name, "Careful");
    assert_eq!(updated.remote_name, "claude-sonnet");
    assert_eq!(updated.provider_id, anthropic.id);
    assert_eq!(updated.protocol, Protocol::PROTOCOL_ANTHROPIC_MESSAGES);
    assert!(updated.updated_at >= created.updated_at);
    assert_eq!(w.llm.get_model(&alice, &created.id).await.unwrap(), updated);

    // The protocol is the provider's, read at query time.
    w.llm
        .update_provider(
            &alice,
            &anthropic.id,
            &ProviderUpdate {
                protocol: Some(Protocol::PROTOCOL_CHAT_COMPLETIONS),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let read = w.llm.get_model(&alice, &created.id).await.unwrap();
    assert_eq!(read.protocol, Protocol::PROTOCOL_CHAT_COMPLETIONS);

    assert_error(
        w.llm
            .update_model(&alice, &created.id, &ModelUpdate::default())
            .await,
        Code::InvalidArgument,
        "no fields to update",
    );

    w.llm.delete_model(&alice, &created.id).await.unwrap();
    assert_eq!(w.model_tuples(&created.id).await, 0);
    assert_error(
        w.llm.get_model(&alice, &created.id).await,
        Code::NotFound,
        &format!("model {} not found", created.id),
    );
    assert_error(
        w.llm.delete_model(&alice, &created.id).await,
        Code::NotFound,
        &format!("model {} not found", created.id),
    );
    // The provider is free again.
    w.llm.delete_provider(&alice, &openai.id).await.unwrap();
}

async fn model_field_validation(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let acme = w.org(&alice, "Acme").await;
    let globex = w.org(&alice, "Globex").await;
    let provider = w.bearer_provider(&alice, &acme, "P", ENDPOINT, "t").await;
    let foreign = w.bearer_provider(&alice, &globex, "P", ENDPOINT, "t").await;
    let unknown = agyn_core::id::new_id();
    let long_name = "n".repeat(129);
    let long_remote = "r".repeat(257);
    let base = NewModel {
        organization_id: &acme,
        name: "M",
        provider_id: &provider.id,
        remote_name: "gpt-5",
        request_id: "",
    };
    let cases: Vec<(NewModel, &str)> = vec![
        (NewModel { name: "", ..base }, "name: must not be empty"),
        (
            NewModel {
                name: &long_name,
                ..base
            },
            "name: must be at most 128 characters",
        ),
        (
            NewModel {
                remote_name: " ",
                ..base
            },
            "remote_name: must not be empty",
        ),
        (
            NewModel {
                remote_name: &long_remote,
                ..base
            },
            "remote_name: must be at most 256 characters",
        ),
        (
            NewModel {
                provider_id: "",
                ..base
            },
            "provider_id: is required",
        ),
        (
            NewModel {
                provider_id: "p1",
                ..base
            },
            "provider_id: must be a UUID",
        ),
        (
            NewModel {
                provider_id: &foreign.id,
                ..base
            },
            "provider_id: provider not found in organization",
        ),
        (
            NewModel {
                provider_id: &unknown,
                ..base
            },
            "provider_id: provider not found in organization",
        ),
        (
            NewModel {
                request_id: "a b",
                ..base
            },
            "request_id: must be 1 to 64 characters of [A-Za-z0-9_-]",
        ),
    ];
    for (input, message) in cases {
        assert_error(
            w.llm.create_model(&alice, &input).await,
            Code::InvalidArgument,
            message,
        );
    }
    // A name and a remote name of the maximum length are accepted.
    let name = "n".repeat(128);
    let remote = "r".repeat(256);
    let model = w
        .llm
        .create_model(
            &alice,
            &NewModel {
                name: &name,
                remote_name: &remote,
                ..base
            },
        )
        .await
        .unwrap();

    for (update, message) in [
        (
            ModelUpdate {
                provider_id: Some(&foreign.id),
                ..Default::default()
            },
            "provider_id: provider not found in organization",
        ),
        (
            ModelUpdate {
                name: Some(""),
                ..Default::default()
            },
            "name: must not be empty",
        ),
        (
            ModelUpdate {
                remote_name: Some(&long_remote),
                ..Default::default()
            },
            "remote_name: must be at most 256 characters",
        ),
    ] {
        assert_error(
            w.llm.update_model(&alice, &model.id, &update).await,
            Code::InvalidArgument,
            message,
        );
    }
    let unchanged = w.llm.get_model(&alice, &model.id).await.unwrap();
    assert_eq!(unchanged, model);
}

async fn model_access_follows_tuple(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let bob = w.user("bob").await;
    let eve = w.user("eve").await;
    let org = w.org(&alice, "Acme").await;
    w.join(&org, &alice, &bob).await;
    let provider = w.bearer_provider(&alice, &org, "P", ENDPOINT, "t").await;
    let model = w.model(&alice, &org, &provider.id, "gpt-5").await;

    // Members use models; outsiders do not.
    assert_eq!(w.llm.get_model(&bob, &model.id).await.unwrap(), model);
    assert_error(
        w.llm.get_model(&eve, &model.id).await,
        Code::PermissionDenied,
        "permission denied: can_use on model",
    );
    let (listed, _) = w.llm.list_models(&bob, &org, None, 0, "").await.unwrap();
    assert_eq!(listed, vec![model.clone()]);
    assert_error(
        w.llm.list_models(&eve, &org, None, 0, "").await,
        Code::PermissionDenied,
        "permission denied: can_read on organization",
    );
    // Only managers change models.
    let rename = ModelUpdate {
        name: Some("X"),
        ..Default::default()
    };
    assert_error(
        w.llm.update_model(&bob, &model.id, &rename).await,
        Code::PermissionDenied,
        "permission denied: can_manage on model",
    );
    assert_error(
        w.llm.delete_model(&bob, &model.id).await,
        Code::PermissionDenied,
        "permission denied: can_manage on model",
    );
    assert_error(
        w.llm
            .create_model(
                &bob,
                &NewModel {
                    organization_id: &org,
                    name: "M",
                    provider_id: &provider.id,
                    remote_name: "r",
                    request_id: "",
                },
            )
            .await,
        Code::PermissionDenied,
        "permission denied: can_manage on organization",
    );
    // The agents component reads models without an identity.
    let agents = Caller::Component("agents");
    assert_eq!(w.llm.get_model(&agents, &model.id).await.unwrap(), model);

    // Without the tuple, membership grants nothing on the model.
    let mut tx = w.db.begin_write().await.unwrap();
    w.authz
        .delete_object_in(
            &mut tx,
            &agyn_authz::ObjectRef::new("model", &model.id),
            None,
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_error(
        w.llm.get_model(&bob, &model.id).await,
        Code::PermissionDenied,
        "permission denied: can_use on model",
    );
}

async fn model_pages_and_filter(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let org = w.org(&alice, "Acme").await;
    let first = w.bearer_provider(&alice, &org, "A", ENDPOINT, "t").await;
    let second = w.bearer_provider(&alice, &org, "B", ENDPOINT, "t").await;
    let mut all = Vec::new();
    for index in 0..5 {
        let provider = if index % 2 == 0 { &first } else { &second };
        all.push(
            w.model(&alice, &org, &provider.id, &format!("m{index}"))
                .await,
        );
    }
    all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let (page, next) = w
            .llm
            .list_models(&alice, &org, None, 2, &token)
            .await
            .unwrap();
        assert!(page.len() <= 2);
        seen.extend(page);
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!(seen, all);

    let (filtered, next) = w
        .llm
        .list_models(&alice, &org, Some(&second.id), 0, "")
        .await
        .unwrap();
    let expected: Vec<_> = all
        .iter()
        .filter(|model| model.provider_id == second.id)
        .cloned()
        .collect();
    assert_eq!(filtered.len(), 2);
    assert_eq!(filtered, expected);
    assert!(next.is_empty());

    // A token is bound to its filter.
    let (_, token) = w.llm.list_models(&alice, &org, None, 1, "").await.unwrap();
    let error = w
        .llm
        .list_models(&alice, &org, Some(&second.id), 1, &token)
        .await
        .unwrap_err();
    assert_eq!(error.reason(), Some("PAGE_TOKEN_INVALID"));
    assert_error(
        w.llm.list_models(&alice, &org, Some("x"), 0, "").await,
        Code::InvalidArgument,
        "provider_id: must be a UUID",
    );
}

async fn model_create_idempotent(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let org = w.org(&alice, "Acme").await;
    let provider = w.bearer_provider(&alice, &org, "P", ENDPOINT, "t").await;
    let input = NewModel {
        organization_id: &org,
        name: "M",
        provider_id: &provider.id,
        remote_name: "gpt-5",
        request_id: "model-1",
    };

    let first = w.llm.create_model(&alice, &input).await.unwrap();
    let again = w.llm.create_model(&alice, &input).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(w.model_tuples(&first.id).await, 1);

    let error = assert_error(
        w.llm
            .create_model(
                &alice,
                &NewModel {
                    remote_name: "gpt-4",
                    ..input
                },
            )
            .await,
        Code::AlreadyExists,
        "request_id was already used for a different request",
    );
    assert_eq!(error.reason(), Some("IDEMPOTENCY_KEY_REUSED"));
    let (listed, _) = w.llm.list_models(&alice, &org, None, 0, "").await.unwrap();
    assert_eq!(listed.len(), 1);
}

async fn organization_purge_deletes_everything(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let acme = w.org(&alice, "Acme").await;
    let globex = w.org(&alice, "Globex").await;
    let mut acme_models = Vec::new();
    for name in ["A", "B"] {
        let provider = w.bearer_provider(&alice, &acme, name, ENDPOINT, "t").await;
        for remote in ["x", "y"] {
            acme_models.push(w.model(&alice, &acme, &provider.id, remote).await);
        }
    }
    let kept_provider = w.bearer_provider(&alice, &globex, "A", ENDPOINT, "t").await;
    let kept = w.model(&alice, &globex, &kept_provider.id, "x").await;

    w.orgs.delete_organization(&alice, &acme).await.unwrap();
    w.orgs.purge(&acme).await.unwrap();
    for model in &acme_models {
        assert_eq!(w.model_tuples(&model.id).await, 0, "{}", model.id);
        assert!(w.llm.resolve_model(&model.id).await.is_err());
    }
    let count = |table: &'static str| {
        let db = w.db.clone();
        let org = acme.clone();
        async move {
            let row: (i64,) = agyn_store::sqlx::query_as(&format!(
                "SELECT COUNT(*) FROM {table} WHERE organization_id = $1"
            ))
            .bind(org)
            .fetch_one(db.pool())
            .await
            .unwrap();
            row.0
        }
    };
    assert_eq!(count("llm_models").await, 0);
    assert_eq!(count("llm_providers").await, 0);
    // Other organizations keep theirs.
    assert_eq!(w.llm.get_model(&alice, &kept.id).await.unwrap(), kept);
    assert_eq!(w.model_tuples(&kept.id).await, 1);

    // The step is idempotent.
    w.llm.delete_organization_resources(&acme).await.unwrap();
}

on_both_backends!(
    model_lifecycle,
    model_field_validation,
    model_access_follows_tuple,
    model_pages_and_filter,
    model_create_idempotent,
    organization_purge_deletes_everything,
);
