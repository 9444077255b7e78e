//! Desired state: the pairs with unacked messages, read on every
//! `poll_interval` and for the thread of every `message.created` event in
//! the platform room `agent_messages`, each handed to one start decision
//! at a time.

use agyn_core::error::Code;
use agyn_core::{Error, Result};
use agyn_events::{Delivery, GapReason};
use agyn_threads::PendingWork;
use tokio::task::JoinSet;

use crate::{ORCHESTRATOR, Orchestrator, Pair, lock};

/// The room that carries a `message.created` event for every message
/// addressed to a non-passive agent.
const AGENT_MESSAGES: &str = "agent_messages";

/// Page size of ListPendingAgentWork.
const PENDING_PAGE: i32 = 200;

/// Largest `thread_ids` filter one ListPendingAgentWork call takes.
const MAX_THREADS_PER_CALL: usize = 100;

/// Releases a pair's decision slot when dropped.
struct Deciding<'a> {
    orchestrator: &'a Orchestrator,
    key: (String, String),
}

impl Drop for Deciding<'_> {
    fn drop(&mut self) {
        lock(&self.orchestrator.inner.deciding).remove(&self.key);
    }
}

impl Orchestrator {
    /// Runs a start pass every `poll_interval`, and one for the threads of
    /// each `message.created` event. Event passes run in the background so
    /// that a slow start does not hold up the next event.
    pub(crate) async fn run_start_loop(&self) {
        let mut ticks = tokio::time::interval(self.inner.config.poll_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut subscription = self.subscribe();
        let mut passes = JoinSet::new();
        loop {
            while passes.try_join_next().is_some() {}
            let delivery = async {
                match subscription.as_mut() {
                    Some(subscription) => Some(subscription.recv().await),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = ticks.tick() => {
                    if subscription.is_none() {
                        subscription = self.subscribe();
                    }
                    if let Err(error) = self.start_pass().await {
                        tracing::warn!(%error, "Start pass failed");
                    }
                }
                delivery = delivery => match delivery {
                    Some(Ok(Delivery::Envelope(envelope))) => {
                        let Some(thread_id) = envelope.payload.get("thread_id").and_then(|id| id.as_str()) else {
                            continue;
                        };
                        let orchestrator = self.clone();
                        let thread_ids = vec![thread_id.to_string()];
                        passes.spawn(async move {
                            if let Err(error) = orchestrator.start_threads(&thread_ids).await {
                                tracing::warn!(%error, "Start pass for a new message failed");
                            }
                        });
                    }
                    Some(Ok(Delivery::Gap(reason))) => {
                        tracing::info!(reason = gap_name(reason), "Events for agents may be missing; running a full start pass");
                        let orchestrator = self.clone();
                        passes.spawn(async move {
                            if let Err(error) = orchestrator.start_pass().await {
                                tracing::warn!(%error, "Start pass failed");
                            }
                        });
                    }
                    Some(Err(reason)) => {
                        tracing::warn!(?reason, "Subscription to agent messages ended; subscribing again at the next poll");
                        subscription = None;
                    }
                    None => {}
                },
            }
        }
    }

    fn subscribe(&self) -> Option<agyn_events::Subscription> {
        match self
            .services()
            .events
            .subscribe(vec![AGENT_MESSAGES.to_string()])
        {
            Ok(subscription) => Some(subscription),
            Err(error) => {
                tracing::warn!(%error, "Failed to subscribe to agent messages; polling only");
                None
            }
        }
    }

    /// Runs one start pass over every pair with unacked messages and waits
    /// for its decisions. A pair whose decision is already running is
    /// skipped, because that decision covers it.
    pub async fn start_pass(&self) -> Result<()> {
        let pending = self.pending_work(None).await?;
        self.decide_all(pending).await;
        Ok(())
    }

    /// Runs one start pass over the pairs of `thread_ids` only.
    pub async fn start_threads(&self, thread_ids: &[String]) -> Result<()> {
        let mut pending = Vec::new();
        for chunk in thread_ids.chunks(MAX_THREADS_PER_CALL) {
            pending.extend(self.pending_work(Some(chunk)).await?);
        }
        self.decide_all(pending).await;
        Ok(())
    }

    /// Reads every page of ListPendingAgentWork.
    async fn pending_work(&self, thread_ids: Option<&[String]>) -> Result<Vec<PendingWork>> {
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let (page, next) = self
                .services()
                .threads
                .list_pending_agent_work(&ORCHESTRATOR, thread_ids, PENDING_PAGE, &token)
                .await?;
            all.extend(page);
            if next.is_empty() {
                return Ok(all);
            }
            token = next;
        }
    }

    async fn decide_all(&self, pending: Vec<PendingWork>) {
        let mut decisions = JoinSet::new();
        for work in pending {
            let pair = Pair {
                thread_id: work.thread_id,
                agent_id: work.agent_id,
                organization_id: work.organization_id,
            };
            let orchestrator = self.clone();
            decisions.spawn(async move { orchestrator.decide_pair(pair).await });
        }
        while decisions.join_next().await.is_some() {}
    }

    /// Runs the start decision of `pair` unless one is running already.
    async fn decide_pair(&self, pair: Pair) {
        let key = (pair.thread_id.clone(), pair.agent_id.clone());
        if !lock(&self.inner.deciding).insert(key.clone()) {
            return;
        }
        let _deciding = Deciding {
            orchestrator: self,
            key,
        };
        let Ok(_permit) = self.inner.starts.acquire().await else {
            return;
        };
        if let Err(error) = self.start_if_needed(&pair).await {
            if is_transient(&error) {
                self.log_transient(&pair, error.message());
            } else {
                tracing::warn!(
                    thread_id = %pair.thread_id,
                    agent_id = %pair.agent_id,
                    %error,
                    "Start decision failed"
                );
            }
        }
    }
}

/// Returns whether `error` may go away by itself: a dependency or the
/// database being unavailable or busy.
pub(crate) fn is_transient(error: &Error) -> bool {
    matches!(error.code(), Code::Unavailable | Code::ResourceExhausted)
}

fn gap_name(reason: GapReason) -> &'static str {
    match reason {
        GapReason::CursorNotFound => "cursor_not_found",
        GapReason::ReplayLimitExceeded => "replay_limit_exceeded",
        GapReason::BusInterrupted => "bus_interrupted",
        GapReason::EventsDropped => "events_dropped",
    }
}
