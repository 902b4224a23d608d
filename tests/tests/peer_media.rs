//! Real RTP between headless peers: VP8 and Opus from the built-in clips,
//! counted on arrival. Loopback-only namespace only.

use switchboard_e2e::{recording_peer, rust_peer, server, wait_for_event, wait_for_rust_media};
use switchboard_peer::{MediaSource, PeerEvent, TrackStats};
use switchboard_protocol::PeerId;

fn packets(stats: &[TrackStats], from: &PeerId, kind: &str) -> u64 {
    stats.iter().filter(|s| &s.remote == from && s.kind == kind).map(|s| s.packets).sum()
}

#[tokio::test]
async fn two_peers_send_each_other_vp8_and_opus() {
    let srv = server().await;
    let mut a = rust_peer(&srv, "av", "a", MediaSource::Default).await;
    let mut b = rust_peer(&srv, "av", "b", MediaSource::Default).await;
    for p in [&mut a, &mut b] {
        let mut kinds = Vec::new();
        while kinds.len() < 2 {
            let e = wait_for_event(p, "audio and video tracks", |e| matches!(e, PeerEvent::TrackStarted { .. })).await;
            if let PeerEvent::TrackStarted { kind, codec, .. } = e {
                assert!(codec == "video/VP8" || codec == "audio/opus", "{codec}");
                kinds.push(kind);
            }
        }
    }
    let (ia, ib) = (a.id().clone(), b.id().clone());
    // 30 fps video and 50 packets/s audio: a second's worth each way.
    let at_b =
        wait_for_rust_media(&mut b, "a's media", |s| packets(s, &ia, "video") > 30 && packets(s, &ia, "audio") > 50)
            .await;
    let at_a =
        wait_for_rust_media(&mut a, "b's media", |s| packets(s, &ib, "video") > 30 && packets(s, &ib, "audio") > 50)
            .await;
    for s in at_a.iter().chain(&at_b) {
        assert!(s.bytes > s.packets, "{s:?}");
        assert_eq!(s.lost, 0, "loopback loses nothing: {s:?}");
    }
    // Receiver reports come about once a second and carry the round trip.
    for p in [&mut a, &mut b] {
        let deadline = tokio::time::Instant::now() + switchboard_e2e::WAIT;
        let rtt = loop {
            let report = p.report().await.expect("report");
            if let Some(rtt) = report.first().and_then(|r| r.rtt) {
                break rtt;
            }
            assert!(tokio::time::Instant::now() < deadline, "no RTT after {:?}: {report:?}", switchboard_e2e::WAIT);
            let _ = tokio::time::timeout(std::time::Duration::from_millis(100), p.events.recv()).await;
        };
        assert!(rtt < std::time::Duration::from_millis(200), "loopback RTT {rtt:?}");
    }
}

#[tokio::test]
async fn four_peers_receive_everyones_audio_and_video() {
    let srv = server().await;
    let mut peers = Vec::new();
    for name in ["m1", "m2", "m3", "m4"] {
        peers.push(rust_peer(&srv, "av-mesh", name, MediaSource::Default).await);
    }
    let ids: Vec<PeerId> = peers.iter().map(|p| p.id().clone()).collect();
    for p in &mut peers {
        let others: Vec<PeerId> = ids.iter().filter(|id| *id != p.id()).cloned().collect();
        wait_for_rust_media(p, "audio and video from all three others", |s| {
            others.iter().all(|o| packets(s, o, "video") > 10 && packets(s, o, "audio") > 10)
        })
        .await;
    }
}

/// `ffprobe`'s count of decodable frames and codec name for a file.
fn probe(path: &std::path::Path) -> (String, u64) {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-show_entries", "stream=codec_name,nb_read_frames", "-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe runs (Debian package ffmpeg; scripts/test installs it)");
    assert!(out.status.success(), "ffprobe failed on {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe JSON");
    let stream = &json["streams"][0];
    let frames = stream["nb_read_frames"].as_str().and_then(|n| n.parse().ok()).unwrap_or(0);
    (stream["codec_name"].as_str().unwrap_or("").to_owned(), frames)
}

#[tokio::test]
async fn a_peer_that_sends_nothing_receives_and_records_a_playable_call() {
    let srv = server().await;
    let dir = std::env::temp_dir().join(format!("switchboard-record-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let a = rust_peer(&srv, "rec", "a", MediaSource::Default).await;
    // The newcomer offers, and sends no media: its offer must still ask for
    // audio and video, or a could never send them.
    let mut b = recording_peer(&srv, "rec", "b", MediaSource::None, Some(dir.clone())).await;
    let ia = a.id().clone();
    wait_for_rust_media(&mut b, "two seconds of a's media", |s| {
        packets(s, &ia, "video") > 60 && packets(s, &ia, "audio") > 100
    })
    .await;
    // a's leaving ends its tracks at b, which finishes both files.
    a.leave().await;
    let mut paths = Vec::new();
    while paths.len() < 2 {
        let e = wait_for_event(&mut b, "both recordings to close", |e| matches!(e, PeerEvent::RecordingClosed { .. }))
            .await;
        if let PeerEvent::RecordingClosed { path, .. } = e {
            paths.push(path);
        }
    }
    paths.sort();
    let (audio, video) = (probe(&paths[0]), probe(&paths[1]));
    assert_eq!(video.0, "vp8", "{}", paths[1].display());
    assert!(video.1 >= 30, "a second of decodable video: {video:?}");
    assert_eq!(audio.0, "opus", "{}", paths[0].display());
    assert!(audio.1 >= 50, "a second of decodable audio: {audio:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_reflecting_peer_sends_back_what_it_receives() {
    let srv = server().await;
    let mut a = rust_peer(&srv, "echo", "a", MediaSource::Default).await;
    let b = rust_peer(&srv, "echo", "b", MediaSource::Reflect).await;
    let ib = b.id().clone();
    let stats = wait_for_rust_media(&mut a, "its own media back from the reflector", |s| {
        packets(s, &ib, "video") > 30 && packets(s, &ib, "audio") > 50
    })
    .await;
    assert!(stats.iter().all(|s| s.lost == 0), "{stats:?}");
}
