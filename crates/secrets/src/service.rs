//! `SecretsService` (internal) and `SecretsGateway` (public) over
//! [`Secrets`].
//!
//! The gateway methods dispatch to the internal service unchanged, with
//! the caller the gateway attached to the request. Responses are built
//! from records, which hold no value, token or password, so the Vault
//! token of every provider reads back as "".

use agyn_api_secrets::agynio::api::secrets::v1 as pb;
use agyn_core::caller::request_caller;
use agyn_core::time::timestamp;
use agyn_core::{Error, Secret};
use connectrpc::{RequestContext, Response, ServiceRequest, ServiceResult};
use pb::__buffa::oneof::create_image_pull_secret_request::Source as ImagePullSource;
use pb::__buffa::oneof::create_secret_request::Source as SecretSource;
use pb::__buffa::oneof::secret_provider_config::Backend;

use crate::Secrets;
use crate::model::{
    ImagePullSecretChanges, ImagePullSecretRecord, NewImagePullSecret, NewSecret,
    NewSecretProvider, ProviderType, RemoteRef, SecretChanges, SecretProviderChanges,
    SecretProviderRecord, SecretRecord, Source, Storage, VaultSettings,
};

/// The internal `SecretsService`.
#[derive(Clone)]
pub struct SecretsRpc {
    secrets: Secrets,
}

impl SecretsRpc {
    pub fn new(secrets: Secrets) -> Self {
        Self { secrets }
    }
}

fn meta(
    id: &str,
    created_at: i64,
    updated_at: i64,
) -> buffa::MessageField<pb::EntityMeta, buffa::Inline<pb::EntityMeta>> {
    pb::EntityMeta {
        id: id.to_string(),
        created_at: timestamp(created_at).into(),
        updated_at: timestamp(updated_at).into(),
        ..Default::default()
    }
    .into()
}

/// Converts a provider, whose token is always "".
pub fn provider_to_proto(record: &SecretProviderRecord) -> pb::SecretProvider {
    let (provider_type, config) = match record.provider_type {
        ProviderType::Vault => (
            pb::SecretProviderType::SECRET_PROVIDER_TYPE_VAULT,
            pb::SecretProviderConfig {
                backend: Some(Backend::Vault(Box::new(pb::VaultConfig {
                    address: record.vault_address.clone(),
                    token: String::new(),
                    ..Default::default()
                }))),
                ..Default::default()
            },
        ),
    };
    pb::SecretProvider {
        meta: meta(&record.id, record.created_at, record.updated_at),
        organization_id: record.organization_id.clone(),
        name: record.name.clone(),
        description: record.description.clone(),
        provider_type: provider_type.into(),
        config: config.into(),
        ..Default::default()
    }
}

fn storage_to_proto(
    storage: &Storage,
) -> (
    buffa::EnumValue<pb::SecretStorage>,
    buffa::MessageField<pb::RemoteRef, buffa::Inline<pb::RemoteRef>>,
) {
    match storage {
        Storage::Local => (
            pb::SecretStorage::SECRET_STORAGE_LOCAL.into(),
            buffa::MessageField::none(),
        ),
        Storage::Remote(remote) => (
            pb::SecretStorage::SECRET_STORAGE_REMOTE.into(),
            pb::RemoteRef {
                secret_provider_id: remote.secret_provider_id.clone(),
                remote_name: remote.remote_name.clone(),
                ..Default::default()
            }
            .into(),
        ),
    }
}

/// Converts a secret, which carries no value.
pub fn secret_to_proto(record: &SecretRecord) -> pb::Secret {
    let (storage, remote) = storage_to_proto(&record.storage);
    pb::Secret {
        meta: meta(&record.id, record.created_at, record.updated_at),
        organization_id: record.organization_id.clone(),
        name: record.name.clone(),
        description: record.description.clone(),
        storage,
        remote,
        ..Default::default()
    }
}

/// Converts an image pull secret, which carries no password.
pub fn image_pull_secret_to_proto(record: &ImagePullSecretRecord) -> pb::ImagePullSecret {
    let (storage, remote) = storage_to_proto(&record.storage);
    pb::ImagePullSecret {
        meta: meta(&record.id, record.created_at, record.updated_at),
        organization_id: record.organization_id.clone(),
        description: record.description.clone(),
        registry: record.registry.clone(),
        username: record.username.clone(),
        storage,
        remote,
        ..Default::default()
    }
}

