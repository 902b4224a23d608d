//! Hub shards: several hubs in one server share the room limit, and a
//! connection not in a room can move from one hub to another without
//! gaining time or leaving a trace.

mod common;

use common::Sim;
use std::time::Duration;
use switchboard_core::{CloseReason, HubConfig, Limits, RoomQuota};
use switchboard_protocol::{ErrorCode, ServerMessage};

fn error_code(msgs: &[ServerMessage]) -> Option<ErrorCode> {
    msgs.iter().find_map(|m| if let ServerMessage::Error(e) = m { Some(e.code) } else { None })
}

fn shard(quota: &RoomQuota, max_rooms: usize) -> Sim {
    let limits = Limits { max_rooms, ..Limits::default() };
    Sim::new(HubConfig { limits, room_quota: quota.clone(), ..HubConfig::default() })
}

#[test]
fn shards_share_max_rooms_and_a_room_that_ends_gives_its_slot_back() {
    let quota = RoomQuota::default();
    let (mut one, mut two) = (shard(&quota, 2), shard(&quota, 2));
    let (a, _) = one.join(1, "alpha", "A");
    two.join(2, "beta", "B");
    let c = two.open(3);
    two.send(c, r#"{"type":"join","room":"gamma","name":"C"}"#);
    assert_eq!(error_code(&two.take(c)), Some(ErrorCode::TooManyRooms), "the server holds 2 rooms already");
    one.send(a, r#"{"type":"leave"}"#);
    assert_eq!(quota.taken(), 1);
    two.send(c, r#"{"type":"join","room":"gamma","name":"C"}"#);
    assert!(matches!(two.take(c).as_slice(), [ServerMessage::Welcome(_)]), "alpha's slot was given back");
}

#[test]
fn a_shard_shutting_down_gives_its_rooms_back() {
    let quota = RoomQuota::default();
    let mut one = shard(&quota, 10);
    one.join(1, "alpha", "A");
    one.join(2, "beta", "B");
    let notice = switchboard_protocol::GoingAway { reason: "restart".into(), retry_after_ms: 0, reconnect_url: None };
    one.hub.shutdown(&notice, one.now);
    assert_eq!(quota.taken(), 0);
}

#[test]
fn the_shell_is_told_when_a_room_starts_and_ends() {
    let mut s = shard(&RoomQuota::default(), 10);
    let (a, _) = s.join(1, "alpha", "A");
    let (b, _) = s.join(2, "alpha", "B");
    s.join(3, "beta", "C");
    assert_eq!(s.rooms_started, ["alpha", "beta"], "once per room, at its first join");
    s.send(a, r#"{"type":"leave"}"#);
    assert!(s.rooms_ended.is_empty(), "alpha still has B");
    s.send(b, r#"{"type":"leave"}"#);
    assert_eq!(s.rooms_ended, ["alpha"]);
    let notice = switchboard_protocol::GoingAway { reason: "restart".into(), retry_after_ms: 0, reconnect_url: None };
    s.hub.shutdown(&notice, s.now);
    let ended: Vec<String> = std::iter::from_fn(|| s.hub.poll_output())
        .filter_map(
            |o| if let switchboard_core::Output::RoomEnded { room } = o { Some(room.to_string()) } else { None },
        )
        .collect();
    assert_eq!(ended, ["beta"], "a shutdown ends every room");
}

#[test]
fn a_connection_moved_between_shards_keeps_its_join_deadline_and_leaves_nothing_behind() {
    let quota = RoomQuota::default();
    let (mut from, mut to) = (shard(&quota, 10), shard(&quota, 10));
    let conn = from.open(7);
    let opened = from.now.mono;
    from.advance(Duration::from_secs(8));
    // Its join is for a room of the other shard.
    from.hub.moved_out(conn);
    to.now = from.now;
    to.hub.open_since(conn, opened, to.now);
    assert_eq!(from.hub.connections(), 0, "forgotten where it was");
    from.advance(Duration::from_secs(5));
    assert!(from.take(conn).is_empty() && !from.closed.contains_key(&conn), "no word from the old shard");
    // 10 s after it connected, not after it moved.
    to.advance(Duration::from_secs(2));
    assert_eq!(to.closed.get(&conn), Some(&CloseReason::Error(ErrorCode::JoinTimeout)));
}

#[test]
fn a_joined_connection_is_never_forgotten_by_a_move() {
    let mut s = shard(&RoomQuota::default(), 10);
    let (a, _) = s.join(1, "alpha", "A");
    s.hub.moved_out(a);
    s.send(a, r#"{"type":"chat","client_id":"c1","text":"still here"}"#);
    assert!(s.take(a).iter().any(|m| matches!(m, ServerMessage::Chat(_))));
    assert_eq!(s.hub.connections(), 1);
}

#[test]
fn an_evicted_room_tells_its_members_to_go_and_leaves_nothing_behind() {
    use switchboard_protocol::LeaveReason;
    let quota = RoomQuota::default();
    let mut s = shard(&quota, 10);
    let (a, _) = s.join(1, "moving", "A");
    let (b, _) = s.join(2, "moving", "B");
    let (c, _) = s.join(3, "staying", "C");
    // B's connection drops: its seat is held for a resume.
    s.disconnect(b, LeaveReason::Disconnected);
    s.take(a);
    let notice =
        switchboard_protocol::GoingAway { reason: "room moved".into(), retry_after_ms: 500, reconnect_url: None };
    s.hub.evict_room(&switchboard_protocol::RoomName::new("moving").expect("room"), &notice, s.now);
    let outputs: Vec<switchboard_core::Output> = std::iter::from_fn(|| s.hub.poll_output()).collect();
    assert!(
        outputs.iter().any(|o| matches!(o, switchboard_core::Output::Send { msg: ServerMessage::GoingAway(_), .. })),
        "{outputs:?}"
    );
    assert!(outputs.contains(&switchboard_core::Output::Close { conn: a, reason: CloseReason::GoingAway }));
    assert!(outputs.contains(&switchboard_core::Output::RoomEnded {
        room: switchboard_protocol::RoomName::new("moving").expect("room")
    }));
    assert_eq!((s.hub.rooms(), s.hub.peers(), s.hub.away(), quota.taken()), (1, 1, 0, 1), "only C's room is left");
    s.hub.check_invariants().expect("invariants");
    s.send(c, r#"{"type":"chat","client_id":"x","text":"unaffected"}"#);
    assert!(s.take(c).iter().any(|m| matches!(m, ServerMessage::Chat(_))));
}

#[test]
fn every_join_gets_one_answer_after_its_welcome_or_refusal_and_a_probed_resume_gets_it_late() {
    use switchboard_protocol::LeaveReason;
    let limits = Limits { max_peers_per_room: 1, ..Limits::default() };
    let mut s = Sim::new(HubConfig { limits, ..HubConfig::default() });
    let (a, wa) = s.join(1, "full", "A");
    assert_eq!(s.join_answers, [(a, true)]);
    // A refusal, then a message that is no join: one answer, for the join.
    let b = s.open(2);
    s.send(b, r#"{"type":"join","room":"full","name":"B"}"#);
    s.send(b, r#"{"type":"ping"}"#);
    assert_eq!(s.join_answers, [(a, true), (b, false)]);
    // A joined connection's second join is no join to answer.
    s.send(a, r#"{"type":"join","room":"other","name":"A"}"#);
    assert_eq!(s.join_answers.len(), 2);
    // A resume of a live-looking session waits for the probe: answered when
    // the old connection proves dead.
    let c = s.open(3);
    s.send(
        c,
        &format!(
            r#"{{"type":"join","room":"full","name":"A","resume":{{"token":"{}","received":0}}}}"#,
            wa.resume_token
        ),
    );
    assert_eq!(s.join_answers.len(), 2, "owed while the probe is out");
    s.disconnect(a, LeaveReason::Disconnected);
    assert_eq!(s.join_answers.last(), Some(&(c, true)));
    // Answers come after the welcome they settle.
    let last_two: Vec<&switchboard_core::Output> = s.last.iter().rev().take(2).collect();
    assert!(matches!(last_two[0], switchboard_core::Output::JoinAnswered { .. }), "{:?}", s.last);
}

fn durable() -> Sim {
    Sim::new(HubConfig { durable_chat: true, ..HubConfig::default() })
}

fn chats(msgs: &[ServerMessage]) -> Vec<(u64, String)> {
    msgs.iter()
        .filter_map(|m| if let ServerMessage::Chat(c) = m { Some((c.seq, c.text.clone())) } else { None })
        .collect()
}

fn stores(s: &Sim) -> Vec<u64> {
    s.last
        .iter()
        .filter_map(
            |o| if let switchboard_core::Output::StoreChat { message, .. } = o { Some(message.seq) } else { None },
        )
        .collect()
}

#[test]
fn durable_chat_is_echoed_only_once_stored_and_in_order() {
    let mut s = durable();
    let (a, _) = s.join(1, "room", "A");
    let (b, _) = s.join(2, "room", "B");
    s.take(a);
    s.send(a, r#"{"type":"chat","client_id":"c1","text":"one"}"#);
    assert_eq!(stores(&s), [1]);
    s.send(b, r#"{"type":"chat","client_id":"c2","text":"two"}"#);
    assert_eq!(stores(&s), [2]);
    assert!(chats(&s.take(a)).is_empty() && chats(&s.take(b)).is_empty(), "nothing echoed before it is stored");
    let room = switchboard_protocol::RoomName::new("room").expect("room");
    s.hub.chat_stored(&room, 1, true, s.now);
    s.hub.chat_stored(&room, 2, true, s.now);
    while let Some(out) = s.hub.poll_output() {
        if let switchboard_core::Output::Send { to, msg, .. } = out {
            for conn in to.as_slice() {
                s.inbox.entry(*conn).or_default().push(msg.clone());
            }
        }
    }
    assert_eq!(chats(&s.take(a)), [(1, "one".into()), (2, "two".into())]);
    assert_eq!(chats(&s.take(b)), [(1, "one".into()), (2, "two".into())]);
}

#[test]
fn chat_that_could_not_be_stored_is_refused_with_what_came_after_it_and_seq_has_no_gap() {
    let mut s = durable();
    let (a, _) = s.join(1, "room", "A");
    let room = switchboard_protocol::RoomName::new("room").expect("room");
    s.send(a, r#"{"type":"chat","id":"x","client_id":"c1","text":"one"}"#);
    s.send(a, r#"{"type":"chat","id":"y","client_id":"c2","text":"two"}"#);
    s.hub.chat_stored(&room, 1, false, s.now);
    let errors: Vec<ErrorCode> = std::iter::from_fn(|| s.hub.poll_output())
        .filter_map(|o| match o {
            switchboard_core::Output::Send { msg: ServerMessage::Error(e), .. } => Some(e.code),
            _ => None,
        })
        .collect();
    assert_eq!(errors, [ErrorCode::Unavailable, ErrorCode::Unavailable], "both refused, the second unstored too");
    // An answer for the second, given up already, changes nothing.
    s.hub.chat_stored(&room, 2, true, s.now);
    assert!(s.hub.poll_output().is_none());
    // Sent again (same client id: not taken for a resend), it is seq 1.
    s.send(a, r#"{"type":"chat","client_id":"c1","text":"one"}"#);
    assert_eq!(stores(&s), [1]);
}

#[test]
fn a_room_made_after_a_seed_continues_its_chat_and_seq() {
    let mut s = durable();
    let seeded: Vec<switchboard_protocol::ChatMessage> = (41..=43)
        .map(|seq| switchboard_protocol::ChatMessage {
            seq,
            ts: 1000 + seq,
            from: switchboard_protocol::PeerId::new("pOLD").expect("id"),
            name: switchboard_protocol::DisplayName::new("Old").expect("name"),
            client_id: switchboard_protocol::ClientMsgId::new(format!("old{seq}")).expect("id"),
            text: format!("before {seq}"),
        })
        .collect();
    s.hub.seed_chat(switchboard_protocol::RoomName::new("room").expect("room"), seeded);
    let (a, welcome) = s.join(1, "room", "A");
    assert_eq!(welcome.chat_seq, 43);
    assert_eq!(welcome.chat.iter().map(|m| m.seq).collect::<Vec<_>>(), [41, 42, 43]);
    s.send(a, r#"{"type":"chat","client_id":"c1","text":"after"}"#);
    assert_eq!(stores(&s), [44]);
}

#[test]
fn chat_past_the_pending_limit_is_refused_without_a_number() {
    let mut s = durable();
    let (a, _) = s.join(1, "room", "A");
    let room = switchboard_protocol::RoomName::new("room").expect("room");
    let limit = switchboard_core::MAX_PENDING_CHAT;
    for i in 0..limit {
        s.send(a, &format!(r#"{{"type":"chat","client_id":"c{i}","text":"m{i}"}}"#));
    }
    s.take(a);
    s.send(a, r#"{"type":"chat","id":"over","client_id":"over","text":"one too many"}"#);
    assert_eq!(error_code(&s.take(a)), Some(ErrorCode::Unavailable));
    assert!(stores(&s).is_empty(), "not numbered, not handed to the store");
    // Once the first is stored, there is room again, and the refused one,
    // sent again with its client id, is numbered after the pending ones.
    s.hub.chat_stored(&room, 1, true, s.now);
    while s.hub.poll_output().is_some() {}
    s.send(a, r#"{"type":"chat","client_id":"over","text":"one too many"}"#);
    assert_eq!(stores(&s), [u64::try_from(limit).expect("small") + 1]);
}

#[test]
fn a_history_page_older_than_memory_is_asked_of_the_durable_store() {
    let limits = Limits { chat_history: 3, ..Limits::default() };
    let mut s = Sim::new(HubConfig { limits, durable_chat: true, ..HubConfig::default() });
    let (a, _) = s.join(1, "room", "A");
    let room = switchboard_protocol::RoomName::new("room").expect("room");
    for i in 1..=5u64 {
        s.send(a, &format!(r#"{{"type":"chat","client_id":"c{i}","text":"m{i}"}}"#));
        s.hub.chat_stored(&room, i, true, s.now);
        while s.hub.poll_output().is_some() {}
    }
    // Memory holds 3..5: the newest page is answered from it.
    s.send(a, r#"{"type":"chat_history","id":"new","limit":2}"#);
    assert!(s.take(a).iter().any(|m| matches!(m, ServerMessage::ChatHistory(p) if p.messages.len() == 2)));
    // An older one goes to the store, with memory's answer as the fallback.
    s.send(a, r#"{"type":"chat_history","id":"old","before":4,"limit":2}"#);
    let asked = s.last.iter().find_map(|o| match o {
        switchboard_core::Output::LoadHistory { before, limit, fallback, .. } => {
            Some((*before, *limit, fallback.messages.len()))
        }
        _ => None,
    });
    assert_eq!(asked, Some((Some(4), 2, 1)), "{:?}", s.last);
    assert!(s.take(a).is_empty(), "the reply comes from the store");
}
