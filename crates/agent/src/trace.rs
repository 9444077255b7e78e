//! The run's trace: spans of turns, model calls and tool calls, exported
//! over OTLP/HTTP with protobuf bodies.
//!
//! The trace id is the 16 bytes of the workload id, so every turn of the
//! workload adds to one trace. Span ids are the first 8 bytes of the
//! SHA-256 of a stable key, so exporting a span again (at its start and at
//! its end) replaces the stored copy. Spans are queued without waiting and
//! sent in batches by a background task: a slow or failing ingest never
//! delays a turn, and a batch that still fails after its retries is
//! dropped.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agyn_api_tracing::opentelemetry::proto::collector::trace::v1::ExportTraceServiceRequest;
use agyn_api_tracing::opentelemetry::proto::common::v1::__buffa::oneof::any_value::Value as AnyKind;
use agyn_api_tracing::opentelemetry::proto::common::v1::{
    AnyValue, InstrumentationScope, KeyValue,
};
use agyn_api_tracing::opentelemetry::proto::resource::v1::Resource;
use agyn_api_tracing::opentelemetry::proto::trace::v1::span::SpanKind;
use agyn_api_tracing::opentelemetry::proto::trace::v1::status::StatusCode;
use agyn_api_tracing::opentelemetry::proto::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use buffa::Message as _;
use sha2::Digest as _;
use tokio::sync::{mpsc, oneshot};

/// Maximum bytes of a text attribute such as a message or a tool output.
pub const MAX_TEXT_ATTRIBUTE_BYTES: usize = 16 * 1024;

/// Spans per export request, which keeps requests far below the ingest's
/// 4 MiB limit.
const SPANS_PER_REQUEST: usize = 100;

/// Spans waiting for export beyond which the oldest are dropped.
const MAX_PENDING_SPANS: usize = 10_000;

/// Waits before the three retries of a failed export.
const EXPORT_RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// Time limit of one export request.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The kinds of span the agent records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanName {
    InvocationMessage,
    LlmCall,
    ToolExecution,
}

impl SpanName {
    fn as_str(self) -> &'static str {
        match self {
            Self::InvocationMessage => "invocation.message",
            Self::LlmCall => "llm.call",
            Self::ToolExecution => "tool.execution",
        }
    }

    fn kind(self) -> SpanKind {
        match self {
            Self::LlmCall => SpanKind::SPAN_KIND_CLIENT,
            Self::InvocationMessage | Self::ToolExecution => SpanKind::SPAN_KIND_INTERNAL,
        }
    }
}

/// One span under construction. Export it with [`Tracer::record`] at its
/// start and again after [`SpanData::end`].
#[derive(Debug, Clone)]
pub struct SpanData {
    pub id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    name: SpanName,
    start_ns: u64,
    end_ns: u64,
    attributes: Vec<KeyValue>,
    error: Option<String>,
}

impl SpanData {
    /// Starts a span now, with its id derived from `key`.
    pub fn start(name: SpanName, key: &str, parent: Option<[u8; 8]>) -> Self {
        Self {
            id: span_id(&format!("{}/{key}", name.as_str())),
            parent,
            name,
            start_ns: now_ns(),
            end_ns: 0,
            attributes: Vec::new(),
            error: None,
        }
    }

    pub fn text(&mut self, key: &str, value: &str) -> &mut Self {
        self.set(key, AnyKind::StringValue(value.to_string()))
    }

    /// Sets a text attribute cut to [`MAX_TEXT_ATTRIBUTE_BYTES`].
    pub fn long_text(&mut self, key: &str, value: &str) -> &mut Self {
        let cut = crate::context::truncate_utf8(value, MAX_TEXT_ATTRIBUTE_BYTES);
        self.text(key, cut)
    }

    pub fn int(&mut self, key: &str, value: i64) -> &mut Self {
        self.set(key, AnyKind::IntValue(value))
    }

    fn set(&mut self, key: &str, value: AnyKind) -> &mut Self {
        self.attributes.retain(|attribute| attribute.key != key);
        self.attributes.push(attribute(key, value));
        self
    }

