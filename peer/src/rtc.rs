//! The one module that touches webrtc-rs (=0.17.2): building the API,
//! peer connections and data channels, and converting between its types and
//! the protocol's browser-shaped JSON. A move to another WebRTC stack
//! changes this file and `link.rs`, nothing else.

use anyhow::Context;
use std::sync::Arc;
use switchboard_protocol::{IceCandidate, IceServer, Sdp, SdpType, SessionDescription};
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::MediaEngine;
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{API, APIBuilder};
use webrtc::data_channel::RTCDataChannel;
use webrtc::data_channel::data_channel_init::RTCDataChannelInit;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice_transport::ice_candidate::RTCIceCandidateInit;
use webrtc::ice_transport::ice_server::RTCIceServer;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::policy::ice_transport_policy::RTCIceTransportPolicy;
use webrtc::peer_connection::sdp::sdp_type::RTCSdpType;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;

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

/// How the WebRTC stack is set up.
#[derive(Debug, Clone, Default)]
pub struct RtcOptions {
    /// Gather loopback candidates and no others, with mDNS off: for tests and
    /// local demos in a loopback-only namespace. Never the default: real
    /// deployments gather real interfaces.
    pub loopback_only: bool,
    /// Gather relay (TURN) candidates only: every connection goes through
    /// the TURN server. For diagnosis, and for privacy (no address of this
    /// host reaches the other side).
    pub relay_only: bool,
}

/// A configured webrtc-rs API, shared by every link of a peer.
pub struct RtcEngine {
    api: API,
    relay_only: bool,
}

impl std::fmt::Debug for RtcEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RtcEngine")
    }
}

/// Silence on the selected candidate pair before ICE is `disconnected`
/// (webrtc-rs: 5 s). Shorter, so that a dead path is noticed and restarted
/// (see `link.rs`) about as fast as a browser does.
pub const ICE_DISCONNECTED_AFTER: std::time::Duration = std::time::Duration::from_secs(3);
/// Further silence before ICE is `failed` (webrtc-rs: 25 s).
pub const ICE_FAILED_AFTER: std::time::Duration = std::time::Duration::from_secs(10);
/// Keepalive traffic on an idle pair, so that silence means a dead path
/// (webrtc-rs: 2 s).
pub const ICE_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(1);

impl RtcEngine {
    /// Builds the API: default codecs (VP8, Opus, ...) and interceptors
    /// (NACK, RTCP reports).
    pub fn new(options: &RtcOptions) -> anyhow::Result<Self> {
        let mut media = MediaEngine::default();
        media.register_default_codecs().context("registering codecs")?;
        let registry = register_default_interceptors(Registry::new(), &mut media).context("interceptors")?;
        let mut settings = SettingEngine::default();
        settings.set_ice_timeouts(Some(ICE_DISCONNECTED_AFTER), Some(ICE_FAILED_AFTER), Some(ICE_KEEPALIVE));
        if options.loopback_only {
            settings.set_include_loopback_candidate(true);
            settings.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
            settings.set_ip_filter(Box::new(|ip| ip.is_loopback()));
        }
        let api = APIBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings)
            .build();
        Ok(Self { api, relay_only: options.relay_only })
    }

    /// A new peer connection using `ice_servers` (from the welcome).
    pub async fn connection(&self, ice_servers: &[IceServer]) -> anyhow::Result<Arc<RTCPeerConnection>> {
        let config = self.configuration(ice_servers);
        Ok(Arc::new(self.api.new_peer_connection(config).await.context("creating a peer connection")?))
    }

    /// The configuration of every peer connection.
    pub fn configuration(&self, ice_servers: &[IceServer]) -> RTCConfiguration {
        RTCConfiguration {
            ice_servers: ice_servers
                .iter()
                .map(|s| RTCIceServer {
                    urls: s.urls.clone(),
                    username: s.username.clone().unwrap_or_default(),
                    credential: s.credential.clone().unwrap_or_default(),
                })
                .collect(),
            ice_transport_policy: if self.relay_only {
                RTCIceTransportPolicy::Relay
            } else {
                RTCIceTransportPolicy::All
            },
            ..Default::default()
        }
    }
}

/// Opens `channel` on `pc`.
pub async fn open_channel(pc: &RTCPeerConnection, channel: Channel) -> anyhow::Result<Arc<RTCDataChannel>> {
    pc.create_data_channel(channel.label(), Some(channel.init())).await.context("creating a data channel")
}

/// Protocol description to webrtc-rs.
pub fn to_rtc(desc: &SessionDescription) -> anyhow::Result<RTCSessionDescription> {
    let sdp = desc.sdp.text();
    Ok(match desc.kind {
        SdpType::Offer => RTCSessionDescription::offer(sdp)?,
        SdpType::Answer => RTCSessionDescription::answer(sdp)?,
        SdpType::Pranswer => RTCSessionDescription::pranswer(sdp)?,
        SdpType::Rollback => {
            let mut rollback = RTCSessionDescription::default();
            rollback.sdp_type = RTCSdpType::Rollback;
            rollback
        }
    })
}

