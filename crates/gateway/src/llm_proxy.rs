//! The LLM proxy: OpenAI- and Anthropic-shaped HTTP routes on the public
//! listener that forward a caller's model call to the model's provider.
//!
//! The caller names a platform model id in `model`. The proxy resolves it
//! to the provider's endpoint, credential and remote model name, checks
//! `can_use`, swaps the remote name into the body and relays the response
//! as it arrives. The proxy builds the replies of scripted providers in
//! process.

use std::future::Future as _;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use agyn_api_llm::agynio::api::llm::v1::Protocol;
use agyn_authz::{Authorizer, ObjectRef};
use agyn_core::error::Code;
use agyn_core::{Caller, Error};
use agyn_llm::{Llm, Operation, ResolvedModel};
use agyn_store::Db;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use bytes::Bytes;
use futures::Stream;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};

use crate::GatewayLayer;

/// Largest request body the proxy accepts.
pub const MAX_BODY_BYTES: usize = 64 << 20;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Maximum silence between two chunks of a streamed response.
const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Maximum time a non-streamed response may take in all.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(600);
/// Bytes of the end of a response kept to read its token usage.
const USAGE_WINDOW: usize = 256 << 10;
/// Bytes of the start of a stream kept for Anthropic's input token count,
/// which only `message_start` carries.
const HEAD_WINDOW: usize = 16 << 10;

const THREAD_ID_HEADER: &str = "x-agyn-thread-id";
/// Marks requests that the proxy sends upstream. A request that arrives
/// with it comes from a provider endpoint that points back at a platform
/// proxy, and is rejected instead of looping.
const PROXIED_HEADER: &str = "x-agyn-proxied";

/// State shared by the proxy routes.
#[derive(Clone)]
pub(crate) struct LlmProxy {
    inner: Arc<Inner>,
}

struct Inner {
    gateway: GatewayLayer,
    llm: Llm,
    authorizer: Authorizer,
    db: Db,
    client: reqwest::Client,
}

impl LlmProxy {
    pub(crate) fn new(gateway: GatewayLayer, llm: Llm, db: Db) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("the HTTP client configuration is valid");
        Self {
            inner: Arc::new(Inner {
                gateway,
                authorizer: Authorizer::new(db.clone()),
                llm,
                db,
                client,
            }),
        }
    }

    /// Builds the proxy routes, at `/v1/...` and under `/api/`. Other
    /// paths and methods under `/v1/` get a 404 in the OpenAI or the
    /// Anthropic error shape.
    pub(crate) fn router(self) -> axum::Router {
        let mut router = axum::Router::new();
        for prefix in ["/v1", "/api/v1"] {
            router = router
                .route(
                    &format!("{prefix}/responses"),
                    post(responses).fallback(unknown_route),
                )
                .route(
                    &format!("{prefix}/chat/completions"),
                    post(chat_completions).fallback(unknown_route),
                )
                .route(
                    &format!("{prefix}/messages"),
                    post(messages).fallback(unknown_route),
                )
                .route(
                    &format!("{prefix}/messages/count_tokens"),
                    post(count_tokens).fallback(unknown_route),
                )
                .route(&format!("{prefix}/{{*rest}}"), any(unknown_route));
        }
        router.with_state(self)
    }
}

/// The route a call came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Responses,
    ChatCompletions,
    Messages,
    CountTokens,
}

impl Route {
    fn path(self) -> &'static str {
        match self {
            Self::Responses => "/v1/responses",
            Self::ChatCompletions => "/v1/chat/completions",
            Self::Messages => "/v1/messages",
            Self::CountTokens => "/v1/messages/count_tokens",
        }
    }

    fn operation(self) -> Operation {
        match self {
            Self::Responses => Operation::Responses,
            Self::ChatCompletions => Operation::ChatCompletions,
            Self::Messages => Operation::Messages,
            Self::CountTokens => Operation::CountTokens,
        }
    }

    fn protocol(self) -> Protocol {
        match self {
            Self::Responses => Protocol::PROTOCOL_RESPONSES,
            Self::ChatCompletions => Protocol::PROTOCOL_CHAT_COMPLETIONS,
            Self::Messages | Self::CountTokens => Protocol::PROTOCOL_ANTHROPIC_MESSAGES,
        }
    }

    fn anthropic(self) -> bool {
        matches!(self, Self::Messages | Self::CountTokens)
    }
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::PROTOCOL_RESPONSES => "RESPONSES",
        Protocol::PROTOCOL_CHAT_COMPLETIONS => "CHAT_COMPLETIONS",
        Protocol::PROTOCOL_ANTHROPIC_MESSAGES => "ANTHROPIC_MESSAGES",
        _ => "UNSPECIFIED",
    }
}

