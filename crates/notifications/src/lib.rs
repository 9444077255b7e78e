//! Notifications: the Subscribe stream of the public `NotificationsGateway`
//! and of the internal `NotificationsService`, and the internal Publish,
//! over the event bus of [`agyn_events`].
//!
//! [`Notifications`] opens streams ([`Notifications::subscribe`]);
//! [`service`] serves it over ConnectRPC.

#![allow(refining_impl_trait_internal, refining_impl_trait_reachable)]

pub mod rooms;
pub mod service;
mod stream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agyn_authz::Authorizer;
use agyn_core::{Caller, Error, Result};
use agyn_events::Events;

pub use stream::SubscribeStream;

/// Maximum number of open streams of one identity on one replica.
pub const MAX_STREAMS_PER_IDENTITY: usize = 32;

/// Default interval between two heartbeats of a stream.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);

/// Default interval between two checks of a stream's room authorizations.
pub const DEFAULT_REVALIDATE_INTERVAL: Duration = Duration::from_secs(60);

/// Minimum heartbeat and re-check interval, which keeps a zero setting
/// from turning a stream into a busy loop.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Subscription streams over one event bus.
#[derive(Clone)]
pub struct Notifications {
    events: Events,
    authorizer: Authorizer,
    heartbeat_interval: Duration,
    revalidate_interval: Duration,
    open_streams: Arc<Mutex<HashMap<String, usize>>>,
}

impl Notifications {
    pub fn new(events: Events, authorizer: Authorizer) -> Self {
        Self {
            events,
            authorizer,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            revalidate_interval: DEFAULT_REVALIDATE_INTERVAL,
            open_streams: Arc::default(),
        }
    }

    /// Sets the interval between heartbeats (15 seconds by default). Values
    /// below [`MIN_INTERVAL`] are raised to it.
    pub fn with_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval.max(MIN_INTERVAL);
        self
    }

    /// Sets the interval between checks of each stream's room
    /// authorizations (60 seconds by default). Values below
    /// [`MIN_INTERVAL`] are raised to it.
    pub fn with_revalidate_interval(mut self, interval: Duration) -> Self {
        self.revalidate_interval = interval.max(MIN_INTERVAL);
        self
    }

    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Ends every open stream with `unavailable`, so that clients resume
    /// on another replica, and rejects new ones. Call it when graceful
    /// shutdown starts: until then, open streams keep their connections
    /// busy.
    pub fn shutdown(&self) {
        self.events.shutdown();
    }

    /// Opens a stream of the envelopes published to `rooms` from now on,
    /// after replaying those published since `last_event_id`.
    ///
    /// Fails before the stream starts with `invalid_argument` on a bad
    /// room list, `permission_denied` when any room is denied,
    /// `resource_exhausted` when the identity already has
    /// [`MAX_STREAMS_PER_IDENTITY`] streams, and `unavailable` during
    /// shutdown. Components have no stream limit.
    pub async fn subscribe(
        &self,
        caller: Caller,
        rooms: &[String],
        last_event_id: Option<&str>,
    ) -> Result<SubscribeStream> {
        let slot = match &caller {
            Caller::Identity { identity_id, .. } => Some(self.take_slot(identity_id)?),
            Caller::Component(_) => None,
        };
        let rooms = rooms::normalize(rooms, &caller)?;
        rooms::authorize(&self.authorizer, &caller, &rooms).await?;
        let resolved: Vec<String> = rooms.iter().map(|room| room.resolved.clone()).collect();
        let subscription = self.events.subscribe(resolved.clone())?;
        let replay = match last_event_id.filter(|id| !id.is_empty()) {
            Some(id) => Some(self.events.replay(&resolved, id).await?),
            None => None,
        };
        Ok(SubscribeStream::new(
            stream::Setup {
                caller,
                rooms,
                subscription,
                replay,
                heartbeat_interval: self.heartbeat_interval,
                revalidate_interval: self.revalidate_interval,
                authorizer: self.authorizer.clone(),
            },
            slot,
        ))
    }

    /// Counts one more open stream of `identity_id`, or fails when it
    /// already has the maximum.
    fn take_slot(&self, identity_id: &str) -> Result<stream::Slot> {
        let mut open = self
            .open_streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(identity_id.to_string()).or_default();
        if *count >= MAX_STREAMS_PER_IDENTITY {
            return Err(Error::resource_exhausted(format!(
                "too many open streams: an identity may hold at most {MAX_STREAMS_PER_IDENTITY}"
            )));
        }
        *count += 1;
        Ok(stream::Slot::new(
            Arc::clone(&self.open_streams),
            identity_id.to_string(),
        ))
    }
}
