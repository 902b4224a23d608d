//! Two hubs fed the same inputs and the same entropy produce the same
//! outputs, byte for byte: who an event reaches first, which deadline fires
//! first, who is closed first. Otherwise a failing proptest case cannot be
//! replayed.

mod common;

use common::Sim;
use std::time::Duration;
use switchboard_core::{Claims, ConnId, HubConfig, Limits, Output, Recipients, TokenVerifier, mint_token};
use switchboard_protocol::{GoingAway, LeaveReason, RoomMode};

const SECRET: &[u8] = b"determinism-secret-determinism-secret";
/// Two mesh rooms and two SFU rooms, so that several rooms' deadlines come
/// due at the same instant.
const ROOMS: [(&str, Option<RoomMode>); 4] =
    [("alpha", None), ("beta", None), ("gamma", Some(RoomMode::Sfu)), ("delta", Some(RoomMode::Sfu))];
const PER_ROOM: u64 = 5;

/// Every output of one run, as its debug text, in order.
struct Run {
    s: Sim,
    log: Vec<String>,
}

impl Run {
    fn record(&mut self) {
        self.log.extend(self.s.last.iter().map(|out| format!("{out:?}")));
    }

    fn send(&mut self, conn: ConnId, json: &str) {
        self.s.send(conn, json);
        self.record();
    }

    fn advance(&mut self, by: Duration) {
        self.s.advance(by);
        self.record();
    }

    fn disconnect(&mut self, conn: ConnId) {
        self.s.disconnect(conn, LeaveReason::Disconnected);
        self.record();
    }
}

fn conn(room: usize, member: u64) -> ConnId {
    ConnId(room as u64 * 100 + member)
}

fn scenario() -> Vec<String> {
    let limits = Limits { replay_buffer: 16, ..Limits::default() };
    let config = HubConfig { limits, verifier: Some(TokenVerifier::new(SECRET)), ..HubConfig::default() };
    let mut run = Run { s: Sim::new(config), log: Vec::new() };
    let exp = run.s.now.unix_ms / 1000 + 3600;
    // Everyone joins; each join is announced to a growing room.
    for (r, (room, mode)) in ROOMS.iter().enumerate() {
        for m in 0..PER_ROOM {
            let c = conn(r, m);
            run.s.open(c.0);
            run.record();
            let claims = Claims { room: (*room).into(), sub: format!("u{m}"), exp, mode: *mode, ..Claims::default() };
            let token = mint_token(SECRET, &claims);
            run.send(c, &format!(r#"{{"type":"join","room":"{room}","name":"N{m}","token":"{token}"}}"#));
        }
    }
    // Chat, receipts and mute buttons: broadcasts to whole rooms.
    for r in 0..ROOMS.len() {
        for m in 0..PER_ROOM {
            let c = conn(r, m);
            run.send(c, &format!(r#"{{"type":"chat","client_id":"c{m}","text":"hello from {m}"}}"#));
            run.send(c, r#"{"type":"read","seq":1}"#);
            run.send(c, r#"{"type":"media","mic_muted":true,"camera_muted":false}"#);
        }
    }
    // Everyone starts typing at the same instant: the expiries all come due
    // together.
    for r in 0..ROOMS.len() {
        for m in 0..PER_ROOM {
            run.send(conn(r, m), r#"{"type":"typing","active":true}"#);
        }
    }
    run.advance(Duration::from_secs(6));
    // Two members of every room drop at the same instant; the others keep
    // talking, and the seats are given up together after the grace.
    for r in 0..ROOMS.len() {
        run.disconnect(conn(r, 1));
        run.disconnect(conn(r, 3));
    }
    for r in 0..ROOMS.len() {
        run.send(conn(r, 0), r#"{"type":"chat","client_id":"late","text":"anyone there?"}"#);
    }
    // Meanwhile the SFU rooms ask again and again for an SFU that never
    // comes, at the same instants.
    for _ in 0..5 {
        run.advance(Duration::from_secs(5));
    }
    // Shutdown closes every connection left.
    let notice = GoingAway { reason: "bye".into(), reconnect_url: None, retry_after_ms: 1000 };
    run.s.hub.shutdown(&notice, run.s.now);
    while let Some(out) = run.s.hub.poll_output() {
        run.log.push(format!("{out:?}"));
    }
    run.s.hub.check_invariants().expect("invariants");
    // The scenario must exercise what it claims to: broadcasts to several
    // connections, SFU asks from several rooms at once.
    let many = run.log.iter().filter(|l| l.contains("Many(")).count();
    assert!(many > 40, "broadcasts: {many}");
    assert!(run.s.sfu_wanted.len() >= 10, "{:?}", run.s.sfu_wanted);
    run.log
}

#[test]
fn two_hubs_fed_the_same_inputs_produce_the_same_outputs() {
    let first = scenario();
    for _ in 0..3 {
        let again = scenario();
        assert_eq!(first.len(), again.len());
        for (i, (a, b)) in first.iter().zip(&again).enumerate() {
            assert_eq!(a, b, "output {i} differs");
        }
    }
}

#[test]
fn a_broadcast_reaches_the_room_in_join_order() {
    let mut s = Sim::new(HubConfig::default());
    let conns: Vec<ConnId> = (1..=6).map(|c| s.join(c, "demo", &format!("N{c}")).0).collect();
    s.send(conns[0], r#"{"type":"chat","client_id":"c1","text":"hi"}"#);
    let to = s.last.iter().find_map(|out| match out {
        Output::Send { to: Recipients::Many(to), .. } => Some(to.clone()),
        _ => None,
    });
    assert_eq!(to.as_deref(), Some(conns.as_slice()));
}