    /// Ends the span now, as failed when `error` is given.
    pub fn end(&mut self, error: Option<&str>) {
        self.end_ns = now_ns().max(self.start_ns);
        self.error = error.map(str::to_string);
    }

    fn to_otlp(&self, trace_id: &[u8; 16]) -> Span {
        let status = match &self.error {
            Some(message) => Status {
                message: message.clone(),
                code: StatusCode::STATUS_CODE_ERROR.into(),
                ..Default::default()
            },
            None if self.end_ns > 0 => Status {
                code: StatusCode::STATUS_CODE_OK.into(),
                ..Default::default()
            },
            None => Status::default(),
        };
        Span {
            trace_id: trace_id.to_vec(),
            span_id: self.id.to_vec(),
            parent_span_id: self.parent.map(|id| id.to_vec()).unwrap_or_default(),
            name: self.name.as_str().to_string(),
            kind: self.name.kind().into(),
            start_time_unix_nano: self.start_ns,
            end_time_unix_nano: self.end_ns,
            attributes: self.attributes.clone(),
            status: status.into(),
            ..Default::default()
        }
    }
}

/// Derives a span id from a stable key: the first 8 bytes of its SHA-256.
pub fn span_id(key: &str) -> [u8; 8] {
    let digest = sha2::Sha256::digest(key.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    id
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0)
}

fn attribute(key: &str, value: AnyKind) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: AnyValue {
            value: Some(value),
            ..Default::default()
        }
        .into(),
        ..Default::default()
    }
}

enum Command {
    Span(Box<Span>),
    Flush(oneshot::Sender<()>),
}

/// The handle that queues spans for export.
#[derive(Debug, Clone)]
pub struct Tracer {
    trace_id: [u8; 16],
    commands: mpsc::UnboundedSender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Span(_) => "Span",
            Self::Flush(_) => "Flush",
        })
    }
}

/// The destination and interval of span exports.
pub struct ExportTarget {
    pub http: reqwest::Client,
    /// Base URL of the OTLP/HTTP ingest; spans go to `<endpoint>/v1/traces`.
    pub endpoint: String,
    pub interval: Duration,
    pub workload_id: String,
    pub thread_id: String,
}

impl Tracer {
    /// Starts the export task. It runs until every [`Tracer`] is dropped,
    /// then sends what is left.
    pub fn start(target: ExportTarget) -> (Self, tokio::task::JoinHandle<()>) {
        let trace_id = *uuid::Uuid::parse_str(&target.workload_id)
            .unwrap_or_default()
            .as_bytes();
        let (commands, receiver) = mpsc::unbounded_channel();
        let exporter = Exporter {
            resource: Resource {
                attributes: vec![
                    attribute("service.name", AnyKind::StringValue("agyn-agent".into())),
                    attribute(
                        "agyn.workload.id",
                        AnyKind::StringValue(target.workload_id.clone()),
                    ),
                    attribute(
                        "agyn.thread.id",
                        AnyKind::StringValue(target.thread_id.clone()),
                    ),
                ],
                ..Default::default()
            },
            url: format!("{}/v1/traces", target.endpoint.trim_end_matches('/')),
            http: target.http,
            pending: Vec::new(),
        };
        let task = tokio::spawn(exporter.run(receiver, target.interval));
        (Self { trace_id, commands }, task)
    }

    /// Queues the span's current state for export.
    pub fn record(&self, span: &SpanData) {
        let span = Box::new(span.to_otlp(&self.trace_id));
        // A closed channel means the exporter already stopped at shutdown.
        let _ = self.commands.send(Command::Span(span));
    }

    /// Exports every queued span now, waiting at most `limit`.
    pub async fn flush(&self, limit: Duration) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Flush(done)).is_err() {
            return;
        }
        if tokio::time::timeout(limit, wait).await.is_err() {
            tracing::warn!(limit_ms = limit.as_millis() as u64, "Span flush timed out");
        }
    }
}

struct Exporter {
    resource: Resource,
    url: String,
    http: reqwest::Client,
    /// Latest state of each span not yet sent, in first-recorded order.
    pending: Vec<Span>,
}

