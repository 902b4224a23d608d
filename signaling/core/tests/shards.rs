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
