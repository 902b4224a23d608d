//! The built-in SFU's life: it gets into its room while admission is
//! exhausted (a reconnect storm must not leave SFU rooms without their SFU),
//! and a blip on its signaling socket is resumed without tearing down the
//! room's media.

use std::time::{Duration, Instant};
use switchboard_core::Limits;
use switchboard_e2e::{rust_peer, server_with, settings, wait_for_event, wait_for_rust_media};
use switchboard_peer::{MediaSource, PeerEvent};
use switchboard_protocol::{Role, RoomMode};

#[tokio::test]
async fn an_sfu_room_gets_its_sfu_while_admission_is_exhausted() {
    // One new connection per second for everybody: the participant takes
    // the only token, as a reconnect storm would take them all.
    let limits = Limits { admissions_per_second: 1, admission_burst: 1, ..Limits::default() };
    let sfu = switchboard_server::config::Settings {
        room_mode: RoomMode::Sfu,
        sfu_loopback_only: true,
        limits,
        ..settings()
    };
    let server = server_with(sfu).await;
    let start = Instant::now();
    let mut ada = rust_peer(&server, "storm", "ada", MediaSource::None).await;
    wait_for_event(&mut ada, "the SFU joining", |e| matches!(e, PeerEvent::PeerJoined(p) if p.role == Role::Sfu)).await;
    let waited = start.elapsed();
    println!("the SFU joined {waited:?} after the participant");
    // Not let in by a refilled token, nor by the hub asking again after
    // its launch timeout: the server's own SFU is not admitted like a
    // client.
    assert!(waited < Duration::from_secs(4), "the SFU took {waited:?}");
}

#[tokio::test]
async fn the_sfu_resumes_after_its_signaling_socket_drops_and_media_keeps_flowing() {
    use switchboard_peer::{RtcOptions, TrackStats};
    const SECRET: &str = "sfu-blip-auth-secret-0123456789abcdef";
    let server = server_with(switchboard_server::config::Settings {
        auth_secret: Some(SECRET.into()),
        builtin_sfu: false,
        room_mode: RoomMode::Sfu,
        ..settings()
    })
    .await;
    let token = |sub: &str, role: Role| switchboard_e2e::room_token(SECRET, "blip", sub, role);
    let mut ada = switchboard_e2e::token_peer(&server, "blip", "ada", SECRET).await;
    // The SFU reaches the server through a proxy that can cut its socket.
    let proxy = switchboard_e2e::tcp_proxy::Proxy::start(server.local_addr()).await;
    let options = switchboard_sfu::SfuOptions {
        url: format!("ws://{}/v1/ws", proxy.addr),
        room: "blip".into(),
        token: token("sfu", Role::Sfu),
        rtc: RtcOptions { loopback_only: true, relay_only: false },
        internal_key: None,
    };
    let sfu = tokio::spawn(switchboard_sfu::run_room(options));
    let joined = wait_for_event(&mut ada, "the SFU", |e| matches!(e, PeerEvent::PeerJoined(p) if p.role == Role::Sfu));
    let PeerEvent::PeerJoined(sfu_info) = joined.await else { unreachable!("matched above") };
    let mut bob = switchboard_e2e::token_peer(&server, "blip", "bob", SECRET).await;
    let ada_id = ada.id().clone();
    let video_from_ada =
        |s: &[TrackStats]| s.iter().filter(|t| t.remote == ada_id && t.kind == "video").map(|t| t.packets).sum::<u64>();
    let before = wait_for_rust_media(&mut bob, "Ada's video through the SFU", |s| video_from_ada(s) > 30).await;

    // The SFU's signaling socket drops.
    proxy.cut_all();
    wait_for_event(
        &mut ada,
        "the SFU reconnecting",
        |e| matches!(e, PeerEvent::PeerReconnecting { remote, reconnecting: true } if *remote == sfu_info.id),
    )
    .await;
    wait_for_event(
        &mut ada,
        "the SFU back",
        |e| matches!(e, PeerEvent::PeerReconnecting { remote, reconnecting: false } if *remote == sfu_info.id),
    )
    .await;
    // Media went on through the SFU meanwhile and after, on the same links.
    let base = video_from_ada(&before);
    wait_for_rust_media(&mut bob, "more of Ada's video", |s| video_from_ada(s) > base + 60).await;
    let mut seen = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(200), ada.events.recv()).await {
        seen.push(event);
    }
    assert!(!seen.iter().any(|e| matches!(e, PeerEvent::PeerLeft { .. } | PeerEvent::Rejoined { .. })), "{seen:#?}");
    assert!(!sfu.is_finished(), "the SFU's room task is still serving");
    sfu.abort();
}
