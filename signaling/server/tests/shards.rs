//! Hub shards over real sockets: rooms spread over four shards, each room
//! whole in one, connections moving to their room's shard at the join.

mod common;

use common::{Client, server};
use switchboard_protocol::{ErrorCode, RoomName, ServerMessage};
use switchboard_server::shards::place;

const SHARDS: usize = 4;

/// Room names `prefix-N` on `SHARDS` distinct shards, one per shard.
fn one_room_per_shard(prefix: &str) -> Vec<String> {
    let mut by_shard: Vec<Option<String>> = vec![None; SHARDS];
    for i in 0.. {
        let name = format!("{prefix}-{i}");
        let shard = place(&RoomName::new(&name).expect("room"), SHARDS);
        by_shard[shard].get_or_insert(name);
        if by_shard.iter().all(Option::is_some) {
            break;
        }
    }
    by_shard.into_iter().flatten().collect()
}

#[tokio::test]
async fn rooms_on_every_shard_relay_and_chat_and_stay_apart() {
    let srv = server(|s| s.hub_shards = Some(SHARDS)).await;
    let addr = srv.local_addr();
    for room in one_room_per_shard("spread") {
        let mut a = Client::connect(addr).await;
        let wa = a.join(&room, "A").await;
        let mut b = Client::connect(addr).await;
        let wb = b.join(&room, "B").await;
        assert_eq!(wb.peers.len(), 1, "{room}: B meets A, and only A: {:?}", wb.peers);
        a.recv_until("peer_joined", |m| matches!(m, ServerMessage::PeerJoined(_))).await;
        b.send(format!(r#"{{"type":"offer","to":"{}","description":{{"type":"offer","sdp":"v=0\r\n"}}}}"#, wa.you.id))
            .await;
        assert!(matches!(a.recv("offer").await, ServerMessage::Offer(o) if o.from == wb.you.id));
        a.send(r#"{"type":"chat","client_id":"c1","text":"hi"}"#).await;
        for c in [&mut a, &mut b] {
            let got = c.recv("chat").await;
            assert!(matches!(&got, ServerMessage::Chat(m) if m.seq == 1 && m.text == "hi"), "{room}: {got:?}");
        }
    }
}

#[tokio::test]
async fn messages_sent_right_behind_a_join_are_handled_after_it_in_order() {
    let srv = server(|s| s.hub_shards = Some(SHARDS)).await;
    for room in one_room_per_shard("pipelined") {
        let mut c = Client::connect(srv.local_addr()).await;
        // No waiting for the welcome: the join moves the connection to its
        // room's shard, and what follows must not overtake it.
        c.send(format!(r#"{{"type":"join","room":"{room}","name":"Ada"}}"#)).await;
        c.send(r#"{"type":"chat","client_id":"c1","text":"one"}"#).await;
        c.send(r#"{"type":"chat","client_id":"c2","text":"two"}"#).await;
        c.expect_welcome().await;
        for want in ["one", "two"] {
            let got = c.recv("chat").await;
            assert!(matches!(&got, ServerMessage::Chat(m) if m.text == want), "{room}: {got:?}");
        }
        c.assert_quiet().await;
    }
}

#[tokio::test]
async fn a_refused_join_can_be_followed_by_a_join_to_a_room_of_another_shard() {
    let srv = server(|s| {
        s.hub_shards = Some(SHARDS);
        s.limits.max_peers_per_room = 1;
    })
    .await;
    let addr = srv.local_addr();
    let rooms = one_room_per_shard("refused");
    let (full, other) = (&rooms[0], &rooms[1]);
    let mut holder = Client::connect(addr).await;
    holder.join(full, "Holder").await;
    let mut c = Client::connect(addr).await;
    c.send(format!(r#"{{"type":"join","room":"{full}","name":"C"}}"#)).await;
    c.expect_error(ErrorCode::RoomFull).await;
    let wc = c.join(other, "C").await;
    // The room is whole: someone joining it separately meets C there.
    let mut d = Client::connect(addr).await;
    d.send(format!(r#"{{"type":"join","room":"{other}","name":"D"}}"#)).await;
    let err = d.recv("the room is full").await;
    assert!(matches!(&err, ServerMessage::Error(e) if e.code == ErrorCode::RoomFull), "{other} holds C: {err:?}");
    c.send(r#"{"type":"chat","client_id":"c1","text":"in"}"#).await;
    assert!(matches!(c.recv("chat").await, ServerMessage::Chat(m) if m.text == "in" && m.from == wc.you.id));
}

#[tokio::test]
async fn a_join_sent_behind_a_join_that_is_refused_still_finds_its_rooms_shard() {
    let srv = server(|s| {
        s.hub_shards = Some(SHARDS);
        s.limits.max_peers_per_room = 1;
    })
    .await;
    let addr = srv.local_addr();
    let rooms = one_room_per_shard("behind");
    let (full, other) = (&rooms[0], &rooms[1]);
    let mut holder = Client::connect(addr).await;
    holder.join(full, "Holder").await;
    let mut c = Client::connect(addr).await;
    // Both at once: the second must wait for the first's answer to know
    // where to go (the first, if admitted, would make it `already_joined`).
    c.send(format!(r#"{{"type":"join","room":"{full}","name":"C"}}"#)).await;
    c.send(format!(r#"{{"type":"join","room":"{other}","name":"C"}}"#)).await;
    c.expect_error(ErrorCode::RoomFull).await;
    c.expect_welcome().await;
    let mut d = Client::connect(addr).await;
    d.send(format!(r#"{{"type":"join","room":"{other}","name":"D"}}"#)).await;
    d.expect_error(ErrorCode::RoomFull).await;
}

#[tokio::test]
async fn max_rooms_counts_the_rooms_of_every_shard() {
    let srv = server(|s| {
        s.hub_shards = Some(SHARDS);
        s.limits.max_rooms = 2;
    })
    .await;
    let addr = srv.local_addr();
    let rooms = one_room_per_shard("quota");
    let mut first = Client::connect(addr).await;
    first.join(&rooms[0], "A").await;
    let mut second = Client::connect(addr).await;
    second.join(&rooms[1], "B").await;
    let mut third = Client::connect(addr).await;
    third.send(format!(r#"{{"type":"join","room":"{}","name":"C"}}"#, rooms[2])).await;
    third.expect_error(ErrorCode::TooManyRooms).await;
    first.send(r#"{"type":"leave"}"#).await;
    first.expect_close().await;
    // The room on shard 0 went; its slot serves shard 2's room now.
    third.join(&rooms[2], "C").await;
}

#[tokio::test]
async fn a_resume_reaches_its_rooms_shard_from_any_home_shard() {
    let srv = server(|s| s.hub_shards = Some(SHARDS)).await;
    let addr = srv.local_addr();
    let room = &one_room_per_shard("resume")[3];
    let mut a = Client::connect(addr).await;
    a.join(room, "A").await;
    let mut b = Client::connect(addr).await;
    let wb = b.join(room, "B").await;
    a.recv_until("peer_joined", |m| matches!(m, ServerMessage::PeerJoined(_))).await;
    // B resumes from connections with consecutive ids, so from every home
    // shard in turn: each must reach the room.
    let mut token = wb.resume_token;
    for round in 0..SHARDS {
        drop(b);
        a.recv_until("B reconnecting", |m| matches!(m, ServerMessage::PeerUpdated(_))).await;
        let text = format!("while away {round}");
        a.send(format!(r#"{{"type":"chat","client_id":"r{round}","text":"{text}"}}"#)).await;
        b = Client::connect(addr).await;
        b.send(format!(r#"{{"type":"join","room":"{room}","name":"B","resume":{{"token":"{token}","received":0}}}}"#))
            .await;
        let w = b.expect_welcome().await;
        assert!(w.resumed, "round {round}");
        token = w.resume_token;
        b.recv_until("the chat sent while away", |m| matches!(m, ServerMessage::Chat(c) if c.text == text)).await;
        a.recv_until("B back", |m| matches!(m, ServerMessage::PeerUpdated(_))).await;
    }
}

#[tokio::test]
async fn a_reply_from_the_home_shard_is_not_taken_for_the_join_answer_and_no_ghost_is_left() {
    let srv = server(|s| s.hub_shards = Some(SHARDS)).await;
    let addr = srv.local_addr();
    let rooms = one_room_per_shard("ghost");
    // The first connection of a server has id 1: its home is shard 1.
    let (a, b) = (&rooms[2], &rooms[3]);
    let mut c = Client::connect(addr).await;
    // In one go: a message its home shard refuses (not_joined), a join that
    // moves it, and a second join. The home shard's refusal must not read
    // as the first join's answer (which sent the second join elsewhere and
    // left the first room with a member nobody could reach).
    c.send(r#"{"type":"chat","client_id":"early","text":"too early"}"#).await;
    c.send(format!(r#"{{"type":"join","room":"{a}","name":"C"}}"#)).await;
    c.send(format!(r#"{{"type":"join","room":"{b}","name":"C"}}"#)).await;
    c.expect_error(ErrorCode::NotJoined).await;
    c.expect_welcome().await;
    c.expect_error(ErrorCode::AlreadyJoined).await;
    c.send(r#"{"type":"leave"}"#).await;
    c.expect_close().await;
    // Nobody is left behind in either room.
    for room in [a, b] {
        let mut d = Client::connect(addr).await;
        let w = d.join(room, "D").await;
        assert!(w.peers.is_empty(), "{room}: {:?}", w.peers);
    }
}
