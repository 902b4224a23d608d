//! Messages a client sends.

use crate::ids::{ClientMsgId, DisplayName, PeerId, RequestId, RoomName};
use crate::shared::{MediaState, Role};
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
    /// `sfu` for a forwarding unit joining an SFU room (its token must say
    /// so); absent for everyone else.
    #[serde(default, skip_serializing_if = "Role::is_participant")]
    pub role: Role,
    /// Take back a session whose connection dropped, instead of joining as
    /// a new participant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<Resume>,
}

/// The part of a `join` that resumes a dropped session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// The `resume_token` of the session's latest welcome.
    pub token: String,
    /// Events (see [`crate::ServerKind::is_event`]) received in the session
    /// so far: the server replays every later one.
    pub received: u64,
}

/// Keep the connection alive and acknowledge received events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Request id echoed by the pong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    /// Events received in this session so far: the server may forget them
    /// (it keeps unacknowledged events for a resume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<u64>,
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

/// Relay a session description (offer or answer) to one peer of the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescriptionRelay {
    /// Request id echoed by an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    /// The addressee.
    pub to: PeerId,
    /// `{ "type": "offer" | "answer" | "pranswer", "sdp": ... }`.
    pub description: SessionDescription,
}

/// Relay one trickled ICE candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateRelay {
    /// Request id echoed by an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    /// The addressee.
    pub to: PeerId,
    /// The candidate.
    pub candidate: IceCandidate,
}

/// Tell one peer that no more candidates will come (the browser's `null`
/// candidate event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndOfCandidatesRelay {
    /// Request id echoed by an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    /// The addressee.
    pub to: PeerId,
}

/// Start (or renew) or stop the typing indicator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingUpdate {
    /// Request id echoed by an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    /// True while typing; it expires after `typing_ttl_ms` unless renewed.
    pub active: bool,
}

/// Mark chat read up to and including a sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadReceipt {
    /// Request id echoed by an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    /// Highest sequence number read.
    pub seq: u64,
}

/// Announce camera/microphone state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaUpdate {
    /// Request id echoed by an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    /// Microphone muted.
    pub mic_muted: bool,
    /// Camera muted.
    pub camera_muted: bool,
}

/// A message that carries nothing but its optional request id (`leave`,
/// `ice_servers`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bare {
    /// Request id (echoed by the pong; no reply to a leave).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
}

/// Everything a client may send.
///
/// Serialized as an internally tagged enum (`"type"`). Deserialization is
/// written by hand (see `decode.rs`) because serde's derived version buffers
/// every message before it looks at the tag, which doubled the parsing work
/// of every relayed offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Join a room.
    Join(Join),
    /// Relay an SDP offer to one peer of the room.
    Offer(DescriptionRelay),
    /// Relay an SDP answer to one peer of the room.
    Answer(DescriptionRelay),
    /// Relay one trickled ICE candidate.
    Candidate(CandidateRelay),
    /// No more candidates for one peer.
    EndOfCandidates(EndOfCandidatesRelay),
    /// Send a chat message.
    Chat(ChatSend),
    /// Page through older chat messages.
    ChatHistory(ChatHistoryRequest),
    /// Start (or renew) or stop the typing indicator.
    Typing(TypingUpdate),
    /// Mark chat read up to a sequence number.
    Read(ReadReceipt),
    /// Announce camera/microphone state.
    Media(MediaUpdate),
    /// Keep the connection alive and acknowledge events; answered by `pong`.
    Ping(Ping),
    /// Leave the room; the server then closes the connection.
    Leave(Bare),
    /// Ask for fresh ICE servers (new TURN credentials before the old ones
    /// expire); answered by `ice_servers`.
    IceServers(Bare),
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
    IceServers,
}

impl ClientKind {
    /// Every client message type.
    pub const ALL: [Self; 13] = [
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
        Self::IceServers,
    ];

    /// The `type` values on the wire, in the order of [`Self::ALL`].
    pub const NAMES: [&'static str; 13] = [
        "join",
        "offer",
        "answer",
        "candidate",
        "end_of_candidates",
        "chat",
        "chat_history",
        "typing",
        "read",
        "media",
        "ping",
        "leave",
        "ice_servers",
    ];

    /// The `type` value on the wire.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self.index()]
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
            Self::Offer(_) => ClientKind::Offer,
            Self::Answer(_) => ClientKind::Answer,
            Self::Candidate(_) => ClientKind::Candidate,
            Self::EndOfCandidates(_) => ClientKind::EndOfCandidates,
            Self::Chat(_) => ClientKind::Chat,
            Self::ChatHistory(_) => ClientKind::ChatHistory,
            Self::Typing(_) => ClientKind::Typing,
            Self::Read(_) => ClientKind::Read,
            Self::Media(_) => ClientKind::Media,
            Self::Ping(_) => ClientKind::Ping,
            Self::Leave(_) => ClientKind::Leave,
            Self::IceServers(_) => ClientKind::IceServers,
        }
    }

    /// The request id, if the client gave one.
    pub fn request_id(&self) -> Option<&RequestId> {
        match self {
            Self::Join(Join { id, .. })
            | Self::Chat(ChatSend { id, .. })
            | Self::ChatHistory(ChatHistoryRequest { id, .. })
            | Self::Offer(DescriptionRelay { id, .. })
            | Self::Answer(DescriptionRelay { id, .. })
            | Self::Candidate(CandidateRelay { id, .. })
            | Self::EndOfCandidates(EndOfCandidatesRelay { id, .. })
            | Self::Typing(TypingUpdate { id, .. })
            | Self::Read(ReadReceipt { id, .. })
            | Self::Media(MediaUpdate { id, .. })
            | Self::Ping(Ping { id, .. })
            | Self::Leave(Bare { id })
            | Self::IceServers(Bare { id }) => id.as_ref(),
        }
    }
}
