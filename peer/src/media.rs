//! Media in and out, on webrtc-rs: VP8 from IVF and Opus from Ogg, looped
//! and paced in real time into one local track per kind shared by every
//! link; and counters for every remote track.

use anyhow::{Context, bail};
use bytes::Bytes;
use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use switchboard_rtc::vp8::is_frame_keyframe;
use tokio::task::JoinHandle;
use webrtc::api::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use webrtc::media::Sample;
use webrtc::media::io::ivf_reader::IVFReader;
use webrtc::media::io::ogg_reader::OggReader;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtcp::receiver_report::ReceiverReport;
use webrtc::rtcp::sender_report::SenderReport;
use webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecCapability;
use webrtc::track::track_local::TrackLocal;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::track_local_static_sample::TrackLocalStaticSample;

/// The default video: 5 s of ffmpeg's `testsrc`, 640x360 at 30 fps, VP8 at
/// 300 kbit/s with a keyframe every second (see the README for the command).
pub const DEFAULT_VIDEO: &[u8] = include_bytes!("../media/testsrc.ivf");
/// The default audio: 5 s of a 440 Hz tone, Opus 32 kbit/s, one 20 ms packet
/// per Ogg page.
pub const DEFAULT_AUDIO: &[u8] = include_bytes!("../media/tone.ogg");

/// Opus's RTP clock rate.
const OPUS_CLOCK: u64 = 48_000;

/// What a peer sends.
#[derive(Debug, Clone, Default)]
pub enum MediaSource {
    /// No media: data channels only.
    #[default]
    None,
    /// The clips built into the binary.
    Default,
    /// Send back what arrives: every RTP packet received is forwarded on
    /// this peer's own track of the same kind (an echo for tests).
    Reflect,
    /// Synthetic video at `video_kbps` and audio-sized packets, each
    /// stamped with its send time: receivers in the same process measure
    /// one-way latency (load tests; not decodable).
    Probe {
        /// Video bitrate, kbit/s.
        video_kbps: u32,
    },
    /// IVF (VP8) and Ogg (Opus) files; either may be absent.
    Files {
        /// VP8 in IVF.
        video: Option<Vec<u8>>,
        /// Opus in Ogg, one packet per page.
        audio: Option<Vec<u8>>,
    },
}

/// A media frame and how long it lasts.
type Frame = (Bytes, Duration);

/// The peer's outgoing tracks and the tasks that feed them.
pub struct LocalMedia {
    tracks: Vec<Arc<dyn TrackLocal + Send + Sync>>,
    feeders: Vec<JoinHandle<()>>,
    /// Set when a receiver asks for a keyframe (PLI or FIR): the video
    /// feeder jumps to the clip's next keyframe, as a real encoder would
    /// encode one.
    keyframe_wanted: Arc<AtomicBool>,
    /// In reflect mode, the tracks received RTP is forwarded to: (audio, video).
    reflect: Option<(Arc<TrackLocalStaticRTP>, Arc<TrackLocalStaticRTP>)>,
}

impl std::fmt::Debug for LocalMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalMedia").field("tracks", &self.tracks.len()).finish()
    }
}

impl Drop for LocalMedia {
    fn drop(&mut self) {
        for feeder in &self.feeders {
            feeder.abort();
        }
    }
}

