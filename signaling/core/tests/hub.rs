//! Room behaviour, step by step on a virtual clock.

mod common;

use common::Sim;
use std::time::Duration;
use switchboard_core::{Claims, CloseReason, HubConfig, Limits, TokenVerifier, mint_token};
use switchboard_protocol::{
    ChatHistoryPage, ErrorCode, LeaveReason, PeerJoined, PeerLeft, PeerUpdated, Pong, ReadNotice, RelayedDescription,
    ServerMessage, TypingNotice,
};

fn sim() -> Sim {
    Sim::new(HubConfig::default())
}

fn error_code(msgs: &[ServerMessage]) -> Option<ErrorCode> {
    msgs.iter().find_map(|m| match m {
        ServerMessage::Error(e) => Some(e.code),
        _ => None,
    })
}

#[test]
fn join_welcomes_and_announces() {
    let mut s = sim();
    let (a, wa) = s.join(1, "demo", "Ada");
    assert!(wa.peers.is_empty());
    assert_eq!(wa.chat_seq, 0);
    assert_eq!(wa.resume_token.len(), 32);
    let (_b, wb) = s.join(2, "demo", "Grace");
    assert_eq!(wb.peers.len(), 1);
    assert_eq!(wb.peers[0].id, wa.you.id);
    match s.take(a).as_slice() {
        [ServerMessage::PeerJoined(PeerJoined { peer })] => assert_eq!(peer.id, wb.you.id),
        other => panic!("{other:?}"),
    }
}

#[test]
fn relay_stamps_the_sender_and_reaches_only_the_target() {
    let mut s = sim();
    let (a, wa) = s.join(1, "demo", "Ada");
    let (b, wb) = s.join(2, "demo", "Grace");
    let (c, _) = s.join(3, "demo", "Linus");
    s.take(a);
    s.take(b);
    // A forged "from" is ignored: unknown fields are not part of the message.
    s.send(
        a,
        &format!(
            r#"{{"type":"offer","from":"pFORGED","to":"{}","description":{{"type":"offer","sdp":"v=0"}}}}"#,
            wb.you.id
        ),
    );
    match s.take(b).as_slice() {
        [ServerMessage::Offer(RelayedDescription { from, description })] => {
            assert_eq!(from, &wa.you.id);
            assert_eq!(description.sdp.text(), "v=0");
        }
        other => panic!("{other:?}"),
    }
    assert!(s.take(c).is_empty());
    assert!(s.take(a).is_empty());
}

