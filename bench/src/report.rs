//! The Markdown report and where it goes in `docs/benchmarks.md`.

use crate::Results;
use crate::relay_cpu::CpuRun;
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

/// Whether a figure meets its target, given the value and its ratio to PeerJS.
type Check<'a> = &'a dyn Fn(f64, f64) -> bool;

/// The report section: one column per target, ratios against the last
/// (the reference, PeerJS).
pub fn render(m: &Machine, command: &str, quick: bool, results: &[Results], rate: u32) -> String {
    let reference = &results[results.len() - 1];
    let ours = &results[..results.len() - 1];
    let mut out = String::new();
    let _ = writeln!(out, "{BEGIN}");
    let _ = writeln!(out, "## Signaling relay: Switchboard vs PeerJS server 1.0.2\n");
    if quick {
        let _ = writeln!(out, "_Quick run: counts too small for real figures._\n");
    }
    let _ = writeln!(
        out,
        "Command: `{command}` (all servers on loopback in a private network namespace, one Rust load client for all)."
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
    let mut header = String::from("| measure |");
    let mut rule = String::from("|---|");
    for r in results {
        header.push_str(&format!(" {} |", r.target.label));
        rule.push_str("---|");
    }
    for r in ours {
        header.push_str(&format!(" {} / PeerJS |", r.target.label));
        rule.push_str("---|");
    }
    header.push_str(" target |");
    rule.push_str("---|");
    let _ = writeln!(out, "{header}\n{rule}");
    let row = |out: &mut String,
               name: String,
               values: &[f64],
               unit: &str,
               decimals: usize,
               target: &str,
               ok: Option<Check<'_>>| {
        let mut line = format!("| {name} |");
        for v in values {
            line.push_str(&format!(" {v:.decimals$} {unit} |"));
        }
        let reference = values[values.len() - 1];
        for v in &values[..values.len() - 1] {
            let ratio = v / reference;
            let mark = match ok {
                Some(f) if !f(*v, ratio) => " (not met)",
                Some(_) => " (met)",
                None => "",
            };
            line.push_str(&format!(" {ratio:.2}{mark} |"));
        }
        line.push_str(&format!(" {target} |"));
        let _ = writeln!(out, "{line}");
    };
    let cpu_ok = |_: f64, ratio: f64| ratio <= CPU_RATIO_TARGET;
    for (name, pick) in [
        ("relayed ~2 KB offer", (|r: &Results| &r.offer) as fn(&Results) -> &Vec<CpuRun>),
        ("relayed ~300 B candidate", |r: &Results| &r.candidate),
    ] {
        let sizes: Vec<String> =
            results.iter().map(|r| pick(r).first().map_or(0, |x| x.frame_bytes).to_string()).collect();
        let us: Vec<f64> = results.iter().map(|r| median(pick(r), CpuRun::us_per_message)).collect();
        row(
            &mut out,
            format!("server CPU per {name} ({} B frames, median of {})", sizes.join(" / "), args_rounds(results)),
            &us,
            "us",
            2,
            &format!("<= {CPU_RATIO_TARGET} of PeerJS"),
            Some(&cpu_ok),
        );
        let rates: Vec<f64> = results.iter().map(|r| median(pick(r), CpuRun::rate)).collect();
        row(
            &mut out,
            format!("throughput, {name} (closed loop, limited by the shared client)"),
            &rates,
            "msg/s",
            0,
            "",
            None,
        );
    }
    for (q, label) in [(0.5, "p50"), (0.99, "p99"), (1.0, "max")] {
        let v: Vec<f64> = results.iter().map(|r| r.latency.histogram.value_at_quantile(q) as f64).collect();
        let p99_ok = |v: f64, _: f64| v <= P99_TARGET_US as f64;
        let (target, ok): (String, Option<Check<'_>>) =
            if label == "p99" { (format!("<= {P99_TARGET_US} us"), Some(&p99_ok)) } else { (String::new(), None) };
        row(
            &mut out,
            format!("relay latency {label} at {rate} msg/s, open loop (candidates)"),
            &v,
            "us",
            0,
            &target,
            ok,
        );
    }
    let cpu_at_rate: Vec<f64> =
        results.iter().map(|r| r.latency.server_cpu.as_secs_f64() * 1e6 / r.latency.messages.max(1) as f64).collect();
    row(&mut out, format!("server CPU per message at {rate} msg/s"), &cpu_at_rate, "us", 2, "", None);
    let idle_ok = |v: f64, _: f64| v <= IDLE_BYTES_TARGET;
    for i in 0..reference.idle.len() {
        let v: Vec<f64> = results.iter().map(|r| r.idle.get(i).map_or(f64::NAN, |p| p.per_connection)).collect();
        row(
            &mut out,
            format!("server RSS per idle connection at {}", reference.idle[i].connections),
            &v,
            "B",
            0,
            &format!("<= {IDLE_BYTES_TARGET:.0} B"),
            Some(&idle_ok),
        );
    }
    let _ = writeln!(
        out,
        "\nRatios below 1 favour Switchboard. \"(met)\" / \"(not met)\" compare with the target in the last column."
    );
    let _ = writeln!(out, "Idle RSS with no connections and at the largest count:");
    for r in results {
        let _ = writeln!(
            out,
            "- {}: {:.1} MB, then {:.1} MB at {}",
            r.target.label,
            r.idle_base as f64 / 1e6,
            r.idle.last().map_or(0.0, |x| x.rss as f64 / 1e6),
            r.idle.last().map_or(0, |x| x.connections)
        );
    }
    let _ = writeln!(
        out,
        "\nSwitchboard idle connections are joined to rooms of {}; PeerJS idle connections are registered ids.",
        crate::idle::ROOM_SIZE
    );
    let _ = writeln!(out, "\nPer-round CPU figures (us per message, offer / candidate):\n");
    for r in results {
        let rounds: Vec<String> = r
            .offer
            .iter()
            .zip(&r.candidate)
            .map(|(o, c)| format!("{:.2} / {:.2}", o.us_per_message(), c.us_per_message()))
            .collect();
        let _ = writeln!(out, "- {}: {}", r.target.label, rounds.join("; "));
    }
    let _ = writeln!(out, "{END}");
    out
}

fn args_rounds(results: &[Results]) -> usize {
    results.first().map_or(0, |r| r.offer.len())
}

/// Replaces the signaling section of `path` (or appends it).
pub fn write_section(path: &Path, section: &str) -> anyhow::Result<()> {
    crate::section::write_section(path, BEGIN, END, section)
}