impl LocalMedia {
    /// Parses the sources (a bad file fails here, with the reason) and
    /// starts feeding the tracks.
    pub fn start(source: &MediaSource, stream_id: &str) -> anyhow::Result<Self> {
        let (video, audio) = match source {
            MediaSource::None => (None, None),
            MediaSource::Default => (Some(DEFAULT_VIDEO), Some(DEFAULT_AUDIO)),
            MediaSource::Files { video, audio } => (video.as_deref(), audio.as_deref()),
            MediaSource::Probe { video_kbps } => {
                let audio = Arc::new(TrackLocalStaticRTP::new(codec(MIME_TYPE_OPUS), "audio".into(), stream_id.into()));
                let video = Arc::new(TrackLocalStaticRTP::new(codec(MIME_TYPE_VP8), "video".into(), stream_id.into()));
                let feeders = vec![
                    tokio::spawn(crate::probe::feed(audio.clone(), true, 0)),
                    tokio::spawn(crate::probe::feed(video.clone(), false, *video_kbps)),
                ];
                return Ok(Self {
                    tracks: vec![audio, video],
                    feeders,
                    reflect: None,
                    keyframe_wanted: Arc::default(),
                });
            }
            MediaSource::Reflect => {
                let audio = Arc::new(TrackLocalStaticRTP::new(codec(MIME_TYPE_OPUS), "audio".into(), stream_id.into()));
                let video = Arc::new(TrackLocalStaticRTP::new(codec(MIME_TYPE_VP8), "video".into(), stream_id.into()));
                let tracks: Vec<Arc<dyn TrackLocal + Send + Sync>> = vec![audio.clone(), video.clone()];
                let reflect = Some((audio, video));
                return Ok(Self { tracks, feeders: Vec::new(), reflect, keyframe_wanted: Arc::default() });
            }
        };
        let mut media =
            Self { tracks: Vec::new(), feeders: Vec::new(), reflect: None, keyframe_wanted: Arc::default() };
        if let Some(ivf) = video {
            let frames = ivf_frames(ivf).context("reading the IVF video")?;
            let wanted = Some(media.keyframe_wanted.clone());
            media.add(MIME_TYPE_VP8, "video", stream_id, Clip::new(frames, wanted));
        }
        if let Some(ogg) = audio {
            let frames = ogg_frames(ogg).context("reading the Ogg audio")?;
            media.add(MIME_TYPE_OPUS, "audio", stream_id, Clip::new(frames, None));
        }
        Ok(media)
    }

    /// Kinds this peer sends: (audio, video).
    pub fn kinds(&self) -> (bool, bool) {
        let has = |kind: &str| self.tracks.iter().any(|t| t.kind().to_string() == kind);
        (has("audio"), has("video"))
    }

    /// In reflect mode, the track that received `video` (or audio) RTP goes out on.
    pub fn reflector(&self, video: bool) -> Option<Arc<TrackLocalStaticRTP>> {
        self.reflect.as_ref().map(|(a, v)| if video { v.clone() } else { a.clone() })
    }

    fn add(&mut self, mime: &str, id: &str, stream_id: &str, clip: Clip) {
        let track = Arc::new(TrackLocalStaticSample::new(codec(mime), id.to_owned(), stream_id.to_owned()));
        self.feeders.push(tokio::spawn(feed(track.clone(), clip)));
        self.tracks.push(track);
    }

    /// Adds every track to `pc` (before it negotiates), and drains RTCP
    /// for each sender so that NACK and reports work and keyframe requests
    /// (PLI, FIR) reach the video feeder. The remote's receiver reports
    /// give the round-trip time, kept in the returned meter (microseconds;
    /// 0 until the first report).
    pub async fn attach(&self, pc: &RTCPeerConnection) -> anyhow::Result<Arc<AtomicU64>> {
        let rtt = Arc::new(AtomicU64::new(0));
        for track in &self.tracks {
            let sender = pc.add_track(track.clone()).await.context("adding a track")?;
            let (rtt, keyframe_wanted) = (rtt.clone(), self.keyframe_wanted.clone());
            tokio::spawn(async move {
                while let Ok((packets, _)) = sender.read_rtcp().await {
                    let now = ntp_middle_32(std::time::SystemTime::now());
                    for packet in &packets {
                        let any = packet.as_any();
                        if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                            keyframe_wanted.store(true, Ordering::Relaxed);
                        }
                        let reports = match packet.as_any() {
                            p if p.is::<ReceiverReport>() => p.downcast_ref::<ReceiverReport>().map(|r| &r.reports),
                            p => p.downcast_ref::<SenderReport>().map(|r| &r.reports),
                        };
                        for report in reports.into_iter().flatten() {
                            if let Some(d) = rtt_from_report(now, report.last_sender_report, report.delay) {
                                rtt.store(u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1), Ordering::Relaxed);
                            }
                        }
                    }
                }
            });
        }
        Ok(rtt)
    }
}

