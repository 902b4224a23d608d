//! Who gets into a room (tokens, SFU admission, room and server capacity, a
//! second join of the same identity replacing the first) and how a member
//! leaves it.

use super::fanout::Audience;
use super::{CloseReason, ConnId, ConnState, Entropy, Hub, Output, Recipients};
use crate::Now;
use crate::auth::{TokenError, TokenVerifier};
use crate::events::Budget;
use crate::limits::Limits;
use crate::room::Room;
use crate::seat::Seat;
use switchboard_protocol::{
    ErrorCode, IceServer, Join, LeaveReason, PROTOCOL_VERSION, PeerId, PeerInfo, PeerJoined, PeerLeft, RequestId, Role,
    RoomMode, RoomName, ServerMessage, Welcome,
};

/// Why a join is turned away; the text is what the client reads.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("joining as an SFU needs an SFU token")]
    SfuToken,
    #[error("no such room: an SFU joins rooms that exist")]
    SfuNoRoom,
    #[error("this room is not an SFU room")]
    NotSfuRoom,
    #[error("this server requires a join token")]
    NoToken,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("the server has no room for another room")]
    TooManyRooms,
    #[error("room is full ({0} participants)")]
    RoomFull(usize),
}

impl Refusal {
    fn code(&self) -> ErrorCode {
        match self {
            Self::SfuToken | Self::NoToken => ErrorCode::Unauthorized,
            Self::SfuNoRoom | Self::NotSfuRoom => ErrorCode::Forbidden,
            Self::Token(e) => e.code(),
            Self::TooManyRooms => ErrorCode::TooManyRooms,
            Self::RoomFull(_) => ErrorCode::RoomFull,
        }
    }
}

/// Who a join's token says the joiner is, and the room mode it claims.
type Admitted = (Option<String>, Option<RoomMode>);

impl Hub {
    pub(super) fn join(&mut self, conn: ConnId, join: Join, now: Now) {
        let Join { id, room: room_name, name, token, media, role, resume } = join;
        let (identity, claimed_mode) = match self.authorize(&room_name, token.as_deref(), role, resume.is_some(), now) {
            Ok(admitted) => admitted,
            Err(refusal) => return self.turn_away(conn, id, &refusal),
        };
        if self.moved_away(&room_name, now) {
            let why = "this room moved to another server: join again";
            return self.error(conn, id, ErrorCode::Unavailable, why);
        }
        if let Some(resume) = resume {
            let who = (identity.as_deref(), role);
            return self.resume(conn, id, &room_name, who, &resume, now);
        }
        if !self.rooms.contains_key(&room_name) && !self.config.room_quota.try_take(self.config.limits.max_rooms) {
            return self.turn_away(conn, id, &Refusal::TooManyRooms);
        }
        // A second join of the same identity replaces the first session (live
        // or held for a resume), so a client that lost its resume token is
        // never locked out of its own seat.
        let replaced =
            identity.as_deref().and_then(|ident| self.rooms.get(&room_name).and_then(|r| r.find_identity(ident, role)));
        if let Some(old_peer) = replaced {
            self.replace(&Seat::new(&room_name, &old_peer), now);
        }
        let mode = claimed_mode.unwrap_or(self.config.room_mode);
        if !self.rooms.contains_key(&room_name) {
            self.out.push_back(Output::RoomStarted { room: room_name.clone() });
            let seed = self.take_seed(&room_name);
            let limits = &self.config.limits;
            let mut room = Room::new(limits.chat_history, limits.chat_history_bytes, mode);
            room.created_unix_ms = now.unix_ms;
            for message in seed {
                if message.seq > room.chat.last_seq() {
                    room.chat.push(message);
                }
            }
            self.rooms.insert(room_name.clone(), room);
        }
        let limits = &self.config.limits;
        let Some(room) = self.rooms.get_mut(&room_name) else { unreachable!("inserted above") };
        // The SFU is infrastructure: it never counts against the room's size.
        if role == Role::Participant && room.participants() >= limits.max_peers_per_room {
            let max = limits.max_peers_per_room;
            return self.turn_away(conn, id, &Refusal::RoomFull(max));
        }
        let peer_id = loop {
            let candidate = peer_id_from(&mut self.entropy);
            if room.get(&candidate).is_none() {
                break candidate;
            }
        };
        let info = PeerInfo { id: peer_id.clone(), name, identity, media, read_seq: 0, role, reconnecting: false };
        let seat = Seat::new(&room_name, &peer_id);
        let resume_token = self.open_session(&seat);
        let (ice_servers, ice_servers_ttl_s) = self.ice_servers_for(&peer_id, now);
        let limits = &self.config.limits;
        let Some(room) = self.rooms.get_mut(&room_name) else { unreachable!("inserted above") };
        let (chat, _) = room.chat.page(None, limits.chat_history_page);
        let welcome = Welcome {
            id,
            chat,
            ice_servers,
            ice_servers_ttl_s,
            resume_token: resume_token.to_wire(),
            resumed: false,
            ..welcome_for(room, &room_name, &info, limits)
        };
        // The SFU's seat is held like a participant's: a blip on its socket
        // must not tear down the room's media, so what it misses is kept.
        let replay = Budget { events: limits.replay_buffer, bytes: limits.replay_buffer_bytes };
        room.insert(conn, info.clone(), resume_token, replay, now.unix_ms);
        if role == Role::Sfu {
            room.sfu_asked_until = None;
        }
        let sfu_until = now.mono + limits.sfu_launch_timeout;
        let ask_for_sfu = room.ask_for_sfu(sfu_until);
        self.peers += 1;
        self.conns.insert(conn, ConnState::Joined(seat));
        self.send(conn, ServerMessage::Welcome(Box::new(welcome)));
        let joined = ServerMessage::PeerJoined(PeerJoined { peer: info });
        self.emit(&room_name, Audience::AllBut(&peer_id), joined, now);
        if ask_for_sfu {
            self.request_sfu(room_name, sfu_until);
        }
    }

