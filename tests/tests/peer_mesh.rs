//! Rooms of several headless peers: a full mesh, simultaneous joins, and a
//! call that outlives its signaling server. Loopback-only namespace only.

use std::collections::BTreeSet;
use switchboard_e2e::{quiet_peer, require_loopback_namespace, rust_peer, server, wait_for_event, wait_for_rust_media};
use switchboard_peer::SignalState;
use switchboard_peer::{Channel, MediaSource, Peer, PeerEvent};
use switchboard_protocol::PeerId;

/// Waits until `peer` has its chat channel open to each of `others`.
async fn chat_open_to(peer: &mut Peer, others: &BTreeSet<PeerId>) {
    let mut open = BTreeSet::new();
    while &open != others {
        let e = wait_for_event(peer, "chat channels to every other peer", |e| {
            matches!(e, PeerEvent::ChannelOpen { channel: Channel::Chat, .. })
        })
        .await;
        if let PeerEvent::ChannelOpen { remote, .. } = e {
            open.insert(remote);
        }
    }
}

#[tokio::test]
async fn four_peers_form_a_full_mesh() {
    let srv = server().await;
    let mut peers = Vec::new();
    for name in ["p1", "p2", "p3", "p4"] {
        peers.push(quiet_peer(&srv, "mesh", name).await);
    }
    let ids: BTreeSet<PeerId> = peers.iter().map(|p| p.id().clone()).collect();
    for p in &mut peers {
        let others = ids.iter().filter(|id| *id != p.id()).cloned().collect();
        chat_open_to(p, &others).await;
    }
    for p in &peers {
        assert_eq!(p.send(Channel::Chat, format!("hi from {}", p.id())).await.expect("send"), 3);
    }
    for p in &mut peers {
        let mut from = BTreeSet::new();
        while from.len() < 3 {
            let e = wait_for_event(p, "a message from each other peer", |e| matches!(e, PeerEvent::Data { .. })).await;
            if let PeerEvent::Data { remote, text, .. } = e {
                assert_eq!(text, format!("hi from {remote}"));
                from.insert(remote);
            }
        }
        assert!(!from.contains(p.id()));
    }
}

#[tokio::test]
async fn peers_joining_at_the_same_instant_still_connect() {
    let srv = server().await;
    for round in 0..5 {
        let room = format!("glare{round}");
        let (mut a, mut b) = tokio::join!(quiet_peer(&srv, &room, "a"), quiet_peer(&srv, &room, "b"));
        let (ia, ib) = (a.id().clone(), b.id().clone());
        chat_open_to(&mut a, &BTreeSet::from([ib])).await;
        chat_open_to(&mut b, &BTreeSet::from([ia])).await;
        a.send(Channel::Chat, "ping").await.expect("send");
        wait_for_event(&mut b, "data after a simultaneous join", |e| matches!(e, PeerEvent::Data { .. })).await;
        a.leave().await;
        b.leave().await;
    }
}

#[tokio::test]
async fn a_call_outlives_the_signaling_server() {
    let srv = server().await;
    let mut a = rust_peer(&srv, "outlive", "a", MediaSource::Default).await;
    let mut b = rust_peer(&srv, "outlive", "b", MediaSource::Default).await;
    let (ia, ib) = (a.id().clone(), b.id().clone());
    chat_open_to(&mut a, &BTreeSet::from([ib])).await;
    chat_open_to(&mut b, &BTreeSet::from([ia])).await;
    srv.shutdown().await.expect("shutdown");
    // Both notice and keep trying to reconnect; the links stay up.
    let reconnecting = |e: &PeerEvent| matches!(e, PeerEvent::Signaling(SignalState::Reconnecting { .. }));
    wait_for_event(&mut a, "signaling to be reconnecting", reconnecting).await;
    wait_for_event(&mut b, "signaling to be reconnecting", reconnecting).await;
    for i in 0..3 {
        a.send(Channel::Chat, format!("after the server {i}")).await.expect("send");
        let e = wait_for_event(&mut b, "data with the server gone", |e| matches!(e, PeerEvent::Data { .. })).await;
        assert!(matches!(&e, PeerEvent::Data { text, .. } if *text == format!("after the server {i}")), "{e:?}");
    }
    // Media keeps flowing too: another second of video arrives.
    let ia = a.id().clone();
    let video = |s: &[switchboard_peer::TrackStats]| {
        s.iter().filter(|t| t.remote == ia && t.kind == "video").map(|t| t.packets).sum::<u64>()
    };
    let before = video(&b.media_stats().await.expect("stats"));
    wait_for_rust_media(&mut b, "video with the server gone", |s| video(s) > before + 30).await;
}

