//! One turn: every unacked message of the thread becomes the batch, the
//! model replies to it (calling the tools it requests), and the reply is
//! stored before the batch is acked.

use std::collections::HashMap;
use std::time::Duration;

use agyn_client::threads;
use agyn_core::error::Code;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::AgentError;
use crate::agent::Agent;
use crate::context::{self, Attachment, MAX_INLINE_IMAGE_BYTES};
use crate::gateway::GatewaySession;
use crate::hooks::{HookContext, HookEvent};
use crate::journal::TurnRecord;
use crate::llm::{LlmError, LlmRequest, LlmResponse};
use crate::trace::{SpanData, SpanName};

/// Largest reply body SendMessage accepts.
pub const MAX_REPLY_BYTES: usize = 65_536;

/// Context-overflow retries of one model call, each dropping the older
/// half of the history.
const MAX_OVERFLOW_RETRIES: u32 = 3;

/// Thread messages read while looking for the batch and its history,
/// beyond which the history is cut short.
const MAX_MESSAGES_SCANNED: usize = 10_000;

/// Total bytes of inline images in one request.
const MAX_INLINE_IMAGES_BYTES: usize = 20 * 1024 * 1024;

/// The reason a turn ended without finishing.
#[derive(Debug)]
pub(crate) enum TurnError {
    /// The model kept failing and `reply_on_error` is false: the process
    /// ends without acking.
    Fatal(AgentError),
    /// TouchWorkload reported that the workload is stopping.
    Stopping,
    /// A gateway call failed; the batch stays unacked for the next try.
    Retry(String),
}

/// A model call that failed for good, with a short reason for the reply.
struct ModelFailure(String);

impl Agent {
    /// Runs one turn. Returns whether there were messages to handle.
    pub(crate) async fn turn(&mut self) -> Result<bool, TurnError> {
        let batch = self
            .gateway
            .unacked_messages()
            .await
            .map_err(|error| TurnError::Retry(format!("GetUnackedMessages failed: {error}")))?;
        if batch.is_empty() {
            return Ok(false);
        }
        let _touch = TouchLoop::start(
            self.gateway.clone(),
            self.settings.timing.touch_interval,
            self.stopping.clone(),
        )
        .await?;
        self.turns_started += 1;
        tracing::info!(
            messages = batch.len(),
            first_message_id = %batch[0].meta.id,
            "Turn started"
        );
        self.answer(&batch).await?;
        Ok(true)
    }

    async fn answer(&mut self, batch: &[threads::Message]) -> Result<(), TurnError> {
        let message_ids: Vec<String> = batch
            .iter()
            .map(|message| message.meta.id.clone())
            .collect();
        let first_id = message_ids[0].clone();
        self.hooks
            .run(
                HookEvent::TurnStart,
                HookContext {
                    message_ids: &message_ids,
                    reply_message_id: None,
                },
            )
            .await;

        let thread = self
            .gateway
            .get_thread()
            .await
            .map_err(|error| TurnError::Retry(format!("GetThread failed: {error}")))?;
        if is_closed(&thread) {
            tracing::info!(status = %thread.status, "The thread no longer takes messages; acking the batch");
            self.ack(&message_ids).await?;
            return Ok(());
        }

        for message in batch {
            let mut span = SpanData::start(SpanName::InvocationMessage, &message.meta.id, None);
            span.text("agyn.thread.message.id", &message.meta.id)
                .text("agyn.message.role", "user")
                .long_text("agyn.message.text", &message.body)
                .text("agyn.message.sender_id", &message.sender_id);
            self.tracer.record(&span);
            self.open_spans.push(span);
        }
        let parent = self.open_spans.last().map(|span| span.id);

        let (mut input, history_len) = self.build_input(&thread, batch).await?;
        let instructions = context::instructions(
            &self.settings.config.system_prompt,
            &self.skills,
            &self.profile,
            &self.settings.agent_id,
            &thread.participants,
        );
        let resumed = self.journal.resume(&first_id);
        self.toolbox
            .reconnect_missing(self.settings.timing.mcp_reconnect_limit)
            .await;
        let tools = self.toolbox.definitions().await;

        let mut conversation = Conversation {
            instructions,
            input: std::mem::take(&mut input),
            history_len,
            turn_items: resumed,
            tools,
            first_id: first_id.clone(),
            parent,
            calls: 0,
        };
        let reply = match self.converse(&mut conversation).await {
            Ok(text) => text,
            Err(ModelFailure(reason)) if self.settings.config.reply_on_error => {
                tracing::warn!(%reason, "Model calls failed; replying with the reason");
                format!("I could not complete this request: {reason}")
            }
            Err(ModelFailure(reason)) => {
                self.abort_open_spans(&reason);
                return Err(TurnError::Fatal(AgentError::Model(reason)));
            }
        };

        let reply_message_id = self.send_reply(&reply, &first_id).await?;
        self.ack(&message_ids).await?;
        self.journal.clear();
        for mut span in self.open_spans.drain(..) {
            span.end(None);
            self.tracer.record(&span);
        }
        tracing::info!(
            messages = message_ids.len(),
            reply_message_id = reply_message_id.as_deref().unwrap_or_default(),
            "Turn finished"
        );
        self.hooks
            .run(
                HookEvent::TurnEnd,
                HookContext {
                    message_ids: &message_ids,
                    reply_message_id: reply_message_id.as_deref(),
                },
            )
            .await;
        Ok(())
    }

