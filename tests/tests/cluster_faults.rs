//! Faults in a cluster of real processes: three `switchboard` nodes on a
//! real Redis behind a real HAProxy running `deploy/haproxy.cfg`; nodes are
//! SIGKILLed mid-call.

use std::os::unix::process::CommandExt;
use std::time::Duration;
use switchboard_e2e::cluster_kit::{Haproxy, NodeProcess, owner_of, three_nodes};
use switchboard_e2e::{POLL, Redis, WAIT, peer_at, wait_for_event, wait_for_rust_media};
use switchboard_peer::{MediaSource, Peer, PeerEvent, TrackStats};

fn received(tracks: &[TrackStats], kind: &str) -> u64 {
    tracks.iter().filter(|t| t.kind == kind).map(|t| t.packets).sum()
}

/// Waits until `peer`'s video and audio counters grow past where they are.
async fn media_grows(peer: &mut Peer, what: &str) {
    let now = peer.media_stats().await.expect("stats");
    let (video, audio) = (received(&now, "video"), received(&now, "audio"));
    wait_for_rust_media(peer, what, |t| received(t, "video") > video + 20 && received(t, "audio") > audio + 20).await;
}

/// The node a bridged client is on: the one with a connection to another
/// node.
async fn bridging_node(nodes: &[NodeProcess]) -> Option<usize> {
    for (i, node) in nodes.iter().enumerate() {
        if node.try_view().await.is_some_and(|v| v["bridged"]["to_other_nodes"] == 1) {
            return Some(i);
        }
    }
    None
}

