//! Fan-out: room events to the members they are for (numbered in each one's
//! event stream, kept for a resume), replies to one connection, errors.

use super::{ConnId, Hub, Output, Recipients};
use crate::Now;
use crate::events::Overflow;
use crate::seat::Seat;
use std::sync::Arc;
use switchboard_protocol::{ErrorCode, ErrorMessage, LeaveReason, PeerId, RequestId, Role, RoomName, ServerMessage};

/// Who in a room an event is for.
#[derive(Debug, Clone, Copy)]
pub(super) enum Audience<'a> {
    All,
    AllBut(&'a PeerId),
    One(&'a PeerId),
}

impl Hub {
    /// Sends an event to members of a room, numbering it in each one's
    /// stream; members that are away only keep it for their resume. The
    /// recipients are in join order.
    pub(super) fn emit(&mut self, room_name: &RoomName, audience: Audience<'_>, msg: ServerMessage, now: Now) {
        let Some(room) = self.rooms.get_mut(room_name) else { return };
        // Written once per event, whoever it reaches: its size counts
        // against the replay budgets, and the shell sends this very text.
        let json = msg.to_json();
        let bytes = json.len();
        let event = Arc::new(msg);
        let mut conns = Vec::new();
        let mut overflowed = Vec::new();
        // The SFU forwards media: room chat and presence are not for it, and
        // kept for its resume they would fill its replay budget for nothing.
        let for_sfu = !matches!(
            *event,
            ServerMessage::Chat(_) | ServerMessage::Typing(_) | ServerMessage::Read(_) | ServerMessage::PeerUpdated(_)
        );
        for member in room.members_mut() {
            let wanted = match audience {
                Audience::All => true,
                Audience::AllBut(peer) => member.info.id != *peer,
                Audience::One(peer) => member.info.id == *peer,
            } && (for_sfu || member.info.role != Role::Sfu);
            if !wanted {
                continue;
            }
            match member.events.record(&event, bytes, member.online) {
                Ok(()) if member.online => conns.push(member.conn),
                Ok(()) => {}
                Err(Overflow) => overflowed.push(Seat::new(room_name, &member.info.id)),
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
        for seat in overflowed {
            self.remove_member(&seat, LeaveReason::SlowConsumer, now);
        }
    }

    /// A reply to one connection, outside any event stream.
    pub(super) fn send(&mut self, conn: ConnId, msg: ServerMessage) {
        self.out.push_back(Output::Send { to: Recipients::One(conn), msg, json: None });
    }

    /// A recoverable error: the connection stays.
    pub(super) fn error(&mut self, conn: ConnId, id: Option<RequestId>, code: ErrorCode, message: impl Into<String>) {
        self.send(conn, ServerMessage::Error(ErrorMessage::recoverable(id, code, message)));
    }

    /// A fatal error, then the connection is closed.
    pub(super) fn fatal(&mut self, conn: ConnId, code: ErrorCode, message: &str) {
        self.send(conn, ServerMessage::Error(ErrorMessage::fatal(None, code, message)));
        self.out.push_back(Output::Close { conn, reason: super::CloseReason::Error(code) });
    }
}
