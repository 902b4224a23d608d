//! Sessions: a participant whose connection drops keeps its seat for the
//! resume grace; a join with its resume token takes the seat back and is
//! sent every event it missed. The resume tokens are issued, rotated and
//! revoked here only.

use super::fanout::Audience;
use super::membership::welcome_for;
use super::{ConnId, ConnState, Hub, Output};
use crate::Now;
use crate::resume_token::ResumeToken;
use crate::room::{Member, PendingResume};
use crate::seat::Seat;
use crate::timers::Timer;
use switchboard_protocol::{
    ErrorCode, LeaveReason, PeerUpdated, RequestId, Resume, Role, RoomName, ServerMessage, TypingNotice, Welcome,
};

impl Hub {
    /// Whether a connection that ended for `reason` keeps the seat of its
    /// member for a resume.
    pub(super) fn holds_seat(&self, reason: LeaveReason, seat: &Seat) -> bool {
        !self.config.limits.resume_grace.is_zero()
            && matches!(reason, LeaveReason::Disconnected | LeaveReason::Timeout)
            && self.member(&seat.room, &seat.peer).is_some()
    }

    /// Holds the seat of a participant whose connection dropped.
    pub(super) fn suspend(&mut self, seat: &Seat, now: Now) {
        let until = now.mono + self.config.limits.resume_grace;
        let Some(member) = self.member_mut(seat) else { return };
        member.online = false;
        member.info.reconnecting = true;
        member.events.went_away();
        let was_typing = member.typing_until.take().is_some();
        let info = member.info.clone();
        let pending = member.pending.take();
        self.away.insert(seat.clone(), until);
        self.timers.arm(until, Timer::ResumeDeadline(seat.clone()));
        let peer = &seat.peer;
        if was_typing {
            let notice = ServerMessage::Typing(TypingNotice { from: peer.clone(), active: false });
            self.emit(&seat.room, Audience::AllBut(peer), notice, now);
        }
        let updated = ServerMessage::PeerUpdated(PeerUpdated { peer: info });
        self.emit(&seat.room, Audience::AllBut(peer), updated, now);
        if let Some(pending) = pending {
            self.complete_resume(pending, seat, now);
        }
    }

    /// A `ResumeDeadline` came due: the seat is given up unless its member
    /// came back (or dropped again since, with a later deadline).
    pub(super) fn resume_deadline(&mut self, seat: &Seat, now: Now) {
        if self.away.get(seat).is_some_and(|until| *until <= now.mono) {
            self.away.remove(seat);
            self.remove_member(seat, LeaveReason::Timeout, now);
        }
    }

    /// Turns a waiting resume away; its connection may join afresh.
    pub(super) fn refuse(&mut self, pending: PendingResume, why: &str, now: Now) {
        self.conns.insert(pending.conn, ConnState::Lobby);
        self.timers.arm(now.mono + self.config.limits.join_timeout, Timer::JoinDeadline(pending.conn));
        self.error(pending.conn, pending.id, ErrorCode::ResumeFailed, why);
    }

    /// A join that asks to take back a dropped session.
    pub(super) fn resume(
        &mut self,
        conn: ConnId,
        id: Option<RequestId>,
        room_name: &RoomName,
        (identity, role): (Option<&str>, Role),
        resume: &Resume,
        now: Now,
    ) {
        // The same answer for a token that never existed, expired, was
        // replaced by a newer one or belongs to another room: a guesser
        // learns nothing.
        const UNKNOWN: &str = "unknown or expired resume token: join afresh";
        let token = ResumeToken::from_wire(&resume.token);
        let Some(seat) = self.tokens.get(&token).cloned() else {
            if self.replaced.contains(&token, now.mono) {
                // Final, as for the replaced connection itself: joining
                // afresh would take the seat back from the newer session.
                self.conns.remove(&conn);
                return self.fatal(conn, ErrorCode::Replaced, "the same identity joined from another connection");
            }
            return self.error(conn, id, ErrorCode::ResumeFailed, UNKNOWN);
        };
        let Some(member) = self.member_mut(&seat) else {
            return self.error(conn, id, ErrorCode::ResumeFailed, UNKNOWN);
        };
        // A participant cannot take an SFU's seat, nor the other way round.
        if seat.room != *room_name || member.info.identity.as_deref() != identity || member.info.role != role {
            return self.error(conn, id, ErrorCode::ResumeFailed, UNKNOWN);
        }
        if member.events.since(resume.received).is_none() {
            // Its own client, which will join afresh: a seat held quietly
            // (a handover) is shown as what it now is, reconnecting, until
            // the grace ends it, rather than as a member still there.
            if member.quiet_hold {
                member.quiet_hold = false;
                member.info.reconnecting = true;
                let updated = ServerMessage::PeerUpdated(PeerUpdated { peer: member.info.clone() });
                self.emit(&seat.room, Audience::AllBut(&seat.peer), updated, now);
            }
            let message = format!("the events after {} are no longer kept: join afresh", resume.received);
            return self.error(conn, id, ErrorCode::ResumeFailed, message);
        }
        let pending = PendingResume { conn, id, received: resume.received, token };
        if member.online {
            // Either the client noticed a drop before the server did (a
            // half-open connection), or someone else holds the token: only
            // the old connection's silence tells which.
            if member.pending.is_some() {
                let message = "another resume of this session is in progress";
                return self.error(conn, pending.id, ErrorCode::ResumeFailed, message);
            }
            let old = member.conn;
            member.pending = Some(pending);
            self.conns.insert(conn, ConnState::Resuming(seat));
            self.out.push_back(Output::Probe { conn: old });
            return;
        }
        self.complete_resume(pending, &seat, now);
    }

