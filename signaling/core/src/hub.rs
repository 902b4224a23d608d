//! The hub: every connection's room membership and every room, owned by one
//! state machine. See the crate docs for the loop that drives it.

use crate::Now;
use crate::auth::TokenVerifier;
use crate::limits::Limits;
use crate::room::Room;
use crate::timers::{Timer, Timers};
use crate::turn::TurnConfig;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;
use switchboard_protocol::{
    Bare, CandidateRelay, ChatHistoryPage, ChatHistoryRequest, ChatMessage, ChatSend, ClientMessage, DescriptionRelay,
    EndOfCandidatesRelay, ErrorCode, ErrorMessage, GoingAway, IceServer, IceServerList, Join, LeaveReason, MediaUpdate,
    PROTOCOL_VERSION, PeerId, PeerInfo, PeerJoined, PeerLeft, PeerUpdated, Pong, ReadNotice, ReadReceipt,
    RelayedCandidate, RelayedDescription, RelayedEndOfCandidates, RequestId, Role, RoomMode, RoomName, SdpType,
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
}

#[derive(Debug, Clone)]
enum ConnState {
    Lobby,
    Joined { room: RoomName, peer: PeerId },
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

    /// A new connection: it must join within the join timeout.
    pub fn open(&mut self, conn: ConnId, now: Now) {
        self.conns.insert(conn, ConnState::Lobby);
        self.timers.arm(now.mono + self.config.limits.join_timeout, Timer::JoinDeadline(conn));
    }

    /// A connection is gone (closed by the client, the network or the shell).
    /// Its peer leaves its room with `reason`. Calling it for an unknown or
    /// already closed connection does nothing.
    pub fn disconnect(&mut self, conn: ConnId, reason: LeaveReason) {
        if let Some(ConnState::Joined { room, peer }) = self.conns.remove(&conn) {
            self.remove_member(&room, &peer, reason);
        }
    }