    /// Checks the join's token: who it admits, as what, and the room mode it
    /// claims.
    fn authorize(
        &self,
        room_name: &RoomName,
        token: Option<&str>,
        role: Role,
        resuming: bool,
        now: Now,
    ) -> Result<Admitted, Refusal> {
        let now_s = now.unix_ms / 1000;
        if role == Role::Sfu {
            // Only the server's own SFU (its process secret) or a token
            // issued for an SFU may join as one.
            // A resume checks the token as a participant's resume does:
            // its expiry passed meanwhile is no reason to drop the room.
            let check = |v: &TokenVerifier, t: &str| {
                if resuming { v.verify_for_resume(t, room_name) } else { v.verify(t, room_name, now_s) }
            };
            let verified = token.and_then(|t| {
                let own = self.config.sfu_verifier.as_ref().and_then(|v| check(v, t).ok());
                own.or_else(|| {
                    let claims = check(self.config.verifier.as_ref()?, t).ok()?;
                    (claims.role == Role::Sfu).then_some(claims)
                })
            });
            let claims = verified.ok_or(Refusal::SfuToken)?;
            let room = self.rooms.get(room_name).ok_or(Refusal::SfuNoRoom)?;
            if room.mode != RoomMode::Sfu {
                return Err(Refusal::NotSfuRoom);
            }
            return Ok((Some(claims.sub), None));
        }
        let Some(verifier) = &self.config.verifier else { return Ok((None, None)) };
        let token = token.ok_or(Refusal::NoToken)?;
        let claims = if resuming {
            verifier.verify_for_resume(token, room_name)?
        } else {
            verifier.verify(token, room_name, now_s)?
        };
        Ok((Some(claims.sub), claims.mode))
    }

    fn turn_away(&mut self, conn: ConnId, id: Option<RequestId>, refusal: &Refusal) {
        self.error(conn, id, refusal.code(), refusal.to_string());
    }

