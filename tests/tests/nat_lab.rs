//! Two headless peers, each behind its own symmetric NAT, with coturn and
//! the signaling server on a public network (all in namespaces this test
//! builds and removes). Without TURN the call cannot connect; with TURN it
//! connects over the relay, and media and data flow.

use serde_json::Value;
use std::time::Duration;
use switchboard_e2e::netlab::{LabProcess, NatLab, PUBLIC_IP, Place};
use switchboard_e2e::{Coturn, serial};

const SECRET: &str = "nat-lab-turn-secret-0123456789";
/// ICE gives up on a pair that never answers after webrtc-rs's failure
/// timeout (25 s) plus checking time; a failed call is reported well within this.
const ICE_FAILS_WITHIN: Duration = Duration::from_secs(60);
/// Connecting over the relay takes well under a second here; the rest is
/// headroom for a loaded machine.
const CONNECTS_WITHIN: Duration = Duration::from_secs(30);
const SIGNALING_PORT: u16 = 8080;

use switchboard_e2e::workspace_binary as binary;

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or(Value::Null)
}

fn start_server(lab: &mut NatLab, turn: Option<&Coturn>) -> LabProcess {
    let server = binary("switchboard");
    let bind = format!("{PUBLIC_IP}:{SIGNALING_PORT}");
    let mut argv =
        vec![server.as_str(), "--bind", &bind, "--insecure-open-rooms", "--stun-port", "3480", "--log", "warn"];
    let url = turn.map(Coturn::url);
    if let Some(url) = &url {
        argv.extend(["--turn-secret", SECRET, "--turn-url", url]);
    }
    // Wait until it accepts connections.
    let process = lab.spawn(Place::Public, &argv);
    let probe = format!("http://{bind}/readyz");
    for _ in 0..100 {
        let out = lab.run(Place::Public, &["curl", "-sf", "--max-time", "1", &probe]);
        if out.status.success() {
            return process;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the signaling server did not get ready in the public namespace");
}

fn start_peer(lab: &mut NatLab, place: Place, name: &str, room: &str) -> LabProcess {
    let peer = binary("switchboard-peer");
    let url = format!("ws://{PUBLIC_IP}:{SIGNALING_PORT}/v1/ws");
    lab.spawn(place, &[&peer, "join", &url, "--room", room, "--name", name, "--json", "--stats", "1"])
}

#[tokio::test]
async fn symmetric_nat_on_both_sides_fails_direct_and_connects_through_turn() {
    let _serial = serial().await;
    let mut lab = NatLab::new();
    let runner = ["ip", "netns", "exec"];
    let public = lab.ns(Place::Public);
    let coturn = Coturn::start_with(&[SECRET], PUBLIC_IP, &[runner[0], runner[1], runner[2], &public], &[]).await;

    // Without TURN: host candidates are private, server-reflexive ones are
    // useless behind symmetric NAT. ICE fails.
    let server = start_server(&mut lab, None);
    let mut a = start_peer(&mut lab, Place::ClientA, "A", "direct");
    let mut b = start_peer(&mut lab, Place::ClientB, "B", "direct");
    for peer in [&mut a, &mut b] {
        peer.wait_for("ICE to fail without a relay", ICE_FAILS_WITHIN, |l| {
            let v = json(l);
            assert!(!(v["event"] == "connection" && v["state"] == "connected"), "connected without a relay: {l}");
            v["event"] == "connection" && v["state"] == "failed"
        });
    }
    for p in [&a, &b, &server] {
        lab.kill(p);
    }

    // With TURN: the same two peers connect through the relay.
    let _server = start_server(&mut lab, Some(&coturn));
    let mut a = start_peer(&mut lab, Place::ClientA, "A", "relayed");
    let mut b = start_peer(&mut lab, Place::ClientB, "B", "relayed");
    // turn-check from behind a NAT: STUN answers, and a relay is allocated.
    let check = lab.run(
        Place::ClientA,
        &[&binary("switchboard-peer"), "turn-check", &format!("ws://{PUBLIC_IP}:{SIGNALING_PORT}/v1/ws")],
    );
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success() && report.contains("relay allocated"), "turn-check from client A:\n{report}");
    for peer in [&mut a, &mut b] {
        peer.wait_for("connected", CONNECTS_WITHIN, |l| {
            let v = json(l);
            v["event"] == "connection" && v["state"] == "connected"
        });
        let line = peer.wait_for("video flowing over a relay pair", CONNECTS_WITHIN, |l| {
            let v = json(l);
            v["event"] == "stats" && v["kind"] == "video" && v["packets"].as_u64() > Some(30)
        });
        let pair = json(&line)["pair"].as_str().unwrap_or_default().to_string();
        assert!(pair.contains("relay"), "the selected pair is {pair:?}, not through the relay");
    }
    a.say("hello across two NATs");
    b.wait_for("A's line", CONNECTS_WITHIN, |l| json(l)["text"] == "hello across two NATs");
    drop(coturn);
}
