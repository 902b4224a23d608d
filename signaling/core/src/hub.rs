//! The hub: every connection's room membership and every room, owned by one
//! state machine. See the crate docs for the loop that drives it.

use crate::Now;
use crate::auth::TokenVerifier;
use crate::events::{Budget, Overflow};
use crate::limits::Limits;
use crate::room::{PendingResume, Room};
use crate::timers::{Timer, Timers};
use crate::turn::TurnConfig;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;
use switchboard_protocol::{
    Bare, CandidateRelay, ChatHistoryPage, ChatHistoryRequest, ChatMessage, ChatSend, ClientMessage, DescriptionRelay,
    EndOfCandidatesRelay, ErrorCode, ErrorMessage, GoingAway, IceServer, IceServerList, Join, LeaveReason, MediaUpdate,
    PROTOCOL_VERSION, PeerId, PeerInfo, PeerJoined, PeerLeft, PeerUpdated, Ping, Pong, ReadNotice, ReadReceipt,
    RelayedCandidate, RelayedDescription, RelayedEndOfCandidates, RequestId, Resume, Role, RoomMode, RoomName, SdpType,
    ServerMessage, TypingNotice, TypingUpdate, Welcome,
};

/// A connection, numbered by the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Randomness for peer ids and resume tokens, supplied by the shell (the OS
/// generator in the server, a seeded one in tests).
pub type Entropy = Box<dyn FnMut() -> u128 + Send>;

/// Everything the hub needs to know at start.
#[derive(Debug, Default)]
pub struct HubConfig {
    /// Limits.
    pub limits: Limits,
    /// Join tokens are required when set.
    pub verifier: Option<TokenVerifier>,
    /// ICE servers without credentials (STUN) handed out in the welcome.
    pub ice_servers: Vec<IceServer>,
    /// TURN: credentials minted per participant at join and on request.
    pub turn: Option<TurnConfig>,
    /// Mode of rooms created without a `mode` claim.
    pub room_mode: RoomMode,
    /// Checks the tokens of the server's own SFU (a secret of the process),
    /// so that SFU rooms work without an auth secret.
    pub sfu_verifier: Option<TokenVerifier>,
}

/// Who a message goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    /// One connection.
    One(ConnId),
    /// Several connections (one serialization, many sends).
    Many(Vec<ConnId>),
}

impl Recipients {
    /// The connections.
    pub fn as_slice(&self) -> &[ConnId] {
        match self {
            Self::One(conn) => std::slice::from_ref(conn),
            Self::Many(conns) => conns,
        }
    }
}

/// Why the hub closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client asked to leave.
    Normal,
    /// After a fatal error, already sent as a message.
    Error(ErrorCode),
    /// The server is shutting down.
    GoingAway,
}

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send `msg` to every recipient.
    Send {
        /// Recipients.
        to: Recipients,
        /// The message.
        msg: ServerMessage,
        /// Its JSON text, when the hub already wrote it (room events: their
        /// size counts against the replay budgets), so the shell need not
        /// serialize it again; `None`: serialize `msg`.
        json: Option<String>,
    },
    /// Close the connection once what was sent before is flushed.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// An SFU room has participants and no SFU: start one for it.
    SfuWanted {
        /// The room.
        room: RoomName,
    },
    /// Someone asked to resume the session this connection serves: find out
    /// whether it is still alive (a half-open connection looks alive until
    /// the ping timeout). Answer with [`Hub::alive`] when the client proves
    /// it is there, or [`Hub::disconnect`] when it does not, in bounded time.
    Probe {
        /// The connection to check.
        conn: ConnId,
    },
}

/// Who in a room an event is for.
#[derive(Debug, Clone, Copy)]
enum Audience<'a> {
    All,
    AllBut(&'a PeerId),
    One(&'a PeerId),
}

#[derive(Debug, Clone)]
enum ConnState {
    Lobby,
    Joined {
        room: RoomName,
        peer: PeerId,
    },
    /// Asked to resume a session whose current connection is being probed.
    Resuming {
        room: RoomName,
        peer: PeerId,
    },
}

/// The signaling state machine.
pub struct Hub {
    config: HubConfig,
    conns: HashMap<ConnId, ConnState>,
    rooms: HashMap<RoomName, Room>,
    timers: Timers,
    out: VecDeque<Output>,
    entropy: Entropy,
    /// Members of all rooms, kept so that metrics never walk the rooms.
    peers: usize,
    /// Every member's session, by its current resume token.
    tokens: HashMap<String, (RoomName, PeerId)>,
    /// Seats held for a resume, by the connection that dropped.
    away: HashMap<ConnId, (RoomName, PeerId)>,
    /// The latest time an input brought, for deadlines armed deep inside.
    latest: Option<Instant>,
    /// Set by [`Hub::shutdown`]: a connection that opens afterwards (its
    /// upgrade was in flight) is told so and closed at once.
    going_away: Option<GoingAway>,
    /// Tokens of sessions replaced less than a resume grace ago.
    replaced: crate::replaced::ReplacedTokens,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("conns", &self.conns.len()).field("rooms", &self.rooms.len()).finish()
    }
}

const BASE32: &[u8; 32] = b"ABCDEFGHJKMNPQRSTVWXYZ0123456789";

