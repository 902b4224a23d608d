//! The forwarder of one publisher track: copies its RTP to the current
//! subscribers, and sees that each new subscriber starts from a keyframe.

use crate::metrics::TrackMetrics;
use crate::room::{RoomEvent, TrackKey};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use webrtc::track::track_local::TrackLocalWriter;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_remote::TrackRemote;

/// The outlets a forwarder writes to.
pub type Outlets = Arc<Vec<Arc<TrackLocalStaticRTP>>>;

/// Copies every RTP packet of `track` to the current outlets. Each outlet
/// rewrites SSRC and payload type for its subscriber's connection.
///
/// An outlet not yet bound (its subscriber's negotiation under way) takes
/// nothing. For video, the first packet an outlet does take asks the
/// publisher for a keyframe, and the request is repeated every
/// [`KEYFRAME_RETRY`] until a keyframe has gone out on it: a request made
/// at subscribe time (before the binding) is answered before the
/// subscriber can receive it, and most encoders send keyframes only when
/// asked.
pub async fn forward(
    track: Arc<TrackRemote>,
    mut outlets: watch::Receiver<Outlets>,
    metrics: TrackMetrics,
    key: TrackKey,
    room: mpsc::Sender<RoomEvent>,
) {
    let video = key.kind == "video";
    let mut current = outlets.borrow_and_update().clone();
    let mut starts = KeyframeWatch::new(&current);
    while let Ok((packet, _)) = track.read_rtp().await {
        if outlets.has_changed().unwrap_or(false) {
            let next = outlets.borrow_and_update().clone();
            starts.follow(&current, &next);
            current = next;
        }
        let keyframe = video && switchboard_rtc::vp8::is_rtp_keyframe(&packet.payload);
        let (mut ask, mut now) = (false, None);
        for (i, outlet) in current.iter().enumerate() {
            let bound = outlet.write_rtp(&packet).await.is_ok_and(|written| written > 0);
            // Served outlets (all but the newest) cost nothing more here:
            // this loop runs for every packet and every subscriber.
            if video && bound && starts.waiting(i) {
                ask |= starts.on_packet(i, keyframe, *now.get_or_insert_with(std::time::Instant::now));
            }
        }
        // The room throttles requests per track; a full queue skips this
        // one and the next packet asks again.
        if ask {
            let _ = room.try_send(RoomEvent::KeyframeWanted { key: key.clone() });
        }
        metrics.forwarded(current.len() as u64, (packet.payload.len() * current.len()) as u64);
    }
}

/// How long a newly bound outlet waits for a keyframe before the publisher
/// is asked again.
pub const KEYFRAME_RETRY: std::time::Duration = std::time::Duration::from_millis(1000);

/// Where an outlet of a video track stands with its first keyframe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// Nothing has gone out on it yet.
    Unbound,
    /// Bound, no keyframe yet; one was asked for then.
    Asked(std::time::Instant),
    /// A keyframe went out on it.
    Served,
}

/// Which outlets of a video track still wait for their first keyframe, by
/// position in the forwarder's outlet list.
#[derive(Debug)]
struct KeyframeWatch {
    states: Vec<Start>,
}

impl KeyframeWatch {
    fn new(outlets: &[Arc<TrackLocalStaticRTP>]) -> Self {
        Self { states: vec![Start::Unbound; outlets.len()] }
    }

    /// The outlet list changed from `old` to `new`: each outlet keeps its
    /// state; a new one starts unbound.
    fn follow(&mut self, old: &[Arc<TrackLocalStaticRTP>], new: &[Arc<TrackLocalStaticRTP>]) {
        self.states = new
            .iter()
            .map(|o| {
                let was = old.iter().position(|p| Arc::ptr_eq(p, o));
                was.and_then(|i| self.states.get(i).copied()).unwrap_or(Start::Unbound)
            })
            .collect();
    }

    /// Whether outlet `i` still waits for a keyframe.
    fn waiting(&self, i: usize) -> bool {
        self.states.get(i).is_some_and(|s| *s != Start::Served)
    }

    /// A packet went out on bound outlet `i`; true when the publisher should
    /// be asked for a keyframe now.
    fn on_packet(&mut self, i: usize, keyframe: bool, now: std::time::Instant) -> bool {
        let Some(state) = self.states.get_mut(i) else { return false };
        match *state {
            _ if keyframe => {
                *state = Start::Served;
                false
            }
            Start::Unbound => {
                *state = Start::Asked(now);
                true
            }
            Start::Asked(asked) if now.saturating_duration_since(asked) >= KEYFRAME_RETRY => {
                *state = Start::Asked(now);
                true
            }
            Start::Asked(_) | Start::Served => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};
    use webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecCapability;

    fn outlet() -> Arc<TrackLocalStaticRTP> {
        Arc::new(TrackLocalStaticRTP::new(RTCRtpCodecCapability::default(), "v".into(), "s".into()))
    }

    #[test]
    fn a_new_outlet_asks_for_a_keyframe_until_one_went_out() {
        let (a, b) = (outlet(), outlet());
        let both = vec![a.clone(), b.clone()];
        let mut watch = KeyframeWatch::new(&both);
        let t0 = Instant::now();
        assert!(watch.on_packet(0, false, t0), "first bound packet asks");
        assert!(!watch.on_packet(0, false, t0 + Duration::from_millis(500)), "not again at once");
        assert!(watch.on_packet(0, false, t0 + KEYFRAME_RETRY), "again when none came");
        assert!(!watch.on_packet(0, true, t0 + KEYFRAME_RETRY * 2), "a keyframe went out");
        assert!(!watch.on_packet(0, false, t0 + KEYFRAME_RETRY * 5), "served: no more requests");
        assert!(!watch.waiting(0), "served outlets cost the forwarder nothing more");
        assert!(!watch.on_packet(1, true, t0), "an outlet whose first packet is a keyframe needs none");
        let only_b = vec![b.clone()];
        watch.follow(&both, &only_b);
        assert!(!watch.waiting(0), "b kept its state when a went");
        let b_then_a = vec![b.clone(), a.clone()];
        watch.follow(&only_b, &b_then_a);
        assert!(watch.on_packet(1, false, t0 + KEYFRAME_RETRY * 6), "a forgotten outlet starts over");
    }
}
