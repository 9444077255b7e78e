//! The internal `AuthorizationService`.

use agyn_api_authorization::agynio::api::authorization::v1 as pb;
use agyn_core::page::{Fingerprint, Page, SortOrder};
use agyn_core::{Caller, Error};
use connectrpc::{ConnectError, RequestContext, Response, ServiceRequest, ServiceResult};

use crate::{Authorizer, ObjectRef, Tuple, TupleFilter};

/// Most checks one `BatchCheck` call may carry.
pub const MAX_BATCH_CHECKS: usize = 100;

pub struct AuthorizationRpc {
    authorizer: Authorizer,
}

impl AuthorizationRpc {
    pub fn new(authorizer: Authorizer) -> Self {
        Self { authorizer }
    }
}

fn parse_tuple(field: &str, tuple: &pb::Tuple) -> Result<Tuple, Error> {
    Ok(Tuple::new(
        ObjectRef::parse(&format!("{field}.user"), &tuple.user)?,
        &tuple.relation,
        ObjectRef::parse(&format!("{field}.object"), &tuple.object)?,
    ))
}

fn tuple_to_proto(tuple: &Tuple) -> pb::Tuple {
    pb::Tuple {
        user: tuple.user.to_string(),
        relation: tuple.relation.clone(),
        object: tuple.object.to_string(),
        ..Default::default()
    }
}

fn caller_key(ctx: &RequestContext) -> String {
    match Caller::from_extensions(ctx.extensions()) {
        Ok(Caller::Identity { identity_id, .. }) => identity_id.clone(),
        Ok(Caller::Component(name)) => format!("component:{name}"),
        Err(_) => String::new(),
    }
}

impl pb::AuthorizationService for AuthorizationRpc {
    async fn check(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, pb::CheckRequest>,
    ) -> ServiceResult<pb::CheckResponse> {
        let user = ObjectRef::parse("user", request.user)?;
        let object = ObjectRef::parse("object", request.object)?;
        let allowed = self
            .authorizer
            .check(&user, request.relation, &object)
            .await?;
        Response::ok(pb::CheckResponse {
            allowed,
            ..Default::default()
        })
    }

    async fn batch_check(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, pb::BatchCheckRequest>,
    ) -> ServiceResult<pb::BatchCheckResponse> {
        let request = request.to_owned_message();
        if request.checks.len() > MAX_BATCH_CHECKS {
            return Err(Error::invalid_field("checks", "must hold at most 100 checks").into());
        }
        let mut response = pb::BatchCheckResponse::default();
        let results = &mut response.results;
        for (index, item) in request.checks.iter().enumerate() {
            let field = format!("checks[{index}]");
            if item.correlation_id.is_empty() {
                return Err(Error::invalid_field(
                    &format!("{field}.correlation_id"),
                    "is required",
                )
                .into());
            }
            if results.contains_key(&item.correlation_id) {
                return Err(Error::invalid_field(
                    &format!("{field}.correlation_id"),
                    "must be unique within the batch",
                )
                .into());
            }
            let user = ObjectRef::parse(&format!("{field}.user"), &item.user)?;
            let object = ObjectRef::parse(&format!("{field}.object"), &item.object)?;
            let allowed = self
                .authorizer
                .check(&user, &item.relation, &object)
                .await?;
            results.insert(item.correlation_id.clone(), allowed);
        }
        Response::ok(response)
    }

    async fn write(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, pb::WriteRequest>,
    ) -> ServiceResult<pb::WriteResponse> {
        let request = request.to_owned_message();
        let writes = request
            .writes
            .iter()
            .enumerate()
            .map(|(index, tuple)| parse_tuple(&format!("writes[{index}]"), tuple))
            .collect::<Result<Vec<_>, _>>()?;
        let deletes = request
            .deletes
            .iter()
            .enumerate()
            .map(|(index, tuple)| parse_tuple(&format!("deletes[{index}]"), tuple))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(tuple) = writes.iter().find(|tuple| deletes.contains(tuple)) {
            return Err(Error::invalid_argument(format!(
                "tuple {tuple} is both written and deleted"
            ))
            .into());
        }
        self.authorizer.write(&writes, &deletes).await?;
        Response::ok(pb::WriteResponse::default())
    }

    async fn read(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ReadRequest>,
    ) -> ServiceResult<pb::ReadResponse> {
        let request = request.to_owned_message();
        let (object_type, object_id) = request
            .object
            .split_once(':')
            .ok_or_else(|| Error::invalid_field("object", "must be <type>:<id> or <type>:"))?;
        if crate::model::object_type(object_type).is_none() {
            return Err(Error::invalid_field(
                "object",
                &format!("unknown object type {object_type:?}"),
            )
            .into());
        }
        let user = request
            .user
            .as_deref()
            .filter(|user| !user.is_empty())
            .map(|user| ObjectRef::parse("user", user))
            .transpose()?;
        let filter = TupleFilter {
            object_type: object_type.to_string(),
            object_id: (!object_id.is_empty()).then(|| object_id.to_string()),
            relation: request
                .relation
                .clone()
                .filter(|relation| !relation.is_empty()),
            user,
        };
        let fingerprint = Fingerprint::new("agynio.api.authorization.v1.AuthorizationService/Read")
            .with(&caller_key(&ctx))
            .with(&request.object)
            .with(filter.relation.as_deref().unwrap_or(""))
            .with(
                &filter
                    .user
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            );
        let page = Page::parse(
            request.page_size,
            &request.page_token,
            SortOrder::Ascending,
            fingerprint,
        )?;
        let (tuples, next_page_token) = self.authorizer.read(&filter, &page).await?;
        Response::ok(pb::ReadResponse {
            tuples: tuples.iter().map(tuple_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn list_objects(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListObjectsRequest>,
    ) -> ServiceResult<pb::ListObjectsResponse> {
        if crate::model::object_type(request.object_type).is_none() {
            return Err(ConnectError::from(Error::invalid_field(
                "object_type",
                &format!("unknown object type {:?}", request.object_type),
            )));
        }
        let user = ObjectRef::parse("user", request.user)?;
        let ids = self
            .authorizer
            .list_objects(request.object_type, request.relation, &user)
            .await?;
        Response::ok(pb::ListObjectsResponse {
            objects: ids
                .into_iter()
                .map(|id| format!("{}:{id}", request.object_type))
                .collect(),
            ..Default::default()
        })
    }
}