fn route_for(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::PROTOCOL_CHAT_COMPLETIONS => Route::ChatCompletions.path(),
        Protocol::PROTOCOL_ANTHROPIC_MESSAGES => Route::Messages.path(),
        _ => Route::Responses.path(),
    }
}

async fn responses(State(proxy): State<LlmProxy>, request: Request) -> Response {
    proxy.handle(Route::Responses, request).await
}

async fn chat_completions(State(proxy): State<LlmProxy>, request: Request) -> Response {
    proxy.handle(Route::ChatCompletions, request).await
}

async fn messages(State(proxy): State<LlmProxy>, request: Request) -> Response {
    proxy.handle(Route::Messages, request).await
}

async fn count_tokens(State(proxy): State<LlmProxy>, request: Request) -> Response {
    proxy.handle(Route::CountTokens, request).await
}

async fn unknown_route(request: Request) -> Response {
    let path = request.uri().path();
    let anthropic = path.contains("/v1/messages");
    ProxyError::new(
        StatusCode::NOT_FOUND,
        format!("unknown LLM proxy route {} {path}", request.method()),
    )
    .into_response_for(anthropic)
}

/// An error produced by the proxy itself, written in the caller's API shape.
#[derive(Debug)]
struct ProxyError {
    status: StatusCode,
    message: String,
}

