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
use switchboard_protocol::ServerKind;
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
    /// A join's answer was queued (see [`Outbox::answer`]).
    answered: Notify,
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
    /// The latest answer to a join queued since [`Outbox::expect_answer`]:
    /// `true` for a welcome, `false` for an error.
    answer: Option<bool>,
}

/// What a frame of `item` says about a join in flight: a welcome admits
/// it, an error refuses it (nothing else of the connection's is in flight
/// while it waits, see [`crate::router`]).
fn join_answer(item: &Outbound) -> Option<bool> {
    match item {
        Outbound::Frame { kind: ServerKind::Welcome, .. } => Some(true),
        Outbound::Frame { kind: ServerKind::Error, .. } => Some(false),
        _ => None,
    }
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
        Self { inner, ready: Notify::new(), answered: Notify::new(), capacity: capacity.max(1), byte_capacity }
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
            let answer = join_answer(&item);
            inner.items.push_back((item, false));
            self.note_answer(&mut inner, answer);
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
            let answer = join_answer(&item);
            inner.items.push_back((item, true));
            self.note_answer(&mut inner, answer);
        }
        self.ready.notify_one();
        Ok(())
    }

    fn note_answer(&self, inner: &mut Inner, answer: Option<bool>) {
        if answer.is_some() {
            inner.answer = answer;
            self.answered.notify_one();
        }
    }

    /// A join is about to be sent: forget earlier answers.
    pub fn expect_answer(&self) {
        self.lock().answer = None;
        // A permit left by an earlier answer would wake the next wait for
        // nothing; `answer` would then just wait again.
    }

    /// Waits until an answer to the join in flight is queued: `true` for a
    /// welcome, `false` for an error. Only one task may wait at a time.
    pub async fn answer(&self) -> bool {
        loop {
            let queued = self.answered.notified();
            if let Some(answer) = self.lock().answer.take() {
                return answer;
            }
            queued.await;
        }
    }

    /// Takes the next item, if any.
    pub fn try_pop(&self) -> Option<Outbound> {
        let mut inner = self.lock();
        let item = match inner.items.pop_front() {
            Some((item, true)) => {
                inner.replay_items -= 1;
                Some(item)
            }
            Some((item, false)) => {
                inner.bytes -= size(&item);
                Some(item)
            }
            None => None,
        };
        if inner.items.is_empty() && inner.items.capacity() > KEEP_WHEN_EMPTY {
            inner.items = VecDeque::new();
        }
        item
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
        let frame = |n: usize| Outbound::Frame { text: "x".repeat(n).into(), kind: ServerKind::Chat, received: None };
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
    async fn a_welcome_or_an_error_answers_the_join_in_flight() {
        let frame = |kind| Outbound::Frame { text: "{}".into(), kind, received: None };
        let q = std::sync::Arc::new(Outbox::new(8, 1 << 20));
        q.try_push(frame(ServerKind::Error)).expect("room");
        q.expect_answer();
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.answer().await });
        tokio::task::yield_now().await;
        q.try_push(frame(ServerKind::Pong)).expect("room");
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "a pong answers nothing, and the error before expect_answer is forgotten");
        q.try_push(frame(ServerKind::Welcome)).expect("room");
        assert!(waiter.await.expect("join"));
        q.expect_answer();
        q.push_unbudgeted(frame(ServerKind::Error)).expect("last word");
        assert!(!q.answer().await, "a refusal");
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
