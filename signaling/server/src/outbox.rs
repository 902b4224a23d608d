//! A connection's bounded outbound queue.
//!
//! tokio's mpsc allocates a 32-slot block per channel up front (~1.8 KB
//! here) and keeps it for the channel's life; most connections are idle
//! most of the time, so that block was a fifth of an idle connection's
//! memory. This queue holds nothing while empty and gives a grown buffer
//! back when it drains.
//!
//! The lock is a std `Mutex`: it is held only to push or pop one item,
//! never across an `.await`, by exactly two parties (the hub task and the
//! connection task), so it is never contended for long and needs no async
//! lock.

use crate::hub_task::Outbound;
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::Notify;

/// A drained buffer larger than this many items is freed rather than kept.
const KEEP_WHEN_EMPTY: usize = 4;

/// Why an item was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    /// The queue holds `capacity` items: the reader is too slow.
    Full,
    /// The connection is gone.
    Closed,
}

/// A single-consumer bounded queue of frames for one connection.
#[derive(Debug)]
pub struct Outbox {
    inner: Mutex<Inner>,
    ready: Notify,
    /// A signal was given (see [`Outbox::next_signal`]).
    signalled: Notify,
    capacity: usize,
    byte_capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    /// Items, each marked when it is part of a resume's replay.
    items: VecDeque<(Outbound, bool)>,
    /// Bytes of the queued frames' text, replay excluded.
    bytes: usize,
    /// Queued items that are part of a replay.
    replay_items: usize,
    closed: bool,
    /// Signals from the hub not yet taken by the connection.
    signals: VecDeque<Signal>,
}

/// What a hub shard tells the connection task about where it stands, out
/// of band (see [`crate::router`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The join it sent is answered: in a room now, or not.
    JoinAnswered(bool),
    /// The shard it moved away from has handled everything it sent there
    /// before, and forgot it.
    MovedOut,
}

/// Bytes an item holds in the queue (a broadcast frame's text is shared
/// with the other recipients' queues, so this overstates memory; it is the
/// bound a slow reader can make the server keep for it).
fn size(item: &Outbound) -> usize {
    match item {
        Outbound::Frame { text, .. } => text.len(),
        Outbound::Close(_) => 0,
    }
}