impl ProxyError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn into_response_for(self, anthropic: bool) -> Response {
        let (openai_type, anthropic_type, code) = match self.status {
            StatusCode::BAD_REQUEST => (
                "invalid_request_error",
                "invalid_request_error",
                "invalid_request",
            ),
            StatusCode::UNAUTHORIZED => (
                "authentication_error",
                "authentication_error",
                "invalid_api_key",
            ),
            StatusCode::FORBIDDEN => ("permission_error", "permission_error", "permission_denied"),
            StatusCode::NOT_FOUND => ("not_found_error", "not_found_error", "not_found"),
            StatusCode::PAYLOAD_TOO_LARGE => (
                "invalid_request_error",
                "request_too_large",
                "request_too_large",
            ),
            StatusCode::SERVICE_UNAVAILABLE => ("api_error", "overloaded_error", "unavailable"),
            StatusCode::LOOP_DETECTED => ("api_error", "api_error", "proxy_loop"),
            _ => ("api_error", "api_error", "upstream_error"),
        };
        let body = if anthropic {
            json!({"type": "error", "error": {"type": anthropic_type, "message": self.message}})
        } else {
            json!({"error": {"message": self.message, "type": openai_type, "code": code}})
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// Facts about one call, for its log line and usage record.
#[derive(Debug, Clone, Default)]
struct CallRecord {
    request_id: String,
    caller_id: String,
    caller_type: &'static str,
    workload_id: String,
    thread_id: String,
    model_id: String,
    provider_id: String,
    organization_id: String,
    route: &'static str,
}

impl LlmProxy {
    async fn handle(&self, route: Route, request: Request) -> Response {
        let started = Instant::now();
        let mut record = CallRecord {
            route: route.path(),
            request_id: String::from_utf8_lossy(
                crate::layer::request_id(request.headers()).as_bytes(),
            )
            .into_owned(),
            // Only a thread id is kept, so the value cannot forge log fields.
            thread_id: request
                .headers()
                .get(THREAD_ID_HEADER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| uuid::Uuid::try_parse(value).ok())
                .map(|id| id.to_string())
                .unwrap_or_default(),
            ..CallRecord::default()
        };
        match self.forward(route, request, &mut record, started).await {
            Ok(response) => response,
            Err(error) => {
                tracing::info!(
                    request_id = %record.request_id,
                    caller_id = %record.caller_id,
                    caller_type = record.caller_type,
                    workload_id = %record.workload_id,
                    thread_id = %record.thread_id,
                    model_id = %record.model_id,
                    route = record.route,
                    status = error.status.as_u16(),
                    duration_ms = started.elapsed().as_millis() as u64,
                    error = %error.message,
                    "LLM proxy call rejected"
                );
                error.into_response_for(route.anthropic())
            }
        }
    }

    async fn forward(
        &self,
        route: Route,
        request: Request,
        record: &mut CallRecord,
        started: Instant,
    ) -> Result<Response, ProxyError> {
        let (parts, body) = request.into_parts();
        if parts.headers.contains_key(PROXIED_HEADER) {
            return Err(ProxyError::new(
                StatusCode::LOOP_DETECTED,
                "the request already passed through an agyn LLM proxy: the provider endpoint \
                 points back at the platform",
            ));
        }
        let peer = parts.extensions.get::<agyn_pki::PeerCertificate>().cloned();
        let caller = self.authenticate(peer, &parts.headers).await?;
        if let Caller::Identity {
            identity_id,
            kind,
            workload_id,
            ..
        } = &caller
        {
            record.caller_id = identity_id.clone();
            record.caller_type = kind.as_str();
            record.workload_id = workload_id.clone().unwrap_or_default();
        }

        let body = read_body(body).await?;
        let parsed: Value = serde_json::from_slice(&body).map_err(|error| {
            ProxyError::new(
                StatusCode::BAD_REQUEST,
                format!("request body is not valid JSON: {error}"),
            )
        })?;
        if !parsed.is_object() {
            return Err(ProxyError::new(
                StatusCode::BAD_REQUEST,
                "request body must be a JSON object",
            ));
        }
        let model_id = parsed
            .get("model")
            .and_then(Value::as_str)
            .filter(|id| uuid::Uuid::try_parse(id).is_ok())
            .ok_or_else(|| {
                ProxyError::new(StatusCode::BAD_REQUEST, "model must be a platform model id")
            })?
            .to_ascii_lowercase();
        record.model_id = model_id.clone();

        let model = self
            .inner
            .llm
            .resolve_model(&model_id)
            .await
            .map_err(|error| match error.code() {
                Code::NotFound | Code::InvalidArgument => {
                    ProxyError::new(StatusCode::NOT_FOUND, format!("model {model_id} not found"))
                }
                _ => {
                    tracing::warn!(%error, model_id = %model_id, "Failed to resolve a model");
                    ProxyError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "model resolution is unavailable; retry later",
                    )
                }
            })?;
        record.provider_id = model.provider_id.clone();
        record.organization_id = model.organization_id.clone();
        if model.protocol != route.protocol() {
            return Err(ProxyError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "model {model_id} uses protocol {}; call {}",
                    protocol_name(model.protocol),
                    route_for(model.protocol)
                ),
            ));
        }
        self.require_can_use(&caller, &model_id).await?;

