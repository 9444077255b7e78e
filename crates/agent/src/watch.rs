//! Wake-ups: the `thread_participant:me` notification stream, resumed
//! after drops, whose `message.created` events for the agent's thread
//! wake the turn loop. The loop also polls, so a missed event only delays
//! a turn.

use std::sync::Arc;
use std::time::Duration;

use agyn_client::notifications::__buffa::oneof::subscribe_response::Kind;
use futures::StreamExt as _;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::gateway::GatewaySession;

const ROOM: &str = "thread_participant:me";
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Keeps the notification stream open until `cancel`, calling
/// `wake.notify_one()` for each event of `thread_id` and after each
/// (re)connect, when events may have been missed.
pub async fn watch_thread(
    gateway: GatewaySession,
    thread_id: String,
    wake: Arc<Notify>,
    cancel: CancellationToken,
) {
    let mut last_event_id: Option<String> = None;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let subscribed = tokio::select! {
            () = cancel.cancelled() => return,
            subscribed = gateway.subscribe(&[ROOM], last_event_id.clone()) => subscribed,
        };
        match subscribed {
            Ok(mut stream) => loop {
                let message = tokio::select! {
                    () = cancel.cancelled() => return,
                    message = stream.next() => message,
                };
                let response = match message {
                    Some(Ok(response)) => response,
                    Some(Err(error)) => {
                        tracing::info!(%error, "Notification stream ended; reconnecting");
                        break;
                    }
                    None => {
                        tracing::info!("Notification stream closed; reconnecting");
                        break;
                    }
                };
                match response.kind {
                    Some(Kind::Ready(ready)) => {
                        backoff = FIRST_BACKOFF;
                        tracing::debug!(
                            resumed = ready.resumed,
                            gap = ready.gap,
                            "Subscribed to notifications"
                        );
                        wake.notify_one();
                    }
                    Some(Kind::Envelope(envelope)) => {
                        let for_thread = envelope
                            .payload
                            .get("thread_id")
                            .and_then(|value| value.as_str())
                            == Some(thread_id.as_str());
                        if envelope.event == "message.created" && for_thread {
                            wake.notify_one();
                        }
                        last_event_id = Some(envelope.id);
                    }
                    Some(Kind::Gap(_)) => wake.notify_one(),
                    Some(Kind::Heartbeat(_)) | None => {}
                }
            },
            Err(error) => {
                tracing::warn!(%error, retry_in_s = backoff.as_secs(), "Failed to subscribe to notifications");
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(with_jitter(backoff)) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Adds up to a quarter of `delay`, so that many agents do not reconnect
/// in step.
fn with_jitter(delay: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|now| now.subsec_nanos())
        .unwrap_or(0);
    delay + delay.mul_f64(f64::from(nanos % 1000) / 4000.0)
}
