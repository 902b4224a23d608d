//! Moving a room to another hub (decision 0019): the owner exports the
//! room's whole state as a [`RoomSnapshot`] and forgets it; the new owner
//! imports it and carries on as if it had had the room all along. Both are
//! silent (no output): the shell decides what the room's connections and
//! its lease do.
//!
//! [`Hub::hand_over`] is what a draining node uses: every member's
//! connection is told `going_away` and closed, its seat held as after a
//! drop (without the `reconnecting` notice: everyone goes at once and comes
//! back within moments), and the room exported. The members resume on the
//! importing node, which replays what they missed.

use super::{CloseReason, ConnState, Hub, Output, Recipients};
use crate::Now;
use crate::chat::ChatLog;
use crate::events::{Budget, ChatDedup, EventLog};
use crate::resume_token::ResumeToken;
use crate::room::{Member, PendingChat, Room};
use crate::seat::Seat;
use crate::snapshot::{
    ExportError, ImportError, MemberSnapshot, PendingChatSnapshot, RoomSnapshot, SNAPSHOT_VERSION,
    SNAPSHOT_VERSIONS_READ,
};
use crate::timers::Timer;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use switchboard_protocol::{GoingAway, LeaveReason, PeerLeft, RoomName, ServerMessage};

/// Rooms remembered as moved away at most (see `Hub::note_moved`).
pub const MAX_MOVED: usize = 4096;

/// Whether `room` has no member left.
fn room_empty(hub: &Hub, room: &RoomName) -> bool {
    hub.rooms.get(room).is_none_or(Room::is_empty)
}

/// What is left of `deadline` at `now`, in nanoseconds.
fn left_ns(deadline: Instant, now: Now) -> u64 {
    u64::try_from(deadline.saturating_duration_since(now.mono).as_nanos()).unwrap_or(u64::MAX)
}

/// The deadline `left` nanoseconds after `now`.
fn deadline(left: u64, now: Now) -> Instant {
    now.mono + Duration::from_nanos(left)
}

impl Hub {
    /// Takes `room` out of this hub as data: afterwards the hub knows
    /// nothing of it (its connections, tokens and held seats included).
    /// Refused while a member's resume waits on a probe.
    pub fn export_room(&mut self, room_name: &RoomName, now: Now) -> Result<RoomSnapshot, ExportError> {
        let room = self.rooms.get(room_name).ok_or(ExportError::NoSuchRoom)?;
        if room.members().any(|m| m.pending.is_some()) {
            return Err(ExportError::ResumeInProgress);
        }
        let mut members = Vec::new();
        for (order, m) in room.members_in_order() {
            let seat = Seat::new(room_name, &m.info.id);
            let mut held_relays: Vec<_> = m.held_relays.iter().map(|(p, n)| (p.clone(), *n)).collect();
            held_relays.sort();
            members.push(MemberSnapshot {
                order,
                conn: m.conn.0,
                online: m.online,
                away_left_ns: self.away.get(&seat).map(|until| left_ns(*until, now)),
                info: m.info.clone(),
                events: m.events.snapshot(),
                chat_ids: m.chat_ids.ids(),
                resume_token: m.resume_token.to_wire(),
                previous_token: m.previous_token.as_ref().map(ResumeToken::to_wire),
                typing_left_ns: m.typing_until.map(|until| left_ns(until, now)),
                held_relays,
                quiet_hold: m.quiet_hold,
                joined_unix_ms: m.joined_unix_ms,
            });
        }
        let pending_chat = room
            .pending_chat
            .iter()
            .map(|p| PendingChatSnapshot { message: p.message.clone(), conn: p.conn.0, id: p.id.clone() })
            .collect();
        let snapshot = RoomSnapshot {
            version: SNAPSHOT_VERSION,
            room: room_name.clone(),
            mode: room.mode,
            next_order: room.next_order(),
            chat: room.chat.snapshot(),
            pending_chat,
            sfu_asked_left_ns: room.sfu_asked_until.map(|until| left_ns(until, now)),
            members,
            created_unix_ms: room.created_unix_ms,
            exported_unix_ms: now.unix_ms,
        };
        // Forget it, and everything that points at it.
        let Some(room) = self.rooms.remove(room_name) else { unreachable!("looked up above") };
        self.config.room_quota.give_back(1);
        for member in room.members() {
            self.peers -= 1;
            let seat = Seat::new(room_name, &member.info.id);
            self.tokens.remove(&member.resume_token);
            if let Some(previous) = &member.previous_token {
                self.tokens.remove(previous);
            }
            self.away.remove(&seat);
            if member.online {
                self.conns.remove(&member.conn);
            }
        }
        Ok(snapshot)
    }

