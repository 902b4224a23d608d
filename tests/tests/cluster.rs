//! The cluster on Redis, with a real `redis-server` started by the test:
//! nodes find each other through the registry, and a node that loses Redis
//! says so, keeps serving its rooms, and comes back by itself.

use serde_json::Value;
use switchboard_e2e::{POLL, Redis, WAIT, http_get, server_with, settings};
use switchboard_server::Server;
use switchboard_server::cluster::ClusterSettings;

async fn node(redis: &Redis, id: &str) -> Server {
    let cluster = ClusterSettings::new(redis.url(), id);
    server_with(switchboard_server::config::Settings { cluster: Some(cluster), ..settings() }).await
}

/// Polls `GET /v1/cluster` of `server` until `done` holds; returns it.
async fn cluster_until(server: &Server, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = http_get(server.local_addr(), "/v1/cluster").await;
        assert_eq!(status, 200, "{body}");
        let view: Value = serde_json::from_str(&body).expect("JSON");
        if done(&view) {
            return view;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}: {view:#}");
        tokio::time::sleep(POLL).await;
    }
}

async fn wait_chat(peer: &mut switchboard_peer::Peer, seq: u64, text: &str) {
    switchboard_e2e::wait_for_event(
        peer,
        text,
        |e| matches!(e, switchboard_peer::PeerEvent::Chat(m) if m.seq == seq && m.text == text),
    )
    .await;
}

fn ids(view: &Value) -> Vec<&str> {
    view["nodes"].as_array().map(|n| n.iter().filter_map(|n| n["id"].as_str()).collect()).unwrap_or_default()
}

