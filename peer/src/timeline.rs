//! When each step of setting up a link happened, measured from the moment
//! the peer started joining: what `switchboard-peer` prints and what the
//! join benchmark splits by phase.

use serde::Serialize;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A step of connecting to one remote participant, in the order they
/// normally happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// This peer sent its offer.
    OfferSent,
    /// An offer from the remote arrived.
    OfferReceived,
    /// This peer sent its answer.
    AnswerSent,
    /// The remote's answer arrived.
    AnswerReceived,
    /// ICE found a working candidate pair.
    IceConnected,
    /// DTLS finished: the peer connection is `connected`.
    DtlsConnected,
    /// The reliable `chat` data channel opened.
    ChannelOpen,
    /// The first RTP packet arrived from the remote.
    FirstRtp,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Self; 8] = [
        Self::OfferSent,
        Self::OfferReceived,
        Self::AnswerSent,
        Self::AnswerReceived,
        Self::IceConnected,
        Self::DtlsConnected,
        Self::ChannelOpen,
        Self::FirstRtp,
    ];

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            Self::OfferSent => "offer_sent",
            Self::OfferReceived => "offer_received",
            Self::AnswerSent => "answer_sent",
            Self::AnswerReceived => "answer_received",
            Self::IceConnected => "ice_connected",
            Self::DtlsConnected => "dtls_connected",
            Self::ChannelOpen => "channel_open",
            Self::FirstRtp => "first_rtp",
        }
    }
}

/// The phases of one link; each is recorded once, the first time it
/// happens (renegotiations do not move them).
#[derive(Debug)]
pub struct Timeline {
    start: Instant,
    at: [OnceLock<Duration>; 8],
}

impl Timeline {
    /// A timeline measured from `start` (when the peer began joining).
    pub fn new(start: Instant) -> Self {
        Self { start, at: Default::default() }
    }

    /// Records `phase` now, if it was not recorded yet; returns the time
    /// since the start when it was recorded by this call.
    pub fn mark(&self, phase: Phase) -> Option<Duration> {
        let now = self.start.elapsed();
        let index = Phase::ALL.iter().position(|p| *p == phase)?;
        let mut fresh = false;
        self.at[index].get_or_init(|| {
            fresh = true;
            now
        });
        fresh.then_some(now)
    }

    /// Every recorded phase, in order.
    pub fn phases(&self) -> Vec<(Phase, Duration)> {
        Phase::ALL.iter().zip(&self.at).filter_map(|(p, at)| at.get().map(|d| (*p, *d))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_phase_is_recorded_once() {
        let t = Timeline::new(Instant::now());
        assert!(t.mark(Phase::OfferSent).is_some());
        assert!(t.mark(Phase::OfferSent).is_none());
        assert!(t.mark(Phase::ChannelOpen).is_some());
        let phases: Vec<Phase> = t.phases().into_iter().map(|(p, _)| p).collect();
        assert_eq!(phases, vec![Phase::OfferSent, Phase::ChannelOpen]);
    }
}