impl Hub {
    /// A hub with no connections.
    pub fn new(config: HubConfig, entropy: Entropy) -> Self {
        Self {
            config,
            conns: HashMap::new(),
            rooms: HashMap::new(),
            timers: Timers::default(),
            out: VecDeque::new(),
            entropy,
            peers: 0,
            tokens: HashMap::new(),
            away: HashMap::new(),
            latest: None,
            going_away: None,
            replaced: crate::replaced::ReplacedTokens::default(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }

    /// Open connections (joined or not).
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Rooms with at least one member.
    pub fn rooms(&self) -> usize {
        self.rooms.len()
    }

    /// Participants in all rooms.
    pub fn peers(&self) -> usize {
        self.peers
    }

    /// The next output, if any. Call until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Hub::timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Participants whose connection dropped and whose seat is held.
    pub fn away(&self) -> usize {
        self.away.len()
    }

    /// Bytes of events kept for resumes, over every member (walks every
    /// room: for tests and occasional inspection, not per message).
    pub fn replay_bytes(&self) -> usize {
        self.rooms.values().flat_map(Room::members).map(|m| m.events.bytes()).sum()
    }

    /// Bytes of chat history kept, over every room (walks every room).
    pub fn chat_bytes(&self) -> usize {
        self.rooms.values().map(|r| r.chat.bytes()).sum()
    }

    /// A new connection: it must join within the join timeout.
    pub fn open(&mut self, conn: ConnId, now: Now) {
        self.latest = Some(now.mono);
        if let Some(notice) = &self.going_away {
            let msg = ServerMessage::GoingAway(notice.clone());
            self.out.push_back(Output::Send { to: Recipients::One(conn), msg, json: None });
            self.out.push_back(Output::Close { conn, reason: CloseReason::GoingAway });
            return;
        }
        self.conns.insert(conn, ConnState::Lobby);
        self.timers.arm(now.mono + self.config.limits.join_timeout, Timer::JoinDeadline(conn));
    }

    /// A connection is gone (closed by the client, the network or the shell).
    /// When it dropped (`disconnected` or `timeout`) and resume is on, its
    /// participant's seat is held for the resume grace and the others see it
    /// `reconnecting`; otherwise it leaves its room with `reason`. Calling it
    /// for an unknown or already closed connection does nothing.
    pub fn disconnect(&mut self, conn: ConnId, reason: LeaveReason, now: Now) {
        self.latest = Some(now.mono);
        match self.conns.remove(&conn) {
            Some(ConnState::Joined { room, peer }) => {
                if self.holds_seat(reason, &room, &peer) {
                    self.suspend(conn, &room, &peer, now);
                } else {
                    self.remove_member(&room, &peer, reason);
                }
            }
            Some(ConnState::Resuming { room, peer }) => {
                if let Some(member) = self.rooms.get_mut(&room).and_then(|r| r.get_mut(&peer))
                    && member.pending.as_ref().is_some_and(|p| p.conn == conn)
                {
                    member.pending = None;
                }
            }
            Some(ConnState::Lobby) | None => {}
        }
    }

    /// The connection probed after an [`Output::Probe`] answered: its
    /// session is live, so the resume that caused the probe is refused.
    pub fn alive(&mut self, conn: ConnId, now: Now) {
        self.latest = Some(now.mono);
        let Some(ConnState::Joined { room, peer }) = self.conns.get(&conn) else { return };
        let Some(member) = self.rooms.get_mut(room).and_then(|r| r.get_mut(peer)) else { return };
        if let Some(pending) = member.pending.take() {
            self.refuse(pending, "the session is live on another connection: join afresh");
        }
    }

    fn holds_seat(&self, reason: LeaveReason, room: &RoomName, peer: &PeerId) -> bool {
        !self.config.limits.resume_grace.is_zero()
            && matches!(reason, LeaveReason::Disconnected | LeaveReason::Timeout)
            && self.rooms.get(room).and_then(|r| r.get(peer)).is_some_and(|m| m.info.role == Role::Participant)
    }

    /// Holds the seat of a participant whose connection `conn` dropped.
    fn suspend(&mut self, conn: ConnId, room_name: &RoomName, peer: &PeerId, now: Now) {
        let Some(member) = self.rooms.get_mut(room_name).and_then(|r| r.get_mut(peer)) else { return };
        member.online = false;
        member.info.reconnecting = true;
        member.events.went_away();
        let was_typing = member.typing_until.take().is_some();
        let info = member.info.clone();
        let pending = member.pending.take();
        self.away.insert(conn, (room_name.clone(), peer.clone()));
        self.timers.arm(now.mono + self.config.limits.resume_grace, Timer::ResumeDeadline(conn));
        if was_typing {
            let notice = ServerMessage::Typing(TypingNotice { from: peer.clone(), active: false });
            self.emit(room_name, Audience::AllBut(peer), notice);
        }
        self.emit(room_name, Audience::AllBut(peer), ServerMessage::PeerUpdated(PeerUpdated { peer: info }));
        if let Some(pending) = pending {
            self.complete_resume(pending, room_name, peer, now);
        }
    }

    /// Turns a waiting resume away; its connection may join afresh.
    fn refuse(&mut self, pending: PendingResume, why: &str) {
        self.conns.insert(pending.conn, ConnState::Lobby);
        if let Some(latest) = self.latest {
            self.timers.arm(latest + self.config.limits.join_timeout, Timer::JoinDeadline(pending.conn));
        }
        self.error(pending.conn, pending.id, ErrorCode::ResumeFailed, why);
    }

    /// Handles one message from `conn`.
    pub fn message(&mut self, conn: ConnId, msg: ClientMessage, now: Now) {
        self.latest = Some(now.mono);
        let Some(state) = self.conns.get(&conn) else { return };
        let joined = match state {
            ConnState::Joined { room, peer } => Some((room.clone(), peer.clone())),
            ConnState::Lobby => None,
            ConnState::Resuming { .. } => {
                return match msg {
                    ClientMessage::Ping(Ping { id, .. }) => self.send(conn, ServerMessage::Pong(Pong { id })),
                    ClientMessage::Leave(_) => {
                        self.disconnect(conn, LeaveReason::Left, now);
                        self.out.push_back(Output::Close { conn, reason: CloseReason::Normal });
                    }
                    msg => {
                        let id = msg.request_id().cloned();
                        self.error(conn, id, ErrorCode::NotJoined, "a resume of this connection is in progress");
                    }
                };
            }
        };
        match (msg, joined) {
            (ClientMessage::Ping(Ping { id, ack }), joined) => {
                if let Some((room, peer)) = joined
                    && let Some(member) = self.rooms.get_mut(&room).and_then(|r| r.get_mut(&peer))
                {
                    if let Some(ack) = ack {
                        member.events.ack(ack);
                    }
                    confirm_token(member, &mut self.tokens);
                }
                self.send(conn, ServerMessage::Pong(Pong { id }));
            }
            (ClientMessage::Leave(_), joined) => {
                self.conns.remove(&conn);
                if let Some((room, peer)) = joined {
                    self.remove_member(&room, &peer, LeaveReason::Left);
                }
                self.out.push_back(Output::Close { conn, reason: CloseReason::Normal });
            }
            (ClientMessage::Join(join), None) => self.join(conn, join, now),
            (ClientMessage::Join(join), Some(_)) => {
                self.error(conn, join.id, ErrorCode::AlreadyJoined, "this connection has already joined a room");
            }
            (msg, None) => {
                let id = msg.request_id().cloned();
                self.error(
                    conn,
                    id,
                    ErrorCode::NotJoined,
                    format!("join a room before sending {}", msg.kind().as_str()),
                );
            }
            (ClientMessage::IceServers(Bare { id }), Some((_, peer))) => {
                let (ice_servers, ice_servers_ttl_s) = self.ice_servers_for(&peer, now);
                self.send(conn, ServerMessage::IceServers(IceServerList { id, ice_servers, ice_servers_ttl_s }));
            }
            (msg, Some((room, peer))) => self.in_room(conn, &room, &peer, msg, now),
        }
    }

    /// The ICE servers for one participant, with fresh TURN credentials
    /// (named after its peer id) and their lifetime.
    fn ice_servers_for(&self, peer: &PeerId, now: Now) -> (Vec<IceServer>, Option<u64>) {
        let mut servers = self.config.ice_servers.clone();
        let Some(turn) = &self.config.turn else { return (servers, None) };
        let credential = turn.issue(peer.as_str(), now.unix_ms / 1000, None);
        servers.push(turn.ice_server(&credential));
        (servers, Some(credential.ttl_s))
    }

    /// Fires every deadline due at `now`.
    pub fn timeout(&mut self, now: Now) {
        self.latest = Some(now.mono);
        while let Some(timer) = self.timers.pop_due(now.mono) {
            match timer {
                Timer::JoinDeadline(conn) => {
                    if matches!(self.conns.get(&conn), Some(ConnState::Lobby)) {
                        self.conns.remove(&conn);
                        self.fatal(conn, ErrorCode::JoinTimeout, "no join within the join timeout");
                    }
                }
                Timer::TypingExpiry(room, peer) => self.expire_typing(&room, &peer, now.mono),
                Timer::ResumeDeadline(conn) => {
                    if let Some((room, peer)) = self.away.remove(&conn) {
                        self.remove_member(&room, &peer, LeaveReason::Timeout);
                    }
                }
            }
        }
    }

    /// The server is going away: every connection is told so and closed, and
    /// the hub forgets everything.
    pub fn shutdown(&mut self, notice: &GoingAway) {
        self.going_away = Some(notice.clone());
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        self.conns.clear();
        self.rooms.clear();
        self.tokens.clear();
        self.replaced.clear();
        self.away.clear();
        self.peers = 0;
        self.timers = Timers::default();
        if conns.is_empty() {
            return;
        }
        for &conn in &conns {
            self.out.push_back(Output::Close { conn, reason: CloseReason::GoingAway });
        }
        self.out.push_front(Output::Send {
            to: Recipients::Many(conns),
            msg: ServerMessage::GoingAway(notice.clone()),
            json: None,
        });
    }

    fn join(&mut self, conn: ConnId, join: Join, now: Now) {
        let Join { id, room: room_name, name, token, media, role, resume } = join;
        let now_s = now.unix_ms / 1000;
        let (identity, claimed_mode) = if role == Role::Sfu {
            // Only the server's own SFU (its process secret) or a token
            // issued for an SFU may join as one.
            let verified = token.as_deref().and_then(|t| {
                let own = self.config.sfu_verifier.as_ref().and_then(|v| v.verify(t, &room_name, now_s).ok());
                own.or_else(|| {
                    let claims = self.config.verifier.as_ref()?.verify(t, &room_name, now_s).ok()?;
                    (claims.role == Role::Sfu).then_some(claims)
                })
            });
            let Some(claims) = verified else {
                return self.error(conn, id, ErrorCode::Unauthorized, "joining as an SFU needs an SFU token");
            };
            if resume.is_some() {
                return self.error(conn, id, ErrorCode::ResumeFailed, "an SFU joins afresh, it does not resume");
            }
            let Some(room) = self.rooms.get(&room_name) else {
                return self.error(conn, id, ErrorCode::Forbidden, "no such room: an SFU joins rooms that exist");
            };
            if room.mode != RoomMode::Sfu {
                return self.error(conn, id, ErrorCode::Forbidden, "this room is not an SFU room");
            }
            (Some(claims.sub), None)
        } else {
            match &self.config.verifier {
                None => (None, None),
                Some(verifier) => {
                    let Some(token) = token else {
                        return self.error(conn, id, ErrorCode::Unauthorized, "this server requires a join token");
                    };
                    let verified = match &resume {
                        Some(_) => verifier.verify_for_resume(&token, &room_name),
                        None => verifier.verify(&token, &room_name, now_s),
                    };
                    match verified {
                        Ok(claims) => (Some(claims.sub), claims.mode),
                        Err((code, message)) => return self.error(conn, id, code, message),
                    }
                }
            }
        };
        if let Some(resume) = resume {
            return self.resume(conn, id, &room_name, identity.as_deref(), &resume, now);
        }
        if !self.rooms.contains_key(&room_name) && self.rooms.len() >= self.config.limits.max_rooms {
            return self.error(conn, id, ErrorCode::TooManyRooms, "the server has no room for another room");
        }
        // A second join of the same identity replaces the first session (live
        // or held for a resume), so a client that lost its resume token is
        // never locked out of its own seat.
        let replaced =
            identity.as_deref().and_then(|ident| self.rooms.get(&room_name).and_then(|r| r.find_identity(ident, role)));
        if let Some(old_peer) = replaced {
            // Removed directly, not through remove_member: the room must not
            // be dropped (with its chat) when the old session was alone in it.
            if let Some(old) = self.rooms.get_mut(&room_name).and_then(|room| room.remove(&old_peer)) {
                self.peers -= 1;
                let (old_conn, online) = (old.conn, old.online);
                // Its client may be away and never read the `replaced`
                // below: a resume with its tokens is told instead.
                let until = now.mono + self.config.limits.resume_grace;
                for token in std::iter::once(&old.resume_token).chain(&old.previous_token) {
                    self.replaced.record(token.clone(), until);
                }
                self.forget(old);
                let left = ServerMessage::PeerLeft(PeerLeft { peer_id: old_peer, reason: LeaveReason::Replaced });
                self.emit(&room_name, Audience::All, left);
                if online {
                    self.conns.remove(&old_conn);
                    self.fatal(old_conn, ErrorCode::Replaced, "the same identity joined from another connection");
                }
            }
        }
        let limits = &self.config.limits;
        let mode = claimed_mode.unwrap_or(self.config.room_mode);
        let room = self
            .rooms
            .entry(room_name.clone())
            .or_insert_with(|| Room::new(limits.chat_history, limits.chat_history_bytes, mode));
        // The SFU is infrastructure: it never counts against the room's size.
        if role == Role::Participant && room.participants() >= limits.max_peers_per_room {
            let max = limits.max_peers_per_room;
            return self.error(conn, id, ErrorCode::RoomFull, format!("room is full ({max} participants)"));
        }
        let peer_id = loop {
            let candidate = peer_id_from(&mut self.entropy);
            if room.get(&candidate).is_none() {
                break candidate;
            }
        };
        let info = PeerInfo { id: peer_id.clone(), name, identity, media, read_seq: 0, role, reconnecting: false };
        let resume_token = self.new_token();
        let (ice_servers, ice_servers_ttl_s) = self.ice_servers_for(&peer_id, now);
        let limits = &self.config.limits;
        let Some(room) = self.rooms.get_mut(&room_name) else { unreachable!("inserted above") };
        let (chat, _) = room.chat.page(None, limits.chat_history_page);
        let welcome = Welcome {
            id,
            chat,
            ice_servers,
            ice_servers_ttl_s,
            resume_token: resume_token.clone(),
            resumed: false,
            ..welcome_for(room, &room_name, &info, limits)
        };
        // The SFU's seat is never held: it has nothing to resume.
        let replay = match role {
            Role::Sfu => Budget { events: 0, bytes: 0 },
            Role::Participant => Budget { events: limits.replay_buffer, bytes: limits.replay_buffer_bytes },
        };
        room.insert(conn, info.clone(), resume_token.clone(), replay);
        if role == Role::Sfu {
            room.sfu_requested = false;
        }
        let wants_sfu = room.wants_sfu();
        if wants_sfu {
            room.sfu_requested = true;
        }
        self.peers += 1;
        self.tokens.insert(resume_token, (room_name.clone(), peer_id.clone()));
        self.conns.insert(conn, ConnState::Joined { room: room_name.clone(), peer: peer_id.clone() });
        self.send(conn, ServerMessage::Welcome(Box::new(welcome)));
        self.emit(&room_name, Audience::AllBut(&peer_id), ServerMessage::PeerJoined(PeerJoined { peer: info }));
        if wants_sfu {
            self.out.push_back(Output::SfuWanted { room: room_name });
        }
    }

    /// A join that asks to take back a dropped session.
    fn resume(
        &mut self,
        conn: ConnId,
        id: Option<RequestId>,
        room_name: &RoomName,
        identity: Option<&str>,
        resume: &Resume,
        now: Now,
    ) {
        // The same answer for a token that never existed, expired, was
        // replaced by a newer one or belongs to another room: a guesser
        // learns nothing.
        const UNKNOWN: &str = "unknown or expired resume token: join afresh";
        let Some((room, peer)) = self.tokens.get(&resume.token).cloned() else {
            if self.replaced.contains(&resume.token, now.mono) {
                // Final, as for the replaced connection itself: joining
                // afresh would take the seat back from the newer session.
                self.conns.remove(&conn);
                return self.fatal(conn, ErrorCode::Replaced, "the same identity joined from another connection");
            }
            return self.error(conn, id, ErrorCode::ResumeFailed, UNKNOWN);
        };
        let Some(member) = self.rooms.get_mut(&room).and_then(|r| r.get_mut(&peer)) else {
            return self.error(conn, id, ErrorCode::ResumeFailed, UNKNOWN);
        };
        if room != *room_name || member.info.identity.as_deref() != identity {
            return self.error(conn, id, ErrorCode::ResumeFailed, UNKNOWN);
        }
        if member.events.since(resume.received).is_none() {
            let message = format!("the events after {} are no longer kept: join afresh", resume.received);
            return self.error(conn, id, ErrorCode::ResumeFailed, message);
        }
        let pending = PendingResume { conn, id, received: resume.received, token: resume.token.clone() };
        if member.online {
            // Either the client noticed a drop before the server did (a
            // half-open connection), or someone else holds the token: only
            // the old connection's silence tells which.
            if member.pending.is_some() {
                return self.error(
                    conn,
                    pending.id,
                    ErrorCode::ResumeFailed,
                    "another resume of this session is in progress",
                );
            }
            let old = member.conn;
            member.pending = Some(pending);
            self.conns.insert(conn, ConnState::Resuming { room, peer });
            self.out.push_back(Output::Probe { conn: old });
            return;
        }
        self.complete_resume(pending, &room, &peer, now);
    }

    /// Reattaches a held seat to the connection that resumed it: a welcome
    /// with a fresh token, then every event it missed, in order.
    fn complete_resume(&mut self, pending: PendingResume, room_name: &RoomName, peer: &PeerId, now: Now) {
        let token = self.new_token();
        let (ice_servers, ice_servers_ttl_s) = self.ice_servers_for(peer, now);
        let limits = &self.config.limits;
        let Some(room) = self.rooms.get_mut(room_name) else { return };
        let Some(member) = room.get(peer) else { return };
        let Some(missed) = member.events.since(pending.received) else {
            // Events were forgotten while the old connection was probed.
            return self.refuse(pending, "the events after the resume point are no longer kept: join afresh");
        };
        let missed: Vec<ServerMessage> = missed.map(|e| ServerMessage::clone(e)).collect();
        let mut info = member.info.clone();
        info.reconnecting = false;
        // A resumed client keeps its own state and catches up from the
        // replay, so the chat page would only repeat what it has.
        let welcome = Welcome {
            id: pending.id,
            chat: Vec::new(),
            ice_servers,
            ice_servers_ttl_s,
            resume_token: token.clone(),
            resumed: true,
            replayed: missed.len() as u64,
            ..welcome_for(room, room_name, &info, limits)
        };
        let Some(member) = room.get_mut(peer) else { return };
        let old_conn = std::mem::replace(&mut member.conn, pending.conn);
        // The token the client is known to hold is the one it just resumed
        // with: that one keeps working until it shows it has the new one.
        // Every other token of the session (the current one it may never
        // have read, an older previous one) dies now.
        let old_token = std::mem::replace(&mut member.resume_token, token.clone());
        let old_previous = member.previous_token.replace(pending.token.clone());
        let stale: Vec<String> =
            [Some(old_token), old_previous].into_iter().flatten().filter(|t| *t != pending.token).collect();
        member.online = true;
        member.info = info.clone();
        member.events.came_back();
        member.held_relays.clear();
        self.away.remove(&old_conn);
        for stale in stale {
            self.tokens.remove(&stale);
        }
        self.tokens.insert(pending.token, (room_name.clone(), peer.clone()));
        self.tokens.insert(token, (room_name.clone(), peer.clone()));
        self.conns.insert(pending.conn, ConnState::Joined { room: room_name.clone(), peer: peer.clone() });
        self.send(pending.conn, ServerMessage::Welcome(Box::new(welcome)));
        for event in missed {
            self.send(pending.conn, event);
        }
        self.emit(room_name, Audience::AllBut(peer), ServerMessage::PeerUpdated(PeerUpdated { peer: info }));
    }

    fn new_token(&mut self) -> String {
        format!("{:032x}", (self.entropy)())
    }

    fn in_room(&mut self, conn: ConnId, room_name: &RoomName, me: &PeerId, msg: ClientMessage, now: Now) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            // Joined implies the room exists; the invariant tests hold us to it.
            debug_assert!(false, "joined connection without a room");
            return;
        };
        if let Some(member) = room.get_mut(me) {
            confirm_token(member, &mut self.tokens);
        }
        match msg {
            ClientMessage::Offer(DescriptionRelay { id, to, description }) => {
                if description.kind != SdpType::Offer {
                    return self.error(
                        conn,
                        id,
                        ErrorCode::InvalidDescription,
                        "an offer must carry a description of type offer",
                    );
                }
                self.relay(
                    conn,
                    room_name,
                    id,
                    &to,
                    ServerMessage::Offer(RelayedDescription { from: me.clone(), description }),
                );
            }
            ClientMessage::Answer(DescriptionRelay { id, to, description }) => {
                if !matches!(description.kind, SdpType::Answer | SdpType::Pranswer) {
                    return self.error(
                        conn,
                        id,
                        ErrorCode::InvalidDescription,
                        "an answer must carry a description of type answer or pranswer",
                    );
                }
                self.relay(
                    conn,
                    room_name,
                    id,
                    &to,
                    ServerMessage::Answer(RelayedDescription { from: me.clone(), description }),
                );
            }
            ClientMessage::Candidate(CandidateRelay { id, to, candidate }) => {
                self.relay(
                    conn,
                    room_name,
                    id,
                    &to,
                    ServerMessage::Candidate(RelayedCandidate { from: me.clone(), candidate }),
                );
            }
            ClientMessage::EndOfCandidates(EndOfCandidatesRelay { id, to }) => {
                self.relay(
                    conn,
                    room_name,
                    id,
                    &to,
                    ServerMessage::EndOfCandidates(RelayedEndOfCandidates { from: me.clone() }),
                );
            }
            ClientMessage::Chat(ChatSend { id, client_id, text }) => {
                let max = self.config.limits.max_chat_chars;
                if let Err(why) = switchboard_protocol::text::check_chat(&text) {
                    return self.error(conn, id, ErrorCode::InvalidMessage, why);
                }
                if text.chars().count() > max {
                    return self.error(
                        conn,
                        id,
                        ErrorCode::ChatTooLong,
                        format!("chat text is longer than {max} characters"),
                    );
                }
                let Some(member) = room.get_mut(me) else { return };
                if !member.chat_ids.first_time(&client_id) {
                    // A resend of a message already stored: its echo is in
                    // this client's event stream, delivered or replayed.
                    return;
                }
                let name = member.info.name.clone();
                let was_typing = member.typing_until.take().is_some();
                let message = room
                    .chat
                    .append(now.unix_ms, |seq, ts| ChatMessage { seq, ts, from: me.clone(), name, client_id, text })
                    .clone();
                if was_typing {
                    let notice = ServerMessage::Typing(TypingNotice { from: me.clone(), active: false });
                    self.emit(room_name, Audience::AllBut(me), notice);
                }
                self.emit(room_name, Audience::All, ServerMessage::Chat(message));
            }
            ClientMessage::ChatHistory(ChatHistoryRequest { id, before, limit }) => {
                let page = self.config.limits.chat_history_page;
                let limit = limit.map_or(page, |l| usize::try_from(l).unwrap_or(page).min(page));
                let (messages, has_more) = room.chat.page(before, limit);
                self.send(conn, ServerMessage::ChatHistory(ChatHistoryPage { id, messages, has_more }));
            }
            ClientMessage::Typing(TypingUpdate { active, .. }) => {
                let ttl = self.config.limits.typing_ttl;
                let Some(member) = room.get_mut(me) else { return };
                let was_typing = member.typing_until.is_some();
                if active {
                    member.typing_until = Some(now.mono + ttl);
                    if !member.typing_timer_armed {
                        member.typing_timer_armed = true;
                        self.timers.arm(now.mono + ttl, Timer::TypingExpiry(room_name.clone(), me.clone()));
                    }
                } else {
                    member.typing_until = None;
                }
                if was_typing != active {
                    let notice = ServerMessage::Typing(TypingNotice { from: me.clone(), active });
                    self.emit(room_name, Audience::AllBut(me), notice);
                }
            }
            ClientMessage::Read(ReadReceipt { id, seq }) => {
                let last = room.chat.last_seq();
                if seq > last {
                    return self.error(
                        conn,
                        id,
                        ErrorCode::InvalidMessage,
                        format!("seq {seq} is beyond the latest message ({last})"),
                    );
                }
                let Some(member) = room.get_mut(me) else { return };
                if seq <= member.info.read_seq {
                    return; // Receipts only move forward; a repeat is harmless.
                }
                member.info.read_seq = seq;
                self.emit(room_name, Audience::AllBut(me), ServerMessage::Read(ReadNotice { from: me.clone(), seq }));
            }
            ClientMessage::Media(MediaUpdate { mic_muted, camera_muted, .. }) => {
                let Some(member) = room.get_mut(me) else { return };
                let media = switchboard_protocol::MediaState { mic_muted, camera_muted };
                if member.info.media == media {
                    return;
                }
                member.info.media = media;
                let peer = member.info.clone();
                self.emit(room_name, Audience::AllBut(me), ServerMessage::PeerUpdated(PeerUpdated { peer }));
            }
            // Handled before room dispatch.
            ClientMessage::Join(_)
            | ClientMessage::Ping(_)
            | ClientMessage::Leave(_)
            | ClientMessage::IceServers(_) => {}
        }
    }

