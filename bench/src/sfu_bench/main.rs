//! `switchboard-sfu-bench`: sfu-lite under load (issue 6).
//!
//! One publisher sends probe media (VP8-sized packets at ~1 Mbit/s plus
//! Opus-sized audio, each stamped with its send time) into an SFU room of
//! the release `switchboard` server, and N headless subscribers receive it.
//! For N = 10, 50, 100, 200 (a fresh server each) it measures over a steady
//! window:
//! - the server process's CPU time per forwarded packet (the SFU runs in
//!   it; signaling is idle meanwhile),
//! - loss at the subscribers (RTP sequence gaps),
//! - added latency from the publisher's send to a subscriber's receive,
//!   p50/p99 (same process, same clock),
//! - this process's own CPU (publisher and subscribers) for context.
//!
//! Run it through `scripts/bench-sfu` (loopback-only namespace).

// Shared with the signaling benchmark, which uses more of it.
#[allow(dead_code)]
#[path = "../process.rs"]
mod process;
#[path = "../section.rs"]
mod section;

use anyhow::{Context, bail};
use clap::Parser;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use switchboard_peer::{MediaSource, Peer, PeerOptions, RtcOptions, TrackStats};

#[derive(Debug, Parser)]
#[command(about = "sfu-lite benchmark: one publisher to N subscribers")]
struct Args {
    /// Subscriber counts, one run each.
    #[arg(long, value_delimiter = ',', default_value = "10,50,100,200")]
    sizes: Vec<usize>,
    /// Publisher video bitrate, kbit/s.
    #[arg(long, default_value_t = 1000)]
    kbps: u32,
    /// Seconds of steady state measured per run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds to let the room settle before measuring.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Subscribers joining at once.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// The server binary.
    #[arg(long, default_value = "target/release/switchboard")]
    server: PathBuf,
    /// Write the report into this Markdown file.
    #[arg(long)]
    write: Option<PathBuf>,
    /// The command line to print with the figures.
    #[arg(long, default_value = "scripts/bench-sfu")]
    command: String,
}

const BEGIN: &str = "<!-- BEGIN sfu-bench (written by switchboard-sfu-bench) -->";
const END: &str = "<!-- END sfu-bench -->";

