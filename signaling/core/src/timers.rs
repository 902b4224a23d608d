//! Deadlines the hub must act on, in a min-heap with lazy cancellation: an
//! entry that is no longer relevant is simply ignored when it comes due.
//! Deadlines due at the same instant fire in the order of [`Timer`]'s `Ord`,
//! so that two hubs fed the same inputs fire them in the same order.

use crate::hub::ConnId;
use crate::seat::Seat;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;
use switchboard_protocol::RoomName;

/// What a deadline is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// The connection must have joined by now. Keyed by the connection
    /// because it is about one: before it joins it has no seat.
    JoinDeadline(ConnId),
    /// The participant's typing indicator may have expired. Keyed by the
    /// seat, not the connection: a resume changes the connection and the
    /// indicator must still expire.
    TypingExpiry(Seat),
    /// The seat held since the participant's connection dropped is given up
    /// unless it has resumed (or dropped again later: then a later deadline
    /// is the one that counts).
    ResumeDeadline(Seat),
    /// The SFU asked for this room may not be coming: ask again if the room
    /// still has participants and no SFU.
    SfuLaunch(RoomName),
}

/// A min-heap of deadlines.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Timer)>>,
}

impl Timers {
    /// Schedules `timer` at `at`.
    pub fn arm(&mut self, at: Instant, timer: Timer) {
        self.heap.push(Reverse((at, timer)));
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns one timer due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse((_, t))| t),
            _ => None,
        }
    }
}
