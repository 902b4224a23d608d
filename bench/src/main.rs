//! `switchboard-bench`: Switchboard and PeerJS server 1.0.2 measured side
//! by side in one run with the same Rust load client. Prints a Markdown
//! report and, with `--write`, puts it into `docs/benchmarks.md`.
//!
//! Run it through `scripts/bench-signaling`, which builds the release
//! binary, installs `peer@1.0.2` from npm and raises the file limit.

mod idle;
mod latency;
mod process;
mod relay_cpu;
mod report;
mod section;
mod target;

use clap::Parser;
use process::ServerProc;
use std::path::PathBuf;
use std::time::Duration;
use target::{Endpoint, Kind, sample_candidate, sample_sdp};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Side-by-side signaling benchmark: Switchboard vs PeerJS server 1.0.2")]
struct Args {
    /// The Switchboard release binary.
    #[arg(long, default_value = "target/release/switchboard")]
    switchboard_bin: PathBuf,
    /// node_modules holding `peer` 1.0.2.
    #[arg(long, default_value = ".bench/node_modules")]
    node_modules: PathBuf,
    /// Repetitions of each CPU measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Small counts: a quick check that the bench works, not figures.
    #[arg(long)]
    quick: bool,
    /// Write the report into this Markdown file (between its bench markers).
    #[arg(long)]
    write: Option<PathBuf>,
    /// Run only this scenario and print its figures (no report).
    #[arg(long, value_enum)]
    only: Option<Scenario>,
    /// Connection counts for the idle scenario (with --only idle).
    #[arg(long, value_delimiter = ',')]
    idle_steps: Option<Vec<usize>>,
    /// Extra flags for the Switchboard server (repeatable).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// The command line to record in the report.
    #[arg(long, default_value = "scripts/bench-signaling")]
    command: String,
}

/// One part of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    /// Server CPU per relayed message.
    Cpu,
    /// Relay latency at a fixed rate.
    Latency,
    /// Memory per idle connection.
    Idle,
}

/// Scenario sizes.
struct Plan {
    pairs: usize,
    offers_per_pair: u64,
    candidates_per_pair: u64,
    latency_pairs: usize,
    latency_rate: u32,
    warmup: Duration,
    measure: Duration,
    idle_steps: Vec<usize>,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                pairs: 4,
                offers_per_pair: 500,
                candidates_per_pair: 500,
                latency_pairs: 4,
                latency_rate: 1000,
                warmup: Duration::from_millis(200),
                measure: Duration::from_secs(1),
                idle_steps: vec![100, 200],
            }
        } else {
            Self {
                pairs: 50,
                offers_per_pair: 2_000,
                candidates_per_pair: 4_000,
                latency_pairs: 10,
                latency_rate: 5_000,
                warmup: Duration::from_secs(1),
                measure: Duration::from_secs(10),
                idle_steps: vec![1_000, 5_000, 15_000],
            }
        }
    }
}

/// One server configuration under test.
#[derive(Debug, Clone)]
pub struct Target {
    kind: Kind,
    /// Column name in the report.
    label: String,
    /// Extra Switchboard flags.
    server_args: Vec<String>,
}

