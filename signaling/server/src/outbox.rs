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
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    items: VecDeque<Outbound>,
    closed: bool,
}

impl Outbox {
    /// An empty queue for at most `capacity` items.
    pub fn new(capacity: usize) -> Self {
        Self { inner: Mutex::new(Inner::default()), ready: Notify::new(), capacity: capacity.max(1) }
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
            if inner.items.len() >= self.capacity {
                return Err(PushError::Full);
            }
            inner.items.push_back(item);
        }
        self.ready.notify_one();
        Ok(())
    }

    /// Takes the next item, if any.
    pub fn try_pop(&self) -> Option<Outbound> {
        let mut inner = self.lock();
        let item = inner.items.pop_front();
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
        let q = Outbox::new(2);
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
        let q = Outbox::new(100);
        for _ in 0..50 {
            q.try_push(item()).expect("room");
        }
        while q.try_pop().is_some() {}
        assert_eq!(q.lock().items.capacity(), 0);
    }

    #[tokio::test]
    async fn pop_waits_for_a_push() {
        let q = std::sync::Arc::new(Outbox::new(4));
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.pop().await });
        tokio::task::yield_now().await;
        q.try_push(item()).expect("room");
        assert!(matches!(waiter.await.expect("join"), Outbound::Close(_)));
    }
}