    fn relay(&mut self, conn: ConnId, room: &RoomName, id: Option<RequestId>, to: &PeerId, msg: ServerMessage) {
        let held = self.config.limits.held_relays_per_sender;
        let Some(r) = self.rooms.get_mut(room) else { return };
        let sender = r.members().find(|m| m.conn == conn && m.online).map(|m| (m.info.id.clone(), m.info.role));
        let Some((sender, sender_role)) = sender else { return };
        let target = r.get(to).map(|m| (m.conn, m.info.role));
        // The addressing rule of SFU rooms: participants negotiate with the
        // SFU only (the SFU with anyone).
        let forbidden = r.mode == RoomMode::Sfu
            && sender_role == Role::Participant
            && matches!(target, Some((_, Role::Participant)));
        if forbidden {
            return self.error(conn, id, ErrorCode::Forbidden, "in an SFU room, negotiate with the SFU only");
        }
        // What one sender may leave waiting for a participant that is away:
        // past it the sender is told, and the seat is not at risk.
        if let Some(target) = r.get_mut(to).filter(|m| !m.online && sender != *to) {
            let waiting = target.held_relays.entry(sender).or_insert(0);
            if *waiting >= held {
                let message = format!("peer {to} is reconnecting and {held} of your relays already wait for it");
                return self.error(conn, id, ErrorCode::RateLimited, message);
            }
            *waiting += 1;
        }
        match target.map(|(c, _)| c) {
            // To the member, not its connection: one that is away gets it
            // when it resumes.
            Some(target) if target != conn => self.emit(room, Audience::One(to), msg),
            Some(_) => self.error(conn, id, ErrorCode::UnknownPeer, "cannot relay to yourself"),
            // The same answer whether the peer is elsewhere or nowhere: a
            // client learns nothing about other rooms.
            None => self.error(conn, id, ErrorCode::UnknownPeer, format!("peer {to} is not in this room")),
        }
    }

