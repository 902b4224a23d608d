//! One remote participant: its peer connection, its two data channels, its
//! tracks, and the negotiation with it (the one [`Negotiator`] of
//! `switchboard-rtc`: perfect negotiation, ICE restart by the first offerer,
//! capped candidate queue, real mids).

use crate::event::PeerEvent;
use crate::media::{Jitter, LocalMedia, Recorder, SeqTracker, TrackCounters};
use crate::timeline::{Phase, Timeline};
use anyhow::Context;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use switchboard_client::SignalSender;
use switchboard_protocol::{IceServer, PeerId};
use switchboard_rtc::{Channel, ChannelSender, Input, Negotiator, Observer, Report, Roles, RtcEngine};
use tokio::sync::mpsc;
use webrtc::data_channel::RTCDataChannel;
use webrtc::data_channel::data_channel_message::DataChannelMessage;
use webrtc::ice_transport::ice_connection_state::RTCIceConnectionState;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp_transceiver::RTCRtpTransceiverInit;
use webrtc::rtp_transceiver::rtp_codec::RTPCodecType;
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::track::track_local::TrackLocalWriter;

/// A connection to one remote participant.
pub struct Link {
    remote: PeerId,
    negotiator: Negotiator,
    pc: Arc<RTCPeerConnection>,
    /// The link's channels, once created (offerer) or announced (answerer).
    /// A std mutex: held only to insert or clone a sender.
    channels: Arc<Mutex<HashMap<Channel, ChannelSender>>>,
    /// Counters of the remote's tracks. A std mutex: locked only to add a
    /// track or take a snapshot, never across an await.
    received: Arc<Mutex<Vec<Arc<TrackCounters>>>>,
    timeline: Arc<Timeline>,
    /// RTT from RTCP receiver reports, microseconds (0: none yet).
    rtt_meter: Arc<AtomicU64>,
    /// Types of the local candidates gathered (`host`, `srflx`, `relay`).
    gathered: Arc<Mutex<Vec<String>>>,
}

/// Marks a phase and reports it the first time it happens.
#[derive(Debug, Clone)]
struct Marker {
    timeline: Arc<Timeline>,
    remote: PeerId,
    events: mpsc::Sender<PeerEvent>,
    /// Events dropped because the program was not reading them.
    dropped: Arc<AtomicU64>,
}

impl Marker {
    async fn mark(&self, phase: Phase) {
        if let Some(at) = self.timeline.mark(phase) {
            self.offer(PeerEvent::Phase { remote: self.remote.clone(), phase, at });
        }
    }

