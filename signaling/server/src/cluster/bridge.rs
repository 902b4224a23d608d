//! The bridge (decision 0018): a connection on this node whose room lives
//! on another node talks to that node's hub through Redis pub/sub, and the
//! owner talks back. Each node listens on one channel
//! ([`super::keys::bridge`]); one publisher task per node keeps its frames
//! in order.
//!
//! - **Client side**: the connection task hands its hub events to
//!   [`Bridge::to_owner`]; frames for the client come back and go into the
//!   connection's own queue, exactly as a local shard's would.
//! - **Owner side**: a bridged connection is a connection like any other to
//!   the hub shard (its own `ConnId` and queue); a pump task per connection
//!   sends what the shard queues for it back to the client's node.
//!
//! Pub/sub may lose a frame (a Redis reconnect). Frames are numbered per
//! connection and direction, and a gap, a failed publish or a lost
//! subscription ends the connections concerned as *dropped*: the client
//! resumes and the owner's event log replays what it missed. A lost frame
//! costs a resume, never a message.

use super::wire::Frame;
use super::{Cluster, REDIS_TIMEOUT, keys};
use crate::hub_task::{CloseSpec, ConnHandle, HubEvent, Kill, Outbound};
use crate::outbox::{Outbox, Signal};
use crate::router::Target;
use crate::state::AppState;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use switchboard_core::ConnId;
use switchboard_protocol::{
    ClientMessage, ErrorCode, ErrorMessage, LeaveReason, ServerKind, ServerMessage, parse_client,
};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

/// Frames queued for the publisher before senders wait.
pub const PUBLISH_QUEUE: usize = 16 * 1024;
/// Frames published in one pipeline.
pub const PUBLISH_BATCH: usize = 256;
/// Largest frame accepted from Redis: a client message is at most
/// `4 × max_message_bytes` and is re-serialized with a small envelope, so
/// anything far larger is not ours.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// How a connection ends when the bridge lost track of it: as a drop the
/// client recovers from by resuming.
const RESET: CloseSpec = CloseSpec { code: 1012, reason: "bridge_reset" };

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A frame to publish, and whose connection it was for: a frame nobody
/// received (the other node is not listening) ends that connection.
#[derive(Debug)]
pub struct Outgoing {
    channel: String,
    payload: String,
    lost: Lost,
}

/// The connection a frame was for.
#[derive(Debug, Clone)]
enum Lost {
    /// A connection of this node (client side).
    Client(ConnId),
    /// A hosted connection of a node, by its id there (owner side).
    Hosted(Arc<str>, u64),
}

/// A connection of this node whose room lives on `owner`.
#[derive(Debug)]
struct ClientSide {
    owner: Arc<str>,
    handle: ConnHandle,
    /// Frames sent to the owner.
    sent: u64,
    /// Frames heard from the owner.
    heard: u64,
}

/// A connection of another node served by a hub shard here.
#[derive(Debug)]
struct Hosted {
    conn: ConnId,
    handle: ConnHandle,
    /// The shard of its room, once its join came.
    shard: Option<usize>,
    opened: Instant,
    /// When it came here (a node is forgotten only by connections older
    /// than a registry read).
    since: Instant,
    /// When its node last sent anything for it: a connection its node
    /// stopped speaking for (the node lost track of it) is ended after the
    /// ping timeout, as a silent client's is.
    last_heard: Instant,
    heard: u64,
    pump: JoinHandle<()>,
}

/// Both sides of this node's bridge.
#[derive(Debug)]
pub struct Bridge {
    node: Arc<str>,
    publish: mpsc::Sender<Outgoing>,
    clients: Mutex<HashMap<ConnId, ClientSide>>,
    hosted: Mutex<HashMap<(Arc<str>, u64), Hosted>>,
}

impl Bridge {
    /// A bridge whose frames go to `publish` (see [`run_publisher`]).
    pub fn new(node: Arc<str>, publish: mpsc::Sender<Outgoing>) -> Self {
        Self { node, publish, clients: Mutex::default(), hosted: Mutex::default() }
    }

