//! Durable chat (decision 0018): the owner of a room stores each chat
//! message in the room's Redis stream before the hub echoes it, so that an
//! acknowledged message is in Redis; a new owner reads the stream back.
//!
//! One task per node writes, in the order the hubs ask (a room's messages
//! come in `seq` order), a pipeline at a time. Each write is a script that:
//! - acts only while this node's owner value is in the room's owner key (a
//!   node that lost the room cannot add to it);
//! - is idempotent: a message already stored under its `seq` (the entry id
//!   is `<seq>-0`) with the same content counts as stored, so a write whose
//!   outcome is unknown (a timeout, a dropped connection) is simply tried
//!   again;
//! - is gap-free: it stores `seq` only right after `seq - 1` (or into an
//!   empty stream), so the stream never skips a number.
//!
//! A numbered message is never given up while this node holds its room: it
//! is retried until stored. A stream that disagrees (another owner wrote,
//! or the room was made here without reading the stream back) ends the
//! room here: its members rejoin, and the room's next start reads the
//! stream back. A node that no longer holds the room gives its messages up.

use super::{Cluster, REDIS_TIMEOUT, keys};
use crate::hub_task::HubEvent;
use crate::state::AppState;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use switchboard_protocol::{ChatMessage, RoomName};
use tokio::sync::mpsc;
use tracing::warn;

/// Writes per pipeline.
pub const STORE_BATCH: usize = 256;
/// How long a room's stream is kept after its last message: a room whose
/// owner died and that nobody joins again does not keep its chat for good.
pub const STREAM_KEEP: Duration = Duration::from_secs(24 * 3600);
/// Wait before writes that could not be done are tried again.
pub const RETRY_AFTER: Duration = Duration::from_millis(200);

/// `KEYS[1]` owner, `KEYS[2]` stream; `ARGV[1]` owner value, `ARGV[2]`
/// seq, `ARGV[3]` message JSON, `ARGV[4]` max entries, `ARGV[5]` keep ms.
/// 1 stored (now or before); 0 not the owner; -1 the stream disagrees.
const STORE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local id = ARGV[2] .. '-0'
local same = redis.call('XRANGE', KEYS[2], id, id)
if #same > 0 then
  if same[1][2][2] == ARGV[3] then return 1 end
  return -1
end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if #last > 0 then
  local top = tonumber(string.match(last[1][1], '^(%d+)-'))
  if top ~= tonumber(ARGV[2]) - 1 then return -1 end
end
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], id, 'm', ARGV[3])
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
    /// Store `message` and tell the shard (`reply`) once it is stored.
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

impl Request {
    fn room(&self) -> &RoomName {
        match self {
            Self::Store { room, .. } | Self::Drop { room } => room,
        }
    }
}

/// What became of one request.
enum Outcome {
    Done,
    Again,
    GiveUp,
    Disagrees,
}

