//! Room leases: who owns a room in the cluster (decision 0018).
//!
//! The owner key `sb:room:<R>:owner` holds `<node>:<fence>` and expires
//! after [`LEASE_TTL`] unless renewed. The fence comes from `INCR` on the
//! room's fence key when the lease is taken, so a later owner always holds a
//! greater one. Taking, renewing and giving back are scripts that compare
//! the whole value, so a node whose lease has lapsed cannot renew or delete
//! the next owner's. A node trusts its lease only until [`Lease::valid_until`]:
//! the time its last successful renewal was *sent*, plus the TTL, minus
//! [`LEASE_MARGIN`] for clock drift and the round trip.

use super::{REDIS_TIMEOUT, keys};
use anyhow::Context;
use redis::aio::ConnectionManager;
use std::time::{Duration, Instant};
use switchboard_protocol::RoomName;

/// How long a lease lives without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(3);
/// How often a held lease is renewed.
pub const LEASE_RENEW: Duration = Duration::from_secs(1);
/// How much sooner than Redis a holder stops trusting its lease.
pub const LEASE_MARGIN: Duration = Duration::from_millis(500);
/// How long a fence counter is kept after the last time its room was
/// taken: the counters cannot pile up in Redis (one per room name used in
/// the last hour). Fences only need to grow while a lapsed holder might
/// still act, which is seconds; owner values also carry the node id.
pub const FENCE_KEEP: Duration = Duration::from_secs(3600);

/// `KEYS[1]` owner, `KEYS[2]` fence; `ARGV[1]` node, `ARGV[2]` TTL ms,
/// `ARGV[3]` fence keep ms. Returns `{1, value}` when taken, `{0, current}`
/// when someone holds it.
const ACQUIRE: &str = r"
local current = redis.call('GET', KEYS[1])
if current then return {0, current} end
local fence = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local value = ARGV[1] .. ':' .. fence
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return {1, value}
";

/// `KEYS[1]` owner; `ARGV[1]` value, `ARGV[2]` TTL ms. 1 when renewed.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// `KEYS[1]` owner; `ARGV[1]` value. 1 when given back.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// `KEYS[1]` owner, `KEYS[2]` fence, `KEYS[3]` handover; `ARGV[1]` the
/// holder's value, `ARGV[2]` the next owner's node, `ARGV[3]` TTL ms,
/// `ARGV[4]` fence keep ms, `ARGV[5]` the snapshot, `ARGV[6]` how long
/// it is kept (ms). 1 when handed over; 0 when the lease was not ours.
const HAND_OVER: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local fence = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('SET', KEYS[1], ARGV[2] .. ':' .. fence, 'PX', ARGV[3])
redis.call('SET', KEYS[3], ARGV[5], 'PX', ARGV[6])
return 1
";

/// How long a handed-over room's snapshot waits for its next owner: past
/// the resume grace its sessions are over anyway.
pub const HANDOVER_KEEP: Duration = Duration::from_secs(60);

/// A room's owner as the owner key says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The owning node's id.
    pub node: String,
    /// Its fence: greater for every later owner of the room.
    pub fence: u64,
}

impl Owner {
    /// Parses `<node>:<fence>`; `None` for anything else (a key written by
    /// something that is not Switchboard is treated as nobody's).
    pub fn parse(value: &str) -> Option<Self> {
        let (node, fence) = value.rsplit_once(':')?;
        keys::valid_node_id(node).then_some(())?;
        Some(Self { node: node.to_owned(), fence: fence.parse().ok()? })
    }

    /// The owner key's value.
    pub fn value(&self) -> String {
        format!("{}:{}", self.node, self.fence)
    }
}

/// A lease this node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The room.
    pub room: RoomName,
    /// The owner key's value while the lease is ours.
    pub owner: Owner,
    /// Until when this node may act as the owner without a renewal.
    pub valid_until: Instant,
}

impl Lease {
    fn trusted_from(sent: Instant) -> Instant {
        sent + LEASE_TTL - LEASE_MARGIN
    }
}

/// `d` in whole milliseconds (what Redis takes), saturating.
pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

async fn bounded<T>(op: impl Future<Output = redis::RedisResult<T>>) -> anyhow::Result<T> {
    Ok(tokio::time::timeout(REDIS_TIMEOUT, op).await.context("Redis: timed out")??)
}

/// Who owns `room` now, if anyone.
pub async fn owner(conn: &mut ConnectionManager, room: &RoomName) -> anyhow::Result<Option<Owner>> {
    let value: Option<String> = bounded(redis::cmd("GET").arg(keys::room_owner(room)).query_async(conn)).await?;
    Ok(value.as_deref().and_then(Owner::parse))
}