        let streamed = parsed.get("stream").and_then(Value::as_bool) == Some(true);
        if let Some(script) = &model.script {
            return self.scripted(
                route,
                script,
                &model,
                parsed,
                streamed,
                record.clone(),
                started,
            );
        }
        let body = replace_model(&body, &model.remote_name);
        self.upstream(
            route,
            &parts,
            body,
            &model,
            streamed,
            record.clone(),
            started,
        )
        .await
    }

    async fn authenticate(
        &self,
        peer: Option<agyn_pki::PeerCertificate>,
        headers: &HeaderMap,
    ) -> Result<Caller, ProxyError> {
        // Anthropic clients send their key in x-api-key; an agyn token
        // there counts as a bearer token.
        let mut credentials = HeaderMap::new();
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            credentials.insert(header::AUTHORIZATION, value.clone());
        } else if let Some(key) = headers
            .get("x-api-key")
            .and_then(|value| value.to_str().ok())
            .filter(|key| key.starts_with("agyn_"))
            && let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {key}"))
        {
            value.set_sensitive(true);
            credentials.insert(header::AUTHORIZATION, value);
        }
        match self.inner.gateway.authenticate(peer, &credentials).await {
            Ok(caller @ Caller::Identity { .. }) => Ok(caller),
            Ok(Caller::Component(_)) => Err(ProxyError::new(
                StatusCode::UNAUTHORIZED,
                "invalid credential",
            )),
            Err(error) if error.code() == Code::Unavailable => Err(ProxyError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                error.message().to_string(),
            )),
            Err(error) if error.code() == Code::Unauthenticated => Err(ProxyError::new(
                StatusCode::UNAUTHORIZED,
                error.message().to_string(),
            )),
            Err(error) => {
                tracing::warn!(%error, "Failed to authenticate an LLM proxy call");
                Err(ProxyError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "authentication is unavailable; retry later",
                ))
            }
        }
    }

    async fn require_can_use(&self, caller: &Caller, model_id: &str) -> Result<(), ProxyError> {
        let identity = caller
            .identity_id()
            .map_err(|error| ProxyError::new(StatusCode::UNAUTHORIZED, error.message()))?;
        let allowed = self
            .inner
            .authorizer
            .check(
                &ObjectRef::identity(identity),
                "can_use",
                &ObjectRef::new("model", model_id),
            )
            .await
            .map_err(|error| {
                tracing::warn!(%error, model_id, "Failed to check model access");
                ProxyError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "authorization is unavailable; retry later",
                )
            })?;
        if allowed {
            Ok(())
        } else {
            Err(ProxyError::new(
                StatusCode::FORBIDDEN,
                format!("missing permission can_use on model {model_id}"),
            ))
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn scripted(
        &self,
        route: Route,
        script: &agyn_api_llm::agynio::api::llm::v1::Script,
        model: &ResolvedModel,
        mut parsed: Value,
        streamed: bool,
        record: CallRecord,
        started: Instant,
    ) -> Result<Response, ProxyError> {
        parsed["model"] = Value::String(model.remote_name.clone());
        let invalid = |error: Error| ProxyError::new(StatusCode::BAD_REQUEST, error.message());
        if route == Route::CountTokens {
            let body = agyn_scripted::count_tokens(&parsed).map_err(invalid)?;
            self.finish(&record, 200, false, started, None);
            return Ok((StatusCode::OK, axum::Json(body)).into_response());
        }
        let protocol = match route {
            Route::Responses => agyn_scripted::Protocol::Responses,
            Route::ChatCompletions => agyn_scripted::Protocol::ChatCompletions,
            Route::Messages | Route::CountTokens => agyn_scripted::Protocol::AnthropicMessages,
        };
        let answer = agyn_scripted::answer(script, protocol, &parsed).map_err(invalid)?;
        let (input, output) = answer.usage();
        self.finish(&record, 200, streamed, started, Some((input, output)));

        if !streamed {
            return Ok((StatusCode::OK, axum::Json(answer.to_json())).into_response());
        }
        let include_usage = parsed
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        let frames = answer.to_sse(include_usage);
        let stream = futures::stream::iter(frames.into_iter().map(Ok::<_, std::io::Error>));
        Ok(Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache")
            .header("x-accel-buffering", "no")
            .body(Body::from_stream(stream))
            .expect("static response parts are valid"))
    }

    #[allow(clippy::too_many_arguments)]
    async fn upstream(
        &self,
        route: Route,
        parts: &http::request::Parts,
        body: Bytes,
        model: &ResolvedModel,
        streamed: bool,
        record: CallRecord,
        started: Instant,
    ) -> Result<Response, ProxyError> {
        let url = agyn_llm::upstream_url(&model.endpoint, route.operation(), parts.uri.query());
        let mut headers = forwarded_headers(&parts.headers);
        for (name, value) in model.credential.headers() {
            headers.insert(name, value);
        }
        if route.anthropic() && !headers.contains_key("anthropic-version") {
            headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        }
        headers.insert(PROXIED_HEADER, HeaderValue::from_static("1"));

        // A streamed call may wait in silence up to the idle limit for its
        // first bytes; any other call has one overall deadline.
        let deadline = tokio::time::Instant::now() + RESPONSE_TIMEOUT;
        let first_bytes = if streamed {
            tokio::time::Instant::now() + STREAM_IDLE_TIMEOUT
        } else {
            deadline
        };

        let sent = self
            .inner
            .client
            .post(url)
            .headers(headers)
            .body(body)
            .send();
        let response = match tokio::time::timeout_at(first_bytes, sent).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                let reason = if error.is_timeout() {
                    "connection timed out".to_string()
                } else {
                    error.without_url().to_string()
                };
                return Err(ProxyError::new(
                    StatusCode::BAD_GATEWAY,
                    format!("provider unreachable: {reason}"),
                ));
            }
            Err(_) => {
                return Err(ProxyError::new(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "provider unreachable: no response within {} s",
                        if streamed {
                            STREAM_IDLE_TIMEOUT.as_secs()
                        } else {
                            RESPONSE_TIMEOUT.as_secs()
                        }
                    ),
                ));
            }
        };

        let status = response.status();
        let event_stream = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("text/event-stream"));
        let mut builder = Response::builder().status(status.as_u16());
        let named_in_connection = connection_names(response.headers());
        for (name, value) in response.headers() {
            if !is_hop_by_hop(name)
                && !named_in_connection
                    .iter()
                    .any(|named| named == name.as_str())
            {
                builder = builder.header(name, value);
            }
        }
        if event_stream {
            builder = builder.header("x-accel-buffering", "no");
        }

        let deadline = (!event_stream).then_some(deadline);
        let relay = Relay {
            upstream: Box::pin(response.bytes_stream()),
            idle: Box::pin(tokio::time::sleep(STREAM_IDLE_TIMEOUT)),
            deadline: deadline.map(|at| Box::pin(tokio::time::sleep_until(at))),
            head: Vec::new(),
            tail: Vec::new(),
            done: false,
            proxy: self.clone(),
            record,
            status: status.as_u16(),
            streamed: event_stream,
            started,
        };
        builder
            .body(Body::from_stream(relay))
            .map_err(|error| ProxyError::new(StatusCode::BAD_GATEWAY, error.to_string()))
    }

    /// Logs the call and records its token usage.
    fn finish(
        &self,
        record: &CallRecord,
        status: u16,
        streamed: bool,
        started: Instant,
        usage: Option<(u64, u64)>,
    ) {
        let duration_ms = started.elapsed().as_millis() as u64;
        let (input_tokens, output_tokens) = usage.unwrap_or_default();
        tracing::info!(
            request_id = %record.request_id,
            caller_id = %record.caller_id,
            caller_type = record.caller_type,
            workload_id = %record.workload_id,
            thread_id = %record.thread_id,
            model_id = %record.model_id,
            provider_id = %record.provider_id,
            route = record.route,
            upstream_status = status,
            streamed,
            duration_ms,
            input_tokens = usage.map(|usage| usage.0),
            output_tokens = usage.map(|usage| usage.1),
            "LLM proxy call"
        );
        let db = self.inner.db.clone();
        let record = record.clone();
        tokio::spawn(async move {
            let result = crate::llm_usage::record(
                &db,
                &crate::llm_usage::Usage {
                    request_id: &record.request_id,
                    organization_id: &record.organization_id,
                    model_id: &record.model_id,
                    provider_id: &record.provider_id,
                    identity_id: &record.caller_id,
                    workload_id: &record.workload_id,
                    thread_id: &record.thread_id,
                    route: record.route,
                    status,
                    streamed,
                    input_tokens: usage.map(|_| input_tokens),
                    output_tokens: usage.map(|_| output_tokens),
                    duration_ms,
                },
            )
            .await;
            if let Err(error) = result {
                tracing::warn!(%error, request_id = %record.request_id, "Failed to record LLM usage");
            }
        });
    }
}