    /// Bridged connections (client side, owner side).
    pub fn counts(&self) -> (usize, usize) {
        (lock(&self.clients).len(), lock(&self.hosted).len())
    }

    async fn send(&self, node: &str, frame: &Frame, lost: Lost) -> Result<(), ()> {
        let out = Outgoing { channel: keys::bridge(node), payload: frame.to_json(), lost };
        self.publish.send(out).await.map_err(drop)
    }

    /// Best effort, for a connection this node no longer knows: tell the
    /// other side it is over.
    fn tell(&self, node: &str, frame: &Frame) {
        let out = Outgoing { channel: keys::bridge(node), payload: frame.to_json(), lost: Lost::Client(ConnId(0)) };
        let _ = self.publish.try_send(out);
    }

    /// Client side: hands one of a connection's hub events to the owner.
    pub async fn to_owner(&self, owner: &Arc<str>, event: HubEvent) -> Result<(), ()> {
        let from = self.node.to_string();
        let (conn, frame) = {
            let mut clients = lock(&self.clients);
            let next = |side: &mut ClientSide| {
                side.sent += 1;
                side.sent
            };
            match event {
                HubEvent::Open { conn, handle, opened } => {
                    let side = ClientSide { owner: owner.clone(), handle, sent: 1, heard: 0 };
                    clients.insert(conn, side);
                    let age_ms = u64::try_from(opened.elapsed().as_millis()).unwrap_or(u64::MAX);
                    (conn, Frame::Open { from, c: conn.0, s: 1, age_ms })
                }
                HubEvent::Message { conn, msg, .. } => {
                    let Some(side) = clients.get_mut(&conn) else { return Ok(()) };
                    let m = serde_json::to_string(&msg).map_err(drop)?;
                    (conn, Frame::Msg { from, c: conn.0, s: next(side), m })
                }
                HubEvent::Alive { conn } => {
                    let Some(side) = clients.get_mut(&conn) else { return Ok(()) };
                    (conn, Frame::Alive { from, c: conn.0, s: next(side) })
                }
                HubEvent::Closed { conn, reason } => {
                    let Some(mut side) = clients.remove(&conn) else { return Ok(()) };
                    // Cut off here as a slow consumer is, to the room, a
                    // drop: its seat is held, as a local shard holds it.
                    let reason = if reason == LeaveReason::SlowConsumer { LeaveReason::Disconnected } else { reason };
                    (conn, Frame::Closed { from, c: conn.0, s: next(&mut side), reason })
                }
                HubEvent::MovedOut { conn } => {
                    let Some(mut side) = clients.remove(&conn) else { return Ok(()) };
                    (conn, Frame::MovedOut { from, c: conn.0, s: next(&mut side) })
                }
                HubEvent::Shutdown(_)
                | HubEvent::HandOver { .. }
                | HubEvent::Import { .. }
                | HubEvent::Evict { .. }
                | HubEvent::ChatStored { .. }
                | HubEvent::SeedChat { .. } => return Ok(()),
            }
        };
        let sent = self.send(owner, &frame, Lost::Client(conn)).await;
        if sent.is_err() {
            lock(&self.clients).remove(&conn);
        }
        sent
    }

