//! The chat soak (`switchboard-chat-soak`) across a cluster of three node
//! processes on a real Redis: every room spans the three nodes, and each
//! member's connection is cut at random times; the soak's ledger checks by
//! `seq` that every message was stored once and reached every member once,
//! in order. Bounded (20 s of chat) for CI; `scripts/bench-chat-soak --url
//! a,b,c` runs it longer.

use std::process::Command;
use switchboard_e2e::cluster_kit::NodeProcess;
use switchboard_e2e::{Redis, require_loopback_namespace, workspace_binary};

#[tokio::test]
async fn chat_across_three_nodes_under_connection_churn_loses_and_duplicates_nothing() {
    require_loopback_namespace();
    let redis = Redis::start().await;
    let mut nodes = Vec::new();
    for id in ["node-1", "node-2", "node-3"] {
        // The soak's members all come from 127.0.0.1.
        nodes.push(NodeProcess::start_with(&redis, id, &["--admissions-per-source-per-second", "0"]).await);
    }
    let urls: Vec<String> = nodes.iter().map(NodeProcess::url).collect();
    let soak = workspace_binary("switchboard-chat-soak");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(soak)
            .args(["--url", &urls.join(","), "--rooms", "6", "--members", "3", "--duration-s", "20"])
            .args(["--drop-every-s", "5", "--json"])
            .output()
            .expect("the soak runs")
    })
    .await
    .expect("joined");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "soak failed: {stdout}\n{stderr}");
    let figures: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON figures");
    println!("{figures}");
    assert!(figures["drops"].as_u64().unwrap_or(0) > 0, "the soak cut connections: {figures}");
    drop(nodes);
}

/// The chat soak through HAProxy while the cluster is rolling-restarted:
/// every 20 s a node drains (hands its rooms over), exits and starts
/// again. Members resume wherever the balancer sends them; the ledger
/// must show nothing lost, nothing duplicated, and no fresh rejoin (a
/// lost session).
#[tokio::test]
async fn chat_through_a_cluster_restarted_node_by_node_every_20_s_loses_nothing_and_no_session() {
    use switchboard_e2e::cluster_kit::Haproxy;
    require_loopback_namespace();
    let redis = Redis::start().await;
    let mut nodes = Vec::new();
    for id in ["node-1", "node-2", "node-3"] {
        nodes.push(NodeProcess::start_with(&redis, id, &["--admissions-per-source-per-second", "0"]).await);
    }
    let lb = Haproxy::start(&[&nodes[0], &nodes[1], &nodes[2]]).await;
    let url = lb.url();
    let soak = workspace_binary("switchboard-chat-soak");
    const DURATION_S: u64 = 70;
    let run = tokio::task::spawn_blocking(move || {
        Command::new(soak)
            .args(["--url", &url, "--rooms", "6", "--members", "3", "--duration-s", &DURATION_S.to_string()])
            .args(["--drop-every-s", "10", "--json"])
            .output()
            .expect("the soak runs")
    });
    let mut restarts = 0;
    for (round, node) in nodes.iter_mut().enumerate() {
        tokio::time::sleep(std::time::Duration::from_secs(if round == 0 { 10 } else { 20 })).await;
        node.terminate();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while node.exited().is_none() {
            assert!(std::time::Instant::now() < deadline, "{} did not exit after SIGTERM", node.id);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        node.restart().await;
        restarts += 1;
    }
    let output = run.await.expect("joined");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "soak failed: {stdout}\n{stderr}");
    let figures: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON figures");
    println!("{restarts} rolling restarts during the soak: {figures}");
    assert_eq!(restarts, 3);
    drop(nodes);
}
