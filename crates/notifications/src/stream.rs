//! One Subscribe stream: `ready`, the replay, then live envelopes and
//! heartbeats until the stream ends.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use agyn_api_notifications::agynio::api::notifications::v1 as pb;
use agyn_authz::Authorizer;
use agyn_core::time::{now_micros, timestamp};
use agyn_core::{Caller, Error};
use agyn_events::{Delivery, EndReason, Envelope, GapReason, Replay, Subscription};
use connectrpc::{ConnectError, ErrorCode};
use futures::Stream;
use futures::stream::BoxStream;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::rooms::{self, Room};

/// One open stream counted against its identity's limit. Dropping it
/// releases the count.
pub struct Slot {
    open_streams: Arc<Mutex<HashMap<String, usize>>>,
    identity_id: String,
}

impl Slot {
    pub fn new(open_streams: Arc<Mutex<HashMap<String, usize>>>, identity_id: String) -> Self {
        Self {
            open_streams,
            identity_id,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .open_streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.identity_id) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.identity_id);
            }
        }
    }
}

/// Everything a stream needs once its rooms are authorized and its
/// subscription is registered.
pub struct Setup {
    pub caller: Caller,
    pub rooms: Vec<Room>,
    pub subscription: Subscription,
    /// `None` when the request had no `last_event_id`.
    pub replay: Option<Replay>,
    pub heartbeat_interval: Duration,
    pub revalidate_interval: Duration,
    pub authorizer: Authorizer,
}

/// The messages of one Subscribe stream. It unregisters its subscription
/// and releases its slot when dropped, as when the client cancels.
pub struct SubscribeStream {
    inner: BoxStream<'static, Result<pb::SubscribeResponse, ConnectError>>,
}

impl SubscribeStream {
    pub(crate) fn new(setup: Setup, slot: Option<Slot>) -> Self {
        let state = State::new(setup, slot);
        let inner = futures::stream::unfold(state, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        });
        Self {
            inner: Box::pin(inner),
        }
    }
}

impl Stream for SubscribeStream {
    type Item = Result<pb::SubscribeResponse, ConnectError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

struct State {
    id: String,
    caller: Caller,
    rooms: Vec<Room>,
    authorizer: Authorizer,
    ready: Option<pb::SubscriptionReady>,
    replay: std::vec::IntoIter<Envelope>,
    /// Ids of replayed envelopes that may still arrive live. Each is
    /// skipped once.
    replayed: HashSet<String>,
    subscription: Subscription,
    heartbeat: Interval,
    revalidate: Interval,
    finished: bool,
    _slot: Option<Slot>,
}

impl State {
    fn new(setup: Setup, slot: Option<Slot>) -> Self {
        let id = uuid::Uuid::now_v7().to_string();
        let (replayed, resumed, gap) = match setup.replay {
            None => (Vec::new(), false, None),
            Some(Replay::Resumed(envelopes)) => (envelopes, true, None),
            Some(Replay::Gap(reason)) => (Vec::new(), false, Some(reason)),
        };
        let ready = pb::SubscriptionReady {
            subscription_id: id.clone(),
            rooms: setup
                .rooms
                .iter()
                .map(|room| room.resolved.clone())
                .collect(),
            resumed,
            gap: gap.is_some(),
            replayed_count: i32::try_from(replayed.len()).unwrap_or(i32::MAX),
            heartbeat_interval: buffa_types::google::protobuf::Duration::from(
                setup.heartbeat_interval,
            )
            .into(),
            gap_reason: gap
                .map_or(pb::GapReason::GAP_REASON_UNSPECIFIED, gap_reason)
                .into(),
            ..Default::default()
        };
        tracing::debug!(
            subscription = %id,
            rooms = setup.rooms.len(),
            resumed,
            replayed = replayed.len(),
            "Opened a notification stream"
        );
        Self {
            replayed: replayed
                .iter()
                .map(|envelope| envelope.id.clone())
                .collect(),
            replay: replayed.into_iter(),
            id,
            caller: setup.caller,
            rooms: setup.rooms,
            authorizer: setup.authorizer,
            ready: Some(ready),
            subscription: setup.subscription,
            heartbeat: ticker(setup.heartbeat_interval),
            revalidate: ticker(setup.revalidate_interval),
            finished: false,
            _slot: slot,
        }
    }

    /// Returns the next message, or `None` after the stream ended.
    async fn next(&mut self) -> Option<Result<pb::SubscribeResponse, ConnectError>> {
        if self.finished {
            return None;
        }
        if let Some(ready) = self.ready.take() {
            return Some(Ok(response(ready)));
        }
        if let Some(envelope) = self.replay.next() {
            return Some(Ok(response(envelope_to_proto(&envelope))));
        }
        let item = self.next_live().await;
        if item.is_err() {
            self.finished = true;
        }
        Some(item)
    }

