//! The Markdown report and where it goes in `docs/benchmarks.md`.

use crate::Results;
use crate::relay_cpu::CpuRun;
use anyhow::Context;
use std::fmt::Write as _;
use std::path::Path;

const BEGIN: &str = "<!-- BEGIN signaling-bench (written by switchboard-bench) -->";
const END: &str = "<!-- END signaling-bench -->";

/// Targets from the issue.
const CPU_RATIO_TARGET: f64 = 0.2;
const IDLE_BYTES_TARGET: f64 = 4096.0;
const P99_TARGET_US: u64 = 1000;

/// The machine at the start of the run.
#[derive(Debug)]
pub struct Machine {
    cores: usize,
    cpu: String,
    kernel: String,
    load: String,
    date: String,
    node: String,
}

fn command_output(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "?".into())
}

impl Machine {
    /// Reads /proc and a few commands.
    pub fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or("?".into(), |(_, v)| v.trim().to_owned());
        Self {
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            cpu,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
            load: load(),
            date: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            node: command_output("node", &["--version"]),
        }
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn median(runs: &[CpuRun], f: impl Fn(&CpuRun) -> f64) -> f64 {
    let mut v: Vec<f64> = runs.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**not met**" }
}

/// The report section.
pub fn render(m: &Machine, command: &str, quick: bool, results: &[Results], rate: u32) -> String {
    let (s, p) = (&results[0], &results[1]);
    let mut out = String::new();
    let _ = writeln!(out, "{BEGIN}");
    let _ = writeln!(out, "## Signaling relay: Switchboard vs PeerJS server 1.0.2\n");
    if quick {
        let _ = writeln!(out, "_Quick run: counts too small for real figures._\n");
    }
    let _ = writeln!(
        out,
        "Command: `{command}` (both servers on loopback in a private network namespace, one Rust load client for both)."
    );
    let _ = writeln!(
        out,
        "Machine: {} cores, {}, Linux {}, Node {}; run {}; load average at start {}, at end {}.\n",
        m.cores,
        m.cpu,
        m.kernel,
        m.node,
        m.date,
        m.load,
        load()
    );
    let _ = writeln!(out, "| measure | Switchboard | PeerJS 1.0.2 | Switchboard / PeerJS | target | |");
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for (name, sr, pr) in
        [("relayed ~2 KB offer", &s.offer, &p.offer), ("relayed ~300 B candidate", &s.candidate, &p.candidate)]
    {
        let su = median(sr, CpuRun::us_per_message);
        let pu = median(pr, CpuRun::us_per_message);
        let ratio = su / pu;
        let _ = writeln!(
            out,
            "| server CPU per {name} ({} B / {} B frames, median of {}) | {su:.2} us | {pu:.2} us | {ratio:.2} | <= {CPU_RATIO_TARGET} | {} |",
            sr.first().map_or(0, |r| r.frame_bytes),
            pr.first().map_or(0, |r| r.frame_bytes),
            sr.len(),
            verdict(ratio <= CPU_RATIO_TARGET)
        );
        let (sm, pm) = (median(sr, CpuRun::rate), median(pr, CpuRun::rate));
        let _ = writeln!(
            out,
            "| throughput, {name} (closed loop, client-bound) | {sm:.0} msg/s | {pm:.0} msg/s | {:.2} | | |",
            sm / pm
        );
    }
    let (sl, pl) = (&s.latency.histogram, &p.latency.histogram);
    for (q, label) in [(0.5, "p50"), (0.99, "p99"), (1.0, "max")] {
        let (a, b) = (sl.value_at_quantile(q), pl.value_at_quantile(q));
        let target = if label == "p99" { format!("<= {P99_TARGET_US} us") } else { String::new() };
        let v = if label == "p99" { verdict(a <= P99_TARGET_US) } else { "" };
        let _ = writeln!(
            out,
            "| relay latency {label} at {rate} msg/s open loop (candidates) | {a} us | {b} us | {:.2} | {target} | {v} |",
            a as f64 / b as f64
        );
    }
    let cpu_at_rate = |r: &Results| r.latency.server_cpu.as_secs_f64() * 1e6 / r.latency.messages.max(1) as f64;
    let _ = writeln!(
        out,
        "| server CPU per message at {rate} msg/s | {:.2} us | {:.2} us | {:.2} | | |",
        cpu_at_rate(s),
        cpu_at_rate(p),
        cpu_at_rate(s) / cpu_at_rate(p)
    );
    for (sp, pp) in s.idle.iter().zip(&p.idle) {
        let _ = writeln!(
            out,
            "| server RSS per idle connection at {} | {:.0} B | {:.0} B | {:.2} | <= {IDLE_BYTES_TARGET:.0} B | {} |",
            sp.connections,
            sp.per_connection,
            pp.per_connection,
            sp.per_connection / pp.per_connection,
            verdict(sp.per_connection <= IDLE_BYTES_TARGET)
        );
    }
    let _ = writeln!(
        out,
        "\nIdle RSS: Switchboard {:.1} MB with no connections, {:.1} MB at {}; PeerJS {:.1} MB and {:.1} MB. \
         Switchboard connections are joined to rooms of {}; PeerJS connections are registered ids.",
        s.idle_base as f64 / 1e6,
        s.idle.last().map_or(0.0, |x| x.rss as f64 / 1e6),
        s.idle.last().map_or(0, |x| x.connections),
        p.idle_base as f64 / 1e6,
        p.idle.last().map_or(0.0, |x| x.rss as f64 / 1e6),
        crate::idle::ROOM_SIZE,
    );
    let _ = writeln!(out, "\nPer-round CPU figures (us per message, offer / candidate):\n");
    for r in results {
        let rounds: Vec<String> = r
            .offer
            .iter()
            .zip(&r.candidate)
            .map(|(o, c)| format!("{:.2} / {:.2}", o.us_per_message(), c.us_per_message()))
            .collect();
        let _ = writeln!(out, "- {}: {}", r.kind.name(), rounds.join("; "));
    }
    let _ = writeln!(out, "{END}");
    out
}

/// Replaces the bench section of `path` (or appends it).
pub fn write_section(path: &Path, section: &str) -> anyhow::Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if e > b => format!("{}{}{}", &old[..b], section.trim_end(), &old[e + END.len()..]),
        _ => format!("{}\n{section}", old.trim_end()),
    };
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}
