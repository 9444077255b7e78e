//! Provider rules: validation, credential combinations, uniqueness,
//! idempotency, pagination, permissions and the delete guard.

use agyn_api_llm::agynio::api::llm::v1::{AuthMethod, Protocol, Script, ScriptRule, ScriptStep};
use agyn_core::error::Code;
use agyn_core::{Caller, Secret};
use agyn_llm::{Credential, NewProvider, ProviderRecord, ProviderUpdate};
use agyn_store::{Backend, on_both_backends};

use crate::common::{World, assert_error, headers};

const ENDPOINT: &str = "https://api.example.com";

fn secret_values(credential: &Credential) -> Vec<(String, String)> {
    let expose = |value: &Secret<String>| value.expose().clone();
    match credential {
        Credential::None => Vec::new(),
        Credential::Bearer(token) => vec![("bearer".into(), expose(token))],
        Credential::ApiKey(token) => vec![("x-api-key".into(), expose(token))],
        Credential::Headers(headers) => headers
            .iter()
            .map(|(name, value)| (name.clone(), expose(value)))
            .collect(),
    }
}

pub fn hello_script() -> Script {
    Script {
        rules: vec![ScriptRule {
            when_input_contains: "hello".into(),
            steps: vec![ScriptStep {
                reply: Some(
                    agyn_api_llm::agynio::api::llm::v1::__buffa::oneof::script_step::Reply::Text(
                        "Hello from the script".into(),
                    ),
                ),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn provider_defaults(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let org = w.org(&alice, "Acme").await;

    let created = w
        .bearer_provider(&alice, &org, "  OpenAI  ", ENDPOINT, "sk-1")
        .await;
    assert_eq!(created.name, "OpenAI");
    assert_eq!(created.organization_id, org);
    assert_eq!(created.endpoint, ENDPOINT);
    assert_eq!(created.protocol, Protocol::PROTOCOL_RESPONSES);
    assert_eq!(created.auth_method, AuthMethod::AUTH_METHOD_BEARER);
    assert!(created.has_token);
    assert!(created.header_names.is_empty());
    assert!(created.script.is_none());
    assert_eq!(created.created_at, created.updated_at);

    let read = w.llm.get_provider(&alice, &created.id).await.unwrap();
    assert_eq!(read, created);
    // Ids are accepted in any case.
    let upper = w
        .llm
        .get_provider(&alice, &created.id.to_uppercase())
        .await
        .unwrap();
    assert_eq!(upper.id, created.id);
    let (listed, next) = w.llm.list_providers(&alice, &org, 0, "").await.unwrap();
    assert_eq!(listed, vec![created]);
    assert!(next.is_empty());
}

async fn provider_field_validation(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let org = w.org(&alice, "Acme").await;
    let long_endpoint = format!("https://api.example.com/{}", "a".repeat(2_048));
    let long_name = "n".repeat(65);

    let base = NewProvider {
        organization_id: &org,
        name: "P",
        endpoint: ENDPOINT,
        token: "sk-1",
        ..Default::default()
    };

    let cases: Vec<(NewProvider, &str)> = vec![
        (
            NewProvider {
                organization_id: "nope",
                ..base
            },
            "organization_id: must be a UUID",
        ),
        (NewProvider { name: " ", ..base }, "name: must not be empty"),
        (
            NewProvider {
                name: &long_name,
                ..base
            },
            "name: must be at most 64 characters",
        ),
        (
            NewProvider {
                endpoint: "",
                ..base
            },
            "endpoint: is required",
        ),
        (
            NewProvider {
                endpoint: "ftp://files.example.com",
                ..base
            },
            "endpoint: must be an absolute http or https URL",
        ),
        (
            NewProvider {
                endpoint: "api.example.com/v1",
                ..base
            },
            "endpoint: must be an absolute http or https URL",
        ),
        (
            NewProvider {
                endpoint: &long_endpoint,
                ..base
            },
            "endpoint: must be at most 2048 characters",
        ),
        (
            NewProvider {
                request_id: "not valid!",
                ..base
            },
            "request_id: must be 1 to 64 characters of [A-Za-z0-9_-]",
        ),
    ];
    for (input, message) in cases {
        assert_error(
            w.llm.create_provider(&alice, &input).await,
            Code::InvalidArgument,
            message,
        );
    }
    // A name and an endpoint of the maximum length are accepted.
    let name = "n".repeat(64);
    let endpoint = format!("https://a.example/{}", "e".repeat(2_048 - 18));
    assert_eq!(endpoint.len(), 2_048);
    w.llm
        .create_provider(
            &alice,
            &NewProvider {
                name: &name,
                endpoint: &endpoint,
                ..base
            },
        )
        .await
        .unwrap();
}

async fn provider_credentials_on_create(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let org = w.org(&alice, "Acme").await;
    let base = NewProvider {
        organization_id: &org,
        name: "P",
        endpoint: ENDPOINT,
        ..Default::default()
    };
    let one_header = headers(&[("x-key", "v")]);
    let long_secret = "s".repeat(8 * 1024 + 1);
    let too_many: Vec<(String, String)> = (0..33)
        .map(|index| (format!("x-h{index}"), "v".to_string()))
        .collect();
    let long_value = headers(&[("x-key", &long_secret)]);
    let duplicate = headers(&[("X-Key", "a"), ("x-key", "b")]);
    let line_break = headers(&[("x-key", "a\r\nx-injected: 1")]);
    let bad_name = headers(&[("x key", "v")]);
    let custom = AuthMethod::AUTH_METHOD_CUSTOM_HEADERS;
    let cases: Vec<(NewProvider, &str)> = vec![
        (base, "token: is required for AUTH_METHOD_BEARER"),
        (
            NewProvider {
                auth_method: AuthMethod::AUTH_METHOD_X_API_KEY,
                ..base
            },
            "token: is required for AUTH_METHOD_X_API_KEY",
        ),
        (
            NewProvider {
                token: "sk-1",
                headers: &one_header,
                ..base
            },
            "headers: must be empty unless auth_method is AUTH_METHOD_CUSTOM_HEADERS",
        ),
        (
            NewProvider {
                token: &long_secret,
                ..base
            },
            "token: must be at most 8 KiB",
        ),
        (
            NewProvider {
                token: "sk\n1",
                ..base
            },
            "token: must not contain CR, LF, NUL or other control characters",
        ),
        (
            NewProvider {
                auth_method: custom,
                token: "sk-1",
                headers: &one_header,
                ..base
            },
            "token: must be empty for AUTH_METHOD_CUSTOM_HEADERS",
        ),
        (
            NewProvider {
                auth_method: custom,
                ..base
            },
            "headers: at least one header is required for AUTH_METHOD_CUSTOM_HEADERS",
        ),
        (
            NewProvider {
                auth_method: custom,
                headers: &too_many,
                ..base
            },
            "headers: must have at most 32 entries",
        ),
        (
            NewProvider {
                auth_method: custom,
                headers: &long_value,
                ..base
            },
            "headers: value of \"x-key\" must be at most 8 KiB",
        ),
        (
            NewProvider {
                auth_method: custom,
                headers: &duplicate,
                ..base
            },
            "headers: name \"x-key\" appears more than once; names are case-insensitive",
        ),
        (
            NewProvider {
                auth_method: custom,
                headers: &line_break,
                ..base
            },
            "headers: value of \"x-key\" must not contain CR, LF, NUL or other control characters",
        ),
        (
            NewProvider {
                auth_method: custom,
                headers: &bad_name,
                ..base
            },
            "headers: name \"x key\" is not a valid HTTP header name",
        ),
    ];
    for (input, message) in cases {
        assert_error(
            w.llm.create_provider(&alice, &input).await,
            Code::InvalidArgument,
            message,
        );
    }
    for name in [
        "Host",
        "content-length",
        "Connection",
        "keep-alive",
        "TE",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "Proxy-Authorization",
        "X-Agyn-Thread-Id",
    ] {
        let reserved = headers(&[(name, "v")]);
        let input = NewProvider {
            auth_method: custom,
            headers: &reserved,
            ..base
        };
        assert_error(
            w.llm.create_provider(&alice, &input).await,
            Code::InvalidArgument,
            &format!("headers: name {:?} is reserved", name.to_ascii_lowercase()),
        );
    }

    // The valid combinations.
    let api_key = w
        .llm
        .create_provider(
            &alice,
            &NewProvider {
                name: "api key",
                auth_method: AuthMethod::AUTH_METHOD_X_API_KEY,
                token: "k",
                ..base
            },
        )
        .await
        .unwrap();
    assert_eq!(api_key.auth_method, AuthMethod::AUTH_METHOD_X_API_KEY);
    assert!(api_key.has_token);
    let full = headers(&[("X-Tenant", "t1"), ("Api-Key", &"k".repeat(8 * 1024))]);
    let max_headers: Vec<(String, String)> = (0..32)
        .map(|index| (format!("x-h{index:02}"), "v".to_string()))
        .collect();
    for (name, entries) in [("headers", &full), ("many headers", &max_headers)] {
        let created = w
            .llm
            .create_provider(
                &alice,
                &NewProvider {
                    name,
                    auth_method: custom,
                    headers: entries,
                    ..base
                },
            )
            .await
            .unwrap();
        assert_eq!(created.auth_method, custom);
        assert!(!created.has_token);
        assert_eq!(created.header_names.len(), entries.len());
    }
    let (listed, _) = w.llm.list_providers(&alice, &org, 0, "").await.unwrap();
    assert_eq!(listed[1].header_names, vec!["api-key", "x-tenant"]);
}

async fn update(
    w: &World,
    caller: &Caller,
    id: &str,
    update: ProviderUpdate<'_>,
) -> agyn_core::Result<ProviderRecord> {
    w.llm.update_provider(caller, id, &update).await
}

/// Returns the decrypted credential of a model's provider as pairs.
async fn credential(w: &World, model_id: &str) -> Vec<(String, String)> {
    secret_values(&w.llm.resolve_model(model_id).await.unwrap().credential)
}

async fn provider_update_credentials(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let org = w.org(&alice, "Acme").await;
    let provider = w
        .bearer_provider(&alice, &org, "P", ENDPOINT, "sk-first")
        .await;
    let model = w.model(&alice, &org, &provider.id, "gpt-5").await;
    let id = provider.id.as_str();

    assert_error(
        update(&w, &alice, id, ProviderUpdate::default()).await,
        Code::InvalidArgument,
        "no fields to update",
    );

    // An absent token keeps the stored one.
    let renamed = update(
        &w,
        &alice,
        id,
        ProviderUpdate {
            name: Some("Renamed"),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(renamed.name, "Renamed");
    assert!(renamed.has_token);
    assert!(renamed.updated_at >= provider.updated_at);
    assert_eq!(
        credential(&w, &model.id).await,
        vec![("bearer".into(), "sk-first".into())]
    );

    // A present empty token leaves no token, which BEARER needs.
    assert_error(
        update(
            &w,
            &alice,
            id,
            ProviderUpdate {
                token: Some(""),
                ..Default::default()
            },
        )
        .await,
        Code::InvalidArgument,
        "token: is required for AUTH_METHOD_BEARER",
    );
    update(
        &w,
        &alice,
        id,
        ProviderUpdate {
            token: Some("sk-second"),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        credential(&w, &model.id).await,
        vec![("bearer".into(), "sk-second".into())]
    );

    // Switching between token methods keeps the stored token.
    let api_key = update(
        &w,
        &alice,
        id,
        ProviderUpdate {
            auth_method: Some(AuthMethod::AUTH_METHOD_X_API_KEY),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(api_key.auth_method, AuthMethod::AUTH_METHOD_X_API_KEY);
    assert_eq!(
        credential(&w, &model.id).await,
        vec![("x-api-key".into(), "sk-second".into())]
    );

    let one_header = headers(&[("X-Key", "h-1")]);
    let one_header = one_header.as_slice();
    assert_error(
        update(
            &w,
            &alice,
            id,
            ProviderUpdate {
                headers: Some(one_header),
                ..Default::default()
            },
        )
        .await,
        Code::InvalidArgument,
        "headers: must be empty unless auth_method is AUTH_METHOD_CUSTOM_HEADERS",
    );
    assert_error(
        update(
            &w,
            &alice,
            id,
            ProviderUpdate {
                auth_method: Some(AuthMethod::AUTH_METHOD_CUSTOM_HEADERS),
                ..Default::default()
            },
        )
        .await,
        Code::InvalidArgument,
        "headers: at least one header is required for AUTH_METHOD_CUSTOM_HEADERS",
    );
    assert_error(
        update(
            &w,
            &alice,
            id,
            ProviderUpdate {
                auth_method: Some(AuthMethod::AUTH_METHOD_CUSTOM_HEADERS),
                headers: Some(one_header),
                token: Some("sk-third"),
                ..Default::default()
            },
        )
        .await,
        Code::InvalidArgument,
        "token: must be empty for AUTH_METHOD_CUSTOM_HEADERS",
    );

    // Switching to custom headers clears the token.
    let custom = update(
        &w,
        &alice,
        id,
        ProviderUpdate {
            auth_method: Some(AuthMethod::AUTH_METHOD_CUSTOM_HEADERS),
            headers: Some(one_header),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(!custom.has_token);
    assert_eq!(custom.header_names, vec!["x-key"]);
    assert_eq!(
        credential(&w, &model.id).await,
        vec![("x-key".into(), "h-1".into())]
    );

    // Headers present replace the whole map; absent headers keep it.
    let two = headers(&[("x-a", "a-1"), ("x-b", "b-1")]);
    let two = two.as_slice();
    let replaced = update(
        &w,
        &alice,
        id,
        ProviderUpdate {
            headers: Some(two),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(replaced.header_names, vec!["x-a", "x-b"]);
    update(
        &w,
        &alice,
        id,
        ProviderUpdate {
            endpoint: Some("http://127.0.0.1:9/v1"),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        credential(&w, &model.id).await,
        vec![("x-a".into(), "a-1".into()), ("x-b".into(), "b-1".into())]
    );
    assert_error(
        update(
            &w,
            &alice,
            id,
            ProviderUpdate {
                headers: Some(&[]),
                ..Default::default()
            },
        )
        .await,
        Code::InvalidArgument,
        "headers: at least one header is required for AUTH_METHOD_CUSTOM_HEADERS",
    );
    assert_error(
        update(
            &w,
            &alice,
            id,
            ProviderUpdate {
                token: Some("sk-x"),
                ..Default::default()
            },
        )
        .await,
        Code::InvalidArgument,
        "token: must be empty for AUTH_METHOD_CUSTOM_HEADERS",
    );

    // Switching away needs a token, because none is stored.
    assert_error(
        update(
            &w,
            &alice,
            id,
            ProviderUpdate {
                auth_method: Some(AuthMethod::AUTH_METHOD_BEARER),
                ..Default::default()
            },
        )
        .await,
        Code::InvalidArgument,
        "token: is required for AUTH_METHOD_BEARER",
    );
    let back = update(
        &w,
        &alice,
        id,
        ProviderUpdate {
            auth_method: Some(AuthMethod::AUTH_METHOD_BEARER),
            token: Some("sk-fourth"),
            headers: Some(&[]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(back.has_token);
    assert!(back.header_names.is_empty());
    assert_eq!(
        credential(&w, &model.id).await,
        vec![("bearer".into(), "sk-fourth".into())]
    );

    // Enum values must name a state.
    assert_error(
        update(
            &w,
            &alice,
            id,
            ProviderUpdate {
                auth_method: Some(AuthMethod::AUTH_METHOD_UNSPECIFIED),
                ..Default::default()
            },
        )
        .await,
        Code::InvalidArgument,
        "auth_method: must not be AUTH_METHOD_UNSPECIFIED",
    );
    assert_error(
        update(
            &w,
            &alice,
            id,
            ProviderUpdate {
                protocol: Some(Protocol::PROTOCOL_UNSPECIFIED),
                ..Default::default()
            },
        )
        .await,
        Code::InvalidArgument,
        "protocol: must not be PROTOCOL_UNSPECIFIED",
    );
    assert_error(
        update(
            &w,
            &alice,
            id,
            ProviderUpdate {
                endpoint: Some("nope"),
                ..Default::default()
            },
        )
        .await,
        Code::InvalidArgument,
        "endpoint: must be an absolute http or https URL",
    );

    // A protocol change reaches the provider's models.
    update(
        &w,
        &alice,
        id,
        ProviderUpdate {
            protocol: Some(Protocol::PROTOCOL_CHAT_COMPLETIONS),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let model = w.llm.get_model(&alice, &model.id).await.unwrap();
    assert_eq!(model.protocol, Protocol::PROTOCOL_CHAT_COMPLETIONS);
    let failed = update(
        &w,
        &alice,
        id,
        ProviderUpdate {
            name: Some("Unchanged?"),
            token: Some(""),
            ..Default::default()
        },
    )
    .await;
    assert!(failed.is_err());
    // A failed update changes nothing.
    let read = w.llm.get_provider(&alice, id).await.unwrap();
    assert_eq!(read.name, "Renamed");
}

async fn provider_names_unique(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let acme = w.org(&alice, "Acme").await;
    let globex = w.org(&alice, "Globex").await;
    let first = w
        .bearer_provider(&alice, &acme, "Main", ENDPOINT, "t")
        .await;
    let second = w
        .bearer_provider(&alice, &acme, "Other", ENDPOINT, "t")
        .await;

    let input = NewProvider {
        organization_id: &acme,
        name: "Main",
        endpoint: ENDPOINT,
        token: "t",
        ..Default::default()
    };
    assert_error(
        w.llm.create_provider(&alice, &input).await,
        Code::AlreadyExists,
        "name: a provider named \"Main\" already exists in the organization",
    );
    // Names are unique per organization only.
    w.bearer_provider(&alice, &globex, "Main", ENDPOINT, "t")
        .await;
    assert_error(
        w.llm
            .update_provider(
                &alice,
                &second.id,
                &ProviderUpdate {
                    name: Some("Main"),
                    ..Default::default()
                },
            )
            .await,
        Code::AlreadyExists,
        "name: a provider named \"Main\" already exists in the organization",
    );
    // Keeping its own name is no conflict.
    w.llm
        .update_provider(
            &alice,
            &first.id,
            &ProviderUpdate {
                name: Some("Main"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
}

async fn provider_delete_guard(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let org = w.org(&alice, "Acme").await;
    let provider = w.bearer_provider(&alice, &org, "P", ENDPOINT, "t").await;
    let first = w.model(&alice, &org, &provider.id, "a").await;
    let second = w.model(&alice, &org, &provider.id, "b").await;

    let error = assert_error(
        w.llm.delete_provider(&alice, &provider.id).await,
        Code::FailedPrecondition,
        &format!(
            "provider is referenced by model {}, {}; delete those models or move them to \
             another provider first",
            first.id, second.id
        ),
    );
    assert_eq!(error.reason(), Some("REFERENCED"));
    w.llm.get_provider(&alice, &provider.id).await.unwrap();

    w.llm.delete_model(&alice, &first.id).await.unwrap();
    w.llm.delete_model(&alice, &second.id).await.unwrap();
    w.llm.delete_provider(&alice, &provider.id).await.unwrap();
    assert_error(
        w.llm.get_provider(&alice, &provider.id).await,
        Code::NotFound,
        &format!("provider {} not found", provider.id),
    );
    assert_error(
        w.llm.delete_provider(&alice, &provider.id).await,
        Code::NotFound,
        &format!("provider {} not found", provider.id),
    );
}

async fn provider_delete_guard_lists_ten(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let org = w.org(&alice, "Acme").await;
    let provider = w.bearer_provider(&alice, &org, "P", ENDPOINT, "t").await;
    let mut ids = Vec::new();
    for index in 0..12 {
        ids.push(
            w.model(&alice, &org, &provider.id, &format!("m{index}"))
                .await
                .id,
        );
    }
    let error = w
        .llm
        .delete_provider(&alice, &provider.id)
        .await
        .unwrap_err();
    assert_eq!(error.reason(), Some("REFERENCED"));
    let message = error.message();
    assert!(message.contains(&ids[9]), "{message}");
    assert!(!message.contains(&ids[10]), "{message}");
    assert!(message.contains(" and 2 more;"), "{message}");
}

async fn provider_create_idempotent(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let bob = w.user("bob").await;
    let org = w.org(&alice, "Acme").await;
    let input = NewProvider {
        organization_id: &org,
        name: "P",
        endpoint: ENDPOINT,
        token: "sk-1",
        request_id: "create-p",
        ..Default::default()
    };
    let first = w.llm.create_provider(&alice, &input).await.unwrap();
    let again = w.llm.create_provider(&alice, &input).await.unwrap();
    assert_eq!(again, first);

    for changed in [
        NewProvider { name: "Q", ..input },
        NewProvider {
            token: "sk-2",
            ..input
        },
    ] {
        let error = assert_error(
            w.llm.create_provider(&alice, &changed).await,
            Code::AlreadyExists,
            "request_id was already used for a different request",
        );
        assert_eq!(error.reason(), Some("IDEMPOTENCY_KEY_REUSED"));
    }
    let (listed, _) = w.llm.list_providers(&alice, &org, 0, "").await.unwrap();
    assert_eq!(listed.len(), 1);

    // Keys belong to their caller: bob's first use is a new request, which
    // fails on his missing permission.
    let bob_error = w.llm.create_provider(&bob, &input).await.unwrap_err();
    assert_eq!(bob_error.code(), Code::PermissionDenied);
}

async fn provider_pages(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let org = w.org(&alice, "Acme").await;
    let other = w.org(&alice, "Other").await;
    let mut created = Vec::new();
    for index in 0..5 {
        created.push(
            w.bearer_provider(&alice, &org, &format!("P{index}"), ENDPOINT, "t")
                .await,
        );
    }
    w.bearer_provider(&alice, &other, "Elsewhere", ENDPOINT, "t")
        .await;
    created.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let (page, next) = w.llm.list_providers(&alice, &org, 2, &token).await.unwrap();
        pages += 1;
        assert!(page.len() <= 2);
        seen.extend(page);
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created);

    let (_, token) = w.llm.list_providers(&alice, &org, 2, "").await.unwrap();
    let error = w
        .llm
        .list_providers(&alice, &other, 2, &token)
        .await
        .unwrap_err();
    assert_eq!(error.reason(), Some("PAGE_TOKEN_INVALID"));
    assert_error(
        w.llm.list_providers(&alice, &org, -1, "").await,
        Code::InvalidArgument,
        "page_size: must not be negative",
    );
}

async fn provider_permissions(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let bob = w.user("bob").await;
    let eve = w.user("eve").await;
    let org = w.org(&alice, "Acme").await;
    w.join(&org, &alice, &bob).await;
    let provider = w.bearer_provider(&alice, &org, "P", ENDPOINT, "t").await;
    let input = NewProvider {
        organization_id: &org,
        name: "Q",
        endpoint: ENDPOINT,
        token: "t",
        ..Default::default()
    };
    let rename = ProviderUpdate {
        name: Some("R"),
        ..Default::default()
    };

    // Members read.
    w.llm.get_provider(&bob, &provider.id).await.unwrap();
    w.llm.list_providers(&bob, &org, 0, "").await.unwrap();
    // Only managers write.
    assert_error(
        w.llm.create_provider(&bob, &input).await,
        Code::PermissionDenied,
        "permission denied: can_manage on organization",
    );
    assert_error(
        w.llm.update_provider(&bob, &provider.id, &rename).await,
        Code::PermissionDenied,
        "permission denied: can_manage on organization",
    );
    assert_error(
        w.llm.delete_provider(&bob, &provider.id).await,
        Code::PermissionDenied,
        "permission denied: can_manage on organization",
    );
    // Outsiders read nothing.
    assert_error(
        w.llm.get_provider(&eve, &provider.id).await,
        Code::PermissionDenied,
        "permission denied: can_read on organization",
    );
    assert_error(
        w.llm.list_providers(&eve, &org, 0, "").await,
        Code::PermissionDenied,
        "permission denied: can_read on organization",
    );
    let unknown = agyn_core::id::new_id();
    assert_error(
        w.llm.get_provider(&alice, &unknown).await,
        Code::NotFound,
        &format!("provider {unknown} not found"),
    );
    assert_error(
        w.llm.get_provider(&alice, "nope").await,
        Code::InvalidArgument,
        "id: must be a UUID",
    );
    // Components act for no identity.
    let component = Caller::Component("agents");
    assert_error(
        w.llm.get_provider(&component, &provider.id).await,
        Code::Unauthenticated,
        "an identity is required",
    );
}

async fn provider_writes_need_active_org(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let org = w.org(&alice, "Acme").await;
    let provider = w.bearer_provider(&alice, &org, "P", ENDPOINT, "t").await;
    let unknown = agyn_core::id::new_id();
    let input = NewProvider {
        organization_id: &unknown,
        name: "Q",
        endpoint: ENDPOINT,
        token: "t",
        ..Default::default()
    };
    assert_error(
        w.llm.create_provider(&alice, &input).await,
        Code::NotFound,
        &format!("organization {unknown} not found"),
    );

    w.orgs.delete_organization(&alice, &org).await.unwrap();
    let error = assert_error(
        w.llm
            .create_provider(
                &alice,
                &NewProvider {
                    organization_id: &org,
                    ..input
                },
            )
            .await,
        Code::FailedPrecondition,
        &format!("organization {org} is being deleted"),
    );
    assert_eq!(error.reason(), Some("ORGANIZATION_DELETING"));
    // The owner tuple is gone with the deletion, so the update stops at
    // the permission check.
    let error = w
        .llm
        .update_provider(
            &alice,
            &provider.id,
            &ProviderUpdate {
                name: Some("R"),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
}

async fn scripted_provider_rules(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let org = w.org(&alice, "Acme").await;
    let script = hello_script();
    let base = NewProvider {
        organization_id: &org,
        name: "Scripted",
        protocol: Protocol::PROTOCOL_ANTHROPIC_MESSAGES,
        script: Some(&script),
        ..Default::default()
    };
    let one_header = headers(&[("x-a", "v")]);
    let cases: Vec<(NewProvider, &str)> = vec![
        (
            NewProvider {
                endpoint: ENDPOINT,
                ..base
            },
            "endpoint: must be empty for a scripted provider",
        ),
        (
            NewProvider {
                auth_method: AuthMethod::AUTH_METHOD_BEARER,
                ..base
            },
            "auth_method: must be AUTH_METHOD_UNSPECIFIED for a scripted provider",
        ),
        (
            NewProvider { token: "t", ..base },
            "token: must be empty for a scripted provider",
        ),
        (
            NewProvider {
                headers: &one_header,
                ..base
            },
            "headers: must be empty for a scripted provider",
        ),
    ];
    for (input, message) in cases {
        assert_error(
            w.llm.create_provider(&alice, &input).await,
            Code::InvalidArgument,
            message,
        );
    }
    let empty = Script::default();
    let error = w
        .llm
        .create_provider(
            &alice,
            &NewProvider {
                script: Some(&empty),
                ..base
            },
        )
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(error.message().starts_with("script."), "{error}");

    let scripted = w.llm.create_provider(&alice, &base).await.unwrap();
    assert_eq!(scripted.auth_method, AuthMethod::AUTH_METHOD_UNSPECIFIED);
    assert_eq!(scripted.protocol, Protocol::PROTOCOL_ANTHROPIC_MESSAGES);
    assert_eq!(scripted.endpoint, "");
    assert!(!scripted.has_token);
    assert_eq!(scripted.script.as_ref(), Some(&script));
    let read = w.llm.get_provider(&alice, &scripted.id).await.unwrap();
    assert_eq!(read.script.as_ref(), Some(&script));

    let model = w.model(&alice, &org, &scripted.id, "scripted-model").await;
    let resolved = w.llm.resolve_model(&model.id).await.unwrap();
    assert!(matches!(resolved.credential, Credential::None));
    assert_eq!(resolved.endpoint, "");
    assert_eq!(resolved.script.as_ref(), Some(&script));

    // A scripted provider stays scripted.
    for (update, message) in [
        (
            ProviderUpdate {
                endpoint: Some(ENDPOINT),
                ..Default::default()
            },
            "endpoint: must be empty for a scripted provider",
        ),
        (
            ProviderUpdate {
                auth_method: Some(AuthMethod::AUTH_METHOD_X_API_KEY),
                token: Some("t"),
                ..Default::default()
            },
            "auth_method: must be AUTH_METHOD_UNSPECIFIED for a scripted provider",
        ),
        (
            ProviderUpdate {
                token: Some("t"),
                ..Default::default()
            },
            "token: must be empty for a scripted provider",
        ),
    ] {
        assert_error(
            w.llm.update_provider(&alice, &scripted.id, &update).await,
            Code::InvalidArgument,
            message,
        );
    }
    let mut replacement = hello_script();
    replacement.rules[0].when_input_contains = "bye".into();
    let updated = w
        .llm
        .update_provider(
            &alice,
            &scripted.id,
            &ProviderUpdate {
                script: Some(&replacement),
                auth_method: Some(AuthMethod::AUTH_METHOD_UNSPECIFIED),
                protocol: Some(Protocol::PROTOCOL_RESPONSES),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.script.as_ref(), Some(&replacement));
    assert_eq!(updated.protocol, Protocol::PROTOCOL_RESPONSES);

    // A networked provider never becomes scripted.
    let networked = w.bearer_provider(&alice, &org, "Net", ENDPOINT, "t").await;
    assert_error(
        w.llm
            .update_provider(
                &alice,
                &networked.id,
                &ProviderUpdate {
                    script: Some(&script),
                    ..Default::default()
                },
            )
            .await,
        Code::InvalidArgument,
        "script: only a scripted provider takes a script; a provider cannot change between \
         scripted and networked, so create a new provider instead",
    );
}

on_both_backends!(
    provider_defaults,
    provider_field_validation,
    provider_credentials_on_create,
    provider_update_credentials,
    provider_names_unique,
    provider_delete_guard,
    provider_delete_guard_lists_ten,
    provider_create_idempotent,
    provider_pages,
    provider_permissions,
    provider_writes_need_active_org,
    scripted_provider_rules,
);
