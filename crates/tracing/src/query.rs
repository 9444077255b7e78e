//! ListSpans, GetSpan and GetTrace.

use std::collections::HashMap;

use agyn_api_tracing::agynio::api::tracing::v1 as pb;
use agyn_api_tracing::opentelemetry::proto::trace::v1::ResourceSpans;
use agyn_authz::ObjectRef;
use agyn_core::page::{Cursor, Fingerprint, Page, SortOrder};
use agyn_core::{Caller, Error, Result};
use buffa::Message as _;

use crate::Tracing;
use crate::envelope::{group, summary};
use crate::ids::{span_id_field, to_hex, trace_id_field};
use crate::store::{self, SpanQuery, SpanRow};

/// Spans per ListSpans page when the request sends 0.
const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest ListSpans page; bigger requests are clamped.
const MAX_PAGE_SIZE: usize = 1000;

/// Length of a page cursor id: trace id hex followed by span id hex.
const CURSOR_ID_LEN: usize = 48;

impl Tracing {
    /// ListSpans: one page of an organization's spans matching `filter`.
    /// Requires `can_read` on the organization.
    pub async fn list_spans(
        &self,
        caller: &Caller,
        request: &pb::ListSpansRequest,
    ) -> Result<(Vec<ResourceSpans>, String)> {
        let org = request.organization_id.as_str();
        if org.is_empty() {
            return Err(Error::invalid_field("organization_id", "is required"));
        }
        if !self.can_read_org(caller, Some(org)).await? {
            return Err(agyn_authz::missing_permission(
                "can_read",
                &ObjectRef::new("organization", org),
            ));
        }

        let default_filter = pb::SpanFilter::default();
        let filter = request.filter.as_option().unwrap_or(&default_filter);
        let query = span_query(filter)?;
        let page = list_page(caller, request, filter)?;

        let mut connection = self.db.pool().acquire().await?;
        let rows = store::list(&mut connection, org, &query, &page).await?;
        let (rows, next_page_token) = page.finish(rows, |row| Cursor {
            position: row.start_ns,
            id: format!("{}{}", row.trace_id, row.span_id),
        });
        Ok((group(&rows)?, next_page_token))
    }

    /// GetSpan: one span in its envelope. Requires `can_read` on the
    /// span's organization, and cluster admin for a span without one.
    pub async fn get_span(
        &self,
        caller: &Caller,
        trace_id: &[u8],
        span_id: &[u8],
    ) -> Result<ResourceSpans> {
        let trace_id = trace_id_field("trace_id", trace_id)?;
        let span_id = span_id_field("span_id", span_id)?;
        let mut connection = self.db.pool().acquire().await?;
        let row = store::by_key(&mut connection, &trace_id, &span_id)
            .await?
            .ok_or_else(span_not_found)?;
        if !self
            .can_read_org(caller, row.organization_id.as_deref())
            .await?
        {
            return Err(Error::permission_denied(
                "permission denied: can_read on the span's organization is required",
            ));
        }
        let mut envelopes = group(std::slice::from_ref(&row))?;
        Ok(envelopes.pop().unwrap_or_default())
    }

    /// GetTrace: every span of the trace that the caller may read, oldest
    /// start first, with a summary over them.
    pub async fn get_trace(
        &self,
        caller: &Caller,
        trace_id: &[u8],
    ) -> Result<(Vec<ResourceSpans>, pb::TraceSummary)> {
        let trace_id = trace_id_field("trace_id", trace_id)?;
        let rows = self.trace_rows(&trace_id).await?;
        if rows.is_empty() {
            return Err(Error::new(
                agyn_core::error::Code::NotFound,
                "trace not found",
            ));
        }
        let rows = self.readable(caller, rows).await?;
        if rows.is_empty() {
            return Err(no_readable_spans());
        }
        Ok((group(&rows)?, summary(&trace_id, &rows)?))
    }

    pub(crate) async fn trace_rows(&self, trace_id: &str) -> Result<Vec<SpanRow>> {
        let mut connection = self.db.pool().acquire().await?;
        store::of_trace(&mut connection, trace_id).await
    }

