//! Messages the server sends.

use crate::error::ErrorMessage;
use crate::ids::{PeerId, RequestId, RoomName};
use crate::shared::{ChatMessage, LeaveReason, LimitsInfo, PeerInfo, RoomMode};
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
    /// `mesh` (negotiate with every peer) or `sfu` (negotiate only with the
    /// peer whose role is `sfu`).
    #[serde(default)]
    pub mode: RoomMode,
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
    /// Token for resuming this session after a dropped connection (a new
    /// one in every welcome; the previous one stops working).
    pub resume_token: String,
    /// How long the server holds the seat of a dropped connection for a
    /// resume, in milliseconds (0: no resume).
    #[serde(default)]
    pub resume_grace_ms: u64,
    /// True when this welcome answers a resume: the client keeps its state,
    /// and the events it missed follow in order.
    #[serde(default, skip_serializing_if = "crate::shared::is_false")]
    pub resumed: bool,
    /// After a resumed welcome: how many events follow it as the replay of
    /// what the client missed. A client that resends unacknowledged chat
    /// waits for them first, so that it resends only what was never stored.
    #[serde(default, skip_serializing_if = "crate::shared::is_zero")]
    pub replayed: u64,
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

/// Someone joined the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerJoined {
    /// The newcomer.
    pub peer: PeerInfo,
}

/// Someone left the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerLeft {
    /// Who.
    pub peer_id: PeerId,
    /// Why.
    pub reason: LeaveReason,
}

/// Someone's camera/microphone state changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerUpdated {
    /// The participant, as now.
    pub peer: PeerInfo,
}

/// A relayed offer or answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayedDescription {
    /// Sender, stamped by the server.
    pub from: PeerId,
    /// The description, verbatim.
    pub description: SessionDescription,
}

/// A relayed candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayedCandidate {
    /// Sender, stamped by the server.
    pub from: PeerId,
    /// The candidate.
    pub candidate: IceCandidate,
}

/// The sender has no more candidates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayedEndOfCandidates {
    /// Sender, stamped by the server.
    pub from: PeerId,
}

/// A page of chat history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatHistoryPage {
    /// The request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    /// Oldest first.
    pub messages: Vec<ChatMessage>,
    /// True when older messages exist before the first one.
    pub has_more: bool,
}

/// Someone started or stopped typing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingNotice {
    /// Who.
    pub from: PeerId,
    /// Typing now.
    pub active: bool,
}

/// Someone read the chat up to `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadNotice {
    /// Who.
    pub from: PeerId,
    /// Highest sequence number read.
    pub seq: u64,
}

/// Fresh ICE servers: the answer to an `ice_servers` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServerList {
    /// The request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    /// STUN/TURN servers to give `RTCPeerConnection` (`setConfiguration`).
    pub ice_servers: Vec<IceServer>,
    /// Seconds the credentials stay valid (absent: no expiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ice_servers_ttl_s: Option<u64>,
}

/// Answer to `ping`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// The ping's request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
}

/// Everything the server sends. Deserialized by hand, like
/// [`crate::ClientMessage`], so that relayed SDP stays raw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Joined.
    Welcome(Box<Welcome>),
    /// Someone joined the room.
    PeerJoined(PeerJoined),
    /// Someone left the room.
    PeerLeft(PeerLeft),
    /// Someone's camera/microphone state changed.
    PeerUpdated(PeerUpdated),
    /// A relayed offer.
    Offer(RelayedDescription),
    /// A relayed answer.
    Answer(RelayedDescription),
    /// A relayed candidate.
    Candidate(RelayedCandidate),
    /// The sender has no more candidates.
    EndOfCandidates(RelayedEndOfCandidates),
    /// A chat message (also the acknowledgement to its sender).
    Chat(ChatMessage),
    /// A page of chat history.
    ChatHistory(ChatHistoryPage),
    /// Someone started or stopped typing.
    Typing(TypingNotice),
    /// Someone read the chat up to `seq`.
    Read(ReadNotice),
    /// Answer to `ping`.
    Pong(Pong),
    /// An error.
    Error(ErrorMessage),
    /// The server is shutting down or moving this client.
    GoingAway(GoingAway),
    /// Fresh ICE servers.
    IceServers(IceServerList),
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
    IceServers,
}

impl ServerKind {
    /// Every server message type.
    pub const ALL: [Self; 16] = [
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
        Self::IceServers,
    ];

    /// The `type` values on the wire, in the order of [`Self::ALL`].
    pub const NAMES: [&'static str; 16] = [
        "welcome",
        "peer_joined",
        "peer_left",
        "peer_updated",
        "offer",
        "answer",
        "candidate",
        "end_of_candidates",
        "chat",
        "chat_history",
        "typing",
        "read",
        "pong",
        "error",
        "going_away",
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

    /// True for the messages numbered in a session's event stream: what
    /// happens in the room, as opposed to replies to this client's own
    /// requests. A client counts them (the `received` of a resume, the `ack`
    /// of a ping); the server replays the ones a resumed client missed.
    pub fn is_event(self) -> bool {
        !matches!(
            self,
            Self::Welcome | Self::ChatHistory | Self::Pong | Self::Error | Self::GoingAway | Self::IceServers
        )
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
            Self::PeerJoined(_) => ServerKind::PeerJoined,
            Self::PeerLeft(_) => ServerKind::PeerLeft,
            Self::PeerUpdated(_) => ServerKind::PeerUpdated,
            Self::Offer(_) => ServerKind::Offer,
            Self::Answer(_) => ServerKind::Answer,
            Self::Candidate(_) => ServerKind::Candidate,
            Self::EndOfCandidates(_) => ServerKind::EndOfCandidates,
            Self::Chat(_) => ServerKind::Chat,
            Self::ChatHistory(_) => ServerKind::ChatHistory,
            Self::Typing(_) => ServerKind::Typing,
            Self::Read(_) => ServerKind::Read,
            Self::Pong(_) => ServerKind::Pong,
            Self::Error(_) => ServerKind::Error,
            Self::GoingAway(_) => ServerKind::GoingAway,
            Self::IceServers(_) => ServerKind::IceServers,
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
