//! `ThreadsService` (internal) and `ThreadsGateway` (public) over
//! [`Threads`].
//!
//! The gateway methods dispatch to the internal service unchanged, with
//! the caller the gateway attached to the request. The internal-only
//! methods trust the internal listener's caller lists and perform no
//! relationship checks.

use agyn_api_threads::agynio::api::threads::v1 as pb;
use agyn_core::Error;
use agyn_core::caller::request_caller;
use agyn_core::page::SortOrder;
use agyn_core::time::timestamp;
use connectrpc::{RequestContext, Response, ServiceRequest, ServiceResult};

use crate::ops::ListView;
use crate::participants::{ParticipantEntry, ParticipantRef};
use crate::store::{MessageRecord, ParticipantRecord, PendingWork, ThreadRecord, ThreadStatus};
use crate::{SendInput, Threads};

/// The internal `ThreadsService`.
#[derive(Clone)]
pub struct ThreadsRpc {
    threads: Threads,
}

impl ThreadsRpc {
    pub fn new(threads: Threads) -> Self {
        Self { threads }
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

fn status_to_proto(status: ThreadStatus) -> pb::ThreadStatus {
    match status {
        ThreadStatus::Active => pb::ThreadStatus::THREAD_STATUS_ACTIVE,
        ThreadStatus::Archived => pb::ThreadStatus::THREAD_STATUS_ARCHIVED,
        ThreadStatus::Degraded => pb::ThreadStatus::THREAD_STATUS_DEGRADED,
    }
}

fn participant_to_proto(participant: &ParticipantRecord) -> pb::Participant {
    pb::Participant {
        id: participant.id.clone(),
        identity_type: buffa::EnumValue::from(participant.kind.proto_number()),
        // Empty until the nickname registry exists (see the nickname
        // case of `Threads::resolve_participant`).
        nickname: String::new(),
        joined_at: timestamp(participant.joined_at).into(),
        passive: participant.passive,
        ..Default::default()
    }
}

pub fn thread_to_proto(thread: &ThreadRecord) -> pb::Thread {
    pb::Thread {
        meta: meta(&thread.id, thread.created_at, thread.updated_at).into(),
        organization_id: thread.organization_id.clone(),
        participants: thread
            .participants
            .iter()
            .map(participant_to_proto)
            .collect(),
        status: status_to_proto(thread.status).into(),
        message_count: thread.message_count,
        last_message_at: thread.last_message_at.map(timestamp).into(),
        degrade_reason: thread.degrade_reason.clone(),
        ..Default::default()
    }
}

pub fn message_to_proto(message: &MessageRecord) -> pb::Message {
    pb::Message {
        meta: meta(&message.id, message.created_at, message.created_at).into(),
        thread_id: message.thread_id.clone(),
        sender_id: message.sender_id.clone(),
        body: message.body.clone(),
        file_ids: message.file_ids.clone(),
        ..Default::default()
    }
}

fn pending_to_proto(item: &PendingWork) -> pb::PendingAgentWork {
    pb::PendingAgentWork {
        thread_id: item.thread_id.clone(),
        agent_id: item.agent_id.clone(),
        organization_id: item.organization_id.clone(),
        unacked_count: clamp(item.unacked_count),
        oldest_unacked_at: timestamp(item.oldest_unacked_at).into(),
        ..Default::default()
    }
}

/// Converts a count for an `int32` field, saturating at `i32::MAX`.
fn clamp(count: impl TryInto<i32>) -> i32 {
    count.try_into().unwrap_or(i32::MAX)
}

fn participant_ref(identifier: &pb::ParticipantIdentifier) -> Option<ParticipantRef> {
    use pb::participant_identifier::Identifier;
    match identifier.identifier.as_ref()? {
        Identifier::Id(id) => Some(ParticipantRef::Id(id.clone())),
        Identifier::Nickname(nickname) => Some(ParticipantRef::Nickname(nickname.clone())),
    }
}

fn list_view(value: &buffa::EnumValue<pb::ThreadListView>) -> Result<ListView, Error> {
    match value.as_known() {
        Some(pb::ThreadListView::THREAD_LIST_VIEW_UNSPECIFIED)
        | Some(pb::ThreadListView::THREAD_LIST_VIEW_MINE) => Ok(ListView::Mine),
        Some(pb::ThreadListView::THREAD_LIST_VIEW_ORGANIZATION) => Ok(ListView::Organization),
        None => Err(Error::invalid_field("view", "unknown view")),
    }
}

fn status_filter(
    values: &[buffa::EnumValue<pb::ThreadStatus>],
) -> Result<Vec<ThreadStatus>, Error> {
    values
        .iter()
        .enumerate()
        .map(|(index, value)| match value.as_known() {
            Some(pb::ThreadStatus::THREAD_STATUS_ACTIVE) => Ok(ThreadStatus::Active),
            Some(pb::ThreadStatus::THREAD_STATUS_ARCHIVED) => Ok(ThreadStatus::Archived),
            Some(pb::ThreadStatus::THREAD_STATUS_DEGRADED) => Ok(ThreadStatus::Degraded),
            Some(pb::ThreadStatus::THREAD_STATUS_UNSPECIFIED) => Err(Error::invalid_field(
                &format!("statuses[{index}]"),
                "must not be THREAD_STATUS_UNSPECIFIED",
            )),
            None => Err(Error::invalid_field(
                &format!("statuses[{index}]"),
                "unknown status",
            )),
        })
        .collect()
}

fn message_order(value: &buffa::EnumValue<pb::MessageOrder>) -> Result<SortOrder, Error> {
    match value.as_known() {
        Some(pb::MessageOrder::MESSAGE_ORDER_UNSPECIFIED)
        | Some(pb::MessageOrder::MESSAGE_ORDER_OLDEST_FIRST) => Ok(SortOrder::Ascending),
        Some(pb::MessageOrder::MESSAGE_ORDER_NEWEST_FIRST) => Ok(SortOrder::Descending),
        None => Err(Error::invalid_field("order", "unknown order")),
    }
}

impl pb::ThreadsService for ThreadsRpc {
    async fn create_thread(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::CreateThreadRequest>,
    ) -> ServiceResult<pb::CreateThreadResponse> {
        let request = request.to_owned_message();
        let entries: Vec<ParticipantEntry> = request
            .participants
            .iter()
            .enumerate()
            .map(|(index, identifier)| {
                ParticipantEntry::listed("participants", index, participant_ref(identifier))
            })
            .collect();
        let thread = self
            .threads
            .create_thread(
                request_caller(&ctx)?,
                request.organization_id.as_deref(),
                &entries,
                &request.request_id,
            )
            .await?;
        Response::ok(pb::CreateThreadResponse {
            thread: thread_to_proto(&thread).into(),
            ..Default::default()
        })
    }

    async fn get_thread(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetThreadRequest>,
    ) -> ServiceResult<pb::GetThreadResponse> {
        let thread = self
            .threads
            .get_thread(request_caller(&ctx)?, request.id)
            .await?;
        Response::ok(pb::GetThreadResponse {
            thread: thread_to_proto(&thread).into(),
            ..Default::default()
        })
    }

    async fn list_threads(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListThreadsRequest>,
    ) -> ServiceResult<pb::ListThreadsResponse> {
        let request = request.to_owned_message();
        let view = list_view(&request.view)?;
        let statuses = status_filter(&request.statuses)?;
        let (threads, next_page_token) = self
            .threads
            .list_threads(
                request_caller(&ctx)?,
                view,
                request.organization_id.as_deref(),
                &statuses,
                request.page_size,
                &request.page_token,
            )
            .await?;
        Response::ok(pb::ListThreadsResponse {
            threads: threads.iter().map(thread_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn send_message(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::SendMessageRequest>,
    ) -> ServiceResult<pb::SendMessageResponse> {
        let request = request.to_owned_message();
        let input = SendInput {
            thread_id: &request.thread_id,
            body: &request.body,
            file_ids: &request.file_ids,
            request_id: &request.request_id,
        };
        let message = self
            .threads
            .send_message(request_caller(&ctx)?, &input)
            .await?;
        Response::ok(pb::SendMessageResponse {
            message: message_to_proto(&message).into(),
            ..Default::default()
        })
    }

    async fn ack_messages(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::AckMessagesRequest>,
    ) -> ServiceResult<pb::AckMessagesResponse> {
        let request = request.to_owned_message();
        let acked = self
            .threads
            .ack_messages(
                request_caller(&ctx)?,
                &request.message_ids,
                request.thread_id.as_deref(),
            )
            .await?;
        Response::ok(pb::AckMessagesResponse {
            acked_count: clamp(acked),
            ..Default::default()
        })
    }

    async fn get_unacked_messages(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetUnackedMessagesRequest>,
    ) -> ServiceResult<pb::GetUnackedMessagesResponse> {
        let request = request.to_owned_message();
        let (messages, next_page_token) = self
            .threads
            .unacked_messages(
                request_caller(&ctx)?,
                request.thread_id.as_deref(),
                request.page_size,
                &request.page_token,
            )
            .await?;
        Response::ok(pb::GetUnackedMessagesResponse {
            messages: messages.iter().map(message_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn get_messages(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetMessagesRequest>,
    ) -> ServiceResult<pb::GetMessagesResponse> {
        let request = request.to_owned_message();
        let order = message_order(&request.order)?;
        let (messages, next_page_token) = self
            .threads
            .get_messages(
                request_caller(&ctx)?,
                &request.thread_id,
                order,
                request.page_size,
                &request.page_token,
            )
            .await?;
        Response::ok(pb::GetMessagesResponse {
            messages: messages.iter().map(message_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn add_participant(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::AddParticipantRequest>,
    ) -> ServiceResult<pb::AddParticipantResponse> {
        let request = request.to_owned_message();
        let entry = ParticipantEntry::single(
            "participant",
            request.participant.as_option().and_then(participant_ref),
        );
        let thread = self
            .threads
            .add_participant(
                request_caller(&ctx)?,
                &request.thread_id,
                &entry,
                request.passive,
                &request.request_id,
            )
            .await?;
        Response::ok(pb::AddParticipantResponse {
            thread: thread_to_proto(&thread).into(),
            ..Default::default()
        })
    }

    async fn degrade_thread(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::DegradeThreadRequest>,
    ) -> ServiceResult<pb::DegradeThreadResponse> {
        let thread = self
            .threads
            .degrade_thread(request_caller(&ctx)?, request.id, request.reason)
            .await?;
        Response::ok(pb::DegradeThreadResponse {
            thread: thread_to_proto(&thread).into(),
            ..Default::default()
        })
    }

    async fn get_unacked_message_counts(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetUnackedMessageCountsRequest>,
    ) -> ServiceResult<pb::GetUnackedMessageCountsResponse> {
        let request = request.to_owned_message();
        let counts = self
            .threads
            .unacked_message_counts(&request.participant_id, request.organization_id.as_deref())
            .await?;
        Response::ok(pb::GetUnackedMessageCountsResponse {
            counts_by_thread_id: counts
                .into_iter()
                .map(|(thread_id, count)| (thread_id, clamp(count)))
                .collect(),
            ..Default::default()
        })
    }

    async fn list_pending_agent_work(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListPendingAgentWorkRequest>,
    ) -> ServiceResult<pb::ListPendingAgentWorkResponse> {
        let request = request.to_owned_message();
        let thread_ids = request
            .thread_ids
            .as_option()
            .map(|list| list.values.as_slice());
        let (items, next_page_token) = self
            .threads
            .list_pending_agent_work(
                request_caller(&ctx)?,
                thread_ids,
                request.page_size,
                &request.page_token,
            )
            .await?;
        Response::ok(pb::ListPendingAgentWorkResponse {
            items: items.iter().map(pending_to_proto).collect(),
            next_page_token,
            ..Default::default()
        })
    }

    async fn archive_thread(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, pb::ArchiveThreadRequest>,
    ) -> ServiceResult<pb::ArchiveThreadResponse> {
        let thread = self.threads.archive_thread(request.id).await?;
        Response::ok(pb::ArchiveThreadResponse {
            thread: thread_to_proto(&thread).into(),
            ..Default::default()
        })
    }

    async fn batch_get_threads(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, pb::BatchGetThreadsRequest>,
    ) -> ServiceResult<pb::BatchGetThreadsResponse> {
        let request = request.to_owned_message();
        let threads = self.threads.batch_get_threads(&request.ids).await?;
        Response::ok(pb::BatchGetThreadsResponse {
            threads: threads.iter().map(thread_to_proto).collect(),
            ..Default::default()
        })
    }

    async fn list_threads_referencing_file(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListThreadsReferencingFileRequest>,
    ) -> ServiceResult<pb::ListThreadsReferencingFileResponse> {
        let thread_ids = self
            .threads
            .threads_referencing_file(request.file_id)
            .await?;
        Response::ok(pb::ListThreadsReferencingFileResponse {
            thread_ids,
            ..Default::default()
        })
    }

    async fn get_message_internal(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetMessageInternalRequest>,
    ) -> ServiceResult<pb::GetMessageInternalResponse> {
        let (message, organization_id) = self.threads.get_message_internal(request.id).await?;
        Response::ok(pb::GetMessageInternalResponse {
            message: message_to_proto(&message).into(),
            organization_id,
            ..Default::default()
        })
    }

    async fn delete_organization_resources(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, pb::DeleteOrganizationResourcesRequest>,
    ) -> ServiceResult<pb::DeleteOrganizationResourcesResponse> {
        self.threads
            .delete_organization_resources(request.organization_id)
            .await?;
        Response::ok(pb::DeleteOrganizationResourcesResponse::default())
    }
}

/// The public `ThreadsGateway`: every method dispatches to [`ThreadsRpc`].
#[derive(Clone)]
pub struct ThreadsGatewayRpc {
    inner: ThreadsRpc,
}

impl ThreadsGatewayRpc {
    pub fn new(threads: Threads) -> Self {
        Self {
            inner: ThreadsRpc::new(threads),
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
                pb::ThreadsService::$method(&self.inner, ctx, request).await
            }
        )*
    };
}

impl pb::ThreadsGateway for ThreadsGatewayRpc {
    dispatch! {
        create_thread(pb::CreateThreadRequest) -> pb::CreateThreadResponse;
        get_thread(pb::GetThreadRequest) -> pb::GetThreadResponse;
        list_threads(pb::ListThreadsRequest) -> pb::ListThreadsResponse;
        send_message(pb::SendMessageRequest) -> pb::SendMessageResponse;
        ack_messages(pb::AckMessagesRequest) -> pb::AckMessagesResponse;
        get_unacked_messages(pb::GetUnackedMessagesRequest) -> pb::GetUnackedMessagesResponse;
        get_messages(pb::GetMessagesRequest) -> pb::GetMessagesResponse;
        add_participant(pb::AddParticipantRequest) -> pb::AddParticipantResponse;
        degrade_thread(pb::DegradeThreadRequest) -> pb::DegradeThreadResponse;
    }
}