    /// Handles one message from `conn`.
    pub fn message(&mut self, conn: ConnId, msg: ClientMessage, now: Now) {
        let Some(state) = self.conns.get(&conn) else { return };
        let joined = match state {
            ConnState::Joined { room, peer } => Some((room.clone(), peer.clone())),
            ConnState::Lobby => None,
        };
        match (msg, joined) {
            (ClientMessage::Ping(Bare { id }), _) => self.send(conn, ServerMessage::Pong(Pong { id })),
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
        while let Some(timer) = self.timers.pop_due(now.mono) {
            match timer {
                Timer::JoinDeadline(conn) => {
                    if matches!(self.conns.get(&conn), Some(ConnState::Lobby)) {
                        self.conns.remove(&conn);
                        self.fatal(conn, ErrorCode::JoinTimeout, "no join within the join timeout");
                    }
                }
                Timer::TypingExpiry(conn) => self.expire_typing(conn, now.mono),
            }
        }
    }

    /// The server is going away: every connection is told so and closed, and
    /// the hub forgets everything.
    pub fn shutdown(&mut self, notice: &GoingAway) {
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        self.conns.clear();
        self.rooms.clear();
        self.peers = 0;
        self.timers = Timers::default();
        if conns.is_empty() {
            return;
        }
        for &conn in &conns {
            self.out.push_back(Output::Close { conn, reason: CloseReason::GoingAway });
        }
        self.out
            .push_front(Output::Send { to: Recipients::Many(conns), msg: ServerMessage::GoingAway(notice.clone()) });
    }

    fn join(&mut self, conn: ConnId, join: Join, now: Now) {
        let Join { id, room: room_name, name, token, media, role } = join;
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
                    match verifier.verify(&token, &room_name, now_s) {
                        Ok(claims) => (Some(claims.sub), claims.mode),
                        Err((code, message)) => return self.error(conn, id, code, message),
                    }
                }
            }
        };
        if !self.rooms.contains_key(&room_name) && self.rooms.len() >= self.config.limits.max_rooms {
            return self.error(conn, id, ErrorCode::TooManyRooms, "the server has no room for another room");
        }
        // A second join of the same identity replaces the first session, so a
        // client that reconnects before its old socket times out is never
        // locked out of its own seat.
        let replaced = identity
            .as_deref()
            .and_then(|ident| self.rooms.get(&room_name).and_then(|r| r.find_identity(ident, role)))
            .and_then(|peer| self.rooms.get(&room_name).and_then(|r| r.get(&peer)).map(|m| (peer, m.conn)));
        if let Some((old_peer, old_conn)) = replaced {
            self.conns.remove(&old_conn);
            // Removed directly, not through remove_member: the room must not
            // be dropped (with its chat) when the old session was alone in it.
            if let Some(room) = self.rooms.get_mut(&room_name)
                && room.remove(&old_peer).is_some()
            {
                self.peers -= 1;
                let others = room.conns();
                self.broadcast(
                    others,
                    ServerMessage::PeerLeft(PeerLeft { peer_id: old_peer, reason: LeaveReason::Replaced }),
                );
            }
            self.fatal(old_conn, ErrorCode::Replaced, "the same identity joined from another connection");
        }
        let limits = &self.config.limits;
        let mode = claimed_mode.unwrap_or(self.config.room_mode);
        let room = self.rooms.entry(room_name.clone()).or_insert_with(|| Room::new(limits.chat_history, mode));
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
        let info = PeerInfo { id: peer_id.clone(), name, identity, media, read_seq: 0, role };
        let others = room.conns();
        let (chat, _) = room.chat.page(None, limits.chat_history_page);
        let (ice_servers, ice_servers_ttl_s) = self.ice_servers_for(&peer_id, now);
        let limits = &self.config.limits;
        let Some(room) = self.rooms.get_mut(&room_name) else { unreachable!("inserted above") };
        let welcome = Welcome {
            id,
            protocol: PROTOCOL_VERSION,
            room: room_name.clone(),
            mode: room.mode,
            you: info.clone(),
            peers: room.peers_except(&peer_id),
            ice_servers,
            ice_servers_ttl_s,
            ping_interval_ms: millis(limits.ping_interval),
            ping_timeout_ms: millis(limits.ping_timeout),
            limits: limits.info(),
            chat,
            chat_seq: room.chat.last_seq(),
            resume_token: format!("{:032x}", (self.entropy)()),
        };
        room.insert(conn, info.clone());
        if role == Role::Sfu {
            room.sfu_requested = false;
        }
        let wants_sfu = room.wants_sfu();
        if wants_sfu {
            room.sfu_requested = true;
        }
        self.peers += 1;
        let sfu_room = wants_sfu.then(|| room_name.clone());
        self.conns.insert(conn, ConnState::Joined { room: room_name, peer: peer_id });
        self.send(conn, ServerMessage::Welcome(Box::new(welcome)));
        self.broadcast(others, ServerMessage::PeerJoined(PeerJoined { peer: info }));
        if let Some(room) = sfu_room {
            self.out.push_back(Output::SfuWanted { room });
        }
    }

    fn in_room(&mut self, conn: ConnId, room_name: &RoomName, me: &PeerId, msg: ClientMessage, now: Now) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            // Joined implies the room exists; the invariant tests hold us to it.
            debug_assert!(false, "joined connection without a room");
            return;
        };
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
                if text.trim().is_empty() {
                    return self.error(conn, id, ErrorCode::InvalidMessage, "chat text must not be empty");
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
                let name = member.info.name.clone();
                let was_typing = member.typing_until.take().is_some();
                let message = room
                    .chat
                    .append(now.unix_ms, |seq, ts| ChatMessage { seq, ts, from: me.clone(), name, client_id, text })
                    .clone();
                let everyone = room.conns();
                if was_typing {
                    let others = room.conns_except(me);
                    self.broadcast(others, ServerMessage::Typing(TypingNotice { from: me.clone(), active: false }));
                }
                self.broadcast(everyone, ServerMessage::Chat(message));
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
                        self.timers.arm(now.mono + ttl, Timer::TypingExpiry(conn));
                    }
                } else {
                    member.typing_until = None;
                }
                if was_typing != active {
                    let others = room.conns_except(me);
                    self.broadcast(others, ServerMessage::Typing(TypingNotice { from: me.clone(), active }));
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
                let others = room.conns_except(me);
                self.broadcast(others, ServerMessage::Read(ReadNotice { from: me.clone(), seq }));
            }
            ClientMessage::Media(MediaUpdate { mic_muted, camera_muted, .. }) => {
                let Some(member) = room.get_mut(me) else { return };
                let media = switchboard_protocol::MediaState { mic_muted, camera_muted };
                if member.info.media == media {
                    return;
                }
                member.info.media = media;
                let peer = member.info.clone();
                let others = room.conns_except(me);
                self.broadcast(others, ServerMessage::PeerUpdated(PeerUpdated { peer }));
            }
            // Handled before room dispatch.
            ClientMessage::Join(_)
            | ClientMessage::Ping(_)
            | ClientMessage::Leave(_)
            | ClientMessage::IceServers(_) => {}
        }
    }

    fn relay(&mut self, conn: ConnId, room: &RoomName, id: Option<RequestId>, to: &PeerId, msg: ServerMessage) {
        let Some(r) = self.rooms.get(room) else { return };
        let target = r.get(to).map(|m| (m.conn, m.info.role));
        // The addressing rule of SFU rooms: participants negotiate with the
        // SFU only (the SFU with anyone).
        let sender_role = r.members().find(|m| m.conn == conn).map_or(Role::Participant, |m| m.info.role);
        let forbidden = r.mode == RoomMode::Sfu
            && sender_role == Role::Participant
            && matches!(target, Some((_, Role::Participant)));
        if forbidden {
            return self.error(conn, id, ErrorCode::Forbidden, "in an SFU room, negotiate with the SFU only");
        }
        match target.map(|(c, _)| c) {
            Some(target) if target != conn => self.send(target, msg),
            Some(_) => self.error(conn, id, ErrorCode::UnknownPeer, "cannot relay to yourself"),
            // The same answer whether the peer is elsewhere or nowhere: a
            // client learns nothing about other rooms.
            None => self.error(conn, id, ErrorCode::UnknownPeer, format!("peer {to} is not in this room")),
        }
    }

    fn expire_typing(&mut self, conn: ConnId, now: Instant) {
        let Some(ConnState::Joined { room: room_name, peer }) = self.conns.get(&conn) else { return };
        let Some(room) = self.rooms.get_mut(room_name) else { return };
        let Some(member) = room.get_mut(peer) else { return };
        match member.typing_until {
            Some(until) if until > now => self.timers.arm(until, Timer::TypingExpiry(conn)),
            Some(_) => {
                member.typing_until = None;
                member.typing_timer_armed = false;
                let from = peer.clone();
                let others = room.conns_except(&from);
                self.broadcast(others, ServerMessage::Typing(TypingNotice { from, active: false }));
            }
            None => member.typing_timer_armed = false,
        }
    }

    fn remove_member(&mut self, room_name: &RoomName, peer: &PeerId, reason: LeaveReason) {
        let Some(room) = self.rooms.get_mut(room_name) else { return };
        if room.remove(peer).is_none() {
            return;
        }
        self.peers -= 1;
        if room.is_empty() {
            self.rooms.remove(room_name);
            return;
        }
        let others = room.conns();
        let wants_sfu = room.wants_sfu();
        if wants_sfu {
            room.sfu_requested = true;
        }
        self.broadcast(others, ServerMessage::PeerLeft(PeerLeft { peer_id: peer.clone(), reason }));
        if wants_sfu {
            self.out.push_back(Output::SfuWanted { room: room_name.clone() });
        }
    }

    fn send(&mut self, conn: ConnId, msg: ServerMessage) {
        self.out.push_back(Output::Send { to: Recipients::One(conn), msg });
    }

    fn broadcast(&mut self, conns: Vec<ConnId>, msg: ServerMessage) {
        if !conns.is_empty() {
            self.out.push_back(Output::Send { to: Recipients::Many(conns), msg });
        }
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
        for (name, room) in &self.rooms {
            if room.is_empty() {
                return Err(format!("room {name} is empty but still exists"));
            }
            for m in room.members() {
                members += 1;
                match self.conns.get(&m.conn) {
                    Some(ConnState::Joined { room: r, peer }) if r == name && *peer == m.info.id => {}
                    other => return Err(format!("member {} of {name} has conn state {other:?}", m.info.id)),
                }
                if m.info.read_seq > room.chat.last_seq() {
                    return Err(format!("member {} read beyond the last seq", m.info.id));
                }
            }
        }
        if members != self.peers {
            return Err(format!("peer count {} but {members} members", self.peers));
        }
        let joined = self.conns.values().filter(|s| matches!(s, ConnState::Joined { .. })).count();
        if joined != members {
            return Err(format!("{joined} joined connections but {members} members"));
        }
        Ok(())
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