#[test]
fn relay_to_another_room_or_nobody_is_unknown_peer() {
    let mut s = sim();
    let (a, _) = s.join(1, "demo", "Ada");
    let (b, wb) = s.join(2, "elsewhere", "Grace");
    for to in [wb.you.id.as_str(), "pNOBODY"] {
        s.send(a, &format!(r#"{{"type":"candidate","id":5,"to":"{to}","candidate":{{"candidate":""}}}}"#));
        let msgs = s.take(a);
        assert_eq!(error_code(&msgs), Some(ErrorCode::UnknownPeer));
    }
    assert!(s.take(b).is_empty());
}

#[test]
fn description_type_must_match() {
    let mut s = sim();
    let (a, _) = s.join(1, "demo", "Ada");
    let (_, wb) = s.join(2, "demo", "Grace");
    s.take(a);
    s.send(a, &format!(r#"{{"type":"offer","to":"{}","description":{{"type":"answer","sdp":"v=0"}}}}"#, wb.you.id));
    assert_eq!(error_code(&s.take(a)), Some(ErrorCode::InvalidDescription));
}

#[test]
fn messages_before_join_are_refused_but_ping_works() {
    let mut s = sim();
    let a = s.open(1);
    s.send(a, r#"{"type":"chat","client_id":"x","text":"hi"}"#);
    assert_eq!(error_code(&s.take(a)), Some(ErrorCode::NotJoined));
    s.send(a, r#"{"type":"ping","id":3}"#);
    assert!(matches!(s.take(a).as_slice(), [ServerMessage::Pong(Pong { .. })]));
}

#[test]
fn joining_twice_is_an_error_and_changes_nothing() {
    let mut s = sim();
    let (a, _) = s.join(1, "demo", "Ada");
    s.send(a, r#"{"type":"join","room":"other","name":"Ada"}"#);
    assert_eq!(error_code(&s.take(a)), Some(ErrorCode::AlreadyJoined));
    assert_eq!(s.hub.rooms(), 1);
}

#[test]
fn full_room_refuses_and_too_many_rooms_refuses() {
    let limits = Limits { max_peers_per_room: 2, max_rooms: 1, ..Limits::default() };
    let mut s = Sim::new(HubConfig { limits, ..HubConfig::default() });
    s.join(1, "demo", "A");
    s.join(2, "demo", "B");
    let c = s.open(3);
    s.send(c, r#"{"type":"join","room":"demo","name":"C"}"#);
    assert_eq!(error_code(&s.take(c)), Some(ErrorCode::RoomFull));
    s.send(c, r#"{"type":"join","room":"another","name":"C"}"#);
    assert_eq!(error_code(&s.take(c)), Some(ErrorCode::TooManyRooms));
    assert!(!s.closed.contains_key(&c), "both errors leave the connection open");
}

#[test]
fn chat_is_sequenced_acknowledged_and_paged() {
    let mut s = sim();
    let (a, _) = s.join(1, "demo", "Ada");
    let (b, _) = s.join(2, "demo", "Grace");
    s.take(a);
    for i in 0..60 {
        s.send(a, &format!(r#"{{"type":"chat","client_id":"m{i}","text":"hello {i}"}}"#));
    }
    let acks = s.take(a);
    let delivered = s.take(b);
    assert_eq!(acks, delivered, "the sender's echo is the same message everyone gets");
    let seqs: Vec<u64> = acks
        .iter()
        .map(|m| match m {
            ServerMessage::Chat(c) => c.seq,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(seqs, (1..=60).collect::<Vec<_>>());
    // A late joiner gets the newest page; older pages on request.
    let (c, wc) = s.join(3, "demo", "Linus");
    assert_eq!(wc.chat.len(), 50);
    assert_eq!(wc.chat.first().map(|m| m.seq), Some(11));
    assert_eq!(wc.chat_seq, 60);
    s.send(c, r#"{"type":"chat_history","id":"h","before":11}"#);
    match s.take(c).as_slice() {
        [ServerMessage::ChatHistory(ChatHistoryPage { messages, has_more, .. })] => {
            assert_eq!(messages.iter().map(|m| m.seq).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
            assert!(!has_more);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn chat_too_long_and_empty_are_refused() {
    let limits = Limits { max_chat_chars: 5, ..Limits::default() };
    let mut s = Sim::new(HubConfig { limits, ..HubConfig::default() });
    let (a, _) = s.join(1, "demo", "Ada");
    s.send(a, r#"{"type":"chat","client_id":"m","text":"éééééé"}"#);
    assert_eq!(error_code(&s.take(a)), Some(ErrorCode::ChatTooLong));
    s.send(a, r#"{"type":"chat","client_id":"m","text":"ééééé"}"#);
    assert!(matches!(s.take(a).as_slice(), [ServerMessage::Chat(_)]));
    s.send(a, r#"{"type":"chat","client_id":"m","text":"  "}"#);
    assert_eq!(error_code(&s.take(a)), Some(ErrorCode::InvalidMessage));
}

#[test]
fn typing_expires_unless_renewed() {
    let mut s = sim();
    let (a, _) = s.join(1, "demo", "Ada");
    let (b, _) = s.join(2, "demo", "Grace");
    s.take(a);
    s.send(a, r#"{"type":"typing","active":true}"#);
    assert!(matches!(s.take(b).as_slice(), [ServerMessage::Typing(TypingNotice { active: true, .. })]));
    s.advance(Duration::from_secs(3));
    s.send(a, r#"{"type":"typing","active":true}"#);
    assert!(s.take(b).is_empty(), "renewal is silent");
    s.advance(Duration::from_secs(3));
    assert!(s.take(b).is_empty(), "renewed 3 s ago with a 5 s TTL: still typing");
    s.advance(Duration::from_secs(3));
    assert!(matches!(s.take(b).as_slice(), [ServerMessage::Typing(TypingNotice { active: false, .. })]));
    assert!(s.hub.poll_timeout().is_none() || s.hub.poll_timeout() > Some(s.now.mono));
}

#[test]
fn sending_chat_clears_typing() {
    let mut s = sim();
    let (a, _) = s.join(1, "demo", "Ada");
    let (b, _) = s.join(2, "demo", "Grace");
    s.take(a);
    s.send(a, r#"{"type":"typing","active":true}"#);
    s.take(b);
    s.send(a, r#"{"type":"chat","client_id":"m","text":"done"}"#);
    let msgs = s.take(b);
    assert!(
        matches!(msgs.as_slice(), [ServerMessage::Typing(TypingNotice { active: false, .. }), ServerMessage::Chat(_)]),
        "{msgs:?}"
    );
}

#[test]
fn read_receipts_move_forward_only() {
    let mut s = sim();
    let (a, _) = s.join(1, "demo", "Ada");
    let (b, _) = s.join(2, "demo", "Grace");
    s.take(a);
    for i in 0..3 {
        s.send(a, &format!(r#"{{"type":"chat","client_id":"m{i}","text":"x"}}"#));
    }
    s.take(a);
    s.take(b);
    s.send(b, r#"{"type":"read","seq":2}"#);
    assert!(matches!(s.take(a).as_slice(), [ServerMessage::Read(ReadNotice { seq: 2, .. })]));
    s.send(b, r#"{"type":"read","seq":1}"#);
    assert!(s.take(a).is_empty());
    s.send(b, r#"{"type":"read","seq":9}"#);
    assert_eq!(error_code(&s.take(b)), Some(ErrorCode::InvalidMessage));
    let (_, wc) = s.join(3, "demo", "Linus");
    let grace = wc.peers.iter().find(|p| p.name.as_str() == "Grace").map(|p| p.read_seq);
    assert_eq!(grace, Some(2), "the welcome carries read positions");
}

#[test]
fn media_state_is_announced_once_per_change() {
    let mut s = sim();
    let (a, _) = s.join(1, "demo", "Ada");
    let (b, _) = s.join(2, "demo", "Grace");
    s.take(a);
    s.send(a, r#"{"type":"media","mic_muted":true,"camera_muted":false}"#);
    match s.take(b).as_slice() {
        [ServerMessage::PeerUpdated(PeerUpdated { peer })] => assert!(peer.media.mic_muted),
        other => panic!("{other:?}"),
    }
    s.send(a, r#"{"type":"media","mic_muted":true,"camera_muted":false}"#);
    assert!(s.take(b).is_empty());
}

#[test]
fn leave_and_disconnect_announce_reasons_and_empty_rooms_vanish() {
    let mut s = sim();
    let (a, _) = s.join(1, "demo", "Ada");
    let (b, wb) = s.join(2, "demo", "Grace");
    let (c, wc) = s.join(3, "demo", "Linus");
    s.take(a);
    s.send(b, r#"{"type":"leave"}"#);
    assert_eq!(s.closed.get(&b), Some(&CloseReason::Normal));
    assert!(
        matches!(s.take(a).as_slice(), [ServerMessage::PeerLeft(PeerLeft { peer_id, reason: LeaveReason::Left })] if *peer_id == wb.you.id)
    );
    s.disconnect(c, LeaveReason::SlowConsumer);
    assert!(
        matches!(s.take(a).as_slice(), [ServerMessage::PeerLeft(PeerLeft { peer_id, reason: LeaveReason::SlowConsumer })] if *peer_id == wc.you.id)
    );
    s.disconnect(c, LeaveReason::Disconnected);
    assert!(s.take(a).is_empty(), "disconnect is idempotent");
    s.disconnect(a, LeaveReason::Disconnected);
    assert_eq!(s.hub.rooms(), 1, "a dropped connection's seat is held for a resume");
    assert_eq!(s.hub.connections(), 0);
    s.advance(Limits::default().resume_grace);
    assert_eq!(s.hub.rooms(), 0);
    assert_eq!(s.hub.away(), 0);
}

#[test]
fn a_connection_that_never_joins_is_closed() {
    let mut s = sim();
    let a = s.open(1);
    s.advance(Duration::from_secs(9));
    assert!(s.closed.is_empty());
    s.advance(Duration::from_secs(2));
    assert_eq!(s.closed.get(&a), Some(&CloseReason::Error(ErrorCode::JoinTimeout)));
    assert_eq!(error_code(&s.take(a)), Some(ErrorCode::JoinTimeout));
    assert_eq!(s.hub.connections(), 0);
}

#[test]
fn joined_connections_are_not_closed_by_the_join_timeout() {
    let mut s = sim();
    let (a, _) = s.join(1, "demo", "Ada");
    s.advance(Duration::from_secs(60));
    assert!(!s.closed.contains_key(&a));
}

const SECRET: &[u8] = b"test-secret-test-secret-test-secret!";

fn token(room: &str, sub: &str, exp_s: u64) -> String {
    mint_token(SECRET, &Claims { room: room.into(), sub: sub.into(), exp: exp_s, ..Claims::default() })
}

#[test]
fn tokens_are_checked_and_identity_is_shown() {
    let mut s = Sim::new(HubConfig { verifier: Some(TokenVerifier::new(SECRET)), ..HubConfig::default() });
    let now_s = s.now.unix_ms / 1000;
    let a = s.open(1);
    s.send(a, r#"{"type":"join","room":"demo","name":"Ada"}"#);
    assert_eq!(error_code(&s.take(a)), Some(ErrorCode::Unauthorized));
    let expired = token("demo", "ada", now_s - 3600);
    s.send(a, &format!(r#"{{"type":"join","room":"demo","name":"Ada","token":"{expired}"}}"#));
    assert_eq!(error_code(&s.take(a)), Some(ErrorCode::TokenExpired));
    let other = token("other", "ada", now_s + 3600);
    s.send(a, &format!(r#"{{"type":"join","room":"demo","name":"Ada","token":"{other}"}}"#));
    assert_eq!(error_code(&s.take(a)), Some(ErrorCode::Unauthorized));
    let good = token("demo", "ada", now_s + 3600);
    s.send(a, &format!(r#"{{"type":"join","room":"demo","name":"Ada","token":"{good}"}}"#));
    match s.take(a).as_slice() {
        [ServerMessage::Welcome(w)] => assert_eq!(w.you.identity.as_deref(), Some("ada")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn same_identity_replaces_the_old_session() {
    let mut s = Sim::new(HubConfig { verifier: Some(TokenVerifier::new(SECRET)), ..HubConfig::default() });
    let exp = s.now.unix_ms / 1000 + 3600;
    let (a, b, c) = (s.open(1), s.open(2), s.open(3));
    s.send(a, &format!(r#"{{"type":"join","room":"demo","name":"Ada","token":"{}"}}"#, token("demo", "ada", exp)));
    s.send(b, &format!(r#"{{"type":"join","room":"demo","name":"Bob","token":"{}"}}"#, token("demo", "bob", exp)));
    s.take(a);
    s.take(b);
    s.send(c, &format!(r#"{{"type":"join","room":"demo","name":"Ada","token":"{}"}}"#, token("demo", "ada", exp)));
    assert_eq!(s.closed.get(&a), Some(&CloseReason::Error(ErrorCode::Replaced)));
    let bob = s.take(b);
    assert!(
        matches!(bob.first(), Some(ServerMessage::PeerLeft(PeerLeft { reason: LeaveReason::Replaced, .. }))),
        "{bob:?}"
    );
    assert!(matches!(bob.get(1), Some(ServerMessage::PeerJoined(PeerJoined { .. }))), "{bob:?}");
    assert_eq!(s.hub.peers(), 2);
    s.hub.check_invariants().expect("invariants");
}

#[test]
fn replacing_the_only_member_keeps_the_chat() {
    let mut s = Sim::new(HubConfig { verifier: Some(TokenVerifier::new(SECRET)), ..HubConfig::default() });
    let exp = s.now.unix_ms / 1000 + 3600;
    let (a, b) = (s.open(1), s.open(2));
    let join = format!(r#"{{"type":"join","room":"demo","name":"Ada","token":"{}"}}"#, token("demo", "ada", exp));
    s.send(a, &join);
    s.send(a, r#"{"type":"chat","client_id":"m1","text":"before the reconnect"}"#);
    s.take(a);
    s.send(b, &join);
    match s.take(b).as_slice() {
        [ServerMessage::Welcome(w)] => {
            assert_eq!(w.chat_seq, 1);
            assert_eq!(w.chat.len(), 1);
            assert!(w.peers.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.closed.get(&a), Some(&CloseReason::Error(ErrorCode::Replaced)));
    s.hub.check_invariants().expect("invariants");
}

#[test]
fn shutdown_tells_everyone_and_closes() {
    let mut s = sim();
    let (a, _) = s.join(1, "demo", "Ada");
    let b = s.open(2);
    let notice = switchboard_protocol::GoingAway { reason: "bye".into(), reconnect_url: None, retry_after_ms: 1000 };
    s.hub.shutdown(&notice, s.now);
    while let Some(out) = s.hub.poll_output() {
        if let switchboard_core::Output::Close { conn, reason } = out {
            s.closed.insert(conn, reason);
        }
    }
    assert_eq!(s.closed.get(&a), Some(&CloseReason::GoingAway));
    assert_eq!(s.closed.get(&b), Some(&CloseReason::GoingAway));
    assert_eq!(s.hub.rooms(), 0);
}

#[test]
fn a_connection_that_opens_during_shutdown_is_told_and_closed() {
    let mut s = sim();
    s.join(1, "demo", "Ada");
    let notice = switchboard_protocol::GoingAway { reason: "bye".into(), reconnect_url: None, retry_after_ms: 1000 };
    s.hub.shutdown(&notice, s.now);
    while s.hub.poll_output().is_some() {}
    // Its upgrade was in flight when shutdown began: it must not join a hub
    // that has forgotten everything, and must hear where to go.
    let late = s.open(2);
    assert!(matches!(s.take(late).as_slice(), [ServerMessage::GoingAway(_)]));
    assert_eq!(s.closed.get(&late), Some(&CloseReason::GoingAway));
    s.send(late, r#"{"type":"join","room":"demo","name":"Late"}"#);
    assert!(s.take(late).is_empty(), "a closed connection joins nothing");
    assert_eq!(s.hub.rooms(), 0);
}

fn turn_sim() -> Sim {
    let turn = switchboard_core::TurnConfig::new(
        vec!["turn-secret-0123456789".into()],
        vec!["turn:127.0.0.1:3479?transport=udp".into()],
        600,
    )
    .expect("valid");
    let stun =
        switchboard_protocol::IceServer { urls: vec!["stun:127.0.0.1:3478".into()], username: None, credential: None };
    Sim::new(HubConfig { turn: Some(turn), ice_servers: vec![stun], ..HubConfig::default() })
}

#[test]
fn turn_credentials_in_the_welcome_are_named_after_the_peer_and_expire() {
    let mut s = turn_sim();
    let now_s = s.now.unix_ms / 1000;
    let (_, w) = s.join(1, "demo", "Ada");
    assert_eq!(w.ice_servers_ttl_s, Some(600));
    assert_eq!(w.ice_servers.len(), 2, "STUN, then TURN");
    let turn = &w.ice_servers[1];
    let username = turn.username.as_deref().expect("username");
    assert_eq!(username, format!("{}:{}", now_s + 600, w.you.id));
    assert_eq!(
        turn.credential.as_deref(),
        Some(switchboard_core::password("turn-secret-0123456789", username).as_str())
    );
}

#[test]
fn ice_servers_are_refreshed_on_request_and_only_after_joining() {
    let mut s = turn_sim();
    let lobby = s.open(1);
    s.send(lobby, r#"{"type":"ice_servers","id":"r0"}"#);
    assert_eq!(error_code(&s.take(lobby)), Some(ErrorCode::NotJoined));
    let (a, w) = s.join(2, "demo", "Ada");
    s.advance(Duration::from_secs(500));
    s.send(a, r#"{"type":"ice_servers","id":"r1"}"#);
    let reply = s.take(a);
    let [ServerMessage::IceServers(list)] = reply.as_slice() else { panic!("one ice_servers reply: {reply:?}") };
    assert_eq!(list.id, Some(switchboard_protocol::RequestId::Text("r1".into())));
    assert_eq!(list.ice_servers_ttl_s, Some(600));
    let fresh = list.ice_servers[1].username.as_deref().expect("username");
    let first = w.ice_servers[1].username.as_deref().expect("username");
    let expiry = |u: &str| u.split_once(':').and_then(|(e, _)| e.parse::<u64>().ok()).expect("expiry");
    assert_eq!(expiry(fresh), expiry(first) + 500, "a refresh starts a new lifetime");
}

#[test]
fn without_turn_the_welcome_has_no_expiry() {
    let mut s = sim();
    let (a, w) = s.join(1, "demo", "Ada");
    assert_eq!(w.ice_servers_ttl_s, None);
    s.send(a, r#"{"type":"ice_servers"}"#);
    let reply = s.take(a);
    assert!(
        matches!(reply.as_slice(), [ServerMessage::IceServers(l)] if l.ice_servers.is_empty() && l.ice_servers_ttl_s.is_none())
    );
}