    /// Makes the room a snapshot describes, as it was when exported (its
    /// deadlines counted from `now`). Online members' connections become
    /// this hub's: the shell must reach them here. Pending chat is asked
    /// to be stored again ([`Output::StoreChat`]: storage is idempotent by
    /// `seq`, and the exporter may have stored some of it already).
    pub fn import_room(&mut self, snapshot: RoomSnapshot, now: Now) -> Result<(), ImportError> {
        if !SNAPSHOT_VERSIONS_READ.contains(&snapshot.version) {
            return Err(ImportError::Version(snapshot.version));
        }
        let RoomSnapshot {
            room: room_name,
            mode,
            next_order,
            chat,
            pending_chat,
            sfu_asked_left_ns,
            members,
            created_unix_ms,
            exported_unix_ms,
            ..
        } = snapshot;
        // Time the snapshot spent between the nodes counts against every
        // deadline (a held seat's grace does not grow by a move).
        let waited_ns = if exported_unix_ms == 0 {
            0
        } else {
            now.unix_ms.saturating_sub(exported_unix_ms).saturating_mul(1_000_000)
        };
        let deadline = |left: u64, now: Now| deadline(left.saturating_sub(waited_ns), now);
        if self.rooms.contains_key(&room_name) {
            return Err(ImportError::RoomExists);
        }
        if members.is_empty() {
            return Err(ImportError::Invalid("a room without members"));
        }
        let limits = &self.config.limits;
        let chat = ChatLog::restore(limits.chat_history, limits.chat_history_bytes, chat)
            .ok_or(ImportError::Invalid("chat out of order"))?;
        let mut room = Room::new(limits.chat_history, limits.chat_history_bytes, mode);
        room.chat = chat;
        room.created_unix_ms = created_unix_ms;
        room.set_next_order(next_order);
        let replay = Budget { events: limits.replay_buffer, bytes: limits.replay_buffer_bytes };
        let mut timers = Vec::new();
        let mut away = Vec::new();
        let mut tokens = Vec::new();
        let mut online = Vec::new();
        for m in members {
            let seat = Seat::new(&room_name, &m.info.id);
            let events = EventLog::restore(m.events, replay).ok_or(ImportError::Invalid("event numbers"))?;
            let conn = super::ConnId(m.conn);
            if m.online {
                if m.away_left_ns.is_some() {
                    return Err(ImportError::Invalid("an online member with a held seat"));
                }
                if self.conns.contains_key(&conn) || online.iter().any(|(c, _)| *c == conn) {
                    return Err(ImportError::Invalid("a connection in use"));
                }
                online.push((conn, seat.clone()));
            } else {
                let left = m.away_left_ns.ok_or(ImportError::Invalid("an away member without a deadline"))?;
                let until = deadline(left, now);
                away.push((seat.clone(), until));
                timers.push((until, Timer::ResumeDeadline(seat.clone())));
            }
            let typing_until = m.typing_left_ns.map(|left| deadline(left, now));
            if let Some(until) = typing_until {
                timers.push((until, Timer::TypingExpiry(seat.clone())));
            }
            let resume_token = ResumeToken::from_wire(&m.resume_token);
            let previous_token = m.previous_token.as_deref().map(ResumeToken::from_wire);
            for token in std::iter::once(&resume_token).chain(&previous_token) {
                if self.tokens.contains_key(token) || tokens.iter().any(|(t, _)| t == token) {
                    return Err(ImportError::Invalid("a resume token in use"));
                }
                tokens.push((token.clone(), seat.clone()));
            }
            // Derived, not trusted: held without a notice is exactly
            // offline and not shown reconnecting.
            let quiet_hold = !m.online && !m.info.reconnecting;
            let member = Member {
                conn,
                online: m.online,
                events,
                chat_ids: ChatDedup::restore(m.chat_ids),
                resume_token,
                previous_token,
                pending: None,
                info: m.info,
                typing_until,
                typing_timer_armed: typing_until.is_some(),
                held_relays: m.held_relays.into_iter().collect::<HashMap<_, _>>(),
                quiet_hold,
                joined_unix_ms: m.joined_unix_ms,
            };
            if !room.restore_member(m.order, member) {
                return Err(ImportError::Invalid("join orders or peer ids repeat"));
            }
        }
        if pending_chat.len() > super::MAX_PENDING_CHAT {
            return Err(ImportError::Invalid("too much pending chat"));
        }
        for (seq, p) in (room.chat.last_seq() + 1..).zip(pending_chat) {
            if p.message.seq != seq {
                return Err(ImportError::Invalid("pending chat out of sequence"));
            }
            room.pending_chat.push_back(PendingChat { message: p.message, conn: super::ConnId(p.conn), id: p.id });
        }
        if let Some(left) = sfu_asked_left_ns {
            let until = deadline(left, now);
            room.sfu_asked_until = Some(until);
            if !self.config.limits.sfu_launch_timeout.is_zero() {
                timers.push((until, Timer::SfuLaunch(room_name.clone())));
            }
        }
        if !self.config.room_quota.try_take(self.config.limits.max_rooms) {
            return Err(ImportError::TooManyRooms);
        }
        // Checked: from here nothing fails.
        self.moved.remove(&room_name);
        self.seeds.retain(|(name, _)| *name != room_name);
        self.peers += room.members().count();
        let stores: Vec<_> = room.pending_chat.iter().map(|p| p.message.clone()).collect();
        self.rooms.insert(room_name.clone(), room);
        for (token, seat) in tokens {
            self.tokens.insert(token, seat);
        }
        for (seat, until) in away {
            self.away.insert(seat, until);
        }
        for (conn, seat) in online {
            self.conns.insert(conn, ConnState::Joined(seat));
        }
        for (at, timer) in timers {
            self.timers.arm(at, timer);
        }
        for message in stores {
            self.out.push_back(Output::StoreChat { room: room_name.clone(), message });
        }
        // An SFU room whose SFU stayed behind (see `hand_over`) gets a new
        // one here. A room that moved as it was has asked already.
        let sfu_until = now.mono + self.config.limits.sfu_launch_timeout;
        if self.rooms.get_mut(&room_name).is_some_and(|room| room.ask_for_sfu(sfu_until)) {
            self.request_sfu(room_name, sfu_until);
        }
        Ok(())
    }

