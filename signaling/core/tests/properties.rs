//! Property tests: random sequences of joins, leaves, drops, relays, chat,
//! typing and time, checked against the room invariants after every step.

mod common;

use common::Sim;
use proptest::prelude::*;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use switchboard_core::{ConnId, HubConfig, Limits, Output};
use switchboard_protocol::{
    LeaveReason, PeerId, PeerJoined, PeerLeft, PeerUpdated, ReadNotice, RelayedCandidate, RelayedDescription,
    RelayedEndOfCandidates, ServerMessage, TypingNotice,
};

const CONNS: u64 = 6;
const ROOMS: [&str; 3] = ["r0", "r1", "r2"];

#[derive(Debug, Clone)]
enum Op {
    Join(u64, usize),
    Leave(u64),
    Drop(u64),
    Relay(u64, u64),
    Chat(u64),
    Typing(u64, bool),
    Read(u64, u64),
    Media(u64, bool),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..CONNS;
    prop_oneof![
        3 => (c.clone(), 0..ROOMS.len()).prop_map(|(c, r)| Op::Join(c, r)),
        1 => c.clone().prop_map(Op::Leave),
        1 => c.clone().prop_map(Op::Drop),
        3 => (c.clone(), 0..CONNS).prop_map(|(a, b)| Op::Relay(a, b)),
        3 => c.clone().prop_map(Op::Chat),
        2 => (c.clone(), any::<bool>()).prop_map(|(a, b)| Op::Typing(a, b)),
        1 => (c.clone(), 0..20u64).prop_map(|(a, s)| Op::Read(a, s)),
        1 => (c.clone(), any::<bool>()).prop_map(|(a, m)| Op::Media(a, m)),
        2 => (0..8000u64).prop_map(Op::Advance),
    ]
}

/// What the test knows independently of the hub.
#[derive(Default)]
struct Model {
    /// conn -> (room index, peer id) for joined connections.
    joined: HashMap<u64, (usize, PeerId)>,
    /// Every peer id ever seen -> its room.
    peer_room: HashMap<PeerId, usize>,
    /// conn -> the peers it believes are in its room (from welcome/joined/left).
    view: HashMap<u64, BTreeSet<PeerId>>,
    /// conn -> last chat seq it received.
    last_seq: HashMap<u64, u64>,
    /// Connections opened and not yet closed.
    open: BTreeSet<u64>,
    /// Next conn number for reopened slots.
    generation: HashMap<u64, u64>,
    /// Chat messages sent, for unique client ids.
    chats: u64,
}

fn conn_id(model: &Model, slot: u64) -> ConnId {
    ConnId(slot + 100 * model.generation.get(&slot).copied().unwrap_or(0))
}

fn room_peer(msg: &ServerMessage) -> Option<&PeerId> {
    match msg {
        ServerMessage::PeerJoined(PeerJoined { peer }) | ServerMessage::PeerUpdated(PeerUpdated { peer }) => {
            Some(&peer.id)
        }
        ServerMessage::PeerLeft(PeerLeft { peer_id, .. }) => Some(peer_id),
        ServerMessage::Offer(RelayedDescription { from, .. })
        | ServerMessage::Answer(RelayedDescription { from, .. })
        | ServerMessage::Candidate(RelayedCandidate { from, .. })
        | ServerMessage::EndOfCandidates(RelayedEndOfCandidates { from })
        | ServerMessage::Typing(TypingNotice { from, .. })
        | ServerMessage::Read(ReadNotice { from, .. }) => Some(from),
        ServerMessage::Chat(c) => Some(&c.from),
        _ => None,
    }
}

