//! SQL of the `spans` table.

use agyn_core::Result;
use agyn_core::page::{Cursor, Page, SortOrder};
use agyn_store::sqlx::{self, AnyConnection, Row};

/// OpenTelemetry status code ERROR (`Status.StatusCode`).
pub const STATUS_CODE_ERROR: i64 = 2;

const COLUMNS: &str = "trace_id, span_id, parent_span_id, name, kind, start_ns, end_ns, \
     status_code, status_message, organization_id, workload_id, message_id, span_pb, \
     resource_pb, scope_pb, resource_hash, scope_hash, created_at, updated_at";

/// One stored span. Ids are lowercase hex and the `*_pb` fields are
/// base64 of the encoded messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanRow {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    pub kind: i64,
    pub start_ns: i64,
    pub end_ns: i64,
    pub status_code: i64,
    pub status_message: String,
    pub organization_id: Option<String>,
    pub workload_id: Option<String>,
    pub message_id: Option<String>,
    pub span_pb: String,
    pub resource_pb: String,
    pub scope_pb: String,
    pub resource_hash: String,
    pub scope_hash: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl SpanRow {
    fn from_row(row: &sqlx::any::AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            trace_id: row.try_get("trace_id")?,
            span_id: row.try_get("span_id")?,
            parent_span_id: row.try_get("parent_span_id")?,
            name: row.try_get("name")?,
            kind: row.try_get("kind")?,
            start_ns: row.try_get("start_ns")?,
            end_ns: row.try_get("end_ns")?,
            status_code: row.try_get("status_code")?,
            status_message: row.try_get("status_message")?,
            organization_id: row.try_get("organization_id")?,
            workload_id: row.try_get("workload_id")?,
            message_id: row.try_get("message_id")?,
            span_pb: row.try_get("span_pb")?,
            resource_pb: row.try_get("resource_pb")?,
            scope_pb: row.try_get("scope_pb")?,
            resource_hash: row.try_get("resource_hash")?,
            scope_hash: row.try_get("scope_hash")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// Filter of ListSpans in storage terms. Every set field must match.
#[derive(Debug, Clone, Default)]
pub struct SpanQuery {
    pub trace_id: Option<String>,
    pub parent_span_id: Option<String>,
    pub names: Vec<String>,
    pub kind: Option<i64>,
    pub start_min: Option<i64>,
    pub start_max: Option<i64>,
    pub in_progress: Option<bool>,
    pub running: bool,
    pub ok: bool,
    pub error: bool,
    pub message_id: Option<String>,
    pub workload_id: Option<String>,
}

enum Bind {
    Text(String),
    Int(i64),
}

/// Inserts a span or replaces every field of the stored one except
/// `created_at`.
pub async fn upsert(connection: &mut AnyConnection, row: &SpanRow) -> Result<()> {
    let sql = format!(
        "INSERT INTO spans ({COLUMNS}) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) \
         ON CONFLICT (trace_id, span_id) DO UPDATE SET \
         parent_span_id = excluded.parent_span_id, name = excluded.name, \
         kind = excluded.kind, start_ns = excluded.start_ns, end_ns = excluded.end_ns, \
         status_code = excluded.status_code, status_message = excluded.status_message, \
         organization_id = excluded.organization_id, workload_id = excluded.workload_id, \
         message_id = excluded.message_id, span_pb = excluded.span_pb, \
         resource_pb = excluded.resource_pb, scope_pb = excluded.scope_pb, \
         resource_hash = excluded.resource_hash, scope_hash = excluded.scope_hash, \
         updated_at = excluded.updated_at"
    );
    sqlx::query(&sql)
        .bind(&row.trace_id)
        .bind(&row.span_id)
        .bind(&row.parent_span_id)
        .bind(&row.name)
        .bind(row.kind)
        .bind(row.start_ns)
        .bind(row.end_ns)
        .bind(row.status_code)
        .bind(&row.status_message)
        .bind(&row.organization_id)
        .bind(&row.workload_id)
        .bind(&row.message_id)
        .bind(&row.span_pb)
        .bind(&row.resource_pb)
        .bind(&row.scope_pb)
        .bind(&row.resource_hash)
        .bind(&row.scope_hash)
        .bind(row.created_at)
        .bind(row.updated_at)
        .execute(connection)
        .await?;
    Ok(())
}

pub async fn by_key(
    connection: &mut AnyConnection,
    trace_id: &str,
    span_id: &str,
) -> Result<Option<SpanRow>> {
    let sql = format!("SELECT {COLUMNS} FROM spans WHERE trace_id = $1 AND span_id = $2");
    let row = sqlx::query(&sql)
        .bind(trace_id)
        .bind(span_id)
        .fetch_optional(connection)
        .await?;
    Ok(row.as_ref().map(SpanRow::from_row).transpose()?)
}

/// Returns every span of a trace, oldest start first.
pub async fn of_trace(connection: &mut AnyConnection, trace_id: &str) -> Result<Vec<SpanRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM spans WHERE trace_id = $1 ORDER BY start_ns ASC, span_id ASC"
    );
    let rows = sqlx::query(&sql)
        .bind(trace_id)
        .fetch_all(connection)
        .await?;
    Ok(rows
        .iter()
        .map(SpanRow::from_row)
        .collect::<Result<_, _>>()?)
}

