//! The turn journal: the model output and tool results of the running
//! turn, kept in a file so that a run stopped during a tool call leaves a
//! usable conversation. The next run of the same thread and batch sends
//! the journal's items again, with [`INTERRUPTED_OUTPUT`] as the output of
//! each call that never returned, instead of starting the turn over and
//! running finished tools twice.
//!
//! The file outlives the process only as long as the state directory
//! does. Without a persistent directory the next workload starts the turn
//! from its batch. That is consistent too, because the provider stores no
//! request (`store: false`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Output sent for a function call whose run ended before the tool
/// returned.
pub const INTERRUPTED_OUTPUT: &str = "ERROR: tool call interrupted: the agent stopped before the tool returned, so it may or may not have run";

/// The journal file of one (thread, agent) pair.
#[derive(Debug, Clone)]
pub struct Journal {
    path: PathBuf,
}

/// The saved state of a turn.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnRecord {
    /// Id of the batch's first message, which identifies the turn.
    pub first_message_id: String,
    /// Items appended to the turn's input after the batch: model output
    /// and `function_call_output` items, in order.
    pub items: Vec<Value>,
}

impl Journal {
    pub fn new(state_dir: PathBuf, thread_id: &str, agent_id: &str) -> Self {
        Self {
            path: state_dir.join(format!("turn-{thread_id}-{agent_id}.json")),
        }
    }

    /// Returns the saved items of the turn that starts with
    /// `first_message_id`, each unanswered function call followed by an
    /// [`INTERRUPTED_OUTPUT`]. A journal of another turn is removed.
    pub fn resume(&self, first_message_id: &str) -> Vec<Value> {
        let record = match std::fs::read(&self.path) {
            Ok(bytes) => match serde_json::from_slice::<TurnRecord>(&bytes) {
                Ok(record) => record,
                Err(error) => {
                    tracing::warn!(path = %self.path.display(), %error, "Ignoring an unreadable turn journal");
                    self.clear();
                    return Vec::new();
                }
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(error) => {
                tracing::warn!(path = %self.path.display(), %error, "Failed to read the turn journal");
                return Vec::new();
            }
        };
        if record.first_message_id != first_message_id {
            self.clear();
            return Vec::new();
        }
        let items = answer_open_calls(record.items);
        tracing::info!(
            first_message_id,
            items = items.len(),
            "Resuming a turn from its journal"
        );
        items
    }

    /// Replaces the journal with `record`. A failure is logged, because
    /// the journal only helps a later run.
    pub fn save(&self, record: &TurnRecord) {
        if let Err(error) = self.write(record) {
            tracing::warn!(path = %self.path.display(), %error, "Failed to write the turn journal");
        }
    }

    fn write(&self, record: &TurnRecord) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let temporary = self.path.with_extension("json.tmp");
        std::fs::write(&temporary, serde_json::to_vec(record)?)?;
        restrict_permissions(&temporary)?;
        std::fs::rename(&temporary, &self.path)
    }

    /// Removes the journal once the turn is acked.
    pub fn clear(&self) {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(path = %self.path.display(), %error, "Failed to remove the turn journal");
            }
        }
    }
}

/// Makes the file readable by its owner only, because it contains message
/// and tool text.
#[cfg(unix)]
fn restrict_permissions(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn restrict_permissions(_path: &std::path::Path) -> std::io::Result<()> {
    Ok(())
}

/// Inserts an [`INTERRUPTED_OUTPUT`] after every function call that has no
/// output, so each call has exactly one.
fn answer_open_calls(items: Vec<Value>) -> Vec<Value> {
    let answered: std::collections::HashSet<String> = items
        .iter()
        .filter(|item| item.get("type").and_then(Value::as_str) == Some("function_call_output"))
        .filter_map(|item| {
            item.get("call_id")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    let mut result = Vec::with_capacity(items.len());
    for item in items {
        let open_call = (item.get("type").and_then(Value::as_str) == Some("function_call"))
            .then(|| {
                item.get("call_id")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .flatten()
            .filter(|call_id| !answered.contains(call_id));
        result.push(item);
        if let Some(call_id) = open_call {
            result.push(json!({
                "type": "function_call_output",
                "call_id": call_id,
                "output": INTERRUPTED_OUTPUT,
            }));
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str) -> Value {
        json!({"type": "function_call", "call_id": id, "name": "t__x", "arguments": "{}"})
    }

    fn output(id: &str, text: &str) -> Value {
        json!({"type": "function_call_output", "call_id": id, "output": text})
    }

    #[test]
    fn open_calls_get_interrupted_output() {
        let items = answer_open_calls(vec![call("a"), call("b"), output("a", "done")]);
        assert_eq!(
            items,
            vec![
                call("a"),
                call("b"),
                output("b", INTERRUPTED_OUTPUT),
                output("a", "done"),
            ]
        );
    }

    #[test]
    fn journal_of_another_turn_is_discarded() {
        let dir = std::env::temp_dir().join(format!("agyn-journal-{}", uuid::Uuid::new_v4()));
        let journal = Journal::new(dir.clone(), "t", "a");
        journal.save(&TurnRecord {
            first_message_id: "m1".into(),
            items: vec![call("c")],
        });
        assert!(journal.resume("m2").is_empty());
        assert!(
            journal.resume("m1").is_empty(),
            "the mismatch removed the journal"
        );
        journal.save(&TurnRecord {
            first_message_id: "m1".into(),
            items: vec![call("c")],
        });
        assert_eq!(
            journal.resume("m1"),
            vec![call("c"), output("c", INTERRUPTED_OUTPUT)]
        );
        journal.clear();
        assert!(journal.resume("m1").is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
