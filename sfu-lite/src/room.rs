//! One SFU room: the task that owns every member connection and every
//! publication, and the forwarders that copy RTP from each publisher track
//! to its subscribers.
//!
//! Ownership: the room task alone changes members and publications. A
//! forwarder reads its list of outlets from a `watch` channel the room task
//! publishes to, so forwarding never takes a lock the room holds.

use crate::forward::{Outlets, forward};
use crate::keyframe::{KEYFRAME_INTERVAL, KeyframeThrottle};
use crate::member::{Member, MemberContext};
use crate::metrics::TrackMetrics;
use crate::relay_budget::{RelayBudget, STATE_RELAY_HIGH_WATER};
use anyhow::Context;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use switchboard_client::{JoinRequest, ReconnectPolicy, Signaling};
use switchboard_protocol::{Bare, ClientMessage, PeerId, PeerInfo, Role, ServerMessage, Welcome};
use switchboard_rtc::negotiator::rules::makes_offers;
use switchboard_rtc::{Channel, Input, RtcEngine, RtcOptions};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use webrtc::data_channel::RTCDataChannel;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp_transceiver::rtp_codec::{RTCRtpCodecCapability, RTPCodecType};
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_remote::TrackRemote;

/// Events queued for the room task from callbacks and forwarders.
pub const ROOM_QUEUE: usize = 1024;

/// One publisher track: who publishes it and which kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrackKey {
    /// The publisher.
    pub publisher: PeerId,
    /// `audio` or `video`.
    pub kind: &'static str,
}

impl TrackKey {
    /// The track id subscribers see; the stream id is the publisher's id,
    /// so a client knows whose tile a track belongs to.
    pub fn track_id(&self) -> String {
        format!("{}-{}", self.kind, self.publisher)
    }
}

/// What the room task acts on besides signaling.
pub enum RoomEvent {
    /// A member publishes a track.
    Track {
        /// The publisher.
        from: PeerId,
        /// The track.
        track: Arc<TrackRemote>,
    },
    /// A subscriber asked for a keyframe of this publisher track.
    KeyframeWanted {
        /// Which track.
        key: TrackKey,
    },
    /// A member's data channel opened.
    ChannelOpen {
        /// The member.
        from: PeerId,
        /// Which channel.
        channel: Channel,
        /// The channel.
        dc: Arc<RTCDataChannel>,
    },
    /// A message on a member's data channel.
    Data {
        /// The member.
        from: PeerId,
        /// Which channel.
        channel: Channel,
        /// The text.
        text: String,
    },
    /// A member's negotiation failed.
    Problem {
        /// The member.
        from: PeerId,
        /// What happened.
        message: String,
    },
}

impl std::fmt::Debug for RoomEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Track { from, .. } => write!(f, "Track from {from}"),
            Self::KeyframeWanted { key } => write!(f, "KeyframeWanted {}", key.track_id()),
            Self::ChannelOpen { from, channel, .. } => write!(f, "ChannelOpen {} from {from}", channel.label()),
            Self::Data { from, channel, .. } => write!(f, "Data on {} from {from}", channel.label()),
            Self::Problem { from, message } => write!(f, "Problem with {from}: {message}"),
        }
    }
}

/// How to join a room as its SFU. Its `Debug` leaves the secrets out.
#[derive(Clone)]
pub struct SfuOptions {
    /// Signaling URL.
    pub url: String,
    /// The room.
    pub room: String,
    /// A token that allows joining as the room's SFU.
    pub token: String,
    /// WebRTC settings.
    pub rtc: RtcOptions,
    /// The key a server gives its built-in SFU (see
    /// `switchboard_client::JoinRequest::internal_key`); `None` for an SFU
    /// process started against any server.
    pub internal_key: Option<String>,
}

impl std::fmt::Debug for SfuOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SfuOptions").field("url", &self.url).field("room", &self.room).finish_non_exhaustive()
    }
}

