//! OTLP Export: who may export what, span validation and the upsert.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use agyn_api_tracing::opentelemetry::proto::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use agyn_api_tracing::opentelemetry::proto::common::v1::__buffa::oneof::any_value::Value;
use agyn_api_tracing::opentelemetry::proto::common::v1::{AnyValue, KeyValue};
use agyn_api_tracing::opentelemetry::proto::resource::v1::Resource;
use agyn_api_tracing::opentelemetry::proto::trace::v1::Span;
use agyn_authz::ObjectRef;
use agyn_core::time::now_micros;
use agyn_core::{Caller, Error, IdentityKind, Result};
use buffa::Message as _;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::envelope::{attribute, decode_column, encode_column, span_status};
use crate::ids::{SPAN_ID_LEN, TRACE_ID_LEN, to_hex};
use crate::store::{self, SpanRow};
use crate::{Tracing, span_status_name};

/// Largest encoded span that is stored. Bigger spans are rejected one by
/// one in `partial_success`.
const MAX_SPAN_BYTES: usize = 1024 * 1024;

/// Time a message check result is reused.
const MESSAGE_CHECK_TTL: Duration = Duration::from_secs(60);
/// Maximum number of cached message check results.
const MESSAGE_CHECK_CAPACITY: usize = 1000;

const IDENTITY_ID: &str = "agyn.identity.id";
const AGENT_ID: &str = "agyn.agent.id";
const ORGANIZATION_ID: &str = "agyn.organization.id";
const WORKLOAD_ID: &str = "agyn.workload.id";
const MESSAGE_ID: &str = "agyn.thread.message.id";
/// Older name of [`MESSAGE_ID`], still accepted from producers.
const LEGACY_MESSAGE_ID: &str = "agyn.message.id";

/// Results of message checks by `(caller identity, message id)`: whether
/// the message exists and its thread is readable, and when that was
/// learned.
#[derive(Default)]
pub(crate) struct MessageCache {
    entries: HashMap<(String, String), (bool, Instant)>,
}

