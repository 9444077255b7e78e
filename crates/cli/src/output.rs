//! Human and JSON output.
//!
//! With `--json` every result is one line of proto JSON, as the gateway's
//! Connect JSON would encode the response, so the output reads as JSON
//! Lines. Human output is a short table with two spaces between columns
//! and ids in full.

use std::io::Write as _;

use buffa::{EnumValue, Enumeration};
use buffa_types::google::protobuf::Timestamp;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;

use crate::error::{CliError, Result};

/// Writes `text` to standard output.
pub fn print(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Writes `value` as one line of JSON to standard output.
pub fn print_json(value: &impl Serialize) -> Result<()> {
    let mut line = serde_json::to_string(value)
        .map_err(|error| CliError::failed(format!("failed to encode the output: {error}")))?;
    line.push('\n');
    print(&line)
}

/// A table of rows under upper-case headers. Cells are padded to the
/// widest cell of their column, except in the last column.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Appends a row. Line breaks in a cell become spaces so that each row
    /// stays on one line.
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        let cells = cells
            .into_iter()
            .map(|cell| cell.replace(['\r', '\n'], " "))
            .collect();
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let last = row.len() - 1;
            for (index, cell) in row.iter().enumerate() {
                out.push_str(cell);
                if index < last {
                    let padding = widths[index] - cell.chars().count() + 2;
                    out.extend(std::iter::repeat_n(' ', padding));
                }
            }
            out.push('\n');
        }
        out
    }

    /// Prints the table, or `empty` when it has no rows.
    pub fn print_or(&self, empty: &str) -> Result<()> {
        if self.rows.is_empty() {
            print(&format!("{empty}\n"))
        } else {
            print(&self.render())
        }
    }
}

/// Formats a timestamp as RFC 3339 in UTC to the second, or `-` when
/// unset.
pub fn timestamp(value: Option<&Timestamp>) -> String {
    let Some(value) = value else {
        return "-".to_string();
    };
    time::OffsetDateTime::from_unix_timestamp(value.seconds)
        .ok()
        .and_then(|moment| moment.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("{}s", value.seconds))
}

/// Formats an enum value as its proto name without `prefix`, in lower
/// case: `WORKLOAD_STATUS_RUNNING` with prefix `WORKLOAD_STATUS_` becomes
/// `running`. The zero value prints `-` and an unknown number prints
/// itself.
pub fn label<E: Enumeration>(value: &EnumValue<E>, prefix: &str) -> String {
    if value.to_i32() == 0 {
        return "-".to_string();
    }
    match value.as_known() {
        Some(known) => {
            let name = known.proto_name();
            name.strip_prefix(prefix).unwrap_or(name).to_lowercase()
        }
        None => value.to_i32().to_string(),
    }
}

/// Returns `text`, or `-` when it is empty.
pub fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_string()
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agyn_client::runners::WorkloadStatus;

    #[test]
    fn table_aligns_columns() {
        let mut table = Table::new(&["ID", "NAME"]);
        table.row(vec!["0193a".to_string(), "Helper".to_string()]);
        table.row(vec!["7".to_string(), "A much longer name".to_string()]);
        assert_eq!(
            table.render(),
            "ID     NAME\n0193a  Helper\n7      A much longer name\n"
        );
    }

    #[test]
    fn table_keeps_rows_on_one_line() {
        let mut table = Table::new(&["BODY"]);
        table.row(vec!["two\nlines".to_string()]);
        assert_eq!(table.render(), "BODY\ntwo lines\n");
    }

    #[test]
    fn timestamp_is_rfc3339_utc() {
        let value = Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
            ..Default::default()
        };
        assert_eq!(timestamp(Some(&value)), "2023-11-14T22:13:20Z");
        assert_eq!(timestamp(None), "-");
    }

    #[test]
    fn label_strips_prefix() {
        let running = EnumValue::from(WorkloadStatus::WORKLOAD_STATUS_RUNNING);
        assert_eq!(label(&running, "WORKLOAD_STATUS_"), "running");
        let unspecified = EnumValue::from(WorkloadStatus::WORKLOAD_STATUS_UNSPECIFIED);
        assert_eq!(label(&unspecified, "WORKLOAD_STATUS_"), "-");
        let unknown = EnumValue::<WorkloadStatus>::from(99);
        assert_eq!(label(&unknown, "WORKLOAD_STATUS_"), "99");
    }
}
