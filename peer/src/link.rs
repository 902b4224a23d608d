//! One remote participant: its peer connection, its two data channels, and
//! the negotiation with it.
//!
//! All signaling input for a remote goes through one task, in order, so
//! descriptions and candidates are applied exactly as they arrived.
//! Negotiation follows "perfect negotiation": for each pair the peer with
//! the larger id is polite (it rolls back its own offer on a collision), the
//! other impolite (it ignores the colliding offer). On join the newcomer
//! offers and the others wait, so a first negotiation never collides.
//!
//! The side that made the first offer restarts ICE: when the ICE connection
//! stays disconnected or fails, it sends an offer with new ICE credentials,
//! and again every [`ICE_RESTART_RETRY`] until it recovers (the offer may be
//! lost while signaling is down too). The other side answers it like any
//! offer. Not the impolite side: the first offerer is ICE-controlling, and
//! webrtc-rs keeps its ICE role across restarts while a browser gives the
//! controlling role to whoever offers the restart. If the first answerer
//! (controlled in webrtc-rs) offered a restart to a browser, both ends would
//! be controlled and ICE would never reconnect.

use crate::event::PeerEvent;
use crate::media::{Jitter, LocalMedia, Recorder, SeqTracker, TrackCounters};
use crate::rtc::{self, Channel, RtcEngine};
use crate::sender::ChannelSender;
use crate::signaling::SignalSender;
use crate::timeline::{Phase, Timeline};
use anyhow::Context;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use switchboard_protocol::{
    CandidateRelay, ClientMessage, DescriptionRelay, EndOfCandidatesRelay, IceCandidate, IceServer, PeerId, SdpType,
    SessionDescription,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use webrtc::data_channel::RTCDataChannel;
use webrtc::data_channel::data_channel_message::DataChannelMessage;
use webrtc::ice_transport::ice_candidate::RTCIceCandidateInit;
use webrtc::ice_transport::ice_connection_state::RTCIceConnectionState;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp_transceiver::RTCRtpTransceiverInit;
use webrtc::rtp_transceiver::rtp_codec::RTPCodecType;
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::track::track_local::TrackLocalWriter;

/// Signaling inputs queued for one link.
pub const LINK_QUEUE: usize = 256;
use crate::rtc::{ICE_RESTART_AFTER, ICE_RESTART_RETRY};

/// What a link's task acts on.
#[derive(Debug)]
pub enum LinkInput {
    /// A relayed offer or answer.
    Description(SessionDescription),
    /// A relayed candidate.
    Candidate(IceCandidate),
    /// The remote has no more candidates.
    EndOfCandidates,
    /// Create and send an offer.
    Negotiate,
    /// The ICE connection's state changed.
    IceState(RTCIceConnectionState),
}

/// A connection to one remote participant.
pub struct Link {
    remote: PeerId,
    inputs: mpsc::Sender<LinkInput>,
    pc: Arc<RTCPeerConnection>,
    /// The link's channels, once created (offerer) or announced (answerer).
    /// A std mutex: held only to insert or clone a sender.
    channels: Arc<Mutex<HashMap<Channel, ChannelSender>>>,
    /// Counters of the remote's tracks. A std mutex: locked only to add a
    /// track or take a snapshot, never across an await.
    received: Arc<Mutex<Vec<Arc<TrackCounters>>>>,
    timeline: Arc<Timeline>,
    /// RTT from RTCP receiver reports, microseconds (0: none yet).
    rtt_meter: Arc<std::sync::atomic::AtomicU64>,
    /// Types of the local candidates gathered (`host`, `srflx`, `relay`).
    gathered: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

/// Marks a phase and reports it the first time it happens.
#[derive(Debug, Clone)]
struct Marker {
    timeline: Arc<Timeline>,
    remote: PeerId,
    events: mpsc::Sender<PeerEvent>,
}

impl Marker {
    async fn mark(&self, phase: Phase) {
        if let Some(at) = self.timeline.mark(phase) {
            let _ = self.events.send(PeerEvent::Phase { remote: self.remote.clone(), phase, at }).await;
        }
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("remote", &self.remote).finish()
    }
}

/// Everything a link needs from its peer.
#[derive(Debug, Clone)]
pub struct LinkContext {
    /// This peer's id.
    pub me: PeerId,
    /// ICE servers from the welcome.
    pub ice_servers: Vec<IceServer>,
    /// The signaling connection.
    pub signal: SignalSender,
    /// Where events go.
    pub events: mpsc::Sender<PeerEvent>,
    /// This peer's outgoing tracks, added to every link.
    pub local: Arc<LocalMedia>,
    /// When the peer started joining: the origin of every timeline.
    pub start: std::time::Instant,
    /// Record every remote track into this directory.
    pub record: Option<std::path::PathBuf>,
    /// The room is an SFU room: a track's stream id names its publisher.
    pub sfu_room: bool,
}

impl Link {
    /// Creates the peer connection and its channels; offers at once when
    /// `offerer`.
    pub async fn start(engine: &RtcEngine, ctx: &LinkContext, remote: PeerId, offerer: bool) -> anyhow::Result<Self> {
        let pc = engine.connection(&ctx.ice_servers).await?;
        // Tracks go in before any negotiation, so the first offer or answer
        // carries them.
        let rtt_meter = ctx.local.attach(&pc).await?;
        if offerer {
            // An offer decides which media sections exist; one with no audio
            // or video section would stop the answerer from ever sending
            // that kind. Offer to receive what we do not send.
            let (audio, video) = ctx.local.kinds();
            for (kind, sends) in [(RTPCodecType::Audio, audio), (RTPCodecType::Video, video)] {
                if !sends {
                    let init = RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Recvonly,
                        send_encodings: vec![],
                    };
                    pc.add_transceiver_from_kind(kind, Some(init))
                        .await
                        .context("adding a receive-only transceiver")?;
                }
            }
        }
        let timeline = Arc::new(Timeline::new(ctx.start));
        let marker = Marker { timeline: timeline.clone(), remote: remote.clone(), events: ctx.events.clone() };
        let received = Arc::new(Mutex::new(Vec::new()));
        watch_tracks(&pc, &marker, &received, ctx.record.clone(), ctx.local.clone(), ctx.sfu_room);
        let channels = Arc::new(Mutex::new(HashMap::new()));
        if offerer {
            for channel in Channel::ALL {
                let dc = rtc::open_channel(&pc, channel).await?;
                watch_channel(&dc, channel, &marker);
                let sender = ChannelSender::new(dc);
                lock(&channels).insert(channel, sender);
            }
        } else {
            accept_channels(&pc, &marker, &channels);
        }
        let gathered = Arc::new(Mutex::new(Vec::new()));
        let (inputs, rx) = mpsc::channel(LINK_QUEUE);
        watch_connection(&pc, &marker, &ctx.signal, &gathered, &inputs);
        let polite = ctx.me > remote;
        let negotiator = Negotiator {
            pc: Arc::downgrade(&pc),
            remote: remote.clone(),
            signal: ctx.signal.clone(),
            events: ctx.events.clone(),
            marker,
            polite,
            remote_set: false,
            pending: Vec::new(),
            restarter: offerer,
            restart_due: None,
            restarts: 0,
        };
        let task = tokio::spawn(negotiator.run(rx));
        if offerer {
            inputs.send(LinkInput::Negotiate).await.context("link task gone")?;
        }
        Ok(Self { remote, inputs, pc, channels, received, timeline, rtt_meter, gathered, task })
    }

    /// Hands a signaling input to the link's task.
    pub async fn input(&self, input: LinkInput) {
        let _ = self.inputs.send(input).await;
    }

    /// A sender for one of this link's channels.
    pub fn sender(&self, channel: Channel) -> Option<ChannelSender> {
        lock(&self.channels).get(&channel).cloned()
    }

    /// Counters of every track received from the remote so far.
    pub fn received(&self) -> Vec<Arc<TrackCounters>> {
        self.received.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The remote's id.
    pub fn remote(&self) -> &PeerId {
        &self.remote
    }

    /// The phases reached so far.
    pub fn phases(&self) -> Vec<(Phase, std::time::Duration)> {
        self.timeline.phases()
    }

    /// The round-trip time: from RTCP receiver reports when this peer sends
    /// media, else whatever webrtc-rs's stats report.
    pub async fn rtt(&self) -> Option<std::time::Duration> {
        use webrtc::stats::StatsReportType;
        let measured = self.rtt_meter.load(Ordering::Relaxed);
        if measured > 0 {
            return Some(std::time::Duration::from_micros(measured));
        }
        // webrtc-rs fills the candidate pair's RTT only sometimes; the RTCP
        // receiver reports on our own streams carry one too.
        let report = self.pc.get_stats().await;
        let pair = report.reports.values().find_map(|r| match r {
            StatsReportType::CandidatePair(p) if p.current_round_trip_time > 0.0 => Some(p.current_round_trip_time),
            _ => None,
        });
        let rtcp = || {
            report.reports.values().find_map(|r| match r {
                StatsReportType::RemoteInboundRTP(s) => s.round_trip_time.filter(|t| *t > 0.0),
                _ => None,
            })
        };
        pair.or_else(rtcp).map(std::time::Duration::from_secs_f64)
    }

    /// The candidate types of the pair ICE selected, local then remote
    /// (`host`, `srflx`, `prflx`, `relay`), once connected.
    pub async fn selected_pair(&self) -> Option<(String, String)> {
        let pair = self.pc.sctp().transport().ice_transport().get_selected_candidate_pair().await?;
        Some((pair.local.typ.to_string(), pair.remote.typ.to_string()))
    }

    /// The types of the local candidates gathered so far.
    pub fn gathered(&self) -> Vec<String> {
        lock(&self.gathered).clone()
    }

    /// New ICE servers (fresh TURN credentials) for later gathering.
    pub async fn set_ice_servers(&self, engine: &RtcEngine, ice_servers: &[IceServer]) {
        let mut config = engine.configuration(ice_servers);
        // Certificates are fixed for the connection's life: keep its own.
        config.certificates = Vec::new();
        let _ = self.pc.set_configuration(config).await;
    }

    /// Closes the connection and stops the task.
    pub async fn close(self) {
        self.task.abort();
        let _ = self.pc.close().await;
    }
}

/// Locks a mutex that no holder can leave inconsistent (inserts and clones
/// only), so a poisoned lock is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The answerer's side: channels announced by the offerer. Handlers are set
/// inside the announcement, before the channel opens.
fn accept_channels(pc: &RTCPeerConnection, marker: &Marker, channels: &Arc<Mutex<HashMap<Channel, ChannelSender>>>) {
    let (marker, channels) = (marker.clone(), channels.clone());
    pc.on_data_channel(Box::new(move |dc: Arc<RTCDataChannel>| {
        let (marker, channels) = (marker.clone(), channels.clone());
        Box::pin(async move {
            let Some(channel) = Channel::from_label(dc.label()) else { return };
            watch_channel(&dc, channel, &marker);
            let sender = ChannelSender::new(dc);
            lock(&channels).insert(channel, sender);
        })
    }));
}

/// Reports channel open and messages. Handlers are set right after the
/// channel is created, before any message can arrive.
fn watch_channel(dc: &Arc<RTCDataChannel>, channel: Channel, marker: &Marker) {
    let on_open = marker.clone();
    dc.on_open(Box::new(move || {
        let marker = on_open.clone();
        Box::pin(async move {
            if channel == Channel::Chat {
                marker.mark(Phase::ChannelOpen).await;
            }
            let _ = marker.events.send(PeerEvent::ChannelOpen { remote: marker.remote.clone(), channel }).await;
        })
    }));
    let (remote, events) = (marker.remote.clone(), marker.events.clone());
    dc.on_message(Box::new(move |msg: DataChannelMessage| {
        let (remote, events) = (remote.clone(), events.clone());
        Box::pin(async move {
            let text = String::from_utf8_lossy(&msg.data).into_owned();
            let _ = events.send(PeerEvent::Data { remote, channel, text }).await;
        })
    }));
}

/// Counts the RTP of every remote track, and asks for a keyframe as soon as
/// a video track starts so that the first frame decodes without waiting for
/// the sender's next scheduled one.
fn watch_tracks(
    pc: &Arc<RTCPeerConnection>,
    marker: &Marker,
    received: &Arc<Mutex<Vec<Arc<TrackCounters>>>>,
    record: Option<std::path::PathBuf>,
    local: Arc<LocalMedia>,
    sfu_room: bool,
) {
    let (weak, marker, received) = (Arc::downgrade(pc), marker.clone(), received.clone());
    pc.on_track(Box::new(move |track, receiver, _transceiver| {
        let record = record.clone();
        // The interceptors see incoming RTCP only when someone reads it:
        // without this drain the sender's reports are never registered and
        // our receiver reports carry no LSR, so the remote gets no RTT.
        tokio::spawn(async move { while receiver.read_rtcp().await.is_ok() {} });
        let video = track.kind() == RTPCodecType::Video;
        let reflector = local.reflector(video);
        // Through an SFU a track's stream id names its publisher.
        let origin = if sfu_room { PeerId::new(track.stream_id()).ok() } else { None };
        let counters = Arc::new(TrackCounters::new(if video { "video" } else { "audio" }, origin));
        if let Ok(mut list) = received.lock() {
            list.push(counters.clone());
        }
        let (weak, marker) = (weak.clone(), marker.clone());
        Box::pin(async move {
            let codec = track.codec().capability;
            let event =
                PeerEvent::TrackStarted { remote: marker.remote.clone(), kind: counters.kind, codec: codec.mime_type };
            let _ = marker.events.send(event).await;
            if video && let Some(pc) = weak.upgrade() {
                let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc: track.ssrc() };
                let _ = pc.write_rtcp(&[Box::new(pli)]).await;
            }
            let mut recorder = match record.map(|dir| Recorder::create(&dir, marker.remote.as_str(), video)) {
                Some(Ok(r)) => Some(r),
                Some(Err(err)) => {
                    let message = format!("{err:#}");
                    let _ = marker.events.send(PeerEvent::Error { remote: Some(marker.remote.clone()), message }).await;
                    None
                }
                None => None,
            };
            tokio::spawn(async move {
                let mut seq = SeqTracker::default();
                let mut jitter = Jitter::new(codec.clock_rate);
                while let Ok((packet, _)) = track.read_rtp().await {
                    if counters.packets.fetch_add(1, Ordering::Relaxed) == 0 {
                        marker.mark(Phase::FirstRtp).await;
                    }
                    let j = jitter.on_packet(packet.header.timestamp, std::time::Instant::now());
                    counters.jitter_us.store(u64::try_from(j.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
                    counters.bytes.fetch_add(packet.payload.len() as u64, Ordering::Relaxed);
                    counters.on_probe(&packet.payload);
                    counters.lost.store(seq.on_packet(packet.header.sequence_number), Ordering::Relaxed);
                    if let Some(r) = recorder.as_mut()
                        && r.write(&packet).is_err()
                    {
                        recorder = None;
                    }
                    if let Some(out) = &reflector {
                        // The track rewrites SSRC and payload type for each
                        // link it is bound to.
                        let _ = out.write_rtp(&packet).await;
                    }
                }
                // The track ended (the link closed): finish the file.
                if let Some(r) = recorder {
                    let remote = marker.remote.clone();
                    let event = match r.close() {
                        Ok(path) => PeerEvent::RecordingClosed { remote, path },
                        Err(err) => PeerEvent::Error { remote: Some(remote), message: format!("{err:#}") },
                    };
                    let _ = marker.events.send(event).await;
                }
            });
        })
    }));
}

/// Trickles local candidates and reports connection state. The callbacks
/// hold no reference to the connection itself (a cycle would leak it).
fn watch_connection(
    pc: &Arc<RTCPeerConnection>,
    marker: &Marker,
    signal: &SignalSender,
    gathered: &Arc<Mutex<Vec<String>>>,
    inputs: &mpsc::Sender<LinkInput>,
) {
    let (signal, to, gathered) = (signal.clone(), marker.remote.clone(), gathered.clone());
    pc.on_ice_candidate(Box::new(move |candidate| {
        let (signal, to) = (signal.clone(), to.clone());
        if let Some(c) = &candidate {
            lock(&gathered).push(c.typ.to_string());
        }
        Box::pin(async move {
            let msg = match candidate.map(|c| c.to_json()) {
                Some(Ok(init)) => {
                    ClientMessage::Candidate(CandidateRelay { id: None, to, candidate: rtc::candidate_from_rtc(init) })
                }
                Some(Err(_)) => return,
                None => ClientMessage::EndOfCandidates(EndOfCandidatesRelay { id: None, to }),
            };
            let _ = signal.send(msg).await;
        })
    }));
    let (on_ice, ice_inputs) = (marker.clone(), inputs.downgrade());
    pc.on_ice_connection_state_change(Box::new(move |state| {
        let (marker, inputs) = (on_ice.clone(), ice_inputs.clone());
        Box::pin(async move {
            if state == RTCIceConnectionState::Connected {
                marker.mark(Phase::IceConnected).await;
            }
            if let Some(inputs) = inputs.upgrade() {
                let _ = inputs.send(LinkInput::IceState(state)).await;
            }
        })
    }));
    let on_state = marker.clone();
    pc.on_peer_connection_state_change(Box::new(move |state| {
        let marker = on_state.clone();
        Box::pin(async move {
            if state == RTCPeerConnectionState::Connected {
                marker.mark(Phase::DtlsConnected).await;
            }
            let event = PeerEvent::ConnectionState { remote: marker.remote.clone(), state: state.to_string() };
            let _ = marker.events.send(event).await;
        })
    }));
}

/// The link task's state.
struct Negotiator {
    pc: Weak<RTCPeerConnection>,
    remote: PeerId,
    signal: SignalSender,
    events: mpsc::Sender<PeerEvent>,
    marker: Marker,
    polite: bool,
    /// A remote description has been applied: candidates can be added.
    remote_set: bool,
    /// Candidates that arrived before the description they belong to.
    pending: Vec<RTCIceCandidateInit>,
    /// This side made the first offer, so it restarts ICE (see the module
    /// docs for why it must be that side).
    restarter: bool,
    /// When to restart ICE (the restarter, while ICE is down).
    restart_due: Option<tokio::time::Instant>,
    /// Restarts sent since ICE went down.
    restarts: u32,
}

impl Negotiator {
    async fn run(mut self, mut inputs: mpsc::Receiver<LinkInput>) {
        loop {
            let due = self.restart_due;
            let restart = async move {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let input = tokio::select! {
                input = inputs.recv() => match input {
                    Some(input) => input,
                    None => break,
                },
                () = restart => {
                    self.restart_due = Some(tokio::time::Instant::now() + ICE_RESTART_RETRY);
                    let Some(pc) = self.pc.upgrade() else { break };
                    if let Err(err) = self.restart_ice(&pc).await {
                        let message = format!("ICE restart: {err:#}");
                        let _ = self.events.send(PeerEvent::Error { remote: Some(self.remote.clone()), message }).await;
                    }
                    continue;
                }
            };
            let Some(pc) = self.pc.upgrade() else { break };
            if let Err(err) = self.handle(&pc, input).await {
                let _ = self
                    .events
                    .send(PeerEvent::Error { remote: Some(self.remote.clone()), message: format!("{err:#}") })
                    .await;
            }
        }
    }

    async fn handle(&mut self, pc: &RTCPeerConnection, input: LinkInput) -> anyhow::Result<()> {
        match input {
            LinkInput::Negotiate => {
                let offer = pc.create_offer(None).await.context("creating an offer")?;
                pc.set_local_description(offer).await.context("setting the local offer")?;
                self.send_local(pc, true).await?;
                self.marker.mark(Phase::OfferSent).await;
            }
            LinkInput::Description(desc) => {
                let is_offer = desc.kind == SdpType::Offer;
                self.marker.mark(if is_offer { Phase::OfferReceived } else { Phase::AnswerReceived }).await;
                match rtc::apply_remote(pc, &desc, self.polite, &mut self.pending).await? {
                    rtc::Applied::Ignored => {}
                    rtc::Applied::Accepted => self.remote_set = true,
                    rtc::Applied::Answered { .. } => {
                        self.remote_set = true;
                        self.send_local(pc, false).await?;
                        self.marker.mark(Phase::AnswerSent).await;
                    }
                }
            }
            LinkInput::Candidate(candidate) => {
                let init = rtc::candidate_to_rtc(&candidate);
                if self.remote_set {
                    pc.add_ice_candidate(init).await.context("adding a candidate")?;
                } else {
                    self.pending.push(init);
                }
            }
            // webrtc-rs needs no end-of-candidates signal; it is accepted and
            // dropped (a browser would get an empty candidate).
            LinkInput::EndOfCandidates => {}
            LinkInput::IceState(state) => match state {
                RTCIceConnectionState::Disconnected | RTCIceConnectionState::Failed
                    if self.restarter && self.restart_due.is_none() =>
                {
                    self.restart_due = Some(tokio::time::Instant::now() + ICE_RESTART_AFTER);
                }
                RTCIceConnectionState::Connected | RTCIceConnectionState::Completed => {
                    self.restart_due = None;
                    if std::mem::take(&mut self.restarts) > 0 {
                        let _ = self.events.send(PeerEvent::IceRestarted { remote: self.remote.clone() }).await;
                    }
                }
                _ => {}
            },
        }
        Ok(())
    }

    /// Offers with new ICE credentials, unless an offer is already out.
    async fn restart_ice(&mut self, pc: &RTCPeerConnection) -> anyhow::Result<()> {
        if !rtc::can_restart_ice(pc).await? {
            return Ok(());
        }
        self.restarts += 1;
        let _ =
            self.events.send(PeerEvent::IceRestarting { remote: self.remote.clone(), attempt: self.restarts }).await;
        rtc::restart_ice_offer(pc).await?;
        self.send_local(pc, true).await
    }

    async fn send_local(&self, pc: &RTCPeerConnection, offer: bool) -> anyhow::Result<()> {
        let local = pc.local_description().await.context("no local description")?;
        let relay = DescriptionRelay { id: None, to: self.remote.clone(), description: rtc::from_rtc(&local) };
        let msg = if offer { ClientMessage::Offer(relay) } else { ClientMessage::Answer(relay) };
        self.signal.send(msg).await
    }
}
