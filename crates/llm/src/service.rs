//! `LLMService` (internal) and `LLMGateway` (public) over [`Llm`].
//!
//! The gateway methods dispatch to the internal service unchanged, with
//! the caller the gateway attached to the request. ResolveModel and
//! DeleteOrganizationResources exist on the internal service only and
//! reject identity callers.

use agyn_api_llm::agynio::api::llm::v1 as pb;
use agyn_core::caller::request_caller;
use agyn_core::time::timestamp;
use agyn_core::{Caller, Error};
use buffa::EnumValue;
use connectrpc::{ConnectError, RequestContext, Response, ServiceRequest, ServiceResult};

use crate::resolve::{Credential, ResolvedModel};
use crate::store::{ModelRecord, ProviderRecord};
use crate::{Llm, ModelUpdate, NewModel, NewProvider, ProviderUpdate};

/// The internal `LLMService`.
#[derive(Clone)]
pub struct LlmRpc {
    llm: Llm,
}

impl LlmRpc {
    pub fn new(llm: Llm) -> Self {
        Self { llm }
    }
}

/// Succeeds for platform components and rejects identities, for the
/// methods that only the platform may call.
fn require_component(ctx: &RequestContext, action: &str) -> Result<(), ConnectError> {
    match request_caller(ctx)? {
        Caller::Component(_) => Ok(()),
        Caller::Identity { .. } => Err(Error::permission_denied(format!(
            "permission denied: only platform components may {action}"
        ))
        .into()),
    }
}

fn meta(id: &str, created_at: i64, updated_at: i64) -> pb::EntityMeta {
    pb::EntityMeta {
        id: id.to_string(),
        created_at: timestamp(created_at).into(),
        updated_at: timestamp(updated_at).into(),
        ..Default::default()
    }
}

/// Converts a provider for a read. The record carries no credential, so
/// neither does the message.
pub fn provider_to_proto(provider: &ProviderRecord) -> pb::Provider {
    pb::Provider {
        meta: meta(&provider.id, provider.created_at, provider.updated_at).into(),
        organization_id: provider.organization_id.clone(),
        name: provider.name.clone(),
        endpoint: provider.endpoint.clone(),
        protocol: provider.protocol.into(),
        auth_method: provider.auth_method.into(),
        header_names: provider.header_names.clone(),
        has_token: provider.has_token,
        script: provider.script.clone().into(),
        ..Default::default()
    }
}

pub fn model_to_proto(model: &ModelRecord) -> pb::Model {
    pb::Model {
        meta: meta(&model.id, model.created_at, model.updated_at).into(),
        organization_id: model.organization_id.clone(),
        name: model.name.clone(),
        provider_id: model.provider_id.clone(),
        remote_name: model.remote_name.clone(),
        protocol: model.protocol.into(),
        ..Default::default()
    }
}

/// Converts a resolved model for the LLM proxy, with decrypted values.
pub fn resolved_to_proto(resolved: &ResolvedModel) -> pb::ResolveModelResponse {
    let (token, headers) = match &resolved.credential {
        Credential::None => (String::new(), Default::default()),
        Credential::Bearer(token) | Credential::ApiKey(token) => {
            (token.expose().clone(), Default::default())
        }
        Credential::Headers(headers) => (
            String::new(),
            headers
                .iter()
                .map(|(name, value)| (name.clone(), value.expose().clone()))
                .collect(),
        ),
    };
    pb::ResolveModelResponse {
        endpoint: resolved.endpoint.clone(),
        protocol: resolved.protocol.into(),
        auth_method: resolved.credential.auth_method().into(),
        token,
        headers,
        remote_name: resolved.remote_name.clone(),
        organization_id: resolved.organization_id.clone(),
        provider_id: resolved.provider_id.clone(),
        script: resolved.script.clone().into(),
        ..Default::default()
    }
}

fn known_protocol(value: &EnumValue<pb::Protocol>) -> Result<pb::Protocol, Error> {
    value.as_known().ok_or_else(|| {
        Error::invalid_field("protocol", &format!("unknown protocol {}", value.to_i32()))
    })
}

