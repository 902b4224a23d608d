//! Moving a room between hubs: `export_room` then `import_room` is
//! invisible (property-tested against a hub where the room never moved),
//! and a draining hub's `hand_over` lets every member resume on the new
//! hub with every event it missed, with nobody seeing a leave.

mod common;

use common::Sim;
use proptest::prelude::*;
use std::time::Duration;
use switchboard_core::snapshot::{ImportError, RoomSnapshot, SNAPSHOT_VERSION};
use switchboard_core::{ConnId, HubConfig, Limits, Output};
use switchboard_protocol::{GoingAway, LeaveReason, RoomName, ServerMessage};

const ROOMS: [&str; 2] = ["r0", "r1"];
const CLIENTS: usize = 6;

fn room(name: &str) -> RoomName {
    RoomName::new(name).expect("room name")
}

/// Through the bytes a shell would send to another node.
fn round_trip(snapshot: &RoomSnapshot) -> RoomSnapshot {
    let json = serde_json::to_string(snapshot).expect("serializes");
    let back: RoomSnapshot = serde_json::from_str(&json).expect("parses");
    assert_eq!(&back, snapshot, "the JSON round trip changes nothing");
    back
}

fn resume_json(room: &str, token: &str, received: u64) -> String {
    format!(r#"{{"type":"join","room":"{room}","name":"x","resume":{{"token":"{token}","received":{received}}}}}"#)
}

#[derive(Debug, Clone)]
enum Op {
    Join(usize, usize),
    Chat(usize),
    /// The client's last chat again, with the same client id (a resend
    /// after a resume).
    Resend(usize),
    Relay(usize, usize),
    Typing(usize, bool),
    Read(usize, u64),
    Media(usize, bool),
    Leave(usize),
    Drop(usize),
    Resume(usize),
    Ack(usize),
    Advance(u64),
    Move(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..CLIENTS;
    prop_oneof![
        3 => (c.clone(), 0..ROOMS.len()).prop_map(|(c, r)| Op::Join(c, r)),
        3 => c.clone().prop_map(Op::Chat),
        1 => c.clone().prop_map(Op::Resend),
        3 => (c.clone(), 0..CLIENTS).prop_map(|(a, b)| Op::Relay(a, b)),
        1 => (c.clone(), any::<bool>()).prop_map(|(a, t)| Op::Typing(a, t)),
        1 => (c.clone(), 0..10u64).prop_map(|(a, s)| Op::Read(a, s)),
        1 => (c.clone(), any::<bool>()).prop_map(|(a, m)| Op::Media(a, m)),
        1 => c.clone().prop_map(Op::Leave),
        2 => c.clone().prop_map(Op::Drop),
        2 => c.clone().prop_map(Op::Resume),
        1 => c.clone().prop_map(Op::Ack),
        2 => (0..25_000u64).prop_map(Op::Advance),
        3 => (0..ROOMS.len()).prop_map(Op::Move),
    ]
}

/// One client as it sees itself.
#[derive(Default, Clone)]
struct Client {
    conn: Option<ConnId>,
    room: Option<usize>,
    peer: Option<String>,
    token: Option<String>,
    received: u64,
}

struct Pair {
    /// The room never moves here.
    still: Sim,
    /// Here it is exported and imported whenever the ops say so.
    moved: Sim,
}

impl Pair {
    fn both(&mut self, f: impl Fn(&mut Sim)) {
        f(&mut self.still);
        f(&mut self.moved);
        let still: Vec<String> = self.still.last.iter().map(|o| format!("{o:?}")).collect();
        let moved: Vec<String> = self.moved.last.iter().map(|o| format!("{o:?}")).collect();
        assert_eq!(still, moved, "the moved room answers as the one that stayed");
    }
}

fn config() -> HubConfig {
    let limits = Limits { replay_buffer: 16, max_peers_per_room: 4, held_relays_per_sender: 3, ..Limits::default() };
    HubConfig { limits, ..HubConfig::default() }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Export then import then any input gives the same outputs as no
    /// handover: joins, relays, chat, presence, drops and resumes (with
    /// their replays), acknowledgements, deadlines of every kind.
    #[test]
    fn an_exported_and_imported_room_behaves_as_if_it_never_moved(ops in proptest::collection::vec(op(), 1..150)) {
        let mut pair = Pair { still: Sim::new(config()), moved: Sim::new(config()) };
        let mut clients = vec![Client::default(); CLIENTS];
        let mut next_conn = 1u64;
        let mut chats = 0u64;
        let mut moves = 0;
        for op in &ops {
            match *op {
                Op::Join(i, r) => if clients[i].conn.is_none() && clients[i].token.is_none() {
                    let conn = next_conn;
                    next_conn += 1;
                    pair.both(|s| { s.open(conn); });
                    pair.both(|s| s.send(ConnId(conn), &format!(r#"{{"type":"join","room":"{}","name":"n{i}"}}"#, ROOMS[r])));
                    clients[i].conn = Some(ConnId(conn));
                    clients[i].room = Some(r);
                }
                Op::Chat(i) => if let Some(conn) = clients[i].conn {
                    chats += 1;
                    pair.both(|s| s.send(conn, &format!(r#"{{"type":"chat","client_id":"c{chats}","text":"t"}}"#)));
                }
                Op::Resend(i) => if let Some(conn) = clients[i].conn {
                    let last = chats;
                    pair.both(|s| s.send(conn, &format!(r#"{{"type":"chat","client_id":"c{last}","text":"t"}}"#)));
                }
                Op::Relay(a, b) => if let Some(conn) = clients[a].conn {
                    let to = clients[b].peer.clone().unwrap_or_else(|| "pnobody".into());
                    pair.both(|s| s.send(conn, &format!(r#"{{"type":"candidate","to":"{to}","candidate":{{"candidate":"x"}}}}"#)));
                }
                Op::Typing(i, on) => if let Some(conn) = clients[i].conn {
                    pair.both(|s| s.send(conn, &format!(r#"{{"type":"typing","active":{on}}}"#)));
                }
                Op::Read(i, seq) => if let Some(conn) = clients[i].conn {
                    pair.both(|s| s.send(conn, &format!(r#"{{"type":"read","seq":{seq}}}"#)));
                }
                Op::Media(i, m) => if let Some(conn) = clients[i].conn {
                    pair.both(|s| s.send(conn, &format!(r#"{{"type":"media","mic_muted":{m},"camera_muted":false}}"#)));
                }
                Op::Leave(i) => if let Some(conn) = clients[i].conn.take() {
                    pair.both(|s| s.send(conn, r#"{"type":"leave"}"#));
                    clients[i] = Client::default();
                }
                Op::Drop(i) => if let Some(conn) = clients[i].conn.take() {
                    pair.both(|s| s.disconnect(conn, LeaveReason::Disconnected));
                }
                Op::Resume(i) => if let (None, Some(token), Some(r)) = (clients[i].conn, clients[i].token.clone(), clients[i].room) {
                    let conn = next_conn;
                    next_conn += 1;
                    let received = clients[i].received;
                    pair.both(|s| { s.open(conn); });
                    pair.both(|s| s.send(ConnId(conn), &resume_json(ROOMS[r], &token, received)));
                    clients[i].conn = Some(ConnId(conn));
                }
                Op::Ack(i) => if let Some(conn) = clients[i].conn {
                    let ack = clients[i].received;
                    pair.both(|s| s.send(conn, &format!(r#"{{"type":"ping","ack":{ack}}}"#)));
                }
                Op::Advance(ms) => pair.both(|s| s.advance(Duration::from_millis(ms))),
                Op::Move(r) => {
                    let now = pair.moved.now;
                    if let Ok(snapshot) = pair.moved.hub.export_room(&room(ROOMS[r]), now) {
                        prop_assert!(pair.moved.hub.poll_output().is_none(), "an export says nothing");
                        pair.moved.hub.import_room(round_trip(&snapshot), now).expect("imports");
                        prop_assert!(pair.moved.hub.poll_output().is_none(), "nor does an import");
                        moves += 1;
                    }
                }
            }
            // What each client read, from the hub where nothing moved (the
            // other answered the same, or `both` has failed).
            for c in clients.iter_mut() {
                let Some(conn) = c.conn else { continue };
                pair.moved.take(conn);
                for m in pair.still.take(conn) {
                    if m.kind().is_event() { c.received += 1; }
                    match m {
                        ServerMessage::Welcome(w) => {
                            if !w.resumed { c.received = 0; }
                            c.peer = Some(w.you.id.to_string());
                            c.token = Some(w.resume_token.clone());
                        }
                        ServerMessage::Error(e) if e.fatal || e.code == switchboard_protocol::ErrorCode::ResumeFailed => {
                            *c = Client::default();
                        }
                        _ => {}
                    }
                }
                if pair.still.closed.contains_key(&conn) {
                    c.conn = None;
                }
            }
            prop_assert!(pair.moved.hub.check_invariants().is_ok(), "{:?}", pair.moved.hub.check_invariants());
            prop_assert_eq!(pair.still.hub.rooms(), pair.moved.hub.rooms());
            prop_assert_eq!(pair.still.hub.peers(), pair.moved.hub.peers());
            prop_assert_eq!(pair.still.hub.away(), pair.moved.hub.away());
            prop_assert_eq!(pair.still.hub.replay_bytes(), pair.moved.hub.replay_bytes());
            // What the server API reads is the same too (when rooms were
            // made, when members joined, who is reconnecting).
            prop_assert_eq!(pair.still.hub.list_rooms(None, 10), pair.moved.hub.list_rooms(None, 10));
            for name in ROOMS {
                prop_assert_eq!(pair.still.hub.room_detail(&room(name)), pair.moved.hub.room_detail(&room(name)));
            }
        }
        let _ = moves;
    }
}

fn events(msgs: &[ServerMessage]) -> u64 {
    msgs.iter().filter(|m| m.kind().is_event()).count() as u64
}

fn notice() -> GoingAway {
    GoingAway { reason: "this server is draining".into(), reconnect_url: None, retry_after_ms: 200 }
}

#[test]
fn members_handed_over_resume_on_the_new_hub_with_what_they_missed_and_nobody_sees_them_go() {
    let mut old = Sim::new(HubConfig::default());
    let (a, wa) = old.join(1, "call", "Ada");
    let (b, wb) = old.join(2, "call", "Grace");
    old.send(a, r#"{"type":"chat","client_id":"c1","text":"before"}"#);
    let mut got_a = events(&old.take(a));
    let mut got_b = events(&old.take(b));
    // Grace has read one event less than was sent to her.
    got_b -= 1;

    let snapshot = old.hub.hand_over(&room("call"), &notice(), old.now).expect("hands over");
    old.drain();
    for conn in [a, b] {
        assert!(matches!(old.take(conn).as_slice(), [ServerMessage::GoingAway(_)]), "told to go");
        assert_eq!(old.closed.get(&conn), Some(&switchboard_core::CloseReason::GoingAway));
    }
    assert_eq!(old.hub.rooms(), 0, "the old hub forgot the room");
    assert_eq!(old.hub.peers(), 0);
    assert!(old.hub.check_invariants().is_ok());

    // Another process: its own clock and entropy.
    let mut new = Sim::new(HubConfig::default());
    new.advance(Duration::from_secs(1));
    new.hub.import_room(round_trip(&snapshot), new.now).expect("imports");
    assert_eq!((new.hub.rooms(), new.hub.peers(), new.hub.away()), (1, 2, 2));
    assert!(new.hub.check_invariants().is_ok(), "{:?}", new.hub.check_invariants());

    // A join that was on its way to the old hub is told to join again
    // (it then reaches the new one), rather than making the room anew.
    let late = old.open(7);
    old.send(late, &resume_json("call", &wa.resume_token, got_a));
    assert!(
        matches!(old.take(late).as_slice(), [ServerMessage::Error(e)] if e.code == switchboard_protocol::ErrorCode::Unavailable),
        "a resume reaching the old hub is asked to come again"
    );
    old.send(late, r#"{"type":"join","room":"call","name":"Late"}"#);
    assert!(
        matches!(old.take(late).as_slice(), [ServerMessage::Error(e)] if e.code == switchboard_protocol::ErrorCode::Unavailable),
        "so is a fresh join"
    );
    assert_eq!(old.hub.rooms(), 0);

    // Ada comes back first and chats; Grace is still on her way.
    let a2 = new.open(10);
    new.send(a2, &resume_json("call", &wa.resume_token, got_a));
    let msgs = new.take(a2);
    match msgs.as_slice() {
        [ServerMessage::Welcome(w)] => assert!(w.resumed && w.you.id == wa.you.id && w.replayed == 0),
        other => panic!("expected a bare resumed welcome, got {other:?}"),
    }
    new.send(a2, r#"{"type":"chat","client_id":"c2","text":"after"}"#);
    got_a += events(&new.take(a2));
    assert_eq!(got_a, 3, "the welcome's join event, the first chat, the second");

    let b2 = new.open(11);
    new.send(b2, &resume_json("call", &wb.resume_token, got_b));
    let msgs = new.take(b2);
    let texts: Vec<&str> = msgs
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Chat(c) => Some(c.text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["before", "after"], "the one she missed before the move, and the one during it");
    assert!(
        !msgs.iter().any(|m| matches!(m, ServerMessage::PeerLeft(_) | ServerMessage::PeerUpdated(_))),
        "nobody saw anyone go or come back: {msgs:?}"
    );
    assert!(new.take(a2).is_empty(), "Ada is not told Grace came back: she never saw her go");
    assert!(new.hub.check_invariants().is_ok());
    assert_eq!(new.hub.away(), 0);
}

#[test]
fn a_member_who_never_comes_back_leaves_after_the_grace_on_the_new_hub() {
    let mut old = Sim::new(HubConfig::default());
    let (_, wa) = old.join(1, "call", "Ada");
    let (_, wb) = old.join(2, "call", "Grace");
    let snapshot = old.hub.hand_over(&room("call"), &notice(), old.now).expect("hands over");
    let mut new = Sim::new(HubConfig::default());
    new.hub.import_room(round_trip(&snapshot), new.now).expect("imports");
    let a = new.open(5);
    new.send(a, &resume_json("call", &wa.resume_token, 1));
    new.take(a);
    new.advance(Limits::default().resume_grace);
    match new.take(a).as_slice() {
        [ServerMessage::PeerLeft(left)] => {
            assert_eq!(left.peer_id, wb.you.id);
            assert_eq!(left.reason, LeaveReason::Timeout);
        }
        other => panic!("expected Grace to time out, got {other:?}"),
    }
}

#[test]
fn chat_waiting_for_storage_is_stored_again_by_the_new_hub_and_echoed_once() {
    let durable = || HubConfig { durable_chat: true, ..HubConfig::default() };
    let mut old = Sim::new(durable());
    let (a, wa) = old.join(1, "call", "Ada");
    old.take(a);
    old.send(a, r#"{"type":"chat","client_id":"c1","text":"in flight"}"#);
    assert!(old.last.iter().any(|o| matches!(o, Output::StoreChat { .. })));
    let snapshot = old.hub.hand_over(&room("call"), &notice(), old.now).expect("hands over");
    old.drain();
    old.hub.chat_stored(&room("call"), 1, true, old.now);
    assert!(old.hub.poll_output().is_none(), "a late answer to the old hub does nothing");

    let mut new = Sim::new(durable());
    new.hub.import_room(round_trip(&snapshot), new.now).expect("imports");
    let stores: Vec<u64> = std::iter::from_fn(|| new.hub.poll_output())
        .filter_map(|o| match o {
            Output::StoreChat { message, .. } => Some(message.seq),
            _ => None,
        })
        .collect();
    assert_eq!(stores, [1], "stored again (storage is idempotent by seq)");
    new.hub.chat_stored(&room("call"), 1, true, new.now);
    let a2 = new.open(3);
    new.send(a2, &resume_json("call", &wa.resume_token, 0));
    let chats: Vec<u64> = new
        .take(a2)
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Chat(c) => Some(c.seq),
            _ => None,
        })
        .collect();
    assert_eq!(chats, [1], "echoed once, in the replay");
    // The resent copy (the client never saw the echo before the move) is
    // recognised by its client id.
    new.send(a2, r#"{"type":"chat","client_id":"c1","text":"in flight"}"#);
    assert!(new.last.is_empty(), "{:?}", new.last);
}

#[test]
fn an_import_is_refused_for_an_unknown_version_a_room_that_exists_or_a_broken_snapshot() {
    let mut old = Sim::new(HubConfig::default());
    old.join(1, "call", "Ada");
    let snapshot = old.hub.hand_over(&room("call"), &notice(), old.now).expect("hands over");
    let mut new = Sim::new(HubConfig::default());
    let newer = RoomSnapshot { version: SNAPSHOT_VERSION + 1, ..snapshot.clone() };
    assert_eq!(new.hub.import_room(newer, new.now), Err(ImportError::Version(SNAPSHOT_VERSION + 1)));
    let mut broken = snapshot.clone();
    broken.members[0].order = broken.next_order;
    assert!(matches!(new.hub.import_room(broken, new.now), Err(ImportError::Invalid(_))));
    new.join(1, "call", "Someone");
    assert_eq!(new.hub.import_room(snapshot, new.now), Err(ImportError::RoomExists));
    assert!(new.hub.check_invariants().is_ok());
}

#[test]
fn a_hand_over_needs_resume() {
    let limits = Limits { resume_grace: Duration::ZERO, ..Limits::default() };
    let mut old = Sim::new(HubConfig { limits, ..HubConfig::default() });
    old.join(1, "call", "Ada");
    assert_eq!(
        old.hub.hand_over(&room("call"), &notice(), old.now).err(),
        Some(switchboard_core::snapshot::ExportError::ResumeOff)
    );
    assert_eq!(old.hub.rooms(), 1, "the room stays");
}

#[test]
fn an_sfu_rooms_sfu_stays_behind_and_the_new_hub_asks_for_another_at_once() {
    use switchboard_core::{Claims, TokenVerifier, mint_token};
    use switchboard_protocol::{Role, RoomMode};
    const SFU_SECRET: &[u8] = b"sfu-secret-sfu-secret-sfu-secret-0";
    let config = || HubConfig {
        room_mode: RoomMode::Sfu,
        sfu_verifier: Some(TokenVerifier::new(SFU_SECRET)),
        ..HubConfig::default()
    };
    let mut old = Sim::new(config());
    let (a, wa) = old.join(1, "sfu", "Ada");
    assert_eq!(old.sfu_wanted, ["sfu"]);
    let sfu = old.open(2);
    let claims = Claims {
        room: "sfu".into(),
        sub: "sfu".into(),
        exp: old.now.unix_ms / 1000 + 60,
        role: Role::Sfu,
        ..Claims::default()
    };
    let token = mint_token(SFU_SECRET, &claims);
    old.send(sfu, &format!(r#"{{"type":"join","room":"sfu","name":"SFU","role":"sfu","token":"{token}"}}"#));
    let sfu_id = match old.take(sfu).first() {
        Some(ServerMessage::Welcome(w)) => w.you.id.clone(),
        other => panic!("the SFU joins: {other:?}"),
    };
    let got_a = events(&old.take(a));

    let snapshot = old.hub.hand_over(&room("sfu"), &notice(), old.now).expect("hands over");
    old.drain();
    assert!(matches!(old.take(sfu).as_slice(), [ServerMessage::GoingAway(_)]), "the SFU is told to go too");
    assert_eq!(snapshot.members.len(), 1, "the SFU's seat stays behind");

    let mut new = Sim::new(config());
    new.hub.import_room(round_trip(&snapshot), new.now).expect("imports");
    new.drain();
    assert_eq!(new.sfu_wanted, ["sfu"], "a new SFU is asked for at once");
    let a2 = new.open(5);
    new.send(a2, &resume_json("sfu", &wa.resume_token, got_a));
    let msgs = new.take(a2);
    assert!(matches!(msgs.first(), Some(ServerMessage::Welcome(w)) if w.resumed), "{msgs:?}");
    assert!(
        msgs.iter().any(
            |m| matches!(m, ServerMessage::PeerLeft(l) if l.peer_id == sfu_id && l.reason == LeaveReason::Shutdown)
        ),
        "Ada learns the old SFU is gone: {msgs:?}"
    );
    assert!(new.hub.check_invariants().is_ok());
}

#[test]
fn a_quietly_held_member_whose_resume_fails_is_shown_reconnecting_rather_than_present() {
    let mut old = Sim::new(HubConfig::default());
    let (_, wa) = old.join(1, "call", "Ada");
    let (_, wb) = old.join(2, "call", "Bob");
    let snapshot = old.hub.hand_over(&room("call"), &notice(), old.now).expect("hands over");
    let mut new = Sim::new(HubConfig::default());
    new.hub.import_room(round_trip(&snapshot), new.now).expect("imports");
    let a = new.open(5);
    new.send(a, &resume_json("call", &wa.resume_token, 1));
    assert!(matches!(new.take(a).first(), Some(ServerMessage::Welcome(w)) if w.resumed));
    // Bob's client names a position the server never reached: it must join
    // afresh; its old seat is no longer shown as present.
    let b = new.open(6);
    new.send(b, &resume_json("call", &wb.resume_token, 99));
    assert!(
        matches!(new.take(b).as_slice(), [ServerMessage::Error(e)] if e.code == switchboard_protocol::ErrorCode::ResumeFailed)
    );
    match new.take(a).as_slice() {
        [ServerMessage::PeerUpdated(u)] => assert!(u.peer.id == wb.you.id && u.peer.reconnecting),
        other => panic!("Ada sees Bob reconnecting: {other:?}"),
    }
    assert!(new.hub.check_invariants().is_ok(), "{:?}", new.hub.check_invariants());
}
