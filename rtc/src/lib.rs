//! The one place Switchboard wraps webrtc-rs (=0.17.2): the engine every
//! connection is built from, the two data channels, conversions to the
//! protocol's browser-shaped JSON, candidate handling, and the one
//! [`Negotiator`] that the headless peer and the SFU both use. A move to
//! another WebRTC stack changes this crate and the media code on top of it.

pub mod candidates;
mod channel;
pub mod convert;
pub(crate) mod engine;
pub mod negotiator;
pub mod rejected;
mod sender;
pub mod vp8;

pub use candidates::{CandidateQueue, MAX_PENDING_CANDIDATES};
pub use channel::{Channel, open_channel};
pub use engine::{ICE_DISCONNECTED_AFTER, ICE_FAILED_AFTER, ICE_KEEPALIVE, RtcEngine, RtcOptions};
pub use negotiator::{ICE_RESTART_AFTER, ICE_RESTART_RETRY, Input, Negotiator, Observer, Report, Roles};
pub use sender::{ChannelSender, HIGH_WATER, LOW_WATER};
