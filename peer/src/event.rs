//! What a peer reports to the program that drives it.

use crate::timeline::Phase;
use std::time::Duration;
use switchboard_protocol::{ChatMessage, LeaveReason, PeerId, PeerInfo};
use switchboard_rtc::Channel;

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
    /// ICE to `remote` went down and this side (the impolite one) sent an
    /// offer with new ICE credentials.
    IceRestarting {
        /// Which link.
        remote: PeerId,
        /// Restarts since ICE went down.
        attempt: u32,
    },
    /// ICE to `remote` is connected again after a restart.
    IceRestarted {
        /// Which link.
        remote: PeerId,
    },
    /// Another participant's connection dropped (`true`) and the server
    /// holds its seat, or it resumed (`false`).
    PeerReconnecting {
        /// Who.
        remote: PeerId,
        /// Away now.
        reconnecting: bool,
    },
    /// The signaling connection's state changed (dropped, retrying,
    /// connected again).
    Signaling(switchboard_client::SignalState),
    /// The signaling session was resumed after a drop: same id, nothing
    /// missed.
    SignalingResumed,
    /// The server could not resume the session (it restarted, or the grace
    /// ran out) and the peer joined afresh under a new id; its links were
    /// rebuilt.
    Rejoined {
        /// The new id.
        id: PeerId,
    },
    /// The signaling connection ended for good.
    SignalingClosed,
}