impl Exporter {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>, interval: Duration) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Span(span)) => self.queue(*span),
                    Some(Command::Flush(done)) => {
                        self.export_pending().await;
                        let _ = done.send(());
                    }
                    None => {
                        self.export_pending().await;
                        return;
                    }
                },
                _ = ticks.tick() => self.export_pending().await,
            }
        }
    }

    fn queue(&mut self, span: Span) {
        match self
            .pending
            .iter_mut()
            .find(|queued| queued.span_id == span.span_id)
        {
            Some(queued) => *queued = span,
            None => self.pending.push(span),
        }
        if self.pending.len() > MAX_PENDING_SPANS {
            let excess = self.pending.len() - MAX_PENDING_SPANS;
            self.pending.drain(..excess);
            tracing::warn!(
                dropped = excess,
                "Too many spans wait for export; dropped the oldest"
            );
        }
    }

    async fn export_pending(&mut self) {
        while !self.pending.is_empty() {
            let count = self.pending.len().min(SPANS_PER_REQUEST);
            let spans: Vec<Span> = self.pending.drain(..count).collect();
            self.export(spans).await;
        }
    }

    /// Sends one batch, retrying failures that a retry may fix.
    async fn export(&self, spans: Vec<Span>) {
        let count = spans.len();
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: self.resource.clone().into(),
                scope_spans: vec![ScopeSpans {
                    scope: InstrumentationScope {
                        name: "agyn-agent".to_string(),
                        version: env!("CARGO_PKG_VERSION").to_string(),
                        ..Default::default()
                    }
                    .into(),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let body = bytes::Bytes::from(request.encode_to_vec());
        let mut delays = EXPORT_RETRY_DELAYS.iter();
        loop {
            let error = match self.send(body.clone()).await {
                Ok(()) => return,
                Err(error) => error,
            };
            match (error.retryable, delays.next()) {
                (true, Some(delay)) => {
                    tracing::debug!(error = %error.message, spans = count, "Span export failed; retrying");
                    tokio::time::sleep(*delay).await;
                }
                _ => {
                    tracing::warn!(error = %error.message, spans = count, "Span export failed; dropped the spans");
                    return;
                }
            }
        }
    }

    async fn send(&self, body: bytes::Bytes) -> Result<(), ExportError> {
        let response = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
            .timeout(EXPORT_TIMEOUT)
            .body(body)
            .send()
            .await
            .map_err(|error| ExportError {
                message: error.to_string(),
                retryable: true,
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        Err(ExportError {
            message: format!("the OTLP ingest returned HTTP {status}"),
            retryable: status.as_u16() == 429 || status.is_server_error(),
        })
    }
}

struct ExportError {
    message: String,
    retryable: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_ids_are_stable_and_distinct() {
        assert_eq!(span_id("llm.call/a/1"), span_id("llm.call/a/1"));
        assert_ne!(span_id("llm.call/a/1"), span_id("llm.call/a/2"));
        assert_ne!(span_id("llm.call/a/1"), [0u8; 8]);
    }

    #[test]
    fn ended_span_has_status() {
        let mut span = SpanData::start(SpanName::ToolExecution, "call_1", Some([1; 8]));
        span.text("agyn.tool.name", "tools__add");
        span.end(Some("timeout"));
        let otlp = span.to_otlp(&[7; 16]);
        assert_eq!(otlp.name, "tool.execution");
        assert_eq!(otlp.parent_span_id, vec![1; 8]);
        assert!(otlp.end_time_unix_nano >= otlp.start_time_unix_nano);
        assert_eq!(otlp.status.code, StatusCode::STATUS_CODE_ERROR);
        assert_eq!(otlp.status.message, "timeout");
    }

    #[test]
    fn long_text_is_cut() {
        let mut span = SpanData::start(SpanName::InvocationMessage, "m", None);
        span.long_text("agyn.message.text", &"é".repeat(MAX_TEXT_ATTRIBUTE_BYTES));
        let Some(AnyKind::StringValue(text)) = &span.attributes[0].value.value else {
            panic!("not a string attribute");
        };
        assert!(text.len() <= MAX_TEXT_ATTRIBUTE_BYTES);
        assert!(text.chars().all(|c| c == 'é'));
    }
}
