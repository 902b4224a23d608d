//! The hub's inputs, each with the current time, and where each client
//! message goes once the connection's state is known.

use super::{CloseReason, ConnId, ConnState, Hub, Output, Recipients};
use crate::Now;
use crate::seat::Seat;
use crate::timers::{Timer, Timers};
use std::time::Instant;
use switchboard_protocol::{
    Bare, ClientMessage, ErrorCode, GoingAway, IceServerList, LeaveReason, Ping, Pong, RoomName, ServerMessage,
};

impl Hub {
    /// A new connection: it must join within the join timeout.
    pub fn open(&mut self, conn: ConnId, now: Now) {
        self.open_since(conn, now.mono, now);
    }

    /// A connection not in a room, moved here from another hub shard (its
    /// join is for a room of this shard): it must still have joined within
    /// the join timeout of `opened`, when it connected, so that moving
    /// between shards never buys a lobby connection more time.
    pub fn open_since(&mut self, conn: ConnId, opened: Instant, _now: Now) {
        if let Some(notice) = &self.going_away {
            let msg = ServerMessage::GoingAway(notice.clone());
            self.out.push_back(Output::Send { to: Recipients::One(conn), msg, json: None });
            self.out.push_back(Output::Close { conn, reason: CloseReason::GoingAway });
            return;
        }
        self.conns.insert(conn, ConnState::Lobby);
        self.timers.arm(opened + self.config.limits.join_timeout, Timer::JoinDeadline(conn));
    }

    /// A connection not in a room moved to another hub shard: forget it
    /// without a word (it is not closed). A connection in a room or
    /// resuming is never moved; for one, this does nothing and says so
    /// (`false`: the shell must keep reaching it here).
    pub fn moved_out(&mut self, conn: ConnId) -> bool {
        if matches!(self.conns.get(&conn), Some(ConnState::Lobby)) {
            self.conns.remove(&conn);
            self.joins_owed.remove(&conn);
            return true;
        }
        false
    }

    /// A connection is gone (closed by the client, the network or the shell).
    /// When it dropped (`disconnected` or `timeout`) and resume is on, its
    /// participant's seat is held for the resume grace and the others see it
    /// `reconnecting`; otherwise it leaves its room with `reason`. Calling it
    /// for an unknown or already closed connection does nothing.
    pub fn disconnect(&mut self, conn: ConnId, reason: LeaveReason, now: Now) {
        self.drop_connection(conn, reason, now);
        self.settle_joins();
    }

