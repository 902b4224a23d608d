//! A headless participant: joins a room through the signaling server and
//! keeps one [`Link`] per other participant.

use crate::event::PeerEvent;
use crate::link::{Link, LinkContext};
use crate::media::{LocalMedia, MediaSource};
use crate::timeline::Phase;
use anyhow::Context;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_client::{JoinRequest, ReconnectPolicy, Signaling};
use switchboard_protocol::{
    Bare, ChatSend, ClientMessage, ClientMsgId, PeerId, Role, RoomMode, ServerMessage, Welcome,
};
use switchboard_rtc::negotiator::rules::makes_offers;
use switchboard_rtc::{Channel, ChannelSender, Input, RtcEngine, RtcOptions};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Events queued for the program before links wait.
pub const EVENT_QUEUE: usize = 4096;

/// Share of the TURN credentials' lifetime after which fresh ones are asked
/// for (the browser client uses the same).
pub const ICE_REFRESH_AT: f64 = 0.8;

/// How to join.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// Signaling URL, e.g. `ws://127.0.0.1:8080/v1/ws`.
    pub url: String,
    /// Room.
    pub room: String,
    /// Display name.
    pub name: String,
    /// Join token, when the server requires one.
    pub token: Option<String>,
    /// WebRTC settings.
    pub rtc: RtcOptions,
    /// What to send.
    pub media: MediaSource,
    /// Record every remote track (IVF/Ogg) into this directory.
    pub record: Option<std::path::PathBuf>,
    /// Reconnect and resume after a signaling drop; `None`: a drop ends
    /// signaling (links stay up).
    pub reconnect: Option<ReconnectPolicy>,
}

/// Everything known about the link to one remote participant.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LinkReport {
    /// The remote.
    pub remote: PeerId,
    /// Phases reached, with their time since joining began.
    pub phases: Vec<(Phase, Duration)>,
    /// Round-trip time of the selected candidate pair.
    pub rtt: Option<Duration>,
    /// Received tracks.
    pub tracks: Vec<TrackStats>,
    /// Candidate types of the selected pair, local then remote (`host`,
    /// `srflx`, `prflx`, `relay`), once ICE has chosen one.
    pub selected_pair: Option<(String, String)>,
    /// Types of the local candidates gathered for this link.
    pub gathered: Vec<String>,
}

/// What has been received on one remote track.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TrackStats {
    /// From whom.
    pub remote: PeerId,
    /// `audio` or `video`.
    pub kind: &'static str,
    /// RTP packets.
    pub packets: u64,
    /// RTP payload bytes.
    pub bytes: u64,
    /// Packets missing from the sequence.
    pub lost: u64,
    /// Interarrival jitter, microseconds.
    pub jitter_us: u64,
    /// VP8 keyframes received (0 for audio).
    pub keyframes: u64,
}

enum Command {
    Chat { text: String, reply: oneshot::Sender<anyhow::Result<()>> },
    Leave { reply: oneshot::Sender<()> },
    Report { reply: oneshot::Sender<Vec<LinkReport>> },
    Latency { reset: bool, reply: oneshot::Sender<hdrhistogram::Histogram<u64>> },
    Senders { channel: Channel, reply: oneshot::Sender<Vec<(PeerId, ChannelSender)>> },
}

