//! The agent configuration: the keys of an agent's `configuration` JSON
//! that the built-in agent program reads, with their types, ranges and
//! defaults. The agents service checks them on every write, so that a bad
//! value is rejected when it is set instead of crashing each workload.

use serde_json::Value;

/// The keys of `AGENT_CONFIG` that the agent reads. Unknown keys are
/// ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    pub system_prompt: String,
    /// Rounds of tool calls per turn before the agent gives up, 1-200.
    pub max_tool_iterations: u32,
    /// Thread messages before the batch in the model's input, 0-1000.
    pub history_messages: u32,
    /// Sampling temperature; omitted from requests when absent.
    pub temperature: Option<f64>,
    /// `low`, `medium` or `high`; omitted from requests when absent.
    pub reasoning_effort: Option<String>,
    /// Whether a turn whose model calls keep failing replies with the
    /// reason (true) or ends the process without acking (false).
    pub reply_on_error: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            system_prompt: String::new(),
            max_tool_iterations: 50,
            history_messages: 200,
            temperature: None,
            reasoning_effort: None,
            reply_on_error: true,
        }
    }
}

impl AgentConfig {
    /// Parses the agent's configuration JSON, checking the type and range
    /// of every key it reads. A key set to `null` counts as absent.
    pub fn parse(text: &str) -> Result<Self, String> {
        let object = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(object)) => object,
            Ok(_) => return Err("must be a JSON object".to_string()),
            Err(error) => return Err(format!("invalid JSON: {error}")),
        };
        let key = |name: &str| object.get(name).filter(|value| !value.is_null());
        let mut config = Self::default();
        if let Some(value) = key("system_prompt") {
            config.system_prompt = value
                .as_str()
                .ok_or_else(|| "system_prompt must be a string".to_string())?
                .to_string();
        }
        if let Some(value) = key("max_tool_iterations") {
            config.max_tool_iterations = integer_in(value, 1, 200)
                .ok_or_else(|| range_problem("max_tool_iterations", 1, 200, value))?;
        }
        if let Some(value) = key("history_messages") {
            config.history_messages = integer_in(value, 0, 1000)
                .ok_or_else(|| range_problem("history_messages", 0, 1000, value))?;
        }
        if let Some(value) = key("temperature") {
            let temperature = value
                .as_f64()
                .ok_or_else(|| format!("temperature must be a number, got {value}"))?;
            config.temperature = Some(temperature);
        }
        if let Some(value) = key("reasoning_effort") {
            match value.as_str() {
                Some(effort @ ("low" | "medium" | "high")) => {
                    config.reasoning_effort = Some(effort.to_string());
                }
                _ => {
                    return Err(format!(
                        "reasoning_effort must be \"low\", \"medium\" or \"high\", got {value}"
                    ));
                }
            }
        }
        if let Some(value) = key("reply_on_error") {
            config.reply_on_error = value
                .as_bool()
                .ok_or_else(|| format!("reply_on_error must be true or false, got {value}"))?;
        }
        Ok(config)
    }
}

fn integer_in(value: &Value, min: u64, max: u64) -> Option<u32> {
    value
        .as_u64()
        .filter(|number| (min..=max).contains(number))
        .map(|number| number as u32)
}

fn range_problem(key: &str, min: u64, max: u64, value: &Value) -> String {
    format!("{key} must be an integer from {min} to {max}, got {value}")
}
