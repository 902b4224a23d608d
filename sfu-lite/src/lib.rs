//! sfu-lite: a small selective forwarding unit on webrtc-rs.
//!
//! It joins SFU-mode rooms as a participant whose role is `sfu`, over the
//! same signaling protocol as everyone else. Each participant negotiates
//! one peer connection with it. It forwards every publisher's audio and
//! video to every other participant, renegotiates as tracks come and go,
//! turns subscribers' keyframe requests into throttled PLIs to the
//! publisher, and relays the unreliable `state` data channel to the room.
//! Chat stays on the signaling socket.
//!
//! The signaling server runs it in-process for its own SFU rooms; the
//! `switchboard-sfu` binary runs it against any server.

mod forward;
pub mod keyframe;
pub mod member;
pub mod metrics;
pub mod relay_budget;
pub mod room;

pub use room::{SfuOptions, TrackKey, run_room};
