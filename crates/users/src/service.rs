//! `UsersService` (internal) and `UsersGateway` (public) over [`Users`].
//!
//! The gateway methods dispatch to the internal service unchanged, with
//! the caller the gateway attached to the request.

use agyn_api_users::agynio::api::users::v1 as pb;
use agyn_core::caller::request_caller;
use connectrpc::{RequestContext, Response, ServiceRequest, ServiceResult};

use std::sync::Arc;

use crate::Users;
use crate::devices::device_to_proto;
use crate::encoded::{Encoded, EncodedBody};
use crate::ops::{cluster_role, token_to_proto, user_to_proto};
use agyn_core::time::{now_micros, timestamp};

/// The internal `UsersService`.
#[derive(Clone)]
pub struct UsersRpc {
    users: Users,
}

impl UsersRpc {
    pub fn new(users: Users) -> Self {
        Self { users }
    }
}

impl pb::UsersService for UsersRpc {
    async fn get_me(
        &self,
        ctx: RequestContext,
        _request: ServiceRequest<'_, pb::GetMeRequest>,
    ) -> ServiceResult<EncodedBody<pb::GetMeResponse>> {
        let user = self.users.get_me(request_caller(&ctx)?).await?;
        if let Some(encoded) = user.me.get() {
            return Response::ok(EncodedBody(Arc::clone(encoded)));
        }
        let response = pb::GetMeResponse {
            user: user_to_proto(&user.record, true).into(),
            cluster_role: cluster_role(&user.record, true).into(),
            ..Default::default()
        };
        let encoded = user
            .me
            .get_or_init(|| Encoded::new(&response).expect("GetMeResponse encodes"));
        Response::ok(EncodedBody(Arc::clone(encoded)))
    }

    async fn get_user(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetUserRequest>,
    ) -> ServiceResult<pb::GetUserResponse> {
        let (user, full) = self
            .users
            .get_user(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::GetUserResponse {
            user: user_to_proto(&user, full).into(),
            cluster_role: cluster_role(&user, full).into(),
            ..Default::default()
        })
    }

    async fn search_users(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::SearchUsersRequest>,
    ) -> ServiceResult<pb::SearchUsersResponse> {
        let found = self
            .users
            .search_users(request_caller(&ctx)?, request.prefix, request.limit)
            .await?;
        let users = found
            .into_iter()
            .map(|user| pb::UserDirectoryEntry {
                identity_id: user.id,
                username: user.username,
                name: user.name,
                photo_url: user.photo_url,
                ..Default::default()
            })
            .collect();
        Response::ok(pb::SearchUsersResponse {
            users,
            ..Default::default()
        })
    }

    async fn create_api_token(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::CreateAPITokenRequest>,
    ) -> ServiceResult<pb::CreateAPITokenResponse> {
        let request = request.to_owned_message();
        let expires_at = request
            .expires_at
            .as_option()
            .map(|timestamp| agyn_core::time::checked_micros("expires_at", timestamp))
            .transpose()?;
        let created = self
            .users
            .create_api_token(request_caller(&ctx)?, &request.name, expires_at)
            .await?;
        Response::ok(pb::CreateAPITokenResponse {
            token: token_to_proto(&created.token).into(),
            plaintext_token: created.plaintext.into_inner(),
            ..Default::default()
        })
    }

