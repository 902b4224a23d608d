//! SFU rooms with the built-in sfu-lite: every participant connects to the
//! SFU alone and receives everyone else's media through it.

use std::collections::HashSet;
use switchboard_e2e::{rust_peer, serial, server_with, settings, wait_for_event, wait_for_rust_media};
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
