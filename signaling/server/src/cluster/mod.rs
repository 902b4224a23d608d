//! The cluster on Redis (decision 0018): with `--redis-url` this node
//! registers itself and its load, and sees the other nodes. Without it
//! nothing here runs and the server needs no Redis.
//!
//! Built so far: the node registry ([`registry`]) behind `GET /v1/cluster`,
//! and Redis health in `/readyz` and the metrics. Room leases, the bridge
//! and durable chat follow (decision 0018 says how).

pub mod bridge;
pub mod chat_store;
pub mod drain;
pub mod keys;
pub mod lease;
pub mod leases;
pub mod registry;
pub mod wire;

use serde::Serialize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often a node writes its registry entry.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a registry entry lives without a heartbeat: a node that stops
/// (killed, or cut off from Redis) is gone from the list this long after its
/// last heartbeat.
pub const NODE_TTL: Duration = Duration::from_secs(3);
/// Longest wait for one Redis round trip: past it the call counts as failed,
/// so that an unreachable Redis never holds anything up.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// How long Redis must have been unreachable before a node serves rooms
/// it cannot lease (on its own, as a single node would): one missed
/// heartbeat is not an outage.
pub const REDIS_GIVE_UP: Duration = Duration::from_secs(6);
/// Most nodes listed (and read back) per heartbeat: the registry a node
/// keeps in memory is bounded whatever the key space holds.
pub const MAX_NODES: usize = 256;

/// How this node takes part in a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// `redis://host:port/`, `redis+unix:///path/to/redis.sock`, ….
    pub redis_url: String,
    /// This node's id (`A-Z a-z 0-9 _ - .`, 1–64); random when not given.
    pub node_id: String,
    /// Chat messages each room's Redis stream keeps.
    pub chat_stream_history: usize,
}

impl ClusterSettings {
    /// A node `node_id` on `redis_url`, with the other settings' defaults.
    pub fn new(redis_url: impl Into<String>, node_id: impl Into<String>) -> Self {
        Self { redis_url: redis_url.into(), node_id: node_id.into(), chat_stream_history: DEFAULT_CHAT_STREAM_HISTORY }
    }
}

/// Default of [`ClusterSettings::chat_stream_history`]: ten times the rooms'
/// default memory (`chat_history`), so history pages reach well past it.
pub const DEFAULT_CHAT_STREAM_HISTORY: usize = 5000;

/// One node as the registry shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct NodeInfo {
    /// Its id.
    pub id: String,
    /// The address its HTTP and WebSocket listener is bound to.
    pub addr: String,
    /// When it started, Unix ms.
    pub started_unix_ms: u64,
    /// Open WebSocket connections.
    pub connections: usize,
    /// Rooms held by its hub shards.
    pub rooms: usize,
    /// It is draining: it takes no new rooms, and hands its rooms over.
    #[serde(default)]
    pub draining: bool,
    /// The room snapshot versions it imports (empty: a node from before
    /// handovers, which takes none).
    #[serde(default)]
    pub snapshot_versions: Vec<u32>,
}

/// What this node knows of the cluster; shared by the registry task (the
/// only writer) and the HTTP handlers.
#[derive(Debug)]
pub struct Cluster {
    /// This node's id.
    pub node_id: String,
    redis_up: AtomicBool,
    nodes: Mutex<Vec<NodeInfo>>,
    /// A Redis connection (it reconnects by itself), once one was made.
    redis: Mutex<Option<redis::aio::ConnectionManager>>,
    /// The rooms this node owns.
    pub leases: leases::Leases,
    /// Connections to and from other nodes.
    pub bridge: bridge::Bridge,
    /// Where chat goes to be stored.
    pub chat: tokio::sync::mpsc::UnboundedSender<chat_store::Request>,
    /// Since when Redis has not answered (None: it answers).
    down_since: Mutex<Option<std::time::Instant>>,
    /// Where Redis is (a drain opens a connection of its own for room
    /// snapshots, which may be large, so that leases and heartbeats never
    /// wait behind them).
    pub redis_url: String,
}

impl Cluster {
    /// A node that has not reached Redis yet; its bridge publishes through
    /// `publish` (see [`bridge::run_publisher`]).
    pub fn new(
        redis_url: String,
        node_id: String,
        publish: tokio::sync::mpsc::Sender<bridge::Outgoing>,
        chat: tokio::sync::mpsc::UnboundedSender<chat_store::Request>,
    ) -> Self {
        let bridge = bridge::Bridge::new(node_id.as_str().into(), publish);
        Self {
            redis_url,
            chat,
            // Not reached yet: counts as down from the start.
            down_since: Mutex::new(Some(std::time::Instant::now())),
            node_id,
            redis_up: AtomicBool::new(false),
            nodes: Mutex::new(Vec::new()),
            redis: Mutex::new(None),
            leases: leases::Leases::default(),
            bridge,
        }
    }

    /// A handle on the Redis connection, when one was made and Redis
    /// answered the last heartbeat.
    pub fn redis(&self) -> Option<redis::aio::ConnectionManager> {
        if !self.redis_up() {
            return None;
        }
        self.redis.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn connected(&self, conn: redis::aio::ConnectionManager) {
        *self.redis.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(conn);
    }

    /// Whether the last heartbeat reached Redis.
    pub fn redis_up(&self) -> bool {
        self.redis_up.load(Ordering::Relaxed)
    }

    /// The live nodes as of the last heartbeat that reached Redis, by id.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.nodes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn heard(&self, nodes: Vec<NodeInfo>) {
        *self.nodes.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = nodes;
        self.redis_up.store(true, Ordering::Relaxed);
        *self.down_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    fn lost_redis(&self) {
        self.redis_up.store(false, Ordering::Relaxed);
        let mut since = self.down_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        since.get_or_insert_with(std::time::Instant::now);
    }

    /// How long Redis has been unreachable (zero while it answers).
    pub fn redis_down_for(&self) -> Duration {
        let since = *self.down_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        since.map_or(Duration::ZERO, |s| s.elapsed())
    }

    /// The body of `GET /v1/cluster`.
    pub fn view(&self) -> serde_json::Value {
        let redis = if self.redis_up() { "up" } else { "unreachable" };
        let (bridged_out, bridged_in) = self.bridge.counts();
        serde_json::json!({
            "node": self.node_id,
            "redis": redis,
            "nodes": self.nodes(),
            "rooms": self.leases.rooms(),
            "bridged": { "to_other_nodes": bridged_out, "from_other_nodes": bridged_in },
        })
    }
}

/// A connection to Redis that reconnects by itself (each call is bounded
/// by its caller).
pub async fn connect(redis_url: &str) -> anyhow::Result<redis::aio::ConnectionManager> {
    use anyhow::Context;
    let client = redis::Client::open(redis_url).context("the Redis URL")?;
    tokio::time::timeout(REDIS_TIMEOUT, client.get_connection_manager())
        .await
        .context("connecting to Redis: timed out")?
        .context("connecting to Redis")
}

/// A random node id: 16 hex digits.
pub fn random_node_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}
