//! Turning a text frame into a [`ClientMessage`], with an error that says
//! exactly what was wrong.

use crate::client::{ClientKind, ClientMessage};
use crate::error::{ErrorCode, ErrorMessage};
use crate::ids::RequestId;
use serde::Deserialize;

/// Why a frame was not a valid client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// `malformed_json`, `unknown_type` or `invalid_message`.
    pub code: ErrorCode,
    /// What was wrong, for the human reading the error.
    pub message: String,
    /// The frame's request id, when one could be read.
    pub id: Option<RequestId>,
}

impl ParseError {
    /// The error reply for this parse failure; the connection survives it.
    pub fn into_error(self) -> ErrorMessage {
        ErrorMessage::recoverable(self.id, self.code, self.message)
    }
}

/// Parses one text frame.
///
/// The fast path is a single typed parse. Only when it fails is the frame
/// looked at again, to tell malformed JSON from an unknown type from a
/// missing or mistyped field, and to recover the request id for the reply.
pub fn parse_client(text: &str) -> Result<ClientMessage, ParseError> {
    match serde_json::from_str::<ClientMessage>(text) {
        Ok(message) => Ok(message),
        Err(err) => Err(classify(text, &err)),
    }
}

/// The request id of a frame that will not be handled (rate limited), read
/// without parsing the rest of the message.
pub fn request_id_of(text: &str) -> Option<RequestId> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: Option<RequestId>,
    }
    serde_json::from_str::<IdOnly>(text).ok().and_then(|e| e.id)
}

fn classify(text: &str, err: &serde_json::Error) -> ParseError {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return ParseError { code: ErrorCode::MalformedJson, message: format!("not valid JSON: {err}"), id: None };
    };
    if !value.is_object() {
        return ParseError {
            code: ErrorCode::InvalidMessage,
            message: "a message must be a JSON object with a \"type\" field".into(),
            id: None,
        };
    }
    // Each field on its own, so that a bad `id` does not hide the `type`.
    let id = value.get("id").and_then(|v| RequestId::deserialize(v).ok());
    match value.get("type").cloned() {
        Some(serde_json::Value::String(kind)) => {
            if ClientKind::ALL.iter().any(|k| k.as_str() == kind) {
                ParseError { code: ErrorCode::InvalidMessage, message: format!("invalid {kind}: {err}"), id }
            } else {
                let mut shown: String = kind.chars().take(64).collect();
                if shown.len() < kind.len() {
                    shown.push('…');
                }
                ParseError { code: ErrorCode::UnknownType, message: format!("unknown message type {shown:?}"), id }
            }
        }
        Some(_) => ParseError { code: ErrorCode::InvalidMessage, message: "\"type\" must be a string".into(), id },
        None => ParseError { code: ErrorCode::InvalidMessage, message: "missing \"type\" field".into(), id },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_json() {
        let err = parse_client("{not json").unwrap_err();
        assert_eq!(err.code, ErrorCode::MalformedJson);
    }

    #[test]
    fn unknown_type_keeps_request_id() {
        let err = parse_client(r#"{"type":"teleport","id":7}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownType);
        assert_eq!(err.id, Some(RequestId::Number(7)));
    }

    #[test]
    fn missing_field_names_the_field() {
        let err = parse_client(r#"{"type":"offer","id":"a","to":"p1"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidMessage);
        assert!(err.message.contains("description"), "{}", err.message);
        assert_eq!(err.id, Some(RequestId::Text("a".into())));
    }

    #[test]
    fn mistyped_field() {
        let err = parse_client(r#"{"type":"read","seq":"three"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidMessage);
    }

    #[test]
    fn a_bad_id_does_not_hide_the_type() {
        let err = parse_client(r#"{"type":"read","id":-1,"seq":1}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidMessage);
        assert!(err.message.contains("invalid read"), "{}", err.message);
        assert_eq!(err.id, None);
    }

    #[test]
    fn non_object_and_missing_type() {
        assert_eq!(parse_client("[1,2]").unwrap_err().code, ErrorCode::InvalidMessage);
        assert_eq!(parse_client(r#"{"to":"x"}"#).unwrap_err().code, ErrorCode::InvalidMessage);
        assert_eq!(parse_client(r#"{"type":5}"#).unwrap_err().code, ErrorCode::InvalidMessage);
    }
}
