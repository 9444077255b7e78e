//! Stored spans back into OTLP messages: the ResourceSpans and ScopeSpans
//! envelopes, derived statuses and trace summaries.

use std::collections::HashMap;

use agyn_api_tracing::agynio::api::tracing::v1 as pb;
use agyn_api_tracing::opentelemetry::proto::common::v1::__buffa::oneof::any_value::Value;
use agyn_api_tracing::opentelemetry::proto::common::v1::{
    AnyValue, InstrumentationScope, KeyValue,
};
use agyn_api_tracing::opentelemetry::proto::resource::v1::Resource;
use agyn_api_tracing::opentelemetry::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
use agyn_core::{Error, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::ids::from_hex;
use crate::span_status_name;
use crate::store::{STATUS_CODE_ERROR, SpanRow};

/// Decodes a base64 column that contains an encoded message.
pub fn decode_column<M: buffa::Message + Default>(column: &str, text: &str) -> Result<M> {
    let bytes = STANDARD
        .decode(text)
        .map_err(|error| Error::internal(format!("stored {column} is not base64"), error))?;
    M::decode_from_slice(&bytes)
        .map_err(|error| Error::internal(format!("stored {column} does not decode"), error))
}

/// Encodes a message for a base64 column.
pub fn encode_column<M: buffa::Message>(message: &M) -> String {
    STANDARD.encode(message.encode_to_vec())
}

/// Derived status of a stored span.
pub fn span_status(row: &SpanRow) -> pb::SpanStatus {
    if row.status_code == STATUS_CODE_ERROR {
        pb::SpanStatus::SPAN_STATUS_ERROR
    } else if row.end_ns == 0 {
        pb::SpanStatus::SPAN_STATUS_RUNNING
    } else {
        pb::SpanStatus::SPAN_STATUS_OK
    }
}

/// Groups rows into envelopes: rows with the same resource share one
/// ResourceSpans, and rows with the same scope inside it share one
/// ScopeSpans. Envelopes appear in the order of their first row, and rows
/// keep their order inside each.
pub fn group(rows: &[SpanRow]) -> Result<Vec<ResourceSpans>> {
    let mut envelopes: Vec<ResourceSpans> = Vec::new();
    let mut resource_index: HashMap<&str, usize> = HashMap::new();
    let mut scope_index: HashMap<(&str, &str), usize> = HashMap::new();
    for row in rows {
        let span: Span = decode_column("span_pb", &row.span_pb)?;
        let resource_position = match resource_index.get(row.resource_hash.as_str()) {
            Some(&position) => position,
            None => {
                let resource: Resource = decode_column("resource_pb", &row.resource_pb)?;
                envelopes.push(ResourceSpans {
                    resource: resource.into(),
                    ..Default::default()
                });
                resource_index.insert(&row.resource_hash, envelopes.len() - 1);
                envelopes.len() - 1
            }
        };
        let envelope = &mut envelopes[resource_position];
        let key = (row.resource_hash.as_str(), row.scope_hash.as_str());
        let scope_position = match scope_index.get(&key) {
            Some(&position) => position,
            None => {
                let scope: InstrumentationScope = decode_column("scope_pb", &row.scope_pb)?;
                envelope.scope_spans.push(ScopeSpans {
                    scope: scope.into(),
                    ..Default::default()
                });
                scope_index.insert(key, envelope.scope_spans.len() - 1);
                envelope.scope_spans.len() - 1
            }
        };
        envelope.scope_spans[scope_position].spans.push(span);
    }
    Ok(envelopes)
}

/// Returns the value of attribute `key`.
pub fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .and_then(|attribute| attribute.value.as_option())
}

/// Reads an attribute as a count. Integers, finite doubles (truncated)
/// and decimal strings are accepted, and anything else counts 0.
fn count_attribute(attributes: &[KeyValue], key: &str) -> i64 {
    match attribute(attributes, key).and_then(|value| value.value.as_ref()) {
        Some(Value::IntValue(number)) => *number,
        Some(Value::DoubleValue(number)) if number.is_finite() => *number as i64,
        Some(Value::StringValue(text)) => text.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

/// Builds the summary of a trace over `rows`, which must not be empty.
pub fn summary(trace_id: &str, rows: &[SpanRow]) -> Result<pb::TraceSummary> {
    let mut summary = pb::TraceSummary {
        trace_id: from_hex(trace_id).unwrap_or_default(),
        first_span_start_time: rows.iter().map(|row| row.start_ns).min().unwrap_or(0),
        last_span_start_time: rows.iter().map(|row| row.start_ns).max().unwrap_or(0),
        last_span_end_time: rows.iter().map(|row| row.end_ns).max().unwrap_or(0),
        total_spans: rows.len() as i64,
        ..Default::default()
    };
    let mut usage = pb::TokenUsage::default();
    let mut running = false;
    let mut error = false;
    for row in rows {
        *summary.counts_by_name.entry(row.name.clone()).or_default() += 1;
        let status = span_status(row);
        running |= status == pb::SpanStatus::SPAN_STATUS_RUNNING;
        error |= status == pb::SpanStatus::SPAN_STATUS_ERROR;
        *summary
            .counts_by_status
            .entry(span_status_name(status).to_string())
            .or_default() += 1;
        let span: Span = decode_column("span_pb", &row.span_pb)?;
        usage.input_tokens += count_attribute(&span.attributes, "gen_ai.usage.input_tokens");
        usage.cache_read_input_tokens +=
            count_attribute(&span.attributes, "gen_ai.usage.cache_read.input_tokens");
        usage.output_tokens += count_attribute(&span.attributes, "gen_ai.usage.output_tokens");
        usage.reasoning_tokens += count_attribute(&span.attributes, "agyn.usage.reasoning_tokens");
    }
    usage.total_tokens = usage.input_tokens + usage.output_tokens;
    summary.token_usage = usage.into();
    summary.status = if running {
        pb::TraceStatus::TRACE_STATUS_RUNNING
    } else if error {
        pb::TraceStatus::TRACE_STATUS_ERROR
    } else {
        pb::TraceStatus::TRACE_STATUS_COMPLETED
    }
    .into();
    Ok(summary)
}