/// A joined participant.
#[derive(Debug)]
pub struct Peer {
    /// The server's welcome (this peer's id is `welcome.you.id`).
    pub welcome: Welcome,
    /// Time from starting to join to the WebSocket being open.
    pub connected_after: Duration,
    /// Time from starting to join to the welcome.
    pub welcome_after: Duration,
    /// Everything that happens, in order. Read it: the queue holds
    /// [`EVENT_QUEUE`] events. When it is full, events reported from inside
    /// the WebRTC stack (phases, connection and ICE states, tracks and
    /// channels opening, unreliable `state` messages, link errors) are
    /// dropped and counted in [`Peer::dropped_events`], so that a program
    /// that stops reading never stalls ICE, DTLS or SCTP. Messages on the
    /// reliable `chat` channel and everything from the signaling server
    /// are never dropped: they wait, and their senders are slowed down
    /// (SCTP flow control; the server's outbound queue).
    pub events: mpsc::Receiver<PeerEvent>,
    commands: mpsc::Sender<Command>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Peer {
    /// Events dropped so far because [`Peer::events`] was full.
    pub fn dropped_events(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Connects, joins, and offers a connection to everyone already there.
    pub async fn join(options: PeerOptions) -> anyhow::Result<Self> {
        let start = Instant::now();
        let engine = RtcEngine::new(&options.rtc)?;
        // Before joining, so that a bad media file fails without a trace in
        // the room.
        let local = Arc::new(LocalMedia::start(&options.media, "switchboard")?);
        let request = JoinRequest {
            room: options.room,
            name: options.name,
            token: options.token,
            role: Role::Participant,
            reconnect: options.reconnect,
            internal_key: None,
        };
        let signaling = Signaling::join(&options.url, &request, start).await?;
        let (connected_after, welcome_after) = (signaling.connected_after, signaling.welcome_after);
        let welcome = signaling.welcome.clone();
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let ctx = LinkContext {
            me: welcome.you.id.clone(),
            ice_servers: welcome.ice_servers.clone(),
            signal: signaling.sender.clone(),
            events: events_tx,
            dropped: dropped.clone(),
            local,
            start,
            record: options.record,
            sfu_room: welcome.mode == RoomMode::Sfu,
        };
        let mut links = HashMap::new();
        // In an SFU room the only connection is with the SFU.
        let sfu_room = ctx.sfu_room;
        for peer in welcome.peers.iter().filter(|p| !sfu_room || p.role == Role::Sfu) {
            // In a mesh the newcomer offers and the others wait for its
            // offer; in an SFU room the SFU makes every offer.
            let offers = makes_offers(sfu_room, false, true);
            links.insert(peer.id.clone(), Link::start(&engine, &ctx, peer.id.clone(), offers).await?);
        }
        let (commands, commands_rx) = mpsc::channel(64);
        let ice_refresh = refresh_at(welcome.ice_servers_ttl_s);
        let session = Session {
            engine,
            ctx,
            links,
            signaling,
            chat_seq: 0,
            ice_refresh,
            sfu_room,
            away: std::collections::HashSet::new(),
        };
        let task = tokio::spawn(session.run(commands_rx));
        Ok(Self { welcome, connected_after, welcome_after, events, commands, dropped, task })
    }

    /// This peer's id in its first session. A resumed session keeps it; a
    /// fresh one (after a server restart) has a new id, reported by
    /// [`PeerEvent::Rejoined`].
    pub fn id(&self) -> &PeerId {
        &self.welcome.you.id
    }

    async fn command<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> anyhow::Result<T> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| anyhow::anyhow!("peer stopped"))?;
        rx.await.context("peer stopped")
    }

    /// Sends `text` on `channel` to every connected participant; returns how
    /// many links it was sent on.
    pub async fn send(&self, channel: Channel, text: impl Into<String>) -> anyhow::Result<usize> {
        let senders = self.senders(channel).await?;
        let text = text.into();
        for (_, sender) in &senders {
            sender.send_text(text.clone()).await?;
        }
        Ok(senders.len())
    }

    /// A sender for `channel` on each current link, for sending without
    /// going through the peer's task (bulk data, load generation). Each one
    /// applies backpressure on its own channel.
    pub async fn senders(&self, channel: Channel) -> anyhow::Result<Vec<(PeerId, ChannelSender)>> {
        self.command(|reply| Command::Senders { channel, reply }).await
    }

    /// In an SFU room: stops (`paused`) or restarts forwarding of one
    /// publisher's `audio` or `video` to this peer. Sent to the SFU on the
    /// `chat` data channel.
    pub async fn set_paused(&self, publisher: &PeerId, kind: &str, paused: bool) -> anyhow::Result<()> {
        let verb = if paused { "pause" } else { "resume" };
        let text = serde_json::json!({ "type": verb, "publisher": publisher, "kind": kind }).to_string();
        let sent = self.send(Channel::Chat, text).await?;
        anyhow::ensure!(sent == 1, "not connected to an SFU");
        Ok(())
    }

    /// Sends a chat message on the signaling socket (room-wide, kept in the
    /// room's history).
    pub async fn chat(&self, text: impl Into<String>) -> anyhow::Result<()> {
        let text = text.into();
        self.command(|reply| Command::Chat { text, reply }).await?
    }