impl Outbox {
    /// An empty queue for at most `capacity` items and `byte_capacity`
    /// bytes of them; one item always fits into an empty queue.
    pub fn new(capacity: usize, byte_capacity: usize) -> Self {
        let inner = Mutex::new(Inner::default());
        Self { inner, ready: Notify::new(), signalled: Notify::new(), capacity: capacity.max(1), byte_capacity }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the deque invalid, so
        // a poisoned lock is still safe to use.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `item` unless the queue is full or closed.
    pub fn try_push(&self, item: Outbound) -> Result<(), PushError> {
        {
            let mut inner = self.lock();
            if inner.closed {
                return Err(PushError::Closed);
            }
            let bytes = size(&item);
            let queued = inner.items.len() - inner.replay_items;
            let over = queued >= self.capacity || inner.bytes + bytes > self.byte_capacity;
            if over && queued > 0 {
                return Err(PushError::Full);
            }
            inner.bytes += bytes;
            inner.items.push_back((item, false));
        }
        self.ready.notify_one();
        Ok(())
    }

    /// Queues an item whatever the budget; what comes after it is held to
    /// the budget as usual. For what is bounded elsewhere and must not be
    /// lost to a full queue:
    /// - the replay of a resume, bounded by the replay budget
    ///   (`replay_buffer`, `replay_buffer_bytes`): counting it here would cut
    ///   the connection that just resumed, again and again, whenever more was
    ///   missed than a queue holds;
    /// - a connection's last word (a fatal error or `going_away`, then the
    ///   close), one each per connection: a client must learn that it was
    ///   replaced, or where to go, even when it was not reading.
    pub fn push_unbudgeted(&self, item: Outbound) -> Result<(), PushError> {
        {
            let mut inner = self.lock();
            if inner.closed {
                return Err(PushError::Closed);
            }
            inner.replay_items += 1;
            inner.items.push_back((item, true));
        }
        self.ready.notify_one();
        Ok(())
    }

    /// Gives the connection task a signal (at most a few per connection
    /// life: one per join and per move).
    pub fn signal(&self, signal: Signal) {
        self.lock().signals.push_back(signal);
        self.signalled.notify_one();
    }

    /// Waits for the next signal. Only one task may wait at a time.
    pub async fn next_signal(&self) -> Signal {
        loop {
            let given = self.signalled.notified();
            if let Some(signal) = self.lock().signals.pop_front() {
                return signal;
            }
            given.await;
        }
    }

    /// Takes the next item, if any.
    pub fn try_pop(&self) -> Option<Outbound> {
        self.try_pop_marked().map(|(item, _)| item)
    }

    /// Takes the next item, if any, and whether it was queued outside the
    /// budget (a replay or a last word: a bridge passes that on).
    pub fn try_pop_marked(&self) -> Option<(Outbound, bool)> {
        let mut inner = self.lock();
        let item = match inner.items.pop_front() {
            Some((item, true)) => {
                inner.replay_items -= 1;
                Some((item, true))
            }
            Some((item, false)) => {
                inner.bytes -= size(&item);
                Some((item, false))
            }
            None => None,
        };
        if inner.items.is_empty() && inner.items.capacity() > KEEP_WHEN_EMPTY {
            inner.items = VecDeque::new();
        }
        item
    }

    /// Waits for the next item and its mark (see [`Outbox::try_pop_marked`]).
    /// Only one task may wait at a time.
    pub async fn pop_marked(&self) -> (Outbound, bool) {
        loop {
            let ready = self.ready.notified();
            if let Some(item) = self.try_pop_marked() {
                return item;
            }
            ready.await;
        }
    }

    /// Waits for the next item. Only one task may wait at a time.
    pub async fn pop(&self) -> Outbound {
        loop {
            let ready = self.ready.notified();
            if let Some(item) = self.try_pop() {
                return item;
            }
            ready.await;
        }
    }

    /// Refuses every later push and drops what is queued (the connection
    /// task calls this when it ends).
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.items = VecDeque::new();
        inner.bytes = 0;
        inner.replay_items = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub_task::CloseSpec;

    fn item() -> Outbound {
        Outbound::Close(CloseSpec { code: 1000, reason: "x" })
    }

    #[test]
    fn bounded_fifo_that_refuses_after_close() {
        let q = Outbox::new(2, 1 << 20);
        assert_eq!(q.try_push(item()), Ok(()));
        assert_eq!(q.try_push(item()), Ok(()));
        assert_eq!(q.try_push(item()), Err(PushError::Full));
        assert!(q.try_pop().is_some());
        assert_eq!(q.try_push(item()), Ok(()));
        q.close();
        assert_eq!(q.try_push(item()), Err(PushError::Closed));
        assert!(q.try_pop().is_none());
    }

    #[test]
    fn a_drained_queue_holds_no_buffer() {
        let q = Outbox::new(100, 1 << 20);
        for _ in 0..50 {
            q.try_push(item()).expect("room");
        }
        while q.try_pop().is_some() {}
        assert_eq!(q.lock().items.capacity(), 0);
    }

    #[test]
    fn the_byte_budget_bounds_what_a_slow_reader_holds() {
        let frame = |n: usize| Outbound::Frame {
            text: "x".repeat(n).into(),
            kind: switchboard_protocol::ServerKind::Chat,
            received: None,
        };
        let q = Outbox::new(1024, 100);
        assert_eq!(q.try_push(frame(60)), Ok(()));
        assert_eq!(q.try_push(frame(40)), Ok(()));
        assert_eq!(q.try_push(frame(1)), Err(PushError::Full), "100 bytes queued");
        assert!(q.try_pop().is_some());
        assert_eq!(q.try_push(frame(60)), Ok(()));
        while q.try_pop().is_some() {}
        assert_eq!(q.try_push(frame(5000)), Ok(()), "one frame always fits an empty queue");
        assert_eq!(q.try_push(item()), Err(PushError::Full));
    }

    #[test]
    fn a_replay_is_not_held_to_the_budget_but_what_follows_is() {
        let q = Outbox::new(2, 1 << 20);
        for _ in 0..10 {
            q.push_unbudgeted(item()).expect("replay always fits");
        }
        assert_eq!(q.try_push(item()), Ok(()));
        assert_eq!(q.try_push(item()), Ok(()));
        assert_eq!(q.try_push(item()), Err(PushError::Full), "two live items on top of the replay");
        let mut n = 0;
        while q.try_pop().is_some() {
            n += 1;
        }
        assert_eq!(n, 12);
    }

    #[tokio::test]
    async fn signals_come_in_order_and_a_wait_sees_one_given_before_it() {
        let q = std::sync::Arc::new(Outbox::new(8, 1 << 20));
        q.signal(Signal::MovedOut);
        q.signal(Signal::JoinAnswered(false));
        assert_eq!(q.next_signal().await, Signal::MovedOut);
        assert_eq!(q.next_signal().await, Signal::JoinAnswered(false));
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.next_signal().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        q.signal(Signal::JoinAnswered(true));
        assert_eq!(waiter.await.expect("join"), Signal::JoinAnswered(true));
    }

    #[tokio::test]
    async fn pop_waits_for_a_push() {
        let q = std::sync::Arc::new(Outbox::new(4, 1 << 20));
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.pop().await });
        tokio::task::yield_now().await;
        q.try_push(item()).expect("room");
        assert!(matches!(waiter.await.expect("join"), Outbound::Close(_)));
    }
}
