//! StreamRunEvents: a snapshot of a run's events, then live changes,
//! heartbeats and the end of the run.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use agyn_api_tracing::agynio::api::tracing::v1 as pb;
use agyn_core::error::Code;
use agyn_core::{Caller, Error, Result};
use connectrpc::ConnectError;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::Tracing;
use crate::envelope::{span_status, summary};
use crate::feed::FeedEvent;
use crate::ids::{TRACE_ID_LEN, to_hex};
use crate::query::no_readable_spans;
use crate::run_events::{TypeFilter, run_event};
use crate::store::{self, SpanRow};

use pb::__buffa::oneof::stream_run_events_request::Run;
use pb::stream_run_events_response::Kind;

/// Maximum number of events in one KIND_SNAPSHOT message.
const SNAPSHOT_BATCH: usize = 200;

/// Intervals of StreamRunEvents.
#[derive(Debug, Clone, Copy)]
pub struct StreamTiming {
    /// Time between two KIND_HEARTBEAT messages. The end-of-run check runs
    /// at the same ticks.
    pub heartbeat: Duration,
    /// Time between two checks that the caller may still read the run.
    pub reauthorize: Duration,
    /// Minimum time between two summaries attached to live messages.
    pub summary: Duration,
    /// Time a stream stays open after the trace stopped running and its
    /// workload became terminal.
    pub finish_delay: Duration,
}

impl Default for StreamTiming {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(15),
            reauthorize: Duration::from_secs(60),
            summary: Duration::from_secs(1),
            finish_delay: Duration::from_secs(300),
        }
    }
}

/// The messages of one StreamRunEvents stream.
pub type RunEventStream = BoxStream<'static, Result<pb::StreamRunEventsResponse, ConnectError>>;

impl Tracing {
    /// StreamRunEvents: authorizes the run, subscribes to its trace room,
    /// and returns the stream whose first messages are the snapshot.
    pub async fn stream_run_events(
        &self,
        caller: Caller,
        request: &pb::StreamRunEventsRequest,
    ) -> Result<RunEventStream> {
        let (trace_id, run_id) = resolve_run(request.run.as_ref())?;
        let types = TypeFilter::parse(&request.types)?;
        // Subscribing before the snapshot read means no change between the
        // two is lost.
        let feed = self.feed.subscribe(room(&trace_id))?;
        let rows = self.authorize_run(&caller, &trace_id, &run_id).await?;
        let mut state = RunStream {
            tracing: self.clone(),
            caller,
            trace_id,
            run_id,
            types,
            feed,
            queue: VecDeque::new(),
            sent: HashMap::new(),
            readable: HashMap::new(),
            heartbeat: ticker(self.timing.heartbeat),
            reauthorize: ticker(self.timing.reauthorize),
            last_summary: None,
            finished_since: None,
            done: false,
        };
        state.queue_snapshot(rows, !request.skip_snapshot)?;
        tracing::debug!(trace_id = %state.trace_id, "Opened a run event stream");
        let stream = futures::stream::unfold(state, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        });
        Ok(Box::pin(stream))
    }

    /// Authorizes a read of the run and returns its readable spans. With
    /// spans, the caller needs `can_read` on their organization. Without,
    /// the workload read rule applies to the workload `run_id`.
    async fn authorize_run(
        &self,
        caller: &Caller,
        trace_id: &str,
        run_id: &str,
    ) -> Result<Vec<SpanRow>> {
        let rows = self.trace_rows(trace_id).await?;
        if !rows.is_empty() {
            let rows = self.readable(caller, rows).await?;
            if rows.is_empty() {
                return Err(no_readable_spans());
            }
            return Ok(rows);
        }
        match self.directory.read_workload(caller, run_id).await {
            Ok(_) => Ok(Vec::new()),
            Err(error) if error.code() == Code::NotFound => Err(Error::not_found("run", run_id)),
            Err(error) => Err(error),
        }
    }
}

