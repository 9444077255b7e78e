//! The live side of StreamRunEvents: span events of one trace room.

use agyn_core::Result;
use agyn_events::{Delivery, EndReason, Events};
use futures::stream::BoxStream;

/// One item of a [`SpanFeed`] subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEvent {
    /// `span.created` or `span.updated` for the span with this hex id.
    Span { span_id: String },
    /// Events may have been lost, so the subscriber must read its state
    /// again. The subscription ends after this item.
    Lagged,
}

/// Subscriptions to span events. The platform implementation is the event
/// bus ([`agyn_events::Events`]).
pub trait SpanFeed: Send + Sync {
    /// Registers a subscription to `room` (`trace:<trace id hex>`). Every
    /// event published to the room after this call returns is delivered.
    /// The stream ends when the bus shuts down.
    fn subscribe(&self, room: String) -> Result<BoxStream<'static, FeedEvent>>;
}

impl SpanFeed for Events {
    fn subscribe(&self, room: String) -> Result<BoxStream<'static, FeedEvent>> {
        let subscription = Events::subscribe(self, vec![room])?;
        let stream = futures::stream::unfold(Some(subscription), |state| async move {
            let mut subscription = state?;
            loop {
                match subscription.recv().await {
                    Ok(Delivery::Envelope(envelope)) => {
                        if !matches!(envelope.event.as_str(), "span.created" | "span.updated") {
                            continue;
                        }
                        let Some(span_id) = envelope
                            .payload
                            .get("span_id")
                            .and_then(|value| value.as_str())
                        else {
                            continue;
                        };
                        let event = FeedEvent::Span {
                            span_id: span_id.to_string(),
                        };
                        return Some((event, Some(subscription)));
                    }
                    Ok(Delivery::Gap(_)) | Err(EndReason::TooSlow) => {
                        return Some((FeedEvent::Lagged, None));
                    }
                    Err(EndReason::Shutdown) => return None,
                }
            }
        });
        Ok(Box::pin(stream))
    }
}