/// A publisher track and its subscribers.
struct Publication {
    codec: RTCRtpCodecCapability,
    ssrc: u32,
    /// The publisher's connection, for keyframe requests.
    publisher: Weak<RTCPeerConnection>,
    subscribers: HashMap<PeerId, Arc<TrackLocalStaticRTP>>,
    /// Subscribers who paused this track: nothing is forwarded to them.
    paused: std::collections::HashSet<PeerId>,
    outlets: watch::Sender<Outlets>,
    forwarder: JoinHandle<()>,
    metrics: TrackMetrics,
}

/// Joins `options.room` as its SFU and forwards media until the last
/// participant leaves or the signaling connection closes.
pub async fn run_room(options: SfuOptions) -> anyhow::Result<()> {
    let request = JoinRequest {
        room: options.room.clone(),
        name: "SFU".into(),
        token: Some(options.token.clone()),
        role: Role::Sfu,
        // A dropped signaling socket is resumed like any client's: the
        // members' connections and the media they carry stay up meanwhile.
        reconnect: Some(ReconnectPolicy::default()),
        internal_key: options.internal_key.clone(),
    };
    let mut signaling = Signaling::join(&options.url, &request, std::time::Instant::now()).await?;
    let engine = RtcEngine::new(&options.rtc)?;
    let (events_tx, mut events) = mpsc::channel(ROOM_QUEUE);
    let welcome = signaling.welcome.clone();
    let ctx = MemberContext {
        me: welcome.you.id.clone(),
        ice_servers: welcome.ice_servers.clone(),
        signal: signaling.sender.clone(),
        events: events_tx,
    };
    let mut room = Room {
        name: options.room.clone(),
        engine,
        ctx,
        members: HashMap::new(),
        publications: HashMap::new(),
        throttle: KeyframeThrottle::new(KEYFRAME_INTERVAL),
        relay_budget: RelayBudget::default(),
    };
    info!(room = %room.name, "SFU joined");
    room.welcomed(&welcome).await;
    loop {
        tokio::select! {
            msg = signaling.events.recv() => match msg {
                Some(msg) => room.signal(msg).await,
                None => break,
            },
            Some(event) = events.recv() => room.event(event).await,
        }
        if room.members.is_empty() {
            break;
        }
    }
    info!(room = %room.name, "SFU leaving");
    let _ = room.ctx.signal.send(ClientMessage::Leave(Bare::default())).await;
    room.close().await;
    Ok(())
}

struct Room {
    name: String,
    engine: RtcEngine,
    ctx: MemberContext,
    members: HashMap<PeerId, Member>,
    publications: HashMap<TrackKey, Publication>,
    throttle: KeyframeThrottle<TrackKey>,
    relay_budget: RelayBudget<PeerId>,
}

impl Room {
    /// The SFU is the newcomer: it offers to everyone already there.
    async fn welcomed(&mut self, welcome: &Welcome) {
        for peer in welcome.peers.iter().filter(|p| p.role == Role::Participant) {
            self.add_member(peer, makes_offers(true, true, true)).await;
        }
    }

    async fn signal(&mut self, msg: ServerMessage) {
        let (from, input) = match msg {
            // A resumed session: the missed events follow, nothing to redo.
            ServerMessage::Welcome(w) if w.resumed => return,
            ServerMessage::Welcome(w) => {
                // Joined afresh under a new id: every connection was made
                // with the old one. Start over.
                info!(room = %self.name, "SFU rejoined afresh: reconnecting every member");
                let ids: Vec<PeerId> = self.members.keys().cloned().collect();
                for id in ids {
                    self.remove_member(&id).await;
                }
                self.ctx.me = w.you.id.clone();
                self.ctx.ice_servers = w.ice_servers.clone();
                return self.welcomed(&w).await;
            }
            ServerMessage::PeerJoined(joined) if joined.peer.role == Role::Participant => {
                // The SFU makes every offer in its room, to newcomers too:
                // one offerer per connection, so offers never collide.
                return self.add_member(&joined.peer, makes_offers(true, true, false)).await;
            }
            ServerMessage::PeerLeft(left) => return self.remove_member(&left.peer_id).await,
            ServerMessage::Offer(r) | ServerMessage::Answer(r) => (r.from, Input::Description(r.description)),
            ServerMessage::Candidate(r) => (r.from, Input::Candidate(r.candidate)),
            ServerMessage::IceServers(list) => {
                self.ctx.ice_servers = list.ice_servers;
                return;
            }
            ServerMessage::Error(e) => return warn!(room = %self.name, code = e.code.as_str(), "signaling error"),
            _ => return,
        };
        if let Some(member) = self.members.get(&from) {
            member.input(input);
        }
    }