fn remote_from_proto(remote: &pb::RemoteRef) -> RemoteRef {
    RemoteRef {
        secret_provider_id: remote.secret_provider_id.clone(),
        remote_name: remote.remote_name.clone(),
    }
}

/// Reads a provider type. UNSPECIFIED is `None`, which create rejects.
fn provider_type_from_proto(
    value: &buffa::EnumValue<pb::SecretProviderType>,
) -> Result<Option<ProviderType>, Error> {
    match value.as_known() {
        Some(pb::SecretProviderType::SECRET_PROVIDER_TYPE_UNSPECIFIED) => Ok(None),
        Some(pb::SecretProviderType::SECRET_PROVIDER_TYPE_VAULT) => Ok(Some(ProviderType::Vault)),
        None => Err(Error::invalid_field(
            "provider_type",
            "unknown secret provider type",
        )),
    }
}

/// Takes the Vault branch of a config, moving its token into a
/// [`Secret`].
fn vault_from_proto(config: pb::SecretProviderConfig) -> Option<VaultSettings> {
    match config.backend {
        Some(Backend::Vault(vault)) => {
            let vault = *vault;
            Some(VaultSettings {
                address: vault.address,
                token: Secret::new(vault.token),
            })
        }
        None => None,
    }
}

impl pb::SecretsService for SecretsRpc {
    async fn create_secret_provider(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::CreateSecretProviderRequest>,
    ) -> ServiceResult<pb::CreateSecretProviderResponse> {
        let request = request.to_owned_message();
        let input = NewSecretProvider {
            provider_type: provider_type_from_proto(&request.provider_type)?,
            vault: request.config.into_option().and_then(vault_from_proto),
            organization_id: request.organization_id,
            name: request.name,
            description: request.description,
            request_id: request.request_id,
        };
        let record = self
            .secrets
            .create_secret_provider(request_caller(&ctx)?, &input)
            .await?;
        Response::ok(pb::CreateSecretProviderResponse {
            secret_provider: provider_to_proto(&record).into(),
            ..Default::default()
        })
    }

    async fn get_secret_provider(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetSecretProviderRequest>,
    ) -> ServiceResult<pb::GetSecretProviderResponse> {
        let record = self
            .secrets
            .get_secret_provider(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::GetSecretProviderResponse {
            secret_provider: provider_to_proto(&record).into(),
            ..Default::default()
        })
    }

