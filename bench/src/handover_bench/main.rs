//! `switchboard-handover-bench` (issue 15): how long a drain takes.
//!
//! - **Handover time per room**, for rooms of 2, 8 and 32 members whose
//!   replay buffers are full (nobody acknowledges; about 1 KB chat events
//!   until the byte budget is reached): from the first member's
//!   `going_away` (the room is exported then) to the first relay the new
//!   owner serves between two members that resumed there. That spans the
//!   snapshot, the fenced transfer through Redis, the import, and the
//!   resumes. Also the time until every member has resumed. Median of the
//!   rounds.
//! - **Drain time of a node owning 1,000 rooms** (two members each): from
//!   SIGTERM to the process's exit, and until every member has resumed on
//!   the other node.
//!
//! Two release nodes on one Redis; the draining node runs with
//! `--drain-delay-ms 1100` (just over a registry heartbeat: the delay is
//! for a load balancer, and there is none here). Members connect to the nodes directly and resume at the
//! other node as soon as they read `going_away`. Run it through
//! `scripts/bench-handover`; it rewrites its section of docs/benchmarks.md.

#[path = "../cluster_view.rs"]
mod cluster_view;
#[allow(dead_code)]
#[path = "../process.rs"]
mod process;
#[path = "../section.rs"]
mod section;

use anyhow::{Context, bail};
use clap::Parser;
use cluster_view::cluster_view;
use futures_util::{SinkExt, StreamExt};
use process::ServerProc;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// The drained node's `--drain-delay-ms`: just over a registry heartbeat,
/// so that the other node knows it drains (there is no load balancer to
/// wait for here; a deployment uses the 1.5 s default).
const DRAIN_DELAY_MS: &str = "1100";

const BEGIN: &str = "<!-- handover-bench:begin -->";
const END: &str = "<!-- handover-bench:end -->";

#[derive(Debug, Parser)]
#[command(about = "Drain: handover time per room (2, 8, 32 members, full replay buffers) and a 1,000-room drain")]
struct Args {
    /// The Switchboard release binary.
    #[arg(long, default_value = "target/release/switchboard")]
    switchboard_bin: PathBuf,
    /// Rounds per room size (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Rooms owned by the node drained in the second part.
    #[arg(long, default_value_t = 1000)]
    rooms: usize,
    /// Small and short: a check that the bench works, not figures.
    #[arg(long)]
    quick: bool,
    /// Rewrite this Markdown file's handover section.
    #[arg(long)]
    write: Option<PathBuf>,
    /// The command line recorded with the figures.
    #[arg(long, default_value = "scripts/bench-handover")]
    command: String,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Two nodes on a Redis: `a` (started first, so it holds the rooms) is
/// drained, `b` takes them.
struct Pair {
    _redis: ServerProc,
    a: ServerProc,
    b: ServerProc,
}

impl Pair {
    async fn start(bin: &std::path::Path) -> anyhow::Result<Self> {
        let redis = ServerProc::redis()?;
        let url = format!("redis://{}/", redis.addr);
        let node = |id: &str| {
            // Members read as fast as the bench's one process can for
            // 32 of them: the queues must not be what is measured.
            // Members read as fast as the bench's one process can for 32
            // of them: the server's queues must not be what is measured.
            let args = [
                "--redis-url",
                &url,
                "--node-id",
                id,
                "--drain-delay-ms",
                DRAIN_DELAY_MS,
                "--outbound-queue-bytes",
                "67108864",
            ];
            ServerProc::switchboard(bin, &args.map(str::to_owned))
        };
        let a = node("node-a")?;
        wait_nodes(a.addr, 1).await?;
        Ok(Self { _redis: redis, a, b: node("node-b")? })
    }

