//! Durable chat (decision 0018): the owner of a room stores each chat
//! message in the room's Redis stream before the hub echoes it, so that an
//! acknowledged message is in Redis; a new owner reads the stream back.
//!
//! One task per node writes, in the order the hubs ask (a room's messages
//! come in `seq` order), a pipeline at a time. Each write is fenced: it
//! happens only while this node's owner value is in the room's owner key,
//! and the stream entry's id is the message's `seq` (`<seq>-0`), which
//! Redis refuses unless it is above the stream's last: a node that lost
//! the room cannot add to it, and no `seq` is stored twice.

use super::{Cluster, REDIS_TIMEOUT, keys};
use crate::hub_task::HubEvent;
use std::sync::Arc;
use std::time::Duration;
use switchboard_protocol::{ChatMessage, RoomName};
use tokio::sync::mpsc;
use tracing::warn;

/// Requests queued before hubs wait.
pub const STORE_QUEUE: usize = 16 * 1024;
/// Writes per pipeline.
pub const STORE_BATCH: usize = 256;
/// How long a room's stream is kept after its last message: a room whose
/// owner died and that nobody joins again does not keep its chat for good.
pub const STREAM_KEEP: Duration = Duration::from_secs(24 * 3600);

/// `KEYS[1]` owner, `KEYS[2]` stream; `ARGV[1]` owner value, `ARGV[2]`
/// entry id, `ARGV[3]` message JSON, `ARGV[4]` max entries, `ARGV[5]` keep
/// ms. 1 stored; 0 not the owner; -1 refused by the stream (a `seq` not
/// above its last).
const STORE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local added = redis.pcall('XADD', KEYS[2], 'MAXLEN', ARGV[4], ARGV[2], 'm', ARGV[3])
if type(added) == 'table' and added.err then return -1 end
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1
";

/// `KEYS[1]` owner, `KEYS[2]` stream; `ARGV[1]` owner value. Deletes the
/// stream while this node owns the room.
const DROP: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[2])
";

/// What the chat store is asked to do.
#[derive(Debug)]
pub enum Request {
    /// Store `message` and tell the shard (`reply`) whether it was stored.
    Store {
        /// The room.
        room: RoomName,
        /// The message.
        message: ChatMessage,
        /// The shard to answer (weak: the store must not keep a hub alive).
        reply: mpsc::WeakSender<HubEvent>,
    },
    /// The room ended here: its chat goes with it.
    Drop {
        /// The room.
        room: RoomName,
    },
}

/// Writes chat to Redis until the server stops.
pub async fn run(mut requests: mpsc::Receiver<Request>, cluster: Arc<Cluster>, max_entries: usize) {
    let mut batch = Vec::with_capacity(STORE_BATCH);
    let keep_ms = u64::try_from(STREAM_KEEP.as_millis()).unwrap_or(u64::MAX);
    while requests.recv_many(&mut batch, STORE_BATCH).await > 0 {
        let mut pipe = redis::pipe();
        let mut owned = Vec::with_capacity(batch.len());
        for request in &batch {
            let room = match request {
                Request::Store { room, .. } | Request::Drop { room } => room,
            };
            let value = cluster.leases.owner_value(room);
            owned.push(value.is_some());
            let Some(value) = value else { continue };
            match request {
                Request::Store { message, .. } => {
                    let json = serde_json::to_string(message).unwrap_or_default();
                    pipe.cmd("EVAL")
                        .arg(STORE)
                        .arg(2)
                        .arg(keys::room_owner(room))
                        .arg(keys::room_chat(room))
                        .arg(value)
                        .arg(format!("{}-0", message.seq))
                        .arg(json)
                        .arg(max_entries)
                        .arg(keep_ms);
                }
                Request::Drop { .. } => {
                    pipe.cmd("EVAL").arg(DROP).arg(2).arg(keys::room_owner(room)).arg(keys::room_chat(room)).arg(value);
                }
            }
        }
        let results: Vec<i64> = match cluster.redis() {
            Some(mut conn) if owned.iter().any(|o| *o) => {
                match tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async::<Vec<i64>>(&mut conn)).await {
                    Ok(Ok(results)) => results,
                    Ok(Err(err)) => {
                        warn!("storing chat failed: {err}");
                        Vec::new()
                    }
                    Err(_) => {
                        warn!("storing chat timed out");
                        Vec::new()
                    }
                }
            }
            _ => Vec::new(),
        };
        let mut results = results.into_iter();
        for (request, owned) in batch.drain(..).zip(owned) {
            let result = if owned { results.next() } else { None };
            if let Request::Store { room, message, reply } = request {
                let stored = result == Some(1);
                if let Some(reply) = reply.upgrade() {
                    let _ = reply.send(HubEvent::ChatStored { room, seq: message.seq, stored }).await;
                }
            }
        }
    }
}

/// The newest `count` messages of `room`'s stream, oldest first: what a new
/// owner starts the room's chat from.
pub async fn read_back(
    conn: &mut redis::aio::ConnectionManager,
    room: &RoomName,
    count: usize,
) -> anyhow::Result<Vec<ChatMessage>> {
    use anyhow::Context;
    let call = redis::cmd("XREVRANGE").arg(keys::room_chat(room)).arg("+").arg("-").arg("COUNT").arg(count).to_owned();
    let entries: Vec<(String, Vec<(String, String)>)> =
        tokio::time::timeout(REDIS_TIMEOUT, call.query_async(conn)).await.context("Redis: timed out")??;
    let mut messages: Vec<ChatMessage> = entries
        .into_iter()
        .filter_map(|(_, fields)| fields.into_iter().find(|(k, _)| k == "m"))
        .filter_map(|(_, json)| serde_json::from_str(&json).ok())
        .collect();
    messages.reverse();
    Ok(messages)
}