    /// Stores the reply, cut to [`MAX_REPLY_BYTES`]; returns its id, or
    /// `None` when nothing was stored because the reply is empty or the
    /// thread no longer takes messages.
    async fn send_reply(&self, reply: &str, first_id: &str) -> Result<Option<String>, TurnError> {
        let body = context::truncate_utf8(reply, MAX_REPLY_BYTES);
        if body.trim().is_empty() {
            tracing::info!("The model's reply is empty; acking without a reply");
            return Ok(None);
        }
        let request_id = context::reply_request_id(&self.settings.workload_id, first_id);
        match self.gateway.send_message(body, &request_id).await {
            Ok(message) => Ok(Some(message.meta.id.clone())),
            Err(error)
                if error.code() == Code::FailedPrecondition
                    && matches!(error.message(), "thread degraded" | "thread archived") =>
            {
                tracing::info!(%error, "The thread no longer takes messages; acking the batch");
                Ok(None)
            }
            // NOTE: the request id names the turn by its first message only,
            // so an earlier attempt whose reply differs (a model is not
            // deterministic) makes the key collide. That reply is taken as
            // the turn's, even when this batch has grown since.
            Err(error) if error.code() == Code::AlreadyExists => {
                tracing::info!(%error, "An earlier attempt of this turn already stored its reply");
                Ok(None)
            }
            Err(error) => Err(TurnError::Retry(format!("SendMessage failed: {error}"))),
        }
    }

    async fn ack(&self, message_ids: &[String]) -> Result<(), TurnError> {
        self.gateway
            .ack_messages(message_ids)
            .await
            .map(|_| ())
            .map_err(|error| TurnError::Retry(format!("AckMessages failed: {error}")))
    }

    /// Calls the model until a response has no function calls, running the
    /// requested calls in between. Returns the reply text.
    async fn converse(&mut self, conversation: &mut Conversation) -> Result<String, ModelFailure> {
        let max_iterations = self.settings.config.max_tool_iterations;
        let mut iterations = 0;
        loop {
            let (response, call_span) = self.call_model(conversation).await?;
            conversation
                .turn_items
                .extend(response.items.iter().cloned());
            if response.function_calls.is_empty() {
                return Ok(response.text);
            }
            if iterations >= max_iterations {
                tracing::warn!(iterations, "Tool iteration limit reached");
                return Ok(format!("Stopped after {iterations} tool iterations."));
            }
            iterations += 1;
            self.save_journal(conversation);
            for call in &response.function_calls {
                let key = format!("{}/{}", conversation.first_id, call.call_id);
                let mut span = SpanData::start(SpanName::ToolExecution, &key, Some(call_span));
                span.text("agyn.tool.name", &call.name)
                    .text("agyn.tool.call_id", &call.call_id)
                    .long_text("agyn.tool.input", &call.arguments);
                self.tracer.record(&span);
                self.open_spans.push(span.clone());

                let result = self.toolbox.call(&call.name, &call.arguments).await;
                tracing::info!(
                    tool = %call.name,
                    call_id = %call.call_id,
                    error_type = result.error_type.unwrap_or_default(),
                    "Tool call finished"
                );
                span.long_text("agyn.tool.output", &result.output);
                if let Some(error_type) = result.error_type {
                    span.text("error.type", error_type);
                }
                span.end(result.error_type);
                self.close_span(&span);
                conversation.turn_items.push(json!({
                    "type": "function_call_output",
                    "call_id": call.call_id,
                    "output": result.output,
                }));
                self.save_journal(conversation);
            }
        }
    }

    fn save_journal(&self, conversation: &Conversation) {
        self.journal.save(&TurnRecord {
            first_message_id: conversation.first_id.clone(),
            items: conversation.turn_items.clone(),
        });
    }

    /// Records an ended span and removes it from the open spans.
    fn close_span(&mut self, span: &SpanData) {
        self.tracer.record(span);
        self.open_spans.retain(|open| open.id != span.id);
    }

