//! The soak's figures: as text, as one JSON object, and as the Markdown
//! section of `docs/benchmarks.md` between the chat soak's markers.

use crate::ledger::Totals;
use serde::Serialize;
use std::fmt::Write as _;

/// Start of the section this program owns in the Markdown file.
pub const BEGIN: &str = "<!-- chat-soak:begin -->";
/// End of it.
pub const END: &str = "<!-- chat-soak:end -->";

/// Everything a run measured.
#[derive(Debug, Serialize)]
pub struct Figures {
    /// Rooms.
    pub rooms: usize,
    /// Members per room.
    pub members: usize,
    /// Seconds of chat and churn.
    pub duration_s: u64,
    /// Chat messages per second per member.
    pub rate: f64,
    /// Mean seconds between cuts per member.
    pub drop_every_s: f64,
    /// The seed of the cut plan and the send phases.
    pub seed: u64,
    /// `in-process`, or the URL of the server.
    pub server: String,
    /// The ledger's counts.
    #[serde(flatten)]
    pub totals: Totals,
    /// Cuts that hit a live connection.
    pub drops: u64,
    /// Error messages from the server (none expected).
    pub server_errors: u64,
    /// Send to receipt, over every delivery, in milliseconds.
    pub latency_p50_ms: f64,
    /// 99th percentile of the same.
    pub latency_p99_ms: f64,
    /// Largest of the same.
    pub latency_max_ms: f64,
    /// Milliseconds from the end of sending until every member had its
    /// room's last message (absent: not within the bound).
    pub caught_up_ms: Option<u64>,
    /// Why the run failed (empty: it passed).
    pub failures: Vec<String>,
    /// Problems one by one (bounded).
    pub problems: Vec<String>,
}

impl Figures {
    /// No fault, no lost session, and churn that actually happened.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The reasons to fail a run with these counts.
    pub fn judge(&mut self) {
        let t = &self.totals;
        let mut failures = Vec::new();
        if t.faults() > 0 {
            failures.push(format!(
                "{} faults (lost {}, duplicated {}, lost deliveries {}, repeated deliveries {}, out of order {}, \
                 unknown {}, conflicts {})",
                t.faults(),
                t.lost,
                t.duplicated,
                t.lost_deliveries,
                t.duplicated_deliveries,
                t.reordered,
                t.unknown,
                t.conflicts
            ));
        }
        if t.rejoins > 0 {
            failures.push(format!("{} sessions lost (fresh rejoins)", t.rejoins));
        }
        if self.drops == 0 || t.resumes == 0 {
            failures.push(format!("no churn to prove anything ({} drops, {} resumes)", self.drops, t.resumes));
        }
        if t.sent == 0 {
            failures.push("nothing was sent".into());
        }
        if self.caught_up_ms.is_none() {
            failures.push("the members did not all catch up in time".into());
        }
        self.failures.extend(failures);
    }

    /// Plain lines for the terminal.
    pub fn text(&self) -> String {
        let t = &self.totals;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "rooms {} x members {}, {} s at {} msg/s per member, server {}",
            self.rooms, self.members, self.duration_s, self.rate, self.server
        );
        let _ = writeln!(out, "messages sent {}, stored {}", t.sent, t.stored);
        let _ = writeln!(out, "deliveries {} of {} (messages x members)", t.deliveries, t.expected_deliveries);
        let _ = writeln!(
            out,
            "drops {} (mean every {} s per member, seed {}), resumes {}, rejoins {}",
            self.drops, self.drop_every_s, self.seed, t.resumes, t.rejoins
        );
        let _ = writeln!(out, "lost {}, duplicated {}", t.lost, t.duplicated);
        let _ = writeln!(
            out,
            "lost deliveries {}, duplicated deliveries {}, out of order {}, unknown {}, conflicts {}",
            t.lost_deliveries, t.duplicated_deliveries, t.reordered, t.unknown, t.conflicts
        );
        let _ = writeln!(
            out,
            "delivery latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.latency_p50_ms, self.latency_p99_ms, self.latency_max_ms
        );
        let _ = writeln!(out, "caught up {}, server errors {}", self.caught_up(), self.server_errors);
        for p in &self.problems {
            let _ = writeln!(out, "  problem: {p}");
        }
        for f in &self.failures {
            let _ = writeln!(out, "FAILED: {f}");
        }
        if self.passed() {
            let _ = writeln!(out, "PASSED");
        }
        out
    }

    fn caught_up(&self) -> String {
        self.caught_up_ms.map_or_else(
            || "not within the bound".into(),
            |ms| format!("{:.1} s after sending stopped", ms as f64 / 1e3),
        )
    }

    /// The Markdown section, markers included.
    pub fn markdown(&self, command: &str, date: &str, cores: usize) -> String {
        let t = &self.totals;
        let mut out = String::new();
        let _ = writeln!(out, "{BEGIN}");
        let _ = writeln!(
            out,
            "Command: `{command}` (run {date}; {cores} cores; server {}, clients and proxy in one process, loopback only).\n",
            self.server
        );
        let _ = writeln!(out, "| figure | value |\n|---|---|");
        let mut row = |name: &str, value: String| {
            let _ = writeln!(out, "| {name} | {value} |");
        };
        row("rooms x members", format!("{} x {}", self.rooms, self.members));
        row("chat", format!("{} msg/s per member for {} s", self.rate, self.duration_s));
        row(
            &format!("connection drops (mean {} s apart per member, seed {})", self.drop_every_s, self.seed),
            self.drops.to_string(),
        );
        row("resumes / fresh rejoins", format!("{} / {}", t.resumes, t.rejoins));
        row("messages sent / stored", format!("{} / {}", t.sent, t.stored));
        row("deliveries (messages x members)", format!("{} of {}", t.deliveries, t.expected_deliveries));
        row("lost / duplicated messages", format!("{} / {}", t.lost, t.duplicated));
        row(
            "lost / repeated / out-of-order deliveries",
            format!("{} / {} / {}", t.lost_deliveries, t.duplicated_deliveries, t.reordered),
        );
        row(
            "delivery latency p50 / p99 / max",
            format!("{:.1} / {:.1} / {:.1} ms", self.latency_p50_ms, self.latency_p99_ms, self.latency_max_ms),
        );
        row("everyone caught up", self.caught_up());
        row("result", if self.passed() { "passed".into() } else { format!("FAILED: {}", self.failures.join("; ")) });
        let _ = writeln!(
            out,
            "\nLatency is from the send to the receipt at each member. A message sent, or due, while a \
             connection is down waits for the reconnection (the first attempt comes 0.25-0.5 s after the drop): \
             that wait, not the server, sets the p99."
        );
        let _ = writeln!(out, "{END}");
        out
    }
}