#[tokio::test]
async fn a_clients_node_killed_mid_call_its_client_resumes_through_the_balancer_and_nobody_sees_a_leave() {
    let redis = Redis::start().await;
    let mut nodes = three_nodes(&redis, &[]).await;
    let lb = Haproxy::start(&[&nodes[0], &nodes[1], &nodes[2]]).await;
    // Ada is on node-1, where the room lives.
    let mut ada = peer_at(&nodes[0].url(), "call", "Ada", MediaSource::Default).await;
    // Bob comes through the balancer; until he lands on another node than
    // the room's (round robin moves on at each connection), he tries again.
    let mut bob = None;
    for _ in 0..3 {
        let peer = peer_at(&lb.url(), "call", "Bob", MediaSource::Default).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        let mut on = None;
        while on.is_none() && tokio::time::Instant::now() < deadline {
            on = bridging_node(&nodes).await;
            tokio::time::sleep(POLL).await;
        }
        if let Some(on) = on {
            bob = Some((peer, on));
            break;
        }
        peer.leave().await;
    }
    let (mut bob, bob_node) = bob.expect("Bob lands on a node other than the room's");
    let bob_id = bob.id().to_string();
    wait_for_rust_media(&mut ada, "Bob's media", |t| received(t, "video") > 20 && received(t, "audio") > 20).await;
    wait_for_rust_media(&mut bob, "Ada's media", |t| received(t, "video") > 20 && received(t, "audio") > 20).await;

    for i in 1..=5 {
        ada.chat(&format!("before {i}")).await.expect("chat");
    }
    wait_for_event(&mut bob, "the fifth chat", |e| matches!(e, PeerEvent::Chat(m) if m.seq == 5)).await;

    // Bob's node dies without a word.
    nodes[bob_node].kill();
    wait_for_event(
        &mut ada,
        "Bob reconnecting",
        |e| matches!(e, PeerEvent::PeerReconnecting { remote, reconnecting: true } if remote.as_str() == bob_id),
    )
    .await;
    for i in 1..=5 {
        ada.chat(&format!("during {i}")).await.expect("chat");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Bob comes back through the balancer on a live node, as himself.
    let mut chats = Vec::new();
    let resumed = wait_for_event(&mut bob, "Bob resumed", |e| match e {
        PeerEvent::Chat(m) => {
            chats.push((m.seq, m.text.clone()));
            false
        }
        other => matches!(other, PeerEvent::SignalingResumed | PeerEvent::Rejoined { .. }),
    })
    .await;
    assert!(matches!(resumed, PeerEvent::SignalingResumed), "the same session, not a new one: {resumed:?}");
    assert_eq!(bob.id().as_str(), bob_id);
    wait_for_event(
        &mut ada,
        "Bob back",
        |e| matches!(e, PeerEvent::PeerReconnecting { remote, reconnecting: false } if remote.as_str() == bob_id),
    )
    .await;
    while chats.len() < 5 {
        match wait_for_event(&mut bob, "the chats sent while away", |e| matches!(e, PeerEvent::Chat(_))).await {
            PeerEvent::Chat(m) => chats.push((m.seq, m.text.clone())),
            _ => unreachable!(),
        }
    }
    let want: Vec<(u64, String)> = (1..=5).map(|i| (5 + i, format!("during {i}"))).collect();
    assert_eq!(chats, want, "every chat sent while Bob's node was dead, once and in order");
    // The call never stopped.
    media_grows(&mut bob, "Ada's media after the node died").await;
    media_grows(&mut ada, "Bob's media after the node died").await;
    let left = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            if let Some(PeerEvent::PeerLeft { .. }) = ada.events.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(left.is_err(), "Ada never sees Bob leave");
    bob.leave().await;
    ada.leave().await;
}

#[tokio::test]
async fn the_rooms_owner_killed_mid_call_the_room_comes_back_elsewhere_with_every_acknowledged_chat() {
    use switchboard_e2e::ws::WsClient;
    let redis = Redis::start().await;
    let mut nodes = three_nodes(&redis, &[]).await;
    let lb = Haproxy::start(&[&nodes[0], &nodes[1], &nodes[2]]).await;
    let mut ada = peer_at(&lb.url(), "durable", "Ada", MediaSource::Default).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let owner = loop {
        if let Some(owner) = owner_of(&nodes, "durable").await {
            break owner;
        }
        assert!(tokio::time::Instant::now() < deadline, "the room is placed somewhere");
        tokio::time::sleep(POLL).await;
    };
    let mut bob = peer_at(&lb.url(), "durable", "Bob", MediaSource::Default).await;
    wait_for_rust_media(&mut ada, "Bob's media", |t| received(t, "video") > 20 && received(t, "audio") > 20).await;
    wait_for_rust_media(&mut bob, "Ada's media", |t| received(t, "video") > 20 && received(t, "audio") > 20).await;
    // Acknowledged chat: each echoed to its sender (stored in Redis first).
    let mut acknowledged = Vec::new();
    for i in 1..=5 {
        let text = format!("kept {i}");
        ada.chat(&text).await.expect("chat");
        let echo = wait_for_event(&mut ada, "the echo", |e| matches!(e, PeerEvent::Chat(m) if m.text == text)).await;
        let PeerEvent::Chat(m) = echo else { unreachable!() };
        acknowledged.push((m.seq, m.text));
    }

    // The room's node dies.
    let killed = tokio::time::Instant::now();
    nodes[owner].kill();
    // Both come back on their own, in a new session (the old one died with
    // the node), in the room wherever it is placed now.
    for (peer, name) in [(&mut ada, "Ada"), (&mut bob, "Bob")] {
        wait_for_event(peer, &format!("{name} back in the room"), |e| matches!(e, PeerEvent::Rejoined { .. })).await;
    }
    println!("room back {:?} after its node was killed", killed.elapsed());
    let new_owner = owner_of(&nodes, "durable").await.expect("the room lives somewhere again");
    assert_ne!(new_owner, owner);

    // Its history: every acknowledged message, once, with its seq; and seq
    // goes on.
    let mut check = WsClient::connect(lb.addr).await;
    let welcome = check.join("durable", "Check").await;
    let history: Vec<(u64, String)> = welcome["chat"]
        .as_array()
        .expect("chat")
        .iter()
        .map(|m| (m["seq"].as_u64().expect("seq"), m["text"].as_str().expect("text").to_owned()))
        .collect();
    assert_eq!(history, acknowledged, "the room's chat after its owner died");
    assert_eq!(welcome["chat_seq"], 5);
    ada.chat("after").await.expect("chat");
    let next = check.recv("chat").await;
    assert_eq!((next["seq"].as_u64(), next["text"].as_str()), (Some(6), Some("after")));
    // The call goes on.
    media_grows(&mut bob, "Ada's media after the failover").await;
    media_grows(&mut ada, "Bob's media after the failover").await;
    bob.leave().await;
    ada.leave().await;
}

/// The README's three-node example, run as written: its commands (from its
/// `sh` block, with the ports moved to free ones and `deploy/haproxy.cfg`
/// to a copy with the same ports moved), then a call through the balancer.
#[tokio::test]
async fn the_readmes_three_node_example_runs_as_written() {
    use switchboard_e2e::free_port;
    use switchboard_e2e::ws::WsClient;
    switchboard_e2e::require_loopback_namespace();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(repo.join("README.md")).expect("README");
    let start = readme.find("haproxy -f deploy/haproxy.cfg").expect("the README's cluster example");
    let block_start = readme[..start].rfind("```sh\n").expect("its sh block") + "```sh\n".len();
    let block_end = block_start + readme[block_start..].find("```").expect("block end");
    let block = &readme[block_start..block_end];
    let ports: Vec<(String, String)> =
        ["6379", "8080", "8081", "8082", "8083"].iter().map(|p| ((*p).to_owned(), free_port().to_string())).collect();
    let moved = |text: &str| {
        ports.iter().fold(text.to_owned(), |t, (from, to)| {
            t.replace(&format!(":{from}"), &format!(":{to}"))
                .replace(&format!("--port {from}"), &format!("--port {to}"))
        })
    };
    let dir = std::env::temp_dir().join(format!("switchboard-readme-cluster-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("deploy")).expect("dir");
    let config = std::fs::read_to_string(repo.join("deploy/haproxy.cfg")).expect("haproxy.cfg");
    std::fs::write(dir.join("deploy/haproxy.cfg"), moved(&config)).expect("config copy");
    let bin_dir =
        std::path::Path::new(&switchboard_e2e::workspace_binary("switchboard")).parent().expect("dir").to_owned();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut children = Vec::new();
    for line in block.lines() {
        let command = line.split('#').next().unwrap_or("").trim().trim_end_matches('&').trim();
        if command.is_empty() {
            continue;
        }
        let child = std::process::Command::new("sh")
            .args(["-c", &format!("exec {}", moved(command))])
            .current_dir(&dir)
            .env("PATH", &path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the command starts");
        // In the README's order; a node started before Redis listens
        // reaches it on a later heartbeat (the readiness wait below).
        children.push(child);
    }
    let balancer: std::net::SocketAddr = format!("127.0.0.1:{}", ports[1].1).parse().expect("addr");
    // Every node ready and in the cluster, then the balancer's checks.
    let deadline = tokio::time::Instant::now() + WAIT;
    for (_, port) in &ports[2..] {
        let node: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        loop {
            let ready = tokio::net::TcpStream::connect(node).await.is_ok()
                && switchboard_e2e::http_get(node, "/readyz").await == (200, "ready\nredis: up\n".into());
            if ready {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "node on {port} from the README is not ready");
            tokio::time::sleep(POLL).await;
        }
    }
    while tokio::net::TcpStream::connect(balancer).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the README's haproxy does not listen");
        tokio::time::sleep(POLL).await;
    }
    // The balancer forwards to every node (round robin over three):
    // three answered requests through it.
    let mut answered = 0;
    while answered < 3 {
        let through = tokio::net::TcpStream::connect(balancer).await.is_ok()
            && switchboard_e2e::http_get(balancer, "/readyz").await.0 == 200;
        answered = if through { answered + 1 } else { 0 };
        assert!(tokio::time::Instant::now() < deadline, "the README's haproxy does not reach the nodes");
        if !through {
            tokio::time::sleep(POLL).await;
        }
    }
    // Two clients through the balancer meet in one room and chat.
    let mut a = WsClient::connect(balancer).await;
    a.join("readme", "A").await;
    let mut b = WsClient::connect(balancer).await;
    let welcome = b.join("readme", "B").await;
    assert_eq!(welcome["peers"].as_array().map_or(0, Vec::len), 1, "{welcome}");
    a.send(r#"{"type":"chat","client_id":"r1","text":"from the README"}"#).await;
    assert_eq!(b.recv("chat").await["text"], "from the README");
    drop((a, b));

    // The README's rolling restart, as written (ports moved), during a
    // call through the balancer: nobody notices.
    let url = format!("ws://{balancer}/v1/ws");
    let mut ada = peer_at(&url, "rolling", "Ada", MediaSource::None).await;
    let mut bob = peer_at(&url, "rolling", "Bob", MediaSource::None).await;
    let ids = (ada.id().to_string(), bob.id().to_string());
    wait_for_event(&mut ada, "Bob", |e| matches!(e, PeerEvent::PeerJoined(p) if p.id.as_str() == ids.1)).await;
    let start = readme.find("for node in node-1:8081").expect("the README's rolling restart");
    let block_start = readme[..start].rfind("```sh\n").expect("its sh block") + "```sh\n".len();
    let block_end = block_start + readme[block_start..].find("```").expect("block end");
    let recipe = moved(&readme[block_start..block_end]);
    let mut rolling = std::process::Command::new("sh")
        .args(["-c", &recipe])
        .current_dir(&dir)
        .env("PATH", &path)
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("recipe.log")).expect("log file"))
        .spawn()
        .expect("the recipe starts");
    let group = rolling.id();
    let mut sent = 0;
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    let finished = loop {
        if let Some(status) = rolling.try_wait().expect("try_wait") {
            break status;
        }
        assert!(tokio::time::Instant::now() < deadline, "the README's rolling restart did not finish");
        sent += 1;
        ada.chat(format!("during {sent}")).await.expect("chat");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let log = std::fs::read_to_string(dir.join("recipe.log")).unwrap_or_default();
    assert!(finished.success(), "the recipe ran: {finished}\n{recipe}\n{log}");
    ada.chat("after").await.expect("chat");
    let mut seen = Vec::new();
    let last = wait_for_event(&mut bob, "every chat, then the last", |e| match e {
        PeerEvent::Chat(m) if m.text == "after" => true,
        PeerEvent::Chat(m) => {
            seen.push(m.text.clone());
            false
        }
        PeerEvent::PeerLeft { .. } | PeerEvent::Rejoined { .. } => panic!("Bob noticed the restarts: {e:?}"),
        _ => false,
    })
    .await;
    drop(last);
    let want: Vec<String> = (1..=sent).map(|i| format!("during {i}")).collect();
    assert_eq!(seen, want, "every chat sent during the rolling restart, once, in order");
    assert_eq!((ada.id().to_string(), bob.id().to_string()), ids, "the same sessions");
    println!("the README's rolling restart took {sent} chat beats of 200 ms");
    bob.leave().await;
    ada.leave().await;
    // The restarted nodes are the recipe's children, in its process group.
    let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{group}")]).status();
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
