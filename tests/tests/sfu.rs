//! SFU rooms with the built-in sfu-lite: every participant connects to the
//! SFU alone and receives everyone else's media through it.

use std::collections::HashSet;
use switchboard_e2e::{
    Browser, Driver, base_url, rust_peer, serial, server_with, settings, wait_for_event, wait_for_rust_media,
};
use switchboard_peer::{MediaSource, Peer, PeerEvent, TrackStats};
use switchboard_protocol::{Role, RoomMode};

fn sfu_settings() -> switchboard_server::config::Settings {
    switchboard_server::config::Settings { room_mode: RoomMode::Sfu, sfu_loopback_only: true, ..settings() }
}

/// Packets of `kind` received from `publisher`.
fn from(tracks: &[TrackStats], publisher: &str, kind: &str) -> u64 {
    tracks.iter().filter(|t| t.remote.as_str() == publisher && t.kind == kind).map(|t| t.packets).sum()
}

async fn receives_everyone(peer: &mut Peer, others: &[String]) {
    wait_for_rust_media(peer, "video and audio from every other participant through the SFU", |t| {
        others.iter().all(|o| from(t, o, "video") > 20 && from(t, o, "audio") > 20)
    })
    .await;
}

#[tokio::test]
async fn three_headless_peers_receive_each_other_through_the_sfu() {
    let _serial = serial().await;
    let server = server_with(sfu_settings()).await;
    let mut ada = rust_peer(&server, "forum", "Ada", MediaSource::Default).await;
    assert_eq!(ada.welcome.mode, RoomMode::Sfu);
    // The SFU arrives after the first participant and offers to it.
    let sfu = match wait_for_event(
        &mut ada,
        "the SFU joining",
        |e| matches!(e, PeerEvent::PeerJoined(p) if p.role == Role::Sfu),
    )
    .await
    {
        PeerEvent::PeerJoined(p) => p.id,
        _ => unreachable!(),
    };
    let mut bob = rust_peer(&server, "forum", "Bob", MediaSource::Default).await;
    let mut cyd = rust_peer(&server, "forum", "Cyd", MediaSource::Default).await;
    let ids: Vec<String> = [&ada, &bob, &cyd].iter().map(|p| p.id().to_string()).collect();
    for (peer, me) in [(&mut ada, 0), (&mut bob, 1), (&mut cyd, 2)] {
        let others: Vec<String> = ids.iter().enumerate().filter(|(i, _)| *i != me).map(|(_, id)| id.clone()).collect();
        receives_everyone(peer, &others).await;
        // One connection each, with the SFU.
        let links: HashSet<String> =
            peer.report().await.expect("report").iter().map(|r| r.remote.to_string()).collect();
        assert_eq!(links, HashSet::from([sfu.to_string()]), "{} connects to the SFU only", ids[me]);
    }

    // A publisher leaving stops its tracks at every subscriber.
    cyd.leave().await;
    for peer in [&mut ada, &mut bob] {
        wait_for_event(peer, "Cyd leaving", |e| matches!(e, PeerEvent::PeerLeft { .. })).await;
    }
    let before = ada.media_stats().await.expect("stats");
    let cyd_before = from(&before, &ids[2], "video");
    wait_for_rust_media(&mut ada, "Bob's media still flowing", |t| {
        from(t, &ids[1], "video") > from(&before, &ids[1], "video") + 20
    })
    .await;
    let after = ada.media_stats().await.expect("stats");
    assert!(from(&after, &ids[2], "video") <= cyd_before + 5, "Cyd's video kept coming after Cyd left");
    ada.leave().await;
    bob.leave().await;
}

/// Waits until `browser` decodes video from `publisher` (through the SFU).
async fn decodes(browser: &Browser, publisher: &str) {
    browser
        .wait_for_stats(publisher, "video decoded through the SFU", |p| {
            p["stats"]["video"]["framesDecoded"].as_f64() > Some(5.0)
                && p["stats"]["audio"]["bytesReceived"].as_f64() > Some(0.0)
        })
        .await;
}

