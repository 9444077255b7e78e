//! `AppsService` (internal) and `AppsGateway` (public) over [`Apps`].
//!
//! The gateway methods dispatch to the internal service unchanged, with
//! the caller the gateway attached to the request. EnrollApp reads no
//! caller, only the service token and the client address.

use std::net::SocketAddr;

use agyn_api_apps::agynio::api::apps::v1 as pb;
use agyn_core::caller::request_caller;
use agyn_core::time::timestamp;
use agyn_core::{Error, Secret};
use axum::extract::ConnectInfo;
use buffa::EnumValue;
use buffa_types::google::protobuf::Struct;
use connectrpc::{RequestContext, Response, ServiceRequest, ServiceResult};
use serde_json::{Map, Value};

use crate::Apps;
use crate::model::{
    AppChanges, AppRecord, InstallationChanges, InstallationRecord, NewApp, NewInstallation,
    Visibility,
};

/// The internal `AppsService`.
#[derive(Clone)]
pub struct AppsRpc {
    apps: Apps,
}

impl AppsRpc {
    pub fn new(apps: Apps) -> Self {
        Self { apps }
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

fn visibility_to_proto(visibility: Visibility) -> pb::AppVisibility {
    match visibility {
        Visibility::Public => pb::AppVisibility::APP_VISIBILITY_PUBLIC,
        Visibility::Internal => pb::AppVisibility::APP_VISIBILITY_INTERNAL,
    }
}

/// Reads a visibility. UNSPECIFIED is `None`; an unknown number fails.
fn visibility_from_proto(
    value: &EnumValue<pb::AppVisibility>,
) -> Result<Option<Visibility>, Error> {
    match value.as_known() {
        Some(pb::AppVisibility::APP_VISIBILITY_UNSPECIFIED) => Ok(None),
        Some(pb::AppVisibility::APP_VISIBILITY_PUBLIC) => Ok(Some(Visibility::Public)),
        Some(pb::AppVisibility::APP_VISIBILITY_INTERNAL) => Ok(Some(Visibility::Internal)),
        None => Err(Error::invalid_field("visibility", "unknown app visibility")),
    }
}

pub fn app_to_proto(record: &AppRecord) -> pb::App {
    pb::App {
        meta: meta(&record.id, record.created_at, record.updated_at),
        identity_id: record.id.clone(),
        organization_id: record.organization_id.clone(),
        slug: record.slug.clone(),
        name: record.name.clone(),
        description: record.description.clone(),
        icon: record.icon.clone(),
        visibility: visibility_to_proto(record.visibility).into(),
        permissions: record
            .permissions
            .iter()
            .map(|permission| permission.name().to_string())
            .collect(),
        endpoint: record.endpoint.clone(),
        ..Default::default()
    }
}

pub fn installation_to_proto(record: &InstallationRecord) -> pb::Installation {
    let configuration: Struct = serde_json::from_value(Value::Object(record.configuration.clone()))
        .unwrap_or_else(|error| {
            tracing::error!(
                installation_id = %record.id,
                %error,
                "Stored configuration is not a protobuf Struct; returning it empty"
            );
            Struct::default()
        });
    pb::Installation {
        meta: meta(&record.id, record.created_at, record.updated_at),
        app_id: record.app_id.clone(),
        app_slug: record.app_slug.clone(),
        organization_id: record.organization_id.clone(),
        slug: record.slug.clone(),
        configuration: configuration.into(),
        ..Default::default()
    }
}

/// Converts a configuration into a JSON object. Fails on numbers JSON
/// cannot hold (NaN or infinite).
fn configuration_from_proto(configuration: &Struct) -> Result<Map<String, Value>, Error> {
    match serde_json::to_value(configuration) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) | Err(_) => Err(Error::invalid_field(
            "configuration",
            "must hold only values JSON can represent (no NaN or infinite numbers)",
        )),
    }
}

/// Returns the client address the gateway attached to the request, for
/// the EnrollApp rate limit.
fn client_address(ctx: &RequestContext) -> String {
    match ctx.extensions().get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(peer)) => peer.ip().to_string(),
        None => "unknown".to_string(),
    }
}

fn installation_response<T>(
    record: &InstallationRecord,
    build: impl FnOnce(buffa::MessageField<pb::Installation, buffa::Inline<pb::Installation>>) -> T,
) -> ServiceResult<T> {
    Response::ok(build(installation_to_proto(record).into()))
}

