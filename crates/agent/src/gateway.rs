//! The gateway calls of the agent, made as the workload: its certificate
//! makes the caller the agent identity with the workload's id.

use std::time::Duration;

use agyn_client::{
    Credential, Gateway, agents, files, into_error, notifications, runners, threads,
};
use agyn_core::{Error, Result};
use futures::StreamExt as _;
use futures::stream::BoxStream;

use crate::settings::Settings;

/// Page size of every list call, the maximum that the gateway serves.
const PAGE_SIZE: i32 = 200;

/// Waits between the attempts of a call that must eventually succeed.
const RETRY_DELAYS: [Duration; 4] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

/// The agent's connection to the gateway.
#[derive(Clone, Debug)]
pub struct GatewaySession {
    gateway: Gateway,
    /// The same connection without a default deadline, for the
    /// notification stream.
    streams: Gateway,
    agent_id: String,
    thread_id: String,
    workload_id: String,
}

impl GatewaySession {
    /// Prepares the connection, which the first call opens.
    pub fn connect(settings: &Settings) -> Result<Self> {
        let credential = Credential::Certificate {
            cert_pem: settings.credentials.cert_pem.clone(),
            key_pem: settings.credentials.key_pem.clone(),
        };
        let gateway = Gateway::connect(
            &settings.gateway_url,
            credential,
            Some(&settings.credentials.ca_pem),
        )?;
        Ok(Self {
            streams: gateway.without_default_timeout(),
            gateway,
            agent_id: settings.agent_id.clone(),
            thread_id: settings.thread_id.clone(),
            workload_id: settings.workload_id.clone(),
        })
    }

    pub async fn get_agent(&self) -> Result<agents::Agent> {
        let request = agents::GetAgentRequest {
            id: self.agent_id.clone(),
            ..Default::default()
        };
        let response = self.gateway.agents().get_agent(request).await;
        Ok(response
            .map_err(into_error)?
            .into_owned()
            .agent
            .into_option()
            .unwrap_or_default())
    }