    fn expire_typing(&mut self, room_name: &RoomName, peer: &PeerId, now: Instant) {
        let Some(room) = self.rooms.get_mut(room_name) else { return };
        let Some(member) = room.get_mut(peer) else { return };
        match member.typing_until {
            Some(until) if until > now => {
                self.timers.arm(until, Timer::TypingExpiry(room_name.clone(), peer.clone()));
            }
            Some(_) => {
                member.typing_until = None;
                member.typing_timer_armed = false;
                let (room_name, from) = (room_name.clone(), peer.clone());
                let notice = ServerMessage::Typing(TypingNotice { from: from.clone(), active: false });
                self.emit(&room_name, Audience::AllBut(&from), notice);
            }
            None => member.typing_timer_armed = false,
        }
    }

    fn remove_member(&mut self, room_name: &RoomName, peer: &PeerId, reason: LeaveReason) {
        let Some(room) = self.rooms.get_mut(room_name) else { return };
        let Some(member) = room.remove(peer) else { return };
        self.peers -= 1;
        if room.is_empty() {
            self.rooms.remove(room_name);
            self.forget(member);
            return;
        }
        let wants_sfu = room.wants_sfu();
        if wants_sfu {
            room.sfu_requested = true;
        }
        self.forget(member);
        self.emit(room_name, Audience::All, ServerMessage::PeerLeft(PeerLeft { peer_id: peer.clone(), reason }));
        if wants_sfu {
            self.out.push_back(Output::SfuWanted { room: room_name.clone() });
        }
    }

