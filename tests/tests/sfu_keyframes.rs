//! A late subscriber in an SFU room starts from a keyframe promptly, even
//! when the publisher (like most real encoders) sends keyframes only when
//! asked: the SFU asks once the subscriber's track is bound and again until
//! one went out, and the headless peer answers a keyframe request by
//! jumping to its clip's next keyframe.

use std::time::{Duration, Instant};
use switchboard_e2e::{artifacts_dir, rust_peer, server_with, settings, wait_for_rust_media};
use switchboard_peer::{MediaSource, TrackStats};
use switchboard_protocol::RoomMode;

/// An 8 s VP8 clip whose only keyframe is its first frame: without
/// keyframe requests a subscriber waits for the loop, up to 8 s.
fn clip_with_one_keyframe() -> Vec<u8> {
    let path = artifacts_dir().join("one-keyframe.ivf");
    let out = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=320x180:rate=30", "-t", "8"])
        .args(["-c:v", "libvpx", "-g", "1000", "-keyint_min", "1000", "-auto-alt-ref", "0", "-b:v", "200k", "-y"])
        .arg(&path)
        .output()
        .expect("ffmpeg runs (scripts/test installs it)");
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::read(&path).expect("the clip")
}

fn video(stats: &[TrackStats]) -> Option<&TrackStats> {
    stats.iter().find(|t| t.kind == "video")
}

#[tokio::test]
async fn a_late_subscriber_gets_a_keyframe_from_a_publisher_that_sends_them_only_when_asked() {
    let sfu = switchboard_server::config::Settings { room_mode: RoomMode::Sfu, sfu_loopback_only: true, ..settings() };
    let server = server_with(sfu).await;
    let clip = MediaSource::Files { video: Some(clip_with_one_keyframe()), audio: None };
    let _publisher = rust_peer(&server, "keys", "publisher", clip).await;
    // Let the clip's own keyframe go by: the subscriber arrives mid-clip.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut subscriber = rust_peer(&server, "keys", "subscriber", MediaSource::None).await;
    wait_for_rust_media(&mut subscriber, "the first video packets", |s| video(s).is_some_and(|v| v.packets > 0)).await;
    let first_packet = Instant::now();
    let stats = wait_for_rust_media(&mut subscriber, "a keyframe", |s| video(s).is_some_and(|v| v.keyframes > 0)).await;
    let waited = first_packet.elapsed();
    println!("keyframe {waited:?} after the first video packet: {:?}", video(&stats));
    // The clip's next own keyframe is over 5 s away; a request answered
    // comes within the SFU's retry interval and a round trip.
    assert!(waited < Duration::from_secs(3), "waited {waited:?} for a keyframe");
}
