//! The leases this node holds, and where a room is placed (decision 0018).
//!
//! A room is placed by the node that sees a join for it while nobody owns
//! it: on the least loaded live node (this one on a tie). That node takes
//! the lease *for* the chosen node, so two nodes placing one room at once
//! cannot both win; the chosen node adopts it when the join reaches it.
//! The holder renews every [`LEASE_RENEW`]; a lease it can no longer renew
//! because someone else took the room evicts the room here. While Redis is
//! unreachable the rooms stay (nobody can take a lease meanwhile), and
//! their leases are renewed, or taken again, when it is back.
//!
//! A room first joined while Redis is unreachable is served here without a
//! lease (the cluster falls back to independent nodes, and calls can still
//! start); the lease is taken when Redis is back, and if another node took
//! the room meanwhile, this node's copy is evicted and its members join
//! the other.

use super::Cluster;
use super::lease::{self, LEASE_RENEW, LEASE_TTL, Lease, Owner};
use crate::hub_task::HubEvent;
use crate::router::Target;
use crate::state::AppState;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use switchboard_core::snapshot::{ImportError, RoomSnapshot};
use switchboard_protocol::{GoingAway, RoomName};
use tracing::{info, warn};

/// A lease adopted for a join that never made its room (a refused join)
/// is given back after this long.
pub const UNUSED_LEASE: Duration = Duration::from_secs(10);
/// Placement tries again this many times when it loses a race.
const PLACEMENT_TRIES: usize = 3;
/// How often placement looks again at a room whose owner died, until its
/// lease lapses.
const LAPSE_POLL: Duration = Duration::from_millis(250);
/// How often, and how long at most, placement looks again at a room whose
/// owner drains (it hands the room over within milliseconds, or keeps it).
const MOVING_POLL: Duration = Duration::from_millis(20);
const MOVING_WAIT: Duration = Duration::from_secs(2);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Debug)]
struct Held {
    /// `None`: made while Redis was unreachable, not leased yet.
    lease: Option<Lease>,
    /// The room exists in a shard here.
    started: bool,
    /// When `started` last changed (or the lease was taken): a lease whose
    /// room is not here for [`UNUSED_LEASE`] is given back.
    since: Instant,
    /// The room is being handed to another node (this node drains), or
    /// its state is on its way here (a take): no join is sent to it here
    /// meanwhile, but the lease is renewed.
    moving: bool,
}

/// The leases of this node.
#[derive(Debug, Default)]
pub struct Leases {
    held: Mutex<HashMap<RoomName, Held>>,
    /// Rooms being taken (their state read from Redis and handed to their
    /// shard): a second taker waits, so that no join reaches the shard
    /// before the room's state. One entry per take in progress.
    taking: Mutex<HashMap<RoomName, Arc<tokio::sync::Mutex<()>>>>,
}

