//! A member's event stream: every event (see
//! [`switchboard_protocol::ServerKind::is_event`]) sent to it is numbered, and
//! kept until the client acknowledges it, so that a client whose connection
//! drops can resume and be sent exactly the events it missed.
//!
//! The client counts the events it receives; the count is its position in
//! the stream. It acknowledges in pings (`ack`) and names its position when
//! it resumes (`resume.received`). Nothing on the wire carries a number, so
//! a broadcast is still serialized once for the whole room.

use std::collections::VecDeque;
use std::sync::Arc;
use switchboard_protocol::{ClientMsgId, PeerId, ServerKind, ServerMessage};

/// Chat client ids remembered per member, so that a chat resent after a
/// resume is not stored twice.
pub const CHAT_DEDUP: usize = 64;

/// The buffer is full while the member is away: it cannot be resumed
/// without losing events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

/// How much a stream may keep: a count and a byte budget, whichever runs
/// out first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Events; 0 keeps none (resume disabled).
    pub events: usize,
    /// Bytes, counting each event as its JSON size.
    pub bytes: usize,
}

/// One kept event.
#[derive(Debug, Clone)]
struct Kept {
    number: u64,
    event: Arc<ServerMessage>,
    bytes: usize,
}

/// The numbered, unacknowledged events of one member.
#[derive(Debug, Clone)]
pub struct EventLog {
    /// Events numbered so far (the number of the latest).
    sent: u64,
    /// Unacknowledged events, oldest first, with their numbers.
    kept: VecDeque<Kept>,
    /// Bytes of the kept events.
    bytes: usize,
    /// While the member is away: events numbered before it went (the ones
    /// after are certainly unread, so they may be coalesced).
    away_from: Option<u64>,
    budget: Budget,
}

impl EventLog {
    /// An empty stream keeping at most `budget` of unacknowledged events.
    pub fn new(budget: Budget) -> Self {
        Self { sent: 0, kept: VecDeque::new(), bytes: 0, away_from: None, budget }
    }

    /// The stream as data (see [`crate::snapshot`]).
    pub fn snapshot(&self) -> crate::snapshot::EventsSnapshot {
        let kept = self
            .kept
            .iter()
            .map(|k| crate::snapshot::KeptEvent {
                number: k.number,
                bytes: k.bytes,
                event: ServerMessage::clone(&k.event),
            })
            .collect();
        crate::snapshot::EventsSnapshot { sent: self.sent, away_from: self.away_from, kept }
    }

    /// The stream a snapshot describes, keeping at most `budget` from now
    /// on; `None` when its numbers do not add up.
    pub fn restore(snapshot: crate::snapshot::EventsSnapshot, budget: Budget) -> Option<Self> {
        let crate::snapshot::EventsSnapshot { sent, away_from, kept } = snapshot;
        let numbered = kept.windows(2).all(|w| w[1].number == w[0].number + 1);
        let fits = kept.last().is_none_or(|k| k.number == sent) && away_from.is_none_or(|a| a <= sent);
        if !numbered || !fits {
            return None;
        }
        let bytes = kept.iter().map(|k| k.bytes).sum();
        let kept =
            kept.into_iter().map(|k| Kept { number: k.number, event: Arc::new(k.event), bytes: k.bytes }).collect();
        Some(Self { sent, kept, bytes, away_from, budget })
    }

    /// Events numbered so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Bytes of the events kept for a resume.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The member's connection dropped: what is numbered from now on has
    /// certainly not reached it.
    pub fn went_away(&mut self) {
        self.away_from = Some(self.sent);
    }

    /// The member is back (resumed).
    pub fn came_back(&mut self) {
        self.away_from = None;
    }

    /// Numbers and keeps `event` (`bytes`: its JSON size). While the member
    /// is online a full buffer forgets its oldest events (a later resume
    /// from before them will fail); while it is away nothing may be
    /// forgotten, so a full buffer is an [`Overflow`]. While it is away a
    /// presence event (`peer_updated`, `typing`, `read`) replaces an
    /// earlier one of the same kind about the same peer that it has not
    /// seen: the client only needs the latest state, and a room toggling
    /// its mute buttons cannot fill the buffer of someone reconnecting.
    pub fn record(&mut self, event: &Arc<ServerMessage>, bytes: usize, online: bool) -> Result<(), Overflow> {
        if self.budget.events == 0 {
            self.sent += 1;
            return Ok(());
        }
        if !online {
            self.coalesce(event);
        }
        while !self.kept.is_empty() && (self.kept.len() >= self.budget.events || self.bytes + bytes > self.budget.bytes)
        {
            if !online {
                return Err(Overflow);
            }
            self.forget_oldest();
        }
        self.sent += 1;
        self.bytes += bytes;
        self.kept.push_back(Kept { number: self.sent, event: Arc::clone(event), bytes });
        Ok(())
    }

