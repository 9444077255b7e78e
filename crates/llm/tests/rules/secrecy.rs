//! Credentials stay secret: no response, error or log line contains a
//! token or header value, and the database stores only ciphertext bound to
//! its row.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use agyn_api_llm::agynio::api::llm::v1::{self as pb, AuthMethod, Protocol};
use agyn_core::error::Code;
use agyn_llm::service::LlmGatewayRpc;
use agyn_llm::{NewProvider, ProviderUpdate};
use agyn_store::{Backend, on_both_backends};
use base64::Engine as _;
use http::StatusCode;
use serde_json::json;

use crate::call;
use crate::common::{Behaviour, Upstream, World, headers};

const TOKEN_CANARY: &str = "sk-canary-3f9a1c7e";
const HEADER_CANARY: &str = "hdr-canary-8b2d4e6f";

/// Asserts that no canary appears in `text`.
#[track_caller]
fn assert_clean(text: &str) {
    assert!(!text.contains(TOKEN_CANARY), "token leaked: {text}");
    assert!(!text.contains(HEADER_CANARY), "header value leaked: {text}");
}

async fn reads_never_return_credentials(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let org = w.org(&alice, "Acme").await;
    let gateway = LlmGatewayRpc::new(w.llm.clone());
    let mut responses = Vec::new();

    let created = call!(
        gateway,
        pb::LlmGateway,
        create_provider,
        &alice,
        pb::CreateProviderRequest {
            organization_id: org.clone(),
            name: "Bearer".into(),
            endpoint: "https://api.example.com".into(),
            token: TOKEN_CANARY.into(),
            ..Default::default()
        }
    )
    .unwrap();
    assert_eq!(created["provider"]["hasToken"], true);
    assert_eq!(created["provider"]["authMethod"], "AUTH_METHOD_BEARER");
    let bearer_id = created["provider"]["meta"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    responses.push(created);

    let custom = call!(
        gateway,
        pb::LlmGateway,
        create_provider,
        &alice,
        pb::CreateProviderRequest {
            organization_id: org.clone(),
            name: "Custom".into(),
            endpoint: "https://gw.example.com".into(),
            auth_method: AuthMethod::AUTH_METHOD_CUSTOM_HEADERS.into(),
            headers: [("X-Secret".to_string(), HEADER_CANARY.to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        }
    )
    .unwrap();
    assert_eq!(custom["provider"]["hasToken"], false);
    assert_eq!(custom["provider"]["headerNames"], json!(["x-secret"]));
    let custom_id = custom["provider"]["meta"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    responses.push(custom);

    for id in [&bearer_id, &custom_id] {
        responses.push(
            call!(
                gateway,
                pb::LlmGateway,
                get_provider,
                &alice,
                pb::GetProviderRequest {
                    id: id.clone(),
                    ..Default::default()
                }
            )
            .unwrap(),
        );
    }
    let listed = call!(
        gateway,
        pb::LlmGateway,
        list_providers,
        &alice,
        pb::ListProvidersRequest {
            organization_id: org.clone(),
            ..Default::default()
        }
    )
    .unwrap();
    assert_eq!(listed["providers"].as_array().unwrap().len(), 2);
    responses.push(listed);
    responses.push(
        call!(
            gateway,
            pb::LlmGateway,
            update_provider,
            &alice,
            pb::UpdateProviderRequest {
                id: bearer_id.clone(),
                token: Some(format!("{TOKEN_CANARY}-2")),
                ..Default::default()
            }
        )
        .unwrap(),
    );
    let model = call!(
        gateway,
        pb::LlmGateway,
        create_model,
        &alice,
        pb::CreateModelRequest {
            organization_id: org.clone(),
            name: "M".into(),
            provider_id: custom_id.clone(),
            remote_name: "m".into(),
            ..Default::default()
        }
    )
    .unwrap();
    assert_eq!(model["model"]["protocol"], "PROTOCOL_RESPONSES");
    responses.push(model);
    responses.push(
        call!(
            gateway,
            pb::LlmGateway,
            list_models,
            &alice,
            pb::ListModelsRequest {
                organization_id: org.clone(),
                ..Default::default()
            }
        )
        .unwrap(),
    );
    for response in &responses {
        assert_clean(&response.to_string());
    }

    // Errors that concern a credential never quote it.
    let rejected = call!(
        gateway,
        pb::LlmGateway,
        update_provider,
        &alice,
        pb::UpdateProviderRequest {
            id: custom_id.clone(),
            token: Some(TOKEN_CANARY.into()),
            headers: pb::StringMap {
                entries: [("x-secret".to_string(), format!("{HEADER_CANARY}\n"))]
                    .into_iter()
                    .collect(),
                ..Default::default()
            }
            .into(),
            ..Default::default()
        }
    )
    .unwrap_err();
    assert_eq!(rejected.code, connectrpc::ErrorCode::InvalidArgument);
    assert_clean(&format!("{rejected:?}"));
    let rejected = w
        .llm
        .update_provider(
            &alice,
            &custom_id,
            &ProviderUpdate {
                headers: Some(&headers(&[("x-secret", &format!("{HEADER_CANARY}\0"))])),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_clean(&format!("{rejected:?}"));
}

async fn upstream_echo_is_redacted(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let org = w.org(&alice, "Acme").await;
    let upstream = Upstream::start(Behaviour::Reply(
        StatusCode::UNAUTHORIZED,
        format!("{{\"error\":\"invalid key {TOKEN_CANARY}\"}}"),
    ))
    .await;
    let provider = w
        .bearer_provider(&alice, &org, "P", &upstream.url, TOKEN_CANARY)
        .await;
    let model = w.model(&alice, &org, &provider.id, "gpt-5").await;
    let error = w.llm.test_model(&alice, &model.id).await.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(
        error.message(),
        "provider returned HTTP 401: {\"error\":\"invalid key [redacted]\"}"
    );
    // The provider did receive the credential.
    assert_eq!(
        upstream.only_request().headers["authorization"],
        format!("Bearer {TOKEN_CANARY}")
    );
}

async fn credentials_sealed_at_rest(backend: Backend) {
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let org = w.org(&alice, "Acme").await;
    let bearer = w
        .llm
        .create_provider(
            &alice,
            &NewProvider {
                organization_id: &org,
                name: "Bearer",
                endpoint: "https://api.example.com",
                token: TOKEN_CANARY,
                request_id: "sealed-1",
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let custom = w
        .provider(
            &alice,
            &org,
            "https://gw.example.com",
            Protocol::PROTOCOL_RESPONSES,
            AuthMethod::AUTH_METHOD_CUSTOM_HEADERS,
            "",
            &headers(&[("x-secret", HEADER_CANARY)]),
        )
        .await;

    let rows: Vec<(String, Option<String>, Option<String>, String)> = agyn_store::sqlx::query_as(
        "SELECT id, sealed_token, sealed_headers, header_names FROM llm_providers \
             ORDER BY created_at, id",
    )
    .fetch_all(w.db.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    for (id, sealed_token, sealed_headers, header_names) in &rows {
        assert_clean(header_names);
        for sealed in [sealed_token, sealed_headers].into_iter().flatten() {
            assert_clean(sealed);
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(sealed)
                .unwrap();
            assert_eq!(bytes[0], 1, "sealed value version of {id}");
            assert_clean(&String::from_utf8_lossy(&bytes));
        }
    }
    assert!(rows[0].1.is_some(), "bearer provider has a sealed token");
    assert!(rows[0].2.is_none(), "bearer provider has no sealed headers");
    assert!(
        rows[1].1.is_none(),
        "custom headers provider has no sealed token"
    );
    assert!(
        rows[1].2.is_some(),
        "custom headers provider has sealed headers"
    );
    assert_eq!(rows[1].3, r#"["x-secret"]"#);
    let keys: Vec<(String,)> =
        agyn_store::sqlx::query_as("SELECT fingerprint FROM idempotency_keys")
            .fetch_all(w.db.pool())
            .await
            .unwrap();
    assert_eq!(keys.len(), 1);
    assert_clean(&keys[0].0);

    // A sealed token copied to another row does not open there.
    let other = w
        .bearer_provider(&alice, &org, "Other", "https://api.example.com", "sk-other")
        .await;
    let model = w.model(&alice, &org, &other.id, "gpt-5").await;
    assert!(w.llm.resolve_model(&model.id).await.is_ok());
    agyn_store::sqlx::query("UPDATE llm_providers SET sealed_token = $1 WHERE id = $2")
        .bind(rows[0].1.as_deref())
        .bind(&other.id)
        .execute(w.db.pool())
        .await
        .unwrap();
    let error = w.llm.resolve_model(&model.id).await.unwrap_err();
    assert_eq!(error.code(), Code::Internal);
    assert_clean(&format!("{error:?}"));
    // The original row still opens.
    let bearer_model = w.model(&alice, &org, &bearer.id, "gpt-5").await;
    assert!(w.llm.resolve_model(&bearer_model.id).await.is_ok());
    let custom_model = w.model(&alice, &org, &custom.id, "gpt-5").await;
    assert!(w.llm.resolve_model(&custom_model.id).await.is_ok());
}

/// Log output of the whole test binary, captured at trace level.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: Arc<Mutex<Vec<u8>>> = Arc::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .try_init()
            .expect("no other test installs a subscriber");
        logs
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn logs_never_contain_credentials(backend: Backend) {
    let logs = captured_logs();
    let w = World::new(backend).await;
    let alice = w.user("alice").await;
    let org = w.org(&alice, "Acme").await;
    let upstream = Upstream::replying(json!({ "output_text": "ok" })).await;
    let bearer = w
        .bearer_provider(&alice, &org, "Bearer", &upstream.url, TOKEN_CANARY)
        .await;
    let custom = w
        .provider(
            &alice,
            &org,
            &upstream.url,
            Protocol::PROTOCOL_ANTHROPIC_MESSAGES,
            AuthMethod::AUTH_METHOD_CUSTOM_HEADERS,
            "",
            &headers(&[("x-secret", HEADER_CANARY)]),
        )
        .await;
    w.llm
        .update_provider(
            &alice,
            &bearer.id,
            &ProviderUpdate {
                token: Some(TOKEN_CANARY),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let first = w.model(&alice, &org, &bearer.id, "gpt-5").await;
    let second = w.model(&alice, &org, &custom.id, "claude").await;
    for model in [&first, &second] {
        let resolved = w.llm.resolve_model(&model.id).await.unwrap();
        tracing::info!(credential = ?resolved.credential, "Resolved credential");
    }
    let output = w.llm.test_model(&alice, &first.id).await.unwrap();
    assert_eq!(output.output_text, "ok");
    // The upstream replies in the Responses shape, which has no Anthropic
    // text parts.
    let error = w.llm.test_model(&alice, &second.id).await.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition, "{error}");
    let unreachable_provider = w
        .llm
        .create_provider(
            &alice,
            &NewProvider {
                organization_id: &org,
                name: "Unreachable",
                endpoint: "http://127.0.0.1:9",
                token: TOKEN_CANARY,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let unreachable = w
        .model(&alice, &org, &unreachable_provider.id, "gpt-5")
        .await;
    let error = w.llm.test_model(&alice, &unreachable.id).await.unwrap_err();
    // Converting the error to a status logs it, as the server does.
    drop(connectrpc::ConnectError::from(error));

    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(text.contains("Provider created"), "logs were not captured");
    assert!(
        text.contains("Resolved credential"),
        "logs were not captured"
    );
    assert_clean(&text);
}

on_both_backends!(
    reads_never_return_credentials,
    upstream_echo_is_redacted,
    credentials_sealed_at_rest,
    logs_never_contain_credentials,
);