    /// Reports an event that may be dropped. Called from webrtc-rs
    /// callbacks and the negotiator, which must never wait on a program
    /// that stopped reading its events (ICE, DTLS and SCTP would stall):
    /// when the queue is full the event is dropped and counted
    /// ([`crate::Peer::dropped_events`]).
    fn offer(&self, event: PeerEvent) {
        if self.events.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What the link makes of its negotiator's reports.
#[derive(Debug)]
struct LinkObserver {
    marker: Marker,
    /// Types of the local candidates gathered.
    gathered: Arc<Mutex<Vec<String>>>,
}

impl Observer for LinkObserver {
    async fn report(&self, report: Report) {
        let (marker, remote) = (&self.marker, self.marker.remote.clone());
        match report {
            Report::OfferSent => marker.mark(Phase::OfferSent).await,
            Report::OfferReceived => marker.mark(Phase::OfferReceived).await,
            Report::AnswerSent => marker.mark(Phase::AnswerSent).await,
            Report::AnswerReceived => marker.mark(Phase::AnswerReceived).await,
            Report::Gathered(typ) => lock(&self.gathered).push(typ),
            Report::IceState(RTCIceConnectionState::Connected) => marker.mark(Phase::IceConnected).await,
            Report::IceState(_) => {}
            Report::IceRestarting { attempt } => marker.offer(PeerEvent::IceRestarting { remote, attempt }),
            Report::IceRestarted => marker.offer(PeerEvent::IceRestarted { remote }),
            Report::Problem(message) => marker.offer(PeerEvent::Error { remote: Some(remote), message }),
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
    /// Droppable events dropped because the queue was full.
    pub dropped: Arc<AtomicU64>,
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
        let marker = Marker {
            timeline: timeline.clone(),
            remote: remote.clone(),
            events: ctx.events.clone(),
            dropped: ctx.dropped.clone(),
        };
        let received = Arc::new(Mutex::new(Vec::new()));
        watch_tracks(&pc, &marker, &received, ctx.record.clone(), ctx.local.clone(), ctx.sfu_room);
        let channels = Arc::new(Mutex::new(HashMap::new()));
        if offerer {
            for channel in Channel::ALL {
                let dc = switchboard_rtc::open_channel(&pc, channel).await?;
                watch_channel(&dc, channel, &marker);
                let sender = ChannelSender::new(dc);
                lock(&channels).insert(channel, sender);
            }
        } else {
            accept_channels(&pc, &marker, &channels);
        }
        let gathered = Arc::new(Mutex::new(Vec::new()));
        watch_connection(&pc, &marker);
        let observer = Arc::new(LinkObserver { marker, gathered: gathered.clone() });
        let roles = Roles::new(&ctx.me, &remote, offerer);
        let negotiator = Negotiator::start(&pc, remote.clone(), roles, ctx.signal.queue(), observer);
        Ok(Self { remote, negotiator, pc, channels, received, timeline, rtt_meter, gathered })
    }

    /// Hands a signaling input to the link's negotiator.
    pub async fn input(&self, input: Input) {
        self.negotiator.input(input).await;
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
        self.negotiator.stop();
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
            marker.offer(PeerEvent::ChannelOpen { remote: marker.remote.clone(), channel });
        })
    }));
    let on_message = marker.clone();
    dc.on_message(Box::new(move |msg: DataChannelMessage| {
        let marker = on_message.clone();
        Box::pin(async move {
            let text = String::from_utf8_lossy(&msg.data).into_owned();
            let event = PeerEvent::Data { remote: marker.remote.clone(), channel, text };
            match channel {
                // Reliable: never dropped. A program that stops reading
                // stops this channel, and SCTP's flow control slows the
                // sender down.
                Channel::Chat => {
                    let _ = marker.events.send(event).await;
                }
                // Unreliable: dropped like any late state.
                Channel::State => marker.offer(event),
            }
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
            marker.offer(event);
            if video && let Some(pc) = weak.upgrade() {
                let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc: track.ssrc() };
                let _ = pc.write_rtcp(&[Box::new(pli)]).await;
            }
            let mut recorder = match record.map(|dir| Recorder::create(&dir, marker.remote.as_str(), video)) {
                Some(Ok(r)) => Some(r),
                Some(Err(err)) => {
                    let message = format!("{err:#}");
                    marker.offer(PeerEvent::Error { remote: Some(marker.remote.clone()), message });
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
                    if video && switchboard_rtc::vp8::is_rtp_keyframe(&packet.payload) {
                        counters.keyframes.fetch_add(1, Ordering::Relaxed);
                    }
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

/// Reports the connection's state. The callback holds no reference to the
/// connection itself (a cycle would leak it).
fn watch_connection(pc: &Arc<RTCPeerConnection>, marker: &Marker) {
    let on_state = marker.clone();
    pc.on_peer_connection_state_change(Box::new(move |state| {
        let marker = on_state.clone();
        Box::pin(async move {
            if state == RTCPeerConnectionState::Connected {
                marker.mark(Phase::DtlsConnected).await;
            }
            marker.offer(PeerEvent::ConnectionState { remote: marker.remote.clone(), state: state.to_string() });
        })
    }));
}
