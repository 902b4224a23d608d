//! A room's whole state as data, for moving the room to another node
//! (decision 0019): what [`crate::Hub::export_room`] returns and
//! [`crate::Hub::import_room`] takes. Serialized as JSON by the shell.
//!
//! Versioning rule: a field added with a default that means "as before"
//! keeps the version (older importers ignore it, newer ones default it);
//! any other change (a field removed, renamed, or read differently) bumps
//! [`SNAPSHOT_VERSION`], and a node imports only the versions it lists in
//! [`SNAPSHOT_VERSIONS_READ`]. A node hands a room only to a node that
//! reads the version it writes.
//!
//! Deadlines are kept as what is left of them at export (nanoseconds),
//! since a monotonic clock means nothing in another process.

use serde::{Deserialize, Serialize};
use switchboard_protocol::{ChatMessage, ClientMsgId, PeerId, PeerInfo, RequestId, RoomMode, RoomName, ServerMessage};

/// The version this build writes.
pub const SNAPSHOT_VERSION: u32 = 1;
/// The versions this build imports.
pub const SNAPSHOT_VERSIONS_READ: &[u32] = &[1];

/// One room, everything the hub keeps about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomSnapshot {
    /// [`SNAPSHOT_VERSION`] of the writer.
    pub version: u32,
    /// The room.
    pub room: RoomName,
    /// Mesh or SFU.
    pub mode: RoomMode,
    /// The join order the next member gets.
    pub next_order: u64,
    /// The chat memory keeps.
    pub chat: ChatSnapshot,
    /// Chat numbered and handed to durable storage, not yet stored: stored
    /// again by the importer (storage is idempotent by `seq`).
    pub pending_chat: Vec<PendingChatSnapshot>,
    /// While an SFU was asked for: time left before asking again.
    pub sfu_asked_left_ns: Option<u64>,
    /// Members, in join order.
    pub members: Vec<MemberSnapshot>,
    /// When the room was made (Unix ms). 0: not known (an older writer).
    #[serde(default)]
    pub created_unix_ms: u64,
    /// When it was exported (Unix ms): the importer counts the time the
    /// snapshot waited against every deadline. 0: not counted.
    #[serde(default)]
    pub exported_unix_ms: u64,
}

/// A room's chat memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatSnapshot {
    /// Kept messages, oldest first.
    pub messages: Vec<ChatMessage>,
    /// The highest `seq` given.
    pub last_seq: u64,
    /// The newest timestamp given.
    pub last_ts: u64,
}

/// A chat message waiting to be stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingChatSnapshot {
    /// The message, numbered.
    pub message: ChatMessage,
    /// The connection it came from.
    pub conn: u64,
    /// Its request id.
    pub id: Option<RequestId>,
}

/// One member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberSnapshot {
    /// Its place in the join order.
    pub order: u64,
    /// Its connection (meaningful only while `online`, and only to the
    /// node that numbered it).
    pub conn: u64,
    /// Whether it is connected (false: its seat is held for a resume).
    pub online: bool,
    /// While away: time left before its seat is given up.
    pub away_left_ns: Option<u64>,
    /// What the others see.
    pub info: PeerInfo,
    /// Its event stream.
    pub events: EventsSnapshot,
    /// Chat client ids it used lately, oldest first.
    pub chat_ids: Vec<ClientMsgId>,
    /// The token that resumes it.
    pub resume_token: String,
    /// The token before its last resume, still honoured.
    pub previous_token: Option<String>,
    /// While typing: time left before the indicator expires.
    pub typing_left_ns: Option<u64>,
    /// Relays held for it per sender while it is away, by sender.
    pub held_relays: Vec<(PeerId, usize)>,
    /// Held by a handover, without a `reconnecting` notice.
    #[serde(default)]
    pub quiet_hold: bool,
    /// When it joined (Unix ms). 0: not known (an older writer).
    #[serde(default)]
    pub joined_unix_ms: u64,
}

/// A member's event stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventsSnapshot {
    /// Events numbered so far.
    pub sent: u64,
    /// While away: events numbered before it went.
    pub away_from: Option<u64>,
    /// Unacknowledged events, oldest first.
    pub kept: Vec<KeptEvent>,
}

/// One unacknowledged event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeptEvent {
    /// Its number in the member's stream.
    pub number: u64,
    /// Its JSON size, as counted against the replay budget.
    pub bytes: usize,
    /// The event.
    pub event: ServerMessage,
}

/// Why a room cannot be exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// The room is not here.
    #[error("no such room here")]
    NoSuchRoom,
    /// A member's resume waits on a probe of its connection.
    #[error("a resume is in progress in the room")]
    ResumeInProgress,
    /// Resume is off (`resume_grace` 0): members could not take their
    /// sessions back on the new node.
    #[error("resume is off, so sessions cannot move")]
    ResumeOff,
}

/// Why a snapshot cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// Written by a version this build does not read.
    #[error("snapshot version {0} is not one this build reads")]
    Version(u32),
    /// The room exists here already.
    #[error("the room exists here already")]
    RoomExists,
    /// This node holds as many rooms as it may.
    #[error("this node holds as many rooms as it may")]
    TooManyRooms,
    /// The snapshot contradicts itself or this hub.
    #[error("invalid snapshot: {0}")]
    Invalid(&'static str),
}