    /// Sends one model request, retrying failures that may pass and
    /// dropping history when the input is too long. Returns the response
    /// and the id of its `llm.call` span.
    async fn call_model(
        &mut self,
        conversation: &mut Conversation,
    ) -> Result<(LlmResponse, [u8; 8]), ModelFailure> {
        let delays = self.settings.timing.llm_retry_delays.clone();
        let mut retries = 0;
        let mut overflows = 0;
        loop {
            conversation.calls += 1;
            let key = format!(
                "{}/{}/{}",
                conversation.first_id, self.turns_started, conversation.calls
            );
            let mut span = SpanData::start(SpanName::LlmCall, &key, conversation.parent);
            span.text("gen_ai.system", "openai")
                .text("gen_ai.request.model", self.llm.model());
            self.tracer.record(&span);
            self.open_spans.push(span.clone());

            let input: Vec<Value> = conversation
                .input
                .iter()
                .chain(conversation.turn_items.iter())
                .cloned()
                .collect();
            let config = &self.settings.config;
            let request = LlmRequest {
                instructions: &conversation.instructions,
                input: &input,
                tools: &conversation.tools,
                temperature: config.temperature,
                reasoning_effort: config.reasoning_effort.as_deref(),
            };
            let error = match self.llm.respond(&request).await {
                Ok(response) => {
                    record_response(&mut span, &response);
                    span.end(None);
                    self.close_span(&span);
                    return Ok((response, span.id));
                }
                Err(error) => error,
            };
            span.end(Some(&error.to_string()));
            self.close_span(&span);
            match error {
                LlmError::ContextOverflow(message)
                    if overflows < MAX_OVERFLOW_RETRIES && conversation.history_len > 0 =>
                {
                    overflows += 1;
                    let dropped = conversation.history_len.div_ceil(2);
                    conversation.input.drain(..dropped);
                    conversation.history_len -= dropped;
                    tracing::warn!(%message, dropped, "Input too long for the model; dropped older history");
                }
                LlmError::ContextOverflow(_) => {
                    return Err(ModelFailure(
                        "the conversation is too long for the model".to_string(),
                    ));
                }
                LlmError::Retryable(message) if retries < delays.len() => {
                    let delay = delays[retries];
                    retries += 1;
                    tracing::warn!(%message, retry_in_ms = delay.as_millis() as u64, "Model call failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                LlmError::Retryable(message) | LlmError::Fatal(message) => {
                    tracing::warn!(%message, "Model call failed");
                    return Err(ModelFailure(message));
                }
            }
        }
    }

    /// Builds the input items: the last `history_messages` messages before
    /// the batch, then the batch and whatever the thread contains between its
    /// messages (such as replies of an earlier attempt), oldest first.
    /// Returns the items and how many of them are history.
    async fn build_input(
        &self,
        thread: &threads::Thread,
        batch: &[threads::Message],
    ) -> Result<(Vec<Value>, usize), TurnError> {
        let history_limit = self.settings.config.history_messages as usize;
        let (history, current) = collect_messages(&self.gateway, batch, history_limit)
            .await
            .map_err(|error| TurnError::Retry(format!("GetMessages failed: {error}")))?;
        let handles: HashMap<String, String> = thread
            .participants
            .iter()
            .map(|participant| (participant.id.clone(), participant.nickname.clone()))
            .collect();
        let mut image_budget = MAX_INLINE_IMAGES_BYTES;
        let mut items = Vec::with_capacity(history.len() + current.len());
        // Newer messages get the image budget first.
        for message in history.iter().chain(current.iter()).rev() {
            let attachments = if message.sender_id == self.settings.agent_id {
                Vec::new()
            } else {
                self.attachments(message, &mut image_budget).await
            };
            items.push(context::message_item(
                message,
                &self.settings.agent_id,
                &handles,
                &attachments,
            ));
        }
        items.reverse();
        Ok((items, history.len()))
    }

    async fn attachments(
        &self,
        message: &threads::Message,
        image_budget: &mut usize,
    ) -> Vec<Attachment> {
        let mut attachments = Vec::new();
        for file_id in &message.file_ids {
            let info = match self.gateway.file_metadata(file_id).await {
                Ok(info) => info,
                Err(error) => {
                    tracing::warn!(file_id, %error, "Failed to read an attachment's metadata");
                    attachments.push(Attachment::unavailable(file_id));
                    continue;
                }
            };
            let size = usize::try_from(info.size_bytes).unwrap_or(usize::MAX);
            let inline = info.content_type.starts_with("image/")
                && size <= MAX_INLINE_IMAGE_BYTES
                && size <= *image_budget;
            let image = if inline {
                match self
                    .gateway
                    .file_content(file_id, MAX_INLINE_IMAGE_BYTES)
                    .await
                {
                    Ok(bytes) => {
                        *image_budget -= bytes.len().min(*image_budget);
                        Some(bytes)
                    }
                    Err(error) => {
                        tracing::warn!(file_id, %error, "Failed to download an image attachment");
                        None
                    }
                }
            } else {
                None
            };
            attachments.push(Attachment::new(
                file_id,
                &info.filename,
                &info.content_type,
                image.as_deref(),
            ));
        }
        attachments
    }
}

/// The state of the model exchange of one turn.
struct Conversation {
    instructions: String,
    /// History and batch items.
    input: Vec<Value>,
    /// Leading items of `input` that are history, which context overflow
    /// may drop.
    history_len: usize,
    /// Model output and tool results of this turn, after `input`.
    turn_items: Vec<Value>,
    tools: Vec<Value>,
    first_id: String,
    /// Span of the batch's last message, the parent of `llm.call` spans.
    parent: Option<[u8; 8]>,
    /// Model requests sent in this turn.
    calls: u32,
}

fn record_response(span: &mut SpanData, response: &LlmResponse) {
    let tool_calls: Vec<Value> = response
        .function_calls
        .iter()
        .map(
            |call| json!({"call_id": call.call_id, "name": call.name, "arguments": call.arguments}),
        )
        .collect();
    span.text("gen_ai.response.finish_reason", &response.finish_reason)
        .long_text("agyn.llm.response_text", &response.text)
        .long_text("agyn.llm.tool_calls", &Value::Array(tool_calls).to_string())
        .int("gen_ai.usage.input_tokens", response.usage.input_tokens)
        .int(
            "gen_ai.usage.cache_read.input_tokens",
            response.usage.cached_input_tokens,
        )
        .int("gen_ai.usage.output_tokens", response.usage.output_tokens)
        .int(
            "agyn.usage.reasoning_tokens",
            response.usage.reasoning_tokens,
        );
}

fn is_closed(thread: &threads::Thread) -> bool {
    matches!(
        thread.status.as_known(),
        Some(
            threads::ThreadStatus::THREAD_STATUS_ARCHIVED
                | threads::ThreadStatus::THREAD_STATUS_DEGRADED
        )
    )
}

/// Reads the thread newest first and returns, oldest first, up to
/// `history_limit` messages before the batch's first message, and the
/// messages from the batch's first to its last. Messages newer than the
/// batch belong to the next turn and are left out.
async fn collect_messages(
    gateway: &GatewaySession,
    batch: &[threads::Message],
    history_limit: usize,
) -> agyn_core::Result<(Vec<threads::Message>, Vec<threads::Message>)> {
    let first_id = &batch[0].meta.id;
    let last_id = &batch[batch.len() - 1].meta.id;
    // The walk passes three ranges: messages newer than the batch, the
    // batch's range, and the history before it.
    let mut newer_than_batch = true;
    let mut found_first = false;
    let mut current = Vec::new();
    let mut history = Vec::new();
    let mut scanned = 0;
    let mut page_token = String::new();

    'pages: loop {
        let (messages, next) = gateway.messages_newest_first(page_token).await?;
        for message in messages {
            scanned += 1;
            if found_first {
                if history.len() >= history_limit {
                    break 'pages;
                }
                history.push(message);
                continue;
            }
            if newer_than_batch && &message.meta.id != last_id {
                continue;
            }
            newer_than_batch = false;
            found_first = &message.meta.id == first_id;
            current.push(message);
        }
        if next.is_empty() || scanned >= MAX_MESSAGES_SCANNED {
            break;
        }
        page_token = next;
    }

