//! TestModel against upstream servers on loopback, for each protocol, and
//! the ResolveModel rules.

use agyn_api_llm::agynio::api::llm::v1::{self as pb, AuthMethod, Protocol};
use agyn_core::Caller;
use agyn_core::error::Code;
use agyn_llm::service::LlmRpc;
use agyn_llm::{NewProvider, TEST_PROMPT};
use agyn_store::{Backend, on_both_backends};
use http::StatusCode;
use serde_json::json;

use crate::call;
use crate::common::{Behaviour, Upstream, World, assert_error, code_of, headers, refused_url};
use crate::providers::hello_script;

async fn test_model_responses(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let bob = w.user("bob").await;
    let org = w.org(&alice, "Acme").await;
    w.join(&org, &alice, &bob).await;
    let upstream = Upstream::replying(json!({
        "id": "resp_1",
        "output": [{ "type": "message", "content": [
            { "type": "output_text", "text": "Hi " },
            { "type": "output_text", "text": "there" },
        ]}],
    }))
    .await;
    let provider = w
        .bearer_provider(&alice, &org, "OpenAI", &upstream.url, "sk-test-1")
        .await;
    let model = w.model(&alice, &org, &provider.id, "gpt-5").await;

    // Any member may test: can_use comes from the organization.
    let started = std::time::Instant::now();
    let output = w.llm.test_model(&bob, &model.id).await.unwrap();
    assert_eq!(output.output_text, "Hi there");
    assert!(output.duration <= started.elapsed());

    let request = upstream.only_request();
    assert_eq!(request.uri.path(), "/v1/responses");
    assert_eq!(request.uri.query(), None);
    assert_eq!(request.headers["authorization"], "Bearer sk-test-1");
    assert_eq!(request.headers["content-type"], "application/json");
    assert!(request.headers.get("x-api-key").is_none());
    assert!(request.headers.get("anthropic-version").is_none());
    assert_eq!(
        request.body,
        json!({ "model": "gpt-5", "input": TEST_PROMPT })
    );
}

async fn test_model_chat_completions(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let org = w.org(&alice, "Acme").await;
    let upstream = Upstream::replying(json!({
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": "Hello!" } }],
    }))
    .await;
    let provider = w
        .provider(
            &alice,
            &org,
            &format!("{}/openai/v1/", upstream.url),
            Protocol::PROTOCOL_CHAT_COMPLETIONS,
            AuthMethod::AUTH_METHOD_X_API_KEY,
            "key-2",
            &[],
        )
        .await;
    let model = w.model(&alice, &org, &provider.id, "llama-3").await;

    let output = w.llm.test_model(&alice, &model.id).await.unwrap();
    assert_eq!(output.output_text, "Hello!");
    let request = upstream.only_request();
    assert_eq!(request.uri.path(), "/openai/v1/chat/completions");
    assert_eq!(request.headers["x-api-key"], "key-2");
    assert!(request.headers.get("authorization").is_none());
    assert_eq!(
        request.body,
        json!({
            "model": "llama-3",
            "messages": [{ "role": "user", "content": TEST_PROMPT }],
        })
    );
}

async fn test_model_anthropic_messages(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let org = w.org(&alice, "Acme").await;
    let reply = json!({
        "type": "message",
        "content": [
            { "type": "thinking", "thinking": "..." },
            { "type": "text", "text": "Hello" },
            { "type": "text", "text": ", world" },
        ],
    });

    // Without a custom anthropic-version, the service sends 2023-06-01.
    let plain = Upstream::replying(reply.clone()).await;
    let provider = w
        .provider(
            &alice,
            &org,
            &format!("{}/v1/messages", plain.url),
            Protocol::PROTOCOL_ANTHROPIC_MESSAGES,
            AuthMethod::AUTH_METHOD_X_API_KEY,
            "ant-key",
            &[],
        )
        .await;
    let model = w.model(&alice, &org, &provider.id, "claude-sonnet").await;
    let output = w.llm.test_model(&alice, &model.id).await.unwrap();
    assert_eq!(output.output_text, "Hello, world");
    let request = plain.only_request();
    assert_eq!(request.uri.path(), "/v1/messages");
    assert_eq!(request.headers["x-api-key"], "ant-key");
    assert_eq!(request.headers["anthropic-version"], "2023-06-01");
    assert_eq!(
        request.body,
        json!({
            "model": "claude-sonnet",
            "max_tokens": 256,
            "messages": [{ "role": "user", "content": TEST_PROMPT }],
        })
    );

    // Custom headers are sent verbatim, and their anthropic-version wins.
    let custom = Upstream::replying(reply).await;
    let provider = w
        .provider(
            &alice,
            &org,
            &custom.url,
            Protocol::PROTOCOL_ANTHROPIC_MESSAGES,
            AuthMethod::AUTH_METHOD_CUSTOM_HEADERS,
            "",
            &headers(&[
                ("Anthropic-Version", "2024-01-01"),
                ("X-Gateway-Key", "gw secret"),
                ("Authorization", "Basic abc"),
            ]),
        )
        .await;
    let model = w.model(&alice, &org, &provider.id, "claude-opus").await;
    let output = w.llm.test_model(&alice, &model.id).await.unwrap();
    assert_eq!(output.output_text, "Hello, world");
    let request = custom.only_request();
    assert_eq!(request.uri.path(), "/v1/messages");
    assert_eq!(request.headers["anthropic-version"], "2024-01-01");
    assert_eq!(
        request.headers.get_all("anthropic-version").iter().count(),
        1
    );
    assert_eq!(request.headers["x-gateway-key"], "gw secret");
    assert_eq!(request.headers["authorization"], "Basic abc");
}