    /// Drops what the hub keeps about a member beyond its room: its resume
    /// token, its held seat, and a resume waiting on it.
    fn forget(&mut self, member: crate::room::Member) {
        self.tokens.remove(&member.resume_token);
        if let Some(previous) = &member.previous_token {
            self.tokens.remove(previous);
        }
        if !member.online {
            self.away.remove(&member.conn);
        }
        if let Some(pending) = member.pending {
            self.refuse(pending, "the session ended: join afresh");
        }
    }

    /// Sends an event to members of a room, numbering it in each one's
    /// stream; members that are away only keep it for their resume.
    fn emit(&mut self, room_name: &RoomName, audience: Audience<'_>, msg: ServerMessage) {
        let Some(room) = self.rooms.get_mut(room_name) else { return };
        // Written once per event, whoever it reaches: its size counts
        // against the replay budgets, and the shell sends this very text.
        let json = msg.to_json();
        let bytes = json.len();
        let event = Arc::new(msg);
        let mut conns = Vec::new();
        let mut overflowed = Vec::new();
        for member in room.members_mut() {
            let wanted = match audience {
                Audience::All => true,
                Audience::AllBut(peer) => member.info.id != *peer,
                Audience::One(peer) => member.info.id == *peer,
            };
            if !wanted {
                continue;
            }
            match member.events.record(&event, bytes, member.online) {
                Ok(()) if member.online => conns.push(member.conn),
                Ok(()) => {}
                Err(Overflow) => overflowed.push(member.info.id.clone()),
            }
        }
        let to = match conns.as_slice() {
            [] => None,
            [one] => Some(Recipients::One(*one)),
            _ => Some(Recipients::Many(conns)),
        };
        if let Some(to) = to {
            let msg = Arc::try_unwrap(event).unwrap_or_else(|shared| ServerMessage::clone(&shared));
            self.out.push_back(Output::Send { to, msg, json: Some(json) });
        }
        // Away too long behind too much traffic: the seat cannot be resumed
        // without a gap, so it is given up.
        for peer in overflowed {
            self.remove_member(room_name, &peer, LeaveReason::SlowConsumer);
        }
    }