    pub async fn list_skills(&self) -> Result<Vec<agents::Skill>> {
        let mut skills = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = agents::ListSkillsRequest {
                agent_id: self.agent_id.clone(),
                page_size: PAGE_SIZE,
                page_token,
                ..Default::default()
            };
            let page = self.gateway.agents().list_skills(request).await;
            let page = page.map_err(into_error)?.into_owned();
            skills.extend(page.skills);
            if page.next_page_token.is_empty() {
                return Ok(skills);
            }
            page_token = page.next_page_token;
        }
    }

    pub async fn list_mcps(&self) -> Result<Vec<agents::Mcp>> {
        let mut mcps = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = agents::ListMcpsRequest {
                agent_id: self.agent_id.clone(),
                page_size: PAGE_SIZE,
                page_token,
                ..Default::default()
            };
            let page = self.gateway.agents().list_mcps(request).await;
            let page = page.map_err(into_error)?.into_owned();
            mcps.extend(page.mcps);
            if page.next_page_token.is_empty() {
                return Ok(mcps);
            }
            page_token = page.next_page_token;
        }
    }

    pub async fn get_thread(&self) -> Result<threads::Thread> {
        let request = threads::GetThreadRequest {
            id: self.thread_id.clone(),
            ..Default::default()
        };
        let response = self.gateway.threads().get_thread(request).await;
        Ok(response
            .map_err(into_error)?
            .into_owned()
            .thread
            .into_option()
            .unwrap_or_default())
    }

    /// Returns every message of the thread that the agent has not acked, in
    /// sequence order.
    pub async fn unacked_messages(&self) -> Result<Vec<threads::Message>> {
        let mut messages = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = threads::GetUnackedMessagesRequest {
                thread_id: Some(self.thread_id.clone()),
                page_size: PAGE_SIZE,
                page_token,
                ..Default::default()
            };
            let page = self.gateway.threads().get_unacked_messages(request).await;
            let page = page.map_err(into_error)?.into_owned();
            messages.extend(page.messages);
            if page.next_page_token.is_empty() {
                return Ok(messages);
            }
            page_token = page.next_page_token;
        }
    }

    /// Returns one page of the thread's messages, newest first, and the
    /// token of the next page (empty after the last).
    pub async fn messages_newest_first(
        &self,
        page_token: String,
    ) -> Result<(Vec<threads::Message>, String)> {
        let request = threads::GetMessagesRequest {
            thread_id: self.thread_id.clone(),
            order: threads::MessageOrder::MESSAGE_ORDER_NEWEST_FIRST.into(),
            page_size: PAGE_SIZE,
            page_token,
            ..Default::default()
        };
        let page = self.gateway.threads().get_messages(request).await;
        let page = page.map_err(into_error)?.into_owned();
        Ok((page.messages, page.next_page_token))
    }

    /// Sends the reply, retrying while the gateway is unavailable. The
    /// request id makes every attempt store at most one message.
    pub async fn send_message(&self, body: &str, request_id: &str) -> Result<threads::Message> {
        retry_unavailable("SendMessage", || async {
            let request = threads::SendMessageRequest {
                thread_id: self.thread_id.clone(),
                body: body.to_string(),
                request_id: request_id.to_string(),
                ..Default::default()
            };
            let response = self.gateway.threads().send_message(request).await;
            Ok(response
                .map_err(into_error)?
                .into_owned()
                .message
                .into_option()
                .unwrap_or_default())
        })
        .await
    }

    /// Acks `message_ids` in the thread, retrying while the gateway is
    /// unavailable. Acking twice is harmless.
    pub async fn ack_messages(&self, message_ids: &[String]) -> Result<i32> {
        let mut acked = 0;
        // AckMessages takes at most 500 ids.
        for chunk in message_ids.chunks(500) {
            acked += retry_unavailable("AckMessages", || async {
                let request = threads::AckMessagesRequest {
                    message_ids: chunk.to_vec(),
                    thread_id: Some(self.thread_id.clone()),
                    ..Default::default()
                };
                let response = self.gateway.threads().ack_messages(request).await;
                Ok(response.map_err(into_error)?.into_owned().acked_count)
            })
            .await?;
        }
        Ok(acked)
    }

    pub async fn touch_workload(&self) -> Result<()> {
        let request = runners::TouchWorkloadRequest {
            id: self.workload_id.clone(),
            ..Default::default()
        };
        self.gateway
            .runners()
            .touch_workload(request)
            .await
            .map_err(into_error)?;
        Ok(())
    }

    pub async fn file_metadata(&self, file_id: &str) -> Result<files::FileInfo> {
        let request = files::GetFileMetadataRequest {
            id: file_id.to_string(),
            ..Default::default()
        };
        let response = self.gateway.files().get_file_metadata(request).await;
        Ok(response
            .map_err(into_error)?
            .into_owned()
            .file
            .into_option()
            .unwrap_or_default())
    }

    /// Downloads a file's content, failing when it exceeds `max_bytes`.
    pub async fn file_content(&self, file_id: &str, max_bytes: usize) -> Result<Vec<u8>> {
        let request = files::GetFileContentRequest {
            id: file_id.to_string(),
            ..Default::default()
        };
        let mut stream = self
            .gateway
            .files()
            .get_file_content(request)
            .await
            .map_err(into_error)?;
        let mut content = Vec::new();
        while let Some(message) = stream.message().await.map_err(into_error)? {
            content.extend_from_slice(&message.to_owned_message().chunk_data);
            if content.len() > max_bytes {
                return Err(Error::resource_exhausted(format!(
                    "file {file_id} is larger than {max_bytes} bytes"
                )));
            }
        }
        Ok(content)
    }

    /// Opens the notification stream of `rooms`, resuming after
    /// `last_event_id` when given. The stream ends after its first error.
    pub async fn subscribe(
        &self,
        rooms: &[&str],
        last_event_id: Option<String>,
    ) -> Result<BoxStream<'static, Result<notifications::SubscribeResponse>>> {
        let request = notifications::SubscribeRequest {
            rooms: rooms.iter().map(|room| room.to_string()).collect(),
            last_event_id,
            ..Default::default()
        };
        let stream = self
            .streams
            .notifications()
            .subscribe(request)
            .await
            .map_err(into_error)?;
        let messages = futures::stream::unfold(Some(stream), |stream| async move {
            let mut stream = stream?;
            match stream.message().await {
                Ok(Some(message)) => Some((Ok(message.to_owned_message()), Some(stream))),
                Ok(None) => None,
                Err(error) => Some((Err(into_error(error)), None)),
            }
        });
        Ok(messages.boxed())
    }
}

/// Runs `call` until it succeeds, fails with an error other than
/// `UNAVAILABLE`, or has been retried after each of [`RETRY_DELAYS`].
async fn retry_unavailable<T, F, Fut>(method: &str, call: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut delays = RETRY_DELAYS.iter();
    loop {
        match call().await {
            Err(error) if error.code() == agyn_core::error::Code::Unavailable => {
                let Some(delay) = delays.next() else {
                    return Err(error);
                };
                tracing::warn!(method, %error, retry_in_ms = delay.as_millis() as u64, "Gateway call failed; retrying");
                tokio::time::sleep(*delay).await;
            }
            outcome => return outcome,
        }
    }
}
