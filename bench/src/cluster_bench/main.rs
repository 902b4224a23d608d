//! `switchboard-cluster-bench` (issue 14): a single node against three
//! nodes on Redis, side by side in one run with the same load client.
//!
//! - Relay latency (p50, p99) at a fixed open-loop rate, and server CPU per
//!   relayed message: on a single node (no Redis); in the cluster with both
//!   ends on the room's node; and in the cluster with the receiver on
//!   another node (every relay crosses the bridge through Redis). The
//!   cluster's CPU counts every node and Redis.
//! - Owner failover: the room's node is SIGKILLed; the time until a relay
//!   between two clients on the other nodes is served by the room's new
//!   owner (median of several rounds).
//! - Redis memory per room (lease, fence, and a stream of chat).
//!
//! Run it through `scripts/bench-cluster` (release build, loopback-only
//! namespace); it rewrites its section of docs/benchmarks.md.

// Shared with the side-by-side bench, which uses the parts this one does not.
#[path = "../cluster_view.rs"]
mod cluster_view;
#[path = "../latency.rs"]
mod latency;
#[allow(dead_code)]
#[path = "../process.rs"]
mod process;
#[path = "../section.rs"]
mod section;
#[allow(dead_code)]
#[path = "../target.rs"]
mod target;

use anyhow::{Context, bail};
use clap::Parser;
use cluster_view::cluster_view;
use futures_util::{SinkExt, StreamExt};
use process::ServerProc;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use target::{Endpoint, Kind};
use tokio_tungstenite::tungstenite::Message;

const BEGIN: &str = "<!-- cluster-bench:begin -->";
const END: &str = "<!-- cluster-bench:end -->";

#[derive(Debug, Parser)]
#[command(about = "Single node against three nodes on Redis: relay latency, CPU per message, failover")]
struct Args {
    /// The Switchboard release binary.
    #[arg(long, default_value = "target/release/switchboard")]
    switchboard_bin: PathBuf,
    /// Relayed messages per second (all pairs together).
    #[arg(long, default_value_t = 5000)]
    rate: u32,
    /// Sender/receiver pairs (one room each).
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// Seconds measured per latency run (after a 2 s warm-up).
    #[arg(long, default_value_t = 10)]
    measure_s: u64,
    /// Failover rounds (the median is reported).
    #[arg(long, default_value_t = 5)]
    failovers: usize,
    /// Small and short: a check that the bench works, not figures.
    #[arg(long)]
    quick: bool,
    /// Rewrite this Markdown file's cluster section.
    #[arg(long)]
    write: Option<PathBuf>,
    /// The command line recorded with the figures.
    #[arg(long, default_value = "scripts/bench-cluster")]
    command: String,
    /// Idle connections per node for the memory figures (three nodes; the
    /// client is three processes, one per node, because of the per-process
    /// descriptor limit); 0 skips them.
    #[arg(long, default_value_t = 15_000)]
    idle_per_node: usize,
    /// Internal: run as one idle client process (the node's address, this
    /// client's index among three, and its connection count).
    #[arg(long, hide = true, num_args = 3, value_names = ["ADDR", "INDEX", "COUNT"])]
    idle_client: Option<Vec<String>>,
}

/// Connections an idle client opens at once.
const IDLE_CONCURRENCY: usize = 200;
/// Members per room in the idle figures; a room's members are on different
/// nodes (connection j of client k is global member 3j + k).
const IDLE_ROOM: usize = 4;

/// One idle client process: joins `count` connections to `addr`, says
/// `ready` on stdout, and holds them until stdin closes.
async fn idle_client(addr: SocketAddr, index: usize, count: usize) -> anyhow::Result<()> {
    let ep = Endpoint { kind: Kind::Switchboard, addr };
    let joined: Vec<anyhow::Result<(target::Ws, String)>> = futures_util::stream::iter(0..count)
        .map(|j| async move {
            let member = 3 * j + index;
            ep.join(&format!("idle{}", member / IDLE_ROOM), &format!("idle{member}")).await
        })
        .buffer_unordered(IDLE_CONCURRENCY)
        .collect()
        .await;
    let mut held = Vec::with_capacity(count);
    for j in joined {
        held.push(j?.0);
    }
    println!("ready");
    let mut line = String::new();
    let _ = tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line)).await;
    drop(held);
    Ok(())
}

