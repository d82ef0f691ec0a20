//! Turning a text frame into a typed frame, with a typed error on failure.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error_code::ErrorCode;

/// Why a text frame is not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the frame is not valid JSON: {0}")]
    NotJson(String),
    #[error("the frame is not a JSON object")]
    NotObject,
    #[error("the frame has no string field `type`")]
    MissingType,
    #[error("unknown frame type `{0}`")]
    UnknownType(String),
    #[error("invalid `{frame_type}` frame: {detail}")]
    Invalid { frame_type: String, detail: String },
}

impl FrameError {
    /// The protocol error code to answer with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::UnknownType(_) => ErrorCode::UnknownType,
            _ => ErrorCode::Malformed,
        }
    }
}

/// A [`FrameError`] plus the request `id` of the frame, when it had one, so
/// that the error answer can name the request it refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct ParseFailure {
    pub error: FrameError,
    pub id: Option<String>,
}

/// Parses an internally tagged frame. The fast path deserializes directly;
/// only a failure pays for the second look that names what was wrong.
pub(super) fn parse_tagged<T: DeserializeOwned>(
    text: &str,
    known: &[&str],
) -> Result<T, ParseFailure> {
    match serde_json::from_str::<T>(text) {
        Ok(frame) => Ok(frame),
        Err(first) => Err(diagnose(text, known, first)),
    }
}

fn diagnose(text: &str, known: &[&str], first: serde_json::Error) -> ParseFailure {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return ParseFailure {
                error: FrameError::NotJson(e.to_string()),
                id: None,
            };
        }
    };
    let Some(object) = value.as_object() else {
        return FrameError::NotObject.into();
    };
    let id = object.get("id").and_then(Value::as_str).map(str::to_owned);
    let error = match object.get("type").and_then(Value::as_str) {
        None => FrameError::MissingType,
        Some(t) if !known.contains(&t) => FrameError::UnknownType(t.to_owned()),
        Some(t) => FrameError::Invalid {
            frame_type: t.to_owned(),
            detail: strip_position(&first.to_string()),
        },
    };
    ParseFailure { error, id }
}

/// serde_json appends " at line 1 column 57"; that means nothing to a
/// person reading an error frame.
fn strip_position(detail: &str) -> String {
    match detail.find(" at line ") {
        Some(i) => detail[..i].to_owned(),
        None => detail.to_owned(),
    }
}