#[tokio::test]
async fn a_going_away_notice_sends_the_peers_to_the_address_it_gives() {
    let next = server().await;
    let next_url = format!("ws://{}/v1/ws", next.local_addr());
    require_loopback_namespace();
    let settings = switchboard_server::config::Settings {
        bind: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        stun: None,
        public_url: Some(next_url),
        insecure_open_rooms: true,
        ..switchboard_server::config::Settings::default()
    };
    let first = switchboard_server::start(settings).await.expect("server starts");
    let mut a = quiet_peer(&first, "move", "a").await;
    let mut b = quiet_peer(&first, "move", "b").await;
    let ib = b.id().clone();
    chat_open_to(&mut a, &BTreeSet::from([ib])).await;
    // The first server goes away and names the next one: both peers go
    // there on their own (a fresh join: the next server has no session).
    first.shutdown().await.expect("shutdown");
    let rejoined = |e: &PeerEvent| matches!(e, PeerEvent::Rejoined { .. });
    let PeerEvent::Rejoined { id: new_a } = wait_for_event(&mut a, "a to join the next server", rejoined).await else {
        unreachable!()
    };
    wait_for_event(&mut b, "b to join the next server", rejoined).await;
    // They are in the same room there, and talk through it.
    a.chat("on the next server").await.expect("chat");
    let chat = wait_for_event(&mut b, "chat through the next server", |e| matches!(e, PeerEvent::Chat(_))).await;
    assert!(matches!(&chat, PeerEvent::Chat(c) if c.from == new_a && c.text == "on the next server"), "{chat:?}");
}

#[tokio::test]
async fn a_replaced_peer_stops_instead_of_taking_its_seat_back() {
    require_loopback_namespace();
    let secret = "0123456789abcdef0123456789abcdef";
    let settings = switchboard_server::config::Settings {
        bind: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        stun: None,
        auth_secret: Some(secret.into()),
        ..switchboard_server::config::Settings::default()
    };
    let srv = switchboard_server::start(settings).await.expect("server starts");
    let claims =
        switchboard_core::Claims { room: "seat".into(), sub: "ada".into(), exp: 4_102_444_800, ..Default::default() };
    let options = switchboard_peer::PeerOptions {
        media: MediaSource::None,
        record: None,
        reconnect: Some(switchboard_peer::ReconnectPolicy::default()),
        url: format!("ws://{}/v1/ws", srv.local_addr()),
        room: "seat".into(),
        name: "Ada".into(),
        token: Some(switchboard_core::mint_token(secret.as_bytes(), &claims)),
        rtc: switchboard_peer::RtcOptions { loopback_only: true, relay_only: false },
    };
    let grace = switchboard_core::Claims { sub: "grace".into(), ..claims.clone() };
    let grace = switchboard_peer::PeerOptions {
        name: "Grace".into(),
        token: Some(switchboard_core::mint_token(secret.as_bytes(), &grace)),
        ..options.clone()
    };
    let mut first = Peer::join(options.clone()).await.expect("first joins");
    let second = Peer::join(options).await.expect("second joins");
    // `replaced` is final: the first session closes for good and does not
    // come back to replace the second (which would then do the same).
    let error = wait_for_event(&mut first, "the replaced error", |e| matches!(e, PeerEvent::Error { .. })).await;
    assert!(matches!(&error, PeerEvent::Error { message, .. } if message.contains("replaced")), "{error:?}");
    let closed = wait_for_event(&mut first, "the replaced session to close for good", |e| {
        matches!(e, PeerEvent::SignalingClosed | PeerEvent::Rejoined { .. } | PeerEvent::Signaling(_))
    })
    .await;
    let stopped = match &closed {
        PeerEvent::SignalingClosed => true,
        PeerEvent::Signaling(SignalState::Closed { reason }) => reason.contains("replaced"),
        _ => false,
    };
    assert!(stopped, "it must stop, not reconnect: {closed:?}");
    // The second session still holds the seat and talks through it.
    let mut third = Peer::join(grace).await.expect("grace joins");
    second.chat("still mine").await.expect("chat");
    let chat = wait_for_event(&mut third, "chat from the second session", |e| matches!(e, PeerEvent::Chat(_))).await;
    assert!(matches!(&chat, PeerEvent::Chat(c) if c.from == *second.id()), "{chat:?}");
}