    /// Handles one frame from Redis. Never waits on a hub shard or on
    /// Redis: the subscriber serves every bridged connection of the node, so
    /// a flooded shard or a slow lease must not hold the others up. A frame
    /// for a shard whose queue is full resets its connection (the client
    /// resumes; nothing is lost), and a join that must adopt a lease is
    /// finished by a task of its own.
    pub async fn receive(&self, state: &Arc<AppState>, cluster: &Arc<Cluster>, payload: &str) {
        if payload.len() > MAX_FRAME_BYTES {
            warn!(bytes = payload.len(), "bridge frame too large: dropped");
            return;
        }
        let frame = match serde_json::from_str::<Frame>(payload) {
            Ok(frame) => frame,
            Err(err) => {
                warn!("bridge frame unreadable: {err}");
                return;
            }
        };
        match frame {
            Frame::Open { from, c, s, age_ms } => self.open(state, &from, c, s, age_ms),
            Frame::Msg { from, c, s, m } => self.message(state, cluster, &from, c, s, &m),
            Frame::Alive { from, c, s } => {
                if let Some(at) = self.hosted_step(&from, c, s) {
                    // A lost answer to a probe lets the probe time out:
                    // the resume then goes ahead.
                    let _ = state.shards.get(at.1).try_send(HubEvent::Alive { conn: at.0 });
                }
            }
            Frame::Closed { from, c, s: _, reason } => {
                // Whatever came before, the connection is over.
                let removed = lock(&self.hosted).remove(&(Arc::from(from.as_str()), c));
                if let Some(hosted) = removed {
                    hosted.handle.outbox.close();
                    hosted.pump.abort();
                    if let Some(shard) = hosted.shard {
                        deliver_later(state, shard, HubEvent::Closed { conn: hosted.conn, reason });
                    }
                }
            }
            Frame::MovedOut { from, c, s: _ } => {
                let removed = lock(&self.hosted).remove(&(Arc::from(from.as_str()), c));
                if let Some(hosted) = removed {
                    hosted.handle.outbox.close();
                    hosted.pump.abort();
                    if let Some(shard) = hosted.shard {
                        deliver_later(state, shard, HubEvent::MovedOut { conn: hosted.conn });
                    }
                }
            }
            Frame::Text { o, c, s, k, text, u } => self.to_client(&o, c, s, |handle| {
                let kind = ServerKind::ALL.get(usize::from(k)).copied().unwrap_or(ServerKind::Error);
                let frame = Outbound::Frame { text: text.into(), kind, received: None };
                let pushed = if u { handle.outbox.push_unbudgeted(frame) } else { handle.outbox.try_push(frame) };
                if pushed == Err(crate::outbox::PushError::Full) {
                    handle.kill.fire(CloseSpec::SLOW_CONSUMER);
                }
            }),
            Frame::Close { o, c, s, code, reason } => self.to_client(&o, c, s, |handle| {
                let _ =
                    handle.outbox.push_unbudgeted(Outbound::Close(CloseSpec { code, reason: static_reason(&reason) }));
            }),
            Frame::Probe { o, c, s } => self.to_client(&o, c, s, |handle| handle.probe.notify_one()),
            Frame::Signal { o, c, s, joined } => self.to_client(&o, c, s, |handle| {
                handle.outbox.signal(joined.map_or(Signal::MovedOut, Signal::JoinAnswered));
            }),
            Frame::Kill { o, c, s, code, reason } => {
                self.to_client(&o, c, s, |handle| handle.kill.fire(CloseSpec { code, reason: static_reason(&reason) }));
            }
        }
    }

    /// Client side: a frame from the owner for connection `c`, in order or
    /// the connection is reset.
    fn to_client(&self, owner: &str, c: u64, s: u64, apply: impl FnOnce(&ConnHandle)) {
        let mut clients = lock(&self.clients);
        let Some(side) = clients.get_mut(&ConnId(c)) else {
            // This node lost track of it (a reset): the owner must not
            // hold it online.
            drop(clients);
            let from = self.node.to_string();
            self.tell(owner, &Frame::Closed { from, c, s: 0, reason: LeaveReason::Disconnected });
            return;
        };
        if s != side.heard + 1 {
            debug!(conn = c, expected = side.heard + 1, got = s, "bridge gap: connection reset");
            side.handle.kill.fire(RESET);
            return;
        }
        side.heard = s;
        apply(&side.handle);
    }

    /// Owner side: the next frame of a hosted connection, in order: its
    /// id here and shard. A gap drops the connection.
    fn hosted_step(&self, from: &str, c: u64, s: u64) -> Option<(ConnId, usize)> {
        let mut hosted = lock(&self.hosted);
        let key = (Arc::from(from), c);
        let Some(entry) = hosted.get_mut(&key) else {
            drop(hosted);
            self.forgotten(from, c);
            return None;
        };
        entry.last_heard = Instant::now();
        if s != entry.heard + 1 {
            debug!(conn = c, "bridge gap from a client's node: connection reset");
            entry.handle.kill.fire(RESET);
            return None;
        }
        entry.heard = s;
        Some((entry.conn, entry.shard?))
    }

