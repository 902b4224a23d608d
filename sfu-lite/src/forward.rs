//! The forwarder of one publisher track: copies its RTP to the current
//! subscribers, and sees that each new subscriber starts from a keyframe.

use crate::metrics::TrackMetrics;
use crate::room::{RoomEvent, TrackKey};
use std::collections::HashMap;
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
    let mut starts = KeyframeWatch::default();
    while let Ok((packet, _)) = track.read_rtp().await {
        if outlets.has_changed().unwrap_or(false) {
            current = outlets.borrow_and_update().clone();
            starts.retain(&current);
        }
        let keyframe = video && switchboard_rtc::vp8::is_rtp_keyframe(&packet.payload);
        let mut ask = false;
        for outlet in current.iter() {
            let bound = outlet.write_rtp(&packet).await.is_ok_and(|written| written > 0);
            if video && bound {
                ask |= starts.on_packet(outlet, keyframe, std::time::Instant::now());
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

/// Which outlets of a video track still wait for their first keyframe.
#[derive(Debug, Default)]
struct KeyframeWatch {
    /// Outlets (by address) seen bound: when a keyframe was last asked for
    /// them, or `None` once one went out.
    outlets: HashMap<usize, Option<std::time::Instant>>,
}

impl KeyframeWatch {
    /// A packet went out on a bound outlet; true when the publisher should
    /// be asked for a keyframe now.
    fn on_packet(&mut self, outlet: &Arc<TrackLocalStaticRTP>, keyframe: bool, now: std::time::Instant) -> bool {
        let id = Arc::as_ptr(outlet) as usize;
        match self.outlets.get_mut(&id) {
            _ if keyframe => {
                self.outlets.insert(id, None);
                false
            }
            None => {
                self.outlets.insert(id, Some(now));
                true
            }
            Some(Some(asked)) if now.saturating_duration_since(*asked) >= KEYFRAME_RETRY => {
                *asked = now;
                true
            }
            Some(_) => false,
        }
    }

    /// Forgets outlets no longer forwarded to.
    fn retain(&mut self, current: &Outlets) {
        self.outlets.retain(|id, _| current.iter().any(|o| Arc::as_ptr(o) as usize == *id));
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
        let mut watch = KeyframeWatch::default();
        let t0 = Instant::now();
        assert!(watch.on_packet(&a, false, t0), "first bound packet asks");
        assert!(!watch.on_packet(&a, false, t0 + Duration::from_millis(500)), "not again at once");
        assert!(watch.on_packet(&a, false, t0 + KEYFRAME_RETRY), "again when none came");
        assert!(!watch.on_packet(&a, true, t0 + KEYFRAME_RETRY * 2), "a keyframe went out");
        assert!(!watch.on_packet(&a, false, t0 + KEYFRAME_RETRY * 5), "served: no more requests");
        assert!(!watch.on_packet(&b, true, t0), "an outlet whose first packet is a keyframe needs none");
        watch.retain(&Arc::new(vec![b.clone()]));
        assert!(watch.on_packet(&a, false, t0 + KEYFRAME_RETRY * 6), "a forgotten outlet starts over");
    }
}
