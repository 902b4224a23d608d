//! Messages the server sends.

use crate::error::ErrorMessage;
use crate::ids::{PeerId, RequestId, RoomName};
use crate::shared::{ChatMessage, LeaveReason, LimitsInfo, PeerInfo};
use crate::webrtc::{IceCandidate, IceServer, SessionDescription};
use serde::{Deserialize, Serialize};

/// The answer to a successful `join`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The join's request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    /// [`crate::PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The room joined.
    pub room: RoomName,
    /// This participant, as the others see it.
    pub you: PeerInfo,
    /// Everyone else already in the room, in join order.
    pub peers: Vec<PeerInfo>,
    /// STUN/TURN servers to give `RTCPeerConnection`.
    pub ice_servers: Vec<IceServer>,
    /// Seconds the ICE server credentials stay valid (absent: no expiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ice_servers_ttl_s: Option<u64>,
    /// Send a message (at least a `ping`) this often, in milliseconds.
    pub ping_interval_ms: u64,
    /// Silence longer than this closes the connection, in milliseconds.
    pub ping_timeout_ms: u64,
    /// Limits this connection must respect.
    pub limits: LimitsInfo,
    /// The newest chat messages (at most `chat_history_page`), oldest first.
    pub chat: Vec<ChatMessage>,
    /// Highest chat sequence number in the room (0: none yet).
    pub chat_seq: u64,
    /// Token for resuming this session after a dropped connection
    /// (reserved: resume is not yet served).
    pub resume_token: String,
}

/// The server is going away: reconnect later, possibly elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoingAway {
    /// Why (human-readable).
    pub reason: String,
    /// Where to reconnect; absent: the same URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect_url: Option<String>,
    /// Wait at least this long before reconnecting, in milliseconds (add jitter).
    pub retry_after_ms: u64,
}

/// Everything the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Joined.
    Welcome(Box<Welcome>),
    /// Someone joined the room.
    PeerJoined {
        /// The newcomer.
        peer: PeerInfo,
    },
    /// Someone left the room.
    PeerLeft {
        /// Who.
        peer_id: PeerId,
        /// Why.
        reason: LeaveReason,
    },
    /// Someone's camera/microphone state changed.
    PeerUpdated {
        /// The participant, as now.
        peer: PeerInfo,
    },
    /// A relayed offer.
    Offer {
        /// Sender, stamped by the server.
        from: PeerId,
        /// The offer.
        description: SessionDescription,
    },
    /// A relayed answer.
    Answer {
        /// Sender, stamped by the server.
        from: PeerId,
        /// The answer.
        description: SessionDescription,
    },
    /// A relayed candidate.
    Candidate {
        /// Sender, stamped by the server.
        from: PeerId,
        /// The candidate.
        candidate: IceCandidate,
    },
    /// The sender has no more candidates.
    EndOfCandidates {
        /// Sender, stamped by the server.
        from: PeerId,
    },
    /// A chat message (also the acknowledgement to its sender).
    Chat(ChatMessage),
    /// A page of chat history.
    ChatHistory {
        /// The request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// Oldest first.
        messages: Vec<ChatMessage>,
        /// True when older messages exist before the first one.
        has_more: bool,
    },
    /// Someone started or stopped typing.
    Typing {
        /// Who.
        from: PeerId,
        /// Typing now.
        active: bool,
    },
    /// Someone read the chat up to `seq`.
    Read {
        /// Who.
        from: PeerId,
        /// Highest sequence number read.
        seq: u64,
    },
    /// Answer to `ping`.
    Pong {
        /// The ping's request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
    },
    /// An error.
    Error(ErrorMessage),
    /// The server is shutting down or moving this client.
    GoingAway(GoingAway),
}

/// The `type` of a [`ServerMessage`], without its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerKind {
    Welcome,
    PeerJoined,
    PeerLeft,
    PeerUpdated,
    Offer,
    Answer,
    Candidate,
    EndOfCandidates,
    Chat,
    ChatHistory,
    Typing,
    Read,
    Pong,
    Error,
    GoingAway,
}

impl ServerKind {
    /// Every server message type.
    pub const ALL: [Self; 15] = [
        Self::Welcome,
        Self::PeerJoined,
        Self::PeerLeft,
        Self::PeerUpdated,
        Self::Offer,
        Self::Answer,
        Self::Candidate,
        Self::EndOfCandidates,
        Self::Chat,
        Self::ChatHistory,
        Self::Typing,
        Self::Read,
        Self::Pong,
        Self::Error,
        Self::GoingAway,
    ];

    /// The `type` value on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Welcome => "welcome",
            Self::PeerJoined => "peer_joined",
            Self::PeerLeft => "peer_left",
            Self::PeerUpdated => "peer_updated",
            Self::Offer => "offer",
            Self::Answer => "answer",
            Self::Candidate => "candidate",
            Self::EndOfCandidates => "end_of_candidates",
            Self::Chat => "chat",
            Self::ChatHistory => "chat_history",
            Self::Typing => "typing",
            Self::Read => "read",
            Self::Pong => "pong",
            Self::Error => "error",
            Self::GoingAway => "going_away",
        }
    }

    /// Position in [`Self::ALL`], for per-type counters.
    pub fn index(self) -> usize {
        self as usize
    }

    /// True for the peer-to-peer relays (offer, answer, candidate,
    /// end-of-candidates): the messages whose latency is measured.
    pub fn is_relay(self) -> bool {
        matches!(self, Self::Offer | Self::Answer | Self::Candidate | Self::EndOfCandidates)
    }
}

impl ServerMessage {
    /// The message's type.
    pub fn kind(&self) -> ServerKind {
        match self {
            Self::Welcome(_) => ServerKind::Welcome,
            Self::PeerJoined { .. } => ServerKind::PeerJoined,
            Self::PeerLeft { .. } => ServerKind::PeerLeft,
            Self::PeerUpdated { .. } => ServerKind::PeerUpdated,
            Self::Offer { .. } => ServerKind::Offer,
            Self::Answer { .. } => ServerKind::Answer,
            Self::Candidate { .. } => ServerKind::Candidate,
            Self::EndOfCandidates { .. } => ServerKind::EndOfCandidates,
            Self::Chat(_) => ServerKind::Chat,
            Self::ChatHistory { .. } => ServerKind::ChatHistory,
            Self::Typing { .. } => ServerKind::Typing,
            Self::Read { .. } => ServerKind::Read,
            Self::Pong { .. } => ServerKind::Pong,
            Self::Error(_) => ServerKind::Error,
            Self::GoingAway(_) => ServerKind::GoingAway,
        }
    }

    /// Parses a server message (for clients, tests and the fuzzer).
    pub fn from_json(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    /// The JSON text frame for this message.
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: every map key is a string and
        // no Serialize impl returns an error.
        serde_json::to_string(self).unwrap_or_else(|_| unreachable!("ServerMessage always serializes"))
    }
}
