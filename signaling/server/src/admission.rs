//! Admission control for new WebSocket connections: token buckets, so that
//! a reconnect storm (every client of a restarted server at once) is spread
//! over time instead of arriving in one burst, and so that one source
//! opening and closing upgrades in a loop cannot spend everyone's share. A
//! refused upgrade gets HTTP 503 with `Retry-After`, which clients honour
//! (with their own jitter).
//!
//! Two buckets must both have a token: the global one, and the source's own
//! (its address, or what a trusted proxy says it forwarded for; see
//! [`crate::client_addr`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Seconds a client refused by the admission rate is told to wait.
pub const RETRY_AFTER_S: &str = "1";

/// Sources whose buckets are remembered. Past it, buckets that have
/// refilled (their source has been quiet) are forgotten, in one sweep at
/// most every [`SWEEP_EVERY`]; meanwhile, and if none has refilled, a new
/// source is admitted on the global bucket alone rather than refused, so
/// that many addresses cannot lock out the next one. (IPv6 sources count by
/// their /64: see [`crate::client_addr::source_key`].)
pub const MAX_SOURCES: usize = 65_536;

/// Least time between two sweeps of a full source map: a sweep walks every
/// entry under the lock, so it must not run for every new source.
pub const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The server-wide rate.
    Global,
    /// This source's rate.
    Source,
}

#[derive(Debug, Clone, Copy)]
struct Rate {
    per_second: f64,
    burst: f64,
}

impl Rate {
    fn new(per_second: u32, burst: u32) -> Self {
        Self { per_second: f64::from(per_second), burst: f64::from(burst.max(1)) }
    }

    fn unlimited(&self) -> bool {
        self.per_second <= 0.0
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Self {
        Self { tokens: rate.burst, last: now }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.last = now;
    }
}

/// The token buckets of new connections.
#[derive(Debug)]
pub struct Admission {
    global: Rate,
    per_source: Rate,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    global: Bucket,
    sources: HashMap<IpAddr, Bucket>,
    last_sweep: Option<Instant>,
}

impl Admission {
    /// Admits `per_second` connections per second, `burst` at once, over
    /// all sources, and `source_per_second` / `source_burst` per source; a
    /// rate of 0 turns that bucket off.
    pub fn new(per_second: u32, burst: u32, source_per_second: u32, source_burst: u32, now: Instant) -> Self {
        let global = Rate::new(per_second, burst);
        let state = State { global: Bucket::full(global, now), sources: HashMap::new(), last_sweep: None };
        Self { global, per_source: Rate::new(source_per_second, source_burst), state: Mutex::new(state) }
    }

    /// Whether one more connection from `source` may start now. A refusal
    /// takes no token from either bucket.
    pub fn try_admit(&self, source: IpAddr, now: Instant) -> Result<(), Refused> {
        // Nothing can leave the buckets inconsistent while the lock is held.
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let State { global, sources, last_sweep } = &mut *state;
        if !self.global.unlimited() {
            global.refill(self.global, now);
            if global.tokens < 1.0 {
                return Err(Refused::Global);
            }
        }
        if !self.per_source.unlimited() {
            let may_sweep = last_sweep.is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_EVERY);
            if sources.len() >= MAX_SOURCES && !sources.contains_key(&source) && may_sweep {
                *last_sweep = Some(now);
                let rate = self.per_source;
                sources.retain(|_, b| {
                    b.refill(rate, now);
                    b.tokens < rate.burst
                });
            }
            if sources.len() < MAX_SOURCES || sources.contains_key(&source) {
                let bucket = sources.entry(source).or_insert_with(|| Bucket::full(self.per_source, now));
                bucket.refill(self.per_source, now);
                if bucket.tokens < 1.0 {
                    return Err(Refused::Source);
                }
                bucket.tokens -= 1.0;
            }
        }
        if !self.global.unlimited() {
            global.tokens -= 1.0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[test]
    fn a_burst_then_the_rate() {
        let start = Instant::now();
        let a = Admission::new(10, 5, 0, 0, start);
        let admit = |at| a.try_admit(ip(1), at).is_ok();
        assert_eq!((0..8).filter(|_| admit(start)).count(), 5);
        assert!(!admit(start + Duration::from_millis(50)));
        assert!(admit(start + Duration::from_millis(100)));
        let later = start + Duration::from_secs(10);
        assert_eq!((0..8).filter(|_| admit(later)).count(), 5, "refills up to the burst only");
    }

    #[test]
    fn zero_rate_admits_everyone() {
        let now = Instant::now();
        let a = Admission::new(0, 1, 0, 1, now);
        assert!((0..1000).all(|_| a.try_admit(ip(1), now).is_ok()));
    }

    #[test]
    fn one_source_spends_only_its_own_share() {
        let start = Instant::now();
        let a = Admission::new(100, 100, 5, 10, start);
        // A loop from one address: its burst, then refused as a source.
        let greedy = (0..1000).filter(|_| a.try_admit(ip(6), start).is_ok()).count();
        assert_eq!(greedy, 10);
        assert_eq!(a.try_admit(ip(6), start), Err(Refused::Source));
        // Everyone else still gets in, and the refusals cost the global
        // bucket nothing.
        assert!((1..=5).all(|n| a.try_admit(ip(n), start).is_ok()));
    }

    #[test]
    fn the_source_map_is_bounded() {
        let start = Instant::now();
        let a = Admission::new(0, 1, 1, 1, start);
        for n in 0..(MAX_SOURCES as u32 + 10) {
            let source = IpAddr::from(std::net::Ipv6Addr::from(u128::from(n)));
            assert!(a.try_admit(source, start).is_ok(), "a new source is never refused for the map being full");
        }
        let len = a.state.lock().expect("lock").sources.len();
        assert!(len <= MAX_SOURCES, "{len}");
    }
}
