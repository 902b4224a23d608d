//! What a peer reports to the program that drives it.

use crate::rtc::Channel;
use crate::timeline::Phase;
use std::time::Duration;
use switchboard_protocol::{ChatMessage, LeaveReason, PeerId, PeerInfo};

/// An event from a [`crate::Peer`].
#[derive(Debug, Clone)]
pub enum PeerEvent {
    /// A participant joined the room (a link to it is being set up).
    PeerJoined(PeerInfo),
    /// A participant left; its link is closed.
    PeerLeft {
        /// Who.
        remote: PeerId,
        /// Why.
        reason: LeaveReason,
    },
    /// A link's connection state changed (`connecting`, `connected`, ...).
    ConnectionState {
        /// Which link.
        remote: PeerId,
        /// The W3C state name.
        state: String,
    },
    /// A data channel to `remote` opened.
    ChannelOpen {
        /// Which link.
        remote: PeerId,
        /// Which channel.
        channel: Channel,
    },
    /// A step of connecting to `remote` happened, `at` after joining began.
    Phase {
        /// Which link.
        remote: PeerId,
        /// Which step.
        phase: Phase,
        /// When, since the peer started joining.
        at: Duration,
    },
    /// A media track from `remote` started.
    TrackStarted {
        /// From whom.
        remote: PeerId,
        /// `audio` or `video`.
        kind: &'static str,
        /// MIME type, e.g. `video/VP8`.
        codec: String,
    },
    /// A recording of a remote track is complete and playable.
    RecordingClosed {
        /// Whose track.
        remote: PeerId,
        /// The file.
        path: std::path::PathBuf,
    },
    /// Text arrived on a data channel.
    Data {
        /// From whom.
        remote: PeerId,
        /// On which channel.
        channel: Channel,
        /// The text.
        text: String,
    },
    /// A chat message on the signaling socket (room-wide, with history).
    Chat(ChatMessage),
    /// Something failed; the peer carries on.
    Error {
        /// The link concerned, if any.
        remote: Option<PeerId>,
        /// What happened.
        message: String,
    },
    /// The signaling connection ended.
    SignalingClosed,
}