/// Reads the request body up to [`MAX_BODY_BYTES`].
async fn read_body(body: Body) -> Result<Bytes, ProxyError> {
    match http_body_util::Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error)
            if error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ProxyError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than {MAX_BODY_BYTES} bytes"),
            ))
        }
        Err(error) => Err(ProxyError::new(
            StatusCode::BAD_REQUEST,
            format!("failed to read the request body: {error}"),
        )),
    }
}

/// The relayed response: upstream chunks passed on as they arrive, with the
/// idle and overall timeouts, and the call logged when it ends.
struct Relay {
    upstream: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    idle: Pin<Box<tokio::time::Sleep>>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    head: Vec<u8>,
    tail: Vec<u8>,
    done: bool,
    proxy: LlmProxy,
    record: CallRecord,
    status: u16,
    streamed: bool,
    started: Instant,
}

impl Stream for Relay {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match this.upstream.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.idle
                    .as_mut()
                    .reset(tokio::time::Instant::now() + STREAM_IDLE_TIMEOUT);
                if this.streamed && this.head.len() < HEAD_WINDOW {
                    let room = HEAD_WINDOW - this.head.len();
                    this.head.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                this.tail.extend_from_slice(&chunk);
                if this.tail.len() > USAGE_WINDOW {
                    let excess = this.tail.len() - USAGE_WINDOW;
                    this.tail.drain(..excess);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.end();
                Poll::Ready(Some(Err(std::io::Error::other(error.without_url()))))
            }
            Poll::Ready(None) => {
                this.end();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let idle = this.idle.as_mut().poll(cx).is_ready();
                let late = this
                    .deadline
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if idle || late {
                    this.end();
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the provider stopped sending",
                    ))));
                }
                Poll::Pending
            }
        }
    }
}