/// Everything measured for one target.
#[derive(Debug)]
pub struct Results {
    target: Target,
    offer: Vec<relay_cpu::CpuRun>,
    candidate: Vec<relay_cpu::CpuRun>,
    latency: latency::LatencyRun,
    idle_base: u64,
    idle: Vec<idle::IdlePoint>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let plan = Plan::new(args.quick);
    let machine = report::Machine::read();
    let sdp = sample_sdp(1_950);
    let line = sample_candidate();
    let default_args = args.server_args.clone();
    let mut one_thread = args.server_args.clone();
    one_thread.extend(["--worker-threads".to_owned(), "1".to_owned()]);
    let targets = vec![
        Target { kind: Kind::Switchboard, label: "Switchboard".into(), server_args: default_args },
        Target { kind: Kind::Switchboard, label: "Switchboard, 1 worker".into(), server_args: one_thread },
        Target { kind: Kind::PeerJs, label: "PeerJS 1.0.2".into(), server_args: Vec::new() },
    ];
    let start = |t: &Target| match t.kind {
        Kind::Switchboard => ServerProc::switchboard(&args.switchboard_bin, &t.server_args),
        Kind::PeerJs => ServerProc::peerjs(&args.node_modules),
    };
    if args.only == Some(Scenario::Idle) {
        let steps = args.idle_steps.clone().unwrap_or(plan.idle_steps);
        for t in &targets {
            let server = start(t)?;
            let (base, points) = idle::run(Endpoint { kind: t.kind, addr: server.addr }, &server, &steps).await?;
            for p in points {
                eprintln!(
                    "{} idle: base {} KB, {} connections, {:.0} B each",
                    t.label,
                    base / 1024,
                    p.connections,
                    p.per_connection
                );
            }
        }
        return Ok(());
    }
    if args.only == Some(Scenario::Latency) {
        for t in &targets {
            let server = start(t)?;
            let ep = Endpoint { kind: t.kind, addr: server.addr };
            let lat =
                latency::run(ep, &|| server.cpu(), plan.latency_pairs, plan.latency_rate, plan.warmup, plan.measure)
                    .await?;
            let h = &lat.histogram;
            eprintln!(
                "{} latency at {} msg/s: p50 {} us, p99 {} us, max {} us; server CPU {:.2} us/msg",
                t.label,
                plan.latency_rate,
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.max(),
                lat.server_cpu.as_secs_f64() * 1e6 / lat.messages.max(1) as f64
            );
        }
        return Ok(());
    }
    let mut offer: Vec<Vec<relay_cpu::CpuRun>> = vec![Vec::new(); targets.len()];
    let mut candidate: Vec<Vec<relay_cpu::CpuRun>> = vec![Vec::new(); targets.len()];
    // Interleave the rounds so that a noisy neighbour hits every server.
    for round in 0..args.rounds {
        for (i, t) in targets.iter().enumerate() {
            let server = start(t)?;
            let ep = Endpoint { kind: t.kind, addr: server.addr };
            let o = relay_cpu::run(ep, &server, plan.pairs, plan.offers_per_pair, |to| ep.offer(to, &sdp)).await?;
            let c =
                relay_cpu::run(ep, &server, plan.pairs, plan.candidates_per_pair, |to| ep.candidate(to, &line)).await?;
            eprintln!(
                "round {round} {}: offer {:.1} us/msg ({:.0} msg/s), candidate {:.1} us/msg ({:.0} msg/s)",
                t.label,
                o.us_per_message(),
                o.rate(),
                c.us_per_message(),
                c.rate()
            );
            offer[i].push(o);
            candidate[i].push(c);
        }
    }
    if args.only == Some(Scenario::Cpu) {
        return Ok(());
    }
    let mut results = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let server = start(t)?;
        let ep = Endpoint { kind: t.kind, addr: server.addr };
        let lat = latency::run(ep, &|| server.cpu(), plan.latency_pairs, plan.latency_rate, plan.warmup, plan.measure)
            .await?;
        eprintln!(
            "{} latency: p50 {} us, p99 {} us over {} messages",
            t.label,
            lat.histogram.value_at_quantile(0.5),
            lat.histogram.value_at_quantile(0.99),
            lat.messages
        );
        drop(server);
        let server = start(t)?;
        let ep = Endpoint { kind: t.kind, addr: server.addr };
        let (idle_base, idle) = idle::run(ep, &server, &plan.idle_steps).await?;
        for p in &idle {
            eprintln!("{} idle: {} connections, {:.0} B each", t.label, p.connections, p.per_connection);
        }
        results.push(Results {
            target: t.clone(),
            offer: std::mem::take(&mut offer[i]),
            candidate: std::mem::take(&mut candidate[i]),
            latency: lat,
            idle_base,
            idle,
        });
    }
    let text = report::render(&machine, &args.command, args.quick, &results, plan.latency_rate);
    println!("{text}");
    if let Some(path) = args.write {
        report::write_section(&path, &text)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
