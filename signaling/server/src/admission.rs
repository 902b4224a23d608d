//! Admission control for new WebSocket connections: a token bucket, so that
//! a reconnect storm (every client of a restarted server at once) is spread
//! over time instead of arriving in one burst. A refused upgrade gets HTTP
//! 503 with `Retry-After`, which clients honour (with their own jitter).

use std::sync::Mutex;
use std::time::Instant;

/// Seconds a client refused by the admission rate is told to wait.
pub const RETRY_AFTER_S: &str = "1";

/// A token bucket of new connections.
#[derive(Debug)]
pub struct Admission {
    per_second: f64,
    burst: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Admission {
    /// Admits `per_second` connections per second, `burst` at once; a rate
    /// of 0 admits everyone.
    pub fn new(per_second: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self { per_second: f64::from(per_second), burst, state: Mutex::new(Bucket { tokens: burst, last: now }) }
    }

    /// Whether one more connection may start now.
    pub fn try_admit(&self, now: Instant) -> bool {
        if self.per_second <= 0.0 {
            return true;
        }
        // Nothing can leave the bucket inconsistent while the lock is held.
        let mut b = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_second).min(self.burst);
        b.last = now;
        if b.tokens < 1.0 {
            return false;
        }
        b.tokens -= 1.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate() {
        let start = Instant::now();
        let a = Admission::new(10, 5, start);
        assert_eq!((0..8).filter(|_| a.try_admit(start)).count(), 5);
        assert!(!a.try_admit(start + Duration::from_millis(50)));
        assert!(a.try_admit(start + Duration::from_millis(100)));
        let later = start + Duration::from_secs(10);
        assert_eq!((0..8).filter(|_| a.try_admit(later)).count(), 5, "refills up to the burst only");
    }

    #[test]
    fn zero_rate_admits_everyone() {
        let now = Instant::now();
        let a = Admission::new(0, 1, now);
        assert!((0..1000).all(|_| a.try_admit(now)));
    }
}