/// One run's figures.
#[derive(Debug)]
struct Row {
    subscribers: usize,
    forwarded_per_s: f64,
    sfu_us_per_packet: f64,
    sfu_core_share: f64,
    loss_percent: f64,
    p50_ms: f64,
    p99_ms: f64,
    client_core_share: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut rows = Vec::new();
    for &n in &args.sizes {
        let row = runtime.block_on(run(&args, n))?;
        println!("{row:?}");
        rows.push(row);
    }
    let report = render(&args, &rows, &load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    println!("{report}");
    if let Some(path) = &args.write {
        section::write_section(path, BEGIN, END, &report)?;
    }
    Ok(())
}

async fn run(args: &Args, n: usize) -> anyhow::Result<Row> {
    // ServerProc already raises the room size and rate limits for load.
    let extra: Vec<String> = ["--room-mode", "sfu", "--sfu-loopback-only"].iter().map(|s| (*s).to_string()).collect();
    let server = process::ServerProc::switchboard(&args.server, &extra)?;
    let url = format!("ws://{}/v1/ws", server.addr);
    let room = format!("bench-{n}");
    let options = |name: String, media: MediaSource| PeerOptions {
        url: url.clone(),
        room: room.clone(),
        name,
        token: None,
        rtc: RtcOptions { loopback_only: true, relay_only: false },
        media,
        record: None,
        reconnect: Some(switchboard_peer::ReconnectPolicy::default()),
    };
    let publisher = Peer::join(options("publisher".into(), MediaSource::Probe { video_kbps: args.kbps })).await?;
    let publisher_id = publisher.id().to_string();
    let mut subscribers = Vec::with_capacity(n);
    while subscribers.len() < n {
        let batch = args.batch.min(n - subscribers.len());
        let joins = (0..batch).map(|i| Peer::join(options(format!("sub{}", subscribers.len() + i), MediaSource::None)));
        for joined in futures_util::future::join_all(joins).await {
            subscribers.push(joined.context("a subscriber joins")?);
        }
    }
    // Every subscriber receives before anything is measured.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut receiving = 0;
        for s in &subscribers {
            let stats = s.media_stats().await?;
            if video(&stats, &publisher_id).0 > 0 {
                receiving += 1;
            }
        }
        if receiving == n {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {receiving} of {n} subscribers receive video after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;

    let metrics_url = format!("http://{}/metrics", server.addr);
    let forwarded_before = forwarded(&metrics_url, &room).await?;
    let cpu_before = server.cpu()?;
    let own_before = own_cpu()?;
    let mut before = Vec::with_capacity(n);
    for s in &subscribers {
        before.push(video(&s.media_stats().await?, &publisher_id));
        s.probe_latency(true).await?;
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let elapsed = start.elapsed().as_secs_f64();
    let forwarded_after = forwarded(&metrics_url, &room).await?;
    let cpu = (server.cpu()? - cpu_before).as_secs_f64();
    let own = (own_cpu()? - own_before).as_secs_f64();
    let mut latency = switchboard_peer_latency();
    let (mut received, mut lost) = (0u64, 0u64);
    for (s, (packets_before, lost_before)) in subscribers.iter().zip(&before) {
        let (packets, lost_now) = video(&s.media_stats().await?, &publisher_id);
        received += packets - packets_before;
        lost += lost_now.saturating_sub(*lost_before);
        latency.add(&s.probe_latency(false).await?)?;
    }
    let packets = (forwarded_after - forwarded_before).max(1.0);
    for s in subscribers {
        s.leave().await;
    }
    publisher.leave().await;
    drop(server);
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    Ok(Row {
        subscribers: n,
        forwarded_per_s: packets / elapsed,
        sfu_us_per_packet: cpu * 1e6 / packets,
        sfu_core_share: cpu / elapsed,
        loss_percent: if received + lost > 0 { lost as f64 * 100.0 / (received + lost) as f64 } else { 0.0 },
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        client_core_share: own / elapsed,
    })
}

fn switchboard_peer_latency() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| unreachable!("valid bounds"))
}

/// (packets, lost) of the video received from `publisher`.
fn video(stats: &[TrackStats], publisher: &str) -> (u64, u64) {
    stats
        .iter()
        .filter(|t| t.remote.as_str() == publisher && t.kind == "video")
        .fold((0, 0), |(p, l), t| (p + t.packets, l + t.lost))
}

/// Packets the SFU forwarded in `room` so far (all tracks), from /metrics.
async fn forwarded(url: &str, room: &str) -> anyhow::Result<f64> {
    let url = url.to_string();
    let text = tokio::task::spawn_blocking(move || http_get(&url)).await??;
    let prefix = format!("switchboard_sfu_forwarded_packets_total{{room=\"{room}\"");
    Ok(text.lines().filter(|l| l.starts_with(&prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum())
}

/// A plain HTTP/1.1 GET on loopback.
fn http_get(url: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").context("http URL")?;
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect(host)?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body)
}

/// This process's user + system CPU time.
fn own_cpu() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(Duration::from_secs_f64(ticks as f64 / 100.0))
}

fn render(args: &Args, rows: &[Row], load: &str) -> String {
    let mut out = format!("{BEGIN}\n## sfu-lite: one publisher to N subscribers\n\n");
    out.push_str(&format!(
        "Command: `{}` (one publisher, VP8-sized probe packets at {} kbit/s plus Opus-sized audio; {} s measured \
         after {} s of warm-up; load average at start: {load}).\n\n",
        args.command, args.kbps, args.seconds, args.warmup
    ));
    out.push_str(
        "| subscribers | forwarded pkt/s | SFU CPU per forwarded packet | SFU CPU (cores) | loss at subscribers | \
         added latency p50 / p99 | subscribers' process CPU (cores) |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {:.0} | {:.1} µs | {:.2} | {:.2} % | {:.2} / {:.2} ms | {:.2} |\n",
            r.subscribers,
            r.forwarded_per_s,
            r.sfu_us_per_packet,
            r.sfu_core_share,
            r.loss_percent,
            r.p50_ms,
            r.p99_ms,
            r.client_core_share
        ));
    }
    out.push_str(END);
    out.push('\n');
    out
}
