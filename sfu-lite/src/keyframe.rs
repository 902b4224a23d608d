//! Keyframe requests, throttled: a subscriber that joins, or loses packets,
//! asks for a keyframe; many subscribers asking at once must cost the
//! publisher one keyframe, not one each.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// At most one keyframe request per publisher track this often. A VP8
/// keyframe is 5-10 times a delta frame: at 30 fps this caps the extra cost
/// at a few percent while a late joiner still sees video within half a
/// second.
pub const KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);

/// Decides which keyframe requests go to the publisher.
#[derive(Debug)]
pub struct KeyframeThrottle<K> {
    last: HashMap<K, Instant>,
    interval: Duration,
}

impl<K: Hash + Eq + Clone> KeyframeThrottle<K> {
    /// A throttle letting one request per `interval` through per key.
    pub fn new(interval: Duration) -> Self {
        Self { last: HashMap::new(), interval }
    }

    /// True if a request for `key` at `now` should be forwarded.
    pub fn allow(&mut self, key: &K, now: Instant) -> bool {
        match self.last.get(key) {
            Some(last) if now.saturating_duration_since(*last) < self.interval => false,
            _ => {
                self.last.insert(key.clone(), now);
                true
            }
        }
    }

    /// Forgets a key (its track ended).
    pub fn forget(&mut self, key: &K) {
        self.last.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_request_per_interval_per_track() {
        let mut t = KeyframeThrottle::new(KEYFRAME_INTERVAL);
        let start = Instant::now();
        assert!(t.allow(&"a", start));
        assert!(!t.allow(&"a", start + Duration::from_millis(100)));
        assert!(t.allow(&"b", start + Duration::from_millis(100)), "tracks are independent");
        assert!(t.allow(&"a", start + KEYFRAME_INTERVAL));
        t.forget(&"a");
        assert!(t.allow(&"a", start + KEYFRAME_INTERVAL + Duration::from_millis(1)));
    }
}