    fn send(&mut self, conn: ConnId, msg: ServerMessage) {
        self.out.push_back(Output::Send { to: Recipients::One(conn), msg, json: None });
    }

    fn error(&mut self, conn: ConnId, id: Option<RequestId>, code: ErrorCode, message: impl Into<String>) {
        self.send(conn, ServerMessage::Error(ErrorMessage::recoverable(id, code, message)));
    }

    fn fatal(&mut self, conn: ConnId, code: ErrorCode, message: &str) {
        self.send(conn, ServerMessage::Error(ErrorMessage::fatal(None, code, message)));
        self.out.push_back(Output::Close { conn, reason: CloseReason::Error(code) });
    }

    /// Checks the hub's internal invariants; for tests and fuzzing.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut members = 0;
        let mut online = 0;
        for (name, room) in &self.rooms {
            if room.is_empty() {
                return Err(format!("room {name} is empty but still exists"));
            }
            for m in room.members() {
                members += 1;
                if m.online {
                    online += 1;
                    match self.conns.get(&m.conn) {
                        Some(ConnState::Joined { room: r, peer }) if r == name && *peer == m.info.id => {}
                        other => return Err(format!("member {} of {name} has conn state {other:?}", m.info.id)),
                    }
                } else if !matches!(self.away.get(&m.conn), Some((r, p)) if r == name && *p == m.info.id) {
                    return Err(format!("member {} of {name} is away but holds no seat", m.info.id));
                }
                if m.info.reconnecting == m.online {
                    return Err(format!("member {} reconnecting flag disagrees", m.info.id));
                }
                match self.tokens.get(&m.resume_token) {
                    Some((r, p)) if r == name && *p == m.info.id => {}
                    other => return Err(format!("member {} token maps to {other:?}", m.info.id)),
                }
                if m.info.read_seq > room.chat.last_seq() {
                    return Err(format!("member {} read beyond the last seq", m.info.id));
                }
            }
        }
        if members != self.peers {
            return Err(format!("peer count {} but {members} members", self.peers));
        }
        let previous = self.rooms.values().flat_map(Room::members).filter(|m| m.previous_token.is_some()).count();
        if self.tokens.len() != members + previous {
            return Err(format!("{} tokens for {members} members ({previous} previous)", self.tokens.len()));
        }
        if self.away.len() != members - online {
            return Err(format!("{} seats held but {} members away", self.away.len(), members - online));
        }
        let joined = self.conns.values().filter(|s| matches!(s, ConnState::Joined { .. })).count();
        if joined != online {
            return Err(format!("{joined} joined connections but {online} members online"));
        }
        Ok(())
    }
}

