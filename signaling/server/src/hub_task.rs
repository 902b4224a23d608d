//! The hub task: the one owner of the core [`Hub`] and of every connection's
//! outbound queue. Connections talk to it through a bounded channel; it
//! never waits on a connection (a full queue means a slow consumer).

use crate::clock;
use crate::outbox::{Outbox, PushError};
use crate::telemetry::Telemetry;
use axum::extract::ws::Utf8Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use switchboard_core::snapshot::{ExportError, ImportError, RoomSnapshot};
use switchboard_core::{CloseReason, ConnId, Hub, HubConfig, Output};
use switchboard_protocol::{ClientMessage, GoingAway, LeaveReason, RoomName, ServerKind, ServerMessage};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Events queued for the hub before senders wait: a burst of this many
/// messages from all connections together is absorbed without blocking.
pub const HUB_QUEUE: usize = 16 * 1024;

/// What the hub hears from connections and from the server.
#[derive(Debug)]
pub enum HubEvent {
    /// A connection is up, or moved here from another shard to join a
    /// room of this one.
    Open {
        /// Its id.
        conn: ConnId,
        /// How to reach it.
        handle: ConnHandle,
        /// When it connected: its join timeout counts from there.
        opened: Instant,
    },
    /// A connection not in a room moved to another shard: forget it
    /// without closing it.
    MovedOut {
        /// Which.
        conn: ConnId,
    },
    /// A parsed message from a connection.
    Message {
        /// From whom.
        conn: ConnId,
        /// What.
        msg: ClientMessage,
        /// When its frame was read, for the relay latency histogram.
        received: Instant,
    },
    /// A connection ended.
    Closed {
        /// Which.
        conn: ConnId,
        /// Why, as the room will be told.
        reason: LeaveReason,
    },
    /// A probed connection answered: its client is there.
    Alive {
        /// Which.
        conn: ConnId,
    },
    /// The server is shutting down.
    Shutdown(GoingAway),
    /// The chat store stored (or could not store) a chat message.
    ChatStored {
        /// The room.
        room: RoomName,
        /// The message's seq.
        seq: u64,
        /// Whether it is stored.
        stored: bool,
    },
    /// The chat of a room this node just took over, read back from Redis:
    /// the room starts from it when it is made here.
    SeedChat {
        /// The room.
        room: RoomName,
        /// Its newest messages, oldest first.
        messages: Vec<switchboard_protocol::ChatMessage>,
    },
    /// This node drains: tell the room's members `notice`, hold their
    /// seats, and hand the room's state back as a snapshot (see
    /// [`switchboard_core::Hub::hand_over`]).
    HandOver {
        /// The room.
        room: RoomName,
        /// What its members are told.
        notice: GoingAway,
        /// Where the snapshot goes.
        reply: tokio::sync::oneshot::Sender<Result<RoomSnapshot, ExportError>>,
    },
    /// A room handed to this node (or back to it, when its handover
    /// failed): make it from its snapshot.
    Import {
        /// The room's state.
        snapshot: Box<RoomSnapshot>,
        /// Where the outcome goes.
        reply: tokio::sync::oneshot::Sender<Result<(), ImportError>>,
    },
    /// This node lost a room to another (its lease): tell its members and
    /// forget it.
    Evict {
        /// The room.
        room: RoomName,
        /// What its members are told.
        notice: GoingAway,
    },
}

/// A frame or instruction for a connection's socket.
#[derive(Debug)]
pub enum Outbound {
    /// A text frame.
    Frame {
        /// The JSON text, shared by every recipient of a broadcast.
        text: Utf8Bytes,
        /// Its type, for metrics.
        kind: ServerKind,
        /// When the message that caused it was read.
        received: Option<Instant>,
    },
    /// Send a close frame and end the connection.
    Close(CloseSpec),
}

/// How long a probed connection has to answer before it counts as dropped.
pub const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A WebSocket close code and reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseSpec {
    /// RFC 6455 close code.
    pub code: u16,
    /// Short reason (an error code or leave reason).
    pub reason: &'static str,
}

impl CloseSpec {
    /// The close that matches a core close reason.
    pub fn from_reason(reason: CloseReason) -> Self {
        match reason {
            CloseReason::Normal => Self { code: 1000, reason: "left" },
            CloseReason::GoingAway => Self::GOING_AWAY,
            CloseReason::Error(code) => Self { code: 1008, reason: code.as_str() },
        }
    }

    /// The close that tells the client to come back (to another node).
    pub const GOING_AWAY: Self = Self { code: 1001, reason: "going_away" };

    /// The close for a slow consumer.
    pub const SLOW_CONSUMER: Self = Self { code: 1008, reason: "slow_consumer" };
}

