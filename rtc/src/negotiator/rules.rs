//! The negotiation rules with no IO and no clock, shared with the browser's
//! `web/js/negotiation.js`: who offers, what a colliding offer gets, and the
//! offerer's two clocks (ICE restart, answer timeout). Both replay the
//! scenarios in `rtc/fixtures/negotiation.json` (Rust: the tests below;
//! JS: tests/tests/protocol.rs in Chromium).

use super::{ANSWER_TIMEOUT, ICE_RESTART_AFTER, ICE_RESTART_RETRY};

/// Whether this side makes every offer on a connection: in an SFU room the
/// SFU, in a mesh the newcomer (the one that found the other in its
/// welcome's `peers`).
pub fn makes_offers(sfu_room: bool, i_am_sfu: bool, i_am_newcomer: bool) -> bool {
    if sfu_room { i_am_sfu } else { i_am_newcomer }
}

/// Whether this side is the polite one of the pair: its id sorts greater.
pub fn polite(me: &str, remote: &str) -> bool {
    me > remote
}

/// What an offer that arrives while ours is pending gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collision {
    /// Impolite: ours wins, theirs is ignored.
    Ignore,
    /// Polite, on a stack that can: roll ours back and answer theirs.
    RollBackAndAnswer,
    /// Polite, on a stack that cannot roll back (webrtc-rs 0.17): theirs is
    /// dropped and reported. One offerer per connection keeps this from
    /// happening between Switchboard's own clients.
    Drop,
}

impl Collision {
    /// The rule for a side that is `polite` or not, on a stack that
    /// `can_roll_back` or not.
    pub fn rule(polite: bool, can_roll_back: bool) -> Self {
        match (polite, can_roll_back) {
            (false, _) => Self::Ignore,
            (true, true) => Self::RollBackAndAnswer,
            (true, false) => Self::Drop,
        }
    }

    /// The name the fixtures use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ignore => "ignore",
            Self::RollBackAndAnswer => "roll_back_and_answer",
            Self::Drop => "drop",
        }
    }
}

/// The ICE connection states the clocks care about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ice {
    /// Connected or completed.
    Up,
    /// Disconnected or failed.
    Down,
    /// Any other (new, checking, closed).
    Other,
}

/// What a clock asks for when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Offer with new ICE credentials (attempt counts from 1 per outage).
    RestartIce(u32),
    /// Our offer got no answer: make it again.
    OfferAgain,
}

/// The offerer's clocks, in milliseconds from any origin.
#[derive(Debug, Clone, Default)]
pub struct Clocks {
    offerer: bool,
    restart_at: Option<u64>,
    answer_at: Option<u64>,
    restarts: u32,
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Clocks {
    /// Clocks for the side that makes the offers (`offerer`) or not (its
    /// clocks never fire).
    pub fn new(offerer: bool) -> Self {
        Self { offerer, ..Self::default() }
    }

    /// ICE changed at `now`. True when ICE is back after restarts (report
    /// it).
    pub fn on_ice(&mut self, ice: Ice, now: u64) -> bool {
        match ice {
            Ice::Down if self.offerer && self.restart_at.is_none() => {
                self.restart_at = Some(now + ms(ICE_RESTART_AFTER));
                false
            }
            Ice::Up => {
                self.restart_at = None;
                std::mem::take(&mut self.restarts) > 0
            }
            _ => false,
        }
    }

    /// An offer of ours went out at `now`.
    pub fn offer_sent(&mut self, now: u64) {
        self.answer_at = Some(now + ms(ANSWER_TIMEOUT));
    }

    /// The answer to our offer came.
    pub fn answered(&mut self) {
        self.answer_at = None;
    }

    /// When the next clock fires.
    pub fn next(&self) -> Option<u64> {
        match (self.restart_at, self.answer_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What is due at `now`, if anything. A restart is tried again every
    /// [`ICE_RESTART_RETRY`] until ICE is up; while one is pending, a
    /// missing answer waits for it (the restart is the new offer).
    pub fn fire(&mut self, now: u64) -> Option<Due> {
        if self.restart_at.is_some_and(|at| at <= now) {
            self.restart_at = Some(now + ms(ICE_RESTART_RETRY));
            self.restarts += 1;
            return Some(Due::RestartIce(self.restarts));
        }
        if self.answer_at.is_some_and(|at| at <= now) {
            self.answer_at = None;
            return self.restart_at.is_none().then_some(Due::OfferAgain);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn fixture() -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/negotiation.json");
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("JSON")
    }

    fn due_name(due: Option<Due>) -> Value {
        match due {
            None => Value::Null,
            Some(Due::RestartIce(n)) => json!(format!("restart_ice {n}")),
            Some(Due::OfferAgain) => json!("offer_again"),
        }
    }

    #[test]
    fn every_negotiation_scenario_holds() {
        let fixture = fixture();
        for case in fixture["makes_offers"].as_array().expect("cases") {
            let got = makes_offers(
                case["sfu_room"].as_bool().expect("bool"),
                case["i_am_sfu"].as_bool().expect("bool"),
                case["i_am_newcomer"].as_bool().expect("bool"),
            );
            assert_eq!(json!(got), case["expect"], "{case}");
        }
        for case in fixture["collisions"].as_array().expect("cases") {
            let polite = polite(case["me"].as_str().expect("me"), case["remote"].as_str().expect("remote"));
            let rule = Collision::rule(polite, case["can_roll_back"].as_bool().expect("bool"));
            assert_eq!(json!(rule.as_str()), case["expect"], "{case}");
        }
        for scenario in fixture["clocks"].as_array().expect("scenarios") {
            let name = scenario["name"].as_str().expect("name");
            let mut clocks = Clocks::new(scenario["offerer"].as_bool().expect("offerer"));
            for (i, step) in scenario["steps"].as_array().expect("steps").iter().enumerate() {
                let at = format!("{name}, step {i} ({step})");
                let now = step["at"].as_u64().expect("at");
                match step["op"].as_str().expect("op") {
                    "ice" => {
                        let ice = match step["state"].as_str().expect("state") {
                            "connected" | "completed" => Ice::Up,
                            "disconnected" | "failed" => Ice::Down,
                            _ => Ice::Other,
                        };
                        assert_eq!(json!(clocks.on_ice(ice, now)), step["back"], "{at}");
                    }
                    "offer_sent" => clocks.offer_sent(now),
                    "answered" => clocks.answered(),
                    "fire" => assert_eq!(due_name(clocks.fire(now)), step["expect"], "{at}"),
                    other => panic!("unknown op {other} in {at}"),
                }
                assert_eq!(json!(clocks.next()), step["next"], "{at}: next");
            }
        }
    }
}
