//! Fault tests with real parts: the signaling server killed with SIGKILL in
//! the middle of a call, one peer's network cut for 5 s, and coturn killed
//! during a relay-only call. Calls must recover by themselves, with nothing
//! lost and nobody duplicated.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use switchboard_core::TurnConfig;
use switchboard_e2e::lab_watch::{RECOVERS_WITHIN, drop_host_traffic, events, video_flowing, watch};
use switchboard_e2e::netlab::{NatLab, Place};
use switchboard_e2e::{
    Coturn, free_port, require_loopback_namespace, rust_peer_with, serial, server_with, settings, wait_for_event,
    wait_for_rust_media, workspace_binary,
};
use switchboard_peer::{MediaSource, Peer, PeerEvent, PeerOptions, ReconnectPolicy, RtcOptions, SignalState};
use switchboard_protocol::PeerId;

/// The signaling server binary on a loopback port; killed on drop.
struct ServerProcess(Child);

impl ServerProcess {
    fn start(port: u16) -> Self {
        let child = Command::new(workspace_binary("switchboard"))
            .args(["--bind", &format!("127.0.0.1:{port}"), "--stun-port", "0", "--log", "warn"])
            .stdin(Stdio::null())
            .spawn()
            .expect("server starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self(child)
    }

    fn sigkill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.sigkill();
    }
}

async fn loopback_peer(port: u16, room: &str, name: &str) -> Peer {
    Peer::join(PeerOptions {
        url: format!("ws://127.0.0.1:{port}/v1/ws"),
        room: room.into(),
        name: name.into(),
        token: None,
        rtc: RtcOptions { loopback_only: true, relay_only: false },
        media: MediaSource::Default,
        record: None,
        reconnect: Some(ReconnectPolicy::default()),
    })
    .await
    .expect("peer joins")
}

fn video_from(stats: &[switchboard_peer::TrackStats], from: &PeerId) -> u64 {
    stats.iter().filter(|t| t.remote == *from && t.kind == "video").map(|t| t.packets).sum()
}

#[tokio::test]
async fn a_call_survives_a_sigkilled_server_and_everyone_rejoins_when_it_returns() {
    require_loopback_namespace();
    let _serial = serial().await;
    let port = free_port();
    let mut server = ServerProcess::start(port);
    let mut a = loopback_peer(port, "sigkill", "a").await;
    let mut b = loopback_peer(port, "sigkill", "b").await;
    let (ia, ib) = (a.id().clone(), b.id().clone());
    wait_for_rust_media(&mut b, "video from a", |s| video_from(s, &ia) > 30).await;
    wait_for_rust_media(&mut a, "video from b", |s| video_from(s, &ib) > 30).await;

    server.sigkill();
    let reconnecting = |e: &PeerEvent| matches!(e, PeerEvent::Signaling(SignalState::Reconnecting { .. }));
    wait_for_event(&mut a, "a to notice the server is gone", reconnecting).await;
    wait_for_event(&mut b, "b to notice the server is gone", reconnecting).await;
    // Peer-to-peer media never touched the server: it keeps flowing.
    let before = video_from(&b.media_stats().await.expect("stats"), &ia);
    wait_for_rust_media(&mut b, "video during the outage", |s| video_from(s, &ia) > before + 50).await;

    let back = Instant::now();
    let _server = ServerProcess::start(port);
    let rejoined = |e: &PeerEvent| matches!(e, PeerEvent::Rejoined { .. });
    let PeerEvent::Rejoined { id: new_a } = wait_for_event(&mut a, "a to rejoin", rejoined).await else {
        unreachable!()
    };
    let PeerEvent::Rejoined { id: new_b } = wait_for_event(&mut b, "b to rejoin", rejoined).await else {
        unreachable!()
    };
    assert_ne!(new_a, ia, "the new server knows nothing: a fresh join, a new id");
    a.chat("after the restart").await.expect("chat");
    let chat = wait_for_event(&mut b, "chat after the restart", |e| matches!(e, PeerEvent::Chat(_))).await;
    assert!(matches!(&chat, PeerEvent::Chat(c) if c.text == "after the restart" && c.from == new_a), "{chat:?}");
    let chat_after = back.elapsed();
    // The call is re-established on new links, both ways.
    wait_for_rust_media(&mut b, "video from a's new session", |s| video_from(s, &new_a) > 30).await;
    wait_for_rust_media(&mut a, "video from b's new session", |s| video_from(s, &new_b) > 30).await;
    assert!(back.elapsed() < RECOVERS_WITHIN);
    println!("server back: chat after {chat_after:?}, media both ways after {:?}", back.elapsed());
}

