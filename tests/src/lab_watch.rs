//! Watching headless peers that run as processes in a [`NatLab`]: their
//! `--json` output lines, what they say happened, and cutting the host off.

use crate::netlab::{LabProcess, NatLab, Place};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Recovery after a fault takes a few seconds (backoff, ICE restart); the
/// rest is headroom for a loaded machine.
pub const RECOVERS_WITHIN: Duration = Duration::from_secs(45);

pub fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or(Value::Null)
}

/// Reads both processes' output until `done` holds over everything seen.
pub fn watch(a: &mut LabProcess, b: &mut LabProcess, what: &str, mut done: impl FnMut(&[String], &[String]) -> bool) {
    let deadline = Instant::now() + RECOVERS_WITHIN;
    loop {
        for p in [&mut *a, &mut *b] {
            while let Ok(line) = p.lines.try_recv() {
                p.seen.push(line);
            }
        }
        if done(&a.seen, &b.seen) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n--- A:\n{}\n--- B:\n{}",
            a.seen.join("\n"),
            b.seen.join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn events<'a>(lines: &'a [String], kind: &'a str) -> impl Iterator<Item = Value> + 'a {
    lines.iter().map(|l| json(l)).filter(move |v| v["event"] == kind)
}

/// Drops every packet in or out of [`Place::Host`]'s only interface, with
/// iptables inside it (`true`), or stops dropping them.
pub fn drop_host_traffic(lab: &NatLab, cut: bool) {
    let action = if cut { "-I" } else { "-D" };
    for rule in [["INPUT", "-i"], ["OUTPUT", "-o"]] {
        let argv = ["iptables", action, rule[0], rule[1], "eth0", "-j", "DROP"];
        let out = lab.run(Place::Host, &argv);
        assert!(out.status.success(), "{argv:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// The latest video stats line after line `from` shows video arriving.
pub fn video_flowing(lines: &[String], from: usize) -> bool {
    let latest = events(&lines[from.min(lines.len())..], "stats").filter(|v| v["kind"] == "video").last();
    latest.is_some_and(|v| v["kbps"].as_f64() > Some(50.0))
}