fn apply(s: &mut Sim, m: &mut Model, op: &Op) {
    let slot_of = |conn: ConnId| conn.0 % 100;
    match *op {
        Op::Join(c, r) => {
            if !m.open.contains(&c) {
                s.open(conn_id(m, c).0);
                m.open.insert(c);
            }
            s.send(conn_id(m, c), &format!(r#"{{"type":"join","room":"{}","name":"n{c}"}}"#, ROOMS[r]));
        }
        Op::Leave(c) => s.send(conn_id(m, c), r#"{"type":"leave"}"#),
        Op::Drop(c) => s.disconnect(conn_id(m, c), LeaveReason::Disconnected),
        Op::Relay(a, b) => {
            let to = m.joined.get(&b).map_or("pNOBODY".to_owned(), |(_, p)| p.to_string());
            s.send(conn_id(m, a), &format!(r#"{{"type":"candidate","to":"{to}","candidate":{{"candidate":"x"}}}}"#));
        }
        Op::Chat(c) => {
            m.chats += 1;
            let n = m.chats;
            s.send(conn_id(m, c), &format!(r#"{{"type":"chat","client_id":"m{n}","text":"hi"}}"#));
        }
        Op::Typing(c, on) => s.send(conn_id(m, c), &format!(r#"{{"type":"typing","active":{on}}}"#)),
        Op::Read(c, seq) => s.send(conn_id(m, c), &format!(r#"{{"type":"read","seq":{seq}}}"#)),
        Op::Media(c, mute) => {
            s.send(conn_id(m, c), &format!(r#"{{"type":"media","mic_muted":{mute},"camera_muted":false}}"#));
        }
        Op::Advance(ms) => s.advance(Duration::from_millis(ms)),
    }
    // Update the model from what happened, then check every output.
    let outputs = s.last.clone();
    let closed_now: Vec<u64> = match *op {
        Op::Drop(c) | Op::Leave(c) if m.open.contains(&c) => vec![c],
        _ => vec![],
    };
    for out in &outputs {
        if let Output::Close { conn, .. } = out {
            let slot = slot_of(*conn);
            if m.open.contains(&slot) && !closed_now.contains(&slot) {
                // Closed by the hub (join timeout).
                close_slot(m, slot);
            }
        }
    }
    for c in closed_now {
        close_slot(m, c);
    }
    for out in &outputs {
        let Output::Send { to, msg, .. } = out else { continue };
        for conn in to.as_slice() {
            let slot = slot_of(*conn);
            if let ServerMessage::Welcome(w) = msg {
                let r = ROOMS.iter().position(|r| *r == w.room.as_str()).expect("known room");
                m.joined.insert(slot, (r, w.you.id.clone()));
                m.peer_room.insert(w.you.id.clone(), r);
                m.view.insert(slot, w.peers.iter().map(|p| p.id.clone()).collect());
                m.last_seq.insert(slot, w.chat_seq);
            }
        }
    }
    for out in &outputs {
        let Output::Send { to, msg, .. } = out else { continue };
        for conn in to.as_slice() {
            let slot = slot_of(*conn);
            // 1. Room-scoped messages reach only members of that room.
            if let Some(peer) = room_peer(msg) {
                let room = m.peer_room.get(peer).copied();
                let member_of = m.joined.get(&slot).map(|(r, _)| *r);
                assert!(
                    room.is_some() && room == member_of,
                    "{msg:?} about {peer} (room {room:?}) reached conn {slot} in room {member_of:?}"
                );
            }
            match msg {
                ServerMessage::PeerJoined(PeerJoined { peer }) => {
                    m.view.entry(slot).or_default().insert(peer.id.clone());
                }
                ServerMessage::PeerLeft(PeerLeft { peer_id, .. }) => {
                    m.view.entry(slot).or_default().remove(peer_id);
                }
                ServerMessage::Chat(chat) => {
                    // 3. Chat sequence numbers are gap-free and ordered.
                    let last = m.last_seq.entry(slot).or_default();
                    assert_eq!(chat.seq, *last + 1, "chat seq gap at conn {slot}");
                    *last = chat.seq;
                }
                _ => {}
            }
        }
    }
}

fn close_slot(m: &mut Model, slot: u64) {
    m.open.remove(&slot);
    m.joined.remove(&slot);
    m.view.remove(&slot);
    m.last_seq.remove(&slot);
    *m.generation.entry(slot).or_default() += 1;
}

fn check(s: &Sim, m: &Model) {
    s.hub.check_invariants().expect("hub invariants");
    // 2. Presence matches membership, as every client sees it.
    for (slot, (room, me)) in &m.joined {
        let actual: BTreeSet<PeerId> =
            m.joined.values().filter(|(r, p)| r == room && p != me).map(|(_, p)| p.clone()).collect();
        assert_eq!(m.view.get(slot), Some(&actual), "conn {slot}'s view of room {room}");
    }
    // 4. Empty rooms are removed.
    let occupied: BTreeSet<usize> = m.joined.values().map(|(r, _)| *r).collect();
    assert_eq!(s.hub.rooms(), occupied.len());
    assert_eq!(s.hub.peers(), m.joined.len());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn room_invariants_hold(ops in proptest::collection::vec(op(), 1..120)) {
        // A drop is a leave here; resume has its own properties.
        let limits = Limits { max_peers_per_room: 4, resume_grace: Duration::ZERO, ..Limits::default() };
        let mut s = Sim::new(HubConfig { limits, ..HubConfig::default() });
        let mut m = Model::default();
        for op in &ops {
            apply(&mut s, &mut m, op);
            check(&s, &m);
        }
    }
}
