//! Drains that cannot hand rooms over (decision 0019): on a single node,
//! or in a cluster whose Redis is unreachable, the drain falls back to what
//! a shutdown always did (every client told `going_away`, and it joins
//! afresh), and says so in the log and the metrics. Also the operator's
//! ways to ask for a drain: `switchboard drain` (`POST /v1/drain`).

use std::process::{Command, Stdio};
use switchboard_e2e::ws::WsClient;
use switchboard_e2e::{POLL, Redis, WAIT, free_port, http_get, server_with, settings, workspace_binary};
use switchboard_server::cluster::ClusterSettings;

#[tokio::test]
async fn a_single_node_asked_to_drain_tells_its_clients_going_away_and_logs_that_it_could_not_hand_over() {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut node = Command::new(workspace_binary("switchboard"))
        .args(["--bind", &addr.to_string(), "--no-stun", "--log", "warn", "--log-format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("switchboard starts");
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the node listens");
        tokio::time::sleep(POLL).await;
    }
    let mut ada = WsClient::connect(addr).await;
    ada.join("alone", "Ada").await;

    // From a web page: refused (a page could otherwise drain the node of
    // the operator who opens it).
    let page = post_drain(addr, &[("Origin", "http://evil.example")]).await;
    assert!(page.starts_with("HTTP/1.1 403"), "{page}");
    // Relayed by a proxy on this host, with a wrong token: not the operator.
    let relayed = post_drain(addr, &[("X-Forwarded-For", "203.0.113.9"), ("Authorization", "Bearer wrong")]).await;
    assert!(relayed.starts_with("HTTP/1.1 403"), "{relayed}");
    // The operator's command.
    let cli = Command::new(workspace_binary("switchboard"))
        .args(["drain", "--url", &format!("http://{addr}")])
        .output()
        .expect("switchboard drain runs");
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    assert_eq!(String::from_utf8_lossy(&cli.stdout).trim(), "draining");

    let notice = ada.recv("going_away").await;
    assert!(notice["retry_after_ms"].as_u64().is_some(), "{notice}");
    let output = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + WAIT;
        while node.try_wait().expect("try_wait").is_none() {
            assert!(std::time::Instant::now() < deadline, "the node exits after its drain");
            std::thread::sleep(POLL);
        }
        node.wait_with_output().expect("output")
    })
    .await
    .expect("joined");
    assert!(output.status.success(), "{output:?}");
    let log = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains("a single node has nobody to hand rooms to") && log.contains("\"rooms\":1"),
        "the log says the room could not be handed over: {log}"
    );
}

/// A raw `POST /v1/drain` with extra headers; the whole answer.
async fn post_drain(addr: std::net::SocketAddr, headers: &[(&str, &str)]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connects");
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let request =
        format!("POST /v1/drain HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("sends");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("reads");
    answer
}

#[tokio::test]
async fn a_cluster_node_that_cannot_reach_redis_keeps_its_rooms_through_a_drain_and_counts_them() {
    let mut redis = Redis::start().await;
    let node = |id: &str| {
        let cluster = ClusterSettings::new(redis.url(), id);
        let mut s = switchboard_server::config::Settings { cluster: Some(cluster), ..settings() };
        s.drain_delay = std::time::Duration::from_millis(300);
        s
    };
    let a = server_with(node("node-a")).await;
    let b = server_with(node("node-b")).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !http_get(a.local_addr(), "/v1/cluster").await.1.contains("node-b") {
        assert!(tokio::time::Instant::now() < deadline, "node-a sees node-b");
        tokio::time::sleep(POLL).await;
    }
    let mut ada = WsClient::connect(a.local_addr()).await;
    ada.join("stays", "Ada").await;
    // The drained node is the room's (placement may have chosen either).
    let holds = |body: &str| body.contains(r#""rooms":["stays"]"#);
    let (a, b) = if holds(&http_get(a.local_addr(), "/v1/cluster").await.1) { (a, b) } else { (b, a) };
    assert!(holds(&http_get(a.local_addr(), "/v1/cluster").await.1), "one node holds the room");
    redis.kill();
    while !http_get(a.local_addr(), "/readyz").await.1.contains("unreachable") {
        assert!(tokio::time::Instant::now() < deadline, "the room's node notices Redis is gone");
        tokio::time::sleep(POLL).await;
    }

    let addr = a.local_addr();
    let drain = tokio::spawn(async move {
        let report = a.drain().await;
        (a, report)
    });
    // Draining: the load balancer's health check fails at once.
    let deadline = tokio::time::Instant::now() + WAIT;
    while http_get(addr, "/readyz").await != (503, "draining\n".into()) {
        assert!(tokio::time::Instant::now() < deadline, "readiness fails while draining");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (a, report) = drain.await.expect("drain");
    assert_eq!((report.handed_over, report.kept), (0, 1), "{report:?}");
    let (_, metrics) = http_get(addr, "/metrics").await;
    assert!(metrics.contains(r#"switchboard_room_handovers_total{result="not_handed_over"} 1"#), "{metrics}");
    assert!(metrics.contains("switchboard_draining 1"), "{metrics}");
    // The room was not touched by the drain; the shutdown that follows ends
    // it as before: going_away.
    a.shutdown().await.expect("shutdown");
    ada.recv("going_away").await;
    b.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_second_sigterm_during_a_drain_exits_at_once() {
    use switchboard_e2e::cluster_kit::NodeProcess;
    let redis = Redis::start().await;
    // A drain delay far longer than the test waits.
    let mut node = NodeProcess::start_with(&redis, "node-1", &["--drain-delay-ms", "60000"]).await;
    let mut ada = WsClient::connect(node.addr).await;
    ada.join("room", "Ada").await;
    node.terminate();
    let deadline = tokio::time::Instant::now() + WAIT;
    while http_get(node.addr, "/readyz").await != (503, "draining\n".into()) {
        assert!(tokio::time::Instant::now() < deadline, "the node drains");
        tokio::time::sleep(POLL).await;
    }
    assert!(node.exited().is_none(), "the first SIGTERM drains, and the drain waits");
    let second = std::time::Instant::now();
    node.terminate();
    while node.exited().is_none() {
        assert!(second.elapsed() < std::time::Duration::from_secs(5), "a second SIGTERM exits at once");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    println!("exited {:?} after the second SIGTERM", second.elapsed());
}
