//! Identifiers and names, validated once at the edge ("parse, don't validate"):
//! a value of these types is always well formed.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a string was refused as an identifier or name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdError(pub &'static str);

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for IdError {}

/// Longest room name, peer id or client message id, in bytes.
pub const MAX_ID_LEN: usize = 64;
/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `value`.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                let check: fn(&str) -> Result<(), IdError> = $check;
                check(&value)?;
                Ok(Self(value))
            }

            /// The string form, as it appears on the wire.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

fn check_token_chars(value: &str, what: &'static str) -> Result<(), IdError> {
    if value.is_empty() || value.len() > MAX_ID_LEN {
        return Err(IdError(what));
    }
    if !value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) {
        return Err(IdError(what));
    }
    Ok(())
}

string_newtype!(
    /// A room name: 1 to 64 characters of `A-Z a-z 0-9 _ - .`, chosen by clients.
    RoomName,
    |v| check_token_chars(v, "room must be 1-64 characters of A-Z a-z 0-9 _ - .")
);

string_newtype!(
    /// A participant id, assigned by the server at join: 60 random bits,
    /// unique within its room.
    PeerId,
    |v| check_token_chars(v, "peer id must be 1-64 characters of A-Z a-z 0-9 _ - .")
);

string_newtype!(
    /// A sender-chosen id for a chat message: the server echoes it back as the
    /// acknowledgement, so a client can match it, and stores a resend of a
    /// recent id only once.
    ClientMsgId,
    |v| check_token_chars(v, "client_id must be 1-64 characters of A-Z a-z 0-9 _ - .")
);

string_newtype!(
    /// A display name: 1 to 64 characters, no leading or trailing white
    /// space, and a label as [`crate::text::check_label`] defines it (no
    /// control characters or bidi overrides, something visible).
    DisplayName,
    |v| {
        const WHAT: &str = "name must be 1-64 characters, visible, without control characters, \
             bidirectional overrides or surrounding spaces";
        let chars = v.chars().count();
        if chars == 0 || chars > MAX_NAME_CHARS || v.trim() != v || crate::text::check_label(v).is_err() {
            return Err(IdError(WHAT));
        }
        Ok(())
    }
);

/// An optional request id chosen by the client; replies and errors echo it.
/// Either a JSON string or a non-negative integer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    /// A numeric id.
    Number(u64),
    /// A string id.
    Text(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_checked() {
        assert!(RoomName::new("demo-1.a_b").is_ok());
        assert!(RoomName::new("").is_err());
        assert!(RoomName::new("has space").is_err());
        assert!(RoomName::new("x".repeat(65)).is_err());
        assert!(RoomName::new("x".repeat(64)).is_ok());
    }

    #[test]
    fn display_names_are_checked() {
        assert!(DisplayName::new("Ada Lovelace").is_ok());
        assert!(DisplayName::new("Zoë 🎉").is_ok());
        assert!(DisplayName::new(" padded").is_err());
        assert!(DisplayName::new("bell\u{7}").is_err());
        assert!(DisplayName::new("evil\u{202E}gnp.exe").is_err());
        assert!(DisplayName::new("\u{200B}").is_err());
        assert!(DisplayName::new("é".repeat(64)).is_ok());
        assert!(DisplayName::new("é".repeat(65)).is_err());
    }

    #[test]
    fn invalid_ids_fail_deserialization_with_the_rule() {
        let err = serde_json::from_str::<RoomName>("\"a b\"").unwrap_err();
        assert!(err.to_string().contains("room must be"), "{err}");
    }
}
