//! Real RTP between headless peers: VP8 and Opus from the built-in clips,
//! counted on arrival. Loopback-only namespace only.

mod common;

use common::{join_with, server, wait_for, wait_for_media};
use switchboard_peer::{MediaSource, PeerEvent, TrackStats};
use switchboard_protocol::PeerId;

fn packets(stats: &[TrackStats], from: &PeerId, kind: &str) -> u64 {
    stats.iter().filter(|s| &s.remote == from && s.kind == kind).map(|s| s.packets).sum()
}

#[tokio::test]
async fn two_peers_send_each_other_vp8_and_opus() {
    let srv = server().await;
    let mut a = join_with(&srv, "av", "a", MediaSource::Default).await;
    let mut b = join_with(&srv, "av", "b", MediaSource::Default).await;
    for p in [&mut a, &mut b] {
        let mut kinds = Vec::new();
        while kinds.len() < 2 {
            let e = wait_for(p, "audio and video tracks", |e| matches!(e, PeerEvent::TrackStarted { .. })).await;
            if let PeerEvent::TrackStarted { kind, codec, .. } = e {
                assert!(codec == "video/VP8" || codec == "audio/opus", "{codec}");
                kinds.push(kind);
            }
        }
    }
    let (ia, ib) = (a.id().clone(), b.id().clone());
    // 30 fps video and 50 packets/s audio: a second's worth each way.
    let at_b =
        wait_for_media(&mut b, "a's media", |s| packets(s, &ia, "video") > 30 && packets(s, &ia, "audio") > 50).await;
    let at_a =
        wait_for_media(&mut a, "b's media", |s| packets(s, &ib, "video") > 30 && packets(s, &ib, "audio") > 50).await;
    for s in at_a.iter().chain(&at_b) {
        assert!(s.bytes > s.packets, "{s:?}");
        assert_eq!(s.lost, 0, "loopback loses nothing: {s:?}");
    }
}

#[tokio::test]
async fn four_peers_receive_everyones_audio_and_video() {
    let srv = server().await;
    let mut peers = Vec::new();
    for name in ["m1", "m2", "m3", "m4"] {
        peers.push(join_with(&srv, "av-mesh", name, MediaSource::Default).await);
    }
    let ids: Vec<PeerId> = peers.iter().map(|p| p.id().clone()).collect();
    for p in &mut peers {
        let others: Vec<PeerId> = ids.iter().filter(|id| *id != p.id()).cloned().collect();
        wait_for_media(p, "audio and video from all three others", |s| {
            others.iter().all(|o| packets(s, o, "video") > 10 && packets(s, o, "audio") > 10)
        })
        .await;
    }
}
