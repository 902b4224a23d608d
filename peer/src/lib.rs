//! The Switchboard headless peer: joins a room through the signaling server
//! and talks to every other participant over WebRTC (webrtc-rs 0.17.2).
//!
//! Library first: [`Peer::join`] returns a handle whose [`Peer::events`]
//! report everything that happens (links connecting, data channel messages,
//! chat), and whose methods send. The `switchboard-peer` binary is a thin
//! command line around it.
//!
//! Every participant pair has one peer connection with two data channels
//! that the offerer creates (see [`Channel`]). Negotiation, the engine and
//! the channels are `switchboard-rtc`'s, the signaling connection
//! `switchboard-client`'s; WebRTC types stay inside `link.rs` and
//! `media.rs` here, and everything else speaks the protocol's types.

mod event;
mod link;
mod media;
mod peer;
pub mod probe;
mod timeline;
pub mod turn_check;

pub use event::PeerEvent;
pub use media::{MediaSource, SeqTracker};
pub use peer::{EVENT_QUEUE, LinkReport, Peer, PeerOptions, TrackStats};
pub use switchboard_client::{JoinRequest, ReconnectPolicy, SignalState, Signaling};
pub use switchboard_rtc::{Channel, ChannelSender, HIGH_WATER, LOW_WATER, RtcOptions};
pub use timeline::{Phase, Timeline};
