//! The headless peer's command line as a script runs it: in the background
//! with no input, for a set time, and stopped by a signal. Each way out
//! leaves the room, so the others see `left` at once, not a seat held for
//! the resume grace.

use std::process::Stdio;
use std::time::Duration;
use switchboard_e2e::{quiet_peer, serial, server, wait_for_event, workspace_binary};
use switchboard_peer::PeerEvent;
use switchboard_protocol::LeaveReason;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The CLI joined to `room` with no input (stdin at end of file).
fn cli(server: &switchboard_server::Server, room: &str, extra: &[&str]) -> Child {
    Command::new(workspace_binary("switchboard-peer"))
        .args(["join", &format!("ws://{}/v1/ws", server.local_addr()), "--room", room, "--name", "cli"])
        .args(["--json", "--loopback-only", "--no-media"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("switchboard-peer starts")
}

/// Its JSON lines until it exits, and its exit status.
async fn finish(mut child: Child) -> (Vec<serde_json::Value>, std::process::ExitStatus) {
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    let read = async {
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push(serde_json::from_str(&line).unwrap_or(serde_json::Value::String(line)));
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read).await.expect("the CLI exits");
    (seen, child.wait().await.expect("exit status"))
}

fn left_reason(lines: &[serde_json::Value]) -> Option<&str> {
    lines.iter().find(|l| l["event"] == "left").and_then(|l| l["reason"].as_str())
}

#[tokio::test]
async fn with_a_duration_the_cli_stays_without_input_then_leaves() {
    let _serial = serial().await;
    let server = server().await;
    let mut watcher = quiet_peer(&server, "timed", "watcher").await;
    let child = cli(&server, "timed", &["--duration", "2"]);
    wait_for_event(&mut watcher, "the CLI joining", |e| matches!(e, PeerEvent::PeerJoined(_))).await;
    let (lines, status) = finish(child).await;
    assert!(status.success(), "{status}: {lines:?}");
    // Not "end of input": stdin was at its end from the start.
    assert_eq!(left_reason(&lines), Some("duration"), "{lines:?}");
    let left = wait_for_event(&mut watcher, "the CLI leaving", |e| matches!(e, PeerEvent::PeerLeft { .. })).await;
    assert!(matches!(left, PeerEvent::PeerLeft { reason: LeaveReason::Left, .. }), "{left:?}");
    watcher.leave().await;
}

#[tokio::test]
async fn sigint_and_sigterm_leave_the_room() {
    let _serial = serial().await;
    let server = server().await;
    for signal in ["INT", "TERM"] {
        let room = format!("signal-{signal}");
        let mut watcher = quiet_peer(&server, &room, "watcher").await;
        let child = cli(&server, &room, &["--duration", "60"]);
        wait_for_event(&mut watcher, "the CLI joining", |e| matches!(e, PeerEvent::PeerJoined(_))).await;
        let pid = child.id().expect("running").to_string();
        let kill = std::process::Command::new("kill").args([&format!("-{signal}"), &pid]).status();
        assert!(kill.expect("kill runs").success());
        // At once, as `left`: without the signal handler the process died
        // and the seat was held for the resume grace, then `timeout`.
        let left = tokio::time::timeout(
            Duration::from_secs(5),
            wait_for_event(&mut watcher, "the CLI leaving", |e| matches!(e, PeerEvent::PeerLeft { .. })),
        )
        .await
        .expect("left within 5 s, not after the resume grace");
        assert!(matches!(left, PeerEvent::PeerLeft { reason: LeaveReason::Left, .. }), "SIG{signal}: {left:?}");
        let (lines, status) = finish(child).await;
        assert!(status.success(), "SIG{signal}: {status}: {lines:?}");
        assert_eq!(left_reason(&lines), Some(format!("SIG{signal}").as_str()), "{lines:?}");
        watcher.leave().await;
    }
}
