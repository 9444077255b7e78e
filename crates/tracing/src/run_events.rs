//! Stored spans as UI-ready run events.

use agyn_api_tracing::agynio::api::tracing::v1 as pb;
use agyn_api_tracing::opentelemetry::proto::common::v1::__buffa::oneof::any_value::Value;
use agyn_api_tracing::opentelemetry::proto::common::v1::AnyValue;
use agyn_api_tracing::opentelemetry::proto::trace::v1::Span;
use agyn_core::time::timestamp;
use agyn_core::{Error, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use buffa_types::google::protobuf::{Struct, Timestamp};

use crate::envelope::{attribute, decode_column};
use crate::store::{STATUS_CODE_ERROR, SpanRow};

/// Returns the run event type of a span name, or `None` for spans that
/// are never emitted.
pub fn event_type(name: &str) -> Option<pb::RunEventType> {
    match name {
        "invocation.message" => Some(pb::RunEventType::RUN_EVENT_TYPE_INVOCATION_MESSAGE),
        "injection" => Some(pb::RunEventType::RUN_EVENT_TYPE_INJECTION),
        "llm.call" => Some(pb::RunEventType::RUN_EVENT_TYPE_LLM_CALL),
        "tool.execution" => Some(pb::RunEventType::RUN_EVENT_TYPE_TOOL_EXECUTION),
        "summarization" => Some(pb::RunEventType::RUN_EVENT_TYPE_SUMMARIZATION),
        _ => None,
    }
}

/// Event types a stream delivers. Empty means all five.
#[derive(Debug, Clone, Default)]
pub struct TypeFilter(Vec<pb::RunEventType>);

impl TypeFilter {
    /// Validates the `types` field of a request.
    pub fn parse(types: &[buffa::EnumValue<pb::RunEventType>]) -> Result<Self> {
        let mut known = Vec::with_capacity(types.len());
        for value in types {
            match value.as_known() {
                Some(pb::RunEventType::RUN_EVENT_TYPE_UNSPECIFIED) | None => {
                    return Err(Error::invalid_field(
                        "types",
                        "must contain only known run event types, not UNSPECIFIED",
                    ));
                }
                Some(known_type) => known.push(known_type),
            }
        }
        Ok(Self(known))
    }

    /// Returns whether the span named `name` is a run event of a wanted
    /// type.
    pub fn matches(&self, name: &str) -> bool {
        event_type(name).is_some_and(|kind| self.0.is_empty() || self.0.contains(&kind))
    }
}

/// Converts nanoseconds since the Unix epoch to a timestamp.
fn nanos_timestamp(nanos: i64) -> Timestamp {
    Timestamp {
        seconds: nanos.div_euclid(1_000_000_000),
        nanos: nanos.rem_euclid(1_000_000_000) as i32,
        ..Default::default()
    }
}

/// Builds the run event of a stored span whose name has a run event type.
pub fn run_event(row: &SpanRow) -> Result<pb::RunEvent> {
    let span: Span = decode_column("span_pb", &row.span_pb)?;
    let status = if row.status_code == STATUS_CODE_ERROR {
        pb::RunEventStatus::RUN_EVENT_STATUS_ERROR
    } else if row.end_ns == 0 {
        pb::RunEventStatus::RUN_EVENT_STATUS_RUNNING
    } else {
        pb::RunEventStatus::RUN_EVENT_STATUS_SUCCESS
    };
    let error_message = if row.status_message.is_empty() {
        match attribute(&span.attributes, "error.type").and_then(|value| value.value.as_ref()) {
            Some(Value::StringValue(text)) => text.clone(),
            _ => String::new(),
        }
    } else {
        row.status_message.clone()
    };
    let ended = row.end_ns > 0;
    let mut attributes = serde_json::Map::new();
    for key_value in &span.attributes {
        let value = key_value
            .value
            .as_option()
            .map_or(serde_json::Value::Null, json_value);
        attributes.insert(key_value.key.clone(), value);
    }
    let attributes: Struct = serde_json::from_value(serde_json::Value::Object(attributes))
        .map_err(|error| Error::internal("span attributes do not convert to a Struct", error))?;
    Ok(pb::RunEvent {
        id: row.span_id.clone(),
        run_id: row.trace_id.clone(),
        parent_id: row.parent_span_id.clone(),
        r#type: event_type(&row.name)
            .unwrap_or(pb::RunEventType::RUN_EVENT_TYPE_UNSPECIFIED)
            .into(),
        status: status.into(),
        name: row.name.clone(),
        started_at: nanos_timestamp(row.start_ns).into(),
        ended_at: if ended {
            nanos_timestamp(row.end_ns).into()
        } else {
            buffa::MessageField::none()
        },
        duration_ms: ended.then(|| (row.end_ns - row.start_ns) / 1_000_000),
        error_message,
        attributes: attributes.into(),
        updated_at: timestamp(row.updated_at).into(),
        ..Default::default()
    })
}

/// Converts an attribute value to JSON. Bytes become base64, and doubles
/// that JSON cannot hold (NaN, infinite) become null.
fn json_value(value: &AnyValue) -> serde_json::Value {
    match &value.value {
        None => serde_json::Value::Null,
        Some(Value::StringValue(text)) => serde_json::Value::String(text.clone()),
        Some(Value::BoolValue(flag)) => serde_json::Value::Bool(*flag),
        Some(Value::IntValue(number)) => serde_json::Value::from(*number),
        Some(Value::DoubleValue(number)) => serde_json::Number::from_f64(*number)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Some(Value::BytesValue(bytes)) => serde_json::Value::String(STANDARD.encode(bytes)),
        Some(Value::ArrayValue(array)) => {
            serde_json::Value::Array(array.values.iter().map(json_value).collect())
        }
        Some(Value::KvlistValue(list)) => serde_json::Value::Object(
            list.values
                .iter()
                .map(|entry| {
                    let value = entry
                        .value
                        .as_option()
                        .map_or(serde_json::Value::Null, json_value);
                    (entry.key.clone(), value)
                })
                .collect(),
        ),
    }
}