    async fn event(&mut self, event: RoomEvent) {
        match event {
            RoomEvent::Track { from, track } => self.publish(from, track).await,
            RoomEvent::KeyframeWanted { key } => self.request_keyframe(&key),
            RoomEvent::ChannelOpen { from, channel, dc } => {
                if let Some(member) = self.members.get_mut(&from) {
                    member.channels.insert(channel.label(), dc);
                }
            }
            RoomEvent::Data { from, channel: Channel::State, text } => {
                // The unreliable `state` channel is relayed to the room,
                // wrapped so receivers know whose state it is, within each
                // sender's budget and each receiver's buffer.
                if !self.relay_budget.allow(&from, std::time::Instant::now()) {
                    return debug!(room = %self.name, peer = %from, "state relay over budget: dropped");
                }
                let wrapped = serde_json::json!({ "from": from, "text": text }).to_string();
                for member in self.members.values().filter(|m| m.id != from) {
                    member.send_unreliable(Channel::State, &wrapped, STATE_RELAY_HIGH_WATER).await;
                }
            }
            RoomEvent::Data { from, channel: Channel::Chat, text } => self.control(&from, &text),
            RoomEvent::Problem { from, message } => warn!(room = %self.name, peer = %from, %message, "negotiation"),
        }
    }

    async fn add_member(&mut self, info: &PeerInfo, offerer: bool) {
        let mut member = match Member::start(&self.engine, &self.ctx, info.id.clone(), offerer).await {
            Ok(m) => m,
            Err(err) => return warn!(room = %self.name, "cannot connect a member: {err:#}"),
        };
        // Everything already published reaches the newcomer too.
        let keys: Vec<TrackKey> = self.publications.keys().cloned().collect();
        for key in &keys {
            if let Err(err) = self.subscribe(&mut member, key).await {
                warn!(room = %self.name, "cannot forward a track: {err:#}");
            }
        }
        if !keys.is_empty() {
            member.renegotiate();
        }
        // A newcomer's decoders start from a keyframe: the forwarder asks
        // for one as soon as each outlet is bound (see `forward`).
        debug!(room = %self.name, peer = %member.id, "member connected");
        self.members.insert(member.id.clone(), member);
    }

    async fn remove_member(&mut self, id: &PeerId) {
        let Some(member) = self.members.remove(id) else { return };
        self.relay_budget.forget(id);
        member.close().await;
        // Its tracks go away from everyone else.
        let gone: Vec<TrackKey> = self.publications.keys().filter(|k| &k.publisher == id).cloned().collect();
        for key in &gone {
            if let Some(publication) = self.publications.remove(key) {
                publication.forwarder.abort();
            }
            self.throttle.forget(key);
        }
        let mut touched = Vec::new();
        for member in self.members.values_mut() {
            let mut changed = false;
            for key in &gone {
                changed |= member.remove_outlet(key).await;
            }
            if changed {
                touched.push(member.id.clone());
            }
        }
        // And it no longer subscribes to anything.
        for publication in self.publications.values_mut() {
            publication.paused.remove(id);
            if publication.subscribers.remove(id).is_some() {
                publish_outlets(publication);
            }
        }
        for id in touched {
            if let Some(member) = self.members.get(&id) {
                member.renegotiate();
            }
        }
    }