#[tokio::test]
async fn two_browsers_and_two_headless_peers_share_an_sfu_room() {
    let _serial = serial().await;
    // RUST_LOG=switchboard_sfu=debug shows what the SFU does.
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).try_init();
    let server = server_with(sfu_settings()).await;
    let base = base_url(&server);
    let driver = Driver::start().await;
    let ada = driver.browser("Ada").await;
    ada.join(&base, "forum", "Ada").await;
    let mut rusty = rust_peer(&server, "forum", "Rusty", MediaSource::Default).await;
    let bob = driver.browser("Bob").await;
    bob.join(&base, "forum", "Bob").await;
    let (ada_id, bob_id, rusty_id) = (ada.peer_id().await, bob.peer_id().await, rusty.id().to_string());
    let mode = ada.eval("return window.switchboard.mode", vec![]).await;
    assert_eq!(mode, "sfu");

    for (browser, others) in [(&ada, [&bob_id, &rusty_id]), (&bob, [&ada_id, &rusty_id])] {
        for publisher in others {
            decodes(browser, publisher).await;
        }
    }
    let ids = [ada_id.clone(), bob_id.clone()];
    receives_everyone(&mut rusty, &ids).await;

    // A late joiner gets everyone's video: the SFU asks each publisher for a
    // keyframe as soon as the newcomer subscribes.
    let mut late = rust_peer(&server, "forum", "Late", MediaSource::Default).await;
    let late_id = late.id().to_string();
    receives_everyone(&mut late, &[ada_id.clone(), bob_id.clone(), rusty_id.clone()]).await;
    for browser in [&ada, &bob] {
        decodes(browser, &late_id).await;
    }
    screenshot_of_sfu_call(&ada).await;

    // The state channel is relayed by the SFU to the room, marked with its sender.
    ada.wait_until(
        "the channel to the SFU open",
        "window.switchboard.sfuLink()?.channels.get('state')?.readyState === 'open'",
    )
    .await;
    bob.wait_until(
        "the channel to the SFU open",
        "window.switchboard.sfuLink()?.channels.get('state')?.readyState === 'open'",
    )
    .await;
    let sent = ada.eval("return window.switchboard.sendData('state', 'ada is here')", vec![]).await;
    assert_eq!(sent, serde_json::json!(1));
    bob.wait_until(
        "Ada's state line on her tile",
        &format!("document.querySelector(\".tile[data-peer='{ada_id}'] .status\")?.textContent === 'ada is here'"),
    )
    .await;

    late.leave().await;
    rusty.leave().await;
    ada.close().await;
    bob.close().await;
}

async fn screenshot_of_sfu_call(browser: &Browser) {
    let png = browser.client.screenshot().await.expect("screenshot");
    std::fs::write(switchboard_e2e::artifacts_dir().join("sfu-call.png"), png).expect("saving the screenshot");
}