impl Leases {
    /// Rooms held.
    pub fn len(&self) -> usize {
        lock(&self.held).len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rooms held, for `/v1/cluster`.
    pub fn rooms(&self) -> Vec<String> {
        let mut rooms: Vec<String> = lock(&self.held).keys().map(ToString::to_string).collect();
        rooms.sort();
        rooms
    }

    fn keep(&self, lease: Lease) {
        let room = lease.room.clone();
        let mut held = lock(&self.held);
        match held.get_mut(&room) {
            Some(entry) => entry.lease = Some(lease),
            None => {
                held.insert(room, Held { lease: Some(lease), started: false, since: Instant::now(), moving: false });
            }
        }
    }

    /// A renewal (or a retake by the renewals) of a lease still tracked
    /// here; a room forgotten meanwhile (handed over) stays forgotten.
    fn renewed(&self, lease: Lease) {
        if let Some(entry) = lock(&self.held).get_mut(&lease.room) {
            entry.lease = Some(lease);
        }
    }

    /// The owner key's value while this node holds `room` (what its writes
    /// for the room are fenced with).
    pub fn owner_value(&self, room: &RoomName) -> Option<String> {
        let held = lock(&self.held);
        let entry = held.get(room).filter(|h| !h.moving || h.started)?;
        let lease = entry.lease.as_ref()?;
        (lease.valid_until > Instant::now()).then(|| lease.owner.value())
    }

    /// Serves `room` here without a lease (Redis is unreachable).
    fn keep_unleased(&self, room: &RoomName) {
        let mut held = lock(&self.held);
        held.entry(room.clone()).or_insert(Held { lease: None, started: false, since: Instant::now(), moving: false });
    }

    /// Whether this node holds `room` now (and may act for it): leased and
    /// trusted, or served without a lease while Redis is away.
    pub fn holds(&self, room: &RoomName) -> bool {
        lock(&self.held)
            .get(room)
            .is_some_and(|h| !h.moving && h.lease.as_ref().is_none_or(|l| l.valid_until > Instant::now()))
    }

    /// The rooms made here (and not moving), for a drain.
    pub fn started_rooms(&self) -> Vec<RoomName> {
        lock(&self.held).iter().filter(|(_, h)| h.started && !h.moving).map(|(room, _)| room.clone()).collect()
    }

    /// Marks `room` as moving to another node and returns its lease: from
    /// now no join is sent to it here. `None` when this node does not hold
    /// it with a trusted lease (then it cannot hand it over).
    pub fn start_moving(&self, room: &RoomName) -> Option<Lease> {
        let mut held = lock(&self.held);
        let entry = held.get_mut(room).filter(|h| h.started && !h.moving)?;
        let lease = entry.lease.clone().filter(|l| l.valid_until > Instant::now())?;
        entry.moving = true;
        Some(lease)
    }

    /// A take began: the lease is held (and renewed) while the room's state
    /// is read, but joins wait (see [`Leases::arrived`]).
    fn arriving(&self, lease: Lease) {
        let room = lease.room.clone();
        let mut held = lock(&self.held);
        let entry =
            held.entry(room).or_insert(Held { lease: None, started: false, since: Instant::now(), moving: true });
        entry.lease = Some(lease);
        entry.moving = !entry.started;
    }

    /// The room's state is in its shard: joins may come.
    fn arrived(&self, room: &RoomName) {
        if let Some(entry) = lock(&self.held).get_mut(room) {
            entry.moving = false;
            entry.started = true;
            entry.since = Instant::now();
        }
    }

    /// The room stays here after all (its handover failed).
    pub fn stop_moving(&self, room: &RoomName) {
        if let Some(held) = lock(&self.held).get_mut(room) {
            held.moving = false;
        }
    }

    /// The room was handed to another node: forgotten here (nothing to
    /// renew or give back).
    pub fn moved_away(&self, room: &RoomName) {
        lock(&self.held).remove(room);
    }

    /// A shard made `room`. Normally this node holds it already; if not
    /// (its lease was given back or lost while a join was on its way),
    /// `false`: the caller must claim it (see [`claim`]).
    pub fn started(&self, room: &RoomName) -> bool {
        match lock(&self.held).get_mut(room) {
            Some(held) => {
                held.started = true;
                held.since = Instant::now();
                true
            }
            None => false,
        }
    }

    /// A shard ended `room`: the lease is kept for [`UNUSED_LEASE`] (a
    /// member coming back finds the room here), then given back.
    pub fn ended(&self, room: &RoomName) {
        if let Some(held) = lock(&self.held).get_mut(room) {
            held.started = false;
            held.since = Instant::now();
        }
    }

    /// Whether this node keeps `room` (leased or not, trusted or not).
    pub fn tracks(&self, room: &RoomName) -> bool {
        lock(&self.held).contains_key(room)
    }

    /// Gives `room` back, if it is still unused (checked under the lock: a
    /// join may have made the room again since the caller looked).
    async fn give_back(&self, cluster: &Cluster, room: &RoomName) {
        let removed = {
            let mut held = lock(&self.held);
            let unused = held.get(room).is_some_and(|h| !h.started && !h.moving && h.since.elapsed() > UNUSED_LEASE);
            if unused { held.remove(room) } else { None }
        };
        let Some(lease) = removed.and_then(|held| held.lease) else { return };
        if let Some(mut conn) = cluster.redis() {
            let _ = lease::release(&mut conn, &lease).await;
        }
    }

    /// Owner side: a join placed here by another node has come. The lease
    /// must name this node (the placing node took it for us); it is renewed
    /// at once, so this node knows until when it may trust it.
    pub async fn hold_here(&self, state: &AppState, cluster: &Cluster, room: &RoomName) -> Result<(), String> {
        if lock(&self.held).get(room).is_some_and(|h| h.moving && h.started) {
            return Err("this room is moving between nodes: join again".into());
        }
        if self.owner_value(room).is_some() {
            return Ok(());
        }
        let mut conn = cluster.redis().ok_or("the cluster's Redis is unreachable")?;
        let owner = lease::owner(&mut conn, room).await.map_err(|e| format!("{e:#}"))?;
        let Some(owner) = owner.filter(|o| o.node == cluster.node_id) else {
            return Err("this room is moving between nodes: join again".into());
        };
        match adopt(&mut conn, room, owner).await {
            Some(lease) => take(state, cluster, &mut conn, lease).await,
            None => Err("this room is moving between nodes: join again".into()),
        }
    }
}

/// A lease whose owner key names this node (taken for it by another node,
/// or by an earlier life of its own): renewed at once, so that this node
/// knows until when it may trust it.
async fn adopt(conn: &mut redis::aio::ConnectionManager, room: &RoomName, owner: Owner) -> Option<Lease> {
    let mut lease = Lease { room: room.clone(), owner, valid_until: Instant::now() };
    matches!(lease::renew(conn, &mut lease).await, Ok(true)).then_some(lease)
}

/// This node now holds `lease`: the room's state goes to its shard before
/// anything else about the room: the snapshot a draining node handed over,
/// or else its chat read back from Redis. Only then is the lease kept (and
/// joins sent to the room); a concurrent take of the same room waits.
async fn take(
    state: &AppState,
    cluster: &Cluster,
    conn: &mut redis::aio::ConnectionManager,
    lease: Lease,
) -> Result<(), String> {
    let room = lease.room.clone();
    let gate = lock(&cluster.leases.taking).entry(room.clone()).or_default().clone();
    let taken = {
        let _taking = gate.lock().await;
        take_now(state, cluster, conn, lease).await
    };
    let mut taking = lock(&cluster.leases.taking);
    // The last taker out removes the gate (the map holds one reference and
    // this taker another): a taker still waiting keeps it.
    if taking.get(&room).is_some_and(|g| Arc::ptr_eq(g, &gate) && Arc::strong_count(g) == 2) {
        taking.remove(&room);
    }
    taken
}

async fn take_now(
    state: &AppState,
    cluster: &Cluster,
    conn: &mut redis::aio::ConnectionManager,
    lease: Lease,
) -> Result<(), String> {
    let room = lease.room.clone();
    if lock(&cluster.leases.held).get(&room).is_some_and(|h| h.started) {
        // The room is here already (a renewal that lapsed, or a take that
        // just finished): nothing to read.
        cluster.leases.keep(lease);
        return Ok(());
    }
    let shard = state.shards.get(state.shards.place(&room));
    // Held from now (renewed while the state is read, which may take
    // longer than the lease lives), but no join is sent here until the
    // state is in the shard.
    cluster.leases.arriving(lease.clone());
    match bring_state(state, conn, shard, &room).await {
        Ok(()) => {
            cluster.leases.arrived(&room);
            state.telemetry.leases_taken.increment(1);
            Ok(())
        }
        Err(why) => {
            // Not here after all: the lease goes back (nothing was made).
            cluster.leases.moved_away(&room);
            let _ = lease::release(conn, &lease).await;
            Err(why)
        }
    }
}

/// Hands the room's state to its shard: the snapshot a draining node left,
/// or else its chat read back from the stream.
async fn bring_state(
    state: &AppState,
    conn: &mut redis::aio::ConnectionManager,
    shard: &tokio::sync::mpsc::Sender<HubEvent>,
    room: &RoomName,
) -> Result<(), String> {
    let stopping = || "this server is stopping".to_owned();
    let waiting =
        lease::read_snapshot(conn, room).await.map_err(|e| format!("reading the room's handed-over state: {e:#}"))?;
    if let Some((json, waited)) = waiting {
        let parsed = tokio::task::spawn_blocking(move || serde_json::from_str::<RoomSnapshot>(&json)).await;
        match parsed.map_err(|_| stopping())? {
            Ok(mut snapshot) => {
                // The time it waited, by Redis's clock (the two nodes'
                // clocks may disagree).
                snapshot.exported_unix_ms = crate::clock::now().unix_ms.saturating_sub(lease::ms(waited));
                let members = snapshot.members.len();
                let (reply, imported) = tokio::sync::oneshot::channel();
                let _ = shard.send(HubEvent::Import { snapshot: Box::new(snapshot), reply }).await;
                match imported.await.map_err(|_| stopping())? {
                    Ok(()) => {
                        // Deleted once imported: a take that failed before
                        // leaves it for the next one.
                        let _ = lease::drop_snapshot(conn, room).await;
                        info!(%room, members, "room handed over to this node");
                        return Ok(());
                    }
                    Err(ImportError::RoomExists) => {
                        warn!(%room, "a handed-over room exists here already: its snapshot is dropped");
                        let _ = lease::drop_snapshot(conn, room).await;
                        return Ok(());
                    }
                    Err(err) => warn!(%room, "a handed-over room cannot be made here ({err}): its chat is read back"),
                }
            }
            Err(err) => warn!(%room, "a handed-over room's state is unreadable ({err}): its chat is read back"),
        }
        let _ = lease::drop_snapshot(conn, room).await;
    }
    let messages = super::chat_store::read_back(conn, room, state.limits.chat_history)
        .await
        .map_err(|e| format!("reading the room's chat back: {e:#}"))?;
    let _ = shard.send(HubEvent::SeedChat { room: room.clone(), messages }).await;
    Ok(())
}

/// A room was made here that this node does not hold (its lease was given
/// back or lost while a join was on its way): take it, or give way to the
/// node that holds it.
pub async fn claim(state: Arc<AppState>, cluster: Arc<Cluster>, room: RoomName) {
    let Some(mut conn) = cluster.redis() else {
        cluster.leases.keep_unleased(&room);
        cluster.leases.started(&room);
        return;
    };
    match lease::acquire(&mut conn, &room, &cluster.node_id).await {
        Ok(Ok(lease)) => {
            cluster.leases.keep(lease);
            cluster.leases.started(&room);
        }
        Ok(Err(Some(owner))) if owner.node == cluster.node_id => {
            if let Some(lease) = adopt(&mut conn, &room, owner).await {
                cluster.leases.keep(lease);
                cluster.leases.started(&room);
            }
        }
        Ok(Err(owner)) => evict(&state, &cluster, &room, owner).await,
        Err(_) => {
            cluster.leases.keep_unleased(&room);
            cluster.leases.started(&room);
        }
    }
}

/// Where the room of a join lives: a shard here, or another node. Waits
/// (at most a lease's life) for the lease of an owner that died to lapse.
pub async fn place(state: &AppState, cluster: &Cluster, room: &RoomName) -> Result<Target, String> {
    let here = || Target::Shard(state.shards.place(room));
    if cluster.leases.holds(room) {
        return Ok(here());
    }
    let Some(mut conn) = cluster.redis() else {
        // Redis away for good (not one missed heartbeat): serve the room
        // here (see the module docs).
        if cluster.redis_down_for() >= super::REDIS_GIVE_UP && cluster.leases.len() < state.limits.max_rooms {
            cluster.leases.keep_unleased(room);
            return Ok(here());
        }
        return Err("the cluster's Redis is unreachable: try again shortly".into());
    };
    let deadline = Instant::now() + LEASE_TTL + LEASE_RENEW;
    let moving_deadline = Instant::now() + MOVING_WAIT;
    let mut tries = 0;
    loop {
        let owner = lease::owner(&mut conn, room).await.map_err(|e| format!("{e:#}"))?;
        let alive = cluster.nodes();
        match owner {
            Some(Owner { node, .. }) if node == cluster.node_id => {
                cluster.leases.hold_here(state, cluster, room).await?;
                return Ok(here());
            }
            // Its owner drains: the room is about to move (the owner key
            // names its next node within moments); a join sent there now
            // would only be told to come again.
            Some(Owner { node, .. })
                if alive.iter().any(|n| n.id == node && n.draining) && Instant::now() < moving_deadline =>
            {
                tokio::time::sleep(MOVING_POLL).await;
            }
            Some(Owner { node, .. }) if alive.iter().any(|n| n.id == node) => {
                return Ok(Target::Node(Arc::from(node.as_str())));
            }
            // Its owner died: the lease lapses within its TTL.
            Some(_) if Instant::now() < deadline => tokio::time::sleep(LAPSE_POLL).await,
            Some(_) => return Err("this room's node stopped; the room is not back yet: try again".into()),
            None => {
                // A bound on the leases a node keeps for rooms not (yet)
                // made here: a client cannot make it hold more than its rooms.
                if cluster.leases.len() >= state.limits.max_rooms {
                    return Err("this server holds as many rooms as it may: try again later".into());
                }
                let draining = state.draining.load(std::sync::atomic::Ordering::Relaxed);
                let chosen = least_loaded(&cluster.node_id, draining, &alive);
                match lease::acquire(&mut conn, room, &chosen).await.map_err(|e| format!("{e:#}"))? {
                    Ok(lease) if chosen == cluster.node_id => {
                        info!(%room, "room placed here");
                        take(state, cluster, &mut conn, lease).await?;
                        return Ok(here());
                    }
                    Ok(_) => {
                        info!(%room, node = %chosen, "room placed on another node");
                        return Ok(Target::Node(Arc::from(chosen.as_str())));
                    }
                    Err(_) => {
                        tries += 1;
                        if tries >= PLACEMENT_TRIES {
                            return Err("this room is being placed: try again".into());
                        }
                    }
                }
            }
        }
    }
}

/// The live node with the fewest rooms, then connections; this node on a
/// tie (and when the registry has not listed anyone yet). A draining node
/// takes no room while another can (this one included, `draining`).
fn least_loaded(me: &str, draining: bool, alive: &[super::NodeInfo]) -> String {
    let open: Vec<&super::NodeInfo> = alive.iter().filter(|n| !(n.draining || (draining && n.id == me))).collect();
    let mine = open.iter().find(|n| n.id == me);
    let best = open.iter().min_by_key(|n| (n.rooms, n.connections, n.id != me));
    match (mine, best) {
        (Some(mine), Some(best)) if (mine.rooms, mine.connections) <= (best.rooms, best.connections) => me.to_owned(),
        (_, Some(best)) => best.id.clone(),
        (_, None) => me.to_owned(),
    }
}

/// Renews every lease this node holds until the server stops.
pub async fn run_renewals(state: Arc<AppState>, cluster: Arc<Cluster>) {
    let mut tick = tokio::time::interval(LEASE_RENEW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !state.shutting_down.load(std::sync::atomic::Ordering::Relaxed) {
        tick.tick().await;
        let Some(mut conn) = cluster.redis() else { continue };
        let leases: Vec<(RoomName, Option<Lease>, bool, Instant, bool)> = lock(&cluster.leases.held)
            .iter()
            .map(|(room, h)| (room.clone(), h.lease.clone(), h.started, h.since, h.moving))
            .collect();
        for (room, lease, started, since, moving) in leases {
            if !started && !moving && since.elapsed() > UNUSED_LEASE {
                cluster.leases.give_back(&cluster, &room).await;
                continue;
            }
            let renewed = match lease {
                Some(mut lease) => match lease::renew(&mut conn, &mut lease).await {
                    Ok(true) => Some(lease),
                    Ok(false) => None,
                    // Redis unreachable: keep the room (see the module docs).
                    Err(_) => continue,
                },
                None => None,
            };
            if let Some(lease) = renewed {
                cluster.leases.renewed(lease);
                continue;
            }
            if moving {
                // Being handed over: the handover settles who holds it.
                continue;
            }
            // Not leased (made while Redis was away), or lapsed: take it
            // again, adopt it if it names this node, or give way.
            match lease::acquire(&mut conn, &room, &cluster.node_id).await {
                Ok(Ok(taken)) => cluster.leases.renewed(taken),
                Ok(Err(Some(owner))) if owner.node == cluster.node_id => {
                    if let Some(lease) = adopt(&mut conn, &room, owner).await {
                        cluster.leases.renewed(lease);
                    }
                }
                Ok(Err(owner)) => evict(&state, &cluster, &room, owner).await,
                Err(_) => {}
            }
        }
    }
}

/// Another node owns `room`: this node's copy goes, and its members are
/// told to come back (they join the other node's).
pub async fn evict(state: &AppState, cluster: &Cluster, room: &RoomName, owner: Option<Owner>) {
    warn!(%room, owner = ?owner.map(|o| o.node), "room held by another node: evicted here");
    lock(&cluster.leases.held).remove(room);
    state.telemetry.rooms_evicted.increment(1);
    let notice =
        GoingAway { reason: "this room moved to another server".into(), reconnect_url: None, retry_after_ms: 500 };
    let shard = state.shards.get(state.shards.place(room));
    let _ = shard.send(HubEvent::Evict { room: room.clone(), notice }).await;
}

#[cfg(test)]
mod tests {
    use super::super::NodeInfo;
    use super::*;

    fn node(id: &str, rooms: usize, connections: usize) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            addr: String::new(),
            started_unix_ms: 0,
            connections,
            rooms,
            draining: false,
            snapshot_versions: vec![1],
        }
    }

    #[test]
    fn rooms_go_to_the_least_loaded_node_and_stay_here_on_a_tie() {
        assert_eq!(least_loaded("a", false, &[]), "a", "nobody listed yet");
        assert_eq!(least_loaded("a", false, &[node("a", 1, 5), node("b", 1, 5)]), "a");
        assert_eq!(least_loaded("a", false, &[node("a", 2, 0), node("b", 1, 9)]), "b");
        assert_eq!(least_loaded("a", false, &[node("a", 1, 9), node("b", 1, 2)]), "b");
        assert_eq!(least_loaded("a", false, &[node("b", 0, 0)]), "b", "this node not listed (yet)");
    }

    #[test]
    fn a_draining_node_takes_no_room_while_another_can() {
        let drains = |mut n: NodeInfo| {
            n.draining = true;
            n
        };
        assert_eq!(least_loaded("a", true, &[node("a", 0, 0), node("b", 9, 9)]), "b", "this node drains");
        assert_eq!(least_loaded("a", false, &[node("a", 5, 5), drains(node("b", 0, 0))]), "a", "b drains");
        assert_eq!(least_loaded("a", true, &[node("a", 0, 0)]), "a", "nobody else: here after all");
    }
}