    /// Keeps the rows whose organization the caller may read, checking
    /// each organization once.
    pub(crate) async fn readable(
        &self,
        caller: &Caller,
        rows: Vec<SpanRow>,
    ) -> Result<Vec<SpanRow>> {
        let mut decisions: HashMap<Option<String>, bool> = HashMap::new();
        let mut kept = Vec::with_capacity(rows.len());
        for row in rows {
            let allowed = match decisions.get(&row.organization_id) {
                Some(allowed) => *allowed,
                None => {
                    let allowed = self
                        .can_read_org(caller, row.organization_id.as_deref())
                        .await?;
                    decisions.insert(row.organization_id.clone(), allowed);
                    allowed
                }
            };
            if allowed {
                kept.push(row);
            }
        }
        Ok(kept)
    }
}

/// Validates the order, page size and page token of a ListSpans request.
/// The token is bound to the caller, organization, filter and order.
fn list_page(
    caller: &Caller,
    request: &pb::ListSpansRequest,
    filter: &pb::SpanFilter,
) -> Result<Page> {
    let order = match request.order.as_known() {
        Some(pb::SpanOrder::SPAN_ORDER_START_TIME_ASC) => SortOrder::Ascending,
        Some(_) => SortOrder::Descending,
        None => return Err(Error::invalid_field("order", "unknown span order")),
    };
    let fingerprint = Fingerprint::new("agynio.api.tracing.v1.TracingGateway/ListSpans")
        .with(&caller_key(caller))
        .with(&request.organization_id)
        .with(&to_hex(&filter.encode_to_vec()));
    let mut page = Page::parse(request.page_size, &request.page_token, order, fingerprint)?;
    // Page::parse applies the platform-wide sizes, but ListSpans counts
    // spans with its own default and maximum.
    page.limit = match request.page_size {
        0 => DEFAULT_PAGE_SIZE,
        size => usize::try_from(size).unwrap_or(0).min(MAX_PAGE_SIZE),
    };
    let foreign_token = page
        .after
        .as_ref()
        .is_some_and(|after| after.id.len() != CURSOR_ID_LEN);
    if foreign_token {
        return Err(
            Error::invalid_field("page_token", "is not a ListSpans page token")
                .with_reason("PAGE_TOKEN_INVALID"),
        );
    }
    Ok(page)
}

fn span_not_found() -> Error {
    Error::new(agyn_core::error::Code::NotFound, "span not found")
}

pub(crate) fn no_readable_spans() -> Error {
    Error::permission_denied(
        "permission denied: can_read on the organization of the trace's spans is required",
    )
}

/// Returns the id a page token is bound to.
fn caller_key(caller: &Caller) -> String {
    match caller {
        Caller::Identity { identity_id, .. } => identity_id.clone(),
        Caller::Component(name) => format!("component:{name}"),
    }
}

/// Validates a SpanFilter and converts it to storage terms.
fn span_query(filter: &pb::SpanFilter) -> Result<SpanQuery> {
    let mut query = SpanQuery {
        trace_id: filter
            .trace_id
            .as_deref()
            .map(|id| trace_id_field("filter.trace_id", id))
            .transpose()?,
        parent_span_id: match filter.parent_span_id.as_deref() {
            Some([]) => Some(String::new()),
            Some(id) => Some(span_id_field("filter.parent_span_id", id)?),
            None => None,
        },
        names: if filter.names.is_empty() {
            filter.name.iter().cloned().collect()
        } else {
            filter.names.clone()
        },
        kind: filter.kind.map(|kind| i64::from(kind.to_i32())),
        start_min: filter.start_time_min,
        start_max: filter.start_time_max,
        message_id: filter.message_id.clone(),
        workload_id: filter.workload_id.clone(),
        ..Default::default()
    };
    if filter.statuses.is_empty() {
        query.in_progress = filter.in_progress;
    }
    for status in &filter.statuses {
        match status.as_known() {
            Some(pb::SpanStatus::SPAN_STATUS_RUNNING) => query.running = true,
            Some(pb::SpanStatus::SPAN_STATUS_OK) => query.ok = true,
            Some(pb::SpanStatus::SPAN_STATUS_ERROR) => query.error = true,
            Some(pb::SpanStatus::SPAN_STATUS_UNSPECIFIED) | None => {
                return Err(Error::invalid_field(
                    "filter.statuses",
                    "must contain only RUNNING, OK or ERROR",
                ));
            }
        }
    }
    Ok(query)
}
