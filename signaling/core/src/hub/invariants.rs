//! What must hold between the hub's maps after every input: checked by the
//! tests and the fuzzer, never in production.

use super::{ConnState, Hub};
use crate::room::Room;
use crate::seat::Seat;
use switchboard_protocol::{PeerId, RoomName};

/// A broken invariant; the text says which, about whom. Rooms are walked
/// in name order and members in join order, so the same broken state is
/// always reported the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvariantViolation {
    /// A room with no members is still kept.
    #[error("room {0} is empty but still exists")]
    EmptyRoom(RoomName),
    /// An online member's connection does not say it speaks for it.
    #[error("member {seat} has conn state {state}")]
    ConnState {
        /// The member.
        seat: Seat,
        /// What its connection's state is instead (debug text).
        state: String,
    },
    /// A member is away but no seat is held for it.
    #[error("member {0} is away but holds no seat")]
    AwayWithoutSeat(Seat),
    /// `reconnecting` is not the opposite of `online`.
    #[error("member {0} reconnecting flag disagrees")]
    ReconnectingFlag(PeerId),
    /// A member's current resume token does not lead back to it.
    #[error("member {seat} token maps to {found}")]
    Token {
        /// The member.
        seat: Seat,
        /// Where its token leads instead (debug text).
        found: String,
    },
    /// A read receipt beyond the room's last chat message.
    #[error("member {0} read beyond the last seq")]
    ReadBeyondLast(PeerId),
    /// An SFU room has participants, no SFU, and nobody asked for one.
    #[error("SFU room {0} has participants and no SFU, and none was asked for")]
    SfuNotAsked(RoomName),
    /// The participant count disagrees with the rooms.
    #[error("peer count {count} but {members} members")]
    PeerCount {
        /// The count kept for metrics.
        count: usize,
        /// Members found in the rooms.
        members: usize,
    },
    /// Tokens that belong to nobody, or members without one.
    #[error("{tokens} tokens for {members} members ({previous} previous)")]
    TokenCount {
        /// Tokens in the map.
        tokens: usize,
        /// Members.
        members: usize,
        /// Members that also hold a previous token.
        previous: usize,
    },
    /// Seats held for members that are not away.
    #[error("{held} seats held but {away} members away")]
    AwayCount {
        /// Seats held.
        held: usize,
        /// Members away.
        away: usize,
    },
    /// Joined connections without a member, or the reverse.
    #[error("{joined} joined connections but {online} members online")]
    JoinedCount {
        /// Connections in the joined state.
        joined: usize,
        /// Members online.
        online: usize,
    },
}

impl Hub {
    /// Checks the hub's internal invariants; for tests and fuzzing.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        use InvariantViolation as V;
        let mut members = 0;
        let mut online = 0;
        for (name, room) in &self.rooms {
            if room.is_empty() {
                return Err(V::EmptyRoom(name.clone()));
            }
            for m in room.members() {
                members += 1;
                let seat = Seat::new(name, &m.info.id);
                if m.online {
                    online += 1;
                    match self.conns.get(&m.conn) {
                        Some(ConnState::Joined(s)) if *s == seat => {}
                        other => return Err(V::ConnState { seat, state: format!("{other:?}") }),
                    }
                } else if !self.away.contains_key(&seat) {
                    return Err(V::AwayWithoutSeat(seat));
                }
                if m.info.reconnecting == (m.online || m.quiet_hold) || (m.online && m.quiet_hold) {
                    return Err(V::ReconnectingFlag(m.info.id.clone()));
                }
                match self.tokens.get(&m.resume_token) {
                    Some(s) if *s == seat => {}
                    other => return Err(V::Token { seat, found: format!("{other:?}") }),
                }
                if m.info.read_seq > room.chat.last_seq() {
                    return Err(V::ReadBeyondLast(m.info.id.clone()));
                }
            }
            if room.wants_sfu() {
                return Err(V::SfuNotAsked(name.clone()));
            }
        }
        if members != self.peers {
            return Err(V::PeerCount { count: self.peers, members });
        }
        let previous = self.rooms.values().flat_map(Room::members).filter(|m| m.previous_token.is_some()).count();
        if self.tokens.len() != members + previous {
            return Err(V::TokenCount { tokens: self.tokens.len(), members, previous });
        }
        if self.away.len() != members - online {
            return Err(V::AwayCount { held: self.away.len(), away: members - online });
        }
        let joined = self.conns.values().filter(|s| matches!(s, ConnState::Joined(_))).count();
        if joined != online {
            return Err(V::JoinedCount { joined, online });
        }
        Ok(())
    }
}
