//! One participant of an SFU room, as the SFU sees it: a peer connection,
//! its two data channels, the tracks forwarded to it, and the negotiation
//! with it.
//!
//! Negotiation is the one [`Negotiator`] every Switchboard connection on
//! webrtc-rs uses (perfect negotiation, ICE restart by the first offerer,
//! capped candidate queue, real mids). The SFU asks it to renegotiate
//! whenever the tracks it forwards to a member change; it offers when the
//! connection is stable and connected (one offer in flight at a time).

use crate::room::{RoomEvent, TrackKey};
use anyhow::Context;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use switchboard_client::SignalSender;
use switchboard_protocol::{IceServer, PeerId};
use switchboard_rtc::{Channel, Input, Negotiator, Observer, Report, Roles, RtcEngine};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use webrtc::data_channel::RTCDataChannel;
use webrtc::data_channel::data_channel_message::DataChannelMessage;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp_transceiver::rtp_codec::RTPCodecType;
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::rtp_transceiver::{RTCRtpTransceiver, RTCRtpTransceiverInit};
use webrtc::track::track_local::TrackLocal;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;

/// A track forwarded to this member.
#[derive(Debug)]
pub struct Outlet {
    /// What the forwarder writes to.
    pub track: Arc<TrackLocalStaticRTP>,
    /// Its sender on the member's connection.
    pub sender: Arc<RTCRtpSender>,
    reader: JoinHandle<()>,
}

/// Everything a member needs from its room.
#[derive(Debug, Clone)]
pub struct MemberContext {
    /// The SFU's own peer id.
    pub me: PeerId,
    /// ICE servers from the welcome.
    pub ice_servers: Vec<IceServer>,
    /// The signaling connection.
    pub signal: SignalSender,
    /// The room task's inbox.
    pub events: mpsc::Sender<RoomEvent>,
}

/// One participant's connection with the SFU.
pub struct Member {
    /// The participant.
    pub id: PeerId,
    pc: Arc<RTCPeerConnection>,
    negotiator: Negotiator,
    /// Tracks forwarded to this member, by publisher track.
    pub outlets: HashMap<TrackKey, Outlet>,
    /// Its open data channels, by label.
    pub channels: HashMap<&'static str, Arc<RTCDataChannel>>,
    /// Sections whose forwarded track went away, for the next one of their
    /// kind. At most as many as outlets this member ever had at once.
    idle: Vec<Arc<RTCRtpTransceiver>>,
    events: mpsc::Sender<RoomEvent>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member").field("id", &self.id).field("outlets", &self.outlets.len()).finish()
    }
}

