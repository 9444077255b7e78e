//! The identity registry: every user, agent, runner and app id with its
//! type. A service that creates an identity-bearing resource registers the
//! identity in the same transaction as its own row.

use agyn_api_identity::agynio::api::identity::v1 as pb;
use agyn_core::{Error, IdentityKind, Result};
use agyn_store::Db;
use agyn_store::sqlx::{self, AnyConnection, Row};
use buffa::EnumValue;
use connectrpc::{RequestContext, Response, ServiceRequest, ServiceResult};

/// Most ids one batch lookup (`BatchGetIdentityTypes`, `BatchGetUsers`) may name.
pub const MAX_BATCH: usize = 500;

/// Registers `id` as an identity of `kind`; `already_exists` if it is
/// registered.
pub async fn register(
    connection: &mut AnyConnection,
    id: &str,
    kind: IdentityKind,
    now: i64,
) -> Result<()> {
    sqlx::query("INSERT INTO identities (id, identity_type, created_at) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(kind.as_str())
        .bind(now)
        .execute(&mut *connection)
        .await
        .map_err(|error| {
            if agyn_store::is_unique_violation(&error) {
                Error::already_exists(format!("identity {id} already registered"))
            } else {
                Error::from(error)
            }
        })?;
    Ok(())
}

pub async fn kind_of(db: &Db, id: &str) -> Result<Option<IdentityKind>> {
    let row = sqlx::query("SELECT identity_type FROM identities WHERE id = $1")
        .bind(id)
        .fetch_optional(db.pool())
        .await?;
    match row {
        None => Ok(None),
        Some(row) => {
            let stored: String = row.try_get("identity_type")?;
            IdentityKind::parse(&stored)
                .map(Some)
                .ok_or_else(|| Error::internal("unknown identity type", stored))
        }
    }
}

fn to_proto(kind: IdentityKind) -> pb::IdentityType {
    match kind {
        IdentityKind::Agent => pb::IdentityType::IDENTITY_TYPE_AGENT,
        IdentityKind::Runner => pb::IdentityType::IDENTITY_TYPE_RUNNER,
        IdentityKind::User => pb::IdentityType::IDENTITY_TYPE_USER,
        IdentityKind::App => pb::IdentityType::IDENTITY_TYPE_APP,
        IdentityKind::Platform => pb::IdentityType::IDENTITY_TYPE_PLATFORM,
    }
}

fn from_proto(value: &EnumValue<pb::IdentityType>) -> Result<IdentityKind> {
    match value.as_known() {
        Some(pb::IdentityType::IDENTITY_TYPE_AGENT) => Ok(IdentityKind::Agent),
        Some(pb::IdentityType::IDENTITY_TYPE_RUNNER) => Ok(IdentityKind::Runner),
        Some(pb::IdentityType::IDENTITY_TYPE_USER) => Ok(IdentityKind::User),
        Some(pb::IdentityType::IDENTITY_TYPE_APP) => Ok(IdentityKind::App),
        Some(pb::IdentityType::IDENTITY_TYPE_PLATFORM) => Ok(IdentityKind::Platform),
        _ => Err(Error::invalid_field(
            "identity_type",
            "must be a known identity type",
        )),
    }
}

/// The internal `IdentityService`.
pub struct IdentityRpc {
    db: Db,
}

impl IdentityRpc {
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

fn not_built(method: &str) -> connectrpc::ConnectError {
    Error::unimplemented(format!(
        "agynio.api.identity.v1.IdentityService/{method} is not implemented yet"
    ))
    .into()
}

impl pb::IdentityService for IdentityRpc {
    async fn register_identity(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, pb::RegisterIdentityRequest>,
    ) -> ServiceResult<pb::RegisterIdentityResponse> {
        let request = request.to_owned_message();
        let id = agyn_core::id::parse_id("identity_id", &request.identity_id)?;
        let kind = from_proto(&request.identity_type)?;
        let mut connection = self.db.pool().acquire().await.map_err(Error::from)?;
        register(&mut connection, &id, kind, agyn_core::time::now_micros()).await?;
        Response::ok(pb::RegisterIdentityResponse::default())
    }

    async fn unregister_identity(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, pb::UnregisterIdentityRequest>,
    ) -> ServiceResult<pb::UnregisterIdentityResponse> {
        let id = agyn_core::id::parse_id("identity_id", request.identity_id)?;
        sqlx::query("DELETE FROM identities WHERE id = $1")
            .bind(&id)
            .execute(self.db.pool())
            .await
            .map_err(Error::from)?;
        Response::ok(pb::UnregisterIdentityResponse::default())
    }

    async fn get_identity_type(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetIdentityTypeRequest>,
    ) -> ServiceResult<pb::GetIdentityTypeResponse> {
        let id = agyn_core::id::parse_id("identity_id", request.identity_id)?;
        let kind = kind_of(&self.db, &id)
            .await?
            .ok_or_else(|| Error::not_found("identity", &id))?;
        Response::ok(pb::GetIdentityTypeResponse {
            identity_type: to_proto(kind).into(),
            ..Default::default()
        })
    }

    async fn batch_get_identity_types(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, pb::BatchGetIdentityTypesRequest>,
    ) -> ServiceResult<pb::BatchGetIdentityTypesResponse> {
        let request = request.to_owned_message();
        if request.identity_ids.len() > MAX_BATCH {
            return Err(Error::invalid_field("identity_ids", "must name at most 500 ids").into());
        }
        let mut entries = Vec::with_capacity(request.identity_ids.len());
        for (index, raw) in request.identity_ids.iter().enumerate() {
            let id = agyn_core::id::parse_id(&format!("identity_ids[{index}]"), raw)?;
            if let Some(kind) = kind_of(&self.db, &id).await? {
                entries.push(pb::IdentityTypeEntry {
                    identity_id: id,
                    identity_type: to_proto(kind).into(),
                    ..Default::default()
                });
            }
        }
        Response::ok(pb::BatchGetIdentityTypesResponse {
            entries,
            ..Default::default()
        })
    }

    async fn set_nickname(
        &self,
        _ctx: RequestContext,
        _request: ServiceRequest<'_, pb::SetNicknameRequest>,
    ) -> ServiceResult<pb::SetNicknameResponse> {
        Err(not_built("SetNickname"))
    }

    async fn remove_nickname(
        &self,
        _ctx: RequestContext,
        _request: ServiceRequest<'_, pb::RemoveNicknameRequest>,
    ) -> ServiceResult<pb::RemoveNicknameResponse> {
        Err(not_built("RemoveNickname"))
    }

    async fn resolve_nickname(
        &self,
        _ctx: RequestContext,
        _request: ServiceRequest<'_, pb::ResolveNicknameRequest>,
    ) -> ServiceResult<pb::ResolveNicknameResponse> {
        Err(not_built("ResolveNickname"))
    }

    async fn batch_get_nicknames(
        &self,
        _ctx: RequestContext,
        _request: ServiceRequest<'_, pb::BatchGetNicknamesRequest>,
    ) -> ServiceResult<pb::BatchGetNicknamesResponse> {
        Err(not_built("BatchGetNicknames"))
    }

    async fn delete_organization_resources(
        &self,
        _ctx: RequestContext,
        _request: ServiceRequest<'_, pb::DeleteOrganizationResourcesRequest>,
    ) -> ServiceResult<pb::DeleteOrganizationResourcesResponse> {
        Err(not_built("DeleteOrganizationResources"))
    }
}