impl Relay {
    fn end(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let mut usage = usage_from_tail(&self.tail, self.streamed);
        if let Some((input @ 0, output)) = usage {
            let started = stream_input_tokens(&self.head).unwrap_or(input);
            usage = Some((started, output));
        }
        self.proxy.finish(
            &self.record,
            self.status,
            self.streamed,
            self.started,
            usage,
        );
    }
}

impl Drop for Relay {
    /// Logs a call whose caller went away before the response ended.
    fn drop(&mut self) {
        self.end();
    }
}

/// Finds token usage in the end of a response: the whole JSON body, or the
/// last SSE event that carries a `usage` object.
fn usage_from_tail(tail: &[u8], streamed: bool) -> Option<(u64, u64)> {
    if !streamed {
        let body: Value = serde_json::from_slice(tail).ok()?;
        return usage_of(&body);
    }
    let text = String::from_utf8_lossy(tail);
    text.lines()
        .rev()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
        .find_map(|event| {
            usage_of(&event)
                .or_else(|| event.get("response").and_then(usage_of))
                .filter(|(input, output)| *input > 0 || *output > 0)
        })
}

/// Reads the input token count of an Anthropic `message_start` event.
fn stream_input_tokens(head: &[u8]) -> Option<u64> {
    String::from_utf8_lossy(head)
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
        .find_map(|event| event.pointer("/message/usage/input_tokens")?.as_u64())
}

fn usage_of(value: &Value) -> Option<(u64, u64)> {
    let usage = value.get("usage")?;
    let number = |keys: &[&str]| {
        keys.iter()
            .find_map(|key| usage.get(*key).and_then(Value::as_u64))
    };
    let input = number(&["input_tokens", "prompt_tokens"]);
    let output = number(&["output_tokens", "completion_tokens"]);
    (input.is_some() || output.is_some()).then(|| (input.unwrap_or(0), output.unwrap_or(0)))
}

/// Returns whether a header belongs to one connection only.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    ) || name.as_str().starts_with("proxy-")
}

/// Returns the lowercase header names listed in `Connection`, which are
/// hop-by-hop too.
fn connection_names(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect()
}

/// Copies the caller's headers that may reach the provider.
fn forwarded_headers(headers: &HeaderMap) -> HeaderMap {
    let named_in_connection = connection_names(headers);
    let mut forwarded = HeaderMap::new();
    for (name, value) in headers {
        let lower = name.as_str();
        let dropped = is_hop_by_hop(name)
            || named_in_connection.iter().any(|named| named == lower)
            || lower == "authorization"
            || lower == "x-api-key"
            || lower == "x-workload-id"
            || lower.starts_with("x-agyn-")
            || lower.starts_with("x-identity-");
        if !dropped {
            forwarded.append(name.clone(), value.clone());
        }
    }
    forwarded
}

/// Replaces the value of every top-level `model` key in a JSON object,
/// keeping every other byte. The body must already be valid JSON.
fn replace_model(body: &[u8], remote_name: &str) -> Bytes {
    let spans = top_level_spans(body, "model");
    let replacement = Value::String(remote_name.to_string()).to_string();
    let mut out = Vec::with_capacity(body.len() + replacement.len());
    let mut at = 0;
    for span in spans {
        out.extend_from_slice(&body[at..span.start]);
        out.extend_from_slice(replacement.as_bytes());
        at = span.end;
    }
    out.extend_from_slice(&body[at..]);
    Bytes::from(out)
}

