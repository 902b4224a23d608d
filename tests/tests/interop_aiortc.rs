//! Interop with an independent WebRTC stack: aiortc (Python), driven by
//! `tests/interop/aiortc_peer.py`, a client written from docs/protocol.md
//! alone. Mesh calls with each other, with the headless Rust peer and with
//! Chromium running the browser client, and
//! SFU rooms of aiortc publishers and subscribers joining in different
//! orders; aiortc decodes every remote's video and audio (the script exits
//! 0 only when `--expect-peers` publishers were decoded).
//!
//! The venv comes from `scripts/aiortc-venv` (scripts/test runs it before
//! entering the loopback-only namespace: pip needs the network).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use switchboard_e2e::{Driver, base_url, rust_peer, serial, server_with, settings, wait_for_rust_media};
use switchboard_peer::MediaSource;
use switchboard_protocol::RoomMode;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// aioice gathers every address but 127.0.0.1 and ::1: in the
/// loopback-only namespace aiortc would have no candidate at all. A second
/// loopback address (still only `lo`, still loopback) gives it one.
fn loopback_for_aiortc() {
    let out = std::process::Command::new("ip").args(["addr", "add", "127.0.0.2/8", "dev", "lo"]).output();
    let out = out.expect("ip runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let exists = stderr.contains("File exists") || stderr.contains("already assigned");
    assert!(out.status.success() || exists, "adding 127.0.0.2 to lo: {stderr}");
}

fn python() -> PathBuf {
    loopback_for_aiortc();
    let python = repo().join("target/aiortc-venv/bin/python");
    assert!(python.exists(), "no aiortc venv at {}: run scripts/aiortc-venv (scripts/test does)", python.display());
    python
}

/// One aiortc participant, run for `run_s` seconds: its process and the
/// lines it has printed so far.
struct Aiortc {
    name: String,
    child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

fn aiortc(
    url: &str,
    room: &str,
    name: &str,
    send_media: bool,
    expect_peers: usize,
    run_s: u64,
    extra: &[&str],
) -> Aiortc {
    let mut cmd = Command::new(python());
    cmd.arg(repo().join("tests/interop/aiortc_peer.py"))
        .args(["--url", url, "--room", room, "--name", name])
        .args(["--run-s", &run_s.to_string(), "--expect-peers", &expect_peers.to_string()])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if send_media {
        cmd.arg("--send-media");
    }
    let mut child = cmd.spawn().expect("the aiortc client starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Aiortc { name: name.to_owned(), child, lines, seen: Vec::new() }
}

impl Aiortc {
    /// Waits until it has its welcome: it is in the room, so whoever starts
    /// next joins after it.
    async fn joined(&mut self) {
        let wait = async {
            while let Some(line) = self.lines.recv().await {
                let welcome = line.contains("\"event\": \"welcome\"");
                self.seen.push(line);
                if welcome {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait).await.expect("aiortc joins");
    }

    /// The peer id its welcome gave it (after [`Aiortc::joined`]).
    fn id(&self) -> String {
        let welcome = self.seen.iter().find(|l| l.contains("\"event\": \"welcome\"")).expect("joined first");
        let welcome: serde_json::Value = serde_json::from_str(welcome).expect("the welcome line is JSON");
        welcome["id"].as_str().expect("welcome id").to_owned()
    }

    /// Waits for it to finish; panics with its output unless it decoded what
    /// it expected and saw no JSEP violation.
    async fn succeeded(mut self) -> Vec<String> {
        let name = self.name.clone();
        let read = async {
            while let Some(line) = self.lines.recv().await {
                self.seen.push(line);
            }
        };
        tokio::time::timeout(Duration::from_secs(90), read).await.expect("the aiortc client ends");
        let status = self.child.wait().await.expect("exit status");
        let mut stderr = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = tokio::io::AsyncReadExt::read_to_string(&mut err, &mut stderr).await;
        }
        let lines = self.seen;
        let violations: Vec<&String> = lines.iter().filter(|l| l.contains("\"jsep_violation\"")).collect();
        assert!(
            status.success() && violations.is_empty(),
            "aiortc {name}: {status}, JSEP violations {violations:?}\n--- stdout:\n{}\n--- stderr (tail):\n{}",
            lines.join("\n"),
            stderr.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        lines
    }
}

fn url(server: &switchboard_server::Server) -> String {
    format!("ws://{}/v1/ws", server.local_addr())
}

#[tokio::test]
async fn two_aiortc_peers_decode_each_other_in_a_mesh() {
    let _serial = serial().await;
    let server = server_with(settings()).await;
    let url = url(&server);
    let mut first = aiortc(&url, "mesh", "first", true, 1, 14, &[]);
    first.joined().await;
    let second = aiortc(&url, "mesh", "second", true, 1, 13, &[]);
    first.succeeded().await;
    second.succeeded().await;
}

#[tokio::test]
async fn aiortc_and_the_headless_peer_exchange_media_in_either_join_order() {
    let _serial = serial().await;
    let server = server_with(settings()).await;
    let url = url(&server);
    for (room, rust_first) in [("rust-first", true), ("aiortc-first", false)] {
        let mut rust = None;
        if rust_first {
            rust = Some(rust_peer(&server, room, "rust", MediaSource::Default).await);
        }
        let mut py = aiortc(&url, room, "aiortc", true, 1, 14, &[]);
        if !rust_first {
            py.joined().await;
            rust = Some(rust_peer(&server, room, "rust", MediaSource::Default).await);
        }
        let mut rust = rust.expect("joined");
        // The Rust peer receives aiortc's video and audio RTP.
        wait_for_rust_media(&mut rust, "aiortc's video and audio", |t| {
            let got = |kind: &str| t.iter().filter(|s| s.kind == kind).map(|s| s.packets).sum::<u64>();
            got("video") > 30 && got("audio") > 30
        })
        .await;
        py.succeeded().await;
        rust.leave().await;
    }
}

#[tokio::test]
async fn aiortc_and_a_browser_exchange_media_in_either_join_order() {
    let _serial = serial().await;
    let server = server_with(settings()).await;
    let (url, base) = (url(&server), base_url(&server));
    let driver = Driver::start().await;
    for (room, browser_first) in [("browser-first", true), ("aiortc-first", false)] {
        let ada = driver.browser("Ada").await;
        if browser_first {
            ada.join(&base, room, "Ada").await;
        }
        // aiortc exits 0 only once it has decoded the browser's video and
        // audio.
        let mut py = aiortc(&url, room, "aiortc", true, 1, 16, &[]);
        py.joined().await;
        if !browser_first {
            ada.join(&base, room, "Ada").await;
        }
        // Chromium decodes aiortc's VP8 and receives its Opus.
        let counter = |p: &serde_json::Value, kind: &str, key: &str| p["stats"][kind][key].as_f64().unwrap_or(0.0);
        ada.wait_for_stats(&py.id(), "aiortc's decoded video and audio", |p| {
            counter(p, "video", "framesDecoded") > 10.0 && counter(p, "audio", "bytesReceived") > 0.0
        })
        .await;
        py.succeeded().await;
        ada.close().await;
    }
}

#[tokio::test]
async fn an_sfu_room_of_aiortc_publishers_and_subscribers_in_different_join_orders() {
    let _serial = serial().await;
    let sfu = switchboard_server::config::Settings { room_mode: RoomMode::Sfu, sfu_loopback_only: true, ..settings() };
    let server = server_with(sfu).await;
    let url = url(&server);
    // The subscriber (nothing to send; it rejects the SFU's receive-only
    // sections with port 0, as some stacks do) joins first, in the middle,
    // or last.
    for (room, subscriber_at) in [("sub-first", 0), ("sub-middle", 1), ("sub-last", 2)] {
        let mut clients = Vec::new();
        let mut publishers = 0;
        for slot in 0..3 {
            let mut client = if slot == subscriber_at {
                aiortc(&url, room, "subscriber", false, 2, 16, &["--reject-unused"])
            } else {
                publishers += 1;
                aiortc(&url, room, &format!("publisher{publishers}"), true, 1, 16, &[])
            };
            client.joined().await;
            clients.push(client);
        }
        for client in clients {
            client.succeeded().await;
        }
    }
}
