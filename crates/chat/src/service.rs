//! `ChatService` (internal) and `ChatGateway` (public) over [`Chat`].
//!
//! The gateway methods dispatch to the internal service unchanged, with
//! the caller the gateway attached to the request.

use agyn_api_chat::agynio::api::chat::v1 as pb;
use agyn_core::Error;
use agyn_core::caller::request_caller;
use agyn_core::time::timestamp;
use agyn_threads::{ParticipantRecord, ThreadStatus};
use connectrpc::{RequestContext, Response, ServiceRequest, ServiceResult};

use crate::Chat;
use crate::ops::{ActivityStatus, Conversation, CreateInput};
use crate::store::ConversationStatus;

/// The internal `ChatService`.
#[derive(Clone)]
pub struct ChatRpc {
    chat: Chat,
}

impl ChatRpc {
    pub fn new(chat: Chat) -> Self {
        Self { chat }
    }
}

/// Converts a count for an `int32` field, saturating at `i32::MAX`.
fn clamp(count: impl TryInto<i32>) -> i32 {
    count.try_into().unwrap_or(i32::MAX)
}

fn status_to_proto(status: ConversationStatus) -> pb::ConversationStatus {
    match status {
        ConversationStatus::Open => pb::ConversationStatus::CONVERSATION_STATUS_OPEN,
        ConversationStatus::Closed => pb::ConversationStatus::CONVERSATION_STATUS_CLOSED,
    }
}

fn thread_status_to_proto(status: ThreadStatus) -> pb::ConversationThreadStatus {
    match status {
        ThreadStatus::Active => pb::ConversationThreadStatus::CONVERSATION_THREAD_STATUS_ACTIVE,
        ThreadStatus::Archived => pb::ConversationThreadStatus::CONVERSATION_THREAD_STATUS_ARCHIVED,
        ThreadStatus::Degraded => pb::ConversationThreadStatus::CONVERSATION_THREAD_STATUS_DEGRADED,
    }
}

fn activity_to_proto(activity: ActivityStatus) -> pb::ConversationActivityStatus {
    match activity {
        ActivityStatus::Unspecified => {
            pb::ConversationActivityStatus::CONVERSATION_ACTIVITY_STATUS_UNSPECIFIED
        }
        ActivityStatus::Pending => {
            pb::ConversationActivityStatus::CONVERSATION_ACTIVITY_STATUS_PENDING
        }
        ActivityStatus::Finished => {
            pb::ConversationActivityStatus::CONVERSATION_ACTIVITY_STATUS_FINISHED
        }
    }
}

fn participant_to_proto(participant: &ParticipantRecord) -> pb::ConversationParticipant {
    pb::ConversationParticipant {
        id: participant.id.clone(),
        identity_type: buffa::EnumValue::from(participant.kind.proto_number()),
        // Empty until the nickname registry exists.
        nickname: String::new(),
        joined_at: timestamp(participant.joined_at).into(),
        passive: participant.passive,
        ..Default::default()
    }
}

pub fn conversation_to_proto(conversation: &Conversation) -> pb::Conversation {
    let record = &conversation.record;
    let thread = &conversation.thread;
    pb::Conversation {
        meta: pb::EntityMeta {
            id: record.thread_id.clone(),
            created_at: timestamp(record.created_at).into(),
            updated_at: timestamp(conversation.updated_at()).into(),
            ..Default::default()
        }
        .into(),
        organization_id: record.organization_id.clone(),
        participants: thread
            .participants
            .iter()
            .map(participant_to_proto)
            .collect(),
        status: status_to_proto(record.status).into(),
        summary: record.summary.clone(),
        thread_status: thread_status_to_proto(thread.status).into(),
        activity_status: activity_to_proto(conversation.activity).into(),
        unread_count: clamp(conversation.unread_count),
        active_workload_ids: Vec::new(),
        message_count: thread.message_count,
        last_message_at: thread.last_message_at.map(timestamp).into(),
        ..Default::default()
    }
}

/// Reads a status. UNSPECIFIED is `None`, which means every status in a
/// list filter and is rejected by UpdateConversation.
fn status_filter(
    value: &buffa::EnumValue<pb::ConversationStatus>,
) -> Result<Option<ConversationStatus>, Error> {
    match value.as_known() {
        Some(pb::ConversationStatus::CONVERSATION_STATUS_UNSPECIFIED) => Ok(None),
        Some(pb::ConversationStatus::CONVERSATION_STATUS_OPEN) => {
            Ok(Some(ConversationStatus::Open))
        }
        Some(pb::ConversationStatus::CONVERSATION_STATUS_CLOSED) => {
            Ok(Some(ConversationStatus::Closed))
        }
        None => Err(Error::invalid_field("status", "unknown status")),
    }
}