    /// Owner side: a connection moved here to join a room.
    fn open(&self, state: &AppState, from: &str, c: u64, s: u64, age_ms: u64) {
        let conn = ConnId(state.next_conn.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let outbox = Arc::new(Outbox::new(state.limits.outbound_queue, state.limits.outbound_queue_bytes));
        let handle = ConnHandle { outbox, probe: Arc::new(Notify::new()), kill: Arc::new(Kill::default()) };
        let from: Arc<str> = Arc::from(from);
        let pump = tokio::spawn(pump(self.publish.clone(), self.node.to_string(), from.clone(), c, handle.clone()));
        let opened = Instant::now().checked_sub(Duration::from_millis(age_ms)).unwrap_or_else(Instant::now);
        let now = Instant::now();
        let hosted = Hosted { conn, handle, shard: None, opened, since: now, last_heard: now, heard: s, pump };
        let old = lock(&self.hosted).insert((from, c), hosted);
        if let Some(old) = old {
            // Connection ids are unique per node across restarts (they
            // start from the start time), so this is a stale entry.
            old.handle.outbox.close();
            old.pump.abort();
        }
    }

    /// Owner side: a client message. The first (a join) places the
    /// connection in its room's shard, once this node holds the room.
    fn message(&self, state: &Arc<AppState>, cluster: &Arc<Cluster>, from: &str, c: u64, s: u64, m: &str) {
        let key = (Arc::from(from), c);
        let msg = parse_client(m);
        let mut hosted = lock(&self.hosted);
        let Some(entry) = hosted.get_mut(&key) else {
            drop(hosted);
            self.forgotten(from, c);
            return;
        };
        if s != entry.heard + 1 {
            entry.handle.kill.fire(RESET);
            return;
        }
        entry.heard = s;
        entry.last_heard = Instant::now();
        let msg = match msg {
            Ok(msg) => msg,
            Err(err) => {
                // Another version of the node on the other side: end the
                // connection rather than leave it waiting.
                warn!("bridge message unreadable: connection reset ({:?})", err.code);
                entry.handle.kill.fire(RESET);
                return;
            }
        };
        if let Some(shard) = entry.shard {
            let event = HubEvent::Message { conn: entry.conn, msg, received: Instant::now() };
            if state.shards.get(shard).try_send(event).is_err() {
                debug!(conn = c, "hub shard queue full: bridged connection reset");
                entry.handle.kill.fire(RESET);
            }
            return;
        }
        let ClientMessage::Join(join) = msg else {
            entry.handle.kill.fire(RESET);
            return;
        };
        drop(hosted);
        // The client's node placed the room here; hold it before the room
        // is made (or refuse: it may be between owners). That may take
        // Redis round trips: a task of its own.
        let (state, cluster) = (state.clone(), cluster.clone());
        tokio::spawn(async move {
            let held = cluster.leases.hold_here(&state, &cluster, &join.room).await;
            cluster.bridge.place_join(&state, &key, join, held);
        });
    }

    /// Owner side: finishes a bridged join once the room is held here (or
    /// refuses it). Under the lock, so a `Closed` for the connection is
    /// handled entirely before or after.
    fn place_join(
        &self,
        state: &AppState,
        key: &(Arc<str>, u64),
        join: switchboard_protocol::Join,
        held: Result<(), String>,
    ) {
        let mut hosted = lock(&self.hosted);
        let Some(entry) = hosted.get_mut(key) else { return };
        let refuse = |entry: &Hosted, why: String| {
            let error = ErrorMessage::recoverable(join.id.clone(), ErrorCode::Unavailable, why);
            let text = ServerMessage::Error(error).to_json();
            let frame = Outbound::Frame { text: text.into(), kind: ServerKind::Error, received: None };
            let _ = entry.handle.outbox.try_push(frame);
            entry.handle.outbox.signal(Signal::JoinAnswered(false));
        };
        if let Err(why) = held {
            return refuse(entry, why);
        }
        let shard = state.shards.place(&join.room);
        let inbox = state.shards.get(shard);
        let open = HubEvent::Open { conn: entry.conn, handle: entry.handle.clone(), opened: entry.opened };
        if inbox.try_send(open).is_err() {
            return refuse(entry, "this server is busy: join again".into());
        }
        entry.shard = Some(shard);
        let message = HubEvent::Message { conn: entry.conn, msg: ClientMessage::Join(join), received: Instant::now() };
        if inbox.try_send(message).is_err() {
            // Opened there but the join is lost: end it as dropped.
            entry.handle.kill.fire(RESET);
        }
    }

    /// Client side, when this node drains: every connection of this node
    /// whose room lives on another node is told `notice` and closed as
    /// going away. Its owner holds the seat (a drop), and the client
    /// resumes through another node. Returns how many were told.
    pub fn going_away_all(&self, notice: &switchboard_protocol::GoingAway) -> usize {
        let text = ServerMessage::GoingAway(notice.clone()).to_json();
        let clients = lock(&self.clients);
        for side in clients.values() {
            let frame = Outbound::Frame { text: text.clone().into(), kind: ServerKind::GoingAway, received: None };
            let _ = side.handle.outbox.push_unbudgeted(frame);
            let _ = side.handle.outbox.push_unbudgeted(Outbound::Close(CloseSpec::GOING_AWAY));
        }
        clients.len()
    }

    /// Every bridged connection whose frames may have been lost (the
    /// subscription or a publish failed) ends as dropped: clients resume.
    pub async fn reset_all(&self, state: &AppState) {
        let clients: Vec<(ConnId, ClientSide)> = lock(&self.clients).drain().collect();
        for (conn, side) in clients {
            side.handle.kill.fire(RESET);
            let from = self.node.to_string();
            self.tell(&side.owner, &Frame::Closed { from, c: conn.0, s: 0, reason: LeaveReason::Disconnected });
        }
        let hosted: Vec<((Arc<str>, u64), Hosted)> = lock(&self.hosted).drain().collect();
        for ((node, c), h) in hosted {
            let o = self.node.to_string();
            self.tell(&node, &Frame::Kill { o, c, s: 0, code: RESET.code, reason: RESET.reason.into() });
            h.handle.outbox.close();
            h.pump.abort();
            if let Some(shard) = h.shard {
                deliver_later(state, shard, HubEvent::Closed { conn: h.conn, reason: LeaveReason::Disconnected });
            }
        }
    }

    /// A frame came for a hosted connection this node does not know (it
    /// was reset here): tell its node to end it.
    fn forgotten(&self, from: &str, c: u64) {
        let o = self.node.to_string();
        self.tell(from, &Frame::Kill { o, c, s: 0, code: RESET.code, reason: RESET.reason.into() });
    }

    /// A frame nobody received: the node it went to is not listening
    /// (stopped, or subscribing again), so the connection it was for ends
    /// as dropped.
    async fn lost(&self, state: &AppState, lost: Lost) {
        match lost {
            Lost::Client(conn) => {
                let removed = lock(&self.clients).remove(&conn);
                if let Some(side) = removed {
                    side.handle.kill.fire(RESET);
                }
            }
            Lost::Hosted(node, c) => {
                let removed = lock(&self.hosted).remove(&(node, c));
                if let Some(h) = removed {
                    h.handle.outbox.close();
                    h.pump.abort();
                    if let Some(shard) = h.shard {
                        deliver_later(
                            state,
                            shard,
                            HubEvent::Closed { conn: h.conn, reason: LeaveReason::Disconnected },
                        );
                    }
                }
            }
        }
    }

    /// Connections to or from nodes that are no longer alive end: a client
    /// whose owner died reconnects (and joins the room wherever it is
    /// placed next); a hosted connection whose node died is a drop (its
    /// client resumes through another node).
    pub async fn forget_nodes_not_in(&self, state: &AppState, alive: &[String]) {
        let is_alive = |node: &str| alive.iter().any(|a| a == node);
        let orphans: Vec<ConnId> =
            lock(&self.clients).iter().filter(|(_, s)| !is_alive(&s.owner)).map(|(c, _)| *c).collect();
        for conn in orphans {
            let removed = lock(&self.clients).remove(&conn);
            if let Some(side) = removed {
                side.handle.kill.fire(CloseSpec { code: 1012, reason: "going_away" });
            }
        }
        let silent = state.limits.ping_timeout;
        let dead: Vec<(Arc<str>, u64)> = lock(&self.hosted)
            .iter()
            .filter(|((node, _), h)| {
                (!is_alive(node) && h.since.elapsed() > super::NODE_TTL) || h.last_heard.elapsed() > silent
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in dead {
            let removed = lock(&self.hosted).remove(&key);
            let Some(h) = removed else { continue };
            h.handle.outbox.close();
            h.pump.abort();
            if let Some(shard) = h.shard {
                deliver_later(state, shard, HubEvent::Closed { conn: h.conn, reason: LeaveReason::Disconnected });
            }
        }
    }
}

/// What the pump does next.
enum Next {
    Item((Outbound, bool)),
    Kill(CloseSpec),
    Probe,
    Signal(Signal),
}

/// Owner side: one hosted connection's way back to its node.
struct Pump {
    publish: mpsc::Sender<Outgoing>,
    /// This node (the owner).
    o: String,
    channel: String,
    lost: Lost,
    c: u64,
    s: u64,
}

impl Pump {
    /// Publishes the next frame; false when the bridge is gone or the frame
    /// was the last.
    async fn send(&mut self, build: impl FnOnce(String, u64, u64) -> (Frame, bool)) -> bool {
        self.s += 1;
        let (frame, last) = build(self.o.clone(), self.c, self.s);
        let out = Outgoing { channel: self.channel.clone(), payload: frame.to_json(), lost: self.lost.clone() };
        self.publish.send(out).await.is_ok() && !last
    }

    async fn item(&mut self, (item, unbudgeted): (Outbound, bool)) -> bool {
        self.send(|o, c, s| match item {
            Outbound::Frame { text, kind, .. } => {
                let k = u8::try_from(kind.index()).unwrap_or(u8::MAX);
                (Frame::Text { o, c, s, k, text: text.to_string(), u: unbudgeted }, false)
            }
            Outbound::Close(spec) => (Frame::Close { o, c, s, code: spec.code, reason: spec.reason.into() }, true),
        })
        .await
    }
}

/// Owner side: sends what the shard queues for one hosted connection back
/// to its node, numbered.
async fn pump(publish: mpsc::Sender<Outgoing>, owner: String, node: Arc<str>, c: u64, handle: ConnHandle) {
    let mut pump = Pump { publish, o: owner, channel: keys::bridge(&node), lost: Lost::Hosted(node, c), c, s: 0 };
    loop {
        // Biased: a kill goes first, then everything queued, then a probe
        // or a signal.
        let next = tokio::select! {
            biased;
            spec = handle.kill.fired() => Next::Kill(spec),
            item = handle.outbox.pop_marked() => Next::Item(item),
            () = handle.probe.notified() => Next::Probe,
            signal = handle.outbox.next_signal() => Next::Signal(signal),
        };
        let go_on = match next {
            Next::Item(item) => pump.item(item).await,
            Next::Kill(spec) => {
                let reason = spec.reason.to_owned();
                pump.send(|o, c, s| (Frame::Kill { o, c, s, code: spec.code, reason }, true)).await
            }
            Next::Probe => pump.send(|o, c, s| (Frame::Probe { o, c, s }, false)).await,
            Next::Signal(signal) => {
                // The shard queues a join's answer before its signal: what
                // is queued now goes first (the signal moves the connection
                // on, and a frame after it would find nobody).
                let mut go_on = true;
                while go_on && let Some(item) = handle.outbox.try_pop_marked() {
                    go_on = pump.item(item).await;
                }
                let joined = match signal {
                    Signal::JoinAnswered(joined) => Some(joined),
                    Signal::MovedOut => None,
                };
                go_on && pump.send(|o, c, s| (Frame::Signal { o, c, s, joined }, false)).await
            }
        };
        if !go_on {
            return;
        }
    }
}

/// A close reason from the wire as the `'static` text a close frame takes.
fn static_reason(reason: &str) -> &'static str {
    let known = ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .chain(LeaveReason::ALL.iter().map(|r| r.as_str()))
        .chain(["going_away", "bridge_reset"]);
    for name in known {
        if name == reason {
            return name;
        }
    }
    "closed"
}

/// Publishes queued frames in order, a pipeline at a time. A frame that
/// reached nobody ends its connection; a failed publish may have lost
/// frames, so every bridged connection is reset.
pub async fn run_publisher(mut frames: mpsc::Receiver<Outgoing>, state: Arc<AppState>, cluster: Arc<Cluster>) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    while frames.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
        let Some(mut conn) = cluster.redis() else {
            batch.clear();
            cluster.bridge.reset_all(&state).await;
            continue;
        };
        let mut pipe = redis::pipe();
        for out in &batch {
            pipe.publish(&out.channel, &out.payload);
        }
        let started = Instant::now();
        let sent: Result<Result<Vec<i64>, _>, _> =
            tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async(&mut conn)).await;
        match sent {
            Ok(Ok(receivers)) => {
                state.telemetry.redis_round_trip(crate::telemetry::RedisOp::Publish, started.elapsed());
                state.telemetry.bridge_frames_out.increment(batch.len() as u64);
                for (out, heard_by) in batch.drain(..).zip(receivers) {
                    if heard_by == 0 {
                        cluster.bridge.lost(&state, out.lost).await;
                    }
                }
            }
            _ => {
                batch.clear();
                state.telemetry.redis_errors.increment(1);
                warn!("bridge publish failed: bridged connections reset");
                cluster.bridge.reset_all(&state).await;
            }
        }
    }
}

