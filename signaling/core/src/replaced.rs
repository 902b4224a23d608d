//! The resume tokens of sessions that were replaced (the same identity
//! joined again), remembered for one resume grace: a client that was away
//! when it was replaced, and so never read its `replaced` error, is told so
//! when it tries to resume, instead of joining afresh and replacing the
//! session that replaced it (which would then do the same, forever).

use crate::resume_token::ResumeToken;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// Replaced sessions' tokens remembered at most; the oldest is forgotten
/// first (its client then joins afresh, as before this existed).
pub const MAX_REPLACED_TOKENS: usize = 4096;

/// Tokens of replaced sessions, each until a deadline.
#[derive(Debug, Default)]
pub struct ReplacedTokens {
    /// Lookups only; `order` decides what is forgotten first.
    until: HashMap<ResumeToken, Instant>,
    order: VecDeque<ResumeToken>,
}

impl ReplacedTokens {
    /// Remembers `token` until `until`.
    pub fn record(&mut self, token: ResumeToken, until: Instant) {
        while self.order.len() >= MAX_REPLACED_TOKENS {
            if let Some(old) = self.order.pop_front() {
                self.until.remove(&old);
            }
        }
        if self.until.insert(token.clone(), until).is_none() {
            self.order.push_back(token);
        }
    }

    /// Whether `token` belonged to a session replaced less than a grace
    /// ago. Expired entries are dropped on the way.
    pub fn contains(&mut self, token: &ResumeToken, now: Instant) -> bool {
        while let Some(oldest) = self.order.front() {
            if self.until.get(oldest).is_some_and(|u| *u > now) {
                break;
            }
            if let Some(old) = self.order.pop_front() {
                self.until.remove(&old);
            }
        }
        self.until.get(token).is_some_and(|u| *u > now)
    }

    /// Forgets everything (shutdown).
    pub fn clear(&mut self) {
        self.until.clear();
        self.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t(text: &str) -> ResumeToken {
        ResumeToken::from_wire(text)
    }

    #[test]
    fn remembered_for_the_grace_and_bounded() {
        let now = Instant::now();
        let mut r = ReplacedTokens::default();
        r.record(t("a"), now + Duration::from_secs(20));
        assert!(r.contains(&t("a"), now));
        assert!(!r.contains(&t("b"), now));
        assert!(!r.contains(&t("a"), now + Duration::from_secs(20)), "gone after the grace");
        for i in 0..MAX_REPLACED_TOKENS + 10 {
            r.record(t(&format!("t{i}")), now + Duration::from_secs(20));
        }
        assert!(r.order.len() <= MAX_REPLACED_TOKENS && r.until.len() <= MAX_REPLACED_TOKENS);
        assert!(!r.contains(&t("t0"), now), "the oldest is forgotten first");
    }
}
