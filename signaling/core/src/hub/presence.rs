//! Presence: typing indicators (with their expiry), read receipts and
//! media state, each shown to the rest of the room.

use super::fanout::Audience;
use super::{ConnId, Hub};
use crate::Now;
use crate::seat::Seat;
use crate::timers::Timer;
use switchboard_protocol::{
    ErrorCode, MediaState, MediaUpdate, PeerUpdated, ReadNotice, ReadReceipt, ServerMessage, TypingNotice,
};

impl Hub {
    /// The member starts or stops typing; the others hear of a change.
    pub(super) fn typing(&mut self, seat: &Seat, active: bool, now: Now) {
        let ttl = self.config.limits.typing_ttl;
        let Some(member) = self.rooms.get_mut(&seat.room).and_then(|r| r.get_mut(&seat.peer)) else { return };
        let was_typing = member.typing_until.is_some();
        if active {
            member.typing_until = Some(now.mono + ttl);
            if !member.typing_timer_armed {
                member.typing_timer_armed = true;
                self.timers.arm(now.mono + ttl, Timer::TypingExpiry(seat.clone()));
            }
        } else {
            member.typing_until = None;
        }
        if was_typing != active {
            let notice = ServerMessage::Typing(TypingNotice { from: seat.peer.clone(), active });
            self.emit(&seat.room, Audience::AllBut(&seat.peer), notice, now);
        }
    }

    /// A `TypingExpiry` came due: the indicator clears unless it was
    /// renewed (then the timer is armed again for the renewed expiry).
    pub(super) fn expire_typing(&mut self, seat: &Seat, now: Now) {
        let Some(member) = self.rooms.get_mut(&seat.room).and_then(|r| r.get_mut(&seat.peer)) else { return };
        match member.typing_until {
            Some(until) if until > now.mono => {
                self.timers.arm(until, Timer::TypingExpiry(seat.clone()));
            }
            Some(_) => {
                member.typing_until = None;
                member.typing_timer_armed = false;
                let notice = ServerMessage::Typing(TypingNotice { from: seat.peer.clone(), active: false });
                self.emit(&seat.room, Audience::AllBut(&seat.peer), notice, now);
            }
            None => member.typing_timer_armed = false,
        }
    }

    /// The member has read the chat up to `seq`; receipts only move forward.
    pub(super) fn read(&mut self, conn: ConnId, seat: &Seat, receipt: ReadReceipt, now: Now) {
        let ReadReceipt { id, seq } = receipt;
        let Some(room) = self.rooms.get_mut(&seat.room) else { return };
        let last = room.chat.last_seq();
        if seq > last {
            let message = format!("seq {seq} is beyond the latest message ({last})");
            return self.error(conn, id, ErrorCode::InvalidMessage, message);
        }
        let Some(member) = room.get_mut(&seat.peer) else { return };
        if seq <= member.info.read_seq {
            return; // Receipts only move forward; a repeat is harmless.
        }
        member.info.read_seq = seq;
        let notice = ServerMessage::Read(ReadNotice { from: seat.peer.clone(), seq });
        self.emit(&seat.room, Audience::AllBut(&seat.peer), notice, now);
    }

    /// The member muted or unmuted; the others hear of a change.
    pub(super) fn media(&mut self, seat: &Seat, update: &MediaUpdate, now: Now) {
        let Some(member) = self.rooms.get_mut(&seat.room).and_then(|r| r.get_mut(&seat.peer)) else { return };
        let media = MediaState { mic_muted: update.mic_muted, camera_muted: update.camera_muted };
        if member.info.media == media {
            return;
        }
        member.info.media = media;
        let peer = member.info.clone();
        self.emit(&seat.room, Audience::AllBut(&seat.peer), ServerMessage::PeerUpdated(PeerUpdated { peer }), now);
    }
}