    /// Removes an unread event that `event` supersedes, renumbering the
    /// ones after it so that the stream stays gap-free.
    fn coalesce(&mut self, event: &ServerMessage) {
        let (Some(from), Some(key)) = (self.away_from, presence_key(event)) else { return };
        let Some(index) = self.kept.iter().rposition(|k| k.number > from && presence_key(&k.event) == Some(key)) else {
            return;
        };
        if let Some(old) = self.kept.remove(index) {
            self.bytes -= old.bytes;
            self.sent -= 1;
            for later in self.kept.iter_mut().skip(index) {
                later.number -= 1;
            }
        }
    }

    fn forget_oldest(&mut self) {
        if let Some(old) = self.kept.pop_front() {
            self.bytes -= old.bytes;
        }
    }

    /// The client has received the first `received` events: forget them.
    /// An acknowledgement beyond what was sent is ignored.
    pub fn ack(&mut self, received: u64) {
        if received > self.sent {
            return;
        }
        while self.kept.front().is_some_and(|k| k.number <= received) {
            self.forget_oldest();
        }
    }

    /// Every event after the first `received`, in order; `None` when some
    /// of them are no longer kept or `received` is beyond what was sent.
    pub fn since(&self, received: u64) -> Option<impl Iterator<Item = &Arc<ServerMessage>>> {
        if received > self.sent {
            return None;
        }
        let oldest = self.kept.front().map_or(self.sent + 1, |k| k.number);
        if oldest > received + 1 {
            return None;
        }
        Some(self.kept.iter().filter(move |k| k.number > received).map(|k| &k.event))
    }
}

/// What a presence event is about: its kind and its peer. A later event
/// with the same key makes an unread earlier one pointless.
fn presence_key(event: &ServerMessage) -> Option<(ServerKind, &PeerId)> {
    match event {
        ServerMessage::PeerUpdated(u) => Some((ServerKind::PeerUpdated, &u.peer.id)),
        ServerMessage::Typing(t) => Some((ServerKind::Typing, &t.from)),
        ServerMessage::Read(r) => Some((ServerKind::Read, &r.from)),
        _ => None,
    }
}

/// The latest chat client ids of one member.
#[derive(Debug, Clone, Default)]
pub struct ChatDedup {
    recent: VecDeque<ClientMsgId>,
}

impl ChatDedup {
    /// The ids remembered, oldest first.
    pub fn ids(&self) -> Vec<ClientMsgId> {
        self.recent.iter().cloned().collect()
    }

    /// Remembers `ids` (oldest first), at most the last [`CHAT_DEDUP`].
    pub fn restore(ids: Vec<ClientMsgId>) -> Self {
        let skip = ids.len().saturating_sub(CHAT_DEDUP);
        Self { recent: ids.into_iter().skip(skip).collect() }
    }

    /// Remembers `id`; false when it was already seen (a resend).
    pub fn first_time(&mut self, id: &ClientMsgId) -> bool {
        if self.recent.contains(id) {
            return false;
        }
        if self.recent.len() >= CHAT_DEDUP {
            self.recent.pop_front();
        }
        self.recent.push_back(id.clone());
        true
    }

