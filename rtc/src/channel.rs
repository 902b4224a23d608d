//! The two data channels of every Switchboard link.

use anyhow::Context;
use std::sync::Arc;
use webrtc::data_channel::RTCDataChannel;
use webrtc::data_channel::data_channel_init::RTCDataChannelInit;
use webrtc::peer_connection::RTCPeerConnection;

/// The two data channels every link has. The offerer creates them and
/// announces them in-band (DCEP); the answerer receives them by label.
/// (Out-of-band negotiated channels were tried first: in webrtc-rs 0.17.2 a
/// remote's first message can reach a negotiated stream before the local
/// side has dialed it, and that channel then never opens.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Reliable and ordered: text that must arrive.
    Chat,
    /// Unreliable and unordered (`maxRetransmits` 0): state that is soon stale.
    State,
}

impl Channel {
    /// Both channels.
    pub const ALL: [Self; 2] = [Self::Chat, Self::State];

    /// The label, as a browser sees it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::State => "state",
        }
    }

    /// The channel a label names.
    pub fn from_label(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.label() == label)
    }

    fn init(self) -> RTCDataChannelInit {
        match self {
            Self::Chat => RTCDataChannelInit { ordered: Some(true), ..Default::default() },
            Self::State => RTCDataChannelInit { ordered: Some(false), max_retransmits: Some(0), ..Default::default() },
        }
    }
}

/// Opens `channel` on `pc`.
pub async fn open_channel(pc: &RTCPeerConnection, channel: Channel) -> anyhow::Result<Arc<RTCDataChannel>> {
    pc.create_data_channel(channel.label(), Some(channel.init())).await.context("creating a data channel")
}
