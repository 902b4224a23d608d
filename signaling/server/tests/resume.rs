//! Resume over real sockets: a dropped client takes its seat back with
//! every missed event; a half-open connection is probed; a live one is not
//! taken over.

mod common;

use common::{Client, WAIT, room, server};
use futures_util::StreamExt;
use std::time::Duration;
use switchboard_protocol::{ErrorCode, LeaveReason, PeerLeft, PeerUpdated, ServerMessage, Welcome};

fn resume(room: &str, w: &Welcome, received: u64) -> String {
    format!(
        r#"{{"type":"join","room":"{room}","name":"x","resume":{{"token":"{}","received":{received}}}}}"#,
        w.resume_token
    )
}

/// Reads until `n` events arrived, returning them.
async fn events(c: &mut Client, n: usize) -> Vec<ServerMessage> {
    let mut got = Vec::new();
    while got.len() < n {
        let msg = c.recv("an event").await;
        if msg.kind().is_event() {
            got.push(msg);
        }
    }
    got
}

#[tokio::test]
async fn a_dropped_client_resumes_with_every_missed_event_and_the_room_never_sees_it_leave() {
    let srv = server(|_| {}).await;
    let mut peers = room(srv.local_addr(), "resume", 2).await;
    let (b, wb) = peers.pop().expect("b");
    let (mut a, _) = peers.pop().expect("a");
    // b joined last: it has received no event yet.
    drop(b);
    let update = a.recv_until("reconnecting", |m| matches!(m, ServerMessage::PeerUpdated(_))).await;
    assert!(matches!(update, ServerMessage::PeerUpdated(PeerUpdated { peer }) if peer.reconnecting));
    for i in 0..5 {
        a.send(format!(r#"{{"type":"chat","client_id":"a{i}","text":"m{i}"}}"#)).await;
    }
    a.send(format!(r#"{{"type":"candidate","to":"{}","candidate":{{"candidate":"c"}}}}"#, wb.you.id)).await;
    // The relay is accepted (no error) even though b is away.
    let pending = a.sync().await;
    assert!(pending.iter().all(|m| !matches!(m, ServerMessage::Error(_))), "{pending:?}");

    let mut b2 = Client::connect(srv.local_addr()).await;
    b2.send(resume("resume", &wb, 0)).await;
    let w = b2.expect_welcome().await;
    assert!(w.resumed);
    assert_eq!(w.you.id, wb.you.id);
    let replay = events(&mut b2, 6).await;
    let texts: Vec<&str> = replay
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Chat(c) => Some(c.text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["m0", "m1", "m2", "m3", "m4"]);
    assert!(matches!(replay[5], ServerMessage::Candidate(_)));
    let back = a.recv_until("back", |m| matches!(m, ServerMessage::PeerUpdated(_))).await;
    assert!(matches!(back, ServerMessage::PeerUpdated(PeerUpdated { peer }) if !peer.reconnecting));
    // Nothing more was replayed: the next event is new.
    a.send(r#"{"type":"chat","client_id":"a9","text":"live"}"#).await;
    match events(&mut b2, 1).await.as_slice() {
        [ServerMessage::Chat(c)] => assert_eq!(c.text, "live"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn after_the_grace_the_room_sees_timeout_and_the_token_is_refused() {
    let srv = server(|s| s.limits.resume_grace = Duration::from_millis(300)).await;
    let mut peers = room(srv.local_addr(), "grace", 2).await;
    let (b, wb) = peers.pop().expect("b");
    let (mut a, _) = peers.pop().expect("a");
    drop(b);
    let left = a.recv_until("peer_left", |m| matches!(m, ServerMessage::PeerLeft(_))).await;
    assert!(
        matches!(left, ServerMessage::PeerLeft(PeerLeft { peer_id, reason: LeaveReason::Timeout }) if peer_id == wb.you.id)
    );
    let mut b2 = Client::connect(srv.local_addr()).await;
    b2.send(resume("grace", &wb, 0)).await;
    b2.expect_error(ErrorCode::ResumeFailed).await;
}

#[tokio::test]
async fn a_half_open_connection_is_probed_and_a_live_one_is_not_taken_over() {
    let srv = server(|_| {}).await;
    let mut peers = room(srv.local_addr(), "probe", 2).await;
    let (mut b, wb) = peers.pop().expect("b");
    let (mut a, _) = peers.pop().expect("a");

    // b is alive and reading: someone else with its token is refused.
    let mut thief = Client::connect(srv.local_addr()).await;
    thief.send(resume("probe", &wb, 0)).await;
    let keep_reading = async {
        // Reading answers the server's WebSocket ping; b sends nothing else,
        // so nothing of it is in flight once it stops.
        while let Some(Ok(_)) = b.ws.next().await {}
        panic!("b's connection ended");
    };
    tokio::select! {
        e = thief.expect_error(ErrorCode::ResumeFailed) => assert!(!e.fatal),
        () = keep_reading => unreachable!(),
    }

    // b stops reading (its connection looks alive but is not: half-open).
    // The resume waits for the probe, then takes the seat.
    let started = tokio::time::Instant::now();
    let mut b2 = Client::connect(srv.local_addr()).await;
    b2.send(resume("probe", &wb, 0)).await;
    let w = b2.expect_welcome().await;
    assert!(w.resumed && w.you.id == wb.you.id);
    assert!(started.elapsed() < WAIT);
    // The room saw it reconnecting and back, never leave.
    let seen = a.sync().await;
    assert!(seen.iter().all(|m| !matches!(m, ServerMessage::PeerLeft(_))), "{seen:?}");
    drop(b);
}
