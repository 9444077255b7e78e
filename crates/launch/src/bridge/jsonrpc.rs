//! The JSON-RPC 2.0 message kinds the bridge distinguishes, and the error
//! objects it builds.

use serde_json::{Map, Value, json};

/// JSON-RPC error code of a body that is not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC error code of a message that is not a valid request.
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC error code of a method the receiver does not offer.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC error code of a failure inside the receiver.
pub const INTERNAL_ERROR: i64 = -32603;

/// One JSON-RPC message, classified by its members.
#[derive(Debug)]
pub enum Message {
    /// Has `method` and `id`, so the sender waits for a response.
    Request {
        id: Value,
        method: String,
        body: Map<String, Value>,
    },
    /// Has `method` and no `id`.
    Notification {
        method: String,
        body: Map<String, Value>,
    },
    /// Has `id` and `result` or `error`, and no `method`.
    Response { id: Value, body: Map<String, Value> },
}

impl Message {
    /// Classifies `value`, or returns why it is no JSON-RPC 2.0 message.
    pub fn parse(value: Value) -> Result<Self, String> {
        let Value::Object(body) = value else {
            return Err("a JSON-RPC message must be a JSON object".to_string());
        };
        if body.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err("member \"jsonrpc\" must be \"2.0\"".to_string());
        }
        let id = body.get("id").cloned();
        if let Some(id) = &id
            && !(id.is_string() || id.is_number() || id.is_null())
        {
            return Err("member \"id\" must be a string, a number or null".to_string());
        }
        match (body.get("method"), id) {
            (Some(Value::String(method)), Some(id)) => Ok(Message::Request {
                id,
                method: method.clone(),
                body,
            }),
            (Some(Value::String(method)), None) => Ok(Message::Notification {
                method: method.clone(),
                body,
            }),
            (Some(_), _) => Err("member \"method\" must be a string".to_string()),
            (None, Some(id)) if body.contains_key("result") || body.contains_key("error") => {
                Ok(Message::Response { id, body })
            }
            (None, _) => Err(
                "a JSON-RPC message needs \"method\", or \"id\" with \"result\" or \"error\""
                    .to_string(),
            ),
        }
    }
}

/// Builds an error response for the request `id` (null when unknown).
pub fn error_response(id: Value, code: i64, message: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": { "code": code, "message": message },
    })
}

/// Returns `body` as a JSON object with `id` replaced.
pub fn with_id(mut body: Map<String, Value>, id: Value) -> Value {
    body.insert("id".to_string(), id);
    Value::Object(body)
}
