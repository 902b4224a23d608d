//! Every bad input over a real socket: the sender gets a clear error, its
//! connection keeps working wherever that is safe, and the rest of the room
//! never notices.

mod common;

use common::{Client, WAIT, room, server};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use switchboard_protocol::{
    ErrorCode, LeaveReason, PeerLeft, Pong, RelayedDescription, RelayedEndOfCandidates, RequestId, ServerMessage,
};
use tokio_tungstenite::tungstenite::Message;

/// Joins a and b to one room and returns them with b's peer id.
async fn pair(addr: std::net::SocketAddr) -> (Client, Client, String) {
    let mut peers = room(addr, "bad", 2).await;
    let (b, wb) = peers.pop().expect("b");
    let (a, _) = peers.pop().expect("a");
    (a, b, wb.you.id.to_string())
}

/// After a bad input from `a`: a still relays to b, and b saw nothing else.
async fn room_unaffected(a: &mut Client, b: &mut Client, b_id: &str) {
    a.send(format!(r#"{{"type":"end_of_candidates","to":"{b_id}"}}"#)).await;
    let pending = b.sync().await;
    assert!(
        matches!(pending.as_slice(), [ServerMessage::EndOfCandidates(RelayedEndOfCandidates { .. })]),
        "b should have seen exactly the relay, got {pending:?}"
    );
    a.assert_quiet().await;
}

#[tokio::test]
async fn malformed_json_is_an_error_not_a_disconnect() {
    let srv = server(|_| {}).await;
    let (mut a, mut b, b_id) = pair(srv.local_addr()).await;
    for _ in 0..3 {
        a.send("{this is not json").await;
        a.expect_error(ErrorCode::MalformedJson).await;
    }
    room_unaffected(&mut a, &mut b, &b_id).await;
}

#[tokio::test]
async fn binary_frames_are_refused() {
    let srv = server(|_| {}).await;
    let (mut a, mut b, b_id) = pair(srv.local_addr()).await;
    a.send_raw(Message::binary(vec![0u8, 159, 146, 150])).await;
    a.expect_error(ErrorCode::BinaryFrame).await;
    room_unaffected(&mut a, &mut b, &b_id).await;
}

#[tokio::test]
async fn unknown_type_echoes_the_request_id() {
    let srv = server(|_| {}).await;
    let (mut a, mut b, b_id) = pair(srv.local_addr()).await;
    a.send(r#"{"type":"teleport","id":"t1"}"#).await;
    let err = a.expect_error(ErrorCode::UnknownType).await;
    assert_eq!(err.id, Some(RequestId::Text("t1".into())));
    assert!(!err.fatal);
    room_unaffected(&mut a, &mut b, &b_id).await;
}

#[tokio::test]
async fn missing_and_mistyped_fields_are_invalid_messages() {
    let srv = server(|_| {}).await;
    let (mut a, mut b, b_id) = pair(srv.local_addr()).await;
    a.send(r#"{"type":"offer","id":4}"#).await;
    let err = a.expect_error(ErrorCode::InvalidMessage).await;
    assert_eq!(err.id, Some(RequestId::Number(4)));
    assert!(err.message.contains("to") || err.message.contains("description"), "{}", err.message);
    a.send(r#"{"type":"read","seq":"seven"}"#).await;
    a.expect_error(ErrorCode::InvalidMessage).await;
    a.send(r#"{"type":"join","room":"has spaces","name":"x"}"#).await;
    let err = a.expect_error(ErrorCode::InvalidMessage).await;
    assert!(err.message.contains("room must be"), "{}", err.message);
    room_unaffected(&mut a, &mut b, &b_id).await;
}

#[tokio::test]
async fn oversized_frames_are_refused_and_huge_ones_close() {
    let srv = server(|s| s.limits.max_message_bytes = 4096).await;
    let (mut a, mut b, b_id) = pair(srv.local_addr()).await;
    let big = format!(r#"{{"type":"chat","id":9,"client_id":"c","text":"{}"}}"#, "x".repeat(5000));
    a.send(big).await;
    let err = a.expect_error(ErrorCode::MessageTooLarge).await;
    assert_eq!(err.id, Some(RequestId::Number(9)));
    room_unaffected(&mut a, &mut b, &b_id).await;
    // Beyond the hard limit (4x) the frame is not even buffered.
    a.send(format!(r#"{{"type":"chat","client_id":"c","text":"{}"}}"#, "x".repeat(20_000))).await;
    let err = a.expect_error(ErrorCode::MessageTooLarge).await;
    assert!(err.fatal);
    let close = a.expect_close().await.expect("close frame");
    assert_eq!(u16::from(close.code), 1009);
    let left = b.recv_until("peer_left", |m| matches!(m, ServerMessage::PeerLeft(PeerLeft { .. }))).await;
    assert!(matches!(left, ServerMessage::PeerLeft(PeerLeft { reason: LeaveReason::Kicked, .. })), "{left:?}");
    b.assert_quiet().await;
}

#[tokio::test]
async fn relays_outside_the_room_are_unknown_peer() {
    let srv = server(|_| {}).await;
    let (mut a, mut b, b_id) = pair(srv.local_addr()).await;
    let mut other = Client::connect(srv.local_addr()).await;
    let wo = other.join("elsewhere", "stranger").await;
    for to in [wo.you.id.as_str(), "pNOTHERE"] {
        a.send(format!(r#"{{"type":"offer","id":1,"to":"{to}","description":{{"type":"offer","sdp":"v=0"}}}}"#)).await;
        let err = a.expect_error(ErrorCode::UnknownPeer).await;
        assert!(!err.fatal);
    }
    other.assert_quiet().await;
    room_unaffected(&mut a, &mut b, &b_id).await;
}

#[tokio::test]
async fn a_forged_sender_is_replaced_by_the_real_one() {
    let srv = server(|_| {}).await;
    let mut peers = room(srv.local_addr(), "forge", 3).await;
    let (mut c, wc) = peers.pop().expect("c");
    let (_b, wb) = peers.pop().expect("b");
    let (mut a, wa) = peers.pop().expect("a");
    a.send(format!(
        r#"{{"type":"offer","from":"{}","to":"{}","description":{{"type":"offer","sdp":"v=0"}}}}"#,
        wb.you.id, wc.you.id
    ))
    .await;
    let got = c.recv("offer").await;
    assert!(matches!(&got, ServerMessage::Offer(RelayedDescription { from, .. }) if *from == wa.you.id), "{got:?}");
}

#[tokio::test]
async fn joining_twice_and_joining_a_full_room_are_refused() {
    let srv = server(|s| s.limits.max_peers_per_room = 2).await;
    let (mut a, mut b, b_id) = pair(srv.local_addr()).await;
    a.send(r#"{"type":"join","room":"bad","name":"again"}"#).await;
    a.expect_error(ErrorCode::AlreadyJoined).await;
    let mut c = Client::connect(srv.local_addr()).await;
    c.send(r#"{"type":"join","id":"j","room":"bad","name":"third"}"#).await;
    let err = c.expect_error(ErrorCode::RoomFull).await;
    assert!(!err.fatal);
    // The refused client can still join another room.
    c.join("overflow", "third").await;
    room_unaffected(&mut a, &mut b, &b_id).await;
}

#[tokio::test]
async fn chat_over_the_length_limit_is_refused() {
    let srv = server(|s| s.limits.max_chat_chars = 10).await;
    let (mut a, mut b, b_id) = pair(srv.local_addr()).await;
    a.send(r#"{"type":"chat","client_id":"c","text":"this is far too long"}"#).await;
    a.expect_error(ErrorCode::ChatTooLong).await;
    room_unaffected(&mut a, &mut b, &b_id).await;
}

#[tokio::test]
async fn a_flood_is_rate_limited_then_closed_and_the_room_carries_on() {
    let srv = server(|s| {
        s.limits.messages_per_second = 20;
        s.limits.message_burst = 20;
        s.limits.flood_strikes = 30;
    })
    .await;
    let (mut a, mut b, b_id) = pair(srv.local_addr()).await;
    // Fire far more than burst + strikes without waiting.
    for i in 0..200 {
        a.send(format!(r#"{{"type":"ping","id":{i}}}"#)).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    let fatal = loop {
        match a.recv("rate limit errors then flood").await {
            ServerMessage::Pong(Pong { .. }) => pongs += 1,
            ServerMessage::Error(e) if e.code == ErrorCode::RateLimited => {
                let Some(RequestId::Number(id)) = e.id else { panic!("rate_limited echoes the dropped message's id") };
                // The join took one token of the burst of 20.
                assert!(id >= 19, "message {id} was inside the burst but was dropped");
                limited += 1;
            }
            ServerMessage::Error(e) if e.code == ErrorCode::Flood => break e,
            other => panic!("{other:?}"),
        }
    };
    assert!(fatal.fatal);
    // Pongs for accepted pings may still be on their way when the flood
    // close comes; the ids above prove the burst itself was accepted.
    let _ = pongs;
    assert!(limited >= 1, "excess is refused before the close");
    a.expect_close().await;
    let left = b.recv_until("peer_left", |m| matches!(m, ServerMessage::PeerLeft(PeerLeft { .. }))).await;
    assert!(matches!(left, ServerMessage::PeerLeft(PeerLeft { reason: LeaveReason::Kicked, .. })));
    b.assert_quiet().await;
    let _ = b_id;
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut_off_without_stalling_the_room() {
    let srv = server(|s| {
        s.limits.outbound_queue = 8;
        s.limits.messages_per_second = 100_000;
        s.limits.message_burst = 100_000;
    })
    .await;
    let mut peers = room(srv.local_addr(), "slow", 3).await;
    let (mut c, _) = peers.pop().expect("c");
    let (sleeper, w_sleeper) = peers.pop().expect("sleeper");
    let (a, _) = peers.pop().expect("a");
    // The sleeper never reads again. `a` sends it ~60 KB candidates until
    // the kernel buffers and its 8-message queue are full, and keeps reading
    // its own socket (the unknown_peer errors once the sleeper is gone).
    let (mut sink, mut stream) = a.ws.split();
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
    let blob = "x".repeat(60_000);
    let frame = format!(r#"{{"type":"candidate","to":"{}","candidate":{{"candidate":"{blob}"}}}}"#, w_sleeper.you.id);
    let send_all = async {
        for _ in 0..1000 {
            sink.send(Message::text(frame.clone())).await.expect("send");
        }
        panic!("1000 frames of 60 KB did not fill the sleeper's queue");
    };
    let watch_c = c.recv_until("the sleeper's peer_left", |m| matches!(m, ServerMessage::PeerLeft(PeerLeft { .. })));
    let left = tokio::select! {
        left = watch_c => left,
        () = send_all => unreachable!(),
    };
    assert!(
        matches!(&left, ServerMessage::PeerLeft(PeerLeft { peer_id, reason: LeaveReason::SlowConsumer }) if *peer_id == w_sleeper.you.id),
        "{left:?}"
    );
    // Everyone else still talks.
    c.send(r#"{"type":"chat","client_id":"after","text":"still here"}"#).await;
    c.recv_until("chat after the slow consumer", |m| matches!(m, ServerMessage::Chat(_))).await;
    reader.abort();
    drop(sleeper);
}

#[tokio::test]
async fn a_connection_that_never_joins_is_closed() {
    let srv = server(|s| s.limits.join_timeout = Duration::from_millis(300)).await;
    let mut lurker = Client::connect(srv.local_addr()).await;
    let err = lurker.expect_error(ErrorCode::JoinTimeout).await;
    assert!(err.fatal);
    let close = lurker.expect_close().await.expect("close frame");
    assert_eq!(u16::from(close.code), 1008);
}

#[tokio::test]
async fn a_silent_connection_times_out_and_its_room_is_told() {
    let srv = server(|s| {
        s.limits.ping_interval = Duration::from_millis(200);
        s.limits.ping_timeout = Duration::from_millis(600);
        // With resume on, the room would first see it reconnecting (tested
        // in resume.rs).
        s.limits.resume_grace = Duration::ZERO;
    })
    .await;
    let mut peers = room(srv.local_addr(), "quiet", 2).await;
    let (mut silent, ws) = peers.pop().expect("silent");
    let (mut a, _) = peers.pop().expect("a");
    // `a` keeps pinging; `silent` only reads.
    let keep_alive = async {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let pending = a.sync().await;
            if let Some(left) = pending.into_iter().find(|m| matches!(m, ServerMessage::PeerLeft(PeerLeft { .. }))) {
                return left;
            }
            assert!(tokio::time::Instant::now() < deadline, "silent peer was never timed out");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (left, err) = tokio::join!(keep_alive, silent.expect_error(ErrorCode::PingTimeout));
    assert!(err.fatal);
    assert!(
        matches!(left, ServerMessage::PeerLeft(PeerLeft { peer_id, reason: LeaveReason::Timeout }) if peer_id == ws.you.id)
    );
}

#[tokio::test]
async fn the_connection_limit_answers_503() {
    let srv = server(|s| s.limits.max_connections = 2).await;
    let _a = Client::connect(srv.local_addr()).await;
    let _b = Client::connect(srv.local_addr()).await;
    let err = Client::connect_with(srv.local_addr(), None).await.err().expect("third is refused");
    assert!(err.to_string().contains("503"), "{err}");
}

#[tokio::test]
async fn foreign_origins_are_refused_when_an_allow_list_is_set() {
    let srv = server(|s| s.allowed_origins = vec!["https://app.example".into()]).await;
    let err = Client::connect_with(srv.local_addr(), Some("https://evil.example")).await.err().expect("refused");
    assert!(err.to_string().contains("403"), "{err}");
    let mut ok = Client::connect_with(srv.local_addr(), Some("https://app.example")).await.expect("allowed");
    ok.join("o", "fine").await;
    let mut native = Client::connect(srv.local_addr()).await;
    native.join("o", "no-origin").await;
}

#[tokio::test]
async fn by_default_only_the_servers_own_pages_may_connect() {
    let srv = server(|_| {}).await;
    let addr = srv.local_addr();
    let own = format!("http://{addr}");
    Client::connect_with(addr, Some(&own)).await.expect("its own page").join("o", "own").await;
    let localhost = format!("http://localhost:{}", addr.port());
    Client::connect_with(addr, Some(&localhost)).await.expect("its own page by name").join("o", "named").await;
    for foreign in ["https://evil.example", "null", &format!("http://rebind.example:{}", addr.port())] {
        let err = Client::connect_with(addr, Some(foreign)).await.err().expect("refused");
        assert!(err.to_string().contains("403"), "{foreign}: {err}");
    }
}

#[tokio::test]
async fn a_dns_rebinding_page_is_refused_even_when_host_agrees() {
    let srv = server(|_| {}).await;
    let addr = srv.local_addr();
    let rebind = format!("rebind.example:{}", addr.port());
    let origin = format!("http://{rebind}");
    let status =
        common::upgrade_status(std::net::IpAddr::from([127, 0, 0, 1]), addr, &[("Origin", &origin), ("Host", &rebind)])
            .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn open_rooms_are_not_served_through_a_proxy_unless_declared() {
    let srv = server(|_| {}).await;
    let addr = srv.local_addr();
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    assert_eq!(common::upgrade_status(loopback, addr, &[]).await, 101, "direct, on loopback: open rooms");
    for header in ["X-Forwarded-For", "Forwarded", "X-Real-IP"] {
        let value = if header == "Forwarded" { "for=203.0.113.5" } else { "203.0.113.5" };
        assert_eq!(common::upgrade_status(loopback, addr, &[(header, value)]).await, 403, "{header}");
    }
    let declared = server(|s| s.insecure_open_rooms = true).await;
    let status = common::upgrade_status(loopback, declared.local_addr(), &[("X-Forwarded-For", "203.0.113.5")]).await;
    assert_eq!(status, 101, "the operator said open rooms are meant");
    let secret = "0123456789abcdef0123456789abcdef";
    let with_tokens = server(|s| s.auth_secret = Some(secret.into())).await;
    let status =
        common::upgrade_status(loopback, with_tokens.local_addr(), &[("X-Forwarded-For", "203.0.113.5")]).await;
    assert_eq!(status, 101, "with an auth secret the join token decides");
}

#[tokio::test]
async fn an_sdp_with_a_lone_surrogate_is_refused_not_relayed() {
    let srv = server(|_| {}).await;
    let (mut a, mut b, b_id) = pair(srv.local_addr()).await;
    // Valid JSON, but no Unicode text: every peer that unescapes it fails.
    a.send(format!(r#"{{"type":"offer","id":"o1","to":"{b_id}","description":{{"type":"offer","sdp":"v=0\ud800"}}}}"#))
        .await;
    // As for a lone surrogate anywhere else (chat text, a candidate): the
    // frame is not JSON text we can read, so its id cannot be read either.
    let err = a.expect_error(ErrorCode::MalformedJson).await;
    assert!(err.message.contains("Unicode"), "{}", err.message);
    room_unaffected(&mut a, &mut b, &b_id).await;
}
