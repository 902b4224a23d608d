//! The cluster on Redis, with a real `redis-server` started by the test:
//! nodes find each other through the registry, and a node that loses Redis
//! says so, keeps serving its rooms, and comes back by itself.

use serde_json::Value;
use switchboard_e2e::{POLL, Redis, WAIT, http_get, server_with, settings};
use switchboard_server::Server;
use switchboard_server::cluster::ClusterSettings;

async fn node(redis: &Redis, id: &str) -> Server {
    let cluster = ClusterSettings { redis_url: redis.url(), node_id: id.into() };
    server_with(switchboard_server::config::Settings { cluster: Some(cluster), ..settings() }).await
}

/// Polls `GET /v1/cluster` of `server` until `done` holds; returns it.
async fn cluster_until(server: &Server, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = http_get(server.local_addr(), "/v1/cluster").await;
        assert_eq!(status, 200, "{body}");
        let view: Value = serde_json::from_str(&body).expect("JSON");
        if done(&view) {
            return view;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}: {view:#}");
        tokio::time::sleep(POLL).await;
    }
}

fn ids(view: &Value) -> Vec<&str> {
    view["nodes"].as_array().map(|n| n.iter().filter_map(|n| n["id"].as_str()).collect()).unwrap_or_default()
}

#[tokio::test]
async fn nodes_find_each_other_and_a_node_that_loses_redis_keeps_serving_and_comes_back() {
    let mut redis = Redis::start().await;
    let a = node(&redis, "node-a").await;
    let b = node(&redis, "node-b").await;
    let view = cluster_until(&a, "both nodes", |v| ids(v) == ["node-a", "node-b"]).await;
    assert_eq!(view["node"], "node-a");
    assert_eq!(view["redis"], "up");
    let b_entry = &view["nodes"][1];
    assert_eq!(b_entry["addr"], b.local_addr().to_string());
    assert!(b_entry["started_unix_ms"].as_u64().is_some() && b_entry["connections"].as_u64().is_some(), "{view:#}");
    assert_eq!(http_get(a.local_addr(), "/readyz").await, (200, "ready\nredis: up\n".into()));

    // Redis dies: the node stays ready (it serves its own rooms), says so,
    // and a room on it still works.
    redis.kill();
    cluster_until(&a, "Redis reported unreachable", |v| v["redis"] == "unreachable").await;
    assert_eq!(http_get(a.local_addr(), "/readyz").await, (200, "ready\nredis: unreachable\n".into()));
    let (_, metrics) = http_get(a.local_addr(), "/metrics").await;
    assert!(metrics.contains("switchboard_redis_up 0"), "{metrics}");
    let peer = switchboard_e2e::quiet_peer(&a, "local", "Ada").await;
    peer.chat("still here").await.expect("chat on a node without Redis");
    peer.leave().await;

    // Redis comes back (empty: no persistence): both nodes register again.
    redis.restart().await;
    cluster_until(&a, "both nodes back", |v| v["redis"] == "up" && ids(v) == ["node-a", "node-b"]).await;

    // A node that stops leaves the list.
    b.shutdown().await.expect("shutdown");
    cluster_until(&a, "node-b gone", |v| ids(v) == ["node-a"]).await;
}

#[tokio::test]
async fn a_single_node_has_no_cluster_page() {
    let single = server_with(settings()).await;
    assert_eq!(http_get(single.local_addr(), "/v1/cluster").await.0, 404);
    assert_eq!(http_get(single.local_addr(), "/readyz").await, (200, "ready\n".into()));
}
