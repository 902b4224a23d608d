//! Candidates on their way in and out of a connection.
//!
//! In: a remote candidate can arrive before the description it belongs to
//! (trickle races the offer through the server); it waits in a
//! [`CandidateQueue`] whose size is capped, so a remote that sends
//! candidates and never a description cannot make us hold unbounded memory.
//!
//! Out: webrtc-rs 0.17 gives each local candidate an empty `sdpMid`; a stack
//! that follows the W3C rule (`sdpMid` first, then `sdpMLineIndex`) rejects
//! those. With BUNDLE every candidate belongs to the first media section, so
//! it is sent with that section's real mid ([`bundle_mid`]).

use crate::convert::candidate_from_rtc;
use switchboard_protocol::IceCandidate;
use webrtc::ice_transport::ice_candidate::RTCIceCandidateInit;

/// Remote candidates held before the first remote description, per
/// connection. A browser gathers a handful per interface and server (a
/// dozen is typical, a few dozen with several TURN servers); past the cap a
/// candidate is dropped and reported once: ICE may then miss a path, the
/// server and our memory do not suffer.
pub const MAX_PENDING_CANDIDATES: usize = 128;

/// Remote candidates waiting for their description, at most
/// [`MAX_PENDING_CANDIDATES`].
#[derive(Debug, Default)]
pub struct CandidateQueue {
    held: Vec<RTCIceCandidateInit>,
    dropped: u64,
}

impl CandidateQueue {
    /// Holds `candidate`. False when the queue is full and it was dropped.
    pub fn push(&mut self, candidate: RTCIceCandidateInit) -> bool {
        if self.held.len() >= MAX_PENDING_CANDIDATES {
            self.dropped += 1;
            return false;
        }
        self.held.push(candidate);
        true
    }

    /// Everything held, in arrival order, emptying the queue.
    pub fn take(&mut self) -> Vec<RTCIceCandidateInit> {
        std::mem::take(&mut self.held)
    }

    /// Candidates held now.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Candidates dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// The mid of the first media section of `sdp`: the BUNDLE tag every
/// candidate belongs to. `None` when the description has no media section
/// with a mid.
pub fn bundle_mid(sdp: &str) -> Option<String> {
    let mut in_media = false;
    for line in sdp.lines() {
        if line.starts_with("m=") {
            if in_media {
                // The first section had no mid: give up rather than guess.
                return None;
            }
            in_media = true;
        } else if in_media && let Some(mid) = line.strip_prefix("a=mid:") {
            return Some(mid.trim().to_owned());
        }
    }
    None
}

/// A local candidate for the wire, with the real mid of the BUNDLE
/// section when webrtc-rs left it empty.
pub fn outgoing(init: RTCIceCandidateInit, bundle: Option<&str>) -> IceCandidate {
    let mut candidate = candidate_from_rtc(init);
    let missing = candidate.sdp_mid.as_deref().is_none_or(str::is_empty);
    if missing && let Some(mid) = bundle {
        candidate.sdp_mid = Some(mid.to_owned());
        candidate.sdp_m_line_index = Some(0);
    }
    candidate
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init(n: usize) -> RTCIceCandidateInit {
        RTCIceCandidateInit { candidate: format!("candidate:{n} 1 udp 1 127.0.0.1 {n} typ host"), ..Default::default() }
    }

    #[test]
    fn the_queue_holds_at_most_its_cap_and_counts_what_it_drops() {
        let mut queue = CandidateQueue::default();
        for n in 0..MAX_PENDING_CANDIDATES {
            assert!(queue.push(init(n)));
        }
        assert!(!queue.push(init(9999)), "one past the cap is dropped");
        assert_eq!(queue.len(), MAX_PENDING_CANDIDATES);
        assert_eq!(queue.dropped(), 1);
        let held = queue.take();
        assert_eq!(held.first().map(|c| c.candidate.as_str()), Some("candidate:0 1 udp 1 127.0.0.1 0 typ host"));
        assert!(queue.is_empty());
        assert!(queue.push(init(1)), "room again once the description came");
    }

    #[test]
    fn the_bundle_mid_is_the_first_media_sections() {
        let sdp = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\na=group:BUNDLE 0 1 2\r\n\
                   m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n";
        assert_eq!(bundle_mid(sdp).as_deref(), Some("0"));
        let data_first = "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:data\r\n";
        assert_eq!(bundle_mid(data_first).as_deref(), Some("data"));
        assert_eq!(bundle_mid("v=0\r\ns=-\r\n"), None);
        assert_eq!(bundle_mid("v=0\r\nm=audio 9 X 0\r\nm=video 9 X 0\r\na=mid:1\r\n"), None);
    }

    #[test]
    fn a_candidate_without_a_mid_gets_the_bundle_mid() {
        let empty = RTCIceCandidateInit { sdp_mid: Some(String::new()), sdp_mline_index: Some(0), ..init(1) };
        let out = outgoing(empty, Some("0"));
        assert_eq!(out.sdp_mid.as_deref(), Some("0"));
        assert_eq!(out.sdp_m_line_index, Some(0));
        let named = RTCIceCandidateInit { sdp_mid: Some("audio".into()), ..init(2) };
        assert_eq!(outgoing(named, Some("0")).sdp_mid.as_deref(), Some("audio"), "a real mid is kept");
    }
}
