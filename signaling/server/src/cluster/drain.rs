//! Draining a node for a restart (decision 0019): every room this node
//! holds is handed to another live node, state and all, so that its
//! members resume there without anyone noticing.
//!
//! One room at a time (several rooms at once, up to
//! [`HANDOVER_CONCURRENCY`]):
//! 1. the lease is marked moving: no join is sent to the room here;
//! 2. the room's shard tells every member's connection `going_away`
//!    (retry after [`HANDOVER_RETRY_AFTER_MS`]), holds their seats, and
//!    returns the room as a snapshot ([`switchboard_core::Hub::hand_over`]);
//! 3. one Redis script checks the lease is still ours, names the next owner
//!    in it (with a new fence: this node's late writes are refused) and
//!    leaves the snapshot for it ([`lease::hand_over`]);
//! 4. the next owner imports it when it takes the lease: at the first
//!    member's resume, or, if nobody comes within the lease's life,
//!    whichever node places the room next ([`super::leases`]).
//!
//! When step 3 fails the room is imported back here and stays; it ends
//! with the shutdown that follows, as on a node without a cluster. If the
//! script did run after all (its answer was lost), the lease renewals find
//! the room owned elsewhere and evict this copy: members resume at the
//! owner.

use super::Cluster;
use super::lease::{self, LEASE_TTL, Lease};
use crate::hub_task::HubEvent;
use crate::state::AppState;
use std::sync::Arc;
use switchboard_core::snapshot::{ExportError, SNAPSHOT_VERSION};
use switchboard_protocol::{GoingAway, RoomName};
use tokio::task::JoinSet;
use tracing::{info, warn};

/// What members of a handed-over room are told to wait before they
/// resume: the handover takes a few Redis round trips.
pub const HANDOVER_RETRY_AFTER_MS: u64 = 250;
/// Rooms handed over at once (with [`MAX_SNAPSHOT_BYTES`], a bound on the
/// memory a drain holds in snapshots).
pub const HANDOVER_CONCURRENCY: usize = 8;
/// Largest room state handed over (its JSON). A room of 32 members whose
/// replay buffers are full (1 MiB each by default) is about 34 MiB; its
/// snapshot goes through Redis in one call. A larger room stays and ends
/// with the node (its members join afresh elsewhere).
pub const MAX_SNAPSHOT_BYTES: usize = 64 << 20;
/// Times the rooms are looked at again (a join already on its way when
/// the drain began may make a room here after the first pass).
const PASSES: usize = 3;

/// What a drain did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Rooms handed to other nodes.
    pub handed_over: usize,
    /// Rooms still here when it ended (they end with the shutdown: their
    /// members join afresh elsewhere).
    pub kept: usize,
    /// Connections of this node in rooms of other nodes, told to go.
    pub bridged: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    HandedOver,
    /// The room ended meanwhile.
    Gone,
    Kept,
}

/// The nodes that can take rooms, with what each has been given so far.
struct Targets(Vec<(String, usize, usize)>);

impl Targets {
    fn new(cluster: &Cluster) -> Self {
        let nodes = cluster
            .nodes()
            .into_iter()
            .filter(|n| n.id != cluster.node_id && !n.draining && n.snapshot_versions.contains(&SNAPSHOT_VERSION));
        Self(nodes.map(|n| (n.id, n.rooms, n.connections)).collect())
    }

    /// The least loaded, counting what it was given in this drain.
    fn next(&mut self) -> Option<String> {
        let best = self.0.iter_mut().min_by_key(|(id, rooms, conns)| (*rooms, *conns, id.clone()))?;
        best.1 += 1;
        Some(best.0.clone())
    }
}

/// Hands every room this node holds to other nodes. Rooms it cannot hand
/// over (no other node, Redis away) stay, and are counted and logged.
pub async fn hand_over_rooms(state: &Arc<AppState>, cluster: &Arc<Cluster>) -> DrainReport {
    let mut report = DrainReport::default();
    let notice = GoingAway {
        reason: "this server is restarting: your room moved to another server".into(),
        reconnect_url: None,
        retry_after_ms: HANDOVER_RETRY_AFTER_MS,
    };
    for _ in 0..PASSES {
        let rooms = cluster.leases.started_rooms();
        if rooms.is_empty() {
            break;
        }
        let mut targets = Targets::new(cluster);
        if cluster.redis().is_none() {
            warn!(rooms = rooms.len(), "drain: Redis is unreachable, so no room can be handed over");
            break;
        }
        // Snapshots go over a connection of their own: leases and
        // heartbeats never wait behind them.
        let snapshots = match super::connect(&cluster.redis_url).await {
            Ok(conn) => conn,
            Err(err) => {
                warn!(rooms = rooms.len(), "drain: no connection to Redis for the rooms' state ({err:#})");
                break;
            }
        };
        let mut running = JoinSet::new();
        let mut outcomes = Vec::new();
        for room in rooms {
            let Some(target) = targets.next() else {
                warn!("drain: no other node takes rooms, so none can be handed over");
                break;
            };
            while running.len() >= HANDOVER_CONCURRENCY {
                outcomes.extend(running.join_next().await.and_then(Result::ok));
            }
            let (state, cluster, conn) = (state.clone(), cluster.clone(), snapshots.clone());
            running.spawn(hand_over_room(state, cluster, conn, (room, target), notice.clone()));
        }
        outcomes.extend(running.join_all().await);
        report.handed_over += outcomes.iter().filter(|o| **o == Outcome::HandedOver).count();
        if !outcomes.contains(&Outcome::HandedOver) {
            break;
        }
    }
    report.kept = cluster.leases.started_rooms().len();
    if report.kept > 0 {
        warn!(
            rooms = report.kept,
            "drain: rooms not handed over end with this node; their members join afresh on another node"
        );
        state.telemetry.handovers[1].increment(report.kept as u64);
    }
    report
}

