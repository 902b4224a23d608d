//! Relays: offers, answers, candidates and end-of-candidates from one
//! member to another of the same room, with the addressing rule of SFU
//! rooms and a bound on what may wait for a member that is away.

use super::fanout::Audience;
use super::{ConnId, Hub};
use crate::Now;
use crate::seat::Seat;
use switchboard_protocol::{
    CandidateRelay, DescriptionRelay, EndOfCandidatesRelay, ErrorCode, PeerId, RelayedCandidate, RelayedDescription,
    RelayedEndOfCandidates, RequestId, Role, RoomMode, SdpType, ServerMessage,
};

impl Hub {
    pub(super) fn offer(&mut self, conn: ConnId, seat: &Seat, relay: DescriptionRelay, now: Now) {
        let DescriptionRelay { id, to, description } = relay;
        if description.kind != SdpType::Offer {
            let message = "an offer must carry a description of type offer";
            return self.error(conn, id, ErrorCode::InvalidDescription, message);
        }
        let msg = ServerMessage::Offer(RelayedDescription { from: seat.peer.clone(), description });
        self.relay(conn, seat, id, &to, msg, now);
    }

    pub(super) fn answer(&mut self, conn: ConnId, seat: &Seat, relay: DescriptionRelay, now: Now) {
        let DescriptionRelay { id, to, description } = relay;
        if !matches!(description.kind, SdpType::Answer | SdpType::Pranswer) {
            let message = "an answer must carry a description of type answer or pranswer";
            return self.error(conn, id, ErrorCode::InvalidDescription, message);
        }
        let msg = ServerMessage::Answer(RelayedDescription { from: seat.peer.clone(), description });
        self.relay(conn, seat, id, &to, msg, now);
    }

    pub(super) fn candidate(&mut self, conn: ConnId, seat: &Seat, relay: CandidateRelay, now: Now) {
        let CandidateRelay { id, to, candidate } = relay;
        let msg = ServerMessage::Candidate(RelayedCandidate { from: seat.peer.clone(), candidate });
        self.relay(conn, seat, id, &to, msg, now);
    }

    pub(super) fn end_of_candidates(&mut self, conn: ConnId, seat: &Seat, relay: EndOfCandidatesRelay, now: Now) {
        let EndOfCandidatesRelay { id, to } = relay;
        let msg = ServerMessage::EndOfCandidates(RelayedEndOfCandidates { from: seat.peer.clone() });
        self.relay(conn, seat, id, &to, msg, now);
    }

    /// Sends `msg` from the member in `seat` (speaking on `conn`) to `to`.
    fn relay(&mut self, conn: ConnId, seat: &Seat, id: Option<RequestId>, to: &PeerId, msg: ServerMessage, now: Now) {
        let held = self.config.limits.held_relays_per_sender;
        let Some(r) = self.rooms.get_mut(&seat.room) else { return };
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
            Some(target) if target != conn => self.emit(&seat.room, Audience::One(to), msg, now),
            Some(_) => self.error(conn, id, ErrorCode::UnknownPeer, "cannot relay to yourself"),
            // The same answer whether the peer is elsewhere or nowhere: a
            // client learns nothing about other rooms.
            None => self.error(conn, id, ErrorCode::UnknownPeer, format!("peer {to} is not in this room")),
        }
    }
}
