//! Per-connection message rate limiting: a token bucket plus a strike count
//! that tells a client who bursts now and then from one who floods.

use crate::limits::Limits;
use std::time::Instant;

/// What to do with one incoming message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the rate: handle it.
    Allow,
    /// Over the rate: drop it and answer `rate_limited`.
    Drop,
    /// Over the rate for too long: close the connection with `flood`.
    Flood,
}

/// Token bucket of `messages_per_second` with `message_burst` capacity.
/// Every dropped message is a strike; strikes are forgiven at a tenth of the
/// rate, and more than `flood_strikes` outstanding means flooding.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    strikes: f64,
    strike_limit: f64,
    last: Instant,
}

impl RateLimiter {
    /// A full bucket at `now`.
    pub fn new(limits: &Limits, now: Instant) -> Self {
        let rate = f64::from(limits.messages_per_second.max(1));
        let burst = f64::from(limits.message_burst.max(1));
        Self { rate, burst, tokens: burst, strikes: 0.0, strike_limit: f64::from(limits.flood_strikes), last: now }
    }

    /// Accounts for one message arriving at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.strikes = (self.strikes - elapsed * self.rate / 10.0).max(0.0);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allow;
        }
        self.strikes += 1.0;
        if self.strikes > self.strike_limit { Verdict::Flood } else { Verdict::Drop }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> Limits {
        Limits { messages_per_second: 10, message_burst: 5, flood_strikes: 3, ..Limits::default() }
    }

    #[test]
    fn burst_then_drop_then_flood() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(&limits(), t0);
        for _ in 0..5 {
            assert_eq!(rl.check(t0), Verdict::Allow);
        }
        for _ in 0..3 {
            assert_eq!(rl.check(t0), Verdict::Drop);
        }
        assert_eq!(rl.check(t0), Verdict::Flood);
    }

    #[test]
    fn refills_at_the_rate_and_forgives_strikes() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(&limits(), t0);
        for _ in 0..5 {
            rl.check(t0);
        }
        assert_eq!(rl.check(t0), Verdict::Drop);
        // 100 ms at 10/s: one token.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(rl.check(t1), Verdict::Allow);
        assert_eq!(rl.check(t1), Verdict::Drop);
        // Strikes (2) are forgiven at 1/s; after 10 s nothing is held against it.
        let t2 = t1 + Duration::from_secs(10);
        for _ in 0..5 {
            assert_eq!(rl.check(t2), Verdict::Allow);
        }
        for _ in 0..3 {
            assert_eq!(rl.check(t2), Verdict::Drop);
        }
    }

    #[test]
    fn steady_rate_is_always_allowed() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(&limits(), t0);
        for i in 0..1000 {
            assert_eq!(rl.check(t0 + Duration::from_millis(100 * i)), Verdict::Allow);
        }
    }
}