    /// Forgets `id`: the message was not stored after all, so a resend
    /// must be taken.
    pub fn forget(&mut self, id: &ClientMsgId) {
        self.recent.retain(|known| known != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_protocol::{Pong, RequestId};

    fn event(n: u64) -> Arc<ServerMessage> {
        Arc::new(ServerMessage::Pong(Pong { id: Some(RequestId::Number(n)) }))
    }

    fn numbers(log: &EventLog, received: u64) -> Option<Vec<u64>> {
        log.since(received).map(|events| {
            events
                .map(|e| match &**e {
                    ServerMessage::Pong(Pong { id: Some(RequestId::Number(n)) }) => *n,
                    other => panic!("{other:?}"),
                })
                .collect()
        })
    }

    #[test]
    fn replays_exactly_what_was_not_received() {
        let mut log = EventLog::new(Budget { events: 4, bytes: 1 << 20 });
        for n in 1..=3 {
            log.record(&event(n), 10, true).expect("room");
        }
        assert_eq!(numbers(&log, 1), Some(vec![2, 3]));
        assert_eq!(numbers(&log, 3), Some(vec![]));
        assert_eq!(numbers(&log, 4), None, "beyond what was sent");
        log.ack(2);
        assert_eq!(numbers(&log, 2), Some(vec![3]));
        assert_eq!(numbers(&log, 1), None, "acknowledged events are gone");
    }

    #[test]
    fn online_forgets_the_oldest_offline_overflows() {
        let mut log = EventLog::new(Budget { events: 2, bytes: 1 << 20 });
        for n in 1..=3 {
            log.record(&event(n), 10, true).expect("online never overflows");
        }
        assert_eq!(numbers(&log, 1), Some(vec![2, 3]));
        assert_eq!(numbers(&log, 0), None);
        assert_eq!(log.record(&event(4), 10, false), Err(Overflow));
        assert_eq!(log.sent(), 3);
    }

    #[test]
    fn the_byte_budget_bounds_what_is_kept() {
        let mut log = EventLog::new(Budget { events: 1000, bytes: 100 });
        for n in 1..=10 {
            log.record(&event(n), 30, true).expect("online never overflows");
        }
        assert_eq!(log.bytes(), 90, "three events of 30 bytes fit in 100");
        assert_eq!(numbers(&log, 7), Some(vec![8, 9, 10]));
        log.ack(9);
        assert_eq!(log.bytes(), 30);
        assert_eq!(log.record(&event(11), 80, false), Err(Overflow), "away: over the bytes is an overflow");
        // A single event larger than the budget still goes into an empty log.
        log.ack(10);
        log.record(&event(12), 500, true).expect("alone");
        assert_eq!(log.bytes(), 500);
    }

    #[test]
    fn presence_coalesces_while_away_and_numbers_stay_gap_free() {
        use switchboard_protocol::{MediaState, PeerInfo, PeerUpdated, TypingNotice};
        let peer = |id: &str, muted: bool| {
            let info = PeerInfo {
                id: PeerId::new(id).expect("id"),
                name: switchboard_protocol::DisplayName::new("x").expect("name"),
                identity: None,
                media: MediaState { mic_muted: muted, camera_muted: false },
                read_seq: 0,
                role: switchboard_protocol::Role::Participant,
                reconnecting: false,
            };
            Arc::new(ServerMessage::PeerUpdated(PeerUpdated { peer: info }))
        };
        let mut log = EventLog::new(Budget { events: 8, bytes: 1 << 20 });
        log.record(&peer("pa", true), 10, true).expect("room");
        log.went_away();
        // Thousands of toggles by two peers while away: still within 8.
        for i in 0..5000 {
            log.record(&peer("pa", i % 2 == 0), 10, false).expect("coalesced");
            log.record(&peer("pb", i % 2 == 0), 10, false).expect("coalesced");
        }
        let typing =
            Arc::new(ServerMessage::Typing(TypingNotice { from: PeerId::new("pb").expect("id"), active: true }));
        log.record(&typing, 10, false).expect("room");
        assert_eq!(log.sent(), 4, "the one before the drop, one per peer, the typing");
        let kept: Vec<_> = log.since(1).expect("kept").map(|e| e.kind().as_str()).collect();
        assert_eq!(kept, ["peer_updated", "peer_updated", "typing"]);
        assert_eq!(log.bytes(), 40);
        // The event from before the drop may have been read: never replaced.
        assert_eq!(log.since(0).map(Iterator::count), Some(4));
    }

    #[test]
    fn a_resent_chat_id_is_recognised() {
        let mut dedup = ChatDedup::default();
        let id = ClientMsgId::new("c1").expect("id");
        assert!(dedup.first_time(&id));
        assert!(!dedup.first_time(&id));
        for i in 0..CHAT_DEDUP {
            dedup.first_time(&ClientMsgId::new(format!("x{i}")).expect("id"));
        }
        assert!(dedup.first_time(&id), "bounded: the oldest ids are forgotten");
    }
}