    /// A draining node's export: every connection of the room (a member's,
    /// or one waiting to resume a member) is told `notice` and closed, the
    /// members' seats are held for a resume (nobody is told: they all come
    /// back within moments), and the room is exported.
    pub fn hand_over(
        &mut self,
        room_name: &RoomName,
        notice: &GoingAway,
        now: Now,
    ) -> Result<RoomSnapshot, ExportError> {
        if self.config.limits.resume_grace.is_zero() {
            return Err(ExportError::ResumeOff);
        }
        let until = now.mono + self.config.limits.resume_grace;
        let room = self.rooms.get_mut(room_name).ok_or(ExportError::NoSuchRoom)?;
        let mut closing = Vec::new();
        // The room's SFU runs beside this hub and stops with it: its seat
        // goes (the participants are told, in their streams), and the
        // importer asks for a new one at once.
        if let Some(sfu) = room.sfu().map(|m| m.info.id.clone())
            && let Some(member) = room.remove(&sfu)
        {
            room.sfu_asked_until = None;
            self.peers -= 1;
            if member.online {
                closing.push(member.conn);
            }
            if let Some(pending) = &member.pending {
                closing.push(pending.conn);
            }
            let seat = Seat::new(room_name, &sfu);
            self.forget(&seat, Member { pending: None, ..member }, now);
            let left = ServerMessage::PeerLeft(PeerLeft { peer_id: sfu, reason: LeaveReason::Shutdown });
            self.emit(room_name, super::fanout::Audience::All, left, now);
        }
        if room_empty(self, room_name) {
            // Nobody but the SFU: nothing to move.
            return self.end_handed_over(room_name, &closing, notice);
        }
        let Some(room) = self.rooms.get_mut(room_name) else { return Err(ExportError::NoSuchRoom) };
        let mut held = Vec::new();
        for member in room.members_mut() {
            if let Some(pending) = member.pending.take() {
                closing.push(pending.conn);
            }
            if member.online {
                member.online = false;
                member.quiet_hold = true;
                member.events.went_away();
                closing.push(member.conn);
                held.push(Seat::new(room_name, &member.info.id));
            }
        }
        // Connection ids mean nothing on another node: a message waiting
        // to be stored answers nobody there if it fails.
        for pending in &mut room.pending_chat {
            pending.conn = super::ConnId(u64::MAX);
        }
        for seat in held {
            self.away.insert(seat, until);
        }
        self.tell_going_away(&closing, notice);
        let snapshot = self.export_room(room_name, now);
        if snapshot.is_ok() {
            self.note_moved(room_name, now);
        }
        // A resume that was waiting is answered (refused) after its close.
        self.settle_joins();
        snapshot
    }