/// The middle 32 bits of the NTP timestamp of `t` (16.16 fixed point
/// seconds), the unit of RTCP's LSR and DLSR fields.
fn ntp_middle_32(t: std::time::SystemTime) -> u32 {
    const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (((secs << 32) | frac) >> 16) as u32
}

/// RFC 3550 section 6.4.1: a report received at `now` (NTP middle 32 bits)
/// that echoes our sender report `lsr` after holding it `dlsr` gives the
/// round-trip time. Reports without a sender report (LSR 0) or with a
/// nonsensical result (over 10 s) give nothing.
fn rtt_from_report(now: u32, lsr: u32, dlsr: u32) -> Option<Duration> {
    if lsr == 0 {
        return None;
    }
    let units = now.wrapping_sub(lsr).wrapping_sub(dlsr);
    (units < 10 << 16).then(|| Duration::from_micros(u64::from(units) * 1_000_000 / 65_536))
}

/// The capability of the codecs this peer sends: VP8 at 90 kHz, stereo
/// Opus at 48 kHz (what browsers negotiate).
fn codec(mime: &str) -> RTCRtpCodecCapability {
    let (clock_rate, channels) = if mime == MIME_TYPE_OPUS { (48_000, 2) } else { (90_000, 0) };
    RTCRtpCodecCapability { mime_type: mime.to_owned(), clock_rate, channels, ..Default::default() }
}

/// A looped clip: its frames, where its keyframes are, and what asks for one.
#[derive(Debug)]
struct Clip {
    frames: Vec<Frame>,
    /// Indices of the keyframes (VP8 only; empty for audio).
    keyframes: Vec<usize>,
    /// Set by a keyframe request; taken by the feeder.
    wanted: Option<Arc<AtomicBool>>,
    at: usize,
}

impl Clip {
    fn new(frames: Vec<Frame>, wanted: Option<Arc<AtomicBool>>) -> Self {
        let keyframes = match wanted {
            Some(_) => frames.iter().enumerate().filter(|(_, (f, _))| is_frame_keyframe(f)).map(|(i, _)| i).collect(),
            None => Vec::new(),
        };
        Self { frames, keyframes, wanted, at: 0 }
    }

    /// The next frame to send: the following one, or after a keyframe
    /// request the clip's next keyframe (wrapping to the first).
    fn next_frame(&mut self) -> &Frame {
        if self.wanted.as_ref().is_some_and(|w| w.swap(false, Ordering::Relaxed))
            && let Some(&key) = self.keyframes.iter().find(|&&k| k >= self.at).or(self.keyframes.first())
        {
            self.at = key;
        }
        let i = self.at % self.frames.len().max(1);
        self.at = (i + 1) % self.frames.len().max(1);
        &self.frames[i]
    }
}

/// Writes the clip in a loop, one frame per its duration, on a schedule
/// that does not drift, until the peer drops its media. Writes before a
/// link is connected are dropped by webrtc-rs, which is what a live source
/// does too; so are writes that fail (a network that is down refuses
/// sends), and the source carries on, as a camera would, for when the path
/// comes back.
async fn feed(track: Arc<TrackLocalStaticSample>, mut clip: Clip) {
    let mut next = tokio::time::Instant::now();
    loop {
        let (data, duration) = clip.next_frame().clone();
        let sample = Sample { data, duration, ..Default::default() };
        if let Err(err) = track.write_sample(&sample).await {
            tracing::trace!(%err, "media write failed; the source carries on");
        }
        next += duration;
        tokio::time::sleep_until(next).await;
    }
}

