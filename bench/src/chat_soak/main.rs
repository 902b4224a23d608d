//! `switchboard-chat-soak`: chat under connection churn, checked by
//! sequence number (issue 7).
//!
//! R rooms of P members chat at a fixed rate for a set time while a TCP
//! proxy between them and the server ([`chaos`]) cuts each member's
//! connection at random, seeded times. The members' signaling sessions
//! reconnect through the proxy, resume, and resend what the server may not
//! have stored. Afterwards the [`ledger`] proves from the rooms' sequence
//! numbers that every message was stored exactly once and that every member
//! received every message exactly once, in order.
//!
//! The run, in order: start (or reach) the server; open one proxy gate per
//! member; join everyone; chat and churn for the duration; stop sending and
//! wait, bounded, until every member has its room's last message; leave;
//! check and print. Exit status 1 on any loss, duplicate, lost session, or
//! a run without churn.
//!
//! The members ([`member`]) are thin shells that report what they do and
//! see over one bounded channel; the collector here owns the ledger.
//!
//! Run it through `scripts/bench-chat-soak` (loopback-only namespace).

mod chaos;
mod ledger;
mod member;
mod report;
#[path = "../section.rs"]
mod section;

use anyhow::{Context, bail};
use chaos::Gate;
use clap::Parser;
use hdrhistogram::Histogram;
use ledger::{Ledger, MemberId};
use member::{LEAVE_TIMEOUT, Observation, Schedule};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use report::Figures;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use switchboard_peer::{JoinRequest, ReconnectPolicy, Signaling};
use switchboard_protocol::{Role, WS_PATH};
use switchboard_server::config::Settings;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

#[derive(Debug, Parser)]
#[command(about = "Chat soak: rooms chatting under connection churn, checked by sequence number")]
struct Args {
    /// Rooms.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    rooms: u32,
    /// Members per room.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    members: u32,
    /// Chat messages per second per member (at most 40).
    #[arg(long, default_value_t = 2.0)]
    rate: f64,
    /// Seconds of chat and churn.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    duration_s: u64,
    /// Mean seconds between forced connection drops per member (random
    /// times from the seed); 0: none.
    #[arg(long, default_value_t = 10.0)]
    drop_every_s: f64,
    /// Seed of the drop times and the send phases.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// ws:// URL of a running server; absent: one in this process on
    /// 127.0.0.1, free port. Several (comma-separated, the nodes of a
    /// cluster): member i of a room connects to URL i mod n, so every room
    /// spans the nodes.
    #[arg(long, value_delimiter = ',')]
    url: Vec<String>,
    /// Print the figures as one JSON object.
    #[arg(long)]
    json: bool,
    /// Rewrite the chat soak section (between its markers) of this
    /// Markdown file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// The command line recorded with the figures (default: this one).
    #[arg(long)]
    command: Option<String>,
}

/// Highest `--rate`: the session paces its sends at 90 % of the server's
/// default 50 messages/s, and above this the soak would measure the pacer.
const MAX_RATE: f64 = 40.0;

/// Longest wait for everyone to join.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Between the last join and the first send: time to start every task.
const START_DELAY: Duration = Duration::from_millis(200);

/// Longest wait, after sending stops, for every member to have its room's
/// last message; then what is missing is reported.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Observations queued for the collector; when full, members wait (the
/// collector only updates maps, so never for long).
const OBSERVATION_QUEUE: usize = 65_536;

/// Extra wait, beyond each member's own leave bound, for all of them.
const DRAIN_MARGIN: Duration = Duration::from_secs(5);