/// Memory with `per_node` idle connections on each of three nodes.
struct Idle {
    per_node: usize,
    /// Per node: (connections it holds itself, bridged ones it hosts for the
    /// rooms it owns, RSS growth per held connection in bytes).
    nodes: Vec<(usize, usize, f64)>,
    redis_per_room: f64,
    rooms: usize,
}

async fn idle(bin: &std::path::Path, per_node: usize) -> anyhow::Result<Idle> {
    use tokio::io::AsyncBufReadExt;
    let cluster = Cluster::start(bin).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let base: Vec<u64> = cluster.nodes.iter().map(ServerProc::rss).collect::<anyhow::Result<_>>()?;
    let redis_base = redis_memory(&cluster.redis)?;
    let me = std::env::current_exe()?;
    let mut clients = Vec::new();
    for (index, node) in cluster.nodes.iter().enumerate() {
        let mut child = tokio::process::Command::new(&me)
            .args(["--idle-client", &node.addr.to_string(), &index.to_string(), &per_node.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting an idle client")?;
        let stdout = child.stdout.take().context("stdout")?;
        clients.push((child, tokio::io::BufReader::new(stdout).lines()));
    }
    for (_, lines) in &mut clients {
        let line = tokio::time::timeout(Duration::from_secs(300), lines.next_line()).await.context("idle client")??;
        if line.as_deref() != Some("ready") {
            bail!("an idle client failed: {line:?}");
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut nodes = Vec::new();
    let mut rooms = 0;
    for (i, node) in cluster.nodes.iter().enumerate() {
        let view = cluster_view(node.addr).await?;
        let hosted = view["bridged"]["from_other_nodes"].as_u64().unwrap_or(0) as usize;
        rooms += view["rooms"].as_array().map_or(0, Vec::len);
        let growth = node.rss()?.saturating_sub(base[i]) as f64 / per_node as f64;
        nodes.push((per_node, hosted, growth));
    }
    let redis_per_room = redis_memory(&cluster.redis)?.saturating_sub(redis_base) as f64 / rooms.max(1) as f64;
    drop(clients);
    Ok(Idle { per_node, nodes, redis_per_room, rooms })
}

/// One latency and CPU run.
struct Run {
    name: &'static str,
    p50_ms: f64,
    p99_ms: f64,
    messages: u64,
    cpu_us_per_message: f64,
}

fn run_of(name: &'static str, run: &latency::LatencyRun) -> Run {
    let ms = |q: f64| run.histogram.value_at_quantile(q) as f64 / 1e3;
    let per = run.server_cpu.as_secs_f64() * 1e6 / run.messages.max(1) as f64;
    Run { name, p50_ms: ms(0.5), p99_ms: ms(0.99), messages: run.messages, cpu_us_per_message: per }
}

/// Three nodes on one Redis.
struct Cluster {
    redis: ServerProc,
    nodes: Vec<ServerProc>,
}

impl Cluster {
    async fn start(bin: &std::path::Path) -> anyhow::Result<Self> {
        let redis = ServerProc::redis()?;
        let url = format!("redis://{}/", redis.addr);
        let mut nodes = Vec::new();
        for i in 1..=3 {
            let extra = ["--redis-url".to_owned(), url.clone(), "--node-id".to_owned(), format!("node-{i}")];
            nodes.push(ServerProc::switchboard(bin, &extra)?);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in &nodes {
            loop {
                let view = cluster_view(node.addr).await.unwrap_or_default();
                if view["nodes"].as_array().map_or(0, Vec::len) == 3 {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("the nodes did not find each other in 20 s");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(Self { redis, nodes })
    }

    fn endpoint(&self, i: usize) -> Endpoint {
        Endpoint { kind: Kind::Switchboard, addr: self.nodes[i].addr }
    }

    /// CPU of every node and Redis together.
    fn cpu(&self) -> anyhow::Result<Duration> {
        let mut total = self.redis.cpu()?;
        for node in &self.nodes {
            total += node.cpu()?;
        }
        Ok(total)
    }
}

/// Redis's `used_memory`, bytes.
fn redis_memory(redis: &ServerProc) -> anyhow::Result<u64> {
    let out = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &redis.addr.port().to_string(), "info", "memory"])
        .output()
        .context("redis-cli")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("used_memory:")).context("used_memory")?;
    Ok(line.trim_start_matches("used_memory:").trim().parse()?)
}

/// Joins `room` at `addr` until a welcome comes (the room may be between
/// owners: `unavailable`, or a socket closed by a node that lost it).
async fn join_until_in(addr: SocketAddr, room: &str, name: &str) -> (target::Ws, String) {
    let ep = Endpoint { kind: Kind::Switchboard, addr };
    loop {
        if let Ok(Ok(joined)) = tokio::time::timeout(Duration::from_secs(2), ep.join(room, name)).await {
            return joined;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One failover: the time from SIGKILL of the room's node to the first
/// relay served by its new owner between clients on the other two nodes.
async fn failover(bin: &std::path::Path, round: usize) -> anyhow::Result<Duration> {
    let mut cluster = Cluster::start(bin).await?;
    let room = format!("failover{round}");
    // The room lives on node-1 (its first join is there).
    let (_holder, _) = cluster.endpoint(0).join(&room, "holder").await?;
    let (_x, _) = cluster.endpoint(1).join(&room, "x").await?;
    let killed = Instant::now();
    cluster.nodes[0].kill();
    let (b_addr, c_addr) = (cluster.nodes[1].addr, cluster.nodes[2].addr);
    loop {
        let (mut sender, _) = join_until_in(b_addr, &room, "sender").await;
        let (mut receiver, receiver_id) = join_until_in(c_addr, &room, "receiver").await;
        let offer = cluster.endpoint(1).offer(&receiver_id, "v=0\\r\\n");
        if sender.send(Message::text(offer)).await.is_err() {
            continue;
        }
        let got = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(Message::Text(text))) = receiver.next().await {
                if text.contains(r#""type":"offer""#) {
                    return true;
                }
            }
            false
        })
        .await;
        if matches!(got, Ok(true)) {
            return Ok(killed.elapsed());
        }
    }
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(client) = &args.idle_client {
        let addr: SocketAddr = client[0].parse()?;
        return idle_client(addr, client[1].parse()?, client[2].parse()?).await;
    }
    let (pairs, rate, measure, failovers) = if args.quick {
        (5, 500, Duration::from_secs(2), 1)
    } else {
        (args.pairs, args.rate, Duration::from_secs(args.measure_s), args.failovers)
    };
    let warmup = Duration::from_secs(if args.quick { 1 } else { 2 });
    let bin = &args.switchboard_bin;

    eprintln!("single node: {rate} msg/s over {pairs} pairs");
    let single = ServerProc::switchboard(bin, &[])?;
    let ep = Endpoint { kind: Kind::Switchboard, addr: single.addr };
    let alone = latency::run(ep, &|| single.cpu(), pairs, rate, warmup, measure).await?;
    drop(single);

    eprintln!("three nodes on Redis");
    let cluster = Cluster::start(bin).await?;
    let memory_before = redis_memory(&cluster.redis)?;
    let same = latency::run(cluster.endpoint(0), &|| cluster.cpu(), pairs, rate, warmup, measure).await?;
    let placed_here = cluster_view(cluster.nodes[0].addr).await?["rooms"].as_array().map_or(0, Vec::len);
    let cross =
        latency::run_across(cluster.endpoint(0), cluster.endpoint(1), &|| cluster.cpu(), pairs, rate, warmup, measure)
            .await?;
    let rooms_now: usize = {
        let mut n = 0;
        for node in &cluster.nodes {
            n += cluster_view(node.addr).await?["rooms"].as_array().map_or(0, Vec::len);
        }
        n
    };
    let memory_after = redis_memory(&cluster.redis)?;
    let per_room = memory_after.saturating_sub(memory_before) / rooms_now.max(1) as u64;
    drop(cluster);

    let mut times = Vec::new();
    for round in 0..failovers {
        eprintln!("failover {}/{failovers}", round + 1);
        times.push(failover(bin, round).await?);
    }
    let failover_median = median(times.clone());

    let per_node = if args.quick { 300 } else { args.idle_per_node };
    let idle_figures = if per_node > 0 {
        eprintln!("{per_node} idle connections on each of three nodes");
        Some(idle(bin, per_node).await?)
    } else {
        None
    };

    let runs =
        [run_of("single node", &alone), run_of("cluster, same node", &same), run_of("cluster, cross node", &cross)];
    let mut out = String::new();
    let _ = writeln!(out, "{BEGIN}");
    let _ = writeln!(out, "### Cluster: single node against three nodes on Redis\n");
    let _ = writeln!(
        out,
        "`{}` ({}), one run, this 2-core machine shared by the load client, the nodes and Redis.\n",
        args.command,
        today()
    );
    let _ = writeln!(
        out,
        "Relays at {rate} msg/s over {pairs} pairs ({} s measured after a {} s warm-up); CPU counts every server process (the cluster's: three nodes and Redis).\n",
        measure.as_secs(),
        warmup.as_secs()
    );
    let _ = writeln!(out, "| Run | p50 | p99 | relays measured | server CPU per relay |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    for run in &runs {
        let _ = writeln!(
            out,
            "| {} | {:.2} ms | {:.2} ms | {} | {:.1} µs |",
            run.name, run.p50_ms, run.p99_ms, run.messages, run.cpu_us_per_message
        );
    }
    let ratio = runs[2].cpu_us_per_message / runs[0].cpu_us_per_message.max(f64::MIN_POSITIVE);
    let _ = writeln!(
        out,
        "\n- Cross-node CPU per relay: **{ratio:.1}x** the single node's (target: at most 3x); cross-node p99 **{:.2} ms** (target: at most 2 ms).",
        runs[2].p99_ms
    );
    let _ = writeln!(
        out,
        "- Rooms the same-node run placed on the node its clients joined: {placed_here} of {pairs} (placement picks the least loaded node, from loads up to a second old)."
    );
    let _ = writeln!(
        out,
        "- Redis memory per room (its lease and fence: these rooms had no chat): about {per_room} bytes over {rooms_now} rooms."
    );
    let listed: Vec<String> = times.iter().map(|t| format!("{:.2}", t.as_secs_f64())).collect();
    let _ = writeln!(
        out,
        "- Owner failover (SIGKILL of the room's node to the first relay served by its new owner, between clients on the other nodes): median **{:.2} s** of {} ({} s). The lease lives 3 s; the target is at most 5 s after it lapses.",
        failover_median.as_secs_f64(),
        times.len(),
        listed.join(", ")
    );
    if let Some(idle) = &idle_figures {
        let total = idle.per_node * 3;
        let _ = writeln!(
            out,
            "\nIdle: {total} joined connections, {} on each node (three client processes, one per node: the descriptor limit is per process), in {} rooms of {IDLE_ROOM} whose members are on different nodes.\n",
            idle.per_node, idle.rooms
        );
        let _ = writeln!(
            out,
            "| Node | connections it holds | bridged connections it hosts (rooms it owns) | RSS growth per held connection |"
        );
        let _ = writeln!(out, "|---|---|---|---|");
        for (i, (held, hosted, growth)) in idle.nodes.iter().enumerate() {
            let _ = writeln!(out, "| node-{} | {held} | {hosted} | {:.1} KB |", i + 1, growth / 1024.0);
        }
        let _ = writeln!(
            out,
            "\nRedis memory per room with this many rooms: about {:.0} bytes (lease and fence).",
            idle.redis_per_room
        );
    }
    let _ = writeln!(out, "{END}");
    print!("{out}");
    if let Some(path) = &args.write {
        section::write_section(path, BEGIN, END, &out)?;
    }
    Ok(())
}

fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
