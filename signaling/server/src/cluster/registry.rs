//! The node registry: every [`HEARTBEAT`] this node writes its entry (with
//! a TTL) and reads the live nodes back. One task, the only writer of
//! [`Cluster`]'s view; every Redis call is bounded by [`REDIS_TIMEOUT`], and
//! a failure marks Redis unreachable until a heartbeat gets through again.

use super::{Cluster, HEARTBEAT, MAX_NODES, NODE_TTL, NodeInfo, REDIS_TIMEOUT, keys};
use crate::state::AppState;
use anyhow::Context;
use redis::aio::ConnectionManager;
use std::sync::Arc;
use tracing::{info, warn};

/// Runs the heartbeat until the server shuts down.
pub async fn run(cluster: Arc<Cluster>, state: Arc<AppState>, client: redis::Client, addr: String) {
    let started_unix_ms = crate::clock::now().unix_ms;
    let mut redis: Option<ConnectionManager> = None;
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !state.shutting_down.load(std::sync::atomic::Ordering::Relaxed) {
        tick.tick().await;
        let me = NodeInfo {
            id: cluster.node_id.clone(),
            addr: addr.clone(),
            started_unix_ms,
            connections: state.limits.max_connections - state.conn_slots.available_permits(),
            rooms: state.room_quota.taken(),
            draining: state.draining.load(std::sync::atomic::Ordering::Relaxed),
            snapshot_versions: switchboard_core::snapshot::SNAPSHOT_VERSIONS_READ.to_vec(),
        };
        let result = async {
            if redis.is_none() {
                let manager = tokio::time::timeout(REDIS_TIMEOUT, client.get_connection_manager())
                    .await
                    .context("connecting to Redis: timed out")?
                    .context("connecting to Redis")?;
                cluster.connected(manager.clone());
                redis = Some(manager);
            }
            let Some(conn) = redis.as_mut() else { unreachable!("connected above") };
            let started = std::time::Instant::now();
            let nodes = tokio::time::timeout(REDIS_TIMEOUT, beat(conn, &me)).await.context("Redis: timed out")??;
            state.telemetry.redis_round_trip(crate::telemetry::RedisOp::Heartbeat, started.elapsed());
            anyhow::Ok(nodes)
        }
        .await;
        match result {
            Ok(nodes) => {
                if !cluster.redis_up() {
                    info!(node = %cluster.node_id, nodes = nodes.len(), "Redis reached: in the cluster");
                }
                state.telemetry.redis_up.set(1.0);
                state.telemetry.cluster_nodes.set(nodes.len() as f64);
                let alive: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
                cluster.heard(nodes);
                cluster.bridge.forget_nodes_not_in(&state, &alive).await;
            }
            Err(err) => {
                if cluster.redis_up() {
                    warn!(node = %cluster.node_id, "Redis unreachable: {err:#}");
                }
                state.telemetry.redis_errors.increment(1);
                state.telemetry.redis_up.set(0.0);
                cluster.lost_redis();
            }
        }
    }
    // Leave the list at once rather than after the TTL.
    if let Some(conn) = redis.as_mut() {
        let leave = redis::pipe().del(keys::node(&cluster.node_id)).zrem(keys::NODES, &cluster.node_id).to_owned();
        let _ = tokio::time::timeout(REDIS_TIMEOUT, leave.exec_async(conn)).await;
    }
}

/// One heartbeat: write this node's entry, drop expired ones from the
/// list, and read the live nodes.
async fn beat(conn: &mut ConnectionManager, me: &NodeInfo) -> anyhow::Result<Vec<NodeInfo>> {
    let now = crate::clock::now().unix_ms;
    let ttl_ms = u64::try_from(NODE_TTL.as_millis()).unwrap_or(u64::MAX);
    let entry = serde_json::to_string(me)?;
    let (ids,): (Vec<String>,) = redis::pipe()
        .set_options(
            keys::node(&me.id),
            entry,
            redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(ttl_ms)),
        )
        .ignore()
        .zadd(keys::NODES, &me.id, now + ttl_ms)
        .ignore()
        .zrembyscore(keys::NODES, "-inf", now)
        .ignore()
        .zrange(keys::NODES, 0, isize::try_from(MAX_NODES).unwrap_or(isize::MAX) - 1)
        .query_async(conn)
        .await
        .context("heartbeat")?;
    let ids: Vec<String> = ids.into_iter().filter(|id| keys::valid_node_id(id)).collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let entries: Vec<Option<String>> = redis::cmd("MGET")
        .arg(ids.iter().map(|id| keys::node(id)).collect::<Vec<_>>())
        .query_async(conn)
        .await
        .context("reading the nodes")?;
    let mut nodes: Vec<NodeInfo> =
        entries.into_iter().flatten().filter_map(|json| serde_json::from_str(&json).ok()).collect();
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(nodes)
}