#[tokio::test]
async fn a_peer_whose_network_is_cut_for_5_s_resumes_restarts_ice_and_nobody_sees_it_leave() {
    let _serial = serial().await;
    let mut lab = NatLab::new();
    // The server and A on the public network; B in a namespace of its own
    // on the same network, without NAT, where its packets can be dropped.
    let bind = lab.start_signaling(&[]);
    let peer_bin = workspace_binary("switchboard-peer");
    let url = format!("ws://{bind}/v1/ws");
    let join = |name: &str| {
        vec![peer_bin.clone(), "join".into(), url.clone(), "--room".into(), "cut".into(), "--name".into(), name.into()]
            .into_iter()
            .chain(["--json", "--stats", "1"].map(String::from))
            .collect::<Vec<String>>()
    };
    let argv_a = join("A");
    let argv_b = join("B");
    let mut a = lab.spawn(Place::Public, &argv_a.iter().map(String::as_str).collect::<Vec<_>>());
    let mut b = lab.spawn(Place::Host, &argv_b.iter().map(String::as_str).collect::<Vec<_>>());
    watch(&mut a, &mut b, "media both ways", |la, lb| video_flowing(la, 0) && video_flowing(lb, 0));

    // Cut B off: every packet in or out of its only interface is dropped.
    let (mark_a, mark_b) = (a.seen.len(), b.seen.len());
    drop_host_traffic(&lab, true);
    let cut = Instant::now();
    // Meanwhile A chats: B must get every message once the cut ends.
    for i in 0..3 {
        std::thread::sleep(Duration::from_millis(1200));
        a.say(&format!("/room during the cut {i}"));
    }
    std::thread::sleep(Duration::from_secs(5).saturating_sub(cut.elapsed()));
    drop_host_traffic(&lab, false);
    let restored = Instant::now();

    watch(&mut a, &mut b, "B to resume, get the missed chat, and media to recover", |la, lb| {
        let resumed = events(&lb[mark_b..], "signaling_resumed").count() > 0;
        let texts: Vec<String> = events(lb, "chat").filter_map(|v| v["text"].as_str().map(String::from)).collect();
        let all_chat = (0..3).all(|i| texts.contains(&format!("during the cut {i}")));
        let restarted = events(&la[mark_a..], "ice_restarted").count() + events(&lb[mark_b..], "ice_restarted").count();
        resumed && all_chat && restarted > 0 && video_flowing(la, mark_a) && video_flowing(lb, mark_b)
    });
    println!("recovered {:?} after the network came back", restored.elapsed());

    // Every chat message reached B exactly once, in order.
    let seqs: Vec<u64> = events(&b.seen, "chat").filter_map(|v| v["seq"].as_u64()).collect();
    let mut counts = BTreeMap::new();
    for s in &seqs {
        *counts.entry(*s).or_insert(0) += 1;
    }
    assert!(counts.values().all(|n| *n == 1), "duplicated chat: {seqs:?}");
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "chat out of order or with a gap: {seqs:?}");
    // B was reconnecting, never gone: A saw no one leave, and B never
    // joined afresh.
    assert_eq!(events(&a.seen, "peer_left").count(), 0, "A saw B leave:\n{}", a.seen.join("\n"));
    assert_eq!(events(&b.seen, "rejoined").count(), 0, "B joined afresh instead of resuming");
    assert!(
        events(&a.seen, "peer_reconnecting").any(|v| v["reconnecting"] == true),
        "A never saw B reconnecting:\n{}",
        a.seen.join("\n")
    );
}

