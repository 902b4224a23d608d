//! Operating the server: health, readiness, metrics and graceful shutdown.

mod common;

use common::{Client, WAIT, http_get, http_get_with, room, server};
use std::time::Duration;
use switchboard_protocol::{PeerJoined, ServerMessage};

#[tokio::test]
async fn health_readiness_and_metrics() {
    let srv = server(|_| {}).await;
    let addr = srv.local_addr();
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    let mut peers = room(addr, "metrics", 2).await;
    let (mut b, wb) = peers.pop().expect("b");
    let (mut a, _) = peers.pop().expect("a");
    a.send(format!(r#"{{"type":"offer","to":"{}","description":{{"type":"offer","sdp":"v=0"}}}}"#, wb.you.id)).await;
    b.recv("offer").await;
    a.send(r#"{"type":"end_of_candidates","to":"pNOBODY"}"#).await;
    a.recv("unknown_peer").await;
    // Relay metrics are recorded after the write completes; a's own round
    // trip proves its frames were written, b's proves the offer was.
    a.sync().await;
    b.sync().await;
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        "switchboard_connections",
        "switchboard_rooms",
        "switchboard_peers",
        r#"switchboard_messages_in_total{type="offer"}"#,
        r#"switchboard_messages_out_total{type="offer"}"#,
        r#"switchboard_errors_total{code="unknown_peer"}"#,
        "switchboard_relay_latency_seconds_bucket",
    ] {
        assert!(body.contains(needle), "/metrics lacks {needle}:\n{body}");
    }
}

#[tokio::test]
async fn metrics_are_for_local_scrapers_and_holders_of_the_metrics_token() {
    let token = "metrics-token-0123456789";
    let srv = server(|s| s.metrics_token = Some(token.into())).await;
    let addr = srv.local_addr();
    assert_eq!(http_get(addr, "/metrics").await.0, 200, "a local scraper");
    // Through a proxy (the public listener behind nginx): not without the token.
    let proxied = [("X-Forwarded-For", "203.0.113.5")];
    assert_eq!(http_get_with(addr, "/metrics", &proxied).await.0, 404);
    let wrong = [("X-Forwarded-For", "203.0.113.5"), ("Authorization", "Bearer metrics-token-wrong-012345")];
    assert_eq!(http_get_with(addr, "/metrics", &wrong).await.0, 404);
    let bearer = format!("bearer {token}");
    let right = [("X-Forwarded-For", "203.0.113.5"), ("Authorization", bearer.as_str())];
    let (status, body) = http_get_with(addr, "/metrics", &right).await;
    assert_eq!(status, 200);
    assert!(body.contains("switchboard_connections"), "{body}");
}

#[tokio::test]
async fn shutdown_sends_going_away_closes_everyone_and_is_bounded() {
    let srv = server(|s| {
        s.shutdown_grace = Duration::from_secs(3);
        s.public_url = Some("wss://other.example/v1/ws".into());
        // A public URL says the server is reachable from elsewhere: open
        // rooms must then be declared.
        s.insecure_open_rooms = true;
    })
    .await;
    let addr = srv.local_addr();
    let mut peers = room(addr, "bye", 2).await;
    // A client that joined and then never reads again must not hold up
    // the shutdown beyond its bound.
    let mut stuck = Client::connect(addr).await;
    stuck.join("bye", "stuck").await;
    for (c, _) in &mut peers {
        c.recv_until("peer_joined", |m| matches!(m, ServerMessage::PeerJoined(PeerJoined { .. }))).await;
    }
    let started = tokio::time::Instant::now();
    let shutdown = tokio::spawn(srv.shutdown());
    for (c, _) in &mut peers {
        match c.recv("going_away").await {
            ServerMessage::GoingAway(g) => {
                assert_eq!(g.reconnect_url.as_deref(), Some("wss://other.example/v1/ws"));
                assert!(g.retry_after_ms > 0);
            }
            other => panic!("{other:?}"),
        }
        let close = c.expect_close().await.expect("close frame");
        assert_eq!(u16::from(close.code), 1001);
    }
    tokio::time::timeout(WAIT, shutdown).await.expect("shutdown finishes").expect("task").expect("ok");
    assert!(started.elapsed() < Duration::from_secs(3) + Duration::from_secs(2), "shutdown exceeded its grace");
    // New connections are refused once it is down.
    assert!(Client::connect_with(addr, None).await.is_err());
    drop(stuck);
}