#[tokio::test]
async fn nodes_find_each_other_and_a_node_that_loses_redis_keeps_serving_and_comes_back() {
    let mut redis = Redis::start().await;
    let a = node(&redis, "node-a").await;
    let b = node(&redis, "node-b").await;
    let view = cluster_until(&a, "both nodes", |v| ids(v) == ["node-a", "node-b"]).await;
    assert_eq!(view["node"], "node-a");
    assert_eq!(view["redis"], "up");
    let b_entry = &view["nodes"][1];
    assert_eq!(b_entry["addr"], b.local_addr().to_string());
    assert!(b_entry["started_unix_ms"].as_u64().is_some() && b_entry["connections"].as_u64().is_some(), "{view:#}");
    assert_eq!(http_get(a.local_addr(), "/readyz").await, (200, "ready\nredis: up\n".into()));

    // A room on node-a, chatting (chat is stored in Redis before its echo).
    let mut ada = switchboard_e2e::quiet_peer(&a, "local", "Ada").await;
    ada.chat("before").await.expect("chat");
    wait_chat(&mut ada, 1, "before").await;

    // Redis dies: the node stays ready (it serves its rooms), says so; the
    // room goes on, but chat cannot be stored: it is held, unechoed (never
    // acknowledged before it is in Redis), until Redis is back.
    redis.kill();
    cluster_until(&a, "Redis reported unreachable", |v| v["redis"] == "unreachable").await;
    assert_eq!(http_get(a.local_addr(), "/readyz").await, (200, "ready\nredis: unreachable\n".into()));
    let (_, metrics) = http_get(a.local_addr(), "/metrics").await;
    assert!(metrics.contains("switchboard_redis_up 0"), "{metrics}");
    assert!(metrics.contains(r#"switchboard_redis_round_trip_seconds_count{op="heartbeat"}"#), "{metrics}");
    ada.chat("during").await.expect("chat");
    let early = tokio::time::timeout(std::time::Duration::from_millis(1500), wait_chat(&mut ada, 2, "during")).await;
    assert!(early.is_err(), "no echo while the message cannot be stored");

    // Redis comes back (empty: no persistence): both nodes register again.
    redis.restart().await;
    cluster_until(&a, "both nodes back", |v| v["redis"] == "up" && ids(v) == ["node-a", "node-b"]).await;
    // The room is leased again and the held message is stored and echoed,
    // with the next seq; the next one follows it.
    wait_chat(&mut ada, 2, "during").await;
    ada.chat("after").await.expect("chat");
    wait_chat(&mut ada, 3, "after").await;
    ada.leave().await;

    // A node that stops leaves the list.
    b.shutdown().await.expect("shutdown");
    cluster_until(&a, "node-b gone", |v| ids(v) == ["node-a"]).await;
}

#[tokio::test]
async fn a_single_node_has_no_cluster_page() {
    let single = server_with(settings()).await;
    assert_eq!(http_get(single.local_addr(), "/v1/cluster").await.0, 404);
    assert_eq!(http_get(single.local_addr(), "/readyz").await, (200, "ready\n".into()));
}

#[tokio::test]
async fn one_node_at_a_time_holds_a_room_and_a_lapsed_holder_cannot_act_for_the_next() {
    use switchboard_server::cluster::lease::{self, LEASE_TTL};
    let redis = Redis::start().await;
    let mut conn = switchboard_server::cluster::connect(&redis.url()).await.expect("Redis");
    let room = switchboard_protocol::RoomName::new("leased").expect("room");
    assert_eq!(lease::owner(&mut conn, &room).await.expect("GET"), None);

    let mut a = lease::acquire(&mut conn, &room, "node-a").await.expect("script").expect("free: a takes it");
    let taken = lease::acquire(&mut conn, &room, "node-b").await.expect("script");
    assert_eq!(taken, Err(Some(a.owner.clone())), "b is told who holds it");
    assert_eq!(lease::owner(&mut conn, &room).await.expect("GET"), Some(a.owner.clone()));
    // Renewal keeps it past its first TTL.
    let deadline = tokio::time::Instant::now() + LEASE_TTL + LEASE_TTL / 2;
    while tokio::time::Instant::now() < deadline {
        assert!(lease::renew(&mut conn, &mut a).await.expect("script"), "a renews its own lease");
        tokio::time::sleep(LEASE_TTL / 3).await;
    }
    assert!(lease::acquire(&mut conn, &room, "node-b").await.expect("script").is_err(), "still a's");

    // a stops renewing (paused, or cut off): after the TTL b takes the room
    // with a greater fence, and a can neither renew nor give it back.
    let deadline = tokio::time::Instant::now() + LEASE_TTL * 2;
    while lease::owner(&mut conn, &room).await.expect("GET").is_some() {
        assert!(tokio::time::Instant::now() < deadline, "a's lease lapses within its TTL");
        tokio::time::sleep(POLL).await;
    }
    let b = lease::acquire(&mut conn, &room, "node-b").await.expect("script").expect("lapsed: b takes it");
    assert!(b.owner.fence > a.owner.fence, "{b:?} after {a:?}");
    assert!(!lease::renew(&mut conn, &mut a).await.expect("script"), "a's renewal must fail");
    assert!(!lease::release(&mut conn, &a).await.expect("script"), "a's release must not free b's lease");
    assert_eq!(lease::owner(&mut conn, &room).await.expect("GET"), Some(b.owner.clone()));
    assert!(lease::release(&mut conn, &b).await.expect("script"));
    assert_eq!(lease::owner(&mut conn, &room).await.expect("GET"), None);
}

/// Two nodes on one Redis that already list each other.
async fn two_nodes(redis: &Redis) -> (Server, Server) {
    let a = node(redis, "node-a").await;
    let b = node(redis, "node-b").await;
    cluster_until(&a, "both nodes", |v| ids(v) == ["node-a", "node-b"]).await;
    cluster_until(&b, "both nodes", |v| ids(v) == ["node-a", "node-b"]).await;
    (a, b)
}

#[tokio::test]
async fn two_headless_peers_on_two_nodes_share_a_room_through_the_bridge() {
    use switchboard_e2e::{rust_peer, wait_for_event, wait_for_rust_media};
    use switchboard_peer::{Channel, MediaSource, PeerEvent};
    let redis = Redis::start().await;
    let (a, b) = two_nodes(&redis).await;
    // Ada's join places the room on node-a (a tie: the node she is on).
    let mut ada = rust_peer(&a, "bridged", "Ada", MediaSource::Default).await;
    let view = cluster_until(&a, "the room held by node-a", |v| v["rooms"] == serde_json::json!(["bridged"])).await;
    assert_eq!(view["bridged"]["from_other_nodes"], 0);
    // Bob is on node-b: his connection is bridged to node-a.
    let mut bob = rust_peer(&b, "bridged", "Bob", MediaSource::Default).await;
    assert_eq!(bob.welcome.peers.len(), 1, "Bob meets Ada: {:?}", bob.welcome.peers);
    cluster_until(&b, "Bob bridged out", |v| v["bridged"]["to_other_nodes"] == 1).await;
    cluster_until(&a, "Bob bridged in", |v| v["bridged"]["from_other_nodes"] == 1).await;
    let bob_id = bob.id().to_string();
    wait_for_event(&mut ada, "Bob joining", |e| matches!(e, PeerEvent::PeerJoined(p) if p.id.as_str() == bob_id)).await;

    // Offers, answers and candidates cross the bridge: media both ways.
    let got = |t: &[switchboard_peer::TrackStats], kind: &str| {
        t.iter().filter(|s| s.kind == kind).map(|s| s.packets).sum::<u64>()
    };
    wait_for_rust_media(&mut ada, "Bob's video and audio", |t| got(t, "video") > 20 && got(t, "audio") > 20).await;
    wait_for_rust_media(&mut bob, "Ada's video and audio", |t| got(t, "video") > 20 && got(t, "audio") > 20).await;
    // Data channels, and the room chat with its seq through the owner.
    wait_for_event(&mut bob, "the chat channel", |e| {
        matches!(e, PeerEvent::ChannelOpen { channel: Channel::Chat, .. })
    })
    .await;
    bob.chat("hello from node-b").await.expect("chat");
    for peer in [&mut ada, &mut bob] {
        wait_for_event(
            peer,
            "Bob's room chat",
            |e| matches!(e, PeerEvent::Chat(m) if m.text == "hello from node-b" && m.seq == 1),
        )
        .await;
    }
    bob.leave().await;
    wait_for_event(&mut ada, "Bob leaving", |e| matches!(e, PeerEvent::PeerLeft { .. })).await;
    cluster_until(&a, "nothing bridged in", |v| v["bridged"]["from_other_nodes"] == 0).await;
    ada.leave().await;
    cluster_until(&a, "the room given back", |v| v["rooms"] == serde_json::json!([])).await;
    let _ = b;
}

#[tokio::test]
async fn two_clients_on_two_nodes_relay_chat_page_history_show_presence_and_resume_through_either_node() {
    use switchboard_e2e::ws::WsClient;
    let redis = Redis::start().await;
    let (a, b) = two_nodes(&redis).await;
    let mut x = WsClient::connect(a.local_addr()).await;
    let wx = x.join("wire", "X").await;
    let mut y = WsClient::connect(b.local_addr()).await;
    let wy = y.join("wire", "Y").await;
    let (xid, yid) = (wx["you"]["id"].as_str().expect("id"), wy["you"]["id"].as_str().expect("id"));
    assert_eq!(wy["peers"][0]["id"], xid, "{wy}");
    x.recv("peer_joined").await;

    // Relays both ways.
    y.send(format!(r#"{{"type":"offer","to":"{xid}","description":{{"type":"offer","sdp":"v=0\r\n"}}}}"#)).await;
    let offer = x.recv("offer").await;
    assert_eq!(offer["from"], yid, "{offer}");
    x.send(format!(r#"{{"type":"answer","to":"{yid}","description":{{"type":"answer","sdp":"v=0\r\n"}}}}"#)).await;
    assert_eq!(y.recv("answer").await["from"], xid);

    // Chat in order with seq, then history paged from across the bridge.
    for i in 1..=12 {
        x.send(format!(r#"{{"type":"chat","client_id":"x{i}","text":"m{i}"}}"#)).await;
    }
    for i in 1..=12 {
        let m = y.recv("chat").await;
        assert_eq!((m["seq"].as_u64(), m["text"].as_str()), (Some(i), Some(format!("m{i}").as_str())));
    }
    y.send(r#"{"type":"chat_history","id":"h","before":6,"limit":3}"#).await;
    let page = y.recv("chat_history").await;
    let seqs: Vec<u64> =
        page["messages"].as_array().expect("messages").iter().filter_map(|m| m["seq"].as_u64()).collect();
    assert_eq!((seqs, page["has_more"].as_bool()), (vec![3, 4, 5], Some(true)), "{page}");

    // Presence from the bridged side.
    y.send(r#"{"type":"typing","active":true}"#).await;
    assert_eq!(x.recv("typing").await["from"], yid);
    y.send(r#"{"type":"read","seq":12}"#).await;
    assert_eq!(x.recv("read").await["seq"], 12);
    y.send(r#"{"type":"media","mic_muted":true,"camera_muted":false}"#).await;
    let updated = x.recv("peer_updated").await;
    assert_eq!(updated["peer"]["media"]["mic_muted"], true, "{updated}");

    // Y's connection drops; X sees it reconnecting, never leaving, and
    // chats meanwhile. Y resumes through node-a (the owner), then drops
    // again and resumes through node-b.
    let mut token = wy["resume_token"].as_str().expect("token").to_owned();
    let mut received = y.events;
    for (round, via) in [&a, &b].into_iter().enumerate() {
        drop(y);
        let away = x.recv("peer_updated").await;
        assert_eq!(away["peer"]["reconnecting"], true, "{away}");
        x.send(format!(r#"{{"type":"chat","client_id":"away{round}","text":"while away {round}"}}"#)).await;
        y = WsClient::connect(via.local_addr()).await;
        y.send(format!(
            r#"{{"type":"join","room":"wire","name":"Y","resume":{{"token":"{token}","received":{received}}}}}"#
        ))
        .await;
        let back = y.recv("welcome").await;
        assert_eq!((back["resumed"].as_bool(), back["you"]["id"].as_str()), (Some(true), Some(yid)), "{back}");
        let missed = y.recv("chat").await;
        assert_eq!(missed["text"], format!("while away {round}"), "the first event replayed is the missed chat");
        let here = x.recv("peer_updated").await;
        assert_ne!(here["peer"]["reconnecting"], true, "{here}");
        token = back["resume_token"].as_str().expect("token").to_owned();
        received += y.events;
        y.events = 0;
        // Speaking on the new connection confirms the new token.
        y.send(r#"{"type":"ping","id":1}"#).await;
        y.recv("pong").await;
    }
    assert!(!x.seen.iter().any(|m| m["type"] == "peer_left"), "X never saw Y leave: {:#?}", x.seen);
}

/// Three in-process nodes on one Redis, with `configure` applied to each.
async fn three_nodes_with(redis: &Redis, configure: impl Fn(&mut switchboard_server::config::Settings)) -> Vec<Server> {
    let mut nodes = Vec::new();
    for id in ["node-a", "node-b", "node-c"] {
        let cluster = ClusterSettings::new(redis.url(), id);
        let mut settings = switchboard_server::config::Settings { cluster: Some(cluster), ..settings() };
        configure(&mut settings);
        nodes.push(server_with(settings).await);
    }
    for node in &nodes {
        cluster_until(node, "all three nodes", |v| ids(v).len() == 3).await;
    }
    nodes
}

#[tokio::test]
async fn an_sfu_room_whose_participants_are_on_three_nodes() {
    use switchboard_e2e::{rust_peer, wait_for_rust_media};
    use switchboard_peer::{MediaSource, PeerEvent};
    use switchboard_protocol::{Role, RoomMode};
    let _serial = switchboard_e2e::serial().await;
    let redis = Redis::start().await;
    let nodes = three_nodes_with(&redis, |s| {
        s.room_mode = RoomMode::Sfu;
        s.sfu_loopback_only = true;
    })
    .await;
    // Ada's node owns the room and runs its SFU; Bob and Cyd are on the
    // other two, bridged (signaling only: media goes to the SFU's ports).
    let mut ada = rust_peer(&nodes[0], "stage", "Ada", MediaSource::Default).await;
    switchboard_e2e::wait_for_event(
        &mut ada,
        "the SFU",
        |e| matches!(e, PeerEvent::PeerJoined(p) if p.role == Role::Sfu),
    )
    .await;
    let mut bob = rust_peer(&nodes[1], "stage", "Bob", MediaSource::Default).await;
    let mut cyd = rust_peer(&nodes[2], "stage", "Cyd", MediaSource::Default).await;
    assert!(bob.welcome.peers.iter().any(|p| p.role == Role::Sfu), "{:?}", bob.welcome.peers);
    let ids: Vec<String> = [&ada, &bob, &cyd].iter().map(|p| p.id().to_string()).collect();
    for (peer, me) in [(&mut ada, 0), (&mut bob, 1), (&mut cyd, 2)] {
        let others: Vec<&String> = ids.iter().enumerate().filter(|(i, _)| *i != me).map(|(_, id)| id).collect();
        wait_for_rust_media(peer, "everyone else's media through the SFU", |t| {
            others.iter().all(|o| {
                let from = |kind: &str| {
                    t.iter()
                        .filter(|s| s.remote.as_str() == o.as_str() && s.kind == kind)
                        .map(|s| s.packets)
                        .sum::<u64>()
                };
                from("video") > 20 && from("audio") > 20
            })
        })
        .await;
    }
    let view = nodes[0].local_addr();
    let (_, body) = http_get(view, "/v1/cluster").await;
    let view: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(view["rooms"], serde_json::json!(["stage"]), "{view:#}");
    assert_eq!(view["bridged"]["from_other_nodes"], 2, "Bob and Cyd, bridged: {view:#}");
    for peer in [cyd, bob, ada] {
        peer.leave().await;
    }
}

#[tokio::test]
async fn a_browser_on_one_node_and_a_headless_peer_on_another_exchange_media_and_chat() {
    use switchboard_e2e::{Driver, base_url, rust_peer, wait_for_event, wait_for_rust_media};
    use switchboard_peer::{MediaSource, PeerEvent};
    let _serial = switchboard_e2e::serial().await;
    let redis = Redis::start().await;
    let (a, b) = two_nodes(&redis).await;
    let driver = Driver::start().await;
    let ada = driver.browser("Ada").await;
    ada.join(&base_url(&a), "mixed", "Ada").await;
    let ada_id = ada.peer_id().await;
    // Rusty joins through node-b: the room lives on node-a, where Ada is.
    let mut rusty = rust_peer(&b, "mixed", "Rusty", MediaSource::Default).await;
    let rusty_id = rusty.id().to_string();
    let counter = |p: &Value, kind: &str, key: &str| p["stats"][kind][key].as_f64().unwrap_or(0.0);
    ada.wait_for_stats(&rusty_id, "Rusty's decoded video and audio", |p| {
        counter(p, "video", "framesDecoded") > 10.0 && counter(p, "audio", "bytesReceived") > 0.0
    })
    .await;
    let got = |t: &[switchboard_peer::TrackStats], kind: &str| {
        t.iter().filter(|s| s.remote.as_str() == ada_id && s.kind == kind).map(|s| s.packets).sum::<u64>()
    };
    wait_for_rust_media(&mut rusty, "the browser's media", |t| got(t, "video") > 20 && got(t, "audio") > 20).await;
    // Room chat from the browser reaches the peer on the other node.
    ada.type_into("#chat-input", "hello across nodes").await;
    ada.click("#chat-form button").await;
    wait_for_event(
        &mut rusty,
        "the browser's chat",
        |e| matches!(e, PeerEvent::Chat(m) if m.text == "hello across nodes" && m.seq == 1),
    )
    .await;
    rusty.leave().await;
    ada.close().await;
}

#[tokio::test]
async fn clients_cannot_reach_redis_keys_or_the_bridge_by_what_they_send() {
    use switchboard_e2e::ws::WsClient;
    let redis = Redis::start().await;
    let (a, b) = two_nodes(&redis).await;
    // Room names are validated before they are part of a key: a name that
    // would reach another key (or a pattern) is refused.
    let mut c = WsClient::connect(a.local_addr()).await;
    for name in ["x:owner", "sb:node:node-b", "room*", "a b", "../x"] {
        c.send(format!(r#"{{"type":"join","room":"{name}","name":"C"}}"#)).await;
        let refused = c.recv("error").await;
        assert_eq!(refused["code"], "invalid_message", "{name}: {refused}");
    }
    // A bridge frame sent by a client is just an unknown message.
    c.send(r#"{"t":"open","from":"node-b","c":1,"s":1,"age_ms":0}"#).await;
    assert_eq!(c.recv("error").await["code"], "invalid_message");
    c.send(r#"{"type":"open","from":"node-b","c":1,"s":1,"age_ms":0}"#).await;
    assert_eq!(c.recv("error").await["code"], "unknown_type");
    // A real room, bridged, with chat: the only keys are the documented ones.
    c.join("a.b-c_d", "C").await;
    let mut d = WsClient::connect(b.local_addr()).await;
    d.join("a.b-c_d", "D").await;
    d.send(r#"{"type":"chat","client_id":"k1","text":"hi"}"#).await;
    c.recv("chat").await;
    let mut conn = switchboard_server::cluster::connect(&redis.url()).await.expect("Redis");
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut conn).await.expect("KEYS");
    keys.sort();
    let expected = [
        "sb:node:node-a",
        "sb:node:node-b",
        "sb:nodes",
        "sb:room:a.b-c_d:chat",
        "sb:room:a.b-c_d:fence",
        "sb:room:a.b-c_d:owner",
    ];
    assert_eq!(keys, expected);
}

#[tokio::test]
async fn redis_killed_and_restarted_during_a_call_across_two_nodes() {
    use switchboard_e2e::{rust_peer, wait_for_rust_media};
    use switchboard_peer::{MediaSource, PeerEvent, TrackStats};
    let _serial = switchboard_e2e::serial().await;
    let mut redis = Redis::start().await;
    let (a, b) = two_nodes(&redis).await;
    let mut ada = rust_peer(&a, "outage", "Ada", MediaSource::Default).await;
    let mut bob = rust_peer(&b, "outage", "Bob", MediaSource::Default).await;
    let got = |t: &[TrackStats], kind: &str| t.iter().filter(|s| s.kind == kind).map(|s| s.packets).sum::<u64>();
    let grows = async |peer: &mut switchboard_peer::Peer, what: &str| {
        let now = peer.media_stats().await.expect("stats");
        let (v, au) = (got(&now, "video"), got(&now, "audio"));
        wait_for_rust_media(peer, what, |t| got(t, "video") > v + 20 && got(t, "audio") > au + 20).await;
    };
    wait_for_rust_media(&mut ada, "Bob's media", |t| got(t, "video") > 20 && got(t, "audio") > 20).await;
    wait_for_rust_media(&mut bob, "Ada's media", |t| got(t, "video") > 20 && got(t, "audio") > 20).await;

    // Redis dies for 8 s (past the 6 s after which nodes serve rooms alone).
    redis.kill();
    cluster_until(&a, "Redis unreachable", |v| v["redis"] == "unreachable").await;
    // Media is peer to peer: it goes on while signaling cannot cross nodes.
    grows(&mut ada, "Bob's media while Redis is down").await;
    grows(&mut bob, "Ada's media while Redis is down").await;
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    redis.restart().await;
    cluster_until(&a, "Redis back", |v| v["redis"] == "up" && ids(v).len() == 2).await;

    // Afterwards both are in one room again (rejoined if their sessions were
    // lost), the call runs, and chat between them works.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        bob.chat("are you there").await.expect("chat");
        let heard = tokio::time::timeout(std::time::Duration::from_secs(3), async {
            loop {
                match ada.events.recv().await {
                    Some(PeerEvent::Chat(m)) if m.text == "are you there" => return true,
                    Some(_) => {}
                    None => return false,
                }
            }
        })
        .await;
        if heard == Ok(true) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "Ada and Bob are in one room again after Redis came back");
    }
    grows(&mut ada, "Bob's media after Redis came back").await;
    grows(&mut bob, "Ada's media after Redis came back").await;
    bob.leave().await;
    ada.leave().await;
}

#[tokio::test]
async fn history_pages_older_than_the_rooms_memory_come_from_the_stream() {
    use switchboard_e2e::ws::WsClient;
    let redis = Redis::start().await;
    let cluster = ClusterSettings::new(redis.url(), "node-a");
    let mut settings = switchboard_server::config::Settings { cluster: Some(cluster), ..settings() };
    settings.limits.chat_history = 5;
    let a = server_with(settings).await;
    cluster_until(&a, "the node", |v| ids(v) == ["node-a"]).await;
    let mut c = WsClient::connect(a.local_addr()).await;
    c.join("paged", "C").await;
    for i in 1..=12 {
        c.send(format!(r#"{{"type":"chat","client_id":"p{i}","text":"m{i}"}}"#)).await;
        c.recv("chat").await;
    }
    let page = |v: &Value| -> (Vec<u64>, bool) {
        let seqs = v["messages"].as_array().expect("messages").iter().filter_map(|m| m["seq"].as_u64()).collect();
        (seqs, v["has_more"].as_bool().unwrap_or(false))
    };
    // Memory keeps 8..12: the newest page is served from it.
    c.send(r#"{"type":"chat_history","id":"h1","limit":3}"#).await;
    assert_eq!(page(&c.recv("chat_history").await), (vec![10, 11, 12], true));
    // Older than memory: from the stream, with has_more while older remain.
    c.send(r#"{"type":"chat_history","id":"h2","before":10,"limit":3}"#).await;
    assert_eq!(page(&c.recv("chat_history").await), (vec![7, 8, 9], true));
    c.send(r#"{"type":"chat_history","id":"h3","before":4,"limit":3}"#).await;
    let last = c.recv("chat_history").await;
    assert_eq!(last["id"], "h3");
    assert_eq!(page(&last), (vec![1, 2, 3], false));
}

#[tokio::test]
async fn a_flooding_room_does_not_starve_another_rooms_bridged_relays() {
    use switchboard_e2e::ws::WsClient;
    let redis = Redis::start().await;
    let (a, b) = two_nodes(&redis).await;
    // A busy room: owned by node-a, five members bridged from node-b, each
    // sending as fast as the rate limit lets it (its excess is refused).
    let mut owner = WsClient::connect(a.local_addr()).await;
    owner.join("busy", "Owner").await;
    let mut flooders = Vec::new();
    for i in 0..5 {
        let mut f = WsClient::connect(b.local_addr()).await;
        f.join("busy", &format!("F{i}")).await;
        flooders.push(f);
    }
    let flood = tokio::spawn(async move {
        for round in 0..200 {
            for f in &mut flooders {
                f.send(format!(r#"{{"type":"typing","active":{}}}"#, round % 2 == 0)).await;
            }
        }
        flooders
    });
    // Meanwhile a quiet room, also owned by node-a and bridged from node-b:
    // every relay arrives, in order.
    let mut x = WsClient::connect(a.local_addr()).await;
    let wx = x.join("quiet", "X").await;
    let mut y = WsClient::connect(b.local_addr()).await;
    y.join("quiet", "Y").await;
    x.recv("peer_joined").await;
    let xid = wx["you"]["id"].as_str().expect("id").to_owned();
    for i in 0..50 {
        y.send(format!(
            r#"{{"type":"candidate","to":"{xid}","candidate":{{"candidate":"candidate:{i} 1 udp 1 192.0.2.1 9 typ host","sdpMid":"0","sdpMLineIndex":0}}}}"#
        ))
        .await;
    }
    for i in 0..50 {
        let c = x.recv("candidate").await;
        let line = c["candidate"]["candidate"].as_str().expect("line").to_owned();
        assert!(line.starts_with(&format!("candidate:{i} ")), "relay {i} in order: {line}");
    }
    let _flooders = flood.await.expect("the flood ran");
}
