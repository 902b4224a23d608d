//! Error codes: stable, machine-readable, documented in `docs/protocol.md`.

use crate::ids::RequestId;
use serde::{Deserialize, Serialize};

/// A stable error code. New codes may be added; existing ones never change
/// meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not valid JSON.
    MalformedJson,
    /// The frame is JSON but not a known message of the right shape
    /// (missing field, wrong field type, invalid value).
    InvalidMessage,
    /// The `type` is not one this server knows.
    UnknownType,
    /// A binary frame: the protocol is JSON text only.
    BinaryFrame,
    /// The frame is larger than `max_message_bytes`.
    MessageTooLarge,
    /// The chat text is longer than `max_chat_chars`.
    ChatTooLong,
    /// The message needs a joined room and this connection has not joined.
    NotJoined,
    /// `join` on a connection that already joined.
    AlreadyJoined,
    /// The room has `max_peers_per_room` participants.
    RoomFull,
    /// Joining would create a room beyond the server's room limit.
    TooManyRooms,
    /// The addressed peer is not in the sender's room.
    UnknownPeer,
    /// The session description's type does not match the message.
    InvalidDescription,
    /// Missing, invalid or wrong-room token.
    Unauthorized,
    /// The token has expired.
    TokenExpired,
    /// Over the message rate: this message was dropped.
    RateLimited,
    /// Sustained flooding: the connection is closed.
    Flood,
    /// No join within the join timeout.
    JoinTimeout,
    /// No message within the ping timeout.
    PingTimeout,
    /// The same identity joined again elsewhere; this session was replaced.
    Replaced,
    /// A bug on the server's side.
    Internal,
    /// The room's mode does not allow this (in an SFU room, media is
    /// negotiated with the SFU only).
    Forbidden,
    /// A resume was refused (unknown, stale or expired token, events no
    /// longer kept, or the session is live on another connection): join
    /// afresh.
    ResumeFailed,
    /// The cluster cannot take this now (its Redis is unreachable, or the
    /// room is between owners): retry after a short wait.
    Unavailable,
}

impl ErrorCode {
    /// Every code, for metrics labels and documentation tests.
    pub const ALL: [Self; 23] = [
        Self::MalformedJson,
        Self::InvalidMessage,
        Self::UnknownType,
        Self::BinaryFrame,
        Self::MessageTooLarge,
        Self::ChatTooLong,
        Self::NotJoined,
        Self::AlreadyJoined,
        Self::RoomFull,
        Self::TooManyRooms,
        Self::UnknownPeer,
        Self::InvalidDescription,
        Self::Unauthorized,
        Self::TokenExpired,
        Self::RateLimited,
        Self::Flood,
        Self::JoinTimeout,
        Self::PingTimeout,
        Self::Replaced,
        Self::Internal,
        Self::Forbidden,
        Self::ResumeFailed,
        Self::Unavailable,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed_json",
            Self::InvalidMessage => "invalid_message",
            Self::UnknownType => "unknown_type",
            Self::BinaryFrame => "binary_frame",
            Self::MessageTooLarge => "message_too_large",
            Self::ChatTooLong => "chat_too_long",
            Self::NotJoined => "not_joined",
            Self::AlreadyJoined => "already_joined",
            Self::RoomFull => "room_full",
            Self::TooManyRooms => "too_many_rooms",
            Self::UnknownPeer => "unknown_peer",
            Self::InvalidDescription => "invalid_description",
            Self::Unauthorized => "unauthorized",
            Self::TokenExpired => "token_expired",
            Self::RateLimited => "rate_limited",
            Self::Flood => "flood",
            Self::JoinTimeout => "join_timeout",
            Self::PingTimeout => "ping_timeout",
            Self::Replaced => "replaced",
            Self::Internal => "internal",
            Self::Forbidden => "forbidden",
            Self::ResumeFailed => "resume_failed",
            Self::Unavailable => "unavailable",
        }
    }
}

/// An error reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMessage {
    /// The request id of the message this answers, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    /// Stable machine code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
    /// True when the server closes the connection after this error.
    pub fatal: bool,
}

impl ErrorMessage {
    /// An error the connection survives.
    pub fn recoverable(id: Option<RequestId>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self { id, code, message: message.into(), fatal: false }
    }

    /// An error after which the server closes the connection.
    pub fn fatal(id: Option<RequestId>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self { id, code, message: message.into(), fatal: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_str_matches_serde() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