    async fn list_secret_providers(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListSecretProvidersRequest>,
    ) -> ServiceResult<pb::ListSecretProvidersResponse> {
        let (records, next_page_token) = self
            .secrets
            .list_secret_providers(
                request_caller(&ctx)?,
                request.organization_id,
                request.page_size,
                request.page_token,
            )
            .await?;
        Response::ok(pb::ListSecretProvidersResponse {
            secret_providers: records.iter().map(provider_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn update_secret_provider(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::UpdateSecretProviderRequest>,
    ) -> ServiceResult<pb::UpdateSecretProviderResponse> {
        let request = request.to_owned_message();
        let changes = SecretProviderChanges {
            name: request.name,
            description: request.description,
            vault: request.config.into_option().map(vault_from_proto),
        };
        let record = self
            .secrets
            .update_secret_provider(request_caller(&ctx)?, &request.id, &changes)
            .await?;
        Response::ok(pb::UpdateSecretProviderResponse {
            secret_provider: provider_to_proto(&record).into(),
            ..Default::default()
        })
    }

    async fn delete_secret_provider(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::DeleteSecretProviderRequest>,
    ) -> ServiceResult<pb::DeleteSecretProviderResponse> {
        self.secrets
            .delete_secret_provider(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::DeleteSecretProviderResponse::default())
    }

    async fn create_secret(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::CreateSecretRequest>,
    ) -> ServiceResult<pb::CreateSecretResponse> {
        let request = request.to_owned_message();
        let input = NewSecret {
            organization_id: request.organization_id,
            name: request.name,
            description: request.description,
            source: request.source.map(|source| match source {
                SecretSource::Value(value) => Source::Value(Secret::new(value)),
                SecretSource::Remote(remote) => Source::Remote(remote_from_proto(&remote)),
            }),
            request_id: request.request_id,
        };
        let record = self
            .secrets
            .create_secret(request_caller(&ctx)?, &input)
            .await?;
        Response::ok(pb::CreateSecretResponse {
            secret: secret_to_proto(&record).into(),
            ..Default::default()
        })
    }

    async fn get_secret(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetSecretRequest>,
    ) -> ServiceResult<pb::GetSecretResponse> {
        let record = self
            .secrets
            .get_secret(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::GetSecretResponse {
            secret: secret_to_proto(&record).into(),
            ..Default::default()
        })
    }

    async fn list_secrets(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListSecretsRequest>,
    ) -> ServiceResult<pb::ListSecretsResponse> {
        let (records, next_page_token) = self
            .secrets
            .list_secrets(
                request_caller(&ctx)?,
                request.organization_id,
                request.secret_provider_id,
                request.page_size,
                request.page_token,
            )
            .await?;
        Response::ok(pb::ListSecretsResponse {
            secrets: records.iter().map(secret_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn update_secret(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::UpdateSecretRequest>,
    ) -> ServiceResult<pb::UpdateSecretResponse> {
        let request = request.to_owned_message();
        let changes = SecretChanges {
            name: request.name,
            description: request.description,
            value: request.value.map(Secret::new),
            remote: request.remote.as_option().map(remote_from_proto),
        };
        let record = self
            .secrets
            .update_secret(request_caller(&ctx)?, &request.id, &changes)
            .await?;
        Response::ok(pb::UpdateSecretResponse {
            secret: secret_to_proto(&record).into(),
            ..Default::default()
        })
    }

    async fn delete_secret(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::DeleteSecretRequest>,
    ) -> ServiceResult<pb::DeleteSecretResponse> {
        self.secrets
            .delete_secret(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::DeleteSecretResponse::default())
    }

    async fn create_image_pull_secret(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::CreateImagePullSecretRequest>,
    ) -> ServiceResult<pb::CreateImagePullSecretResponse> {
        let request = request.to_owned_message();
        let input = NewImagePullSecret {
            organization_id: request.organization_id,
            description: request.description,
            registry: request.registry,
            username: request.username,
            source: request.source.map(|source| match source {
                ImagePullSource::Value(value) => Source::Value(Secret::new(value)),
                ImagePullSource::Remote(remote) => Source::Remote(remote_from_proto(&remote)),
            }),
            request_id: request.request_id,
        };
        let record = self
            .secrets
            .create_image_pull_secret(request_caller(&ctx)?, &input)
            .await?;
        Response::ok(pb::CreateImagePullSecretResponse {
            image_pull_secret: image_pull_secret_to_proto(&record).into(),
            ..Default::default()
        })
    }

    async fn get_image_pull_secret(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetImagePullSecretRequest>,
    ) -> ServiceResult<pb::GetImagePullSecretResponse> {
        let record = self
            .secrets
            .get_image_pull_secret(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::GetImagePullSecretResponse {
            image_pull_secret: image_pull_secret_to_proto(&record).into(),
            ..Default::default()
        })
    }

    async fn list_image_pull_secrets(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListImagePullSecretsRequest>,
    ) -> ServiceResult<pb::ListImagePullSecretsResponse> {
        let (records, next_page_token) = self
            .secrets
            .list_image_pull_secrets(
                request_caller(&ctx)?,
                request.organization_id,
                request.page_size,
                request.page_token,
            )
            .await?;
        Response::ok(pb::ListImagePullSecretsResponse {
            image_pull_secrets: records.iter().map(image_pull_secret_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn update_image_pull_secret(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::UpdateImagePullSecretRequest>,
    ) -> ServiceResult<pb::UpdateImagePullSecretResponse> {
        let request = request.to_owned_message();
        let changes = ImagePullSecretChanges {
            description: request.description,
            registry: request.registry,
            username: request.username,
            value: request.value.map(Secret::new),
            remote: request.remote.as_option().map(remote_from_proto),
        };
        let record = self
            .secrets
            .update_image_pull_secret(request_caller(&ctx)?, &request.id, &changes)
            .await?;
        Response::ok(pb::UpdateImagePullSecretResponse {
            image_pull_secret: image_pull_secret_to_proto(&record).into(),
            ..Default::default()
        })
    }

    async fn delete_image_pull_secret(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::DeleteImagePullSecretRequest>,
    ) -> ServiceResult<pb::DeleteImagePullSecretResponse> {
        self.secrets
            .delete_image_pull_secret(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::DeleteImagePullSecretResponse::default())
    }

    async fn resolve_secret(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ResolveSecretRequest>,
    ) -> ServiceResult<pb::ResolveSecretResponse> {
        let value = self
            .secrets
            .resolve_secret(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::ResolveSecretResponse {
            value: value.into_inner(),
            ..Default::default()
        })
    }

    async fn resolve_image_pull_secret(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ResolveImagePullSecretRequest>,
    ) -> ServiceResult<pb::ResolveImagePullSecretResponse> {
        let credentials = self
            .secrets
            .resolve_image_pull_secret(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::ResolveImagePullSecretResponse {
            registry: credentials.registry,
            username: credentials.username,
            password: credentials.password.into_inner(),
            ..Default::default()
        })
    }

    async fn secret_exists(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::SecretExistsRequest>,
    ) -> ServiceResult<pb::SecretExistsResponse> {
        let organization_id = self
            .secrets
            .secret_exists(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::SecretExistsResponse {
            exists: organization_id.is_some(),
            organization_id: organization_id.unwrap_or_default(),
            ..Default::default()
        })
    }

    async fn image_pull_secret_exists(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ImagePullSecretExistsRequest>,
    ) -> ServiceResult<pb::ImagePullSecretExistsResponse> {
        let organization_id = self
            .secrets
            .image_pull_secret_exists(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::ImagePullSecretExistsResponse {
            exists: organization_id.is_some(),
            organization_id: organization_id.unwrap_or_default(),
            ..Default::default()
        })
    }

    async fn delete_organization_resources(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::DeleteOrganizationResourcesRequest>,
    ) -> ServiceResult<pb::DeleteOrganizationResourcesResponse> {
        self.secrets
            .delete_organization_resources(request_caller(&ctx)?, request.organization_id)
            .await?;
        Response::ok(pb::DeleteOrganizationResourcesResponse::default())
    }
}

/// The public `SecretsGateway`: every method dispatches to [`SecretsRpc`].
#[derive(Clone)]
pub struct SecretsGatewayRpc {
    inner: SecretsRpc,
}

impl SecretsGatewayRpc {
    pub fn new(secrets: Secrets) -> Self {
        Self {
            inner: SecretsRpc::new(secrets),
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
                pb::SecretsService::$method(&self.inner, ctx, request).await
            }
        )*
    };
}

impl pb::SecretsGateway for SecretsGatewayRpc {
    dispatch! {
        create_secret_provider(pb::CreateSecretProviderRequest) -> pb::CreateSecretProviderResponse;
        get_secret_provider(pb::GetSecretProviderRequest) -> pb::GetSecretProviderResponse;
        list_secret_providers(pb::ListSecretProvidersRequest) -> pb::ListSecretProvidersResponse;
        update_secret_provider(pb::UpdateSecretProviderRequest) -> pb::UpdateSecretProviderResponse;
        delete_secret_provider(pb::DeleteSecretProviderRequest) -> pb::DeleteSecretProviderResponse;
        create_secret(pb::CreateSecretRequest) -> pb::CreateSecretResponse;
        get_secret(pb::GetSecretRequest) -> pb::GetSecretResponse;
        list_secrets(pb::ListSecretsRequest) -> pb::ListSecretsResponse;
        update_secret(pb::UpdateSecretRequest) -> pb::UpdateSecretResponse;
        delete_secret(pb::DeleteSecretRequest) -> pb::DeleteSecretResponse;
        create_image_pull_secret(pb::CreateImagePullSecretRequest) -> pb::CreateImagePullSecretResponse;
        get_image_pull_secret(pb::GetImagePullSecretRequest) -> pb::GetImagePullSecretResponse;
        list_image_pull_secrets(pb::ListImagePullSecretsRequest) -> pb::ListImagePullSecretsResponse;
        update_image_pull_secret(pb::UpdateImagePullSecretRequest) -> pb::UpdateImagePullSecretResponse;
        delete_image_pull_secret(pb::DeleteImagePullSecretRequest) -> pb::DeleteImagePullSecretResponse;
    }
}