/// Writes chat to Redis until the server stops. The queue is unbounded:
/// each room holds at most `MAX_PENDING_CHAT` numbered messages (the hub
/// refuses more), and the rooms are bounded.
pub async fn run(
    mut requests: mpsc::UnboundedReceiver<Request>,
    state: Arc<AppState>,
    cluster: Arc<Cluster>,
    max_entries: usize,
) {
    let keep_ms = u64::try_from(STREAM_KEEP.as_millis()).unwrap_or(u64::MAX);
    let mut pending: VecDeque<Request> = VecDeque::new();
    loop {
        if pending.is_empty() {
            let Some(first) = requests.recv().await else { return };
            pending.push_back(first);
        }
        while pending.len() < STORE_BATCH {
            match requests.try_recv() {
                Ok(request) => pending.push_back(request),
                Err(_) => break,
            }
        }
        let batch: Vec<Request> = pending.drain(..pending.len().min(STORE_BATCH)).collect();
        // One owner value per room for the whole batch: a room's writes in
        // one pipeline all go, or none.
        let mut values: HashMap<RoomName, Option<String>> = HashMap::new();
        for request in &batch {
            let room = request.room();
            if !values.contains_key(room) {
                values.insert(room.clone(), cluster.leases.owner_value(room));
            }
        }
        let mut pipe = redis::pipe();
        let mut sent = 0;
        for request in &batch {
            let Some(Some(value)) = values.get(request.room()) else { continue };
            sent += 1;
            let room = request.room();
            match request {
                Request::Store { message, .. } => {
                    let json = serde_json::to_string(message).unwrap_or_default();
                    pipe.cmd("EVAL")
                        .arg(STORE)
                        .arg(2)
                        .arg(keys::room_owner(room))
                        .arg(keys::room_chat(room))
                        .arg(value)
                        .arg(message.seq)
                        .arg(json)
                        .arg(max_entries)
                        .arg(keep_ms);
                }
                Request::Drop { .. } => {
                    pipe.cmd("EVAL").arg(DROP).arg(2).arg(keys::room_owner(room)).arg(keys::room_chat(room)).arg(value);
                }
            }
        }
        let results: Option<Vec<i64>> = match cluster.redis() {
            Some(mut conn) if sent > 0 => {
                let started = std::time::Instant::now();
                match tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async::<Vec<i64>>(&mut conn)).await {
                    Ok(Ok(results)) => {
                        let op = crate::telemetry::RedisOp::ChatStore;
                        state.telemetry.redis_round_trip(op, started.elapsed());
                        Some(results)
                    }
                    Ok(Err(err)) => {
                        warn!("storing chat failed: {err}");
                        None
                    }
                    Err(_) => None,
                }
            }
            _ => None,
        };
        if results.is_none() && sent > 0 {
            state.telemetry.redis_errors.increment(1);
        }
        let mut results = results.map(Vec::into_iter);
        let mut retry = false;
        let mut disagreeing: Vec<RoomName> = Vec::new();
        for request in batch {
            let room = request.room().clone();
            let outcome = match values.get(&room) {
                Some(Some(_)) => match results.as_mut().map(Iterator::next) {
                    Some(Some(1)) => Outcome::Done,
                    Some(Some(-1)) => Outcome::Disagrees,
                    // Not the owner any more (0), or an unknown outcome.
                    _ if cluster.leases.tracks(&room) => Outcome::Again,
                    _ => Outcome::GiveUp,
                },
                // Held but not trusted now (Redis away): wait.
                _ if cluster.leases.tracks(&room) => Outcome::Again,
                _ => Outcome::GiveUp,
            };
            if matches!(outcome, Outcome::Disagrees) && !disagreeing.contains(&room) {
                disagreeing.push(room);
            }
            match (outcome, request) {
                (Outcome::Again, request) => {
                    retry = true;
                    pending.push_back(request);
                }
                (Outcome::Done, Request::Store { room, message, reply }) => {
                    answer(&reply, room, message.seq, true).await
                }
                (Outcome::GiveUp | Outcome::Disagrees, Request::Store { room, message, reply }) => {
                    answer(&reply, room, message.seq, false).await;
                }
                (_, Request::Drop { .. }) => {}
            }
        }
        for room in disagreeing.drain(..) {
            warn!(%room, "the room's stored chat disagrees with this node's: the room is evicted here");
            super::leases::evict(&state, &cluster, &room, None).await;
        }
        if retry {
            tokio::time::sleep(RETRY_AFTER).await;
        }
    }
}

async fn answer(reply: &mpsc::WeakSender<HubEvent>, room: RoomName, seq: u64, stored: bool) {
    if let Some(reply) = reply.upgrade() {
        let _ = reply.send(HubEvent::ChatStored { room, seq, stored }).await;
    }
}

/// Up to `limit` messages of `room`'s stream below `before` (all: the
/// newest), oldest first, and whether older ones are kept: a history page
/// older than the room's memory.
pub async fn read_page(
    conn: &mut redis::aio::ConnectionManager,
    room: &RoomName,
    before: Option<u64>,
    limit: usize,
) -> anyhow::Result<(Vec<ChatMessage>, bool)> {
    use anyhow::Context;
    let end = before.map_or_else(|| "+".to_owned(), |b| format!("({b}-0"));
    let call =
        redis::cmd("XREVRANGE").arg(keys::room_chat(room)).arg(end).arg("-").arg("COUNT").arg(limit + 1).to_owned();
    let entries: Vec<(String, Vec<(String, String)>)> =
        tokio::time::timeout(REDIS_TIMEOUT, call.query_async(conn)).await.context("Redis: timed out")??;
    let has_more = entries.len() > limit;
    let mut messages: Vec<ChatMessage> = entries
        .into_iter()
        .take(limit)
        .filter_map(|(_, fields)| fields.into_iter().find(|(k, _)| k == "m"))
        .filter_map(|(_, json)| serde_json::from_str(&json).ok())
        .collect();
    messages.reverse();
    Ok((messages, has_more))
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
