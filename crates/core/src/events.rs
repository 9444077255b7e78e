//! The producer side of the platform event bus.
//!
//! Services publish state-change events after their transaction commits.
//! Events are wake-up hints, never the source of truth, so publishing is
//! fire-and-forget: an implementation queues or sends the event and logs
//! a failure instead of returning it to the producer.

/// Publishes events to notification rooms.
pub trait EventSink: Send + Sync {
    /// Publishes `event` (such as `message.created`) from `source` (the
    /// producing component, such as `threads`) to `room` (such as
    /// `thread_participant:<identity id>`), with a JSON object payload.
    fn publish(
        &self,
        source: &'static str,
        event: &'static str,
        room: String,
        payload: serde_json::Value,
    );
}

/// An [`EventSink`] that drops every event, for tests and tools that run
/// without a bus.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvents;

impl EventSink for NoEvents {
    fn publish(
        &self,
        _source: &'static str,
        _event: &'static str,
        _room: String,
        _payload: serde_json::Value,
    ) {
    }
}