impl Member {
    /// Creates the connection; offers at once when `offerer` (the SFU is
    /// the newcomer: it joined after this member).
    pub async fn start(engine: &RtcEngine, ctx: &MemberContext, id: PeerId, offerer: bool) -> anyhow::Result<Self> {
        let pc = engine.connection(&ctx.ice_servers).await?;
        if offerer {
            // Receive whatever the member publishes; what it receives from
            // others is added as tracks.
            for kind in [RTPCodecType::Audio, RTPCodecType::Video] {
                let init =
                    RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, send_encodings: vec![] };
                pc.add_transceiver_from_kind(kind, Some(init)).await.context("adding a receiver")?;
            }
            for channel in Channel::ALL {
                let dc = switchboard_rtc::open_channel(&pc, channel).await?;
                watch_channel(&dc, channel, &id, &ctx.events);
            }
        } else {
            let (from, events) = (id.clone(), ctx.events.clone());
            pc.on_data_channel(Box::new(move |dc: Arc<RTCDataChannel>| {
                let (from, events) = (from.clone(), events.clone());
                Box::pin(async move {
                    if let Some(channel) = Channel::from_label(dc.label()) {
                        watch_channel(&dc, channel, &from, &events);
                    }
                })
            }));
        }
        watch_tracks(&pc, &id, &ctx.events);
        let observer = Arc::new(MemberObserver { from: id.clone(), events: ctx.events.clone() });
        let roles = Roles::new(&ctx.me, &id, offerer);
        let negotiator = Negotiator::start(&pc, id.clone(), roles, ctx.signal.queue(), observer);
        let (outlets, channels, idle) = (HashMap::new(), HashMap::new(), Vec::new());
        Ok(Self { id, pc, negotiator, outlets, channels, idle, events: ctx.events.clone() })
    }

    /// Hands a signaling input to the member's negotiator. The room never
    /// waits on one member: when its queue (`switchboard_rtc::negotiator::NEGOTIATOR_QUEUE`) is full
    /// the input is dropped and reported, and negotiation recovers through
    /// the next offer or ICE restart.
    pub fn input(&self, input: Input) {
        if let Err(input) = self.negotiator.try_input(input) {
            tracing::warn!(peer = %self.id, ?input, "negotiation queue full: input dropped");
        }
    }

    /// A weak handle on the connection (for keyframe requests to it as a
    /// publisher).
    pub fn connection(&self) -> Weak<RTCPeerConnection> {
        Arc::downgrade(&self.pc)
    }

    /// Starts forwarding `track` (of publisher track `key`) to this member.
    /// Renegotiation is the caller's to ask for, once per batch of changes.
    pub async fn add_outlet(&mut self, key: TrackKey, track: Arc<TrackLocalStaticRTP>) -> anyhow::Result<()> {
        // A publisher's second track of a kind replaces its first: the old
        // sender and its RTCP reader go, or each would leak per subscriber.
        self.remove_outlet(&key).await;
        let kind = track.kind();
        let sender = match self.idle.iter().position(|t| t.kind() == kind) {
            // A section a departed publisher left: reused, so a long room
            // does not grow every subscriber's description by two sections
            // per publisher it ever had.
            Some(i) => {
                let transceiver = self.idle.swap_remove(i);
                let sender = transceiver.sender().await;
                sender.replace_track(Some(track.clone())).await.context("reusing a section")?;
                transceiver.set_direction(RTCRtpTransceiverDirection::Sendonly).await;
                sender
            }
            None => {
                // Send-only: the SFU receives nothing on a forwarded section.
                let init =
                    RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Sendonly, send_encodings: vec![] };
                let transceiver = self.pc.add_transceiver_from_track(track.clone(), Some(init)).await;
                transceiver.context("adding a forwarded track")?.sender().await
            }
        };
        // Read the sender's RTCP: the interceptors (NACK responder, reports)
        // only work when someone does, and keyframe requests arrive here.
        let (events, reader_sender, wanted) = (self.events.clone(), sender.clone(), key.clone());
        let reader = tokio::spawn(async move {
            while let Ok((packets, _)) = reader_sender.read_rtcp().await {
                let keyframe = packets.iter().any(|p| {
                    p.as_any().downcast_ref::<PictureLossIndication>().is_some()
                        || p.as_any().downcast_ref::<FullIntraRequest>().is_some()
                });
                // Requests are throttled anyway: one dropped on a full queue
                // is repeated by the subscriber.
                if keyframe
                    && let Err(mpsc::error::TrySendError::Closed(_)) =
                        events.try_send(RoomEvent::KeyframeWanted { key: wanted.clone() })
                {
                    break;
                }
            }
        });
        self.outlets.insert(key, Outlet { track, sender, reader });
        Ok(())
    }

    /// Stops forwarding a publisher track to this member.
    /// Its section goes inactive and waits for the next forwarded track of
    /// its kind (which replaces the old one).
    pub async fn remove_outlet(&mut self, key: &TrackKey) -> bool {
        let Some(outlet) = self.outlets.remove(key) else { return false };
        outlet.reader.abort();
        // The forwarder no longer writes to its track. The track stays on
        // the sender: webrtc-rs 0.17 cannot put a track back on a sender
        // whose track was taken away, and the next reuse replaces it.
        for transceiver in self.pc.get_transceivers().await {
            if Arc::ptr_eq(&transceiver.sender().await, &outlet.sender) {
                transceiver.set_direction(RTCRtpTransceiverDirection::Inactive).await;
                self.idle.push(transceiver);
                break;
            }
        }
        true
    }

    /// Asks for a renegotiation (after adding or removing outlets).
    pub fn renegotiate(&self) {
        self.input(Input::Negotiate);
    }

    /// Sends text on one of the member's data channels, if open and if
    /// fewer than `high_water` bytes wait unsent on it (else the message is
    /// dropped: for unreliable channels only).
    pub async fn send_unreliable(&self, channel: Channel, text: &str, high_water: usize) {
        if let Some(dc) = self.channels.get(channel.label())
            && dc.buffered_amount().await < high_water
        {
            let _ = dc.send_text(text.to_string()).await;
        }
    }

    /// Closes the connection and stops the member's tasks.
    pub async fn close(self) {
        self.negotiator.stop();
        for outlet in self.outlets.into_values() {
            outlet.reader.abort();
        }
        let _ = self.pc.close().await;
    }
}

