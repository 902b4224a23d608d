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
