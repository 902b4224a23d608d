//! The bound on the SFU's relay of the unreliable `state` channel: each
//! member may have [`STATE_RELAY_PER_SECOND`] messages relayed to the room
//! (bursts of [`STATE_RELAY_BURST`]); past it its messages are dropped,
//! which that channel's senders expect (it carries state that is soon
//! stale). A receiver whose channel already holds [`STATE_RELAY_HIGH_WATER`]
//! bytes unsent gets nothing more until it drains: a slow member cannot
//! make the SFU buffer without end.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

/// Messages per second one member may have relayed.
pub const STATE_RELAY_PER_SECOND: f64 = 30.0;
/// Messages one member may have relayed at once.
pub const STATE_RELAY_BURST: f64 = 60.0;
/// Bytes queued on a receiver's `state` channel above which relays to it
/// are dropped.
pub const STATE_RELAY_HIGH_WATER: usize = 256 * 1024;

/// One token bucket per member.
#[derive(Debug)]
pub struct RelayBudget<K> {
    buckets: HashMap<K, (f64, Instant)>,
}

impl<K> Default for RelayBudget<K> {
    fn default() -> Self {
        Self { buckets: HashMap::new() }
    }
}

impl<K: Hash + Eq + Clone> RelayBudget<K> {
    /// Takes a token for a message from `from` at `now`; false when its
    /// budget is spent (drop the message).
    pub fn allow(&mut self, from: &K, now: Instant) -> bool {
        let (tokens, last) = self.buckets.entry(from.clone()).or_insert((STATE_RELAY_BURST, now));
        let refill = now.saturating_duration_since(*last).as_secs_f64() * STATE_RELAY_PER_SECOND;
        *tokens = (*tokens + refill).min(STATE_RELAY_BURST);
        *last = now;
        if *tokens < 1.0 {
            return false;
        }
        *tokens -= 1.0;
        true
    }

    /// Forgets a member that left (the map holds members only).
    pub fn forget(&mut self, from: &K) {
        self.buckets.remove(from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_flooding_member_gets_its_burst_then_its_rate() {
        let mut budget = RelayBudget::default();
        let start = Instant::now();
        let burst = (0..1000).filter(|_| budget.allow(&"flood", start)).count();
        assert_eq!(burst as f64, STATE_RELAY_BURST);
        assert!(budget.allow(&"quiet", start), "members are independent");
        let later = start + Duration::from_secs(1);
        let refilled = (0..1000).filter(|_| budget.allow(&"flood", later)).count();
        assert_eq!(refilled as f64, STATE_RELAY_PER_SECOND);
        budget.forget(&"flood");
        assert!(budget.allow(&"flood", later), "a member that left starts afresh");
    }
}
