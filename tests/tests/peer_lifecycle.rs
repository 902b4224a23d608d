//! Leaving closes every connection and task: 50 join/leave cycles leave the
//! task count and memory where they were. Loopback-only namespace only.

use std::time::Duration;
use switchboard_e2e::{quiet_peer, server, wait_for_event};
use switchboard_peer::{Channel, PeerEvent};

/// Cycles measured after a warm-up of `WARMUP` cycles.
const CYCLES: usize = 50;
const WARMUP: usize = 5;
/// Tasks that may still be winding down when measured: webrtc-rs closes a
/// connection's tasks asynchronously and an occasional straggler outlives
/// the wait. A leak leaks every cycle (a dozen tasks per connection, 50
/// times over), far beyond this.
const TASK_SLACK: usize = 10;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb * 1024
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current().metrics().num_alive_tasks()
}

/// webrtc-rs winds its tasks down asynchronously after `close`; wait until
/// the count is back at `limit` or report where it got stuck.
async fn settle_tasks(limit: usize, cycle: usize) -> usize {
    let deadline = tokio::time::Instant::now() + switchboard_e2e::WAIT;
    loop {
        let n = alive_tasks();
        if n <= limit {
            return n;
        }
        assert!(tokio::time::Instant::now() < deadline, "after cycle {cycle}: {n} tasks alive, more than {limit}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_join_leave_cycles_leak_neither_tasks_nor_memory() {
    let srv = server().await;
    let mut host = quiet_peer(&srv, "cycles", "host").await;
    // Tasks with the host alone in the room: where every cycle must return.
    let baseline_tasks = alive_tasks();
    let mut baseline_rss = 0;
    for cycle in 0..WARMUP + CYCLES {
        let mut guest = quiet_peer(&srv, "cycles", "guest").await;
        let guest_id = guest.id().clone();
        wait_for_event(&mut guest, "the chat channel", |e| {
            matches!(e, PeerEvent::ChannelOpen { channel: Channel::Chat, .. })
        })
        .await;
        guest.send(Channel::Chat, "hello").await.expect("send");
        wait_for_event(&mut host, "the guest's message", |e| matches!(e, PeerEvent::Data { .. })).await;
        guest.leave().await;
        wait_for_event(
            &mut host,
            "the guest's departure",
            |e| matches!(e, PeerEvent::PeerLeft { remote, .. } if *remote == guest_id),
        )
        .await;
        if cycle + 1 == WARMUP {
            // Whatever the first cycles allocated for good (pools, caches)
            // is the memory baseline.
            baseline_rss = rss_bytes();
        }
    }
    let tasks = settle_tasks(baseline_tasks + TASK_SLACK, WARMUP + CYCLES).await;
    let rss = rss_bytes();
    let growth = rss.saturating_sub(baseline_rss);
    eprintln!("tasks: {baseline_tasks} -> {tasks}; RSS: {} KB -> {} KB", baseline_rss / 1024, rss / 1024);
    // A leaked peer connection holds buffers of several hundred KB and a
    // dozen tasks; 50 of them could not hide under these bounds.
    assert!(growth < 8 * 1024 * 1024, "RSS grew by {} KB over {CYCLES} cycles", growth / 1024);
}

/// `leave` returns once the server has the `leave`: a program that leaves
/// and exits must not leave its seat held for the resume grace (the peer
/// used to drop its socket with the `leave` still queued).
#[tokio::test]
async fn a_peer_that_leaves_is_gone_from_the_room_when_leave_returns() {
    let server = server().await;
    for round in 0..5 {
        let alone = quiet_peer(&server, "leaving", &format!("alone{round}")).await;
        alone.leave().await;
        let next = quiet_peer(&server, "leaving", "next").await;
        assert!(next.welcome.peers.is_empty(), "round {round}: still held: {:?}", next.welcome.peers);
        next.leave().await;
    }
}
