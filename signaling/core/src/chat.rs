//! A room's chat log: gap-free sequence numbers and bounded, pageable history.

use std::collections::VecDeque;
use switchboard_protocol::ChatMessage;

/// The retained chat messages of one room, oldest first.
#[derive(Debug, Clone)]
pub struct ChatLog {
    messages: VecDeque<ChatMessage>,
    capacity: usize,
    /// Bytes the messages may take, and take.
    byte_capacity: usize,
    bytes: usize,
    last_seq: u64,
    last_ts: u64,
}

impl ChatLog {
    /// An empty log keeping at most `capacity` messages and `byte_capacity`
    /// bytes of them (see [`message_bytes`]); the newest message is always
    /// kept.
    pub fn new(capacity: usize, byte_capacity: usize) -> Self {
        Self { messages: VecDeque::new(), capacity: capacity.max(1), byte_capacity, bytes: 0, last_seq: 0, last_ts: 0 }
    }

    /// The log a snapshot describes, with this node's bounds.
    pub fn restore(capacity: usize, byte_capacity: usize, snapshot: crate::snapshot::ChatSnapshot) -> Option<Self> {
        let crate::snapshot::ChatSnapshot { messages, last_seq, last_ts } = snapshot;
        let ordered = messages.windows(2).all(|w| w[0].seq < w[1].seq);
        if !ordered || messages.last().is_some_and(|m| m.seq > last_seq || m.ts > last_ts) {
            return None;
        }
        let mut log = Self::new(capacity, byte_capacity);
        for message in messages {
            log.push(message);
        }
        log.last_seq = last_seq;
        log.last_ts = last_ts;
        Some(log)
    }

    /// The log as data.
    pub fn snapshot(&self) -> crate::snapshot::ChatSnapshot {
        crate::snapshot::ChatSnapshot {
            messages: self.messages.iter().cloned().collect(),
            last_seq: self.last_seq,
            last_ts: self.last_ts,
        }
    }

    /// Bytes the kept messages take.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Sequence number of the oldest message kept (None: none kept).
    pub fn first_seq(&self) -> Option<u64> {
        self.messages.front().map(|m| m.seq)
    }

    /// Highest sequence number assigned (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Timestamp of the newest message (0: none yet).
    pub fn last_ts(&self) -> u64 {
        self.last_ts
    }

    /// Assigns the next sequence number and a timestamp that never goes
    /// backwards, stores the message and returns it. `build` receives the
    /// sequence number and timestamp.
    pub fn append(&mut self, now_unix_ms: u64, build: impl FnOnce(u64, u64) -> ChatMessage) -> &ChatMessage {
        let message = build(self.last_seq + 1, self.last_ts.max(now_unix_ms));
        self.push(message)
    }

    /// Stores a message numbered elsewhere (stored durably first, or read
    /// back from durable storage by a new owner): its `seq` must be above
    /// every kept one; the log continues from it.
    pub fn push(&mut self, message: ChatMessage) -> &ChatMessage {
        debug_assert!(message.seq > self.last_seq, "chat seq goes backwards");
        self.last_seq = self.last_seq.max(message.seq);
        self.last_ts = self.last_ts.max(message.ts);
        let size = message_bytes(&message);
        while !self.messages.is_empty()
            && (self.messages.len() >= self.capacity || self.bytes + size > self.byte_capacity)
        {
            if let Some(old) = self.messages.pop_front() {
                self.bytes -= message_bytes(&old);
            }
        }
        self.bytes += size;
        self.messages.push_back(message);
        // Just pushed, so the back exists.
        self.messages.back().unwrap_or_else(|| unreachable!())
    }

    /// Up to `limit` of the newest messages with `seq < before`, oldest
    /// first, and whether older ones are retained.
    pub fn page(&self, before: Option<u64>, limit: usize) -> (Vec<ChatMessage>, bool) {
        let before = before.unwrap_or(u64::MAX);
        // Messages are sorted by seq; find how many qualify.
        let end = self.messages.partition_point(|m| m.seq < before);
        let start = end.saturating_sub(limit);
        (self.messages.range(start..end).cloned().collect(), start > 0)
    }
}

/// What a stored message is counted as: its strings plus a fixed overhead
/// for the numbers and the struct (close to its JSON size, and to what it
/// holds in memory).
pub fn message_bytes(message: &ChatMessage) -> usize {
    const OVERHEAD: usize = 64;
    OVERHEAD
        + message.text.len()
        + message.name.as_str().len()
        + message.from.as_str().len()
        + message.client_id.as_str().len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_protocol::{ClientMsgId, DisplayName, PeerId};

    fn push(log: &mut ChatLog, ts: u64) -> u64 {
        push_text(log, ts, String::new())
    }

    fn push_text(log: &mut ChatLog, ts: u64, text: String) -> u64 {
        log.append(ts, |seq, ts| ChatMessage {
            seq,
            ts,
            from: PeerId::new("p1").unwrap(),
            name: DisplayName::new("A").unwrap(),
            client_id: ClientMsgId::new(format!("c{seq}")).unwrap(),
            text,
        })
        .seq
    }

    #[test]
    fn seqs_are_gap_free_and_timestamps_monotonic() {
        let mut log = ChatLog::new(3, 1 << 20);
        assert_eq!(push(&mut log, 100), 1);
        assert_eq!(push(&mut log, 50), 2);
        let (page, _) = log.page(None, 10);
        assert_eq!(page[1].ts, 100, "clock going backwards must not reorder");
    }

    #[test]
    fn pages_newest_first_window_oldest_first_order() {
        let mut log = ChatLog::new(5, 1 << 20);
        for i in 0..8 {
            push(&mut log, i);
        }
        // Retained: 4..=8.
        let (page, more) = log.page(None, 2);
        assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![7, 8]);
        assert!(more);
        let (page, more) = log.page(Some(7), 10);
        assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![4, 5, 6]);
        assert!(!more);
        let (page, more) = log.page(Some(4), 10);
        assert!(page.is_empty());
        assert!(!more);
    }

    #[test]
    fn the_byte_budget_forgets_the_oldest_and_keeps_the_newest() {
        let mut log = ChatLog::new(500, 4096);
        let big = |log: &mut ChatLog, ts: u64| push_text(log, ts, "\u{1F600}".repeat(400));
        for i in 0..50 {
            big(&mut log, i);
        }
        assert!(log.bytes() <= 4096, "{}", log.bytes());
        let (page, more) = log.page(None, 500);
        assert_eq!(page.len(), 2, "two 1.7 KB messages fit in 4 KB");
        assert_eq!(page[1].seq, 50);
        assert!(!more);
        let mut tiny = ChatLog::new(500, 10);
        big(&mut tiny, 0);
        assert_eq!(tiny.page(None, 10).0.len(), 1, "the newest message is always kept");
    }
}