/// Largest latency recorded, in microseconds (an hour).
const LATENCY_MAX_US: u64 = 3_600_000_000;

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    if !(args.rate > 0.0 && args.rate <= MAX_RATE) {
        bail!("--rate must be above 0 and at most {MAX_RATE}");
    }
    if !(args.drop_every_s >= 0.0 && args.drop_every_s.is_finite()) {
        bail!("--drop-every-s must be a number of seconds, 0 or more");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut figures = runtime.block_on(soak(&args))?;
    figures.judge();
    if args.json {
        println!("{}", serde_json::to_string(&figures)?);
    } else {
        print!("{}", figures.text());
    }
    if let Some(path) = &args.markdown {
        let command = args.command.clone().unwrap_or_else(|| std::env::args().collect::<Vec<_>>().join(" "));
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        section::write_section(path, report::BEGIN, report::END, &figures.markdown(&command, &today(), cores))?;
    }
    Ok(if figures.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The collector's state: the ledger and the figures beside it.
#[derive(Debug)]
struct Collector {
    ledger: Ledger,
    latency: Histogram<u64>,
    server_errors: u64,
    problems: Vec<String>,
    /// The members past their last send (a set: counted once each).
    done_sending: BTreeSet<MemberId>,
}

impl Collector {
    fn take(&mut self, observation: Observation) {
        match observation {
            Observation::Sent(id, client_id) => self.ledger.sent(id, &client_id),
            Observation::Chat(id, message, latency) => {
                self.ledger.delivered(id, &message);
                if let Some(latency) = latency {
                    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                    self.latency.saturating_record(us.clamp(1, LATENCY_MAX_US));
                }
            }
            Observation::Welcome { member, resumed, history } => self.ledger.welcomed(member, resumed, &history),
            Observation::Error(id, code, message) => {
                self.server_errors += 1;
                self.note(format!("{id}: server error {}: {message}", code.as_str()));
            }
            Observation::DoneSending(id) => {
                self.done_sending.insert(id);
            }
        }
    }

    fn note(&mut self, line: String) {
        if self.problems.len() < ledger::MAX_DETAILS {
            self.problems.push(line);
        }
    }
}

async fn soak(args: &Args) -> anyhow::Result<Figures> {
    let (server, upstreams, path) = match args.url.as_slice() {
        [first, ..] => {
            let mut upstreams = Vec::with_capacity(args.url.len());
            for url in &args.url {
                upstreams.push(upstream_of(url).await?.0);
            }
            (None, upstreams, upstream_of(first).await?.1)
        }
        [] => {
            let mut settings =
                Settings { bind: SocketAddr::from(([127, 0, 0, 1], 0)), stun: None, ..Settings::default() };
            let members = usize::try_from(args.members)?;
            settings.limits.max_peers_per_room = settings.limits.max_peers_per_room.max(members);
            // Every member reconnects from 127.0.0.1: a per-source rate would
            // throttle the soak, not measure it.
            settings.limits.admissions_per_source_per_second = 0;
            let server = switchboard_server::start(settings).await.context("starting the server")?;
            let addr = server.local_addr();
            (Some(server), vec![addr], WS_PATH.to_owned())
        }
    };
    let (rooms, members) = (usize::try_from(args.rooms)?, usize::try_from(args.members)?);
    let ids: Vec<MemberId> =
        (0..rooms).flat_map(|room| (0..members).map(move |member| MemberId { room, member })).collect();
    let mut gates = Vec::with_capacity(ids.len());
    for id in &ids {
        let upstream = upstreams[id.member % upstreams.len()];
        gates.push(Gate::open(upstream).await.context("opening a proxy gate")?);
    }

    // Fresh rooms for every run, even on a long-lived server.
    let run = format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis());
    let joins = ids.iter().zip(&gates).map(|(id, gate)| join(*id, gate.addr(), &path, &run));
    let joined = tokio::time::timeout(JOIN_TIMEOUT, futures_util::future::join_all(joins))
        .await
        .with_context(|| format!("not everyone joined within {JOIN_TIMEOUT:?}"))?;
    let mut ledger = Ledger::new(rooms, members);
    let mut sessions = Vec::with_capacity(ids.len());
    for (id, session) in ids.iter().zip(joined) {
        let session = session.with_context(|| format!("{id} joins"))?;
        ledger.joined(*id, session.welcome.chat_seq);
        sessions.push(session);
    }

    let epoch = std::time::Instant::now();
    let start = Instant::now() + START_DELAY;
    let duration = Duration::from_secs(args.duration_s);
    let until = start + duration;
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let (observations, mut inbox) = mpsc::channel(OBSERVATION_QUEUE);
    let (stop, stopped) = watch::channel(false);
    // Members start at seeded phases within one period, not all at once.
    let mut phases = StdRng::seed_from_u64(args.seed.wrapping_add(1));
    let mut tasks = Vec::with_capacity(ids.len());
    for (id, session) in ids.iter().zip(sessions) {
        let schedule = Schedule { epoch, first: start + period.mul_f64(phases.random::<f64>()), until, period };
        tasks.push(tokio::spawn(member::run(*id, session, schedule, observations.clone(), stopped.clone())));
    }
    drop(observations);
    let plan = chaos::cut_plan(args.seed, ids.len(), Duration::from_secs_f64(args.drop_every_s), duration);
    let churn = tokio::spawn(churn(gates, plan, start));

    let mut collector = Collector {
        ledger,
        latency: Histogram::new_with_bounds(1, LATENCY_MAX_US, 3)?,
        server_errors: 0,
        problems: Vec::new(),
        done_sending: BTreeSet::new(),
    };
    let settle_by = until + SETTLE_TIMEOUT;
    let caught_up = loop {
        tokio::select! {
            observation = inbox.recv() => {
                let Some(observation) = observation else { break None };
                collector.take(observation);
                if collector.done_sending.len() == ids.len() && collector.ledger.settled() {
                    break Some(until.elapsed());
                }
            }
            () = tokio::time::sleep_until(settle_by) => break None,
        }
    };
    if caught_up.is_none() {
        let behind: Vec<String> = collector.ledger.behind().iter().map(ToString::to_string).collect();
        let unstored = collector.ledger.unstored();
        collector.note(format!(
            "not caught up within {SETTLE_TIMEOUT:?}: {unstored} sent messages never received; members behind: [{}]",
            behind.join(" ")
        ));
    }
    let (gates, drops) = churn.await.context("the churn task")?;

    let _ = stop.send(true);
    let drained = tokio::time::timeout(LEAVE_TIMEOUT + DRAIN_MARGIN, async {
        while let Some(observation) = inbox.recv().await {
            collector.take(observation);
        }
    })
    .await;
    // A member whose session ended early, or that could not leave, fails
    // the run whatever the ledger says.
    let mut failures = Vec::new();
    if drained.is_err() {
        failures.push(format!("members still running {:?} after the stop", LEAVE_TIMEOUT + DRAIN_MARGIN));
    }
    for (id, task) in ids.iter().zip(tasks) {
        if !task.is_finished() {
            task.abort();
            continue;
        }
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => failures.push(format!("{id}: {err:#}")),
            Err(err) => failures.push(format!("{id}: task failed: {err}")),
        }
    }
    drop(gates);
    if let Some(server) = server {
        server.shutdown().await?;
    }

    let verdict = collector.ledger.verdict();
    let ms = |q: f64| collector.latency.value_at_quantile(q) as f64 / 1e3;
    let mut problems = collector.problems;
    problems.extend(verdict.details);
    Ok(Figures {
        rooms,
        members,
        duration_s: args.duration_s,
        rate: args.rate,
        drop_every_s: args.drop_every_s,
        seed: args.seed,
        server: if args.url.is_empty() { "in-process".into() } else { args.url.join(",") },
        totals: verdict.totals,
        drops,
        server_errors: collector.server_errors,
        latency_p50_ms: ms(0.5),
        latency_p99_ms: ms(0.99),
        latency_max_ms: collector.latency.max() as f64 / 1e3,
        caught_up_ms: caught_up.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        failures,
        problems,
    })
}