    /// A member publishes a track: forward it to everyone else.
    async fn publish(&mut self, from: PeerId, track: Arc<TrackRemote>) {
        let Some(publisher) = self.members.get(&from).map(Member::connection) else { return };
        let kind = if track.kind() == RTPCodecType::Video { "video" } else { "audio" };
        let key = TrackKey { publisher: from.clone(), kind };
        let metrics = TrackMetrics::new(&self.name, key.track_id());
        let (outlets, watcher) = watch::channel(Arc::new(Vec::new()));
        let forwarder =
            tokio::spawn(forward(track.clone(), watcher, metrics.clone(), key.clone(), self.ctx.events.clone()));
        let publication = Publication {
            codec: track.codec().capability,
            ssrc: track.ssrc(),
            publisher,
            subscribers: HashMap::new(),
            paused: std::collections::HashSet::new(),
            outlets,
            forwarder,
            metrics,
        };
        if let Some(old) = self.publications.insert(key.clone(), publication) {
            old.forwarder.abort();
        }
        let others: Vec<PeerId> = self.members.keys().filter(|id| **id != from).cloned().collect();
        for id in others {
            let Some(mut member) = self.members.remove(&id) else { continue };
            match self.subscribe(&mut member, &key).await {
                Ok(()) => member.renegotiate(),
                Err(err) => warn!(room = %self.name, "cannot forward a track: {err:#}"),
            }
            self.members.insert(id, member);
        }
        info!(room = %self.name, track = %key.track_id(), "publishing");
    }

    /// Adds an outlet for `key` to `member` (renegotiation is the caller's).
    async fn subscribe(&mut self, member: &mut Member, key: &TrackKey) -> anyhow::Result<()> {
        let publication = self.publications.get_mut(key).context("no such publication")?;
        let outlet =
            Arc::new(TrackLocalStaticRTP::new(publication.codec.clone(), key.track_id(), key.publisher.to_string()));
        member.add_outlet(key.clone(), outlet.clone()).await?;
        publication.subscribers.insert(member.id.clone(), outlet);
        publish_outlets(publication);
        Ok(())
    }

    /// A subscriber's control message on its `chat` channel to the SFU:
    /// `{"type":"pause"|"resume","publisher":"<peer id>","kind":"audio"|"video"}`.
    fn control(&mut self, from: &PeerId, text: &str) {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(text) else { return };
        let (Some(verb), Some(publisher), Some(kind)) =
            (msg["type"].as_str(), msg["publisher"].as_str(), msg["kind"].as_str())
        else {
            return;
        };
        let Ok(publisher) = PeerId::new(publisher) else { return };
        let kind = if kind == "video" { "video" } else { "audio" };
        let key = TrackKey { publisher, kind };
        let Some(publication) = self.publications.get_mut(&key) else { return };
        let changed = match verb {
            "pause" => publication.paused.insert(from.clone()),
            "resume" => publication.paused.remove(from),
            _ => false,
        };
        if changed {
            publish_outlets(publication);
            debug!(room = %self.name, subscriber = %from, track = %key.track_id(), verb, "subscription");
            if verb == "resume" {
                // The subscriber's decoder needs a fresh start.
                self.request_keyframe(&key);
            }
        }
    }

    /// Asks the publisher for a keyframe, at most once per interval.
    fn request_keyframe(&mut self, key: &TrackKey) {
        if key.kind != "video" || !self.throttle.allow(key, std::time::Instant::now()) {
            return;
        }
        let Some(publication) = self.publications.get(key) else { return };
        publication.metrics.keyframe_requested();
        let (pc, ssrc) = (publication.publisher.clone(), publication.ssrc);
        tokio::spawn(async move {
            if let Some(pc) = pc.upgrade() {
                let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc: ssrc };
                let _ = pc.write_rtcp(&[Box::new(pli)]).await;
            }
        });
    }

    async fn close(self) {
        for publication in self.publications.into_values() {
            publication.forwarder.abort();
        }
        for member in self.members.into_values() {
            member.close().await;
        }
    }
}

/// Tells the forwarder the new list of outlets.
fn publish_outlets(publication: &Publication) {
    let list: Vec<Arc<TrackLocalStaticRTP>> = publication
        .subscribers
        .iter()
        .filter(|(id, _)| !publication.paused.contains(*id))
        .map(|(_, outlet)| outlet.clone())
        .collect();
    publication.metrics.set_subscribers(list.len());
    publication.outlets.send_replace(Arc::new(list));
}