/// Byte ranges of the values of `key` in the top-level object of `body`.
fn top_level_spans(body: &[u8], key: &str) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut at = skip_whitespace(body, 0);
    if body.get(at) != Some(&b'{') {
        return spans;
    }
    at += 1;
    loop {
        at = skip_whitespace(body, at);
        match body.get(at) {
            Some(b'"') => {}
            _ => return spans,
        }
        let key_end = skip_string(body, at);
        let name: Option<String> = serde_json::from_slice(&body[at..key_end]).ok();
        at = skip_whitespace(body, key_end);
        if body.get(at) != Some(&b':') {
            return spans;
        }
        let value_start = skip_whitespace(body, at + 1);
        let value_end = skip_value(body, value_start);
        if name.as_deref() == Some(key) {
            spans.push(value_start..value_end);
        }
        at = skip_whitespace(body, value_end);
        match body.get(at) {
            Some(b',') => at += 1,
            _ => return spans,
        }
    }
}

fn skip_whitespace(body: &[u8], mut at: usize) -> usize {
    while body
        .get(at)
        .is_some_and(|byte| matches!(byte, b' ' | b'\t' | b'\n' | b'\r'))
    {
        at += 1;
    }
    at
}

/// Returns the index after the string that starts at `at`.
fn skip_string(body: &[u8], mut at: usize) -> usize {
    at += 1;
    while let Some(byte) = body.get(at) {
        match byte {
            b'\\' => at += 2,
            b'"' => return at + 1,
            _ => at += 1,
        }
    }
    body.len()
}

/// Returns the index after the value that starts at `at`.
fn skip_value(body: &[u8], at: usize) -> usize {
    match body.get(at) {
        Some(b'"') => skip_string(body, at),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut index = at;
            while let Some(byte) = body.get(index) {
                match byte {
                    b'"' => {
                        index = skip_string(body, index);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return index + 1;
                        }
                    }
                    _ => {}
                }
                index += 1;
            }
            body.len()
        }
        _ => {
            let mut index = at;
            while body.get(index).is_some_and(|byte| {
                !matches!(byte, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            }) {
                index += 1;
            }
            index
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_model_keeps_other_bytes() {
        let body = br#" { "input" : {"model": "inner"}, "model" :"0190-x" ,"z":[1,"}"] } "#;
        let replaced = replace_model(body, "gpt-5");
        assert_eq!(
            std::str::from_utf8(&replaced).unwrap(),
            r#" { "input" : {"model": "inner"}, "model" :"gpt-5" ,"z":[1,"}"] } "#
        );
    }

    #[test]
    fn replace_model_handles_escapes() {
        let body = br#"{"a\"b":"x\"}","mod\u0065l":1,"stream":true}"#;
        let replaced = replace_model(body, "r\"n");
        assert_eq!(
            std::str::from_utf8(&replaced).unwrap(),
            r#"{"a\"b":"x\"}","mod\u0065l":"r\"n","stream":true}"#
        );
    }

    #[test]
    fn forwarded_headers_drop_credentials_and_hops() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer agyn_x"),
            ("x-api-key", "agyn_y"),
            ("connection", "keep-alive, x-custom"),
            ("x-custom", "1"),
            ("x-agyn-thread-id", "t"),
            ("x-identity-id", "i"),
            ("x-workload-id", "w"),
            ("proxy-authorization", "p"),
            ("host", "example"),
            ("content-length", "3"),
            ("anthropic-beta", "tools"),
            ("openai-beta", "assistants=v2"),
            ("accept-encoding", "gzip"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let forwarded = forwarded_headers(&headers);
        let mut names: Vec<&str> = forwarded.keys().map(HeaderName::as_str).collect();
        names.sort();
        assert_eq!(names, ["accept-encoding", "anthropic-beta", "openai-beta"]);
    }

    #[test]
    fn usage_is_read_from_bodies_and_streams() {
        let body = br#"{"usage":{"prompt_tokens":7,"completion_tokens":3}}"#;
        assert_eq!(usage_from_tail(body, false), Some((7, 3)));
        let stream = b"event: response.completed\ndata: {\"response\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":2}}}\n\n";
        assert_eq!(usage_from_tail(stream, true), Some((5, 2)));
        let anthropic = b"data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\n\ndata: {\"type\":\"message_stop\"}\n\n";
        assert_eq!(usage_from_tail(anthropic, true), Some((0, 9)));
        assert_eq!(usage_from_tail(b"data: [DONE]\n\n", true), None);
        let start = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n";
        assert_eq!(stream_input_tokens(start), Some(12));
    }
}