fn ivf_frames(data: &[u8]) -> anyhow::Result<Vec<Frame>> {
    let (mut reader, header) = IVFReader::new(Cursor::new(data))?;
    if &header.four_cc != b"VP80" {
        bail!("the IVF must hold VP8 (fourcc VP80), not {:?}", String::from_utf8_lossy(&header.four_cc));
    }
    let (num, den) = (u64::from(header.timebase_numerator.max(1)), u64::from(header.timebase_denominator.max(1)));
    let per_frame = Duration::from_nanos(1_000_000_000 * num / den);
    let mut frames = Vec::new();
    while let Ok((frame, _)) = reader.parse_next_frame() {
        frames.push((frame.freeze(), per_frame));
    }
    if frames.is_empty() {
        bail!("no frames");
    }
    Ok(frames)
}

fn ogg_frames(data: &[u8]) -> anyhow::Result<Vec<Frame>> {
    let (mut reader, _) = OggReader::new(Cursor::new(data), true)?;
    let mut frames = Vec::new();
    let mut last_granule = 0;
    while let Ok((page, header)) = reader.parse_next_page() {
        // Header pages (OpusHead, OpusTags) have granule position 0.
        if header.granule_position == 0 {
            continue;
        }
        let samples = header.granule_position.saturating_sub(last_granule);
        last_granule = header.granule_position;
        frames.push((page.freeze(), Duration::from_micros(samples * 1_000_000 / OPUS_CLOCK)));
    }
    if frames.is_empty() {
        bail!("no audio pages");
    }
    Ok(frames)
}

/// Writes one remote track to a file: VP8 to IVF, Opus to Ogg.
pub struct Recorder {
    writer: Box<dyn webrtc::media::io::Writer + Send>,
    /// Where.
    pub path: std::path::PathBuf,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").field("path", &self.path).finish()
    }
}

impl Recorder {
    /// Creates `dir/<remote>-<kind>.<ivf|ogg>`.
    pub fn create(dir: &std::path::Path, remote: &str, video: bool) -> anyhow::Result<Self> {
        use webrtc::media::io::ivf_reader::IVFFileHeader;
        use webrtc::media::io::ivf_writer::IVFWriter;
        use webrtc::media::io::ogg_writer::OggWriter;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!(
            "{remote}-{}.{}",
            if video { "video" } else { "audio" },
            if video { "ivf" } else { "ogg" }
        ));
        let file = std::io::BufWriter::new(
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
        );
        let writer: Box<dyn webrtc::media::io::Writer + Send> = if video {
            // Players take the size from the VP8 keyframes; the header's is
            // informative. The frame count is rewritten on close.
            let header = IVFFileHeader {
                signature: *b"DKIF",
                version: 0,
                header_size: 32,
                four_cc: *b"VP80",
                width: 640,
                height: 480,
                timebase_denominator: 30,
                timebase_numerator: 1,
                num_frames: 0,
                unused: 0,
            };
            Box::new(IVFWriter::new(file, &header)?)
        } else {
            Box::new(OggWriter::new(file, 48_000, 2)?)
        };
        Ok(Self { writer, path })
    }

    /// Adds one RTP packet.
    pub fn write(&mut self, packet: &webrtc::rtp::packet::Packet) -> anyhow::Result<()> {
        self.writer.write_rtp(packet).context("writing the recording")
    }

    /// Finishes the file (headers, last page).
    pub fn close(mut self) -> anyhow::Result<std::path::PathBuf> {
        self.writer.close().context("closing the recording")?;
        Ok(self.path)
    }
}

/// Counters for one remote track, updated as RTP arrives.
#[derive(Debug)]
pub struct TrackCounters {
    /// `audio` or `video`.
    pub kind: &'static str,
    /// Whose media it is when it arrives through an SFU (the track's stream
    /// id); `None`: the link's remote itself.
    pub origin: Option<switchboard_protocol::PeerId>,
    /// RTP packets received.
    pub packets: AtomicU64,
    /// RTP payload bytes received.
    pub bytes: AtomicU64,
    /// Packets missing from the sequence so far.
    pub lost: AtomicU64,
    /// RFC 3550 interarrival jitter, microseconds.
    pub jitter_us: AtomicU64,
    /// VP8 keyframes received (0 for audio).
    pub keyframes: AtomicU64,
    /// One-way latency of probe packets, microseconds (empty for real media).
    /// A std mutex: locked per packet for a few nanoseconds, never across
    /// an await.
    pub latency: std::sync::Mutex<hdrhistogram::Histogram<u64>>,
}