/// Returns one page of an organization's spans, with one extra row when
/// more follow. The page cursor is `(start_ns, trace_id + span_id)`.
pub async fn list(
    connection: &mut AnyConnection,
    organization_id: &str,
    query: &SpanQuery,
    page: &Page,
) -> Result<Vec<SpanRow>> {
    let mut conditions = Conditions::default();
    conditions.push(
        "organization_id = ?",
        Bind::Text(organization_id.to_string()),
    );
    conditions.filter(query);
    if let Some(after) = &page.after {
        conditions.after(after, page.order);
    }
    let direction = match page.order {
        SortOrder::Ascending => "ASC",
        SortOrder::Descending => "DESC",
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM spans WHERE {} \
         ORDER BY start_ns {direction}, trace_id {direction}, span_id {direction} LIMIT {}",
        conditions.sql.join(" AND "),
        page.fetch_limit()
    );

    let mut statement = sqlx::query(&sql);
    for bind in conditions.binds {
        statement = match bind {
            Bind::Text(text) => statement.bind(text),
            Bind::Int(number) => statement.bind(number),
        };
    }
    let rows = statement.fetch_all(connection).await?;
    Ok(rows
        .iter()
        .map(SpanRow::from_row)
        .collect::<Result<_, _>>()?)
}

/// SQL conditions, ANDed, with their bound values in placeholder order.
#[derive(Default)]
struct Conditions {
    sql: Vec<String>,
    binds: Vec<Bind>,
}

impl Conditions {
    /// Adds a condition whose `?` is the placeholder of `bind`.
    fn push(&mut self, condition: &str, bind: Bind) {
        self.binds.push(bind);
        let placeholder = format!("${}", self.binds.len());
        self.sql.push(condition.replace('?', &placeholder));
    }

    fn filter(&mut self, query: &SpanQuery) {
        if let Some(trace_id) = &query.trace_id {
            self.push("trace_id = ?", Bind::Text(trace_id.clone()));
        }
        if let Some(parent) = &query.parent_span_id {
            self.push("parent_span_id = ?", Bind::Text(parent.clone()));
        }
        if let Some(kind) = query.kind {
            self.push("kind = ?", Bind::Int(kind));
        }
        if let Some(min) = query.start_min {
            self.push("start_ns >= ?", Bind::Int(min));
        }
        if let Some(max) = query.start_max {
            self.push("start_ns <= ?", Bind::Int(max));
        }
        if let Some(message_id) = &query.message_id {
            self.push("message_id = ?", Bind::Text(message_id.clone()));
        }
        if let Some(workload_id) = &query.workload_id {
            self.push("workload_id = ?", Bind::Text(workload_id.clone()));
        }
        if !query.names.is_empty() {
            let mut placeholders = Vec::new();
            for name in &query.names {
                self.binds.push(Bind::Text(name.clone()));
                placeholders.push(format!("${}", self.binds.len()));
            }
            self.sql
                .push(format!("name IN ({})", placeholders.join(", ")));
        }
        if let Some(condition) = status_condition(query) {
            self.sql.push(condition);
        }
    }

    /// Starts the page strictly after `after`, whose id is the trace id
    /// hex followed by the span id hex.
    fn after(&mut self, after: &Cursor, order: SortOrder) {
        let (trace_id, span_id) = after.id.split_at(32.min(after.id.len()));
        let operator = match order {
            SortOrder::Ascending => ">",
            SortOrder::Descending => "<",
        };
        let first = self.binds.len() + 1;
        self.sql.push(format!(
            "(start_ns, trace_id, span_id) {operator} (${first}, ${}, ${})",
            first + 1,
            first + 2
        ));
        self.binds.push(Bind::Int(after.position));
        self.binds.push(Bind::Text(trace_id.to_string()));
        self.binds.push(Bind::Text(span_id.to_string()));
    }
}

/// Builds the condition of a status filter: the statuses when any is
/// set, else `in_progress`.
fn status_condition(query: &SpanQuery) -> Option<String> {
    let error = format!("status_code = {STATUS_CODE_ERROR}");
    let running = format!("(end_ns = 0 AND status_code <> {STATUS_CODE_ERROR})");
    let ok = format!("(end_ns > 0 AND status_code <> {STATUS_CODE_ERROR})");
    let mut parts = Vec::new();
    if query.running {
        parts.push(running);
    }
    if query.ok {
        parts.push(ok);
    }
    if query.error {
        parts.push(error);
    }
    if !parts.is_empty() {
        return Some(format!("({})", parts.join(" OR ")));
    }
    query.in_progress.map(|in_progress| {
        if in_progress {
            "end_ns = 0".to_string()
        } else {
            "end_ns > 0".to_string()
        }
    })
}

/// Deletes up to `batch` spans last stored before `cutoff` (microseconds)
/// and returns how many.
pub async fn delete_updated_before(
    connection: &mut AnyConnection,
    cutoff: i64,
    batch: i64,
) -> Result<u64> {
    let result = sqlx::query(
        "DELETE FROM spans WHERE (trace_id, span_id) IN \
         (SELECT trace_id, span_id FROM spans WHERE updated_at < $1 LIMIT $2)",
    )
    .bind(cutoff)
    .bind(batch)
    .execute(connection)
    .await?;
    Ok(result.rows_affected())
}