/// The SFU's subscriber count for one track, from the server's metrics.
fn subscribers(room: &str, track: &str) -> f64 {
    let text = switchboard_server::telemetry::render();
    let needle = format!("switchboard_sfu_subscribers{{room=\"{room}\",track=\"{track}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&needle)).and_then(|v| v.trim().parse().ok()).unwrap_or(-1.0)
}

#[tokio::test]
async fn a_paused_track_stops_and_a_vanished_subscriber_is_cleaned_up() {
    let _serial = serial().await;
    let server = server_with(sfu_settings()).await;
    let mut ada = rust_peer(&server, "pause", "Ada", MediaSource::Default).await;
    let mut bob = rust_peer(&server, "pause", "Bob", MediaSource::Default).await;
    let cyd = rust_peer(&server, "pause", "Cyd", MediaSource::None).await;
    let (ada_id, bob_id) = (ada.id().to_string(), bob.id().to_string());
    receives_everyone(&mut ada, std::slice::from_ref(&bob_id)).await;
    receives_everyone(&mut bob, std::slice::from_ref(&ada_id)).await;

    // Ada pauses Bob's video: it stops, his audio goes on; resuming brings it back.
    let bob_peer = bob.id().clone();
    ada.set_paused(&bob_peer, "video", true).await.expect("pause");
    let settle = ada.media_stats().await.expect("stats");
    wait_for_rust_media(&mut ada, "Bob's audio still coming", |t| {
        from(t, &bob_id, "audio") > from(&settle, &bob_id, "audio") + 100
    })
    .await;
    let paused = ada.media_stats().await.expect("stats");
    wait_for_rust_media(&mut ada, "more of Bob's audio", |t| {
        from(t, &bob_id, "audio") > from(&paused, &bob_id, "audio") + 50
    })
    .await;
    let still = ada.media_stats().await.expect("stats");
    assert_eq!(from(&still, &bob_id, "video"), from(&paused, &bob_id, "video"), "video kept coming while paused");
    ada.set_paused(&bob_peer, "video", false).await.expect("resume");
    wait_for_rust_media(&mut ada, "Bob's video again", |t| {
        from(t, &bob_id, "video") > from(&still, &bob_id, "video") + 20
    })
    .await;

    // Cyd vanishes without a word (as a killed process would): the SFU
    // stops forwarding to it once the server sees the socket go.
    let track = format!("video-{ada_id}");
    assert_eq!(subscribers("pause", &track), 2.0, "Bob and Cyd receive Ada's video");
    drop(cyd);
    wait_for_event(&mut ada, "Cyd gone", |e| matches!(e, PeerEvent::PeerLeft { .. })).await;
    let deadline = tokio::time::Instant::now() + switchboard_e2e::WAIT;
    while subscribers("pause", &track) != 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "the SFU still forwards to Cyd");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let metrics = switchboard_server::telemetry::render();
    let forwarded = format!("switchboard_sfu_forwarded_packets_total{{room=\"pause\",track=\"{track}\"}}");
    assert!(metrics.contains(&forwarded), "per-track metrics in /metrics");
    ada.leave().await;
    bob.leave().await;
    // The room's series go with its tracks: /metrics does not grow with
    // every room the SFU ever served.
    let deadline = tokio::time::Instant::now() + switchboard_e2e::WAIT;
    while switchboard_server::telemetry::render().contains("room=\"pause\"") {
        assert!(tokio::time::Instant::now() < deadline, "the ended room's series are still in /metrics");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = server;
}

#[tokio::test]
async fn the_room_keeps_working_while_one_participant_is_frozen() {
    let _serial = serial().await;
    let server = server_with(sfu_settings()).await;
    let mut ada = rust_peer(&server, "stall", "Ada", MediaSource::Default).await;
    let mut bob = rust_peer(&server, "stall", "Bob", MediaSource::Default).await;
    // A third participant in its own process, so that it can be frozen.
    let url = format!("ws://{}/v1/ws", server.local_addr());
    let peer = switchboard_e2e::workspace_binary("switchboard-peer");
    let mut frozen = tokio::process::Command::new(peer)
        .args(["join", &url, "--room", "stall", "--name", "Frozen", "--loopback-only", "--json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("a peer process");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(frozen.stdout.take().expect("stdout")));
    let connected = tokio::time::timeout(switchboard_e2e::WAIT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("\"connection\"") && line.contains("\"connected\"") {
                return true;
            }
        }
        false
    });
    assert!(connected.await.unwrap_or(false), "the peer process connected to the SFU");
    let (ada_id, bob_id) = (ada.id().to_string(), bob.id().to_string());
    receives_everyone(&mut ada, std::slice::from_ref(&bob_id)).await;

    // Freeze it (its network stalls: nothing read, nothing answered).
    let pid = frozen.id().expect("pid").to_string();
    let stop = std::process::Command::new("kill").args(["-STOP", &pid]).status().expect("kill");
    assert!(stop.success());
    for (peer, other) in [(&mut ada, &bob_id), (&mut bob, &ada_id)] {
        let before = peer.media_stats().await.expect("stats");
        wait_for_rust_media(peer, "media between the others while one is frozen", |t| {
            from(t, other, "video") > from(&before, other, "video") + 60
                && from(t, other, "audio") > from(&before, other, "audio") + 100
        })
        .await;
    }
    let _ = std::process::Command::new("kill").args(["-CONT", &pid]).status();
    let _ = frozen.kill().await;
    ada.leave().await;
    bob.leave().await;
}

#[tokio::test]
async fn an_external_sfu_process_serves_a_room() {
    const SECRET: &str = "external-sfu-auth-secret-0123456789";
    let _serial = serial().await;
    let server = server_with(switchboard_server::config::Settings {
        auth_secret: Some(SECRET.into()),
        builtin_sfu: false,
        ..sfu_settings()
    })
    .await;
    let url = format!("ws://{}/v1/ws", server.local_addr());
    let token = |sub: &str, role: Role| switchboard_e2e::room_token(SECRET, "ext", sub, role);
    let mut ada = switchboard_e2e::token_peer(&server, "ext", "ada", SECRET).await;
    let mut sfu = tokio::process::Command::new(switchboard_e2e::workspace_binary("switchboard-sfu"))
        .args([url.as_str(), "--room", "ext", "--loopback-only"])
        .env("SWITCHBOARD_TOKEN", token("sfu", Role::Sfu))
        .kill_on_drop(true)
        .spawn()
        .expect("switchboard-sfu starts");
    wait_for_event(&mut ada, "the external SFU", |e| matches!(e, PeerEvent::PeerJoined(p) if p.role == Role::Sfu))
        .await;
    let mut bob = switchboard_e2e::token_peer(&server, "ext", "bob", SECRET).await;
    let (ada_id, bob_id) = (ada.id().to_string(), bob.id().to_string());
    receives_everyone(&mut ada, std::slice::from_ref(&bob_id)).await;
    receives_everyone(&mut bob, std::slice::from_ref(&ada_id)).await;
    ada.leave().await;
    bob.leave().await;
    // Alone in the room, the SFU leaves and its process ends by itself.
    let status = tokio::time::timeout(switchboard_e2e::WAIT, sfu.wait()).await.expect("the SFU exits").expect("wait");
    assert!(status.success(), "{status}");
}