/// How a close the hub decided on is counted in the disconnect metric.
fn closed_as(reason: CloseReason) -> LeaveReason {
    match reason {
        CloseReason::Normal => LeaveReason::Left,
        CloseReason::GoingAway => LeaveReason::Shutdown,
        CloseReason::Error(switchboard_protocol::ErrorCode::Replaced) => LeaveReason::Replaced,
        CloseReason::Error(switchboard_protocol::ErrorCode::JoinTimeout) => LeaveReason::Timeout,
        CloseReason::Error(_) => LeaveReason::Kicked,
    }
}

/// Closes a connection at once, skipping its queue; shared by every shard
/// that holds the connection's handle over its life.
#[derive(Debug, Default)]
pub struct Kill {
    spec: std::sync::Mutex<Option<CloseSpec>>,
    fired: tokio::sync::Notify,
}

impl Kill {
    /// Closes the connection with `spec`.
    pub fn fire(&self, spec: CloseSpec) {
        *self.spec.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(spec);
        self.fired.notify_one();
    }

    /// Resolves when the connection is to be killed. One waiter.
    pub async fn fired(&self) -> CloseSpec {
        loop {
            let fired = self.fired.notified();
            if let Some(spec) = self.spec.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
                return spec;
            }
            fired.await;
        }
    }
}

/// The hub's way to reach one connection.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    /// Its bounded outbound queue.
    pub outbox: Arc<Outbox>,
    /// Find out whether the client is still there (someone is resuming its
    /// session): the connection sends a WebSocket ping ahead of its queue
    /// and reports [`HubEvent::Alive`] on any answer, or ends as dropped
    /// after [`PROBE_TIMEOUT`]. Outside the queue, so that a probe never
    /// waits behind a busy room's frames.
    pub probe: Arc<tokio::sync::Notify>,
    /// Closes it at once, skipping the queue (for slow consumers).
    pub kill: Arc<Kill>,
}

/// The server's shared state for a hub task, set once the state exists
/// (it is made after the shards, and holds their inboxes).
pub type StateLater = Arc<std::sync::OnceLock<std::sync::Weak<crate::state::AppState>>>;

/// Runs the hub until every sender is gone.
pub async fn run(
    config: HubConfig,
    mut events: mpsc::Receiver<HubEvent>,
    telemetry: Arc<Telemetry>,
    sfu_requests: Option<mpsc::UnboundedSender<RoomName>>,
    cluster: Option<Arc<crate::cluster::Cluster>>,
    own_inbox: mpsc::WeakSender<HubEvent>,
    state: StateLater,
) {
    let mut task = HubTask {
        cluster,
        own_inbox,
        state,
        hub: Hub::new(config, Box::new(rand::random::<u128>)),
        conns: HashMap::new(),
        telemetry,
        received: None,
        sfu_requests,
        replaying: None,
        reported: Counts::default(),
        shutting_down: false,
    };
    loop {
        let deadline = task.hub.poll_timeout();
        let event = tokio::select! {
            event = events.recv() => match event {
                Some(event) => Some(event),
                None => break,
            },
            () = sleep_until(deadline) => None,
        };
        match event {
            Some(event) => task.handle(event),
            None => task.hub.timeout(clock::now()),
        }
        task.drain();
    }
    debug!("hub stopped");
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

struct HubTask {
    hub: Hub,
    conns: HashMap<ConnId, ConnHandle>,
    telemetry: Arc<Telemetry>,
    /// Read time of the message being handled.
    received: Option<Instant>,
    /// Where SFU rooms that need an SFU are announced (none: no SFU here).
    sfu_requests: Option<mpsc::UnboundedSender<RoomName>>,
    /// A resumed welcome was just sent: its replay (the next this many
    /// sends to that connection, which the hub emits right after it) is
    /// queued outside the connection's budget.
    replaying: Option<(ConnId, u64)>,
    /// The cluster this node is in: rooms made and ended here take and
    /// give back leases.
    cluster: Option<Arc<crate::cluster::Cluster>>,
    /// This shard's own inbox, weakly (the chat store answers there).
    own_inbox: mpsc::WeakSender<HubEvent>,
    /// The server's shared state, weakly (made after the shards).
    state: StateLater,
    /// What this shard last added to the room and peer gauges (each shard
    /// adds its own change, so the gauges hold the server's sums).
    reported: Counts,
    /// The node is shutting down: its rooms end here, not in the cluster
    /// (their chat stays in Redis for the node that takes them next).
    shutting_down: bool,
}

/// A shard's share of the room and peer gauges.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    rooms: usize,
    peers: usize,
    away: usize,
}