/// Joins `id` to its room through its gate.
async fn join(id: MemberId, gate: SocketAddr, path: &str, run: &str) -> anyhow::Result<Signaling> {
    let request = JoinRequest {
        room: format!("soak-{run}-r{}", id.room),
        name: id.to_string(),
        token: None,
        role: Role::Participant,
        reconnect: Some(ReconnectPolicy::default()),
        internal_key: None,
    };
    Signaling::join(&format!("ws://{gate}{path}"), &request, std::time::Instant::now()).await
}

/// Cuts connections per `plan` (offsets from `start`); returns the gates,
/// which must outlive the members' leaving, and the cuts that hit a live
/// connection.
async fn churn(gates: Vec<Gate>, plan: Vec<(Duration, usize)>, start: Instant) -> (Vec<Gate>, u64) {
    let mut drops = 0;
    for (at, member) in plan {
        tokio::time::sleep_until(start + at).await;
        if let Some(gate) = gates.get(member)
            && gate.cut().await > 0
        {
            drops += 1;
        }
    }
    (gates, drops)
}

/// The server address and WebSocket path of a `ws://host:port/path` URL
/// (the proxy speaks plain TCP, so no `wss`).
async fn upstream_of(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let rest = url.strip_prefix("ws://").context("--url must be ws://host:port/path")?;
    let (authority, path) = match rest.split_once('/') {
        Some((authority, path)) if !path.is_empty() => (authority, format!("/{path}")),
        Some((authority, _)) => (authority, WS_PATH.to_owned()),
        None => (rest, WS_PATH.to_owned()),
    };
    let addr = tokio::net::lookup_host(authority)
        .await
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("{authority} has no address"))?;
    Ok((addr, path))
}

/// Today, for the report.
fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "?".into(), |s| s.trim().to_owned())
}