    /// Waits until node-a lists both (rooms made before go to node-a).
    async fn both_up(&self) -> anyhow::Result<()> {
        wait_nodes(self.a.addr, 2).await?;
        wait_nodes(self.b.addr, 2).await
    }
}

async fn wait_nodes(addr: SocketAddr, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let view = cluster_view(addr).await.unwrap_or_default();
        if view["redis"] == "up" && view["nodes"].as_array().map_or(0, Vec::len) == n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{addr} did not list {n} nodes in 20 s: {view}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<Ws> {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/ws")).await.context("connecting")?;
    Ok(ws)
}

async fn next_json(ws: &mut Ws) -> anyhow::Result<serde_json::Value> {
    loop {
        match ws.next().await.context("socket closed")?? {
            Message::Text(text) => return Ok(serde_json::from_str(&text)?),
            Message::Close(_) => bail!("closed"),
            _ => {}
        }
    }
}

/// Whether a server message is an event (counted for `resume.received`).
fn is_event(kind: &str) -> bool {
    !matches!(kind, "welcome" | "pong" | "error" | "chat_history" | "ice_servers" | "going_away")
}

/// What a member reports to the bench.
#[derive(Debug)]
enum Report {
    /// It read `going_away`, at this time.
    GoingAway(Instant),
    /// It resumed on the other node (member index).
    Resumed(usize, Instant),
    /// It received a relay, at this time.
    Relayed(Instant),
    /// It failed (the bench stops with this).
    Failed(usize, String),
}

/// A member: joined at `a`, reads everything (so its queue never fills)
/// without acknowledging (so its replay buffer stays full); on
/// `going_away` it resumes at `b` until it is welcomed back, then relays
/// what the bench asks and reports what it receives.
/// Who a member is and where it reports.
struct Member {
    index: usize,
    token: String,
    b: SocketAddr,
    room: String,
    reports: mpsc::UnboundedSender<Report>,
    events_seen: tokio::sync::watch::Sender<u64>,
}

async fn member(me: Member, mut ws: Ws, mut relay_to: mpsc::UnboundedReceiver<String>) -> anyhow::Result<()> {
    let Member { index, token, b, room, reports, events_seen } = me;
    let mut received = 0u64;
    loop {
        let msg = next_json(&mut ws).await.context("before going_away")?;
        let kind = msg["type"].as_str().unwrap_or_default();
        if kind == "going_away" {
            let _ = reports.send(Report::GoingAway(Instant::now()));
            // As a client does: answer the close, and go.
            let _ = ws.close(None).await;
            break;
        }
        if is_event(kind) {
            received += 1;
            let _ = events_seen.send(received);
        }
    }
    let resume = format!(
        r#"{{"type":"join","room":"{room}","name":"m{index}","resume":{{"token":"{token}","received":{received}}}}}"#
    );
    let mut ws = loop {
        let Ok(mut again) = connect(b).await else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        // A resume that reached the old node through the bridge while the
        // room was moving may see its socket closed when that node exits:
        // a client then simply tries again, as after any drop.
        let Ok(answer) = async {
            again.send(Message::text(resume.clone())).await?;
            next_json(&mut again).await
        }
        .await
        else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        match answer["type"].as_str() {
            Some("welcome") if answer["resumed"] == true => break again,
            Some("error") if answer["code"] == "unavailable" => tokio::time::sleep(Duration::from_millis(5)).await,
            _ => bail!("member {index} could not resume: {answer}"),
        }
    };
    let _ = reports.send(Report::Resumed(index, Instant::now()));
    loop {
        tokio::select! {
            to = relay_to.recv() => {
                let Some(to) = to else { return Ok(()) };
                let offer = format!(r#"{{"type":"offer","to":"{to}","description":{{"type":"offer","sdp":"v=0\r\n"}}}}"#);
                ws.send(Message::text(offer)).await?;
            }
            msg = next_json(&mut ws) => {
                if msg.context("after the resume")?["type"] == "offer" {
                    let _ = reports.send(Report::Relayed(Instant::now()));
                }
            }
        }
    }
}

/// One room at `a` with `members`, each with a member task.
struct Room {
    ids: Vec<String>,
    reports: mpsc::UnboundedReceiver<Report>,
    relay: Vec<mpsc::UnboundedSender<String>>,
    seen: Vec<tokio::sync::watch::Receiver<u64>>,
}

async fn room(pair: &Pair, name: &str, members: usize) -> anyhow::Result<Room> {
    let (report_tx, reports) = mpsc::unbounded_channel();
    let (mut ids, mut relay, mut seen) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..members {
        let mut ws = connect(pair.a.addr).await?;
        ws.send(Message::text(format!(r#"{{"type":"join","room":"{name}","name":"m{i}"}}"#))).await?;
        let welcome = next_json(&mut ws).await?;
        if welcome["type"] != "welcome" {
            bail!("member {i} of {name} not welcomed: {welcome}");
        }
        ids.push(welcome["you"]["id"].as_str().context("you.id")?.to_owned());
        let token = welcome["resume_token"].as_str().context("resume_token")?.to_owned();
        let (relay_tx, relay_rx) = mpsc::unbounded_channel();
        let (seen_tx, seen_rx) = tokio::sync::watch::channel(0);
        let (b, room, reports) = (pair.b.addr, name.to_owned(), report_tx.clone());
        tokio::spawn(async move {
            let me = Member { index: i, token, b, room, reports: reports.clone(), events_seen: seen_tx };
            if let Err(err) = member(me, ws, relay_rx).await {
                let _ = reports.send(Report::Failed(i, format!("{err:#}")));
            }
        });
        relay.push(relay_tx);
        seen.push(seen_rx);
    }
    Ok(Room { ids, reports, relay, seen })
}

/// The figures of one handover.
#[derive(Debug, Clone, Copy)]
struct Handover {
    first_relay: Duration,
    all_resumed: Duration,
}

/// Fills every member's replay buffer (1 KB chat events up to the byte
/// budget), then drains node-a and times the handover.
async fn handover_round(bin: &std::path::Path, members: usize, fill: usize) -> anyhow::Result<Handover> {
    let pair = Pair::start(bin).await?;
    let mut room = room(&pair, "big", members).await?;
    pair.both_up().await?;
    // The first member chats; everyone reads. A batch at a time: at most
    // 64 messages of a room wait for Redis.
    let mut chatter = connect(pair.a.addr).await?;
    chatter.send(Message::text(r#"{"type":"join","room":"big","name":"chatter"}"#)).await?;
    let text = "x".repeat(900);
    let mut sent = 0;
    while sent < fill {
        let batch = (fill - sent).min(32);
        for _ in 0..batch {
            sent += 1;
            let chat = format!(r#"{{"type":"chat","client_id":"c{sent}","text":"{text}"}}"#);
            chatter.send(Message::text(chat)).await?;
        }
        // Wait for the echoes.
        let mut echoed = 0;
        while echoed < batch {
            if next_json(&mut chatter).await?["type"] == "chat" {
                echoed += 1;
            }
        }
    }
    // Everyone has read every event (members joined before the chatter:
    // its join and the chats).
    let want = (fill + 1) as u64;
    for seen in &mut room.seen {
        let deadline = Instant::now() + Duration::from_secs(30);
        while *seen.borrow() < want {
            if Instant::now() > deadline {
                bail!("a member read {} of {want} events", *seen.borrow());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    drop(chatter);
    pair.a.terminate()?;
    let mut went: Option<Instant> = None;
    let mut resumed: Vec<(usize, Instant)> = Vec::new();
    let mut first_relay = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while first_relay.is_none() || resumed.len() < members {
        let report = tokio::time::timeout_at(deadline.into(), room.reports.recv())
            .await
            .context("the handover did not finish in 60 s")?
            .context("members stopped")?;
        match report {
            Report::GoingAway(at) => {
                went = Some(went.map_or(at, |w| w.min(at)));
            }
            Report::Resumed(i, at) => {
                resumed.push((i, at));
                if resumed.len() == 2 {
                    // The first two back: one relays to the other.
                    let (from, to) = (resumed[0].0, resumed[1].0);
                    let _ = room.relay[from].send(room.ids[to].clone());
                }
            }
            Report::Relayed(at) => first_relay = first_relay.or(Some(at)),
            Report::Failed(i, why) => bail!("member {i} failed: {why}"),
        }
    }
    let went = went.context("nobody was told going_away")?;
    let last = resumed.iter().map(|(_, at)| *at).max().unwrap_or(went);
    Ok(Handover {
        first_relay: first_relay.unwrap_or(went).saturating_duration_since(went),
        all_resumed: last.saturating_duration_since(went),
    })
}

/// A drain of a node owning `rooms` rooms of two members.
#[derive(Debug, Clone, Copy)]
struct Drain {
    exited: Duration,
    all_resumed: Duration,
}

async fn drain_many(bin: &std::path::Path, rooms: usize) -> anyhow::Result<Drain> {
    let mut pair = Pair::start(bin).await?;
    let mut all = Vec::new();
    for r in 0..rooms {
        all.push(room(&pair, &format!("r{r}"), 2).await?);
    }
    pair.both_up().await?;
    let started = Instant::now();
    pair.a.terminate()?;
    let exited = tokio::task::spawn_blocking(move || {
        let status = pair.a.wait();
        (status, started.elapsed(), pair)
    });
    let mut last = started;
    for room in &mut all {
        let mut back = 0;
        while back < 2 {
            let report = tokio::time::timeout(Duration::from_secs(60), room.reports.recv())
                .await
                .context("a room's members did not resume in 60 s")?
                .context("members stopped")?;
            match report {
                Report::Resumed(_, at) => {
                    back += 1;
                    last = last.max(at);
                }
                Report::Failed(i, why) => bail!("member {i} failed: {why}"),
                _ => {}
            }
        }
    }
    let (status, exited, _pair) = exited.await?;
    if !status?.success() {
        bail!("the drained node did not exit cleanly");
    }
    Ok(Drain { exited, all_resumed: last - started })
}

fn median<T: Copy>(mut values: Vec<T>, key: impl Fn(&T) -> Duration) -> T {
    values.sort_by_key(|v| key(v));
    values[values.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = args.switchboard_bin.as_path();
    // Fill: ~1 KB events up to the 1 MiB replay byte budget.
    let (sizes, fill, rounds, rooms) =
        if args.quick { (vec![2, 8], 50, 1, 50) } else { (vec![2, 8, 32], 1000, args.rounds, args.rooms) };
    let mut rows = Vec::new();
    for &members in &sizes {
        let mut results = Vec::new();
        for _ in 0..rounds {
            results.push(handover_round(bin, members, fill).await?);
        }
        let med = median(results, |h| h.first_relay);
        println!(
            "{members} members: first relay on the new owner {} after going_away, all resumed {}",
            ms(med.first_relay),
            ms(med.all_resumed)
        );
        rows.push((members, med));
    }
    let drain = drain_many(bin, rooms).await?;
    println!(
        "{rooms} rooms: SIGTERM to exit {}, every member resumed on the other node {}",
        ms(drain.exited),
        ms(drain.all_resumed)
    );
    if let Some(path) = &args.write {
        let mut s = String::new();
        writeln!(s, "{BEGIN}")?;
        writeln!(
            s,
            "Measured {} with `{}` (release build, loopback namespace, two nodes on one Redis; the drained node runs with `--drain-delay-ms {DRAIN_DELAY_MS}`, just over a registry heartbeat, since there is no load balancer to wait for).",
            today(),
            args.command
        )?;
        writeln!(s)?;
        writeln!(
            s,
            "Handover per room, replay buffers full (every member was sent {fill} chat events of about 1 KB and acknowledged none: its buffer is at the 1 MiB byte budget), median of {rounds}:"
        )?;
        writeln!(s)?;
        writeln!(
            s,
            "| Members | First relay served by the new owner, after `going_away` | Every member resumed there |"
        )?;
        writeln!(s, "|---|---|---|")?;
        for (members, h) in &rows {
            writeln!(s, "| {members} | {} | {} |", ms(h.first_relay), ms(h.all_resumed))?;
        }
        writeln!(s)?;
        writeln!(
            s,
            "A node owning {rooms} rooms (two members each) drained: SIGTERM to exit **{}**, of which {DRAIN_DELAY_MS} ms is the drain delay; every member resumed on the other node **{}** after SIGTERM.",
            ms(drain.exited),
            ms(drain.all_resumed)
        )?;
        writeln!(s, "{END}")?;
        section::write_section(path, BEGIN, END, &s)?;
    }
    Ok(())
}

fn today() -> String {
    std::process::Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