impl pb::AppsService for AppsRpc {
    async fn create_app(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::CreateAppRequest>,
    ) -> ServiceResult<pb::CreateAppResponse> {
        let request = request.to_owned_message();
        let input = NewApp {
            visibility: visibility_from_proto(&request.visibility)?,
            organization_id: request.organization_id,
            slug: request.slug,
            name: request.name,
            description: request.description,
            icon: request.icon,
            permissions: request.permissions,
            endpoint: request.endpoint,
        };
        let created = self.apps.create_app(request_caller(&ctx)?, &input).await?;
        Response::ok(pb::CreateAppResponse {
            app: app_to_proto(&created.app).into(),
            service_token: created.service_token.into_inner(),
            ..Default::default()
        })
    }

    async fn get_app(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetAppRequest>,
    ) -> ServiceResult<pb::GetAppResponse> {
        let record = self.apps.get_app(request_caller(&ctx)?, request.id).await?;
        Response::ok(pb::GetAppResponse {
            app: app_to_proto(&record).into(),
            ..Default::default()
        })
    }

    async fn get_app_by_slug(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetAppBySlugRequest>,
    ) -> ServiceResult<pb::GetAppBySlugResponse> {
        let record = self
            .apps
            .get_app_by_slug(request_caller(&ctx)?, request.organization_id, request.slug)
            .await?;
        Response::ok(pb::GetAppBySlugResponse {
            app: app_to_proto(&record).into(),
            ..Default::default()
        })
    }

