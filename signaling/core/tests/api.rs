//! What the server API reads about rooms (decision 0020): pages of rooms
//! in name order, and one room's members with when they joined.

mod common;

use common::Sim;
use std::time::Duration;
use switchboard_core::HubConfig;
use switchboard_protocol::{LeaveReason, RoomMode, RoomName};

fn room(name: &str) -> RoomName {
    RoomName::new(name).expect("room name")
}

#[test]
fn rooms_are_listed_in_name_order_a_page_at_a_time() {
    let mut s = Sim::new(HubConfig::default());
    for (i, name) in ["gamma", "alpha", "delta", "beta"].iter().enumerate() {
        s.join(i as u64 + 1, name, "x");
    }
    let names = |page: &[switchboard_core::RoomSummary]| page.iter().map(|r| r.name.to_string()).collect::<Vec<_>>();
    let first = s.hub.list_rooms(None, 3);
    assert_eq!(names(&first), ["alpha", "beta", "delta"]);
    let next = s.hub.list_rooms(Some(&first[2].name), 3);
    assert_eq!(names(&next), ["gamma"], "the page after the last name");
    assert!(s.hub.list_rooms(Some(&room("gamma")), 3).is_empty());
    assert!(s.hub.list_rooms(Some(&room("zzz")), 3).is_empty(), "a name past every room");
    assert_eq!(names(&s.hub.list_rooms(Some(&room("b")), 1)), ["beta"], "any name works as a cursor");
}

#[test]
fn a_rooms_detail_has_its_members_when_they_joined_who_is_reconnecting_and_its_chat_seq() {
    let mut s = Sim::new(HubConfig::default());
    let made = s.now.unix_ms;
    let (ada, _) = s.join(1, "call", "Ada");
    s.advance(Duration::from_secs(2));
    let (bob, wb) = s.join(2, "call", "Bob");
    s.send(ada, r#"{"type":"chat","client_id":"c1","text":"hi"}"#);
    s.disconnect(bob, LeaveReason::Disconnected);
    let detail = s.hub.room_detail(&room("call")).expect("the room");
    assert_eq!(detail.summary.mode, RoomMode::Mesh);
    assert_eq!((detail.summary.participants, detail.summary.chat_seq), (2, 1));
    assert_eq!(detail.summary.created_unix_ms, made);
    let members: Vec<(&str, u64, bool)> =
        detail.members.iter().map(|m| (m.info.name.as_str(), m.joined_unix_ms, m.info.reconnecting)).collect();
    assert_eq!(members, [("Ada", made, false), ("Bob", made + 2000, true)]);
    assert_eq!(detail.members[1].info.id, wb.you.id);
    assert_eq!(s.hub.list_rooms(None, 10)[0], detail.summary);
    assert!(s.hub.room_detail(&room("nowhere")).is_none());
    assert!(s.hub.poll_output().is_none(), "queries say nothing");
}

#[test]
fn a_room_moved_to_another_hub_keeps_when_it_was_made_and_when_its_members_joined() {
    let mut old = Sim::new(HubConfig::default());
    old.join(1, "call", "Ada");
    let before = old.hub.room_detail(&room("call")).expect("the room");
    let notice = switchboard_protocol::GoingAway { reason: "moving".into(), reconnect_url: None, retry_after_ms: 250 };
    let snapshot = old.hub.hand_over(&room("call"), &notice, old.now).expect("hands over");
    let mut new = Sim::new(HubConfig::default());
    new.advance(Duration::from_secs(30));
    new.hub.import_room(snapshot, new.now).expect("imports");
    let after = new.hub.room_detail(&room("call")).expect("the room");
    assert_eq!(after.summary.created_unix_ms, before.summary.created_unix_ms);
    assert_eq!(after.members[0].joined_unix_ms, before.members[0].joined_unix_ms);
}