async fn test_model_upstream_error(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let org = w.org(&alice, "Acme").await;
    let body = format!("{{\"error\":\"{}\"}}", "e".repeat(700));
    let upstream = Upstream::start(Behaviour::Reply(
        StatusCode::INTERNAL_SERVER_ERROR,
        body.clone(),
    ))
    .await;
    let provider = w
        .bearer_provider(&alice, &org, "P", &upstream.url, "sk-1")
        .await;
    let model = w.model(&alice, &org, &provider.id, "gpt-5").await;
    assert_error(
        w.llm.test_model(&alice, &model.id).await,
        Code::FailedPrecondition,
        &format!("provider returned HTTP 500: {}", &body[..512]),
    );

    // A 2xx reply without text is a failure too, never an empty success.
    let empty = Upstream::replying(json!({ "output": [] })).await;
    let provider = w
        .bearer_provider(&alice, &org, "Q", &empty.url, "sk-1")
        .await;
    let model = w.model(&alice, &org, &provider.id, "gpt-5").await;
    assert_error(
        w.llm.test_model(&alice, &model.id).await,
        Code::FailedPrecondition,
        "provider response contains no output text: {\"output\":[]}",
    );
}

async fn test_model_unreachable(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let org = w.org(&alice, "Acme").await;

    let provider = w
        .bearer_provider(&alice, &org, "Refused", &refused_url(), "sk-1")
        .await;
    let model = w.model(&alice, &org, &provider.id, "gpt-5").await;
    let error = w.llm.test_model(&alice, &model.id).await.unwrap_err();
    assert_eq!(error.code(), Code::Unavailable, "{error}");
    assert!(
        error.message().starts_with("provider unreachable: "),
        "{error}"
    );
    assert!(error.message().contains("onnect"), "{error}");

    let hanging = Upstream::start(Behaviour::Hang).await;
    let provider = w
        .bearer_provider(&alice, &org, "Hanging", &hanging.url, "sk-1")
        .await;
    let model = w.model(&alice, &org, &provider.id, "gpt-5").await;
    let started = std::time::Instant::now();
    let error = w.llm.test_model(&alice, &model.id).await.unwrap_err();
    assert_eq!(error.code(), Code::Unavailable, "{error}");
    assert_eq!(
        error.message(),
        format!(
            "provider unreachable: timed out after {:?}",
            crate::common::TEST_TIMEOUT
        )
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    hanging.only_request();
}

async fn test_model_permissions(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let eve = w.user("eve").await;
    let org = w.org(&alice, "Acme").await;
    let upstream = Upstream::replying(json!({ "output_text": "unused" })).await;
    let provider = w
        .bearer_provider(&alice, &org, "P", &upstream.url, "sk-1")
        .await;
    let model = w.model(&alice, &org, &provider.id, "gpt-5").await;
    assert_error(
        w.llm.test_model(&eve, &model.id).await,
        Code::PermissionDenied,
        "permission denied: can_use on model",
    );
    let unknown = agyn_core::id::new_id();
    assert_error(
        w.llm.test_model(&alice, &unknown).await,
        Code::NotFound,
        &format!("model {unknown} not found"),
    );
    assert_error(
        w.llm.test_model(&alice, "x").await,
        Code::InvalidArgument,
        "model_id: must be a UUID",
    );
    // Nothing reached the provider.
    assert!(upstream.requests().is_empty());
}

async fn test_model_scripted(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let org = w.org(&alice, "Acme").await;
    let script = hello_script();
    for protocol in [
        Protocol::PROTOCOL_RESPONSES,
        Protocol::PROTOCOL_CHAT_COMPLETIONS,
        Protocol::PROTOCOL_ANTHROPIC_MESSAGES,
    ] {
        let provider = w
            .llm
            .create_provider(
                &alice,
                &NewProvider {
                    organization_id: &org,
                    name: &format!("Scripted {protocol:?}"),
                    protocol,
                    script: Some(&script),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let model = w.model(&alice, &org, &provider.id, "scripted").await;
        let output = w.llm.test_model(&alice, &model.id).await.unwrap();
        assert_eq!(output.output_text, "Hello from the script", "{protocol:?}");
    }
}

async fn resolve_model_rules(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let org = w.org(&alice, "Acme").await;
    let provider = w
        .bearer_provider(
            &alice,
            &org,
            "P",
            "https://api.example.com/v1",
            "sk-resolve",
        )
        .await;
    let model = w.model(&alice, &org, &provider.id, "gpt-5").await;

    let resolved = w.llm.resolve_model(&model.id.to_uppercase()).await.unwrap();
    assert_eq!(resolved.model_id, model.id);
    assert_eq!(resolved.organization_id, org);
    assert_eq!(resolved.provider_id, provider.id);
    assert_eq!(resolved.endpoint, "https://api.example.com/v1");
    assert_eq!(resolved.protocol, Protocol::PROTOCOL_RESPONSES);
    assert_eq!(resolved.remote_name, "gpt-5");
    assert!(resolved.script.is_none());
    let injected = resolved.credential.headers();
    assert_eq!(injected.len(), 1);
    assert_eq!(injected[0].0, "authorization");
    assert_eq!(injected[0].1, "Bearer sk-resolve");
    assert!(injected[0].1.is_sensitive());

    let unknown = agyn_core::id::new_id();
    for id in [unknown.as_str(), "not-a-uuid", ""] {
        assert_error(
            w.llm.resolve_model(id).await,
            Code::NotFound,
            &format!("model {id} not found"),
        );
    }

    // The RPC returns the decrypted credential to components only.
    let rpc = LlmRpc::new(w.llm.clone());
    let request = || pb::ResolveModelRequest {
        model_id: model.id.clone(),
        ..Default::default()
    };
    let gateway = Caller::Component("gateway");
    let response = call!(rpc, pb::LlmService, resolve_model, &gateway, request()).unwrap();
    assert_eq!(response["token"], "sk-resolve");
    assert_eq!(response["authMethod"], "AUTH_METHOD_BEARER");
    assert_eq!(response["protocol"], "PROTOCOL_RESPONSES");
    assert_eq!(response["remoteName"], "gpt-5");
    assert_eq!(response["organizationId"], org.as_str());
    assert_eq!(response["providerId"], provider.id.as_str());
    let denied = call!(rpc, pb::LlmService, resolve_model, &alice, request());
    assert_eq!(code_of(&denied), connectrpc::ErrorCode::PermissionDenied);
    let cleanup = call!(
        rpc,
        pb::LlmService,
        delete_organization_resources,
        &alice,
        pb::DeleteOrganizationResourcesRequest {
            organization_id: org.clone(),
            ..Default::default()
        }
    );
    assert_eq!(code_of(&cleanup), connectrpc::ErrorCode::PermissionDenied);
    w.llm.resolve_model(&model.id).await.unwrap();
}

async fn resolve_custom_headers(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let org = w.org(&alice, "Acme").await;
    let provider = w
        .provider(
            &alice,
            &org,
            "https://gw.example.com",
            Protocol::PROTOCOL_CHAT_COMPLETIONS,
            AuthMethod::AUTH_METHOD_CUSTOM_HEADERS,
            "",
            &headers(&[("X-Tenant", "t-1"), ("Api-Key", "k-1")]),
        )
        .await;
    let model = w.model(&alice, &org, &provider.id, "m").await;
    let rpc = LlmRpc::new(w.llm.clone());
    let response = call!(
        rpc,
        pb::LlmService,
        resolve_model,
        &Caller::Component("gateway"),
        pb::ResolveModelRequest {
            model_id: model.id.clone(),
            ..Default::default()
        }
    )
    .unwrap();
    assert_eq!(response["authMethod"], "AUTH_METHOD_CUSTOM_HEADERS");
    assert_eq!(response["token"], "");
    assert_eq!(
        response["headers"],
        json!({ "x-tenant": "t-1", "api-key": "k-1" })
    );
}

on_both_backends!(
    test_model_responses,
    test_model_chat_completions,
    test_model_anthropic_messages,
    test_model_upstream_error,
    test_model_unreachable,
    test_model_permissions,
    test_model_scripted,
    resolve_model_rules,
    resolve_custom_headers,
);