/// The member spoke on its (resumed) connection, so it has read the welcome
/// with its new token: the previous one stops working.
fn confirm_token(member: &mut crate::room::Member, tokens: &mut HashMap<String, (RoomName, PeerId)>) {
    if let Some(previous) = member.previous_token.take() {
        tokens.remove(&previous);
    }
}

/// The parts of a welcome that come from the room and the limits.
fn welcome_for(room: &Room, room_name: &RoomName, you: &PeerInfo, limits: &Limits) -> Welcome {
    Welcome {
        id: None,
        protocol: PROTOCOL_VERSION,
        room: room_name.clone(),
        mode: room.mode,
        you: you.clone(),
        peers: room.peers_except(&you.id),
        ice_servers: Vec::new(),
        ice_servers_ttl_s: None,
        ping_interval_ms: millis(limits.ping_interval),
        ping_timeout_ms: millis(limits.ping_timeout),
        limits: limits.info(),
        chat: Vec::new(),
        chat_seq: room.chat.last_seq(),
        resume_token: String::new(),
        resume_grace_ms: millis(limits.resume_grace),
        resumed: false,
        replayed: 0,
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// "p" followed by 12 base32 characters (60 random bits).
fn peer_id_from(entropy: &mut Entropy) -> PeerId {
    let bits = entropy();
    let mut id = String::with_capacity(13);
    id.push('p');
    for i in 0..12 {
        id.push(char::from(BASE32[((bits >> (i * 5)) & 31) as usize]));
    }
    // Always 13 characters of [A-Z0-9p]: a valid peer id.
    PeerId::new(id).unwrap_or_else(|e| unreachable!("generated peer id invalid: {e}"))
}