/// webrtc-rs description to the protocol's.
pub fn from_rtc(desc: &RTCSessionDescription) -> SessionDescription {
    let kind = match desc.sdp_type {
        RTCSdpType::Answer => SdpType::Answer,
        RTCSdpType::Pranswer => SdpType::Pranswer,
        RTCSdpType::Rollback => SdpType::Rollback,
        _ => SdpType::Offer,
    };
    SessionDescription { kind, sdp: Sdp::new(&desc.sdp) }
}

/// Protocol candidate to webrtc-rs.
pub fn candidate_to_rtc(c: &IceCandidate) -> RTCIceCandidateInit {
    RTCIceCandidateInit {
        candidate: c.candidate.clone(),
        sdp_mid: c.sdp_mid.clone(),
        sdp_mline_index: c.sdp_m_line_index,
        username_fragment: c.username_fragment.clone(),
    }
}

/// webrtc-rs candidate to the protocol's.
pub fn candidate_from_rtc(c: RTCIceCandidateInit) -> IceCandidate {
    IceCandidate {
        candidate: c.candidate,
        sdp_mid: c.sdp_mid,
        sdp_m_line_index: c.sdp_mline_index,
        username_fragment: c.username_fragment,
    }
}

/// What [`apply_remote`] did with a relayed description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// An offer that collided with ours, on the impolite side: ignored (our
    /// offer wins).
    Ignored,
    /// An offer, applied and answered (the answer is the local description,
    /// to be sent). `rolled_back`: we were polite and withdrew our own offer.
    Answered {
        /// Our colliding offer was rolled back.
        rolled_back: bool,
    },
    /// An answer to our offer, applied.
    Accepted,
}

/// How long ICE may stay disconnected before the restarter (the side that
/// made the first offer) restarts it: a short outage recovers by itself.
pub const ICE_RESTART_AFTER: std::time::Duration = std::time::Duration::from_secs(1);
/// How often a restart is tried again while ICE has not recovered.
pub const ICE_RESTART_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Makes ready for an ICE restart offer: an unanswered offer of ours (lost
/// with the network) is rolled back first. False when the connection is in
/// the middle of answering (the restart waits for the next try).
pub async fn can_restart_ice(pc: &RTCPeerConnection) -> anyhow::Result<bool> {
    use webrtc::peer_connection::signaling_state::RTCSignalingState;
    match pc.signaling_state() {
        RTCSignalingState::Stable => Ok(true),
        RTCSignalingState::HaveLocalOffer => {
            let mut rollback = RTCSessionDescription::default();
            rollback.sdp_type = RTCSdpType::Rollback;
            pc.set_local_description(rollback).await.context("rolling back an unanswered offer")?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Creates and sets an offer with new ICE credentials (send it as usual).
pub async fn restart_ice_offer(pc: &RTCPeerConnection) -> anyhow::Result<()> {
    use webrtc::peer_connection::offer_answer_options::RTCOfferOptions;
    let options = RTCOfferOptions { ice_restart: true, ..RTCOfferOptions::default() };
    let offer = pc.create_offer(Some(options)).await.context("creating an ICE restart offer")?;
    pc.set_local_description(offer).await.context("setting the ICE restart offer")?;
    Ok(())
}

/// Applies a relayed offer or answer the way "perfect negotiation" says:
/// on a collision the polite side rolls its offer back and the impolite side
/// ignores the other's; an offer is answered; candidates that waited for
/// the description are added. Every Switchboard peer connection (headless
/// peer and SFU) negotiates through this.
pub async fn apply_remote(
    pc: &RTCPeerConnection,
    desc: &SessionDescription,
    polite: bool,
    pending: &mut Vec<RTCIceCandidateInit>,
) -> anyhow::Result<Applied> {
    use webrtc::peer_connection::signaling_state::RTCSignalingState;
    let is_offer = desc.kind == SdpType::Offer;
    let collision = is_offer && pc.signaling_state() != RTCSignalingState::Stable;
    if collision && !polite {
        return Ok(Applied::Ignored);
    }
    if collision {
        let mut rollback = RTCSessionDescription::default();
        rollback.sdp_type = RTCSdpType::Rollback;
        pc.set_local_description(rollback).await.context("rolling back our offer")?;
    }
    pc.set_remote_description(to_rtc(desc)?).await.context("setting the remote description")?;
    for candidate in std::mem::take(pending) {
        pc.add_ice_candidate(candidate).await.context("adding a queued candidate")?;
    }
    if !is_offer {
        return Ok(Applied::Accepted);
    }
    let answer = pc.create_answer(None).await.context("creating an answer")?;
    pc.set_local_description(answer).await.context("setting the local answer")?;
    Ok(Applied::Answered { rolled_back: collision })
}
