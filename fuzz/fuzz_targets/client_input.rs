//! Fuzzes what a client controls: arbitrary frames, parsed exactly as the
//! server parses them, fed into the hub from several connections, with the
//! clock moving. Nothing may panic, the hub's invariants must hold after
//! every step, and every relayed SDP must unescape to valid text.
//!
//! Input format: frames separated by 0xFF. A frame's first byte picks the
//! connection (low 2 bits), whether time advances first (bit 2, by the next
//! byte in 100 ms steps), whether the connection drops instead (bit 3), and
//! whether probes of it are answered (bit 4); the rest is the frame's text
//! (lossy UTF-8). A slot reopened after a drop gets a new connection id, as
//! in the server, where ids are never reused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};
use switchboard_core::{ConnId, Hub, HubConfig, Limits, Now, Output};
use switchboard_protocol::{LeaveReason, parse_client};

const CONNS: u64 = 4;

fuzz_target!(|data: &[u8]| {
    let mut n: u128 = 0;
    let entropy = Box::new(move || {
        n += 1;
        n.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
    });
    let limits = Limits { max_peers_per_room: 3, max_rooms: 2, chat_history: 8, chat_history_page: 4, ..Limits::default() };
    let mut hub = Hub::new(HubConfig { limits, ..HubConfig::default() }, entropy);
    let mut now = Now { mono: Instant::now(), unix_ms: 1_795_000_000_000 };
    let mut open = [false; CONNS as usize];
    let mut generation = [0u64; CONNS as usize];
    let id = |slot: u64, generation: &[u64; CONNS as usize]| ConnId(slot + CONNS * generation[slot as usize]);
    for frame in data.split(|b| *b == 0xFF) {
        let Some((&head, rest)) = frame.split_first() else { continue };
        let conn = u64::from(head & 3);
        if head & 4 != 0 {
            let steps = rest.first().copied().unwrap_or(1);
            let by = Duration::from_millis(100 * u64::from(steps));
            now.mono += by;
            now.unix_ms += 100 * u64::from(steps);
            hub.timeout(now);
        }
        let answers_probes = head & 16 != 0;
        if head & 8 != 0 {
            if open[conn as usize] {
                hub.disconnect(id(conn, &generation), LeaveReason::Disconnected, now);
                open[conn as usize] = false;
                generation[conn as usize] += 1;
            }
        } else {
            if !open[conn as usize] {
                hub.open(id(conn, &generation), now);
                open[conn as usize] = true;
            }
            let text = String::from_utf8_lossy(rest);
            if let Ok(msg) = parse_client(&text) {
                hub.message(id(conn, &generation), msg, now);
            }
        }
        while let Some(out) = hub.poll_output() {
            match out {
                Output::Send { msg, .. } => {
                    // Every message the hub produces must serialize and
                    // parse back identically.
                    let json = msg.to_json();
                    let back: switchboard_protocol::ServerMessage =
                        serde_json_roundtrip(&json).expect("server message parses back");
                    assert_eq!(back, msg);
                    // Every SDP the hub relays must be text a peer can
                    // read: a lone surrogate escape once passed through
                    // and panicked the peers that unescaped it.
                    if let switchboard_protocol::ServerMessage::Offer(r) | switchboard_protocol::ServerMessage::Answer(r) = &msg {
                        let text: Result<String, _> = serde_json::from_str(r.description.sdp.json());
                        assert!(text.is_ok(), "relayed SDP is not valid text");
                    }
                }
                Output::SfuWanted { .. }
                | Output::RoomStarted { .. }
                | Output::RoomEnded { .. }
                | Output::JoinAnswered { .. }
                | Output::StoreChat { .. }
                | Output::LoadHistory { .. } => {}
                Output::Probe { conn } => {
                    if answers_probes {
                        hub.alive(conn, now);
                    } else {
                        let slot = (conn.0 % CONNS) as usize;
                        if open[slot] && id(slot as u64, &generation) == conn {
                            open[slot] = false;
                            generation[slot] += 1;
                        }
                        hub.disconnect(conn, LeaveReason::Disconnected, now);
                    }
                }
                Output::Close { conn, .. } => {
                    let slot = (conn.0 % CONNS) as usize;
                    if open[slot] && id(slot as u64, &generation) == conn {
                        open[slot] = false;
                        generation[slot] += 1;
                    }
                    hub.disconnect(conn, LeaveReason::Disconnected, now);
                }
            }
        }
        if let Err(broken) = hub.check_invariants() {
            panic!("invariant broken: {broken}");
        }
    }
});

fn serde_json_roundtrip(json: &str) -> Option<switchboard_protocol::ServerMessage> {
    switchboard_protocol::ServerMessage::from_json(json)
}