/// Reports channel opening and messages to the room.
fn watch_channel(dc: &Arc<RTCDataChannel>, channel: Channel, from: &PeerId, events: &mpsc::Sender<RoomEvent>) {
    let (open_from, open_events, open_dc) = (from.clone(), events.clone(), Arc::downgrade(dc));
    dc.on_open(Box::new(move || {
        let (from, events, dc) = (open_from.clone(), open_events.clone(), open_dc.clone());
        // Must reach the room, but never by waiting inside webrtc-rs: a task
        // per channel opening (two per member) waits instead.
        if let Some(dc) = dc.upgrade() {
            tokio::spawn(async move { events.send(RoomEvent::ChannelOpen { from, channel, dc }).await });
        }
        Box::pin(async {})
    }));
    let (from, events) = (from.clone(), events.clone());
    dc.on_message(Box::new(move |msg: DataChannelMessage| {
        let (from, events) = (from.clone(), events.clone());
        Box::pin(async move {
            // Never wait on the room from inside webrtc-rs (SCTP would
            // stall, and the room may be waiting on this member): a full
            // room queue drops the message, as the `state` channel may.
            let text = String::from_utf8_lossy(&msg.data).into_owned();
            if events.try_send(RoomEvent::Data { from: from.clone(), channel, text }).is_err() {
                tracing::debug!(peer = %from, "room queue full: data channel message dropped");
            }
        })
    }));
}

/// Hands every track the member publishes to the room.
fn watch_tracks(pc: &Arc<RTCPeerConnection>, from: &PeerId, events: &mpsc::Sender<RoomEvent>) {
    let (from, events) = (from.clone(), events.clone());
    pc.on_track(Box::new(move |track, receiver, _| {
        // Drain the receiver's RTCP so the interceptors see the publisher's
        // sender reports.
        tokio::spawn(async move { while receiver.read_rtcp().await.is_ok() {} });
        // Must reach the room, but never by waiting inside webrtc-rs: a task
        // per track (one per media section) waits instead.
        let (from, events) = (from.clone(), events.clone());
        tokio::spawn(async move { events.send(RoomEvent::Track { from, track }).await });
        Box::pin(async {})
    }));
}

/// What the room hears of a member's negotiation: its failures (ICE
/// states and restarts show in the metrics of the tracks).
#[derive(Debug)]
struct MemberObserver {
    from: PeerId,
    events: mpsc::Sender<RoomEvent>,
}

impl Observer for MemberObserver {
    async fn report(&self, report: Report) {
        match report {
            Report::Problem(message) => {
                // The room is told if it has room; the log always is.
                tracing::debug!(peer = %self.from, %message, "negotiation problem");
                let _ = self.events.try_send(RoomEvent::Problem { from: self.from.clone(), message });
            }
            Report::IceRestarting { attempt } => {
                tracing::info!(peer = %self.from, attempt, "restarting ICE");
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_rtc::RtcOptions;
    use webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecCapability;

    #[tokio::test]
    async fn a_publishers_second_track_of_a_kind_replaces_the_first_on_every_subscriber() {
        let engine = RtcEngine::new(&RtcOptions { loopback_only: true, relay_only: false }).expect("engine");
        let (signal, _signals) = mpsc::channel(64);
        let (events, _events) = mpsc::channel(64);
        let me = PeerId::new("sfu").expect("id");
        let ctx = MemberContext { me, ice_servers: Vec::new(), signal: SignalSender::over(signal), events };
        let subscriber = PeerId::new("ada").expect("id");
        let mut member = Member::start(&engine, &ctx, subscriber, false).await.expect("member");
        let key = TrackKey { publisher: PeerId::new("bob").expect("id"), kind: "video" };
        let vp8 = RTCRtpCodecCapability { mime_type: "video/VP8".into(), clock_rate: 90_000, ..Default::default() };
        for _ in 0..2 {
            let track = Arc::new(TrackLocalStaticRTP::new(vp8.clone(), key.track_id(), "bob".into()));
            member.add_outlet(key.clone(), track).await.expect("outlet");
        }
        let mut sending = 0;
        for sender in member.pc.get_senders().await {
            sending += usize::from(sender.track().await.is_some());
        }
        assert_eq!(sending, 1, "the first track's sender is gone, not leaked beside the second");
        assert_eq!(member.outlets.len(), 1);
        // Publishers come and go: their sections are reused, not added.
        for n in 0..5 {
            member.remove_outlet(&key).await;
            let publisher = PeerId::new(format!("p{n}")).expect("id");
            let next = TrackKey { publisher, kind: "video" };
            let track = Arc::new(TrackLocalStaticRTP::new(vp8.clone(), next.track_id(), next.publisher.to_string()));
            member.add_outlet(next.clone(), track).await.expect("outlet");
            member.remove_outlet(&next).await;
        }
        assert_eq!(member.pc.get_transceivers().await.len(), 1, "one video section, reused");
        member.close().await;
    }
}
