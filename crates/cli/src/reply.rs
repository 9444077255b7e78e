//! Waiting for the reply to a sent message: `agyn send --wait`.
//!
//! The watch follows the notification protocol of the gateway: it
//! subscribes to `thread_participant:me`, which receives `message.created`
//! for every message sent to the caller, waits for `ready`, and only then
//! lets the message be sent. After a gap notice or a dropped stream it
//! reconnects with the last envelope id and re-reads the thread, so a
//! reply published while the stream was down is still found. A wait that
//! times out while the gateway is unreachable says so and names it.

use std::io::{IsTerminal as _, Write as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agyn_client::notifications::__buffa::oneof::subscribe_response::Kind;
use agyn_client::notifications::__buffa::view::SubscribeResponseView;
use agyn_client::notifications::{NotificationEnvelope, SubscribeRequest, SubscriptionReady};
use agyn_client::runners::ListWorkloadsByThreadRequest;
use agyn_client::threads::{
    GetMessagesRequest, GetThreadRequest, Message, MessageOrder, ThreadStatus,
};
use agyn_client::{CallOptions, ConnectError, ErrorCode, Gateway};
use connectrpc::client::{ClientTransport, ServerStream, SharedHttp2Connection};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::error::{CliError, Result};
use crate::output;
use crate::resolve;

/// The room that receives `message.created` for the caller's messages.
const ROOM: &str = "thread_participant:me";

/// First and longest pause before reconnecting a dropped stream.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How often the progress line refreshes the workload status.
const WORKLOAD_POLL_INTERVAL: Duration = Duration::from_secs(3);

/// How often the wait checks that the thread still takes messages. No
/// event announces that a thread was degraded or archived.
const THREAD_CHECK_INTERVAL: Duration = Duration::from_secs(5);

type Events = ServerStream<
    <SharedHttp2Connection as ClientTransport>::ResponseBody,
    SubscribeResponseView<'static>,
>;

/// A period in which the notification stream is down: its start and the
/// error of the latest failed reconnect.
#[derive(Clone)]
struct Outage {
    since: Instant,
    error: String,
}

/// The outage of a [`ReplyWatch`], shared with the progress line and the
/// timeout message of its wait.
type SharedOutage = Arc<Mutex<Option<Outage>>>;

/// An open subscription that waits for replies in one thread.
pub struct ReplyWatch {
    /// A client without the default deadline, which would end the stream.
    gateway: Gateway,
    thread_id: String,
    caller_id: String,
    events: Events,
    last_event_id: Option<String>,
    /// Set while the stream is down and cleared when it is open again.
    outage: SharedOutage,
    /// SIGINT (Ctrl-C), caught from the end of `open`, so that the wait
    /// can clear the progress line and report that the message was sent.
    /// `wait` takes it, and [`ReplyWatch::interrupted`] waits on it until
    /// then.
    interrupt: Option<Signal>,
}

impl ReplyWatch {
    /// Subscribes and waits for `ready`.
    pub async fn open(gateway: &Gateway, thread_id: &str) -> Result<Self> {
        let gateway = gateway.without_default_timeout();
        let (events, ready) = subscribe(&gateway, None).await?;
        let interrupt = signal(SignalKind::interrupt()).map_err(|error| {
            CliError::failed(format!("failed to install the Ctrl-C handler: {error}"))
        })?;
        let caller_id = ready
            .rooms
            .iter()
            .find_map(|room| room.strip_prefix("thread_participant:"))
            .ok_or_else(|| {
                CliError::failed(format!(
                    "the gateway subscribed to {:?} instead of {ROOM}",
                    ready.rooms
                ))
            })?
            .to_string();
        Ok(Self {
            gateway,
            thread_id: thread_id.to_string(),
            caller_id,
            events,
            last_event_id: None,
            outage: SharedOutage::default(),
            interrupt: Some(interrupt),
        })
    }

    /// Completes at the next Ctrl-C, such as one pressed while the message
    /// is being sent.
    pub async fn interrupted(&mut self) {
        interrupted(&mut self.interrupt).await;
    }

    /// Waits up to `timeout` for the first message after `sent_id` in the
    /// thread from another participant. The wait fails early when the
    /// thread is degraded or archived, because no reply can be stored
    /// then. While it waits, a progress line on standard error shows the
    /// elapsed time and the newest workload's status, when standard error
    /// is a terminal.
    pub async fn wait(mut self, sent_id: &str, timeout: Duration) -> Result<Message> {
        let started = Instant::now();
        let outage = Arc::clone(&self.outage);
        let mut progress = std::io::stderr().is_terminal().then(|| {
            Progress::new(
                self.gateway.clone(),
                self.thread_id.clone(),
                Arc::clone(&outage),
            )
        });
        let gateway = self.gateway.clone();
        let thread_id = self.thread_id.clone();
        let mut interrupt = self.interrupt.take();

        let outcome = {
            let reply = self.next_reply(sent_id);
            tokio::pin!(reply);
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut thread_check = tokio::time::interval(THREAD_CHECK_INTERVAL);
            thread_check.reset();

            loop {
                tokio::select! {
                    outcome = &mut reply => break Waited::Reply(Box::new(outcome)),
                    () = &mut deadline => {
                        let down = current_outage(&outage);
                        break Waited::Reply(Box::new(Err(timed_out(
                            &gateway, &thread_id, sent_id, timeout, down,
                        ))));
                    }
                    () = interrupted(&mut interrupt) => {
                        break Waited::Reply(Box::new(Err(CliError::Interrupted(format!(
                            "interrupted while waiting for a reply in conversation {thread_id}. \
                             The message {sent_id} was sent, and `agyn messages {thread_id}` \
                             shows the reply once it arrives"
                        )))));
                    }
                    _ = thread_check.tick() => {
                        if let Some(closed) = closed_thread(&gateway, &thread_id, sent_id).await {
                            break Waited::Closed(closed);
                        }
                    }
                    _ = tick.tick(), if progress.is_some() => {
                        if let Some(progress) = progress.as_mut() {
                            progress.show(started.elapsed()).await;
                        }
                    }
                }
            }
        };
        if let Some(progress) = progress {
            progress.clear();
        }
        match outcome {
            Waited::Reply(outcome) => *outcome,
            // A reply stored before the thread closed still counts.
            Waited::Closed(error) => match self.find_reply(sent_id).await? {
                Some(reply) => Ok(reply),
                None => Err(error),
            },
        }
    }

    async fn next_reply(&mut self, sent_id: &str) -> Result<Message> {
        loop {
            let ended = match self.events.message().await {
                Ok(Some(message)) => match message.to_owned_message().kind {
                    Some(Kind::Envelope(envelope)) => {
                        self.last_event_id = Some(envelope.id.clone());
                        if self.is_reply_event(&envelope)
                            && let Some(reply) = self.find_reply(sent_id).await?
                        {
                            return Ok(reply);
                        }
                        continue;
                    }
                    // Envelopes were lost while the stream stayed open.
                    Some(Kind::Gap(_)) => None,
                    _ => continue,
                },
                Ok(None) => Some(ConnectError::unavailable("the stream ended")),
                Err(error) => Some(error),
            };
            if let Some(error) = ended {
                if !is_retryable(&error) {
                    return Err(error.into());
                }
                self.record_outage(&CliError::from(error));
                self.reconnect().await?;
            }
            if let Some(reply) = self.find_reply(sent_id).await? {
                return Ok(reply);
            }
        }
    }

    /// Returns whether `envelope` announces a message in the thread from
    /// someone other than the caller.
    fn is_reply_event(&self, envelope: &NotificationEnvelope) -> bool {
        if envelope.event != "message.created" {
            return false;
        }
        let Some(payload) = envelope.payload.as_option() else {
            return false;
        };
        let Ok(payload) = serde_json::to_value(payload) else {
            return false;
        };
        payload["thread_id"].as_str() == Some(self.thread_id.as_str())
            && payload["sender_id"].as_str() != Some(self.caller_id.as_str())
    }

    /// Opens the stream again after a pause that doubles from 1 s to 30 s,
    /// resuming from the last envelope id.
    async fn reconnect(&mut self) -> Result<()> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            tokio::time::sleep(backoff).await;
            match subscribe(&self.gateway, self.last_event_id.clone()).await {
                Ok((events, _)) => {
                    self.events = events;
                    *self.outage.lock().expect("the outage lock is not poisoned") = None;
                    return Ok(());
                }
                Err(error) if is_outage(&error) => {
                    self.record_outage(&error);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Records `error` as the latest of the current outage, which starts
    /// now unless one is already recorded.
    fn record_outage(&self, error: &CliError) {
        let mut outage = self.outage.lock().expect("the outage lock is not poisoned");
        let since = outage.as_ref().map_or_else(Instant::now, |down| down.since);
        // The timeout message names the gateway, so an unreachable one is
        // recorded by its cause alone.
        let error = match error {
            CliError::Unreachable { cause } => cause.clone(),
            other => other.to_string(),
        };
        *outage = Some(Outage { since, error });
    }

    /// Returns the oldest message after `sent_id` from another participant,
    /// reading the thread newest first until `sent_id`.
    async fn find_reply(&self, sent_id: &str) -> Result<Option<Message>> {
        let client = self.gateway.threads();
        let mut reply = None;
        let mut page_token = String::new();
        loop {
            let page = client
                .get_messages_with_options(
                    GetMessagesRequest {
                        thread_id: self.thread_id.clone(),
                        order: MessageOrder::MESSAGE_ORDER_NEWEST_FIRST.into(),
                        page_size: resolve::PAGE_SIZE,
                        page_token,
                        ..Default::default()
                    },
                    CallOptions::default().with_timeout(agyn_client::DEFAULT_TIMEOUT),
                )
                .await?
                .into_owned();
            for message in page.messages {
                if resolve::id_of(&message.meta) == sent_id {
                    return Ok(reply);
                }
                if message.sender_id != self.caller_id {
                    reply = Some(message);
                }
            }
            if page.next_page_token.is_empty() {
                return Ok(reply);
            }
            page_token = page.next_page_token;
        }
    }
}

/// Returns a copy of the outage recorded now, if any.
fn current_outage(outage: &SharedOutage) -> Option<Outage> {
    outage
        .lock()
        .expect("the outage lock is not poisoned")
        .clone()
}

/// Returns the error of a wait that reached its timeout, naming the
/// gateway when the notification stream was down at that moment.
fn timed_out(
    gateway: &Gateway,
    thread_id: &str,
    sent_id: &str,
    timeout: Duration,
    outage: Option<Outage>,
) -> CliError {
    let timeout = humantime::format_duration(timeout);
    match outage {
        Some(down) => CliError::failed(format!(
            "timed out after {timeout} waiting for a reply in conversation {thread_id}, \
             because the gateway at {} has been unreachable for the last {}s ({}). \
             The message {sent_id} was sent, and `agyn messages {thread_id}` shows the \
             reply once the gateway is running again",
            gateway.url(),
            down.since.elapsed().as_secs(),
            down.error
        )),
        None => CliError::failed(format!(
            "timed out after {timeout} waiting for a reply in conversation {thread_id}. \
             The message {sent_id} was sent, and \
             `agyn workloads list --conversation {thread_id}` shows whether an \
             agent is working on it"
        )),
    }
}

/// Completes at the next SIGINT, or never without a handler.
async fn interrupted(interrupt: &mut Option<Signal>) {
    match interrupt {
        Some(interrupt) => {
            interrupt.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Outcome of the select loop of [`ReplyWatch::wait`].
enum Waited {
    Reply(Box<Result<Message>>),
    /// The thread stopped taking messages, and the error gives the reason.
    Closed(CliError),
}

/// Returns the error to report when thread `thread_id` no longer takes
/// messages, or `None` while it does or when it cannot be read now.
async fn closed_thread(gateway: &Gateway, thread_id: &str, sent_id: &str) -> Option<CliError> {
    let response = gateway
        .threads()
        .get_thread_with_options(
            GetThreadRequest {
                id: thread_id.to_string(),
                ..Default::default()
            },
            CallOptions::default().with_timeout(agyn_client::DEFAULT_TIMEOUT),
        )
        .await
        .ok()?
        .into_owned();
    let thread = response.thread.as_option()?;
    let state = match thread.status.as_known()? {
        ThreadStatus::THREAD_STATUS_DEGRADED => {
            format!("degraded (reason {})", thread.degrade_reason)
        }
        ThreadStatus::THREAD_STATUS_ARCHIVED => "archived".to_string(),
        _ => return None,
    };
    Some(CliError::failed(format!(
        "conversation {thread_id} is {state}, so it takes no reply to message {sent_id}. \
         `agyn workloads list --conversation {thread_id}` shows the workloads that failed"
    )))
}

/// Opens a subscription to [`ROOM`] and returns it with its `ready`
/// message.
async fn subscribe(
    gateway: &Gateway,
    last_event_id: Option<String>,
) -> Result<(Events, SubscriptionReady)> {
    let mut events = gateway
        .notifications()
        .subscribe(SubscribeRequest {
            rooms: vec![ROOM.to_string()],
            last_event_id,
            ..Default::default()
        })
        .await?;
    match events.message().await? {
        Some(first) => match first.to_owned_message().kind {
            Some(Kind::Ready(ready)) => Ok((events, *ready)),
            _ => Err(CliError::failed(
                "the notification stream did not start with `ready`",
            )),
        },
        None => Err(CliError::failed(
            "the notification stream ended before `ready`",
        )),
    }
}

/// Returns whether `error` means that the gateway cannot serve the stream
/// for now: it is unreachable, shutting down or overloaded.
fn is_outage(error: &CliError) -> bool {
    match error {
        CliError::Unreachable { .. } => true,
        CliError::Gateway { code, .. } => {
            *code == ErrorCode::Unavailable.as_str()
                || *code == ErrorCode::ResourceExhausted.as_str()
        }
        _ => false,
    }
}

/// Returns whether a dropped stream is worth reopening. The gateway ends
/// streams with `unavailable` when it shuts down and `resource_exhausted`
/// when the subscriber fell behind.
fn is_retryable(error: &ConnectError) -> bool {
    matches!(
        error.code,
        ErrorCode::Unavailable
            | ErrorCode::ResourceExhausted
            | ErrorCode::DeadlineExceeded
            | ErrorCode::Internal
            | ErrorCode::Unknown
    )
}

/// The progress line on standard error.
struct Progress {
    gateway: Gateway,
    thread_id: String,
    outage: SharedOutage,
    workload_status: Option<String>,
    polled_at: Option<Instant>,
}

impl Progress {
    fn new(gateway: Gateway, thread_id: String, outage: SharedOutage) -> Self {
        Self {
            gateway,
            thread_id,
            outage,
            workload_status: None,
            polled_at: None,
        }
    }

    async fn show(&mut self, elapsed: Duration) {
        let status = match current_outage(&self.outage) {
            Some(down) => format!(
                ", gateway unreachable for {}s, reconnecting",
                down.since.elapsed().as_secs()
            ),
            None => self.workload_suffix().await,
        };
        let mut stderr = std::io::stderr().lock();
        let _ = write!(
            stderr,
            "\r\x1b[2KWaiting for a reply: {}s{status}",
            elapsed.as_secs()
        );
        let _ = stderr.flush();
    }

    /// Returns `, workload <status>` for the thread's newest workload, or an
    /// empty string without one. The status is polled at most every
    /// [`WORKLOAD_POLL_INTERVAL`].
    async fn workload_suffix(&mut self) -> String {
        if self
            .polled_at
            .is_none_or(|polled| polled.elapsed() >= WORKLOAD_POLL_INTERVAL)
        {
            self.polled_at = Some(Instant::now());
            self.workload_status = self.newest_workload_status().await;
        }
        match &self.workload_status {
            Some(status) => format!(", workload {status}"),
            None => String::new(),
        }
    }

    /// Returns the status of the thread's newest workload, or `None` when
    /// it has none or the call fails; the line then shows only the time.
    async fn newest_workload_status(&self) -> Option<String> {
        let page = self
            .gateway
            .runners()
            .list_workloads_by_thread_with_options(
                ListWorkloadsByThreadRequest {
                    thread_id: self.thread_id.clone(),
                    page_size: 1,
                    ..Default::default()
                },
                CallOptions::default().with_timeout(Duration::from_secs(2)),
            )
            .await
            .ok()?
            .into_owned();
        let workload = page.workloads.first()?;
        Some(output::label(&workload.status, "WORKLOAD_STATUS_"))
    }

    fn clear(self) {
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "\r\x1b[2K");
        let _ = stderr.flush();
    }
}