fn known_auth_method(value: &EnumValue<pb::AuthMethod>) -> Result<pb::AuthMethod, Error> {
    value.as_known().ok_or_else(|| {
        Error::invalid_field(
            "auth_method",
            &format!("unknown auth method {}", value.to_i32()),
        )
    })
}

/// Returns a request's header map as pairs sorted by name, so that
/// validation errors name the same header on every call.
fn header_entries<'a>(
    entries: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = entries
        .into_iter()
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    pairs.sort();
    pairs
}

impl pb::LlmService for LlmRpc {
    async fn create_provider(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::CreateProviderRequest>,
    ) -> ServiceResult<pb::CreateProviderResponse> {
        let request = request.to_owned_message();
        let headers = header_entries(&request.headers);
        let input = NewProvider {
            organization_id: &request.organization_id,
            name: &request.name,
            endpoint: &request.endpoint,
            protocol: known_protocol(&request.protocol)?,
            auth_method: known_auth_method(&request.auth_method)?,
            token: &request.token,
            headers: &headers,
            script: request.script.as_option(),
            request_id: &request.request_id,
        };
        let provider = self
            .llm
            .create_provider(request_caller(&ctx)?, &input)
            .await?;
        Response::ok(pb::CreateProviderResponse {
            provider: provider_to_proto(&provider).into(),
            ..Default::default()
        })
    }

    async fn get_provider(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetProviderRequest>,
    ) -> ServiceResult<pb::GetProviderResponse> {
        let provider = self
            .llm
            .get_provider(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::GetProviderResponse {
            provider: provider_to_proto(&provider).into(),
            ..Default::default()
        })
    }