impl pb::ChatService for ChatRpc {
    async fn list_conversations(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListConversationsRequest>,
    ) -> ServiceResult<pb::ListConversationsResponse> {
        let request = request.to_owned_message();
        let status = status_filter(&request.status)?;
        let (conversations, next_page_token) = self
            .chat
            .list_conversations(
                request_caller(&ctx)?,
                &request.organization_id,
                status,
                request.page_size,
                &request.page_token,
            )
            .await?;
        Response::ok(pb::ListConversationsResponse {
            conversations: conversations.iter().map(conversation_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn get_conversation(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetConversationRequest>,
    ) -> ServiceResult<pb::GetConversationResponse> {
        let conversation = self
            .chat
            .get_conversation(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::GetConversationResponse {
            conversation: conversation_to_proto(&conversation).into(),
            ..Default::default()
        })
    }

    async fn create_conversation(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::CreateConversationRequest>,
    ) -> ServiceResult<pb::CreateConversationResponse> {
        let request = request.to_owned_message();
        let input = CreateInput {
            organization_id: &request.organization_id,
            participant_ids: &request.participant_ids,
            summary: request.summary.as_deref(),
            request_id: &request.request_id,
        };
        let conversation = self
            .chat
            .create_conversation(request_caller(&ctx)?, &input)
            .await?;
        Response::ok(pb::CreateConversationResponse {
            conversation: conversation_to_proto(&conversation).into(),
            ..Default::default()
        })
    }

    async fn update_conversation(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::UpdateConversationRequest>,
    ) -> ServiceResult<pb::UpdateConversationResponse> {
        let request = request.to_owned_message();
        let status = request.status.as_ref().map(status_filter).transpose()?;
        let conversation = self
            .chat
            .update_conversation(
                request_caller(&ctx)?,
                &request.id,
                status,
                request.summary.as_deref(),
            )
            .await?;
        Response::ok(pb::UpdateConversationResponse {
            conversation: conversation_to_proto(&conversation).into(),
            ..Default::default()
        })
    }

    async fn mark_read(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::MarkReadRequest>,
    ) -> ServiceResult<pb::MarkReadResponse> {
        let request = request.to_owned_message();
        let read = self
            .chat
            .mark_read(
                request_caller(&ctx)?,
                &request.conversation_id,
                &request.message_ids,
            )
            .await?;
        Response::ok(pb::MarkReadResponse {
            read_count: clamp(read),
            ..Default::default()
        })
    }

    async fn get_unacked_message_counts(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetUnackedMessageCountsRequest>,
    ) -> ServiceResult<pb::GetUnackedMessageCountsResponse> {
        let request = request.to_owned_message();
        let counts = self
            .chat
            .unread_counts(request_caller(&ctx)?, request.organization_id.as_deref())
            .await?;
        let total: i64 = counts.values().sum();
        Response::ok(pb::GetUnackedMessageCountsResponse {
            counts_by_conversation_id: counts
                .into_iter()
                .map(|(id, count)| (id, clamp(count)))
                .collect(),
            total: clamp(total),
            ..Default::default()
        })
    }

    async fn delete_organization_resources(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, pb::DeleteOrganizationResourcesRequest>,
    ) -> ServiceResult<pb::DeleteOrganizationResourcesResponse> {
        self.chat
            .delete_organization_resources(request.organization_id)
            .await?;
        Response::ok(pb::DeleteOrganizationResourcesResponse::default())
    }
}

/// The public `ChatGateway`: every method dispatches to [`ChatRpc`].
#[derive(Clone)]
pub struct ChatGatewayRpc {
    inner: ChatRpc,
}

impl ChatGatewayRpc {
    pub fn new(chat: Chat) -> Self {
        Self {
            inner: ChatRpc::new(chat),
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
                pb::ChatService::$method(&self.inner, ctx, request).await
            }
        )*
    };
}

impl pb::ChatGateway for ChatGatewayRpc {
    dispatch! {
        list_conversations(pb::ListConversationsRequest) -> pb::ListConversationsResponse;
        get_conversation(pb::GetConversationRequest) -> pb::GetConversationResponse;
        create_conversation(pb::CreateConversationRequest) -> pb::CreateConversationResponse;
        update_conversation(pb::UpdateConversationRequest) -> pb::UpdateConversationResponse;
        mark_read(pb::MarkReadRequest) -> pb::MarkReadResponse;
        get_unacked_message_counts(pb::GetUnackedMessageCountsRequest) -> pb::GetUnackedMessageCountsResponse;
    }
}
