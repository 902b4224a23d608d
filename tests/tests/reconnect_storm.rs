//! A thousand clients reconnecting at once: the server restarts under 1000
//! joined clients, they all come back together, admission spreads them out
//! (the refused are told to retry later), and every one of them is back in
//! its room with chat working, while the server keeps answering.

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use switchboard_e2e::{require_loopback_namespace, server_with, settings};
use switchboard_peer::{JoinRequest, ReconnectPolicy, Signaling};
use switchboard_protocol::{ChatSend, ClientMessage, ClientMsgId, Role, ServerMessage};
use switchboard_server::config::Settings;

const CLIENTS: usize = 1000;
const ROOM_SIZE: usize = 10;
/// Admissions per second of the restarted server: a fifth of the crowd.
const ADMISSIONS: u32 = 200;
/// Every client must be back within this. At 200 admissions per second the
/// crowd needs about 5 s plus its backoff; the rest is headroom.
const BACK_WITHIN: Duration = Duration::from_secs(90);

fn request(i: usize) -> JoinRequest {
    JoinRequest {
        room: format!("storm{}", i / ROOM_SIZE),
        name: format!("c{i}"),
        token: None,
        role: Role::Participant,
        reconnect: Some(ReconnectPolicy::default()),
        internal_key: None,
    }
}

async fn rejected(addr: SocketAddr) -> f64 {
    let body = http_get(addr, "/metrics").await;
    body.lines()
        .find(|l| l.starts_with("switchboard_rejected_connections_total"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(0.0)
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut body = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut body)).await.expect("in time").expect("read");
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_reconnecting_at_once_are_admitted_in_turn_and_all_come_back() {
    require_loopback_namespace();
    let first = server_with(Settings { limits: unlimited(), ..settings() }).await;
    let addr = first.local_addr();
    let url = format!("ws://{addr}/v1/ws");
    let mut clients = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        clients.push(Signaling::join(&url, &request(i), Instant::now()).await.expect("joins"));
    }

    // The server restarts: everyone is told to come back in a second, and
    // they do, all together, to a server that admits 200 a second.
    first.shutdown().await.expect("shutdown");
    let mut limits = unlimited();
    limits.admissions_per_second = ADMISSIONS;
    limits.admission_burst = ADMISSIONS;
    let second = server_with(Settings { bind: addr, limits, ..settings() }).await;
    let start = Instant::now();
    let mut back = 0;
    for (i, client) in clients.iter_mut().enumerate() {
        loop {
            let left = BACK_WITHIN.saturating_sub(start.elapsed());
            let msg = tokio::time::timeout(left, client.events.recv())
                .await
                .unwrap_or_else(|_| panic!("client {i} not back after {BACK_WITHIN:?} ({back} were)"));
            match msg {
                Some(ServerMessage::Welcome(w)) => {
                    assert!(!w.resumed, "a restarted server has no session to resume");
                    back += 1;
                    break;
                }
                Some(_) => {}
                None => panic!("client {i} gave up"),
            }
        }
        // The server answers while the crowd is coming in.
        if i % 250 == 0 {
            assert!(http_get(addr, "/readyz").await.contains("ready"), "not ready during the storm");
        }
    }
    let all_back = start.elapsed();
    let refused = rejected(addr).await;
    println!("{CLIENTS} clients back in {all_back:?}; {refused} upgrades refused and retried");
    assert!(refused > 0.0, "the storm should have met the admission limit");

    // Everyone is in a room again: a chat in each of two rooms reaches all
    // of its members.
    for room in [0, CLIENTS / ROOM_SIZE - 1] {
        let sender = room * ROOM_SIZE;
        let id = ClientMsgId::new(format!("after{room}")).expect("id");
        let chat = ClientMessage::Chat(ChatSend { id: None, client_id: id, text: "after the storm".into() });
        clients[sender].sender.send(chat).await.expect("send");
        for client in &mut clients[sender..sender + ROOM_SIZE] {
            loop {
                let msg = tokio::time::timeout(Duration::from_secs(30), client.events.recv())
                    .await
                    .expect("chat in time")
                    .expect("open");
                if matches!(&msg, ServerMessage::Chat(c) if c.text == "after the storm") {
                    break;
                }
            }
        }
    }
    drop(clients);
    second.shutdown().await.expect("shutdown");
}

/// Limits that let a thousand test clients join quickly from one place.
fn unlimited() -> switchboard_core::Limits {
    // Every test client comes from 127.0.0.1: the per-source rate would
    // measure one source, not the storm.
    switchboard_core::Limits {
        admissions_per_second: 0,
        admissions_per_source_per_second: 0,
        max_peers_per_room: ROOM_SIZE,
        ..Default::default()
    }
}