impl TrackCounters {
    /// Zeroed counters.
    pub fn new(kind: &'static str, origin: Option<switchboard_protocol::PeerId>) -> Self {
        Self {
            kind,
            origin,
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            jitter_us: AtomicU64::new(0),
            keyframes: AtomicU64::new(0),
            latency: std::sync::Mutex::new(latency_histogram()),
        }
    }

    /// Records a probe packet's latency, if `payload` is a probe.
    pub fn on_probe(&self, payload: &[u8]) {
        if let Some(sent) = crate::probe::stamp(payload) {
            let latency = crate::probe::now_us().saturating_sub(sent);
            if let Ok(mut h) = self.latency.lock() {
                h.saturating_record(latency);
            }
        }
    }

    /// A snapshot: (packets, bytes, lost, jitter in microseconds).
    pub fn snapshot(&self) -> (u64, u64, u64, u64) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        (load(&self.packets), load(&self.bytes), load(&self.lost), load(&self.jitter_us))
    }
}

/// An empty latency histogram: 1 us to 60 s, 3 significant digits.
pub fn latency_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| unreachable!("valid bounds"))
}

/// RFC 3550 interarrival jitter: the smoothed variation of (arrival time -
/// RTP timestamp), in seconds.
#[derive(Debug)]
pub struct Jitter {
    clock_rate: f64,
    start: std::time::Instant,
    last_transit: Option<f64>,
    jitter: f64,
}

impl Jitter {
    /// For a stream with this RTP clock rate.
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate: f64::from(clock_rate.max(1)),
            start: std::time::Instant::now(),
            last_transit: None,
            jitter: 0.0,
        }
    }

    /// Accounts for a packet with RTP timestamp `ts` arriving at `arrival`;
    /// returns the jitter so far.
    pub fn on_packet(&mut self, ts: u32, arrival: std::time::Instant) -> Duration {
        let arrival = arrival.saturating_duration_since(self.start).as_secs_f64();
        let transit = arrival - f64::from(ts) / self.clock_rate;
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs();
            // A jump of more than a minute is a timestamp wrap or a new
            // stream, not jitter.
            if d < 60.0 {
                self.jitter += (d - self.jitter) / 16.0;
            }
        }
        self.last_transit = Some(transit);
        Duration::from_secs_f64(self.jitter)
    }
}

/// Tracks RTP sequence numbers (16 bits, wrapping) to count losses: the
/// packets expected between the first and the highest sequence number seen,
/// minus those received (RFC 3550's cumulative loss).
#[derive(Debug, Default)]
pub struct SeqTracker {
    first: u64,
    highest: Option<u64>,
    received: u64,
}

