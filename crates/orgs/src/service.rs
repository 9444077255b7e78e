//! `OrganizationsService` (internal) and `OrganizationsGateway` (public)
//! over [`Organizations`].
//!
//! The gateway methods dispatch to the internal service unchanged, with
//! the caller the gateway attached to the request.

use agyn_api_organizations::agynio::api::organizations::v1 as pb;
use agyn_core::caller::request_caller;
use agyn_core::time::timestamp;
use connectrpc::{ConnectError, RequestContext, Response, ServiceRequest, ServiceResult};

use crate::Organizations;
use crate::ops::MembershipInput;
use crate::store::{MembershipRecord, OrgRecord, OrgState, Role, Status};

/// The internal `OrganizationsService`.
#[derive(Clone)]
pub struct OrganizationsRpc {
    orgs: Organizations,
}

impl OrganizationsRpc {
    pub fn new(orgs: Organizations) -> Self {
        Self { orgs }
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

fn state_to_proto(state: OrgState) -> pb::OrganizationState {
    match state {
        OrgState::Active => pb::OrganizationState::ORGANIZATION_STATE_ACTIVE,
        OrgState::Deleting => pb::OrganizationState::ORGANIZATION_STATE_DELETING,
    }
}

pub fn org_to_proto(org: &OrgRecord) -> pb::Organization {
    pb::Organization {
        meta: meta(&org.id, org.created_at, org.updated_at).into(),
        name: org.name.clone(),
        slug: org.slug.clone(),
        state: state_to_proto(org.state).into(),
        deletion_step: org.deletion_step.clone(),
        ..Default::default()
    }
}

pub fn membership_to_proto(membership: &MembershipRecord) -> pb::Membership {
    pb::Membership {
        meta: meta(&membership.id, membership.created_at, membership.updated_at).into(),
        organization_id: membership.organization_id.clone(),
        organization_name: membership.organization_name.clone(),
        organization_slug: membership.organization_slug.clone(),
        identity_id: membership.identity_id.clone(),
        username: membership.username.clone(),
        display_name: membership.display_name.clone(),
        role: match membership.role {
            Role::Owner => pb::MembershipRole::MEMBERSHIP_ROLE_OWNER,
            Role::Member => pb::MembershipRole::MEMBERSHIP_ROLE_MEMBER,
        }
        .into(),
        status: match membership.status {
            Status::Pending => pb::MembershipStatus::MEMBERSHIP_STATUS_PENDING,
            Status::Active => pb::MembershipStatus::MEMBERSHIP_STATUS_ACTIVE,
        }
        .into(),
        expires_at: membership.expires_at.map(timestamp).into(),
        invited_by: membership.invited_by.clone(),
        ..Default::default()
    }
}

/// Reads a role; UNSPECIFIED is `None`, which the operations reject, and
/// an unknown number is `invalid_argument`.
fn role(value: &buffa::EnumValue<pb::MembershipRole>) -> Result<Option<Role>, ConnectError> {
    match value.as_known() {
        Some(pb::MembershipRole::MEMBERSHIP_ROLE_OWNER) => Ok(Some(Role::Owner)),
        Some(pb::MembershipRole::MEMBERSHIP_ROLE_MEMBER) => Ok(Some(Role::Member)),
        Some(pb::MembershipRole::MEMBERSHIP_ROLE_UNSPECIFIED) => Ok(None),
        None => Err(agyn_core::Error::invalid_field(
            "role",
            &format!("unknown value {}", value.to_i32()),
        )
        .into()),
    }
}

/// Reads a status filter; UNSPECIFIED means every status.
fn status_filter(
    value: &buffa::EnumValue<pb::MembershipStatus>,
) -> Result<Option<Status>, ConnectError> {
    match value.as_known() {
        Some(pb::MembershipStatus::MEMBERSHIP_STATUS_UNSPECIFIED) => Ok(None),
        Some(pb::MembershipStatus::MEMBERSHIP_STATUS_PENDING) => Ok(Some(Status::Pending)),
        Some(pb::MembershipStatus::MEMBERSHIP_STATUS_ACTIVE) => Ok(Some(Status::Active)),
        None => Err(agyn_core::Error::invalid_field(
            "status",
            &format!("unknown value {}", value.to_i32()),
        )
        .into()),
    }
}

fn expires_at(
    value: Option<&buffa_types::google::protobuf::Timestamp>,
) -> Result<Option<i64>, ConnectError> {
    Ok(value
        .map(|at| agyn_core::time::checked_micros("expires_at", at))
        .transpose()?)
}

impl pb::OrganizationsService for OrganizationsRpc {
    async fn create_organization(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::CreateOrganizationRequest>,
    ) -> ServiceResult<pb::CreateOrganizationResponse> {
        let request = request.to_owned_message();
        let org = self
            .orgs
            .create_organization(
                request_caller(&ctx)?,
                &request.name,
                request.slug.as_deref(),
                &request.request_id,
            )
            .await?;
        Response::ok(pb::CreateOrganizationResponse {
            organization: org_to_proto(&org).into(),
            ..Default::default()
        })
    }

    async fn get_organization(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetOrganizationRequest>,
    ) -> ServiceResult<pb::GetOrganizationResponse> {
        let org = self
            .orgs
            .get_organization(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::GetOrganizationResponse {
            organization: org_to_proto(&org).into(),
            ..Default::default()
        })
    }

    async fn list_organizations(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListOrganizationsRequest>,
    ) -> ServiceResult<pb::ListOrganizationsResponse> {
        let (orgs, next_page_token) = self
            .orgs
            .list_organizations(request_caller(&ctx)?, request.page_size, request.page_token)
            .await?;
        Response::ok(pb::ListOrganizationsResponse {
            organizations: orgs.iter().map(org_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn update_organization(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::UpdateOrganizationRequest>,
    ) -> ServiceResult<pb::UpdateOrganizationResponse> {
        let request = request.to_owned_message();
        let org = self
            .orgs
            .update_organization(
                request_caller(&ctx)?,
                &request.id,
                request.name.as_deref(),
                request.slug.as_deref(),
            )
            .await?;
        Response::ok(pb::UpdateOrganizationResponse {
            organization: org_to_proto(&org).into(),
            ..Default::default()
        })
    }

    async fn delete_organization(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::DeleteOrganizationRequest>,
    ) -> ServiceResult<pb::DeleteOrganizationResponse> {
        self.orgs
            .delete_organization(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::DeleteOrganizationResponse::default())
    }

    async fn create_membership(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::CreateMembershipRequest>,
    ) -> ServiceResult<pb::CreateMembershipResponse> {
        let request = request.to_owned_message();
        let input = MembershipInput {
            organization_id: &request.organization_id,
            identity_id: &request.identity_id,
            role: role(&request.role)?,
            expires_at: expires_at(request.expires_at.as_option())?,
            request_id: &request.request_id,
        };
        let membership = self
            .orgs
            .create_membership(request_caller(&ctx)?, &input)
            .await?;
        Response::ok(pb::CreateMembershipResponse {
            membership: membership_to_proto(&membership).into(),
            ..Default::default()
        })
    }

    async fn accept_membership(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::AcceptMembershipRequest>,
    ) -> ServiceResult<pb::AcceptMembershipResponse> {
        let membership = self
            .orgs
            .accept_membership(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::AcceptMembershipResponse {
            membership: membership_to_proto(&membership).into(),
            ..Default::default()
        })
    }

    async fn decline_membership(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::DeclineMembershipRequest>,
    ) -> ServiceResult<pb::DeclineMembershipResponse> {
        self.orgs
            .decline_membership(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::DeclineMembershipResponse::default())
    }

    async fn remove_membership(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::RemoveMembershipRequest>,
    ) -> ServiceResult<pb::RemoveMembershipResponse> {
        self.orgs
            .remove_membership(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::RemoveMembershipResponse::default())
    }

    async fn update_membership_role(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::UpdateMembershipRoleRequest>,
    ) -> ServiceResult<pb::UpdateMembershipRoleResponse> {
        let membership = self
            .orgs
            .update_membership_role(request_caller(&ctx)?, request.id, role(&request.role)?)
            .await?;
        Response::ok(pb::UpdateMembershipRoleResponse {
            membership: membership_to_proto(&membership).into(),
            ..Default::default()
        })
    }

    async fn list_members(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListMembersRequest>,
    ) -> ServiceResult<pb::ListMembersResponse> {
        let status = status_filter(&request.status)?;
        let (memberships, next_page_token) = self
            .orgs
            .list_members(
                request_caller(&ctx)?,
                request.organization_id,
                status,
                request.page_size,
                request.page_token,
            )
            .await?;
        Response::ok(pb::ListMembersResponse {
            memberships: memberships.iter().map(membership_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn list_my_memberships(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListMyMembershipsRequest>,
    ) -> ServiceResult<pb::ListMyMembershipsResponse> {
        let status = status_filter(&request.status)?;
        let (memberships, next_page_token) = self
            .orgs
            .list_my_memberships(
                request_caller(&ctx)?,
                status,
                request.page_size,
                request.page_token,
            )
            .await?;
        Response::ok(pb::ListMyMembershipsResponse {
            memberships: memberships.iter().map(membership_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn get_organization_state(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetOrganizationStateRequest>,
    ) -> ServiceResult<pb::GetOrganizationStateResponse> {
        let state = self.orgs.organization_state(request.id).await?;
        Response::ok(pb::GetOrganizationStateResponse {
            state: state_to_proto(state).into(),
            ..Default::default()
        })
    }
}

/// The public `OrganizationsGateway`: every method dispatches to
/// [`OrganizationsRpc`].
#[derive(Clone)]
pub struct OrganizationsGatewayRpc {
    inner: OrganizationsRpc,
}

impl OrganizationsGatewayRpc {
    pub fn new(orgs: Organizations) -> Self {
        Self {
            inner: OrganizationsRpc::new(orgs),
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
                pb::OrganizationsService::$method(&self.inner, ctx, request).await
            }
        )*
    };
}

impl pb::OrganizationsGateway for OrganizationsGatewayRpc {
    dispatch! {
        create_organization(pb::CreateOrganizationRequest) -> pb::CreateOrganizationResponse;
        get_organization(pb::GetOrganizationRequest) -> pb::GetOrganizationResponse;
        list_organizations(pb::ListOrganizationsRequest) -> pb::ListOrganizationsResponse;
        update_organization(pb::UpdateOrganizationRequest) -> pb::UpdateOrganizationResponse;
        delete_organization(pb::DeleteOrganizationRequest) -> pb::DeleteOrganizationResponse;
        create_membership(pb::CreateMembershipRequest) -> pb::CreateMembershipResponse;
        accept_membership(pb::AcceptMembershipRequest) -> pb::AcceptMembershipResponse;
        decline_membership(pb::DeclineMembershipRequest) -> pb::DeclineMembershipResponse;
        remove_membership(pb::RemoveMembershipRequest) -> pb::RemoveMembershipResponse;
        update_membership_role(pb::UpdateMembershipRoleRequest) -> pb::UpdateMembershipRoleResponse;
        list_members(pb::ListMembersRequest) -> pb::ListMembersResponse;
        list_my_memberships(pb::ListMyMembershipsRequest) -> pb::ListMyMembershipsResponse;
    }
}
