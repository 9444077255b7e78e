//! OTLP/HTTP ingest: `POST /v1/traces` with a protobuf or JSON body.
//!
//! The response uses the request's encoding. Failures carry a
//! `google.rpc.Status` (code and message) in that encoding, as OTLP/HTTP
//! specifies. OTLP/JSON writes trace and span ids as hex, so they are
//! converted to the base64 of canonical proto3 JSON before decoding.

use agyn_api_tracing::opentelemetry::proto::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use agyn_core::error::Code;
use agyn_core::{Caller, Error};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use buffa::Message as _;
use http::{HeaderValue, StatusCode, header};
use serde_json::Value;

use crate::Tracing;
use crate::ids::from_hex;

/// Largest accepted request body, before any decoding.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// Builds the router of `POST /v1/traces`. The caller comes from the
/// request extensions, where the gateway's authentication puts it.
pub fn otlp_router(tracing: Tracing) -> axum::Router {
    axum::Router::new()
        .route("/v1/traces", axum::routing::post(export))
        .with_state(tracing)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => PROTOBUF,
            Self::Json => JSON,
        }
    }
}

async fn export(State(tracing): State<Tracing>, request: Request) -> Response {
    let media_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|value| value.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let encoding = match media_type.as_str() {
        PROTOBUF => Encoding::Protobuf,
        JSON => Encoding::Json,
        other => {
            let message = format!("unsupported content type {other:?}; send {PROTOBUF} or {JSON}");
            return failure(
                Encoding::Protobuf,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Code::InvalidArgument,
                &message,
            );
        }
    };
    // NOTE: compressed bodies are not decoded yet, so exporters must send
    // them uncompressed (the OpenTelemetry SDKs' default).
    if let Some(content_encoding) = request
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.eq_ignore_ascii_case("identity"))
    {
        let message = format!(
            "unsupported content encoding {content_encoding:?}; send the body uncompressed"
        );
        return failure(
            encoding,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::InvalidArgument,
            &message,
        );
    }
    let caller = Caller::from_extensions(request.extensions()).cloned();
    let body = match axum::body::to_bytes(request.into_body(), MAX_REQUEST_BYTES).await {
        Ok(body) => body,
        Err(error) => {
            tracing::debug!(%error, "Reading an OTLP/HTTP body failed");
            let message =
                format!("the request body is larger than {MAX_REQUEST_BYTES} bytes or was cut off");
            return failure(
                encoding,
                StatusCode::PAYLOAD_TOO_LARGE,
                Code::ResourceExhausted,
                &message,
            );
        }
    };
    let caller = match caller {
        Ok(caller) => caller,
        Err(error) => return error_response(encoding, &error),
    };
    let export_request = match decode(encoding, &body) {
        Ok(export_request) => export_request,
        Err(error) => return error_response(encoding, &error),
    };
    match tracing.export(&caller, export_request).await {
        Ok(response) => success(encoding, &response),
        Err(error) => error_response(encoding, &error),
    }
}

fn decode(encoding: Encoding, body: &[u8]) -> Result<ExportTraceServiceRequest, Error> {
    match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode_from_slice(body).map_err(|error| {
            Error::invalid_argument(format!("the body is not an OTLP protobuf request: {error}"))
        }),
        Encoding::Json => {
            let mut value: Value = serde_json::from_slice(body).map_err(|error| {
                Error::invalid_argument(format!("the body is not valid JSON: {error}"))
            })?;
            hex_ids_to_base64(&mut value);
            serde_json::from_value(value).map_err(|error| {
                Error::invalid_argument(format!("the body is not an OTLP JSON request: {error}"))
            })
        }
    }
}

/// Rewrites the hex `traceId`, `spanId` and `parentSpanId` of every span
/// and link as base64. A value that is not hex becomes empty, so the span
/// is rejected for its id length.
fn hex_ids_to_base64(value: &mut Value) {
    for resource_spans in array_field(value, "resourceSpans", "resource_spans") {
        for scope_spans in array_field(resource_spans, "scopeSpans", "scope_spans") {
            for span in array_field(scope_spans, "spans", "spans") {
                convert_ids(span);
                for link in array_field(span, "links", "links") {
                    convert_ids(link);
                }
            }
        }
    }
}

/// Returns the elements of the array field named `camel` or `snake`.
fn array_field<'a>(
    value: &'a mut Value,
    camel: &str,
    snake: &str,
) -> impl Iterator<Item = &'a mut Value> {
    let object = value.as_object_mut();
    let array = object.and_then(|object| {
        if object.contains_key(camel) {
            object.get_mut(camel)
        } else {
            object.get_mut(snake)
        }
    });
    array
        .and_then(Value::as_array_mut)
        .into_iter()
        .flat_map(|array| array.iter_mut())
}

fn convert_ids(value: &mut Value) {
    let Some(object) = value.as_object_mut() else {
        return;
    };
    for key in [
        "traceId",
        "trace_id",
        "spanId",
        "span_id",
        "parentSpanId",
        "parent_span_id",
    ] {
        if let Some(Value::String(text)) = object.get_mut(key) {
            let bytes = from_hex(text).unwrap_or_default();
            *text = STANDARD.encode(bytes);
        }
    }
}

fn success(encoding: Encoding, response: &ExportTraceServiceResponse) -> Response {
    let body = match encoding {
        Encoding::Protobuf => response.encode_to_vec(),
        Encoding::Json => {
            let mut value = serde_json::to_value(response).unwrap_or(Value::Null);
            if let Some(object) = value.as_object_mut() {
                object.retain(|_, field| !field.is_null());
            }
            value.to_string().into_bytes()
        }
    };
    with_content_type(StatusCode::OK, encoding, body)
}

fn error_response(encoding: Encoding, error: &Error) -> Response {
    let status = match error.code() {
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::ResourceExhausted => StatusCode::PAYLOAD_TOO_LARGE,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::AlreadyExists | Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::Internal => {
            tracing::error!(error = ?error, "OTLP/HTTP export failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    let message = if error.code() == Code::Internal {
        "internal error"
    } else {
        error.message()
    };
    failure(encoding, status, error.code(), message)
}

/// Builds a failure response with a `google.rpc.Status` body.
fn failure(encoding: Encoding, status: StatusCode, code: Code, message: &str) -> Response {
    let grpc_code = grpc_code(code);
    let body = match encoding {
        Encoding::Json => serde_json::json!({"code": grpc_code, "message": message})
            .to_string()
            .into_bytes(),
        Encoding::Protobuf => encode_status(grpc_code, message),
    };
    with_content_type(status, encoding, body)
}

fn with_content_type(status: StatusCode, encoding: Encoding, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(encoding.content_type()),
    );
    response
}

/// Returns the gRPC status number of a code.
fn grpc_code(code: Code) -> u8 {
    match code {
        Code::InvalidArgument => 3,
        Code::NotFound => 5,
        Code::AlreadyExists => 6,
        Code::PermissionDenied => 7,
        Code::ResourceExhausted => 8,
        Code::FailedPrecondition => 9,
        Code::Unimplemented => 12,
        Code::Internal => 13,
        Code::Unavailable => 14,
        Code::Unauthenticated => 16,
    }
}

/// Encodes `google.rpc.Status { code = 1; message = 2 }`.
fn encode_status(code: u8, message: &str) -> Vec<u8> {
    let mut bytes = vec![0x08, code, 0x12];
    let mut length = message.len();
    while length >= 0x80 {
        bytes.push((length as u8 & 0x7f) | 0x80);
        length >>= 7;
    }
    bytes.push(length as u8);
    bytes.extend_from_slice(message.as_bytes());
    bytes
}
