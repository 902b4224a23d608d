//! Deadlines the hub must act on, in a min-heap with lazy cancellation: an
//! entry that is no longer relevant is simply ignored when it comes due.

use crate::hub::ConnId;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;
use switchboard_protocol::{PeerId, RoomName};

/// What a deadline is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// The connection must have joined by now.
    JoinDeadline(ConnId),
    /// The participant's typing indicator may have expired. Keyed by the
    /// seat, not the connection: a resume changes the connection and the
    /// indicator must still expire.
    TypingExpiry(RoomName, PeerId),
    /// The seat held since this connection dropped is given up unless the
    /// participant has resumed.
    ResumeDeadline(ConnId),
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