impl SeqTracker {
    /// Accounts for one packet; returns the total lost so far.
    pub fn on_packet(&mut self, seq: u16) -> u64 {
        let ext = match self.highest {
            // Start one cycle up so that a packet from just before the first
            // one (reordering) is still representable.
            None => {
                self.first = u64::from(seq) + (1 << 16);
                self.first
            }
            Some(h) => {
                let base = h & !0xFFFF;
                [base.saturating_sub(1 << 16), base, base + (1 << 16)]
                    .map(|c| c + u64::from(seq))
                    .into_iter()
                    .min_by_key(|c| c.abs_diff(h))
                    .unwrap_or(h)
            }
        };
        self.first = self.first.min(ext);
        let highest = self.highest.map_or(ext, |h| h.max(ext));
        self.highest = Some(highest);
        self.received += 1;
        (highest - self.first + 1).saturating_sub(self.received)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyframe_request_jumps_to_the_clips_next_keyframe() {
        let frame = |key: bool| (Bytes::from_static(if key { &[0x50] } else { &[0x51] }), Duration::from_millis(33));
        let frames: Vec<Frame> = (0..60).map(|i| frame(i % 30 == 0)).collect();
        let wanted = Arc::new(AtomicBool::new(false));
        let mut clip = Clip::new(frames, Some(wanted.clone()));
        for _ in 0..5 {
            clip.next_frame();
        }
        wanted.store(true, Ordering::Relaxed);
        assert!(is_frame_keyframe(&clip.next_frame().0), "the next frame sent is a keyframe");
        assert_eq!(clip.at, 31, "frame 30 went out");
        assert!(!is_frame_keyframe(&clip.next_frame().0), "then the clip plays on");
        clip.at = 45;
        wanted.store(true, Ordering::Relaxed);
        assert!(is_frame_keyframe(&clip.next_frame().0));
        assert_eq!(clip.at, 1, "past the last keyframe it wraps to the first");
        let mut audio = Clip::new(vec![frame(false); 3], None);
        assert!(!is_frame_keyframe(&audio.next_frame().0), "audio ignores requests");
    }

    fn run(seqs: &[u16]) -> u64 {
        let mut t = SeqTracker::default();
        seqs.iter().map(|s| t.on_packet(*s)).last().unwrap_or(0)
    }

    #[test]
    fn counts_gaps_across_the_wrap() {
        assert_eq!(run(&[1, 2, 3, 4]), 0);
        assert_eq!(run(&[1, 2, 4, 7]), 3);
        assert_eq!(run(&[65534, 65535, 0, 1]), 0);
        assert_eq!(run(&[65533, 0, 2]), 3);
        assert_eq!(run(&[5, 4, 6]), 0, "reordering is not loss");
        assert_eq!(run(&[5, 5, 6]), 0, "duplicates never make loss negative");
    }

    #[test]
    fn jitter_is_zero_for_a_steady_stream_and_grows_with_variation() {
        let mut j = Jitter::new(90_000);
        let t0 = j.start;
        for i in 0..50u32 {
            let d = j.on_packet(i * 3000, t0 + Duration::from_nanos(u64::from(i) * 1_000_000_000 / 30));
            assert!(d < Duration::from_micros(100), "{d:?}");
        }
        let mut j = Jitter::new(90_000);
        let mut last = Duration::ZERO;
        for i in 0..50u32 {
            let wobble = if i % 2 == 0 { 0 } else { 10 };
            last = j.on_packet(
                i * 3000,
                t0 + Duration::from_nanos(u64::from(i) * 1_000_000_000 / 30) + Duration::from_millis(wobble),
            );
        }
        assert!(last > Duration::from_millis(5), "{last:?}");
    }

    #[test]
    fn rtt_from_receiver_reports() {
        let sent = std::time::SystemTime::now();
        let lsr = ntp_middle_32(sent);
        // Held 50 ms by the remote, back 80 ms after sending: 30 ms RTT.
        let now = ntp_middle_32(sent + Duration::from_millis(80));
        let dlsr = (50 << 16) / 1000;
        let rtt = rtt_from_report(now, lsr, dlsr).expect("rtt");
        assert!(rtt.abs_diff(Duration::from_millis(30)) < Duration::from_millis(1), "{rtt:?}");
        assert_eq!(rtt_from_report(now, 0, dlsr), None, "no sender report yet");
        assert_eq!(rtt_from_report(lsr, now, 0), None, "negative RTT");
    }

    #[test]
    fn default_clips_parse() {
        let video = ivf_frames(DEFAULT_VIDEO).expect("ivf");
        assert_eq!(video.len(), 150, "5 s at 30 fps");
        assert_eq!(video[0].1, Duration::from_nanos(33_333_333));
        let audio = ogg_frames(DEFAULT_AUDIO).expect("ogg");
        assert!(audio.len() >= 249, "5 s of 20 ms packets: {}", audio.len());
        // Every page but the first and the (trimmed) last is one 20 ms packet.
        assert!(audio[1..audio.len() - 1].iter().all(|(_, d)| *d == Duration::from_millis(20)));
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        assert!(ivf_frames(b"not an ivf").is_err());
        assert!(ogg_frames(DEFAULT_VIDEO).is_err());
    }
}
