//! Probe media for load tests: synthetic RTP at a chosen bitrate whose
//! payload carries its send time, so that a receiver in the same process
//! measures the one-way latency of every packet (through an SFU, for
//! instance). The payload is not decodable video: probes are for headless
//! peers and benchmarks only.

use bytes::Bytes;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use webrtc::rtp::header::Header;
use webrtc::rtp::packet::Packet;
use webrtc::track::track_local::TrackLocalWriter;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;

/// Marks a probe payload (after a one-byte VP8 payload descriptor).
pub const MAGIC: [u8; 4] = *b"SBPR";
/// Bytes of payload per video packet: about an MTU's worth, like real VP8.
pub const VIDEO_PAYLOAD: usize = 1100;
/// Bytes of payload per audio packet: Opus at ~32 kbit/s in 20 ms frames.
pub const AUDIO_PAYLOAD: usize = 80;
/// Audio packet interval.
pub const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
/// Video packets per frame (30 frames per second share an RTP timestamp).
const FRAME_RATE: f64 = 30.0;

/// The process's probe clock: microseconds since the first use.
pub fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// A probe payload of `len` bytes stamped with the current probe time.
pub fn payload(len: usize) -> Bytes {
    let mut data = vec![0u8; len.max(13)];
    data[0] = 0x10; // VP8 payload descriptor: start of partition.
    data[1..5].copy_from_slice(&MAGIC);
    data[5..13].copy_from_slice(&now_us().to_be_bytes());
    Bytes::from(data)
}

/// The send time stamped in a probe payload, if it is one.
pub fn stamp(payload: &[u8]) -> Option<u64> {
    if payload.len() < 13 || payload[1..5] != MAGIC {
        return None;
    }
    let mut time = [0u8; 8];
    time.copy_from_slice(&payload[5..13]);
    Some(u64::from_be_bytes(time))
}

/// Writes probe packets to `track` forever: `kbps` of video-sized packets,
/// or (with `audio`) one small packet every 20 ms.
pub async fn feed(track: Arc<TrackLocalStaticRTP>, audio: bool, kbps: u32) {
    let (size, every, clock) = if audio {
        (AUDIO_PAYLOAD, AUDIO_INTERVAL, 48_000.0)
    } else {
        let per_second = (f64::from(kbps.max(1)) * 1000.0 / 8.0 / VIDEO_PAYLOAD as f64).max(1.0);
        (VIDEO_PAYLOAD, Duration::from_secs_f64(1.0 / per_second), 90_000.0)
    };
    let start = Instant::now();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq: u16 = 0;
    loop {
        tick.tick().await;
        let elapsed = start.elapsed().as_secs_f64();
        // Video packets of one frame share a timestamp.
        let units = if audio { elapsed } else { (elapsed * FRAME_RATE).floor() / FRAME_RATE };
        let header = Header {
            version: 2,
            sequence_number: seq,
            timestamp: (units * clock) as u32,
            marker: true,
            ..Header::default()
        };
        seq = seq.wrapping_add(1);
        // Unbound (not yet negotiated) tracks drop the packet: fine.
        let _ = track.write_rtp(&Packet { header, payload: payload(size) }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_others_are_not_probes() {
        let p = payload(VIDEO_PAYLOAD);
        assert_eq!(p.len(), VIDEO_PAYLOAD);
        let sent = stamp(&p).expect("a probe");
        assert!(sent <= now_us());
        assert_eq!(stamp(&[0x10, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(stamp(b"short"), None);
    }
}
