//! The bridge's frames on Redis pub/sub (decision 0018): JSON, one per
//! message, on the receiving node's channel. `c` is the connection's id on
//! the client's node, `s` counts frames per connection and direction from 1,
//! so a lost frame shows as a gap.

use serde::{Deserialize, Serialize};
use switchboard_protocol::LeaveReason;

/// One frame between two nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Frame {
    // ---- from the client's node to the room's owner ----
    /// A connection moved to the owner to join a room there.
    Open {
        /// The client's node.
        from: String,
        /// Connection id there.
        c: u64,
        /// Sequence.
        s: u64,
        /// Milliseconds since the client connected (its join timeout counts
        /// from then).
        age_ms: u64,
    },
    /// A client message, as the client's node parsed and checked it
    /// (rate, size, shape), serialized again.
    Msg {
        /// The client's node.
        from: String,
        /// Connection id there.
        c: u64,
        /// Sequence.
        s: u64,
        /// The message's JSON.
        m: String,
    },
    /// The connection ended.
    Closed {
        /// The client's node.
        from: String,
        /// Connection id there.
        c: u64,
        /// Sequence.
        s: u64,
        /// Why.
        reason: LeaveReason,
    },
    /// The probed connection answered.
    Alive {
        /// The client's node.
        from: String,
        /// Connection id there.
        c: u64,
        /// Sequence.
        s: u64,
    },
    /// The connection (not in a room) moved on to another owner.
    MovedOut {
        /// The client's node.
        from: String,
        /// Connection id there.
        c: u64,
        /// Sequence.
        s: u64,
    },
    // ---- from the owner back to the client's node ----
    /// A text frame for the client.
    Text {
        /// The owner's node (where to say that the connection is gone).
        o: String,
        /// Connection id on the client's node.
        c: u64,
        /// Sequence.
        s: u64,
        /// The server message's type index (`ServerKind::index`), for
        /// metrics.
        k: u8,
        /// The JSON text the client gets.
        text: String,
        /// Queued outside the budget (a replay or a last word).
        u: bool,
    },
    /// Close the client's socket after what came before.
    Close {
        /// The owner's node (where to say that the connection is gone).
        o: String,
        /// Connection id on the client's node.
        c: u64,
        /// Sequence.
        s: u64,
        /// WebSocket close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// Where the connection stands (see `crate::outbox::Signal`): its join
    /// answered (`joined`), or moved out (`None`).
    Signal {
        /// The owner's node (where to say that the connection is gone).
        o: String,
        /// Connection id on the client's node.
        c: u64,
        /// Sequence.
        s: u64,
        /// `Some(joined)` for an answered join, `None` for moved out.
        joined: Option<bool>,
    },
    /// Ping the client: someone is resuming its session.
    Probe {
        /// The owner's node (where to say that the connection is gone).
        o: String,
        /// Connection id on the client's node.
        c: u64,
        /// Sequence.
        s: u64,
    },
    /// Close the client's socket at once (slow consumer at the owner).
    Kill {
        /// The owner's node (where to say that the connection is gone).
        o: String,
        /// Connection id on the client's node.
        c: u64,
        /// Sequence.
        s: u64,
        /// WebSocket close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
}

impl Frame {
    /// The JSON text published.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_as_tagged_json() {
        let frames = [
            Frame::Open { from: "a".into(), c: 1, s: 1, age_ms: 12 },
            Frame::Msg { from: "a".into(), c: 1, s: 2, m: r#"{"type":"ping"}"#.into() },
            Frame::Closed { from: "a".into(), c: 1, s: 3, reason: LeaveReason::Disconnected },
            Frame::Text { o: "b".into(), c: 1, s: 1, k: 0, text: "{}".into(), u: false },
            Frame::Kill { o: "b".into(), c: 1, s: 2, code: 1008, reason: "slow_consumer".into() },
        ];
        for frame in frames {
            let json = frame.to_json();
            assert_eq!(serde_json::from_str::<Frame>(&json).expect("parses"), frame, "{json}");
        }
        assert!(Frame::Open { from: "a".into(), c: 1, s: 1, age_ms: 0 }.to_json().starts_with(r#"{"t":"open""#));
    }
}
