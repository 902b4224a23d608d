//! Structures that appear inside several messages.

use crate::ids::{ClientMsgId, DisplayName, PeerId};
use serde::{Deserialize, Serialize};

/// Whether a participant's camera and microphone are muted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaState {
    /// Microphone muted.
    #[serde(default)]
    pub mic_muted: bool,
    /// Camera muted (off).
    #[serde(default)]
    pub camera_muted: bool,
}

/// How a room carries media, fixed when the room is created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomMode {
    /// Every pair of participants negotiates a peer connection directly.
    #[default]
    Mesh,
    /// Every participant negotiates one peer connection with the room's SFU
    /// participant, which forwards media between them.
    Sfu,
}

impl RoomMode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mesh => "mesh",
            Self::Sfu => "sfu",
        }
    }
}

/// What a member of a room is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A person or a headless peer.
    #[default]
    Participant,
    /// The forwarding unit of an SFU room.
    Sfu,
}

impl Role {
    /// True for an ordinary participant (the field is left out on the wire).
    pub fn is_participant(&self) -> bool {
        *self == Self::Participant
    }
}

/// What the room knows about a participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Server-assigned id; the address for relays.
    pub id: PeerId,
    /// Display name given at join.
    pub name: DisplayName,
    /// The verified identity (the token's `sub`), when the server uses tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Camera and microphone state.
    pub media: MediaState,
    /// Highest chat sequence number this participant has marked read (0: none).
    #[serde(default)]
    pub read_seq: u64,
    /// `sfu` for the room's forwarding unit; absent for everyone else.
    #[serde(default, skip_serializing_if = "Role::is_participant")]
    pub role: Role,
    /// True while its connection is down and the server holds its seat for
    /// a resume; absent otherwise.
    #[serde(default, skip_serializing_if = "is_false")]
    pub reconnecting: bool,
}

/// For `skip_serializing_if`: flags that are usually false stay off the wire.
pub(crate) fn is_zero(n: &u64) -> bool {
    *n == 0
}

pub(crate) fn is_false(flag: &bool) -> bool {
    !*flag
}

/// One chat message as the room stores and delivers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Per-room sequence number: starts at 1, no gaps, in delivery order.
    pub seq: u64,
    /// Server time of acceptance, Unix milliseconds.
    pub ts: u64,
    /// Sender's id.
    pub from: PeerId,
    /// Sender's display name at the time of sending.
    pub name: DisplayName,
    /// The id the sender chose; the echo to the sender is its acknowledgement.
    pub client_id: ClientMsgId,
    /// The text.
    pub text: String,
}

/// Why a participant left a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// It sent `leave`.
    Left,
    /// Its connection closed without a `leave`.
    Disconnected,
    /// It stopped answering (no message within the ping timeout).
    Timeout,
    /// It did not read its messages fast enough.
    SlowConsumer,
    /// It broke the rules (flood, oversized frames) and was disconnected.
    Kicked,
    /// The same identity joined the room again from another connection.
    Replaced,
    /// The server is shutting down.
    Shutdown,
}

impl LeaveReason {
    /// Every reason, for metrics labels.
    pub const ALL: [Self; 7] = [
        Self::Left,
        Self::Disconnected,
        Self::Timeout,
        Self::SlowConsumer,
        Self::Kicked,
        Self::Replaced,
        Self::Shutdown,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Left => "left",
            Self::Disconnected => "disconnected",
            Self::Timeout => "timeout",
            Self::SlowConsumer => "slow_consumer",
            Self::Kicked => "kicked",
            Self::Replaced => "replaced",
            Self::Shutdown => "shutdown",
        }
    }
}

/// The limits a client must respect, announced in the welcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsInfo {
    /// Largest text frame accepted, in bytes.
    pub max_message_bytes: u32,
    /// Longest chat text, in characters.
    pub max_chat_chars: u32,
    /// Sustained messages per second per connection.
    pub messages_per_second: u32,
    /// Capacity of the token bucket: messages that may arrive at once after
    /// a quiet period.
    pub message_burst: u32,
    /// Most participants in one room.
    pub max_peers_per_room: u32,
    /// Most chat messages one `chat_history` reply carries.
    pub chat_history_page: u32,
    /// A typing indicator clears by itself after this long without renewal.
    pub typing_ttl_ms: u64,
}