    async fn list_api_tokens(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListAPITokensRequest>,
    ) -> ServiceResult<pb::ListAPITokensResponse> {
        let (tokens, next_page_token) = self
            .users
            .list_api_tokens(request_caller(&ctx)?, request.page_size, request.page_token)
            .await?;
        Response::ok(pb::ListAPITokensResponse {
            tokens: tokens.iter().map(token_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn revoke_api_token(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::RevokeAPITokenRequest>,
    ) -> ServiceResult<pb::RevokeAPITokenResponse> {
        self.users
            .revoke_api_token(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::RevokeAPITokenResponse::default())
    }

    async fn create_device(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::CreateDeviceRequest>,
    ) -> ServiceResult<pb::CreateDeviceResponse> {
        let created = self
            .users
            .create_device(request_caller(&ctx)?, request.name)
            .await?;
        Response::ok(pb::CreateDeviceResponse {
            device: device_to_proto(&created.device, now_micros()).into(),
            enrollment_token: created.enrollment_token.into_inner(),
            enrollment_expires_at: timestamp(created.enrollment_expires_at).into(),
            ..Default::default()
        })
    }

    async fn list_devices(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListDevicesRequest>,
    ) -> ServiceResult<pb::ListDevicesResponse> {
        let (devices, next_page_token) = self
            .users
            .list_devices(request_caller(&ctx)?, request.page_size, request.page_token)
            .await?;
        let now = now_micros();
        Response::ok(pb::ListDevicesResponse {
            devices: devices
                .iter()
                .map(|device| device_to_proto(device, now))
                .collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn delete_device(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::DeleteDeviceRequest>,
    ) -> ServiceResult<pb::DeleteDeviceResponse> {
        self.users
            .delete_device(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::DeleteDeviceResponse::default())
    }

    async fn resolve_or_create_user(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, pb::ResolveOrCreateUserRequest>,
    ) -> ServiceResult<pb::ResolveOrCreateUserResponse> {
        let request = request.to_owned_message();
        let (user, created) = self.users.resolve_or_create_user(&request).await?;
        Response::ok(pb::ResolveOrCreateUserResponse {
            user: user_to_proto(&user, true).into(),
            created,
            ..Default::default()
        })
    }

    async fn resolve_api_token(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, pb::ResolveAPITokenRequest>,
    ) -> ServiceResult<pb::ResolveAPITokenResponse> {
        let token = self.users.resolve_api_token(request.token_hash).await?;
        Response::ok(pb::ResolveAPITokenResponse {
            identity_id: token.identity_id.clone(),
            token: token_to_proto(&token).into(),
            ..Default::default()
        })
    }

    async fn batch_get_users(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, pb::BatchGetUsersRequest>,
    ) -> ServiceResult<pb::BatchGetUsersResponse> {
        let request = request.to_owned_message();
        let users = self.users.batch_get_users(&request.identity_ids).await?;
        Response::ok(pb::BatchGetUsersResponse {
            users: users.iter().map(|user| user_to_proto(user, true)).collect(),
            ..Default::default()
        })
    }

    async fn set_cluster_admin(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, pb::SetClusterAdminRequest>,
    ) -> ServiceResult<pb::SetClusterAdminResponse> {
        self.users
            .set_cluster_admin(request.identity_id, request.admin, "admin")
            .await?;
        Response::ok(pb::SetClusterAdminResponse::default())
    }
}

/// The public `UsersGateway`: every method dispatches to [`UsersRpc`].
#[derive(Clone)]
pub struct UsersGatewayRpc {
    inner: UsersRpc,
}

impl UsersGatewayRpc {
    pub fn new(users: Users) -> Self {
        Self {
            inner: UsersRpc::new(users),
        }
    }
}

/// Implements a gateway method by calling the internal service's method
/// of the same name with the same request.
macro_rules! dispatch {
    ($($method:ident($request:ty) -> $response:ty;)*) => {
        $(
            async fn $method(
                &self,
                ctx: RequestContext,
                request: ServiceRequest<'_, $request>,
            ) -> ServiceResult<$response> {
                pb::UsersService::$method(&self.inner, ctx, request).await
            }
        )*
    };
}

impl pb::UsersGateway for UsersGatewayRpc {
    dispatch! {
        get_me(pb::GetMeRequest) -> EncodedBody<pb::GetMeResponse>;
        get_user(pb::GetUserRequest) -> pb::GetUserResponse;
        search_users(pb::SearchUsersRequest) -> pb::SearchUsersResponse;
        create_api_token(pb::CreateAPITokenRequest) -> pb::CreateAPITokenResponse;
        list_api_tokens(pb::ListAPITokensRequest) -> pb::ListAPITokensResponse;
        revoke_api_token(pb::RevokeAPITokenRequest) -> pb::RevokeAPITokenResponse;
        create_device(pb::CreateDeviceRequest) -> pb::CreateDeviceResponse;
        list_devices(pb::ListDevicesRequest) -> pb::ListDevicesResponse;
        delete_device(pb::DeleteDeviceRequest) -> pb::DeleteDeviceResponse;
    }
}
