//! The rooms a server may hold, shared by its hub shards.
//!
//! `max_rooms` is a limit of the server, not of one shard: rooms are spread
//! over shards by a hash of their name, so a per-shard share would refuse a
//! room while other shards had room to spare. Each shard takes a slot from
//! the one counter when it creates a room and gives it back when the room
//! goes. One hub alone gets a counter of its own, and stays deterministic.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A count of rooms held against `max_rooms`, shared by clones.
#[derive(Debug, Clone, Default)]
pub struct RoomQuota(Arc<AtomicUsize>);

impl RoomQuota {
    /// Takes a slot unless `max` are taken.
    pub fn try_take(&self, max: usize) -> bool {
        self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).is_ok()
    }

    /// Gives `n` slots back.
    pub fn give_back(&self, n: usize) {
        let _ = self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| Some(taken.saturating_sub(n)));
    }

    /// Slots taken now.
    pub fn taken(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_count_up_to_the_limit() {
        let (a, b) = (RoomQuota::default(), RoomQuota::default());
        let a2 = a.clone();
        assert!(a.try_take(2) && a2.try_take(2));
        assert!(!a.try_take(2), "the third room over a limit of 2");
        assert!(b.try_take(2), "another quota is separate");
        a2.give_back(1);
        assert!(a.try_take(2));
        a.give_back(5);
        assert_eq!(a.taken(), 0, "never below zero");
    }
}
