//! The in-process hub: the subscriptions of this replica and the fan-out
//! of envelopes to them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::mpsc;

use crate::{Envelope, GapReason};

/// Envelopes and notices a subscription may hold undelivered. When a
/// delivery finds the buffer full, the hub drops the subscription.
pub const SUBSCRIBER_BUFFER: usize = 256;

/// One item delivered to a subscription.
#[derive(Debug, Clone)]
pub enum Delivery {
    Envelope(Arc<Envelope>),
    /// Envelopes for this subscription's rooms were lost, for example
    /// while the Redis connection was down.
    Gap(GapReason),
}

/// Reason the hub ended a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The subscription's buffer overflowed.
    TooSlow,
    /// The bus is shutting down.
    Shutdown,
}

/// A registered subscription. It receives every envelope published to
/// any of its rooms after registration, once per envelope, and unregisters
/// itself when dropped.
#[derive(Debug)]
pub struct Subscription {
    id: u64,
    rooms: Vec<String>,
    receiver: mpsc::Receiver<Delivery>,
    end: Arc<OnceLock<EndReason>>,
    hub: Arc<Hub>,
}

impl Subscription {
    /// Returns the next delivery. After the hub ends the subscription, the
    /// buffered deliveries still come first, then the reason.
    ///
    /// Cancel safe: a delivery is never lost when the future is dropped
    /// before it completes.
    pub async fn recv(&mut self) -> Result<Delivery, EndReason> {
        match self.receiver.recv().await {
            Some(delivery) => Ok(delivery),
            None => Err(self.end.get().copied().unwrap_or(EndReason::Shutdown)),
        }
    }

    /// Returns the rooms this subscription receives.
    pub fn rooms(&self) -> &[String] {
        &self.rooms
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.remove(self.id);
    }
}

struct Subscriber {
    sender: mpsc::Sender<Delivery>,
    rooms: Vec<String>,
    end: Arc<OnceLock<EndReason>>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    closed: bool,
    subscribers: HashMap<u64, Subscriber>,
    by_room: HashMap<String, HashSet<u64>>,
}

impl State {
    /// Unregisters a subscriber and records why. Dropping its sender lets
    /// the subscription drain its buffer and then see the reason.
    fn end(&mut self, id: u64, reason: Option<EndReason>) {
        let Some(subscriber) = self.subscribers.remove(&id) else {
            return;
        };
        if let Some(reason) = reason {
            let _ = subscriber.end.set(reason);
        }
        for room in &subscriber.rooms {
            if let Some(ids) = self.by_room.get_mut(room) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_room.remove(room);
                }
            }
        }
    }
}

/// Every subscription of this replica, indexed by room.
#[derive(Default)]
pub struct Hub {
    state: Mutex<State>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("subscribers", &self.subscriber_count())
            .finish()
    }
}

impl Hub {
    /// Registers a subscription to `rooms`. Returns `None` once the hub is
    /// closed.
    pub fn subscribe(self: &Arc<Self>, rooms: Vec<String>) -> Option<Subscription> {
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_BUFFER);
        let end = Arc::new(OnceLock::new());
        let mut state = self.lock();
        if state.closed {
            return None;
        }
        state.next_id += 1;
        let id = state.next_id;
        for room in &rooms {
            state.by_room.entry(room.clone()).or_default().insert(id);
        }
        state.subscribers.insert(
            id,
            Subscriber {
                sender,
                rooms: rooms.clone(),
                end: Arc::clone(&end),
            },
        );
        drop(state);
        Some(Subscription {
            id,
            rooms,
            receiver,
            end,
            hub: Arc::clone(self),
        })
    }

    /// Hands `envelope` to every subscription of any of its rooms, once per
    /// subscription. Never waits: a subscription whose buffer is full is
    /// dropped with [`EndReason::TooSlow`].
    pub fn deliver(&self, envelope: &Arc<Envelope>) {
        let mut state = self.lock();
        let mut targets: Vec<u64> = envelope
            .rooms
            .iter()
            .filter_map(|room| state.by_room.get(room))
            .flatten()
            .copied()
            .collect();
        targets.sort_unstable();
        targets.dedup();
        let delivery = Delivery::Envelope(Arc::clone(envelope));
        send_to(&mut state, targets, &delivery);
    }

    /// Hands a gap notice to every subscription.
    pub fn deliver_gap(&self, reason: GapReason) {
        let mut state = self.lock();
        let targets: Vec<u64> = state.subscribers.keys().copied().collect();
        send_to(&mut state, targets, &Delivery::Gap(reason));
    }

    /// Ends every subscription with [`EndReason::Shutdown`] and rejects
    /// new ones.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        let ids: Vec<u64> = state.subscribers.keys().copied().collect();
        for id in ids {
            state.end(id, Some(EndReason::Shutdown));
        }
    }

    /// Returns the number of registered subscriptions.
    pub fn subscriber_count(&self) -> usize {
        self.lock().subscribers.len()
    }

    fn remove(&self, id: u64) {
        self.lock().end(id, None);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every
        // update is a plain map insert or remove.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn send_to(state: &mut State, targets: Vec<u64>, delivery: &Delivery) {
    for id in targets {
        let Some(subscriber) = state.subscribers.get(&id) else {
            continue;
        };
        match subscriber.sender.try_send(delivery.clone()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    subscription = id,
                    buffer = SUBSCRIBER_BUFFER,
                    "Dropping a subscriber whose buffer is full"
                );
                state.end(id, Some(EndReason::TooSlow));
            }
            // The subscription is being dropped and unregisters itself.
            Err(mpsc::error::TrySendError::Closed(_)) => state.end(id, None),
        }
    }
}
