//! Pacing of what the client sends, to the rate the server announced.

use std::time::Duration;
use switchboard_protocol::LimitsInfo;

/// Share of the server's announced rate and burst the client uses: a margin
/// for timer jitter, so the server never has to drop one of our messages.
pub const RATE_MARGIN: f64 = 0.9;

/// Paces sends to the rate limit the server announced in its welcome (a
/// token bucket like the server's, slightly smaller), so that a burst of
/// candidates waits briefly instead of being dropped as `rate_limited`.
#[derive(Debug)]
pub struct Pacer {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: tokio::time::Instant,
}

impl Pacer {
    /// A pacer for the limits of a welcome.
    pub fn new(limits: &LimitsInfo) -> Self {
        let rate = (f64::from(limits.messages_per_second) * RATE_MARGIN).max(1.0);
        let burst = (f64::from(limits.message_burst) * RATE_MARGIN).max(1.0);
        // One message (the join) was already sent.
        Self { rate, burst, tokens: burst - 1.0, last: tokio::time::Instant::now() }
    }

    /// A pacer that never waits: for the server's own SFU, which the
    /// server does not rate-limit.
    pub fn unlimited() -> Self {
        Self { rate: f64::MAX, burst: f64::MAX, tokens: f64::MAX, last: tokio::time::Instant::now() }
    }

    fn refill(&mut self) {
        let now = tokio::time::Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
    }

    /// Waits until one more message may be sent, and takes its token.
    pub async fn wait(&mut self) {
        self.refill();
        if self.tokens < 1.0 {
            tokio::time::sleep(Duration::from_secs_f64((1.0 - self.tokens) / self.rate)).await;
            self.refill();
        }
        self.tokens -= 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pacing_keeps_under_the_announced_rate() {
        let limits = LimitsInfo {
            max_message_bytes: 65536,
            max_chat_chars: 4000,
            messages_per_second: 50,
            message_burst: 100,
            max_peers_per_room: 32,
            chat_history_page: 50,
            typing_ttl_ms: 5000,
        };
        let mut pacer = Pacer::new(&limits);
        let start = tokio::time::Instant::now();
        for _ in 0..89 {
            pacer.wait().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst (less the join and the margin) goes at once");
        for _ in 0..45 {
            pacer.wait().await;
        }
        // 45 more at 45/s: about a second.
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(990) && waited <= Duration::from_millis(1010), "{waited:?}");
    }
}