/// Listens on this node's channel until the server stops, subscribing
/// again after a loss (and resetting what may have been lost meanwhile).
pub async fn run_subscriber(client: redis::Client, state: Arc<AppState>, cluster: Arc<Cluster>) {
    use futures_util::StreamExt;
    let channel = keys::bridge(&cluster.node_id);
    let mut first = true;
    while !state.shutting_down.load(std::sync::atomic::Ordering::Relaxed) {
        let subscribed = async {
            let mut pubsub = tokio::time::timeout(REDIS_TIMEOUT, client.get_async_pubsub()).await.ok()?.ok()?;
            tokio::time::timeout(REDIS_TIMEOUT, pubsub.subscribe(&channel)).await.ok()?.ok()?;
            Some(pubsub)
        }
        .await;
        let Some(mut pubsub) = subscribed else {
            tokio::time::sleep(super::HEARTBEAT).await;
            continue;
        };
        if !first {
            cluster.bridge.reset_all(&state).await;
        }
        first = false;
        let mut messages = pubsub.on_message();
        while let Some(msg) = messages.next().await {
            let Ok(payload) = msg.get_payload::<String>() else { continue };
            state.telemetry.bridge_frames_in.increment(1);
            cluster.bridge.receive(&state, &cluster, &payload).await;
        }
        warn!("bridge subscription lost: subscribing again");
    }
}

/// Hands `event` to `shard` now if its queue has room, else from a task of
/// its own (a connection's end must reach its shard, but must not hold up
/// whoever noticed it).
fn deliver_later(state: &AppState, shard: usize, event: HubEvent) {
    let inbox = state.shards.get(shard);
    if let Err(mpsc::error::TrySendError::Full(event)) = inbox.try_send(event) {
        let inbox = inbox.clone();
        tokio::spawn(async move {
            let _ = inbox.send(event).await;
        });
    }
}

/// Where a target's events go: a local shard, or the bridge.
pub async fn deliver(state: &AppState, to: &Target, event: HubEvent) -> Result<(), ()> {
    match to {
        Target::Shard(i) => state.shards.get(*i).send(event).await.map_err(drop),
        Target::Node(node) => match &state.cluster {
            Some(cluster) => cluster.bridge.to_owner(node, event).await,
            None => Err(()),
        },
    }
}
