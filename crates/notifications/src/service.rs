//! `NotificationsService` (internal) and `NotificationsGateway` (public)
//! over [`Notifications`].
//!
//! The gateway's Subscribe is the internal Subscribe, with the caller the
//! gateway attached to the request.

use agyn_api_notifications::agynio::api::notifications::v1 as pb;
use agyn_core::caller::request_caller;
use agyn_core::time::timestamp;
use agyn_core::{Caller, Error};
use connectrpc::{
    ConnectError, RequestContext, Response, ServiceRequest, ServiceResult, ServiceStream,
};

use crate::Notifications;

/// The internal `NotificationsService`.
#[derive(Clone)]
pub struct NotificationsRpc {
    notifications: Notifications,
}

impl NotificationsRpc {
    pub fn new(notifications: Notifications) -> Self {
        Self { notifications }
    }
}

async fn subscribe(
    notifications: &Notifications,
    ctx: &RequestContext,
    request: ServiceRequest<'_, pb::SubscribeRequest>,
) -> ServiceResult<ServiceStream<pb::SubscribeResponse>> {
    let caller = request_caller(ctx)?.clone();
    let request = request.to_owned_message();
    let stream = notifications
        .subscribe(caller, &request.rooms, request.last_event_id.as_deref())
        .await?;
    Response::stream_ok(stream)
}

impl pb::NotificationsService for NotificationsRpc {
    async fn subscribe(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::SubscribeRequest>,
    ) -> ServiceResult<ServiceStream<pb::SubscribeResponse>> {
        subscribe(&self.notifications, &ctx, request).await
    }

    async fn publish(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::PublishRequest>,
    ) -> ServiceResult<pb::PublishResponse> {
        let Caller::Component(component) = request_caller(&ctx)? else {
            return Err(Error::permission_denied(
                "permission denied: only platform components may publish",
            )
            .into());
        };
        let request = request.to_owned_message();
        let source = if request.source.is_empty() {
            component.to_string()
        } else {
            request.source
        };
        let payload = match request.payload.as_option() {
            Some(payload) => payload_from_proto(payload)?,
            None => serde_json::Map::new(),
        };
        let envelope = self
            .notifications
            .events()
            .publish_and_wait(source, request.event, request.rooms, payload)
            .await?;
        Response::ok(pb::PublishResponse {
            id: envelope.id,
            ts: timestamp(envelope.ts).into(),
            ..Default::default()
        })
    }
}

/// Converts a `google.protobuf.Struct` into a JSON object. Fails with
/// `invalid_argument` on a number JSON cannot hold (NaN or infinite).
fn payload_from_proto(
    payload: &buffa_types::google::protobuf::Struct,
) -> Result<serde_json::Map<String, serde_json::Value>, ConnectError> {
    match serde_json::to_value(payload) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) | Err(_) => Err(Error::invalid_field(
            "payload",
            "must hold only values JSON can represent (no NaN or infinite numbers)",
        )
        .into()),
    }
}

/// The public `NotificationsGateway`, which serves the internal
/// Subscribe.
#[derive(Clone)]
pub struct NotificationsGatewayRpc {
    notifications: Notifications,
}

impl NotificationsGatewayRpc {
    pub fn new(notifications: Notifications) -> Self {
        Self { notifications }
    }
}

impl pb::NotificationsGateway for NotificationsGatewayRpc {
    async fn subscribe(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::SubscribeRequest>,
    ) -> ServiceResult<ServiceStream<pb::SubscribeResponse>> {
        subscribe(&self.notifications, &ctx, request).await
    }
}
