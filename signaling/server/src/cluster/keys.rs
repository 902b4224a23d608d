//! Every Redis key and channel name the cluster uses, in one place. Names
//! are built only from validated ids (node ids and room names allow
//! `A-Z a-z 0-9 _ - .` only), so no client input can reach another key.

/// The sorted set of live nodes, scored by when each entry expires (Unix ms).
pub const NODES: &str = "sb:nodes";

/// A node's registry entry (JSON [`super::NodeInfo`], with a TTL).
pub fn node(id: &str) -> String {
    format!("sb:node:{id}")
}

/// A node's bridge channel (pub/sub).
pub fn bridge(node: &str) -> String {
    format!("sb:bridge:{node}")
}

/// A room's owner key (`<node>:<fence>`, with the lease's TTL). Room names
/// are validated by the protocol (`A-Z a-z 0-9 _ - .`, 1–64).
pub fn room_owner(room: &switchboard_protocol::RoomName) -> String {
    format!("sb:room:{room}:owner")
}

/// A room's chat stream (durable chat: one entry per message, id `<seq>-0`).
pub fn room_chat(room: &switchboard_protocol::RoomName) -> String {
    format!("sb:room:{room}:chat")
}

/// A room's state handed over by a draining node, waiting for the next
/// owner to import it (decision 0019).
pub fn room_handover(room: &switchboard_protocol::RoomName) -> String {
    format!("sb:room:{room}:handover")
}

/// A room's fence counter.
pub fn room_fence(room: &switchboard_protocol::RoomName) -> String {
    format!("sb:room:{room}:fence")
}

/// Whether `id` may be a node id (and so part of a key).
pub fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_cannot_reach_other_keys() {
        assert!(valid_node_id("node-1.a_b"));
        for bad in ["", "a:b", "a*", "a b", "a\nb", &"x".repeat(65)] {
            assert!(!valid_node_id(bad), "{bad:?}");
        }
        assert_eq!(node("n1"), "sb:node:n1");
    }
}
