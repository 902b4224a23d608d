//! The hub shards of one server: several hub tasks, each the only owner of
//! the rooms placed on it, so that a server uses all its cores while every
//! room keeps one owner (and with it its order, its `seq` and its resumes).

use crate::hub_task::HubEvent;
use switchboard_core::ConnId;
use switchboard_protocol::RoomName;
use tokio::sync::mpsc;

/// Upper bound on `hub_shards`: more shards than this only add tasks.
pub const MAX_HUB_SHARDS: usize = 256;

/// The shard of `shards` that owns `room`: a fixed hash of its name
/// (FNV-1a, the same in every process and every release), so that every
/// connection of a room meets in one place.
pub fn place(room: &RoomName, shards: usize) -> usize {
    let hash = room
        .as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3));
    usize::try_from(hash % shards.max(1) as u64).unwrap_or(0)
}

/// The inboxes of the hub shards, and the rule that places rooms on them.
#[derive(Debug)]
pub struct Shards {
    inboxes: Vec<mpsc::Sender<HubEvent>>,
}

impl Shards {
    /// The shards behind these inboxes (at least one).
    pub fn new(inboxes: Vec<mpsc::Sender<HubEvent>>) -> Self {
        assert!(!inboxes.is_empty(), "a server has at least one hub shard");
        Self { inboxes }
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.inboxes.len()
    }

    /// Never: there is always one.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The shard that owns `room`: a fixed hash of its name (FNV-1a, the
    /// same in every process and every release), so that every connection
    /// of a room meets in one place.
    pub fn place(&self, room: &RoomName) -> usize {
        let hash = room
            .as_str()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3));
        usize::try_from(hash % self.inboxes.len() as u64).unwrap_or(0)
    }

    /// Where a new connection waits for its join.
    pub fn home(&self, conn: ConnId) -> usize {
        usize::try_from(conn.0 % self.inboxes.len() as u64).unwrap_or(0)
    }

    /// The inbox of shard `i`.
    pub fn get(&self, i: usize) -> &mpsc::Sender<HubEvent> {
        &self.inboxes[i % self.inboxes.len()]
    }

    /// Every shard's inbox.
    pub fn all(&self) -> &[mpsc::Sender<HubEvent>] {
        &self.inboxes
    }

    /// Whether any shard has stopped (the server cannot serve its rooms).
    pub fn any_closed(&self) -> bool {
        self.inboxes.iter().any(mpsc::Sender::is_closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shards(n: usize) -> (Shards, Vec<mpsc::Receiver<HubEvent>>) {
        let (tx, rx): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::channel(1)).unzip();
        (Shards::new(tx), rx)
    }

    #[test]
    fn rooms_are_placed_by_a_fixed_hash_and_spread() {
        let (four, _rx) = shards(4);
        let room = |s: &str| RoomName::new(s).expect("room");
        assert_eq!(four.place(&room("demo")), four.place(&room("demo")));
        // FNV-1a of "demo" is fixed: a change of the rule moves rooms
        // between releases, which a rolling restart would notice.
        assert_eq!(four.place(&room("demo")), (0xa5e4_1b67_4276_d396_u64 % 4) as usize);
        let mut used = [0usize; 4];
        for i in 0..400 {
            used[four.place(&room(&format!("room-{i}")))] += 1;
        }
        assert!(used.iter().all(|&n| n > 50), "spread: {used:?}");
        let (one, _rx) = shards(1);
        assert_eq!(one.place(&room("demo")), 0);
        assert_eq!(one.home(ConnId(7)), 0);
    }
}