    async fn list_apps(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListAppsRequest>,
    ) -> ServiceResult<pb::ListAppsResponse> {
        let request = request.to_owned_message();
        let (records, next_page_token) = self
            .apps
            .list_apps(
                request_caller(&ctx)?,
                request.organization_id.as_deref(),
                visibility_from_proto(&request.visibility)?,
                request.page_size,
                &request.page_token,
            )
            .await?;
        Response::ok(pb::ListAppsResponse {
            apps: records.iter().map(app_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn update_app(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::UpdateAppRequest>,
    ) -> ServiceResult<pb::UpdateAppResponse> {
        let request = request.to_owned_message();
        let visibility = match &request.visibility {
            None => None,
            Some(value) => Some(visibility_from_proto(value)?.ok_or_else(|| {
                Error::invalid_field(
                    "visibility",
                    "must be APP_VISIBILITY_PUBLIC or APP_VISIBILITY_INTERNAL",
                )
            })?),
        };
        let changes = AppChanges {
            name: request.name,
            description: request.description,
            icon: request.icon,
            visibility,
            endpoint: request.endpoint,
        };
        let record = self
            .apps
            .update_app(request_caller(&ctx)?, &request.id, &changes)
            .await?;
        Response::ok(pb::UpdateAppResponse {
            app: app_to_proto(&record).into(),
            ..Default::default()
        })
    }

    async fn delete_app(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::DeleteAppRequest>,
    ) -> ServiceResult<pb::DeleteAppResponse> {
        self.apps
            .delete_app(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::DeleteAppResponse::default())
    }

    async fn install_app(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::InstallAppRequest>,
    ) -> ServiceResult<pb::InstallAppResponse> {
        let request = request.to_owned_message();
        let configuration = request
            .configuration
            .as_option()
            .map(configuration_from_proto)
            .transpose()?;
        let input = NewInstallation {
            app_id: request.app_id,
            organization_id: request.organization_id,
            slug: request.slug,
            configuration,
            request_id: request.request_id,
        };
        let record = self.apps.install_app(request_caller(&ctx)?, &input).await?;
        installation_response(&record, |installation| pb::InstallAppResponse {
            installation,
            ..Default::default()
        })
    }

    async fn get_installation(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetInstallationRequest>,
    ) -> ServiceResult<pb::GetInstallationResponse> {
        let record = self
            .apps
            .get_installation(request_caller(&ctx)?, request.id)
            .await?;
        installation_response(&record, |installation| pb::GetInstallationResponse {
            installation,
            ..Default::default()
        })
    }

    async fn list_installations(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListInstallationsRequest>,
    ) -> ServiceResult<pb::ListInstallationsResponse> {
        let request = request.to_owned_message();
        let (records, next_page_token) = self
            .apps
            .list_installations(
                request_caller(&ctx)?,
                request.organization_id.as_deref(),
                request.app_id.as_deref(),
                request.page_size,
                &request.page_token,
            )
            .await?;
        Response::ok(pb::ListInstallationsResponse {
            installations: records.iter().map(installation_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn update_installation(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::UpdateInstallationRequest>,
    ) -> ServiceResult<pb::UpdateInstallationResponse> {
        let request = request.to_owned_message();
        let changes = InstallationChanges {
            slug: request.slug,
            configuration: request
                .configuration
                .as_option()
                .map(configuration_from_proto)
                .transpose()?,
        };
        let record = self
            .apps
            .update_installation(request_caller(&ctx)?, &request.id, &changes)
            .await?;
        installation_response(&record, |installation| pb::UpdateInstallationResponse {
            installation,
            ..Default::default()
        })
    }

    async fn uninstall_app(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::UninstallAppRequest>,
    ) -> ServiceResult<pb::UninstallAppResponse> {
        self.apps
            .uninstall_app(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::UninstallAppResponse::default())
    }

    async fn enroll_app(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::EnrollAppRequest>,
    ) -> ServiceResult<pb::EnrollAppResponse> {
        let request = request.to_owned_message();
        let service_token = Secret::new(request.service_token);
        let enrolled = self
            .apps
            .enroll_app(
                &client_address(&ctx),
                &service_token,
                request.csr_pem.as_deref(),
            )
            .await?;
        Response::ok(pb::EnrollAppResponse {
            identity_json: enrolled.identity_json.into_inner(),
            identity_id: enrolled.identity_id,
            ..Default::default()
        })
    }

    async fn get_installation_by_slug(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetInstallationBySlugRequest>,
    ) -> ServiceResult<pb::GetInstallationBySlugResponse> {
        let (installation, app) = self
            .apps
            .get_installation_by_slug(request_caller(&ctx)?, request.organization_id, request.slug)
            .await?;
        Response::ok(pb::GetInstallationBySlugResponse {
            installation: installation_to_proto(&installation).into(),
            app: app_to_proto(&app).into(),
            ..Default::default()
        })
    }

    async fn get_app_by_identity(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetAppByIdentityRequest>,
    ) -> ServiceResult<pb::GetAppByIdentityResponse> {
        let record = self
            .apps
            .get_app_by_identity(request_caller(&ctx)?, request.identity_id)
            .await?;
        Response::ok(pb::GetAppByIdentityResponse {
            app: app_to_proto(&record).into(),
            ..Default::default()
        })
    }

    async fn delete_organization_resources(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::DeleteOrganizationResourcesRequest>,
    ) -> ServiceResult<pb::DeleteOrganizationResourcesResponse> {
        self.apps
            .delete_organization_resources(request_caller(&ctx)?, request.organization_id)
            .await?;
        Response::ok(pb::DeleteOrganizationResourcesResponse::default())
    }
}

/// The public `AppsGateway`, which serves the internal methods of the same
/// name.
#[derive(Clone)]
pub struct AppsGatewayRpc {
    inner: AppsRpc,
}

impl AppsGatewayRpc {
    pub fn new(apps: Apps) -> Self {
        Self {
            inner: AppsRpc::new(apps),
        }
    }
}

macro_rules! forward {
    ($($method:ident($request:ty) -> $response:ty;)*) => {
        $(
            async fn $method(
                &self,
                ctx: RequestContext,
                request: ServiceRequest<'_, $request>,
            ) -> ServiceResult<$response> {
                pb::AppsService::$method(&self.inner, ctx, request).await
            }
        )*
    };
}

impl pb::AppsGateway for AppsGatewayRpc {
    forward! {
        create_app(pb::CreateAppRequest) -> pb::CreateAppResponse;
        get_app(pb::GetAppRequest) -> pb::GetAppResponse;
        get_app_by_slug(pb::GetAppBySlugRequest) -> pb::GetAppBySlugResponse;
        list_apps(pb::ListAppsRequest) -> pb::ListAppsResponse;
        update_app(pb::UpdateAppRequest) -> pb::UpdateAppResponse;
        delete_app(pb::DeleteAppRequest) -> pb::DeleteAppResponse;
        install_app(pb::InstallAppRequest) -> pb::InstallAppResponse;
        get_installation(pb::GetInstallationRequest) -> pb::GetInstallationResponse;
        list_installations(pb::ListInstallationsRequest) -> pb::ListInstallationsResponse;
        update_installation(pb::UpdateInstallationRequest) -> pb::UpdateInstallationResponse;
        uninstall_app(pb::UninstallAppRequest) -> pb::UninstallAppResponse;
        enroll_app(pb::EnrollAppRequest) -> pb::EnrollAppResponse;
    }
}