    /// One-way latency of every probe packet received so far (see
    /// [`MediaSource::Probe`]), merged over all tracks; `reset` starts
    /// counting afresh.
    pub async fn probe_latency(&self, reset: bool) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
        self.command(|reply| Command::Latency { reset, reply }).await
    }

    /// Counters of every track received so far, per remote.
    pub async fn media_stats(&self) -> anyhow::Result<Vec<TrackStats>> {
        Ok(self.report().await?.into_iter().flat_map(|r| r.tracks).collect())
    }

    /// Phases, round-trip time and received tracks of every link.
    pub async fn report(&self) -> anyhow::Result<Vec<LinkReport>> {
        self.command(|reply| Command::Report { reply }).await
    }

    /// Leaves the room and closes every connection and task.
    pub async fn leave(self) {
        let _ = self.command(|reply| Command::Leave { reply }).await;
    }
}

/// The peer's task: the one owner of the links and the signaling socket.
struct Session {
    engine: RtcEngine,
    ctx: LinkContext,
    links: HashMap<PeerId, Link>,
    signaling: Signaling,
    chat_seq: u64,
    /// When to ask for fresh ICE servers (TURN credentials expire).
    ice_refresh: Option<tokio::time::Instant>,
    /// Media goes through the room's SFU: connect to it alone.
    sfu_room: bool,
    /// Participants whose connection dropped and whose seat is held.
    away: std::collections::HashSet<PeerId>,
}

/// When to refresh credentials that live `ttl_s` seconds.
fn refresh_at(ttl_s: Option<u64>) -> Option<tokio::time::Instant> {
    ttl_s.map(|ttl| tokio::time::Instant::now() + Duration::from_secs_f64(ttl as f64 * ICE_REFRESH_AT))
}

impl Session {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut signaling_open = true;
        loop {
            tokio::select! {
                msg = self.signaling.events.recv(), if signaling_open => match msg {
                    Some(msg) => self.signal(msg).await,
                    None => {
                        // Links stay up: media and data keep flowing without
                        // the server.
                        signaling_open = false;
                        self.emit(PeerEvent::SignalingClosed).await;
                    }
                },
                Ok(()) = self.signaling.state.changed(), if signaling_open => {
                    let state = self.signaling.state.borrow_and_update().clone();
                    self.emit(PeerEvent::Signaling(state)).await;
                }
                () = sleep_until_some(self.ice_refresh), if signaling_open => {
                    self.ice_refresh = None;
                    let _ = self.ctx.signal.send(ClientMessage::IceServers(Bare::default())).await;
                }
                cmd = commands.recv() => match cmd {
                    Some(Command::Leave { reply }) => {
                        let _ = self.ctx.signal.send(ClientMessage::Leave(Bare::default())).await;
                        for (_, link) in self.links.drain() {
                            link.close().await;
                        }
                        self.signaling.finish().await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(cmd) => self.command(cmd).await,
                    None => break,
                },
            }
        }
        for (_, link) in self.links.drain() {
            link.close().await;
        }
    }

