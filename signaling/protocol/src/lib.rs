//! Switchboard wire protocol, version 1: the one definition of every message.
//!
//! Frames are JSON text over a WebSocket at [`WS_PATH`]. Every message is an
//! object whose `"type"` field names it; [`ClientMessage`] is what a client
//! may send, [`ServerMessage`] what the server sends. WebRTC payloads keep the
//! browser's field names ([`SessionDescription`] is `RTCSessionDescriptionInit`,
//! [`IceCandidate`] is `RTCIceCandidateInit`) so a browser passes them straight
//! to `RTCPeerConnection`.
//!
//! The golden fixtures in `fixtures/` (one per message type) are the contract
//! that the Rust types, the browser client and `docs/protocol.md` are all
//! tested against.

mod client;
mod decode;
mod error;
mod ids;
mod parse;
mod server;
mod shared;
pub mod text;
#[cfg(feature = "turn-password")]
pub mod turn_password;
mod webrtc;

pub use client::{
    Bare, CandidateRelay, ChatHistoryRequest, ChatSend, ClientKind, ClientMessage, DescriptionRelay,
    EndOfCandidatesRelay, Join, MediaUpdate, Ping, ReadReceipt, Resume, TypingUpdate,
};
pub use error::{ErrorCode, ErrorMessage};
pub use ids::{ClientMsgId, DisplayName, IdError, PeerId, RequestId, RoomName};
pub use parse::{ParseError, parse_client, request_id_of};
pub use server::{
    ChatHistoryPage, GoingAway, IceServerList, PeerJoined, PeerLeft, PeerUpdated, Pong, ReadNotice, RelayedCandidate,
    RelayedDescription, RelayedEndOfCandidates, ServerKind, ServerMessage, TypingNotice, Welcome,
};
pub use shared::{ChatMessage, LeaveReason, LimitsInfo, MediaState, PeerInfo, Role, RoomMode};
pub use webrtc::{IceCandidate, IceServer, Sdp, SdpType, SessionDescription};

/// Version carried in the welcome message; bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;

/// The WebSocket endpoint. The version is in the path so that a v2 can be
/// served next to v1 while clients migrate.
pub const WS_PATH: &str = "/v1/ws";
