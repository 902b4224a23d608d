//! Per-track forwarding figures of the tracks being forwarded now, rendered
//! in the Prometheus text format for the host's `/metrics`.
//!
//! The `metrics` crate keeps every series it ever saw until the process
//! ends, so labelling by room and track made the exporter grow with every
//! room the SFU ever served. Here a track's series exists while the track
//! is forwarded and disappears with it: the label sets are bounded by the
//! live rooms and their participants.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// The figures of one forwarded track.
#[derive(Debug, Default)]
pub struct TrackStats {
    packets: AtomicU64,
    bytes: AtomicU64,
    subscribers: AtomicU64,
    keyframe_requests: AtomicU64,
}

type Live = BTreeMap<(String, String), Arc<TrackStats>>;

fn live() -> MutexGuard<'static, Live> {
    static LIVE: OnceLock<Mutex<Live>> = OnceLock::new();
    // The map is only inserted into and removed from: a panic elsewhere
    // cannot leave it inconsistent.
    LIVE.get_or_init(Mutex::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The series of one track, registered while any clone of it is alive.
#[derive(Debug, Clone)]
pub struct TrackMetrics(Arc<Registration>);

#[derive(Debug)]
struct Registration {
    key: (String, String),
    stats: Arc<TrackStats>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut live = live();
        // A newer publication of the same track may have replaced ours.
        if live.get(&self.key).is_some_and(|s| Arc::ptr_eq(s, &self.stats)) {
            live.remove(&self.key);
        }
    }
}

impl TrackMetrics {
    /// Registers the series of `track` (`<kind>-<peer id>`) in `room`.
    pub fn new(room: &str, track: String) -> Self {
        let key = (room.to_owned(), track);
        let stats = Arc::new(TrackStats::default());
        live().insert(key.clone(), stats.clone());
        Self(Arc::new(Registration { key, stats }))
    }

    /// Packets forwarded (one per outlet written).
    pub fn forwarded(&self, packets: u64, bytes: u64) {
        self.0.stats.packets.fetch_add(packets, Ordering::Relaxed);
        self.0.stats.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Subscribers it is forwarded to now.
    pub fn set_subscribers(&self, n: usize) {
        self.0.stats.subscribers.store(n as u64, Ordering::Relaxed);
    }

    /// A keyframe request sent to the publisher.
    pub fn keyframe_requested(&self) {
        self.0.stats.keyframe_requests.fetch_add(1, Ordering::Relaxed);
    }
}

/// A metric family: name, type, and how to read it from a track.
type Family = (&'static str, &'static str, fn(&TrackStats) -> u64);

/// The live tracks' series, in the Prometheus text format (nothing when no
/// track is forwarded).
pub fn render() -> String {
    let live = live();
    let mut out = String::new();
    let families: [Family; 4] = [
        ("switchboard_sfu_forwarded_packets_total", "counter", |s| s.packets.load(Ordering::Relaxed)),
        ("switchboard_sfu_forwarded_bytes_total", "counter", |s| s.bytes.load(Ordering::Relaxed)),
        ("switchboard_sfu_subscribers", "gauge", |s| s.subscribers.load(Ordering::Relaxed)),
        ("switchboard_sfu_keyframe_requests_total", "counter", |s| s.keyframe_requests.load(Ordering::Relaxed)),
    ];
    if live.is_empty() {
        return out;
    }
    for (name, kind, value) in families {
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for ((room, track), stats) in live.iter() {
            let _ = writeln!(out, "{name}{{room=\"{}\",track=\"{}\"}} {}", escape(room), escape(track), value(stats));
        }
    }
    out
}

/// A Prometheus label value (room names and track ids have nothing to
/// escape; this keeps the output valid whatever they become).
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_track_series_lives_as_long_as_the_track() {
        let metrics = TrackMetrics::new("metrics-test", "video-pA".into());
        let forwarder = metrics.clone();
        forwarder.forwarded(3, 300);
        metrics.set_subscribers(2);
        let text = render();
        assert!(text.contains("switchboard_sfu_forwarded_packets_total{room=\"metrics-test\",track=\"video-pA\"} 3"));
        assert!(text.contains("switchboard_sfu_subscribers{room=\"metrics-test\",track=\"video-pA\"} 2"));
        drop(metrics);
        assert!(render().contains("metrics-test"), "the forwarder still holds it");
        drop(forwarder);
        assert!(!render().contains("metrics-test"), "gone with the track");
    }
}