impl HubTask {
    fn handle(&mut self, event: HubEvent) {
        self.received = None;
        match event {
            HubEvent::Open { conn, handle, opened } => {
                self.conns.insert(conn, handle);
                self.hub.open_since(conn, opened, clock::now());
            }
            HubEvent::MovedOut { conn } => {
                // A connection in a room is never moved: if the core kept
                // it, so does the shard (its handle stays reachable).
                if self.hub.moved_out(conn) {
                    if let Some(handle) = self.conns.remove(&conn) {
                        handle.outbox.signal(crate::outbox::Signal::MovedOut);
                    }
                } else if let Some(handle) = self.conns.get(&conn) {
                    warn!(conn = conn.0, "a connection in a room was asked to move: closed");
                    handle.kill.fire(CloseSpec { code: 1011, reason: "internal" });
                }
            }
            HubEvent::Message { conn, msg, received } => {
                self.received = Some(received);
                self.hub.message(conn, msg, clock::now());
            }
            HubEvent::Closed { conn, reason } => {
                if self.conns.remove(&conn).is_some() {
                    info!(conn = conn.0, reason = reason.as_str(), "connection closed");
                    self.telemetry.disconnect(reason);
                }
                self.hub.disconnect(conn, reason, clock::now());
            }
            HubEvent::Alive { conn } => self.hub.alive(conn, clock::now()),
            HubEvent::Shutdown(notice) => {
                self.shutting_down = true;
                self.hub.shutdown(&notice, clock::now());
            }
            HubEvent::HandOver { room, notice, reply } => {
                let _ = reply.send(self.hub.hand_over(&room, &notice, clock::now()));
            }
            HubEvent::Import { snapshot, reply } => {
                let room = snapshot.room.clone();
                let imported = self.hub.import_room(*snapshot, clock::now());
                match &imported {
                    Ok(()) => {
                        info!(%room, "room taken over");
                        self.telemetry.rooms_imported.increment(1);
                    }
                    Err(err) => warn!(%room, "a room handed over could not be made here: {err}"),
                }
                let _ = reply.send(imported);
            }
            HubEvent::Evict { room, notice } => self.hub.evict_room(&room, &notice, clock::now()),
            HubEvent::ChatStored { room, seq, stored } => self.hub.chat_stored(&room, seq, stored, clock::now()),
            HubEvent::SeedChat { room, messages } => self.hub.seed_chat(room, messages),
        }
    }