    if !found_first {
        tracing::warn!(first_message_id = %first_id, "The batch is not in the thread's messages; sending it without history");
        return Ok((Vec::new(), batch.to_vec()));
    }
    history.reverse();
    current.reverse();
    Ok((history, current))
}

/// TouchWorkload at the start of a turn and then every interval, until the
/// guard is dropped at the end of the turn. FAILED_PRECONDITION means the
/// workload is being stopped: the loop cancels `stopping` and the turn
/// ends. Other errors are ignored.
struct TouchLoop {
    task: tokio::task::JoinHandle<()>,
}

impl TouchLoop {
    async fn start(
        gateway: GatewaySession,
        interval: Duration,
        stopping: CancellationToken,
    ) -> Result<Self, TurnError> {
        if !touch(&gateway, &stopping).await {
            return Err(TurnError::Stopping);
        }
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                if !touch(&gateway, &stopping).await {
                    return;
                }
            }
        });
        Ok(Self { task })
    }
}

impl Drop for TouchLoop {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Touches the workload; returns false when it is being stopped.
async fn touch(gateway: &GatewaySession, stopping: &CancellationToken) -> bool {
    match gateway.touch_workload().await {
        Ok(()) => true,
        Err(error) if error.code() == Code::FailedPrecondition => {
            tracing::info!(%error, "The workload is being stopped");
            stopping.cancel();
            false
        }
        Err(error) => {
            tracing::debug!(%error, "TouchWorkload failed");
            true
        }
    }
}
