//! `switchboard-peer-bench`: the headless peer measured (issue 3).
//!
//! 1. Join to data channel open between two headless peers through the real
//!    signaling server on loopback, p50/p95 over 20 runs, split by phase.
//! 2. Reliable data channel throughput through the peer's own module
//!    (signaling, links, backpressured senders) against raw webrtc-rs in the
//!    same run, same process, same message size.
//!
//! Run it through `scripts/bench-peer` (loopback-only namespace).

mod raw;
#[path = "../section.rs"]
mod section;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use switchboard_peer::{Channel, MediaSource, Peer, PeerEvent, PeerOptions, Phase, RtcOptions};
use switchboard_server::config::Settings;

#[derive(Debug, Parser)]
#[command(about = "Headless peer benchmark: join phases and data channel throughput")]
struct Args {
    /// Join runs.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Bytes per throughput run.
    #[arg(long, default_value_t = 50 * 1024 * 1024)]
    bytes: usize,
    /// Message size.
    #[arg(long, default_value_t = 16 * 1024)]
    chunk: usize,
    /// Throughput rounds (interleaved; the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Write the report into this Markdown file.
    #[arg(long)]
    write: Option<PathBuf>,
    /// The command line to record.
    #[arg(long, default_value = "scripts/bench-peer")]
    command: String,
}

const BEGIN: &str = "<!-- BEGIN peer-bench (written by switchboard-peer-bench) -->";
const END: &str = "<!-- END peer-bench -->";

async fn join(addr: SocketAddr, room: &str, name: &str) -> anyhow::Result<Peer> {
    Peer::join(PeerOptions {
        url: format!("ws://{addr}/v1/ws"),
        room: room.into(),
        name: name.into(),
        token: None,
        rtc: RtcOptions { loopback_only: true, relay_only: false },
        media: MediaSource::None,
        record: None,
        reconnect: Some(switchboard_peer::ReconnectPolicy::default()),
    })
    .await
}

async fn wait_open(peer: &mut Peer) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, peer.events.recv()).await.context("channel did not open")? {
            Some(PeerEvent::ChannelOpen { channel: Channel::Chat, .. }) => return Ok(()),
            Some(_) => {}
            None => anyhow::bail!("peer stopped"),
        }
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The newcomer's phases of each run: (name, durations).
async fn join_phases(addr: SocketAddr, runs: usize) -> anyhow::Result<Vec<(&'static str, Vec<Duration>)>> {
    let names =
        ["ws_connected", "welcome", "offer_sent", "answer_received", "ice_connected", "dtls_connected", "channel_open"];
    let mut table: Vec<(&'static str, Vec<Duration>)> = names.iter().map(|n| (*n, Vec::new())).collect();
    for run in 0..runs {
        let room = format!("join{run}");
        let mut host = join(addr, &room, "host").await?;
        let mut guest = join(addr, &room, "guest").await?;
        wait_open(&mut guest).await?;
        wait_open(&mut host).await?;
        let report = guest.report().await?.into_iter().next().context("no link")?;
        let phase = |p: Phase| report.phases.iter().find(|(x, _)| *x == p).map(|(_, d)| *d);
        let values = [
            Some(guest.connected_after),
            Some(guest.welcome_after),
            phase(Phase::OfferSent),
            phase(Phase::AnswerReceived),
            phase(Phase::IceConnected),
            phase(Phase::DtlsConnected),
            phase(Phase::ChannelOpen),
        ];
        for ((_, column), value) in table.iter_mut().zip(values) {
            column.push(value.context("a phase was not reached")?);
        }
        guest.leave().await;
        host.leave().await;
    }
    for (_, column) in &mut table {
        column.sort();
    }
    Ok(table)
}

/// Sends `total` bytes from one peer to the other through the peer module.
async fn ours(addr: SocketAddr, round: usize, total: usize, chunk: usize) -> anyhow::Result<Duration> {
    let room = format!("bulk{round}");
    let mut a = join(addr, &room, "a").await?;
    let mut b = join(addr, &room, "b").await?;
    wait_open(&mut a).await?;
    wait_open(&mut b).await?;
    let (_, sender) = a.senders(Channel::Chat).await?.into_iter().next().context("no link")?;
    let payload = Bytes::from(vec![b'x'; chunk]);
    let start = Instant::now();
    let send = async {
        let mut sent = 0;
        while sent < total {
            sender.send(payload.clone()).await?;
            sent += chunk;
        }
        anyhow::Ok(())
    };
    let receive = async {
        let mut got = 0;
        while got < total {
            match b.events.recv().await {
                Some(PeerEvent::Data { text, .. }) => got += text.len(),
                Some(_) => {}
                None => anyhow::bail!("receiver stopped"),
            }
        }
        anyhow::Ok(())
    };
    let (s, r) = tokio::join!(send, receive);
    s?;
    r?;
    let elapsed = start.elapsed();
    a.leave().await;
    b.leave().await;
    Ok(elapsed)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings =
        Settings { bind: SocketAddr::from(([127, 0, 0, 1], 0)), log: "warn".into(), stun: None, ..Settings::default() };
    let server = switchboard_server::start(settings).await?;
    let addr = server.local_addr();

    let phases = join_phases(addr, args.runs).await?;
    let mut ours_mbps = Vec::new();
    let mut raw_mbps = Vec::new();
    let mb = args.bytes as f64 / 1e6;
    for round in 0..args.rounds {
        let o = mb / ours(addr, round, args.bytes, args.chunk).await?.as_secs_f64();
        let r = mb / raw::throughput(args.bytes, args.chunk).await?.as_secs_f64();
        eprintln!("round {round}: peer module {o:.1} MB/s, raw webrtc-rs {r:.1} MB/s");
        ours_mbps.push(o);
        raw_mbps.push(r);
    }
    ours_mbps.sort_by(f64::total_cmp);
    raw_mbps.sort_by(f64::total_cmp);
    let (o, r) = (ours_mbps[ours_mbps.len() / 2], raw_mbps[raw_mbps.len() / 2]);

    let mut out = format!("{BEGIN}\n## Headless peer: join phases and data channel throughput\n\n");
    out.push_str(&format!(
        "Command: `{}` (server and peers in one process, loopback-only network namespace). Machine: {} cores; load average at the end {}.\n\n",
        args.command,
        std::thread::available_parallelism().map_or(0, usize::from),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    ));
    out.push_str(&format!(
        "Join to data channel open: the second of two peers, from starting to join, over {} runs (ms since the start).\n\n| phase | p50 | p95 |\n|---|---|---|\n",
        args.runs
    ));
    for (name, column) in &phases {
        out.push_str(&format!(
            "| {name} | {:.1} | {:.1} |\n",
            ms(percentile(column, 0.5)),
            ms(percentile(column, 0.95))
        ));
    }
    out.push_str(&format!(
        "\nReliable data channel, {:.0} MiB in {} KiB messages, median of {} interleaved rounds:\n\n| path | MB/s |\n|---|---|\n| peer module (server-negotiated link, backpressured sender, events) | {o:.1} |\n| raw webrtc-rs, same process, same backpressure | {r:.1} |\n| ratio | {:.2} (target >= 0.90) |\n{END}\n",
        args.bytes as f64 / 1048576.0,
        args.chunk / 1024,
        args.rounds,
        o / r
    ));
    println!("{out}");
    if let Some(path) = args.write {
        section::write_section(&path, BEGIN, END, &out)?;
    }
    server.shutdown().await
}