    /// Reattaches a held seat to the connection that resumed it: a welcome
    /// with a fresh token, then every event it missed, in order.
    fn complete_resume(&mut self, pending: PendingResume, seat: &Seat, now: Now) {
        let token = ResumeToken::generate(&mut self.entropy);
        let (ice_servers, ice_servers_ttl_s) = self.ice_servers_for(&seat.peer, now);
        let limits = &self.config.limits;
        let Some(room) = self.rooms.get_mut(&seat.room) else { return };
        let Some(member) = room.get(&seat.peer) else { return };
        let Some(missed) = member.events.since(pending.received) else {
            // Events were forgotten while the old connection was probed.
            let why = "the events after the resume point are no longer kept: join afresh";
            return self.refuse(pending, why, now);
        };
        let missed: Vec<ServerMessage> = missed.map(|e| ServerMessage::clone(e)).collect();
        // A member held by a handover was never shown as reconnecting
        // (`quiet_hold`): nobody needs telling that it is back.
        let was_reconnecting = member.info.reconnecting;
        let mut info = member.info.clone();
        info.reconnecting = false;
        // A resumed client keeps its own state and catches up from the
        // replay, so the chat page would only repeat what it has.
        let welcome = Welcome {
            id: pending.id,
            chat: Vec::new(),
            ice_servers,
            ice_servers_ttl_s,
            resume_token: token.to_wire(),
            resumed: true,
            replayed: missed.len() as u64,
            ..welcome_for(room, &seat.room, &info, limits)
        };
        let Some(member) = room.get_mut(&seat.peer) else { return };
        member.conn = pending.conn;
        // The token the client is known to hold is the one it just resumed
        // with: that one keeps working until it shows it has the new one.
        // Every other token of the session (the current one it may never
        // have read, an older previous one) dies now.
        let old_token = std::mem::replace(&mut member.resume_token, token.clone());
        let old_previous = member.previous_token.replace(pending.token.clone());
        let stale: Vec<ResumeToken> =
            [Some(old_token), old_previous].into_iter().flatten().filter(|t| *t != pending.token).collect();
        member.online = true;
        member.quiet_hold = false;
        member.info = info.clone();
        member.events.came_back();
        member.held_relays.clear();
        self.away.remove(seat);
        for stale in stale {
            self.tokens.remove(&stale);
        }
        self.tokens.insert(pending.token, seat.clone());
        self.tokens.insert(token, seat.clone());
        self.conns.insert(pending.conn, ConnState::Joined(seat.clone()));
        self.send(pending.conn, ServerMessage::Welcome(Box::new(welcome)));
        for event in missed {
            self.send(pending.conn, event);
        }
        if was_reconnecting {
            let updated = ServerMessage::PeerUpdated(PeerUpdated { peer: info });
            self.emit(&seat.room, Audience::AllBut(&seat.peer), updated, now);
        }
    }

    /// A fresh resume token for the new session in `seat`, registered.
    pub(super) fn open_session(&mut self, seat: &Seat) -> ResumeToken {
        let token = ResumeToken::generate(&mut self.entropy);
        self.tokens.insert(token.clone(), seat.clone());
        token
    }

    /// Ends the session of `old`, removed from `seat` because its identity
    /// joined again. Its client may be away and never read its `replaced`
    /// error: a resume with its tokens is told instead, for a grace.
    pub(super) fn end_replaced(&mut self, seat: &Seat, old: Member, now: Now) {
        let until = now.mono + self.config.limits.resume_grace;
        for token in std::iter::once(&old.resume_token).chain(&old.previous_token) {
            self.replaced.record(token.clone(), until);
        }
        self.forget(seat, old, now);
    }

    /// The member spoke on its (resumed) connection, so it has read the
    /// welcome with its new token: the previous one stops working.
    pub(super) fn confirm_token(&mut self, seat: &Seat) {
        let Some(member) = self.rooms.get_mut(&seat.room).and_then(|r| r.get_mut(&seat.peer)) else { return };
        if let Some(previous) = member.previous_token.take() {
            self.tokens.remove(&previous);
        }
    }

    /// Drops what the hub keeps about a member beyond its room: its resume
    /// tokens, its held seat, and a resume waiting on it.
    pub(super) fn forget(&mut self, seat: &Seat, member: Member, now: Now) {
        self.tokens.remove(&member.resume_token);
        if let Some(previous) = &member.previous_token {
            self.tokens.remove(previous);
        }
        self.away.remove(seat);
        if let Some(pending) = member.pending {
            self.refuse(pending, "the session ended: join afresh", now);
        }
    }
}
