//! Reading and writing one frame per line.

use serde::Serialize;
use serde_json::Value;

use super::*;

/// Why a request line could not be read, with its `id` when one was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestParseFailure {
    pub id: Option<u64>,
    pub error: IpcError,
}

impl RequestFrame {
    /// Parses one line. Never panics; tells an unknown `op` apart from a
    /// known one with bad `args`. An op whose arguments are all optional
    /// may leave `args` out (`hook_context` had none before).
    pub fn parse(line: &str) -> Result<Self, RequestParseFailure> {
        serde_json::from_str(line).or_else(|e| {
            let mut value: Value =
                serde_json::from_str(line).map_err(|_| Self::diagnose(line, e.to_string()))?;
            match value.as_object_mut() {
                Some(o) if !o.contains_key("args") => {
                    o.insert("args".to_owned(), Value::Object(Default::default()));
                }
                _ => return Err(Self::diagnose(line, e.to_string())),
            }
            serde_json::from_value(value).map_err(|_| Self::diagnose(line, e.to_string()))
        })
    }

    fn diagnose(line: &str, first: String) -> RequestParseFailure {
        let value: Option<Value> = serde_json::from_str(line).ok();
        let object = value.as_ref().and_then(Value::as_object);
        let id = object.and_then(|o| o.get("id")).and_then(Value::as_u64);
        let op = object.and_then(|o| o.get("op")).and_then(Value::as_str);
        let error = match (object, op) {
            (None, _) => IpcError::new(
                IpcErrorCode::Malformed,
                "a request must be one JSON object per line",
            ),
            (Some(_), None) => IpcError::new(
                IpcErrorCode::Malformed,
                "a request needs a string field `op`",
            ),
            (Some(_), Some(op)) if !Request::OPS.contains(&op) => {
                IpcError::new(IpcErrorCode::UnknownOp, format!("unknown operation `{op}`"))
            }
            (Some(o), Some(op)) if id.is_none() => IpcError::new(
                IpcErrorCode::Malformed,
                format!(
                    "request `{op}` needs a non-negative integer `id` (got {})",
                    o.get("id").map_or("none".to_owned(), Value::to_string)
                ),
            ),
            (Some(_), Some(op)) => IpcError::new(
                IpcErrorCode::Malformed,
                format!("invalid arguments for `{op}`: {}", strip_position(&first)),
            ),
        };
        RequestParseFailure { id, error }
    }

    /// The line to write, newline included.
    pub fn to_line(&self) -> String {
        to_line(self)
    }
}

impl DaemonFrame {
    pub fn parse(line: &str) -> Result<Self, IpcError> {
        serde_json::from_str(line).map_err(|e| {
            IpcError::new(
                IpcErrorCode::Malformed,
                format!(
                    "unreadable frame from the daemon: {}",
                    strip_position(&e.to_string())
                ),
            )
        })
    }

    pub fn to_line(&self) -> String {
        to_line(self)
    }
}

fn to_line<T: Serialize>(frame: &T) -> String {
    let mut line = serde_json::to_string(frame).expect("ipc frames always serialize");
    line.push('\n');
    line
}

fn strip_position(s: &str) -> String {
    match s.find(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s.to_owned(),
    }
}
