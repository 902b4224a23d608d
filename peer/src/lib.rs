//! The Switchboard headless peer: joins a room through the signaling server
//! and talks to every other participant over WebRTC (webrtc-rs 0.17.2).
//!
//! Library first: [`Peer::join`] returns a handle whose [`Peer::events`]
//! report everything that happens (links connecting, data channel messages,
//! chat), and whose methods send. The `switchboard-peer` binary is a thin
//! command line around it.
//!
//! Every participant pair has one peer connection with two data channels
//! that the offerer creates (see [`Channel`]). WebRTC types stay inside
//! `rtc.rs`, `link.rs`, `media.rs` and `sender.rs`; everything else speaks
//! the protocol's types.

mod event;
mod link;
mod media;
mod peer;
pub mod probe;
pub mod rtc;
mod sender;
pub mod signaling;
mod timeline;
pub mod turn_check;

pub use event::PeerEvent;
pub use media::{MediaSource, SeqTracker};
pub use peer::{LinkReport, Peer, PeerOptions, TrackStats};
pub use rtc::{Channel, RtcOptions};
pub use sender::{ChannelSender, HIGH_WATER, LOW_WATER};
pub use signaling::{JoinRequest, ReconnectPolicy, SignalState, Signaling};
pub use timeline::{Phase, Timeline};