    /// Remembers that `room` moved away (for a while, at most
    /// [`MAX_MOVED`] rooms): a join for it that was already on its way here
    /// is told to join again (it then reaches the room's new node) rather
    /// than making the room anew here.
    fn note_moved(&mut self, room: &RoomName, now: Now) {
        let until = now.mono + self.config.limits.resume_grace;
        self.moved.retain(|_, u| *u > now.mono);
        if self.moved.len() >= MAX_MOVED
            && let Some(oldest) = self.moved.iter().min_by_key(|(_, u)| **u).map(|(r, _)| r.clone())
        {
            self.moved.remove(&oldest);
        }
        self.moved.insert(room.clone(), until);
    }

    /// Whether `room` moved away from here lately (see `note_moved`).
    pub(super) fn moved_away(&self, room: &RoomName, now: Now) -> bool {
        !self.rooms.contains_key(room) && self.moved.get(room).is_some_and(|until| *until > now.mono)
    }

    /// Tells `conns` `notice` and closes them; they are the hub's no more.
    fn tell_going_away(&mut self, conns: &[super::ConnId], notice: &GoingAway) {
        for conn in conns {
            self.conns.remove(conn);
        }
        if !conns.is_empty() {
            let msg = ServerMessage::GoingAway(notice.clone());
            self.out.push_back(Output::Send { to: Recipients::Many(conns.to_vec()), msg, json: None });
            for &conn in conns {
                self.out.push_back(Output::Close { conn, reason: CloseReason::GoingAway });
            }
        }
    }

    /// A room handed over with nobody left in it once its SFU went: it
    /// simply ends (there is nothing to import).
    fn end_handed_over(
        &mut self,
        room_name: &RoomName,
        closing: &[super::ConnId],
        notice: &GoingAway,
    ) -> Result<RoomSnapshot, ExportError> {
        self.tell_going_away(closing, notice);
        self.rooms.remove(room_name);
        self.config.room_quota.give_back(1);
        self.out.push_back(Output::RoomEnded { room: room_name.clone() });
        self.settle_joins();
        Err(ExportError::NoSuchRoom)
    }
}