    async fn emit(&self, event: PeerEvent) {
        let _ = self.ctx.events.send(event).await;
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Senders { channel, reply } => {
                let senders =
                    self.links.values().filter_map(|l| l.sender(channel).map(|s| (l.remote().clone(), s))).collect();
                let _ = reply.send(senders);
            }
            Command::Chat { text, reply } => {
                self.chat_seq += 1;
                let client_id = ClientMsgId::new(format!("c{}", self.chat_seq)).context("client id");
                let result = match client_id {
                    Ok(client_id) => {
                        self.ctx.signal.send(ClientMessage::Chat(ChatSend { id: None, client_id, text })).await
                    }
                    Err(err) => Err(err),
                };
                let _ = reply.send(result);
            }
            Command::Report { reply } => {
                let mut reports = Vec::with_capacity(self.links.len());
                for link in self.links.values() {
                    let tracks = link
                        .received()
                        .into_iter()
                        .map(|c| {
                            let (packets, bytes, lost, jitter_us) = c.snapshot();
                            let remote = c.origin.clone().unwrap_or_else(|| link.remote().clone());
                            let keyframes = c.keyframes.load(std::sync::atomic::Ordering::Relaxed);
                            TrackStats { remote, kind: c.kind, packets, bytes, lost, jitter_us, keyframes }
                        })
                        .collect();
                    reports.push(LinkReport {
                        remote: link.remote().clone(),
                        phases: link.phases(),
                        rtt: link.rtt().await,
                        tracks,
                        selected_pair: link.selected_pair().await,
                        gathered: link.gathered(),
                    });
                }
                let _ = reply.send(reports);
            }
            Command::Latency { reset, reply } => {
                let mut merged = crate::media::latency_histogram();
                for link in self.links.values() {
                    for counters in link.received() {
                        if let Ok(mut h) = counters.latency.lock() {
                            let _ = merged.add(&*h);
                            if reset {
                                h.reset();
                            }
                        }
                    }
                }
                let _ = reply.send(merged);
            }
            Command::Leave { .. } => {}
        }
    }

    /// A welcome after a reconnection: a resumed session carries on (the
    /// events it missed follow); a fresh one has a new id, so every link is
    /// rebuilt as if joining for the first time.
    async fn rewelcomed(&mut self, welcome: Welcome) {
        for link in self.links.values() {
            link.set_ice_servers(&self.engine, &welcome.ice_servers).await;
        }
        self.ctx.ice_servers = welcome.ice_servers.clone();
        self.ice_refresh = refresh_at(welcome.ice_servers_ttl_s);
        if welcome.resumed {
            return self.emit(PeerEvent::SignalingResumed).await;
        }
        for (_, link) in self.links.drain() {
            link.close().await;
        }
        self.away.clear();
        self.ctx.me = welcome.you.id.clone();
        self.sfu_room = welcome.mode == RoomMode::Sfu;
        self.ctx.sfu_room = self.sfu_room;
        for peer in welcome.peers.iter().filter(|p| !self.sfu_room || p.role == Role::Sfu) {
            let offers = makes_offers(self.sfu_room, false, true);
            match Link::start(&self.engine, &self.ctx, peer.id.clone(), offers).await {
                Ok(link) => {
                    self.links.insert(peer.id.clone(), link);
                }
                Err(err) => {
                    let (remote, message) = (Some(peer.id.clone()), format!("{err:#}"));
                    self.emit(PeerEvent::Error { remote, message }).await;
                }
            }
        }
        self.emit(PeerEvent::Rejoined { id: welcome.you.id }).await;
    }

    async fn signal(&mut self, msg: ServerMessage) {
        let (from, input) = match msg {
            ServerMessage::Welcome(welcome) => return self.rewelcomed(*welcome).await,
            ServerMessage::PeerUpdated(updated) => {
                let peer = updated.peer;
                let changed =
                    if peer.reconnecting { self.away.insert(peer.id.clone()) } else { self.away.remove(&peer.id) };
                if changed {
                    let event = PeerEvent::PeerReconnecting { remote: peer.id, reconnecting: peer.reconnecting };
                    self.emit(event).await;
                }
                return;
            }
            ServerMessage::PeerJoined(joined) if self.sfu_room && joined.peer.role != Role::Sfu => {
                return self.emit(PeerEvent::PeerJoined(joined.peer)).await;
            }
            ServerMessage::PeerJoined(joined) => {
                let id = joined.peer.id.clone();
                let offers = makes_offers(self.sfu_room, false, false);
                match Link::start(&self.engine, &self.ctx, id.clone(), offers).await {
                    Ok(link) => {
                        self.links.insert(id, link);
                    }
                    Err(err) => self.emit(PeerEvent::Error { remote: Some(id), message: format!("{err:#}") }).await,
                }
                self.emit(PeerEvent::PeerJoined(joined.peer)).await;
                return;
            }
            ServerMessage::PeerLeft(left) => {
                self.away.remove(&left.peer_id);
                if let Some(link) = self.links.remove(&left.peer_id) {
                    link.close().await;
                }
                self.emit(PeerEvent::PeerLeft { remote: left.peer_id, reason: left.reason }).await;
                return;
            }
            ServerMessage::Offer(r) | ServerMessage::Answer(r) => (r.from, Input::Description(r.description)),
            ServerMessage::Candidate(r) => (r.from, Input::Candidate(r.candidate)),
            ServerMessage::EndOfCandidates(r) => (r.from, Input::EndOfCandidates),
            ServerMessage::Chat(chat) => return self.emit(PeerEvent::Chat(chat)).await,
            ServerMessage::IceServers(list) => {
                for link in self.links.values() {
                    link.set_ice_servers(&self.engine, &list.ice_servers).await;
                }
                self.ctx.ice_servers = list.ice_servers;
                self.ice_refresh = refresh_at(list.ice_servers_ttl_s);
                return;
            }
            ServerMessage::Error(e) => {
                return self
                    .emit(PeerEvent::Error { remote: None, message: format!("{}: {}", e.code.as_str(), e.message) })
                    .await;
            }
            _ => return,
        };
        match self.links.get(&from) {
            Some(link) => link.input(input).await,
            None => {
                self.emit(PeerEvent::Error { remote: Some(from), message: "signal from an unknown peer".into() }).await
            }
        }
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
