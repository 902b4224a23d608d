//! A simulated server: the hub, a virtual clock, and an inbox per connection.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};
use switchboard_core::{CloseReason, ConnId, Hub, HubConfig, Now, Output};
use switchboard_protocol::{ServerMessage, Welcome, parse_client};

pub struct Sim {
    pub hub: Hub,
    pub now: Now,
    pub inbox: HashMap<ConnId, Vec<ServerMessage>>,
    pub closed: HashMap<ConnId, CloseReason>,
    /// Every output of the last step, in order.
    pub last: Vec<Output>,
    /// Rooms the hub asked an SFU for, in order.
    pub sfu_wanted: Vec<String>,
    /// Connections the hub asked to probe, in order.
    pub probed: Vec<ConnId>,
    /// Rooms created, in order.
    pub rooms_started: Vec<String>,
    /// Rooms ended, in order.
    pub rooms_ended: Vec<String>,
    /// Joins answered, in order.
    pub join_answers: Vec<(ConnId, bool)>,
}

impl Sim {
    pub fn new(config: HubConfig) -> Self {
        let mut n: u128 = 0;
        let entropy = Box::new(move || {
            n += 1;
            n.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
        });
        Self {
            hub: Hub::new(config, entropy),
            now: Now { mono: Instant::now(), unix_ms: 1_795_000_000_000 },
            inbox: HashMap::new(),
            closed: HashMap::new(),
            last: Vec::new(),
            sfu_wanted: Vec::new(),
            probed: Vec::new(),
            rooms_started: Vec::new(),
            rooms_ended: Vec::new(),
            join_answers: Vec::new(),
        }
    }

    /// Takes every output the hub has queued (after a call made on
    /// `hub` directly).
    pub fn drain(&mut self) {
        self.last.clear();
        while let Some(out) = self.hub.poll_output() {
            match &out {
                Output::Send { to, msg, .. } => {
                    for conn in to.as_slice() {
                        self.inbox.entry(*conn).or_default().push(msg.clone());
                    }
                }
                Output::Close { conn, reason } => {
                    self.closed.insert(*conn, *reason);
                }
                Output::SfuWanted { room } => self.sfu_wanted.push(room.to_string()),
                Output::Probe { conn } => self.probed.push(*conn),
                Output::RoomStarted { room } => self.rooms_started.push(room.to_string()),
                Output::RoomEnded { room } => self.rooms_ended.push(room.to_string()),
                Output::JoinAnswered { conn, joined } => self.join_answers.push((*conn, *joined)),
                Output::StoreChat { .. } | Output::LoadHistory { .. } => {}
            }
            self.last.push(out);
        }
    }

    pub fn open(&mut self, conn: u64) -> ConnId {
        let conn = ConnId(conn);
        self.hub.open(conn, self.now);
        self.drain();
        conn
    }

    /// Sends a JSON frame, parsed exactly as the server parses it.
    pub fn send(&mut self, conn: ConnId, json: &str) {
        let msg = parse_client(json).unwrap_or_else(|e| panic!("test frame does not parse: {e:?}"));
        self.hub.message(conn, msg, self.now);
        self.drain();
    }

    pub fn disconnect(&mut self, conn: ConnId, reason: switchboard_protocol::LeaveReason) {
        self.hub.disconnect(conn, reason, self.now);
        self.drain();
    }

    pub fn alive(&mut self, conn: ConnId) {
        self.hub.alive(conn, self.now);
        self.drain();
    }

    pub fn advance(&mut self, by: Duration) {
        self.now.mono += by;
        self.now.unix_ms += u64::try_from(by.as_millis()).unwrap_or(0);
        self.hub.timeout(self.now);
        self.drain();
    }

    pub fn take(&mut self, conn: ConnId) -> Vec<ServerMessage> {
        self.inbox.remove(&conn).unwrap_or_default()
    }

    /// Opens `conn`, joins `room` as `name`, returns the welcome.
    pub fn join(&mut self, conn: u64, room: &str, name: &str) -> (ConnId, Welcome) {
        let conn = self.open(conn);
        self.send(conn, &format!(r#"{{"type":"join","room":"{room}","name":"{name}"}}"#));
        let msgs = self.take(conn);
        match msgs.as_slice() {
            [ServerMessage::Welcome(w)] => (conn, (**w).clone()),
            other => panic!("expected a welcome, got {other:?}"),
        }
    }
}
