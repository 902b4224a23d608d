//! Messages a client sends.

use crate::ids::{ClientMsgId, DisplayName, PeerId, RequestId, RoomName};
use crate::shared::MediaState;
use crate::webrtc::{IceCandidate, SessionDescription};
use serde::{Deserialize, Serialize};

/// Join a room. Answered by `welcome` or an `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    /// Request id echoed by the welcome or the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    /// The room; created on first join.
    pub room: RoomName,
    /// Display name shown to the others.
    pub name: DisplayName,
    /// HS256 JWT; required when the server has an auth secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Initial camera/microphone state.
    #[serde(default)]
    pub media: MediaState,
}

/// Send a chat message to the room. The server's `chat` echo is the
/// acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatSend {
    /// Request id echoed by an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    /// Sender-chosen id, echoed in the delivered message.
    pub client_id: ClientMsgId,
    /// The text, at most `max_chat_chars` characters.
    pub text: String,
}

/// Ask for older chat messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatHistoryRequest {
    /// Request id echoed by the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    /// Only messages with a smaller sequence number; absent: the newest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
    /// Most messages wanted; capped at `chat_history_page`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Everything a client may send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Join a room.
    Join(Join),
    /// Relay an SDP offer to one peer of the room.
    Offer {
        /// Request id echoed by an error.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// The addressee.
        to: PeerId,
        /// `{ "type": "offer", "sdp": ... }`.
        description: SessionDescription,
    },
    /// Relay an SDP answer to one peer of the room.
    Answer {
        /// Request id echoed by an error.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// The addressee.
        to: PeerId,
        /// `{ "type": "answer", "sdp": ... }` (or `pranswer`).
        description: SessionDescription,
    },
    /// Relay one trickled ICE candidate.
    Candidate {
        /// Request id echoed by an error.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// The addressee.
        to: PeerId,
        /// The candidate.
        candidate: IceCandidate,
    },
    /// Tell one peer that no more candidates will come (the browser's `null`
    /// candidate event).
    EndOfCandidates {
        /// Request id echoed by an error.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// The addressee.
        to: PeerId,
    },
    /// Send a chat message.
    Chat(ChatSend),
    /// Page through older chat messages.
    ChatHistory(ChatHistoryRequest),
    /// Start (or renew) or stop the typing indicator.
    Typing {
        /// Request id echoed by an error.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// True while typing; it expires after `typing_ttl_ms` unless renewed.
        active: bool,
    },
    /// Mark chat read up to and including a sequence number.
    Read {
        /// Request id echoed by an error.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// Highest sequence number read.
        seq: u64,
    },
    /// Announce camera/microphone state.
    Media {
        /// Request id echoed by an error.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// Microphone muted.
        mic_muted: bool,
        /// Camera muted.
        camera_muted: bool,
    },
    /// Keep the connection alive; answered by `pong`.
    Ping {
        /// Request id echoed by the pong.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
    },
    /// Leave the room; the server then closes the connection.
    Leave {
        /// Request id (no reply: the close is the answer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
    },
}

/// The `type` of a [`ClientMessage`], without its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKind {
    Join,
    Offer,
    Answer,
    Candidate,
    EndOfCandidates,
    Chat,
    ChatHistory,
    Typing,
    Read,
    Media,
    Ping,
    Leave,
}

impl ClientKind {
    /// Every client message type.
    pub const ALL: [Self; 12] = [
        Self::Join,
        Self::Offer,
        Self::Answer,
        Self::Candidate,
        Self::EndOfCandidates,
        Self::Chat,
        Self::ChatHistory,
        Self::Typing,
        Self::Read,
        Self::Media,
        Self::Ping,
        Self::Leave,
    ];

    /// The `type` value on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Join => "join",
            Self::Offer => "offer",
            Self::Answer => "answer",
            Self::Candidate => "candidate",
            Self::EndOfCandidates => "end_of_candidates",
            Self::Chat => "chat",
            Self::ChatHistory => "chat_history",
            Self::Typing => "typing",
            Self::Read => "read",
            Self::Media => "media",
            Self::Ping => "ping",
            Self::Leave => "leave",
        }
    }

    /// Position in [`Self::ALL`], for per-type counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl ClientMessage {
    /// The message's type.
    pub fn kind(&self) -> ClientKind {
        match self {
            Self::Join(_) => ClientKind::Join,
            Self::Offer { .. } => ClientKind::Offer,
            Self::Answer { .. } => ClientKind::Answer,
            Self::Candidate { .. } => ClientKind::Candidate,
            Self::EndOfCandidates { .. } => ClientKind::EndOfCandidates,
            Self::Chat(_) => ClientKind::Chat,
            Self::ChatHistory(_) => ClientKind::ChatHistory,
            Self::Typing { .. } => ClientKind::Typing,
            Self::Read { .. } => ClientKind::Read,
            Self::Media { .. } => ClientKind::Media,
            Self::Ping { .. } => ClientKind::Ping,
            Self::Leave { .. } => ClientKind::Leave,
        }
    }

    /// The request id, if the client gave one.
    pub fn request_id(&self) -> Option<&RequestId> {
        match self {
            Self::Join(Join { id, .. })
            | Self::Chat(ChatSend { id, .. })
            | Self::ChatHistory(ChatHistoryRequest { id, .. })
            | Self::Offer { id, .. }
            | Self::Answer { id, .. }
            | Self::Candidate { id, .. }
            | Self::EndOfCandidates { id, .. }
            | Self::Typing { id, .. }
            | Self::Read { id, .. }
            | Self::Media { id, .. }
            | Self::Ping { id }
            | Self::Leave { id } => id.as_ref(),
        }
    }
}
