//! SQL for `runners`, `workloads` and `provisioned_volumes`, and the
//! query builder that their filtered, sorted lists share.

pub(crate) mod runners;
pub(crate) mod volumes;
pub(crate) mod workloads;

use agyn_core::Result;
use agyn_core::page::{Cursor, Page, SortOrder};
use agyn_store::Backend;
use agyn_store::sqlx::{self, Any, AnyConnection, any::AnyArguments, query::Query};

use crate::model::{ListSort, SortField};

/// Rows deleted per statement during the organization purge.
pub(crate) const DELETE_BATCH: i64 = 1_000;

/// Bits of a cursor position that hold `created_at`. The status of a
/// status-sorted list sits above them. 2^55 µs is about 1,100 years after
/// 1970, and status numbers stay below 8.
const STATUS_SHIFT: u32 = 55;
const CREATED_MASK: i64 = (1 << STATUS_SHIFT) - 1;

/// A value bound to a placeholder.
#[derive(Debug, Clone)]
enum Value {
    Text(String),
    Int(i64),
}

/// SQL text with its bound values, numbered `$1`, `$2`, … in order.
#[derive(Debug, Default)]
pub(crate) struct Sql {
    text: String,
    values: Vec<Value>,
}

impl Sql {
    pub(crate) fn new(text: &str) -> Self {
        Self {
            text: text.to_string(),
            values: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Binds a text value and returns its placeholder.
    pub(crate) fn text(&mut self, value: &str) -> String {
        self.values.push(Value::Text(value.to_string()));
        format!("${}", self.values.len())
    }

    /// Binds an integer value and returns its placeholder.
    pub(crate) fn int(&mut self, value: i64) -> String {
        self.values.push(Value::Int(value));
        format!("${}", self.values.len())
    }

    /// Appends ` AND column IN (…)` for a non-empty list of text values.
    pub(crate) fn and_in_text(&mut self, column: &str, values: &[String]) {
        if values.is_empty() {
            return;
        }
        let placeholders: Vec<String> = values.iter().map(|value| self.text(value)).collect();
        self.text
            .push_str(&format!(" AND {column} IN ({})", placeholders.join(", ")));
    }

    /// Appends ` AND column IN (…)` for a non-empty list of numbers.
    pub(crate) fn and_in_int(&mut self, column: &str, values: &[i64]) {
        if values.is_empty() {
            return;
        }
        let placeholders: Vec<String> = values.iter().map(|value| self.int(*value)).collect();
        self.text
            .push_str(&format!(" AND {column} IN ({})", placeholders.join(", ")));
    }

    /// Appends the keyset condition, order and limit of one page of a list
    /// sorted by `sort`.
    pub(crate) fn push_page(&mut self, sort: ListSort, page: &Page) {
        let (op, direction) = if sort.ascending {
            (">", "ASC")
        } else {
            ("<", "DESC")
        };
        if let Some(after) = &page.after {
            let (status, created_at) = split_position(sort.field, after.position);
            let created = self.int(created_at);
            let id = self.text(&after.id);
            let by_created =
                format!("(created_at {op} {created} OR (created_at = {created} AND id {op} {id}))");
            let condition = match status {
                None => by_created,
                Some(status) => {
                    let status = self.int(status);
                    format!("(status {op} {status} OR (status = {status} AND {by_created}))")
                }
            };
            self.text.push_str(&format!(" AND {condition}"));
        }
        let limit = self.int(page.fetch_limit());
        let status_order = match sort.field {
            SortField::Created => String::new(),
            SortField::Status => format!("status {direction}, "),
        };
        self.text.push_str(&format!(
            " ORDER BY {status_order}created_at {direction}, id {direction} LIMIT {limit}"
        ));
    }

    pub(crate) fn query(&self) -> Query<'_, Any, AnyArguments<'_>> {
        let mut query = sqlx::query(&self.text);
        for value in &self.values {
            query = match value {
                Value::Text(text) => query.bind(text.clone()),
                Value::Int(number) => query.bind(*number),
            };
        }
        query
    }
}

/// Returns the row lock clause of a read inside a write transaction:
/// `FOR UPDATE` on PostgreSQL, nothing on SQLite, whose write transaction
/// already holds the database lock.
pub(crate) fn lock_clause(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => " FOR UPDATE",
        Backend::Sqlite => "",
    }
}

/// Returns the page direction of a sort.
pub(crate) fn sort_order(sort: ListSort) -> SortOrder {
    if sort.ascending {
        SortOrder::Ascending
    } else {
        SortOrder::Descending
    }
}

/// Returns the cursor of a row in a list sorted by `field`.
pub(crate) fn cursor(field: SortField, status: i32, created_at: i64, id: &str) -> Cursor {
    let position = match field {
        SortField::Created => created_at,
        SortField::Status => (i64::from(status) << STATUS_SHIFT) | (created_at & CREATED_MASK),
    };
    Cursor {
        position,
        id: id.to_string(),
    }
}

/// Splits a cursor position into the status (for a status sort) and
/// `created_at`.
fn split_position(field: SortField, position: i64) -> (Option<i64>, i64) {
    match field {
        SortField::Created => (None, position),
        SortField::Status => (Some(position >> STATUS_SHIFT), position & CREATED_MASK),
    }
}

/// Decodes a JSON text column, naming the column in the error.
pub(crate) fn json_column<T: serde::de::DeserializeOwned>(
    column: &str,
    text: &str,
) -> Result<T, sqlx::Error> {
    serde_json::from_str(text)
        .map_err(|error| sqlx::Error::Decode(format!("invalid JSON in {column}: {error}").into()))
}

/// Decodes a stored enum number with `parse`, naming the column in the
/// error.
pub(crate) fn enum_column<T>(
    column: &str,
    number: i64,
    parse: impl Fn(i64) -> Option<T>,
) -> Result<T, sqlx::Error> {
    parse(number)
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown {column} number {number}").into()))
}

/// Deletes up to [`DELETE_BATCH`] rows of `table` (`workloads` or
/// `provisioned_volumes`) owned by `org_id` and returns how many.
pub(crate) async fn delete_organization_batch(
    connection: &mut AnyConnection,
    table: &str,
    org_id: &str,
) -> Result<u64> {
    let sql = format!(
        "DELETE FROM {table} WHERE id IN \
         (SELECT id FROM {table} WHERE organization_id = $1 LIMIT $2)"
    );
    let done = sqlx::query(&sql)
        .bind(org_id)
        .bind(DELETE_BATCH)
        .execute(&mut *connection)
        .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_cursor_round_trips() {
        let created_at = 1_764_000_000_123_456;
        let cursor = cursor(SortField::Status, 5, created_at, "x");
        assert_eq!(
            split_position(SortField::Status, cursor.position),
            (Some(5), created_at)
        );
        let cursor = super::cursor(SortField::Created, 5, created_at, "x");
        assert_eq!(
            split_position(SortField::Created, cursor.position),
            (None, created_at)
        );
    }
}