    async fn next_live(&mut self) -> Result<pb::SubscribeResponse, ConnectError> {
        loop {
            // Timers come first so that a busy stream still sends
            // heartbeats and re-checks its rooms.
            tokio::select! {
                biased;
                _ = self.revalidate.tick() => self.revalidate().await?,
                _ = self.heartbeat.tick() => {
                    return Ok(response(pb::Heartbeat {
                        ts: timestamp(now_micros()).into(),
                        ..Default::default()
                    }));
                }
                delivery = self.subscription.recv() => match delivery {
                    Ok(Delivery::Envelope(envelope)) => {
                        if self.replayed.remove(&envelope.id) {
                            continue;
                        }
                        return Ok(response(envelope_to_proto(&envelope)));
                    }
                    Ok(Delivery::Gap(reason)) => {
                        return Ok(response(pb::SubscriptionGap {
                            reason: gap_reason(reason).into(),
                            ts: timestamp(now_micros()).into(),
                            ..Default::default()
                        }));
                    }
                    Err(reason) => return Err(self.ended(reason)),
                },
            }
        }
    }

    /// Checks the rooms again. A denied room ends the stream, while a
    /// failed check is logged and retried at the next interval.
    ///
    /// NOTE: the credential itself is not checked again, because a stream
    /// receives only the authenticated caller. A revoked token keeps its
    /// open streams until they end.
    async fn revalidate(&self) -> Result<(), ConnectError> {
        match rooms::authorize(&self.authorizer, &self.caller, &self.rooms).await {
            Ok(()) => Ok(()),
            Err(error) if error.code() == agyn_core::error::Code::PermissionDenied => {
                tracing::debug!(subscription = %self.id, %error, "Ending a notification stream");
                Err(error.into())
            }
            Err(error) => {
                tracing::warn!(
                    subscription = %self.id,
                    %error,
                    "Failed to re-check the rooms of a notification stream"
                );
                Ok(())
            }
        }
    }

    fn ended(&self, reason: EndReason) -> ConnectError {
        tracing::debug!(subscription = %self.id, ?reason, "Ending a notification stream");
        match reason {
            EndReason::TooSlow => Error::resource_exhausted("subscriber too slow")
                .with_reason("SUBSCRIBER_TOO_SLOW")
                .into(),
            // Built directly: converting an `unavailable` Error logs a
            // warning, which would repeat for every stream at shutdown.
            EndReason::Shutdown => {
                ConnectError::new(ErrorCode::Unavailable, "server is shutting down")
            }
        }
    }
}

/// Creates an interval whose first tick is one period from now.
fn ticker(period: Duration) -> Interval {
    let mut interval = tokio::time::interval_at(Instant::now() + period, period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

fn response(
    kind: impl Into<Option<pb::__buffa::oneof::subscribe_response::Kind>>,
) -> pb::SubscribeResponse {
    pb::SubscribeResponse {
        kind: kind.into(),
        ..Default::default()
    }
}

fn gap_reason(reason: GapReason) -> pb::GapReason {
    match reason {
        GapReason::CursorNotFound => pb::GapReason::GAP_REASON_CURSOR_NOT_FOUND,
        GapReason::ReplayLimitExceeded => pb::GapReason::GAP_REASON_REPLAY_LIMIT_EXCEEDED,
        GapReason::BusInterrupted => pb::GapReason::GAP_REASON_BUS_INTERRUPTED,
        GapReason::EventsDropped => pb::GapReason::GAP_REASON_EVENTS_DROPPED,
    }
}

pub fn envelope_to_proto(envelope: &Envelope) -> pb::NotificationEnvelope {
    pb::NotificationEnvelope {
        id: envelope.id.clone(),
        ts: timestamp(envelope.ts).into(),
        source: envelope.source.clone(),
        event: envelope.event.clone(),
        rooms: envelope.rooms.clone(),
        payload: payload_to_proto(&envelope.payload).into(),
        ..Default::default()
    }
}

/// Converts a JSON object into a `google.protobuf.Struct`, whose numbers
/// are doubles.
pub fn payload_to_proto(
    payload: &serde_json::Map<String, serde_json::Value>,
) -> buffa_types::google::protobuf::Struct {
    serde_json::from_value(serde_json::Value::Object(payload.clone())).unwrap_or_else(|error| {
        tracing::error!(%error, "Failed to convert an event payload into a Struct; sending it empty");
        buffa_types::google::protobuf::Struct::default()
    })
}