    async fn list_providers(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListProvidersRequest>,
    ) -> ServiceResult<pb::ListProvidersResponse> {
        let (providers, next_page_token) = self
            .llm
            .list_providers(
                request_caller(&ctx)?,
                request.organization_id,
                request.page_size,
                request.page_token,
            )
            .await?;
        Response::ok(pb::ListProvidersResponse {
            providers: providers.iter().map(provider_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn update_provider(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::UpdateProviderRequest>,
    ) -> ServiceResult<pb::UpdateProviderResponse> {
        let request = request.to_owned_message();
        let headers = request
            .headers
            .as_option()
            .map(|headers| header_entries(&headers.entries));
        let update = ProviderUpdate {
            name: request.name.as_deref(),
            endpoint: request.endpoint.as_deref(),
            protocol: request.protocol.as_ref().map(known_protocol).transpose()?,
            auth_method: request
                .auth_method
                .as_ref()
                .map(known_auth_method)
                .transpose()?,
            token: request.token.as_deref(),
            headers: headers.as_deref(),
            script: request.script.as_option(),
        };
        let provider = self
            .llm
            .update_provider(request_caller(&ctx)?, &request.id, &update)
            .await?;
        Response::ok(pb::UpdateProviderResponse {
            provider: provider_to_proto(&provider).into(),
            ..Default::default()
        })
    }

    async fn delete_provider(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::DeleteProviderRequest>,
    ) -> ServiceResult<pb::DeleteProviderResponse> {
        self.llm
            .delete_provider(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::DeleteProviderResponse::default())
    }

    async fn create_model(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::CreateModelRequest>,
    ) -> ServiceResult<pb::CreateModelResponse> {
        let input = NewModel {
            organization_id: request.organization_id,
            name: request.name,
            provider_id: request.provider_id,
            remote_name: request.remote_name,
            request_id: request.request_id,
        };
        let model = self.llm.create_model(request_caller(&ctx)?, &input).await?;
        Response::ok(pb::CreateModelResponse {
            model: model_to_proto(&model).into(),
            ..Default::default()
        })
    }

    async fn get_model(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetModelRequest>,
    ) -> ServiceResult<pb::GetModelResponse> {
        let model = self
            .llm
            .get_model(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::GetModelResponse {
            model: model_to_proto(&model).into(),
            ..Default::default()
        })
    }

    async fn list_models(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListModelsRequest>,
    ) -> ServiceResult<pb::ListModelsResponse> {
        let (models, next_page_token) = self
            .llm
            .list_models(
                request_caller(&ctx)?,
                request.organization_id,
                request.provider_id,
                request.page_size,
                request.page_token,
            )
            .await?;
        Response::ok(pb::ListModelsResponse {
            models: models.iter().map(model_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn update_model(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::UpdateModelRequest>,
    ) -> ServiceResult<pb::UpdateModelResponse> {
        let update = ModelUpdate {
            name: request.name,
            provider_id: request.provider_id,
            remote_name: request.remote_name,
        };
        let model = self
            .llm
            .update_model(request_caller(&ctx)?, request.id, &update)
            .await?;
        Response::ok(pb::UpdateModelResponse {
            model: model_to_proto(&model).into(),
            ..Default::default()
        })
    }

    async fn delete_model(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::DeleteModelRequest>,
    ) -> ServiceResult<pb::DeleteModelResponse> {
        self.llm
            .delete_model(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::DeleteModelResponse::default())
    }

    async fn test_model(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::TestModelRequest>,
    ) -> ServiceResult<pb::TestModelResponse> {
        let output = self
            .llm
            .test_model(request_caller(&ctx)?, request.model_id)
            .await?;
        Response::ok(pb::TestModelResponse {
            output_text: output.output_text,
            duration: buffa_types::google::protobuf::Duration::from(output.duration).into(),
            ..Default::default()
        })
    }

    async fn resolve_model(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ResolveModelRequest>,
    ) -> ServiceResult<pb::ResolveModelResponse> {
        require_component(&ctx, "resolve models")?;
        let resolved = self.llm.resolve_model(request.model_id).await?;
        Response::ok(resolved_to_proto(&resolved))
    }

    async fn delete_organization_resources(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::DeleteOrganizationResourcesRequest>,
    ) -> ServiceResult<pb::DeleteOrganizationResourcesResponse> {
        require_component(&ctx, "delete organization resources")?;
        self.llm
            .delete_organization_resources(request.organization_id)
            .await?;
        Response::ok(pb::DeleteOrganizationResourcesResponse::default())
    }
}

/// The public `LLMGateway`: every method dispatches to [`LlmRpc`].
#[derive(Clone)]
pub struct LlmGatewayRpc {
    inner: LlmRpc,
}

impl LlmGatewayRpc {
    pub fn new(llm: Llm) -> Self {
        Self {
            inner: LlmRpc::new(llm),
        }
    }
}

macro_rules! dispatch {
    ($($method:ident($request:ty) -> $response:ty;)*) => {
        $(
            async fn $method(
                &self,
                ctx: RequestContext,
                request: ServiceRequest<'_, $request>,
            ) -> ServiceResult<$response> {
                pb::LlmService::$method(&self.inner, ctx, request).await
            }
        )*
    };
}

impl pb::LlmGateway for LlmGatewayRpc {
    dispatch! {
        create_provider(pb::CreateProviderRequest) -> pb::CreateProviderResponse;
        get_provider(pb::GetProviderRequest) -> pb::GetProviderResponse;
        list_providers(pb::ListProvidersRequest) -> pb::ListProvidersResponse;
        update_provider(pb::UpdateProviderRequest) -> pb::UpdateProviderResponse;
        delete_provider(pb::DeleteProviderRequest) -> pb::DeleteProviderResponse;
        create_model(pb::CreateModelRequest) -> pb::CreateModelResponse;
        get_model(pb::GetModelRequest) -> pb::GetModelResponse;
        list_models(pb::ListModelsRequest) -> pb::ListModelsResponse;
        update_model(pb::UpdateModelRequest) -> pb::UpdateModelResponse;
        delete_model(pb::DeleteModelRequest) -> pb::DeleteModelResponse;
        test_model(pb::TestModelRequest) -> pb::TestModelResponse;
    }
}