/// Hands one room to `target`, sending its snapshot over `snapshots` (a
/// connection of the drain's own).
async fn hand_over_room(
    state: Arc<AppState>,
    cluster: Arc<Cluster>,
    snapshots: redis::aio::ConnectionManager,
    (room, target): (RoomName, String),
    notice: GoingAway,
) -> Outcome {
    let Some(held) = cluster.leases.start_moving(&room) else { return Outcome::Kept };
    let shard = state.shards.get(state.shards.place(&room));
    let (reply, answer) = tokio::sync::oneshot::channel();
    if shard.send(HubEvent::HandOver { room: room.clone(), notice, reply }).await.is_err() {
        cluster.leases.stop_moving(&room);
        return Outcome::Kept;
    }
    let snapshot = match answer.await {
        Ok(Ok(snapshot)) => snapshot,
        Ok(Err(ExportError::NoSuchRoom)) => {
            cluster.leases.stop_moving(&room);
            return Outcome::Gone;
        }
        Ok(Err(err)) => {
            warn!(%room, "drain: the room cannot be handed over: {err}");
            cluster.leases.stop_moving(&room);
            return Outcome::Kept;
        }
        Err(_) => {
            cluster.leases.stop_moving(&room);
            return Outcome::Kept;
        }
    };
    let members = snapshot.members.len();
    // Serialized off the runtime's threads: tens of megabytes at most.
    let (snapshot, json) = tokio::task::spawn_blocking(move || {
        let json = serde_json::to_string(&snapshot);
        (snapshot, json)
    })
    .await
    .unwrap_or_else(|_| unreachable!("serializing cannot panic"));
    let moved = match json {
        Ok(json) if json.len() > MAX_SNAPSHOT_BYTES => {
            Moved::No(format!("its state is {} bytes, over {MAX_SNAPSHOT_BYTES}", json.len()))
        }
        Ok(json) => send(snapshots, &held, &target, &json).await,
        Err(err) => Moved::No(format!("{err}")),
    };
    match moved {
        Moved::Yes => {
            cluster.leases.moved_away(&room);
            state.telemetry.handovers[0].increment(1);
            info!(%room, node = %target, members, "room handed over");
            Outcome::HandedOver
        }
        Moved::No(why) => {
            warn!(%room, "drain: handing the room over failed ({why}): it stays here");
            let (reply, imported) = tokio::sync::oneshot::channel();
            let _ = shard.send(HubEvent::Import { snapshot: Box::new(snapshot), reply }).await;
            if !matches!(imported.await, Ok(Ok(()))) {
                // Not back either: the lease goes when it is found unused.
                cluster.leases.ended(&room);
            }
            cluster.leases.stop_moving(&room);
            Outcome::Kept
        }
        Moved::Unknown(why) => {
            // Neither here nor surely there: importing it back could make
            // two copies. Its members resume wherever the owner key says;
            // if the script never ran, the lease lapses and the room starts
            // again from its stream.
            warn!(%room, "drain: whether the room was handed over is unknown ({why}): it is not kept here");
            cluster.leases.moved_away(&room);
            Outcome::Kept
        }
    }
}

/// Whether the handover script ran.
enum Moved {
    Yes,
    No(String),
    Unknown(String),
}

/// Runs the handover script; when its answer is lost, reads the owner key
/// until it says (the script runs before a later command on the same
/// connection, so the key settles it), for at most a lease's life.
async fn send(mut conn: redis::aio::ConnectionManager, held: &Lease, target: &str, json: &str) -> Moved {
    let err = match lease::hand_over(&mut conn, held, target, json).await {
        Ok(true) => return Moved::Yes,
        Ok(false) => return Moved::No("the lease was no longer this node's".into()),
        Err(err) => format!("{err:#}"),
    };
    let deadline = tokio::time::Instant::now() + LEASE_TTL;
    while tokio::time::Instant::now() < deadline {
        match lease::owner(&mut conn, &held.room).await {
            Ok(Some(owner)) if owner.node == target => return Moved::Yes,
            Ok(Some(owner)) if owner == held.owner => return Moved::No(err),
            Ok(_) => return Moved::Unknown(err),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    Moved::Unknown(err)
}