/// Returns the trace id hex and the run id (the workload UUID) of a
/// request.
fn resolve_run(run: Option<&Run>) -> Result<(String, String)> {
    match run {
        Some(Run::RunId(run_id)) => {
            let uuid = uuid::Uuid::try_parse(run_id)
                .map_err(|_| Error::invalid_field("run_id", "must be a UUID"))?;
            Ok((to_hex(uuid.as_bytes()), uuid.hyphenated().to_string()))
        }
        Some(Run::TraceId(trace_id)) => {
            let bytes: [u8; TRACE_ID_LEN] = trace_id.as_slice().try_into().map_err(|_| {
                Error::invalid_field(
                    "trace_id",
                    &format!("must be {TRACE_ID_LEN} bytes, got {}", trace_id.len()),
                )
            })?;
            let uuid = uuid::Uuid::from_bytes(bytes);
            Ok((to_hex(&bytes), uuid.hyphenated().to_string()))
        }
        None => Err(Error::invalid_argument(
            "run is required: set run_id or trace_id",
        )),
    }
}

fn room(trace_id: &str) -> String {
    format!("trace:{trace_id}")
}

/// Builds an interval whose first tick is one period from now.
fn ticker(period: Duration) -> Interval {
    let mut interval = tokio::time::interval_at(Instant::now() + period, period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

fn message(kind: Kind) -> pb::StreamRunEventsResponse {
    pb::StreamRunEventsResponse {
        kind: kind.into(),
        ..Default::default()
    }
}

/// Builds the summary of the rows, or an empty one for a run without
/// spans.
fn run_summary(trace_id: &str, rows: &[SpanRow]) -> Result<pb::TraceSummary> {
    if rows.is_empty() {
        return Ok(pb::TraceSummary {
            trace_id: crate::ids::from_hex(trace_id).unwrap_or_default(),
            ..Default::default()
        });
    }
    summary(trace_id, rows)
}

struct RunStream {
    tracing: Tracing,
    caller: Caller,
    trace_id: String,
    run_id: String,
    types: TypeFilter,
    feed: BoxStream<'static, FeedEvent>,
    /// Messages ready to send, in order.
    queue: VecDeque<pb::StreamRunEventsResponse>,
    /// `updated_at` of the last version of each span the client has, by
    /// span id hex.
    sent: HashMap<String, i64>,
    /// Read decisions by organization, cleared at each re-authorization.
    readable: HashMap<Option<String>, bool>,
    heartbeat: Interval,
    reauthorize: Interval,
    last_summary: Option<Instant>,
    /// When the trace was first seen not running with a terminal workload.
    finished_since: Option<Instant>,
    done: bool,
}

impl RunStream {
    /// Queues the snapshot messages (when `send_events`) and always the
    /// KIND_SNAPSHOT_END message with the summary.
    fn queue_snapshot(&mut self, rows: Vec<SpanRow>, send_events: bool) -> Result<()> {
        let summary = run_summary(&self.trace_id, &rows)?;
        let mut events = Vec::new();
        for row in rows.iter().filter(|row| self.types.matches(&row.name)) {
            self.sent.insert(row.span_id.clone(), row.updated_at);
            if send_events {
                events.push(run_event(row)?);
            }
        }
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let mut batch = message(Kind::KIND_SNAPSHOT);
            batch.events = events.by_ref().take(SNAPSHOT_BATCH).collect();
            self.queue.push_back(batch);
        }
        let mut end = message(Kind::KIND_SNAPSHOT_END);
        end.summary = summary.into();
        self.queue.push_back(end);
        self.last_summary = Some(Instant::now());
        Ok(())
    }

    /// Returns the next message, or `None` after the stream ended.
    async fn next(&mut self) -> Option<Result<pb::StreamRunEventsResponse, ConnectError>> {
        loop {
            if let Some(message) = self.queue.pop_front() {
                return Some(Ok(message));
            }
            if self.done {
                return None;
            }
            match self.wait().await {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    tracing::debug!(trace_id = %self.trace_id, "Run event stream finished");
                }
                Err(error) => {
                    self.done = true;
                    tracing::debug!(
                        trace_id = %self.trace_id,
                        %error,
                        "Run event stream ended with an error"
                    );
                    return Some(Err(error.into()));
                }
            }
        }
    }

    /// Waits for the next timer or feed item and queues what it produces.
    /// Returns `false` when the stream should end with OK.
    async fn wait(&mut self) -> Result<bool> {
        tokio::select! {
            biased;
            _ = self.reauthorize.tick() => {
                self.readable.clear();
                self.tracing
                    .authorize_run(&self.caller, &self.trace_id, &self.run_id)
                    .await?;
                Ok(true)
            }
            _ = self.heartbeat.tick() => {
                if self.run_finished().await? {
                    return Ok(false);
                }
                self.queue.push_back(message(Kind::KIND_HEARTBEAT));
                Ok(true)
            }
            item = self.feed.next() => match item {
                Some(FeedEvent::Span { span_id }) => {
                    self.queue_live(&span_id).await?;
                    Ok(true)
                }
                Some(FeedEvent::Lagged) => {
                    self.resync().await?;
                    Ok(true)
                }
                None => Err(Error::unavailable("server is shutting down")),
            },
        }
    }

    /// Queues the live message of one span event, unless the span is not
    /// a wanted run event, not readable, or already sent in this version.
    async fn queue_live(&mut self, span_id: &str) -> Result<()> {
        let mut connection = self.tracing.db.pool().acquire().await?;
        let Some(row) = store::by_key(&mut connection, &self.trace_id, span_id).await? else {
            return Ok(());
        };
        drop(connection);
        if !self.types.matches(&row.name) || !self.may_read(&row).await? {
            return Ok(());
        }
        // The kind follows what the client holds, not the event name: a
        // late `span.created` for a span the snapshot covered is an update.
        let kind = match self.sent.insert(row.span_id.clone(), row.updated_at) {
            Some(updated_at) if updated_at == row.updated_at => return Ok(()),
            Some(_) => Kind::KIND_UPDATED,
            None => Kind::KIND_CREATED,
        };
        let mut live = message(kind);
        live.events.push(run_event(&row)?);
        let due = self
            .last_summary
            .is_none_or(|at| at.elapsed() >= self.tracing.timing.summary);
        if due {
            let rows = self.tracing.trace_rows(&self.trace_id).await?;
            let rows = self.tracing.readable(&self.caller, rows).await?;
            live.summary = run_summary(&self.trace_id, &rows)?.into();
            self.last_summary = Some(Instant::now());
        }
        self.queue.push_back(live);
        Ok(())
    }

    async fn may_read(&mut self, row: &SpanRow) -> Result<bool> {
        if let Some(allowed) = self.readable.get(&row.organization_id) {
            return Ok(*allowed);
        }
        let allowed = self
            .tracing
            .can_read_org(&self.caller, row.organization_id.as_deref())
            .await?;
        self.readable.insert(row.organization_id.clone(), allowed);
        Ok(allowed)
    }

    /// Starts over after lost events: a new subscription, KIND_RESYNC and
    /// a fresh snapshot sequence.
    async fn resync(&mut self) -> Result<()> {
        tracing::debug!(trace_id = %self.trace_id, "Run event stream fell behind; resyncing");
        self.feed = self.tracing.feed.subscribe(room(&self.trace_id))?;
        let rows = self.tracing.trace_rows(&self.trace_id).await?;
        let rows = self.tracing.readable(&self.caller, rows).await?;
        self.sent.clear();
        self.queue.push_back(message(Kind::KIND_RESYNC));
        self.queue_snapshot(rows, true)
    }

    /// Returns whether the stream should end: the trace has spans, none is
    /// running, its workload is terminal (or gone), and that has held for
    /// the finish delay.
    async fn run_finished(&mut self) -> Result<bool> {
        let rows = self.tracing.trace_rows(&self.trace_id).await?;
        let running = rows
            .iter()
            .any(|row| span_status(row) == pb::SpanStatus::SPAN_STATUS_RUNNING);
        if rows.is_empty() || running || !workload_terminal(&self.tracing, &self.run_id).await {
            self.finished_since = None;
            return Ok(false);
        }
        let since = *self.finished_since.get_or_insert_with(Instant::now);
        Ok(since.elapsed() >= self.tracing.timing.finish_delay)
    }
}

async fn workload_terminal(service: &Tracing, run_id: &str) -> bool {
    let component = Caller::Component("tracing");
    match service.directory.read_workload(&component, run_id).await {
        Ok(state) => state.terminal,
        Err(error) if error.code() == Code::NotFound => true,
        Err(error) => {
            tracing::warn!(workload_id = %run_id, %error, "Reading the workload of a run failed");
            false
        }
    }
}
