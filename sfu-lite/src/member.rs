//! One participant of an SFU room, as the SFU sees it: a peer connection,
//! its two data channels, the tracks forwarded to it, and the negotiation
//! with it.
//!
//! Negotiation follows the same rules as every other Switchboard client: the
//! newcomer offers, the peer whose id sorts greater is polite on collisions.
//! On top of that the SFU renegotiates whenever the tracks it forwards to a
//! member change; a change while an exchange is under way waits for it to
//! finish (one offer in flight at a time).

use crate::room::{RoomEvent, TrackKey};
use anyhow::Context;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use switchboard_peer::rtc::{self, Channel, RtcEngine};
use switchboard_peer::signaling::SignalSender;
use switchboard_protocol::{
    CandidateRelay, ClientMessage, DescriptionRelay, IceCandidate, IceServer, PeerId, SessionDescription,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use webrtc::data_channel::RTCDataChannel;
use webrtc::data_channel::data_channel_message::DataChannelMessage;
use webrtc::ice_transport::ice_candidate::RTCIceCandidateInit;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::signaling_state::RTCSignalingState;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp_transceiver::RTCRtpTransceiverInit;
use webrtc::rtp_transceiver::rtp_codec::RTPCodecType;
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;

/// Signaling inputs queued for one member.
pub const MEMBER_QUEUE: usize = 256;

/// What a member's negotiation task acts on.
#[derive(Debug)]
pub enum MemberInput {
    /// A relayed offer or answer.
    Description(SessionDescription),
    /// A relayed candidate.
    Candidate(IceCandidate),
    /// The forwarded tracks changed: offer when the connection is idle.
    Negotiate,
}

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
    inputs: mpsc::Sender<MemberInput>,
    task: JoinHandle<()>,
    /// Tracks forwarded to this member, by publisher track.
    pub outlets: HashMap<TrackKey, Outlet>,
    /// Its open data channels, by label.
    pub channels: HashMap<&'static str, Arc<RTCDataChannel>>,
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
                let dc = rtc::open_channel(&pc, channel).await?;
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
        trickle(&pc, &id, &ctx.signal);
        let (inputs, rx) = mpsc::channel(MEMBER_QUEUE);
        let negotiator = Negotiator {
            pc: Arc::downgrade(&pc),
            remote: id.clone(),
            signal: ctx.signal.clone(),
            events: ctx.events.clone(),
            polite: ctx.me > id,
            settled: false,
            first_offer_ours: offerer,
            offered: false,
            wants_offer: false,
            remote_set: false,
            pending: Vec::new(),
        };
        let task = tokio::spawn(negotiator.run(rx));
        if offerer {
            inputs.send(MemberInput::Negotiate).await.context("member task gone")?;
        }
        Ok(Self { id, pc, inputs, task, outlets: HashMap::new(), channels: HashMap::new(), events: ctx.events.clone() })
    }

    /// Hands a signaling input to the member's task.
    pub async fn input(&self, input: MemberInput) {
        let _ = self.inputs.send(input).await;
    }

    /// A weak handle on the connection (for keyframe requests to it as a
    /// publisher).
    pub fn connection(&self) -> Weak<RTCPeerConnection> {
        Arc::downgrade(&self.pc)
    }

    /// Starts forwarding `track` (of publisher track `key`) to this member.
    /// Renegotiation is the caller's to ask for, once per batch of changes.
    pub async fn add_outlet(&mut self, key: TrackKey, track: Arc<TrackLocalStaticRTP>) -> anyhow::Result<()> {
        let sender = self.pc.add_track(track.clone()).await.context("adding a forwarded track")?;
        // Read the sender's RTCP: the interceptors (NACK responder, reports)
        // only work when someone does, and keyframe requests arrive here.
        let (events, reader_sender, wanted) = (self.events.clone(), sender.clone(), key.clone());
        let reader = tokio::spawn(async move {
            while let Ok((packets, _)) = reader_sender.read_rtcp().await {
                let keyframe = packets.iter().any(|p| {
                    p.as_any().downcast_ref::<PictureLossIndication>().is_some()
                        || p.as_any().downcast_ref::<FullIntraRequest>().is_some()
                });
                if keyframe && events.send(RoomEvent::KeyframeWanted { key: wanted.clone() }).await.is_err() {
                    break;
                }
            }
        });
        self.outlets.insert(key, Outlet { track, sender, reader });
        Ok(())
    }

    /// Stops forwarding a publisher track to this member.
    pub async fn remove_outlet(&mut self, key: &TrackKey) -> bool {
        let Some(outlet) = self.outlets.remove(key) else { return false };
        outlet.reader.abort();
        let _ = self.pc.remove_track(&outlet.sender).await;
        true
    }

    /// Asks for a renegotiation (after adding or removing outlets).
    pub async fn renegotiate(&self) {
        self.input(MemberInput::Negotiate).await;
    }

    /// Sends text on one of the member's data channels, if open.
    pub async fn send(&self, channel: Channel, text: &str) {
        if let Some(dc) = self.channels.get(channel.label()) {
            let _ = dc.send_text(text.to_string()).await;
        }
    }

    /// Closes the connection and stops the member's tasks.
    pub async fn close(self) {
        self.task.abort();
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
        Box::pin(async move {
            if let Some(dc) = dc.upgrade() {
                let _ = events.send(RoomEvent::ChannelOpen { from, channel, dc }).await;
            }
        })
    }));
    let (from, events) = (from.clone(), events.clone());
    dc.on_message(Box::new(move |msg: DataChannelMessage| {
        let (from, events) = (from.clone(), events.clone());
        Box::pin(async move {
            let text = String::from_utf8_lossy(&msg.data).into_owned();
            let _ = events.send(RoomEvent::Data { from, channel, text }).await;
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
        let (from, events) = (from.clone(), events.clone());
        Box::pin(async move {
            let _ = events.send(RoomEvent::Track { from, track }).await;
        })
    }));
}

/// Trickles local candidates to the member.
fn trickle(pc: &Arc<RTCPeerConnection>, to: &PeerId, signal: &SignalSender) {
    let (to, signal) = (to.clone(), signal.clone());
    pc.on_ice_candidate(Box::new(move |candidate| {
        let (to, signal) = (to.clone(), signal.clone());
        Box::pin(async move {
            let Some(Ok(init)) = candidate.map(|c| c.to_json()) else { return };
            let msg =
                ClientMessage::Candidate(CandidateRelay { id: None, to, candidate: rtc::candidate_from_rtc(init) });
            let _ = signal.send(msg).await;
        })
    }));
}

/// The member's negotiation state, owned by its task.
struct Negotiator {
    pc: Weak<RTCPeerConnection>,
    remote: PeerId,
    signal: SignalSender,
    events: mpsc::Sender<RoomEvent>,
    polite: bool,
    /// A first offer/answer exchange has completed.
    settled: bool,
    /// The SFU makes the first offer (it joined after the member).
    first_offer_ours: bool,
    /// The first offer has been sent.
    offered: bool,
    /// A renegotiation is owed once the connection is idle.
    wants_offer: bool,
    /// A remote description has been applied: candidates can be added.
    remote_set: bool,
    /// Candidates that arrived before their description.
    pending: Vec<RTCIceCandidateInit>,
}

impl Negotiator {
    async fn run(mut self, mut inputs: mpsc::Receiver<MemberInput>) {
        while let Some(input) = inputs.recv().await {
            let Some(pc) = self.pc.upgrade() else { break };
            if let Err(err) = self.handle(&pc, input).await {
                let message = format!("{err:#}");
                let _ = self.events.send(RoomEvent::Problem { from: self.remote.clone(), message }).await;
            }
        }
    }

    async fn handle(&mut self, pc: &RTCPeerConnection, input: MemberInput) -> anyhow::Result<()> {
        match input {
            MemberInput::Negotiate => {
                let idle = pc.signaling_state() == RTCSignalingState::Stable;
                // Before the first exchange only its offerer may offer, once;
                // an answerer waits for the member's offer.
                let may_offer = if self.settled { idle } else { self.first_offer_ours && idle && !self.offered };
                if may_offer {
                    self.offered = true;
                    self.offer(pc).await?;
                } else {
                    self.wants_offer = true;
                }
            }
            MemberInput::Description(desc) => {
                match rtc::apply_remote(pc, &desc, self.polite, &mut self.pending).await? {
                    rtc::Applied::Ignored => return Ok(()),
                    rtc::Applied::Accepted => {}
                    rtc::Applied::Answered { rolled_back } => {
                        self.send_local(pc, false).await?;
                        // Our withdrawn offer is owed again.
                        self.wants_offer |= rolled_back;
                    }
                }
                self.remote_set = true;
                self.settled = true;
                if self.wants_offer && pc.signaling_state() == RTCSignalingState::Stable {
                    self.wants_offer = false;
                    self.offer(pc).await?;
                }
            }
            MemberInput::Candidate(candidate) => {
                let init = rtc::candidate_to_rtc(&candidate);
                if self.remote_set {
                    pc.add_ice_candidate(init).await.context("adding a candidate")?;
                } else {
                    self.pending.push(init);
                }
            }
        }
        Ok(())
    }

    async fn offer(&mut self, pc: &RTCPeerConnection) -> anyhow::Result<()> {
        let offer = pc.create_offer(None).await.context("creating an offer")?;
        pc.set_local_description(offer).await.context("setting the local offer")?;
        self.send_local(pc, true).await
    }

    async fn send_local(&self, pc: &RTCPeerConnection, offer: bool) -> anyhow::Result<()> {
        let local = pc.local_description().await.context("no local description")?;
        let relay = DescriptionRelay { id: None, to: self.remote.clone(), description: rtc::from_rtc(&local) };
        let msg = if offer { ClientMessage::Offer(relay) } else { ClientMessage::Answer(relay) };
        self.signal.send(msg).await
    }
}