#[tokio::test]
async fn a_member_cut_off_while_the_room_chats_hard_keeps_its_seat() {
    let _serial = serial().await;
    let mut lab = NatLab::new();
    // As in the 5 s cut test, but for 12 s (past the server's 10 s write
    // timeout) while A sends 4 KiB chats at 40 a second: the server's
    // writes to B block, its queue fills, and none of that may cost B its
    // seat. The replay budget is raised to hold a whole grace of that
    // traffic (40 x 4.2 KB x ~15 s away is about 2.5 MB; decision 0012).
    let bind = lab.start_signaling(&["--replay-buffer-bytes", "4194304"]);
    let peer_bin = workspace_binary("switchboard-peer");
    let url = format!("ws://{bind}/v1/ws");
    let join = |name: &str| {
        [&peer_bin, "join", &url, "--room", "busy", "--name", name, "--json", "--no-media"].map(String::from).to_vec()
    };
    let (argv_a, argv_b) = (join("A"), join("B"));
    let mut a = lab.spawn(Place::Public, &argv_a.iter().map(String::as_str).collect::<Vec<_>>());
    let mut b = lab.spawn(Place::Host, &argv_b.iter().map(String::as_str).collect::<Vec<_>>());
    watch(&mut a, &mut b, "both in the room", |la, lb| {
        events(la, "joined").count() > 0 && events(lb, "joined").count() > 0
    });

    drop_host_traffic(&lab, true);
    let cut = Instant::now();
    const SENT: usize = 480;
    for i in 0..SENT {
        let head = format!("busy {i} ");
        a.say(&format!("/room {head}{}", "x".repeat(4000 - head.len())));
        std::thread::sleep(Duration::from_millis(25));
    }
    std::thread::sleep(Duration::from_secs(12).saturating_sub(cut.elapsed()));
    drop_host_traffic(&lab, false);

    let busy = |lines: &[String]| {
        events(lines, "chat").filter(|v| v["text"].as_str().is_some_and(|t| t.starts_with("busy "))).count()
    };
    watch(&mut a, &mut b, "B to resume and get every chat", |la, lb| {
        let gone = events(la, "peer_left").count() > 0;
        let resumed = events(lb, "signaling_resumed").count() > 0;
        gone || (resumed && busy(lb) >= SENT)
    });
    assert_eq!(
        events(&a.seen, "peer_left").map(|v| v.to_string()).collect::<Vec<_>>(),
        Vec::<String>::new(),
        "A saw B leave"
    );
    assert!(events(&a.seen, "peer_reconnecting").any(|v| v["reconnecting"] == true), "A never saw B reconnecting");
    assert_eq!(events(&b.seen, "rejoined").count(), 0, "B joined afresh instead of resuming");
    // Every message once, in order.
    let seqs: Vec<u64> = events(&b.seen, "chat").filter_map(|v| v["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "chat out of order, doubled or with a gap");
    assert_eq!(busy(&b.seen), SENT);
}

#[tokio::test]
async fn a_relay_only_call_reports_coturn_dying_and_recovers_by_ice_restart_when_it_returns() {
    let _serial = serial().await;
    const SECRET: &str = "fault-test-turn-secret-0123456789";
    let mut coturn = Coturn::start(&[SECRET]).await;
    let turn = TurnConfig::new(vec![SECRET.into()], vec![coturn.url()], 600).expect("valid");
    let server = server_with(switchboard_server::config::Settings { turn: Some(turn), ..settings() }).await;
    let relay = RtcOptions { loopback_only: true, relay_only: true };
    let mut a = rust_peer_with(&server, "coturn", "a", MediaSource::Default, relay.clone()).await;
    let mut b = rust_peer_with(&server, "coturn", "b", MediaSource::Default, relay.clone()).await;
    let (ia, ib) = (a.id().clone(), b.id().clone());
    wait_for_rust_media(&mut b, "video from a through the relay", |s| video_from(s, &ia) > 30).await;
    wait_for_rust_media(&mut a, "video from b through the relay", |s| video_from(s, &ib) > 30).await;

    coturn.kill();
    // Reported: the link goes down and the side that made the first offer
    // (b, the later joiner) starts restarting ICE.
    let (restarter, other) = (&mut b, &mut a);
    let down = wait_for_event(
        restarter,
        "the link to go down",
        |e| matches!(e, PeerEvent::ConnectionState { state, .. } if state == "disconnected" || state == "failed"),
    )
    .await;
    println!("reported: {down:?}");
    wait_for_event(restarter, "an ICE restart", |e| matches!(e, PeerEvent::IceRestarting { .. })).await;

    coturn.restart().await;
    let back = Instant::now();
    wait_for_event(restarter, "ICE to recover", |e| matches!(e, PeerEvent::IceRestarted { .. })).await;
    let other_id = other.id().clone();
    let restarter_id = restarter.id().clone();
    let before = video_from(&other.media_stats().await.expect("stats"), &restarter_id);
    wait_for_rust_media(other, "video through the new relay", |s| video_from(s, &restarter_id) > before + 30).await;
    let before = video_from(&restarter.media_stats().await.expect("stats"), &other_id);
    wait_for_rust_media(restarter, "video back through the new relay", |s| video_from(s, &other_id) > before + 30)
        .await;
    println!("recovered {:?} after coturn returned", back.elapsed());
}