    fn drop_connection(&mut self, conn: ConnId, reason: LeaveReason, now: Now) {
        self.joins_owed.remove(&conn);
        match self.conns.remove(&conn) {
            Some(ConnState::Joined(seat)) => {
                if self.holds_seat(reason, &seat) {
                    self.suspend(&seat, now);
                } else {
                    self.remove_member(&seat, reason, now);
                }
            }
            Some(ConnState::Resuming(seat)) => {
                if let Some(member) = self.member_mut(&seat)
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
        let Some(ConnState::Joined(seat)) = self.conns.get(&conn) else { return };
        let seat = seat.clone();
        let Some(member) = self.member_mut(&seat) else { return };
        if let Some(pending) = member.pending.take() {
            self.refuse(pending, "the session is live on another connection: join afresh", now);
        }
        self.settle_joins();
    }

    /// Handles one message from `conn`.
    pub fn message(&mut self, conn: ConnId, msg: ClientMessage, now: Now) {
        self.handle_message(conn, msg, now);
        self.settle_joins();
    }

    fn handle_message(&mut self, conn: ConnId, msg: ClientMessage, now: Now) {
        let Some(state) = self.conns.get(&conn) else { return };
        let joined = match state {
            ConnState::Joined(seat) => Some(seat.clone()),
            ConnState::Lobby => None,
            ConnState::Resuming(_) => return self.while_resuming(conn, msg, now),
        };
        match (msg, joined) {
            (ClientMessage::Ping(Ping { id, ack }), joined) => {
                if let Some(seat) = joined {
                    if let Some(ack) = ack
                        && let Some(member) = self.member_mut(&seat)
                    {
                        member.events.ack(ack);
                    }
                    self.confirm_token(&seat);
                }
                self.send(conn, ServerMessage::Pong(Pong { id }));
            }
            (ClientMessage::Leave(_), joined) => {
                self.conns.remove(&conn);
                if let Some(seat) = joined {
                    self.remove_member(&seat, LeaveReason::Left, now);
                }
                self.out.push_back(Output::Close { conn, reason: CloseReason::Normal });
            }
            (ClientMessage::Join(join), None) => {
                self.joins_owed.insert(conn);
                self.join(conn, join, now);
            }
            (ClientMessage::Join(join), Some(_)) => {
                self.error(conn, join.id, ErrorCode::AlreadyJoined, "this connection has already joined a room");
            }
            (msg, None) => {
                let id = msg.request_id().cloned();
                let message = format!("join a room before sending {}", msg.kind().as_str());
                self.error(conn, id, ErrorCode::NotJoined, message);
            }
            (ClientMessage::IceServers(Bare { id }), Some(seat)) => {
                let (ice_servers, ice_servers_ttl_s) = self.ice_servers_for(&seat.peer, now);
                self.send(conn, ServerMessage::IceServers(IceServerList { id, ice_servers, ice_servers_ttl_s }));
            }
            (msg, Some(seat)) => self.in_room(conn, &seat, msg, now),
        }
    }

    /// A connection waiting for its resume may only ping or leave.
    fn while_resuming(&mut self, conn: ConnId, msg: ClientMessage, now: Now) {
        match msg {
            ClientMessage::Ping(Ping { id, .. }) => self.send(conn, ServerMessage::Pong(Pong { id })),
            ClientMessage::Leave(_) => {
                self.drop_connection(conn, LeaveReason::Left, now);
                self.out.push_back(Output::Close { conn, reason: CloseReason::Normal });
            }
            msg => {
                let id = msg.request_id().cloned();
                self.error(conn, id, ErrorCode::NotJoined, "a resume of this connection is in progress");
            }
        }
    }

    /// A message from the member in `seat`, to its room.
    fn in_room(&mut self, conn: ConnId, seat: &Seat, msg: ClientMessage, now: Now) {
        if !self.rooms.contains_key(&seat.room) {
            // Joined implies the room exists; the invariant tests hold us to it.
            debug_assert!(false, "joined connection without a room");
            return;
        }
        self.confirm_token(seat);
        match msg {
            ClientMessage::Offer(relay) => self.offer(conn, seat, relay, now),
            ClientMessage::Answer(relay) => self.answer(conn, seat, relay, now),
            ClientMessage::Candidate(relay) => self.candidate(conn, seat, relay, now),
            ClientMessage::EndOfCandidates(relay) => self.end_of_candidates(conn, seat, relay, now),
            ClientMessage::Chat(send) => self.chat(conn, seat, send, now),
            ClientMessage::ChatHistory(request) => self.chat_history(conn, seat, request),
            ClientMessage::Typing(update) => self.typing(seat, update.active, now),
            ClientMessage::Read(receipt) => self.read(conn, seat, receipt, now),
            ClientMessage::Media(update) => self.media(seat, &update, now),
            // Handled before room dispatch.
            ClientMessage::Join(_)
            | ClientMessage::Ping(_)
            | ClientMessage::Leave(_)
            | ClientMessage::IceServers(_) => {}
        }
    }

    /// Fires every deadline due at `now`, in deadline order (ties in the
    /// order of [`Timer`]).
    pub fn timeout(&mut self, now: Now) {
        while let Some(timer) = self.timers.pop_due(now.mono) {
            match timer {
                Timer::JoinDeadline(conn) => {
                    if matches!(self.conns.get(&conn), Some(ConnState::Lobby)) {
                        self.conns.remove(&conn);
                        self.fatal(conn, ErrorCode::JoinTimeout, "no join within the join timeout");
                    }
                }
                Timer::TypingExpiry(seat) => self.expire_typing(&seat, now),
                Timer::ResumeDeadline(seat) => self.resume_deadline(&seat, now),
                Timer::SfuLaunch(room) => self.sfu_launch_expired(&room, now),
            }
        }
        self.settle_joins();
    }

    /// The server is going away: every connection is told so and closed (in
    /// connection order), and the hub forgets everything. `now` is taken
    /// like every input's; nothing in a shutdown depends on it today.
    pub fn shutdown(&mut self, notice: &GoingAway, _now: Now) {
        self.going_away = Some(notice.clone());
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        self.conns.clear();
        self.joins_owed.clear();
        self.config.room_quota.give_back(self.rooms.len());
        let ended: Vec<RoomName> = self.rooms.keys().cloned().collect();
        self.rooms.clear();
        self.out.extend(ended.into_iter().map(|room| Output::RoomEnded { room }));
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
}
