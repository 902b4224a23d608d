//! The webrtc-rs API as every Switchboard connection is built: codecs,
//! interceptors, ICE timings, which addresses are gathered.

use anyhow::Context;
use std::sync::Arc;
use switchboard_protocol::IceServer;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::MediaEngine;
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{API, APIBuilder};
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice_transport::ice_server::RTCIceServer;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::policy::ice_transport_policy::RTCIceTransportPolicy;

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
/// (see `negotiator.rs`) about as fast as a browser does.
pub const ICE_DISCONNECTED_AFTER: std::time::Duration = std::time::Duration::from_secs(3);
/// Further silence before ICE is `failed` (webrtc-rs: 25 s).
pub const ICE_FAILED_AFTER: std::time::Duration = std::time::Duration::from_secs(10);
/// How long the controlling side waits before nominating a succeeded
/// peer-reflexive pair (webrtc-rs: 1 s; host pairs: 0).
pub const PRFLX_ACCEPTANCE_MIN_WAIT: std::time::Duration = std::time::Duration::ZERO;
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
        // A peer-reflexive pair is the remote's host address seen in its
        // check before its trickled candidate arrived (the usual order when
        // the answerer's checks outrun its candidates through the server):
        // accept it as soon as a host pair would be, not after webrtc-rs's
        // default 1 s, which delayed one join in a few by a second.
        settings.set_prflx_acceptance_min_wait(Some(PRFLX_ACCEPTANCE_MIN_WAIT));
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