/// Takes `room` for `node` unless someone holds it: `Ok(lease)`, or
/// `Err(current owner)`.
pub async fn acquire(
    conn: &mut ConnectionManager,
    room: &RoomName,
    node: &str,
) -> anyhow::Result<Result<Lease, Option<Owner>>> {
    let sent = Instant::now();
    let script = redis::Script::new(ACQUIRE);
    let mut call = script.key(keys::room_owner(room));
    call.key(keys::room_fence(room)).arg(node).arg(ms(LEASE_TTL)).arg(ms(FENCE_KEEP));
    let (taken, value): (i64, String) = bounded(call.invoke_async(conn)).await?;
    if taken != 1 {
        return Ok(Err(Owner::parse(&value)));
    }
    let owner = Owner::parse(&value).context("the lease script wrote an unparsable owner")?;
    Ok(Ok(Lease { room: room.clone(), owner, valid_until: Lease::trusted_from(sent) }))
}

/// Renews `lease`; `false` when it is no longer ours (it lapsed, and maybe
/// someone else took the room).
pub async fn renew(conn: &mut ConnectionManager, lease: &mut Lease) -> anyhow::Result<bool> {
    let sent = Instant::now();
    let script = redis::Script::new(RENEW);
    let mut call = script.key(keys::room_owner(&lease.room));
    call.arg(lease.owner.value()).arg(ms(LEASE_TTL));
    let renewed: i64 = bounded(call.invoke_async(conn)).await?;
    if renewed == 1 {
        lease.valid_until = Lease::trusted_from(sent);
    }
    Ok(renewed == 1)
}

/// Gives `lease` back (the room ended here); `false` when it was not ours
/// any more.
pub async fn release(conn: &mut ConnectionManager, lease: &Lease) -> anyhow::Result<bool> {
    let script = redis::Script::new(RELEASE);
    let mut call = script.key(keys::room_owner(&lease.room));
    call.arg(lease.owner.value());
    let released: i64 = bounded(call.invoke_async(conn)).await?;
    Ok(released == 1)
}

/// Hands `lease`'s room to `node` with its state `snapshot` (JSON), in one
/// step: the owner key names `node` (with a new fence, so this node's
/// late writes for the room are refused) and the snapshot waits for it.
/// `false` when the lease was no longer ours.
pub async fn hand_over(
    conn: &mut ConnectionManager,
    lease: &Lease,
    node: &str,
    snapshot: &str,
) -> anyhow::Result<bool> {
    let script = redis::Script::new(HAND_OVER);
    let mut call = script.key(keys::room_owner(&lease.room));
    call.key(keys::room_fence(&lease.room)).key(keys::room_handover(&lease.room));
    call.arg(lease.owner.value()).arg(node).arg(ms(LEASE_TTL)).arg(ms(FENCE_KEEP));
    call.arg(snapshot).arg(ms(HANDOVER_KEEP));
    // A large snapshot takes longer to send than a lease call: the bound
    // grows with it (about 10 MB/s more).
    let allowed = REDIS_TIMEOUT + Duration::from_millis(u64::try_from(snapshot.len() / 10_000).unwrap_or(u64::MAX));
    let moved: i64 = tokio::time::timeout(allowed, call.invoke_async(conn)).await.context("Redis: timed out")??;
    Ok(moved == 1)
}

/// The snapshot of `room` handed over by its last owner, if one waits,
/// and how long it has waited (by Redis's clock: its key's remaining
/// life). Left in Redis until [`drop_snapshot`]: a take that fails halfway
/// leaves it for the next.
pub async fn read_snapshot(
    conn: &mut ConnectionManager,
    room: &RoomName,
) -> anyhow::Result<Option<(String, Duration)>> {
    // Up to tens of megabytes: longer than a lease call may take.
    let allowed = REDIS_TIMEOUT + Duration::from_secs(10);
    let key = keys::room_handover(room);
    let read = redis::pipe().get(&key).cmd("PTTL").arg(&key).to_owned();
    let (json, left_ms): (Option<String>, i64) =
        tokio::time::timeout(allowed, read.query_async(conn)).await.context("Redis: timed out")??;
    let left = Duration::from_millis(u64::try_from(left_ms).unwrap_or(0));
    Ok(json.map(|json| (json, HANDOVER_KEEP.saturating_sub(left))))
}

/// Deletes `room`'s handed-over snapshot (it was imported).
pub async fn drop_snapshot(conn: &mut ConnectionManager, room: &RoomName) -> anyhow::Result<()> {
    bounded(redis::cmd("DEL").arg(keys::room_handover(room)).query_async::<i64>(conn)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_values_parse_and_round_trip() {
        let owner = Owner::parse("node-a:42").expect("parses");
        assert_eq!(owner, Owner { node: "node-a".into(), fence: 42 });
        assert_eq!(owner.value(), "node-a:42");
        for bad in ["", "node-a", "node-a:", ":1", "node a:1", "node-a:x", "a:b:c"] {
            assert_eq!(Owner::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_lease_is_trusted_for_less_than_redis_keeps_it() {
        let sent = Instant::now();
        let until = Lease::trusted_from(sent);
        assert!(until < sent + LEASE_TTL && until > sent + LEASE_RENEW * 2);
    }
}
