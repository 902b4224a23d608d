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
use switchboard_protocol::{ClientMsgId, ServerMessage};

/// Chat client ids remembered per member, so that a chat resent after a
/// resume is not stored twice.
pub const CHAT_DEDUP: usize = 64;

/// The buffer is full while the member is away: it cannot be resumed
/// without losing events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

/// The numbered, unacknowledged events of one member.
#[derive(Debug, Clone)]
pub struct EventLog {
    /// Events numbered so far (the number of the latest).
    sent: u64,
    /// Unacknowledged events, oldest first, with their numbers.
    kept: VecDeque<(u64, Arc<ServerMessage>)>,
    capacity: usize,
}

impl EventLog {
    /// An empty stream keeping at most `capacity` unacknowledged events;
    /// 0 keeps none (resume disabled).
    pub fn new(capacity: usize) -> Self {
        Self { sent: 0, kept: VecDeque::new(), capacity }
    }

    /// Events numbered so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Numbers and keeps `event`. While the member is `online` a full buffer
    /// forgets its oldest event (a later resume from before it will fail);
    /// while it is away nothing may be forgotten, so a full buffer is an
    /// [`Overflow`].
    pub fn record(&mut self, event: &Arc<ServerMessage>, online: bool) -> Result<(), Overflow> {
        if self.capacity == 0 {
            self.sent += 1;
            return Ok(());
        }
        if self.kept.len() >= self.capacity {
            if !online {
                return Err(Overflow);
            }
            self.kept.pop_front();
        }
        self.sent += 1;
        self.kept.push_back((self.sent, Arc::clone(event)));
        Ok(())
    }

    /// The client has received the first `received` events: forget them.
    /// An acknowledgement beyond what was sent is ignored.
    pub fn ack(&mut self, received: u64) {
        if received > self.sent {
            return;
        }
        while self.kept.front().is_some_and(|(n, _)| *n <= received) {
            self.kept.pop_front();
        }
    }

    /// Every event after the first `received`, in order; `None` when some
    /// of them are no longer kept or `received` is beyond what was sent.
    pub fn since(&self, received: u64) -> Option<impl Iterator<Item = &Arc<ServerMessage>>> {
        if received > self.sent {
            return None;
        }
        let oldest = self.kept.front().map_or(self.sent + 1, |(n, _)| *n);
        if oldest > received + 1 {
            return None;
        }
        Some(self.kept.iter().filter(move |(n, _)| *n > received).map(|(_, e)| e))
    }
}

/// The latest chat client ids of one member.
#[derive(Debug, Clone, Default)]
pub struct ChatDedup {
    recent: VecDeque<ClientMsgId>,
}

impl ChatDedup {
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
        let mut log = EventLog::new(4);
        for n in 1..=3 {
            log.record(&event(n), true).expect("room");
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
        let mut log = EventLog::new(2);
        for n in 1..=3 {
            log.record(&event(n), true).expect("online never overflows");
        }
        assert_eq!(numbers(&log, 1), Some(vec![2, 3]));
        assert_eq!(numbers(&log, 0), None);
        assert_eq!(log.record(&event(4), false), Err(Overflow));
        assert_eq!(log.sent(), 3);
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
