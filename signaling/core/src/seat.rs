//! A member's place in the hub: which room, which peer. Everything the hub
//! keeps about a member outside its room (its resume tokens, a seat held
//! for a resume, its timers) points at a [`Seat`], never at a connection:
//! a resume moves the member to another connection and all of it must
//! follow.

use std::fmt;
use switchboard_protocol::{PeerId, RoomName};

/// A member of a room, by room and peer id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Seat {
    /// The room.
    pub room: RoomName,
    /// The member's peer id in it.
    pub peer: PeerId,
}

impl Seat {
    /// The seat of `peer` in `room`.
    pub fn new(room: &RoomName, peer: &PeerId) -> Self {
        Self { room: room.clone(), peer: peer.clone() }
    }
}

impl fmt::Display for Seat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.room, self.peer)
    }
}