impl MessageCache {
    fn get(&mut self, key: &(String, String)) -> Option<bool> {
        match self.entries.get(key) {
            Some((allowed, at)) if at.elapsed() < MESSAGE_CHECK_TTL => Some(*allowed),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn insert(&mut self, key: (String, String), allowed: bool) {
        if self.entries.len() >= MESSAGE_CHECK_CAPACITY {
            self.entries
                .retain(|_, (_, at)| at.elapsed() < MESSAGE_CHECK_TTL);
        }
        if self.entries.len() >= MESSAGE_CHECK_CAPACITY {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(key, (allowed, Instant::now()));
    }
}

/// A span that passed validation, ready for the upsert.
struct Pending {
    row: SpanRow,
    span: Span,
}

impl Tracing {
    /// Export: stores the spans of `request` as `caller`. A request that
    /// breaks an attribute rule fails whole with `permission_denied`, and
    /// spans with bad ids or over 1 MiB are skipped and counted in the
    /// response. Storage failures are `unavailable` and store nothing.
    pub async fn export(
        &self,
        caller: &Caller,
        mut request: ExportTraceServiceRequest,
    ) -> Result<ExportTraceServiceResponse> {
        for resource_spans in &mut request.resource_spans {
            let resource = resource_spans.resource.get_or_insert_default();
            self.authorize_resource(caller, resource).await?;
        }
        self.authorize_messages(caller, &request).await?;

        let (pending, rejected, first_problem) = prepare(request);
        let stored = self.store_spans(pending).await?;
        for (row, created) in &stored {
            self.publish(row, *created);
        }
        tracing::debug!(stored = stored.len(), rejected, "Exported spans");
        let mut response = ExportTraceServiceResponse::default();
        if rejected > 0 {
            response.partial_success = ExportTracePartialSuccess {
                rejected_spans: rejected,
                error_message: first_problem.unwrap_or_default(),
                ..Default::default()
            }
            .into();
        }
        Ok(response)
    }

    /// Applies the caller rule to one resource: agents get their identity,
    /// agent, organization and workload attributes overwritten, and other
    /// identities must name an organization they can read.
    async fn authorize_resource(&self, caller: &Caller, resource: &mut Resource) -> Result<()> {
        let Caller::Identity {
            identity_id,
            kind,
            workload_id,
            ..
        } = caller
        else {
            return Ok(());
        };
        if *kind == IdentityKind::Agent || workload_id.is_some() {
            let agent = self
                .directory
                .resolve_agent(identity_id)
                .await?
                .ok_or_else(|| {
                    Error::permission_denied(format!(
                        "permission denied: identity {identity_id} is not an agent"
                    ))
                })?;
            set_attribute(&mut resource.attributes, IDENTITY_ID, identity_id);
            set_attribute(&mut resource.attributes, AGENT_ID, &agent.agent_id);
            set_attribute(
                &mut resource.attributes,
                ORGANIZATION_ID,
                &agent.organization_id,
            );
            if let Some(workload_id) = workload_id {
                set_attribute(&mut resource.attributes, WORKLOAD_ID, workload_id);
            }
            return Ok(());
        }
        let Some(org) = string_attribute(&resource.attributes, ORGANIZATION_ID) else {
            return Err(Error::permission_denied(format!(
                "permission denied: resource attribute {ORGANIZATION_ID} is required; \
                 set it to an organization you can read"
            )));
        };
        let named = resource
            .attributes
            .iter()
            .filter(|attribute| attribute.key == ORGANIZATION_ID)
            .count();
        if named > 1 {
            return Err(Error::permission_denied(format!(
                "permission denied: resource attribute {ORGANIZATION_ID} is set {named} times; set it once"
            )));
        }
        // Only agents may carry agent and workload attributes, and the
        // platform sets them.
        resource
            .attributes
            .retain(|attribute| attribute.key != AGENT_ID && attribute.key != WORKLOAD_ID);
        let readable = self
            .authorizer
            .check(
                &ObjectRef::identity(identity_id),
                "can_read",
                &ObjectRef::new("organization", &org),
            )
            .await?;
        if !readable {
            return Err(Error::permission_denied(format!(
                "permission denied: can_read on organization {org} is required to export its spans"
            )));
        }
        set_attribute(&mut resource.attributes, IDENTITY_ID, identity_id);
        Ok(())
    }

    /// Requires that every message a span links to exists and that its
    /// thread is readable by the caller. Components are not checked.
    async fn authorize_messages(
        &self,
        caller: &Caller,
        request: &ExportTraceServiceRequest,
    ) -> Result<()> {
        let Caller::Identity { identity_id, .. } = caller else {
            return Ok(());
        };
        let mut message_ids = BTreeSet::new();
        for resource_spans in &request.resource_spans {
            if let Some(resource) = resource_spans.resource.as_option() {
                message_ids.extend(message_attributes(&resource.attributes));
            }
            for scope_spans in &resource_spans.scope_spans {
                for span in &scope_spans.spans {
                    message_ids.extend(message_attributes(&span.attributes));
                }
            }
        }
        for message_id in message_ids {
            if !self.message_readable(identity_id, &message_id).await? {
                return Err(Error::permission_denied(format!(
                    "permission denied: message {message_id} does not exist or its thread \
                     is not readable by the exporter"
                )));
            }
        }
        Ok(())
    }

    async fn message_readable(&self, identity_id: &str, message_id: &str) -> Result<bool> {
        let key = (identity_id.to_string(), message_id.to_string());
        if let Some(allowed) = self.lock_messages().get(&key) {
            return Ok(allowed);
        }
        let allowed = match self.directory.message_thread(message_id).await? {
            Some(message) => {
                self.authorizer
                    .check(
                        &ObjectRef::identity(identity_id),
                        "can_read",
                        &ObjectRef::new("thread", &message.thread_id),
                    )
                    .await?
            }
            None => false,
        };
        self.lock_messages().insert(key, allowed);
        Ok(allowed)
    }

    fn lock_messages(&self) -> std::sync::MutexGuard<'_, MessageCache> {
        self.messages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Upserts every pending span in one transaction. Returns each stored
    /// row with whether it was new.
    async fn store_spans(&self, pending: Vec<Pending>) -> Result<Vec<(SpanRow, bool)>> {
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        let result = self.upsert_all(pending).await;
        result.map_err(|error| {
            if error.code() == agyn_core::error::Code::PermissionDenied {
                return error;
            }
            tracing::warn!(%error, "Storing exported spans failed");
            Error::unavailable("storing the spans failed; retry the export")
        })
    }

    async fn upsert_all(&self, pending: Vec<Pending>) -> Result<Vec<(SpanRow, bool)>> {
        let mut tx = self.db.begin_write().await?;
        let now = now_micros();
        let mut stored = Vec::with_capacity(pending.len());
        for Pending { mut row, mut span } in pending {
            let existing = store::by_key(&mut tx, &row.trace_id, &row.span_id).await?;
            if let Some(existing) = &existing {
                // A span id is chosen by the producer, so an export may
                // name a span of another organization; it must not
                // replace it.
                if existing.organization_id != row.organization_id {
                    return Err(Error::permission_denied(format!(
                        "permission denied: span {} of trace {} belongs to another organization",
                        row.span_id, row.trace_id
                    )));
                }
                row.created_at = existing.created_at;
                if existing.end_ns > 0 && row.end_ns == 0 {
                    keep_completion(&mut row, &mut span, existing)?;
                }
            } else {
                row.created_at = now;
            }
            row.updated_at = now;
            store::upsert(&mut tx, &row).await?;
            stored.push((row, existing.is_none()));
        }
        tx.commit().await?;
        Ok(stored)
    }

    fn publish(&self, row: &SpanRow, created: bool) {
        let event = if created {
            "span.created"
        } else {
            "span.updated"
        };
        self.events.publish(
            "tracing",
            event,
            format!("trace:{}", row.trace_id),
            json!({
                "trace_id": row.trace_id,
                "span_id": row.span_id,
                "name": row.name,
                "status": span_status_name(span_status(row)),
            }),
        );
    }
}

/// Keeps the stored end time and status of a completed span when a late
/// in-progress export arrives, so completion is never undone.
fn keep_completion(row: &mut SpanRow, span: &mut Span, existing: &SpanRow) -> Result<()> {
    let stored: Span = decode_column("span_pb", &existing.span_pb)?;
    span.end_time_unix_nano = stored.end_time_unix_nano;
    span.status = stored.status;
    row.end_ns = existing.end_ns;
    row.status_code = existing.status_code;
    row.status_message = existing.status_message.clone();
    row.span_pb = encode_column(span);
    Ok(())
}

/// Validates and converts every span. Returns the valid spans, the count
/// of rejected ones and the first problem.
fn prepare(request: ExportTraceServiceRequest) -> (Vec<Pending>, i64, Option<String>) {
    let mut pending = Vec::new();
    let mut rejected = 0i64;
    let mut first_problem = None;
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.into_option().unwrap_or_default();
        let resource_pb = encode_column(&resource);
        let resource_hash = hash(&resource_pb);
        let organization_id = string_attribute(&resource.attributes, ORGANIZATION_ID);
        for scope_spans in resource_spans.scope_spans {
            let scope = scope_spans.scope.into_option().unwrap_or_default();
            let scope_pb = encode_column(&scope);
            let scope_hash = hash(&scope_pb);
            for span in scope_spans.spans {
                if let Some(problem) = span_problem(&span) {
                    rejected += 1;
                    first_problem.get_or_insert(problem);
                    continue;
                }
                let status = span.status.as_option();
                let row = SpanRow {
                    trace_id: to_hex(&span.trace_id),
                    span_id: to_hex(&span.span_id),
                    parent_span_id: to_hex(&span.parent_span_id),
                    name: span.name.clone(),
                    kind: i64::from(span.kind.to_i32()),
                    start_ns: nanos(span.start_time_unix_nano),
                    end_ns: nanos(span.end_time_unix_nano),
                    status_code: status.map_or(0, |status| i64::from(status.code.to_i32())),
                    status_message: status
                        .map(|status| status.message.clone())
                        .unwrap_or_default(),
                    organization_id: organization_id.clone(),
                    workload_id: string_attribute(&span.attributes, WORKLOAD_ID)
                        .or_else(|| string_attribute(&resource.attributes, WORKLOAD_ID)),
                    message_id: message_attribute(&span.attributes)
                        .or_else(|| message_attribute(&resource.attributes)),
                    span_pb: encode_column(&span),
                    resource_pb: resource_pb.clone(),
                    scope_pb: scope_pb.clone(),
                    resource_hash: resource_hash.clone(),
                    scope_hash: scope_hash.clone(),
                    created_at: 0,
                    updated_at: 0,
                };
                pending.push(Pending { row, span });
            }
        }
    }
    (pending, rejected, first_problem)
}

/// Returns why a span cannot be stored, or `None` when it can.
fn span_problem(span: &Span) -> Option<String> {
    let trace = to_hex(&span.trace_id);
    if span.trace_id.len() != TRACE_ID_LEN {
        return Some(format!(
            "span {:?}: trace_id must be {TRACE_ID_LEN} bytes, got {}",
            span.name,
            span.trace_id.len()
        ));
    }
    if span.trace_id.iter().all(|byte| *byte == 0) {
        return Some(format!(
            "span {:?}: trace_id must not be all zeros",
            span.name
        ));
    }
    if span.span_id.len() != SPAN_ID_LEN {
        return Some(format!(
            "span {:?} of trace {trace}: span_id must be {SPAN_ID_LEN} bytes, got {}",
            span.name,
            span.span_id.len()
        ));
    }
    if span.span_id.iter().all(|byte| *byte == 0) {
        return Some(format!(
            "span {:?} of trace {trace}: span_id must not be all zeros",
            span.name
        ));
    }
    if !span.parent_span_id.is_empty() && span.parent_span_id.len() != SPAN_ID_LEN {
        return Some(format!(
            "span {:?} of trace {trace}: parent_span_id must be empty or {SPAN_ID_LEN} bytes, got {}",
            span.name,
            span.parent_span_id.len()
        ));
    }
    let size = span.encoded_len() as usize;
    if size > MAX_SPAN_BYTES {
        return Some(format!(
            "span {:?} of trace {trace}: encoded size {size} bytes exceeds the maximum of \
             {MAX_SPAN_BYTES}",
            span.name
        ));
    }
    None
}

/// Converts OTLP nanoseconds to the stored i64, saturating far in the
/// future.
fn nanos(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Returns hex of the first 16 bytes of the SHA-256 of `text`.
fn hash(text: &str) -> String {
    to_hex(&Sha256::digest(text.as_bytes())[..16])
}

/// Returns a string attribute, or `None` when it is missing, empty or not
/// a string.
fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attribute(attributes, key).and_then(|value| value.value.as_ref()) {
        Some(Value::StringValue(text)) if !text.is_empty() => Some(text.clone()),
        _ => None,
    }
}

fn message_attribute(attributes: &[KeyValue]) -> Option<String> {
    string_attribute(attributes, MESSAGE_ID)
        .or_else(|| string_attribute(attributes, LEGACY_MESSAGE_ID))
}

/// Returns the message ids under both attribute names.
fn message_attributes(attributes: &[KeyValue]) -> impl Iterator<Item = String> + '_ {
    [MESSAGE_ID, LEGACY_MESSAGE_ID]
        .into_iter()
        .filter_map(|key| string_attribute(attributes, key))
}

/// Replaces every attribute `key` with one string attribute.
fn set_attribute(attributes: &mut Vec<KeyValue>, key: &str, value: &str) {
    attributes.retain(|attribute| attribute.key != key);
    attributes.push(KeyValue {
        key: key.to_string(),
        value: AnyValue {
            value: Some(Value::StringValue(value.to_string())),
            ..Default::default()
        }
        .into(),
        ..Default::default()
    });
}