    /// Ends the session in `seat` because its identity joined again.
    fn replace(&mut self, seat: &Seat, now: Now) {
        // Removed directly, not through remove_member: the room must not
        // be dropped (with its chat) when the old session was alone in it.
        let Some(old) = self.rooms.get_mut(&seat.room).and_then(|room| room.remove(&seat.peer)) else { return };
        self.peers -= 1;
        let (old_conn, online) = (old.conn, old.online);
        self.end_replaced(seat, old, now);
        let left = ServerMessage::PeerLeft(PeerLeft { peer_id: seat.peer.clone(), reason: LeaveReason::Replaced });
        self.emit(&seat.room, Audience::All, left, now);
        if online {
            self.conns.remove(&old_conn);
            self.fatal(old_conn, ErrorCode::Replaced, "the same identity joined from another connection");
        }
    }

    /// The member in `seat` leaves its room for `reason`; the room goes
    /// when it was the last.
    pub(super) fn remove_member(&mut self, seat: &Seat, reason: LeaveReason, now: Now) {
        let Some(room) = self.rooms.get_mut(&seat.room) else { return };
        let Some(member) = room.remove(&seat.peer) else { return };
        self.peers -= 1;
        if room.is_empty() {
            self.rooms.remove(&seat.room);
            self.config.room_quota.give_back(1);
            self.forget(seat, member, now);
            self.out.push_back(Output::RoomEnded { room: seat.room.clone() });
            return;
        }
        // Noted before the event: a member removed while it is emitted (a
        // slow consumer) must not ask a second time.
        let sfu_until = now.mono + self.config.limits.sfu_launch_timeout;
        let ask_for_sfu = room.ask_for_sfu(sfu_until);
        self.forget(seat, member, now);
        let left = ServerMessage::PeerLeft(PeerLeft { peer_id: seat.peer.clone(), reason });
        self.emit(&seat.room, Audience::All, left, now);
        if ask_for_sfu {
            self.request_sfu(seat.room.clone(), sfu_until);
        }
    }

    /// The ICE servers for one participant, with fresh TURN credentials
    /// (named after its peer id) and their lifetime.
    pub(super) fn ice_servers_for(&self, peer: &PeerId, now: Now) -> (Vec<IceServer>, Option<u64>) {
        let mut servers = self.config.ice_servers.clone();
        let Some(turn) = &self.config.turn else { return (servers, None) };
        let credential = turn.issue(peer.as_str(), now.unix_ms / 1000, None);
        servers.push(turn.ice_server(&credential));
        (servers, Some(credential.ttl_s))
    }
}

/// The parts of a welcome that come from the room and the limits.
pub(super) fn welcome_for(room: &Room, room_name: &RoomName, you: &PeerInfo, limits: &Limits) -> Welcome {
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

const BASE32: &[u8; 32] = b"ABCDEFGHJKMNPQRSTVWXYZ0123456789";

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

impl Hub {
    /// This hub may no longer serve `room` (in a cluster, its lease went to
    /// another node): every member still connected is told `notice` and
    /// closed, seats held for a resume are dropped, and the room is gone
    /// from here. Its members come back by joining afresh wherever the room
    /// is now. Nobody is told `peer_left`: everyone goes at once.
    pub fn evict_room(&mut self, room_name: &RoomName, notice: &switchboard_protocol::GoingAway, now: Now) {
        let Some(mut room) = self.rooms.remove(room_name) else { return };
        self.config.room_quota.give_back(1);
        let peers: Vec<PeerId> = room.members().map(|m| m.info.id.clone()).collect();
        for peer in peers {
            let Some(member) = room.remove(&peer) else { continue };
            self.peers -= 1;
            if member.online && self.conns.remove(&member.conn).is_some() {
                let msg = ServerMessage::GoingAway(notice.clone());
                self.out.push_back(Output::Send { to: Recipients::One(member.conn), msg, json: None });
                self.out.push_back(Output::Close { conn: member.conn, reason: CloseReason::GoingAway });
            }
            self.forget(&Seat::new(room_name, &peer), member, now);
        }
        self.out.push_back(Output::RoomEnded { room: room_name.clone() });
        self.settle_joins();
    }
}