    /// Carries out every output of the last input.
    fn drain(&mut self) {
        while let Some(output) = self.hub.poll_output() {
            match output {
                Output::Send { to, msg, json } => {
                    let kind = msg.kind();
                    if let ServerMessage::Error(e) = &msg {
                        self.telemetry.error(e.code);
                    }
                    if let ServerMessage::Welcome(w) = &msg {
                        if w.resumed {
                            self.telemetry.resumes.increment(1);
                            info!(room = %w.room, peer = %w.you.id, "resumed");
                        } else {
                            info!(room = %w.room, peer = %w.you.id, "joined");
                        }
                    }
                    let replay = match (&to, self.replaying) {
                        (switchboard_core::Recipients::One(conn), Some((replaying, left)))
                            if *conn == replaying && left > 0 =>
                        {
                            self.replaying = (left > 1).then_some((replaying, left - 1));
                            true
                        }
                        _ => false,
                    };
                    if let (ServerMessage::Welcome(w), switchboard_core::Recipients::One(conn)) = (&msg, &to) {
                        self.replaying = (w.resumed && w.replayed > 0).then_some((*conn, w.replayed));
                    }
                    // A connection's last word is never lost to a full queue.
                    let last_word = matches!(&msg, ServerMessage::GoingAway(_))
                        || matches!(&msg, ServerMessage::Error(e) if e.fatal);
                    let text = Utf8Bytes::from(json.unwrap_or_else(|| msg.to_json()));
                    for &conn in to.as_slice() {
                        let frame = Outbound::Frame { text: text.clone(), kind, received: self.received };
                        if replay || last_word {
                            self.deliver_unbudgeted(conn, frame);
                        } else {
                            self.deliver(conn, frame);
                        }
                    }
                }
                Output::SfuWanted { room } => match &self.sfu_requests {
                    // Unbounded: one request per SFU room per
                    // `sfu_launch_timeout` at most, and the hub task must
                    // never wait on the SFU launcher.
                    Some(requests) => {
                        let _ = requests.send(room);
                    }
                    None => warn!(%room, "an SFU room has no SFU and this server starts none"),
                },
                Output::Probe { conn } => {
                    if let Some(handle) = self.conns.get(&conn) {
                        handle.probe.notify_one();
                    }
                }
                Output::JoinAnswered { conn, joined } => {
                    if let Some(handle) = self.conns.get(&conn) {
                        handle.outbox.signal(crate::outbox::Signal::JoinAnswered(joined));
                    }
                }
                Output::LoadHistory { conn, room, before, limit, fallback } => {
                    let Some(handle) = self.conns.get(&conn) else { continue };
                    let outbox = handle.outbox.clone();
                    let redis = self.cluster.as_ref().and_then(|c| c.redis());
                    // Read by a task of its own: the hub never waits on Redis.
                    tokio::spawn(async move {
                        let id = fallback.id.clone();
                        let page = match redis {
                            Some(mut redis) => {
                                match crate::cluster::chat_store::read_page(&mut redis, &room, before, limit).await {
                                    Ok((messages, has_more)) => {
                                        switchboard_protocol::ChatHistoryPage { id, messages, has_more }
                                    }
                                    Err(_) => fallback,
                                }
                            }
                            None => fallback,
                        };
                        let text = ServerMessage::ChatHistory(page).to_json();
                        let frame =
                            Outbound::Frame { text: text.into(), kind: ServerKind::ChatHistory, received: None };
                        let _ = outbox.try_push(frame);
                    });
                }
                Output::RoomStarted { room } => {
                    debug!(%room, "room started");
                    if let (Some(cluster), Some(state)) =
                        (&self.cluster, self.state.get().and_then(std::sync::Weak::upgrade))
                        && !cluster.leases.started(&room)
                    {
                        // Claimed by a task of its own: the hub never waits
                        // on Redis.
                        tokio::spawn(crate::cluster::leases::claim(state, cluster.clone(), room));
                    }
                }
                Output::RoomEnded { room } => {
                    debug!(%room, "room ended");
                    if let Some(cluster) = &self.cluster {
                        cluster.leases.ended(&room);
                        // The room's chat ends with it, in order with its
                        // writes (the same queue); unless only this node
                        // stops, and the room goes on elsewhere.
                        if !self.shutting_down {
                            let _ = cluster.chat.send(crate::cluster::chat_store::Request::Drop { room });
                        }
                    }
                }
                Output::StoreChat { room, message } => match &self.cluster {
                    Some(cluster) => {
                        let seq = message.seq;
                        let request = crate::cluster::chat_store::Request::Store {
                            room: room.clone(),
                            message,
                            reply: self.own_inbox.clone(),
                        };
                        // Never waits (unbounded: each room has at most
                        // `MAX_PENDING_CHAT` numbered messages, and the rooms
                        // are bounded).
                        if cluster.chat.send(request).is_err() {
                            self.hub.chat_stored(&room, seq, false, clock::now());
                        }
                    }
                    None => self.hub.chat_stored(&room, message.seq, false, clock::now()),
                },
                Output::Close { conn, reason } => {
                    if let Some(handle) = self.conns.remove(&conn) {
                        self.telemetry.disconnect(closed_as(reason));
                        let spec = CloseSpec::from_reason(reason);
                        // After its last word, whatever the queue holds:
                        // one close per connection.
                        let _ = handle.outbox.push_unbudgeted(Outbound::Close(spec));
                    }
                }
            }
        }
        let now = Counts { rooms: self.hub.rooms(), peers: self.hub.peers(), away: self.hub.away() };
        let was = std::mem::replace(&mut self.reported, now);
        let change = |new: usize, old: usize| new as f64 - old as f64;
        if (now.rooms, now.peers, now.away) != (was.rooms, was.peers, was.away) {
            self.telemetry.rooms.increment(change(now.rooms, was.rooms));
            self.telemetry.peers.increment(change(now.peers, was.peers));
            self.telemetry.peers_reconnecting.increment(change(now.away, was.away));
        }
    }

    /// Queues a frame outside the budget (see [`Outbox::push_unbudgeted`]).
    fn deliver_unbudgeted(&mut self, conn: ConnId, frame: Outbound) {
        if let Some(handle) = self.conns.get(&conn) {
            let _ = handle.outbox.push_unbudgeted(frame);
        }
    }

    fn deliver(&mut self, conn: ConnId, frame: Outbound) {
        let Some(handle) = self.conns.get(&conn) else { return };
        match handle.outbox.try_push(frame) {
            Ok(()) => {}
            Err(PushError::Full) => {
                // The client is not reading: cut its connection off rather
                // than let it hold the room back or grow our memory. From
                // here a dead network looks the same, so the room sees a
                // drop and the seat is held for a resume; what piles up
                // meanwhile is bounded by the replay budget, and a client
                // that overflows that loses the seat as a slow consumer.
                if let Some(handle) = self.conns.remove(&conn) {
                    handle.kill.fire(CloseSpec::SLOW_CONSUMER);
                }
                info!(conn = conn.0, "queue full: connection cut as a slow consumer");
                self.telemetry.disconnect(LeaveReason::SlowConsumer);
                self.hub.disconnect(conn, LeaveReason::Disconnected, clock::now());
            }
            // The connection task has ended; its Closed event is on the way.
            Err(PushError::Closed) => {}
        }
    }
}
