//! TURN credentials (welcome, refresh, HTTP) and the embedded STUN server,
//! over real sockets. The tests with a real coturn are in tests/tests/.

mod common;

use common::{Client, http_get, http_get_with, server};
use serde_json::Value;
use std::time::{SystemTime, UNIX_EPOCH};
use switchboard_core::{Claims, TurnConfig, mint_token, password};
use switchboard_protocol::ServerMessage;
use switchboard_server::config::StunSettings;
use switchboard_server::turn_http::TURN_CREDENTIALS_PATH;

const AUTH: &str = "0123456789abcdef0123456789abcdef";
const TURN_SECRET: &str = "turn-secret-0123456789";
const TTL_S: u64 = 600;

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

fn turn() -> TurnConfig {
    TurnConfig::new(vec![TURN_SECRET.into()], vec!["turn:127.0.0.1:3479?transport=udp".into()], TTL_S).expect("valid")
}

fn token(sub: &str, exp: u64) -> String {
    mint_token(AUTH.as_bytes(), &Claims { room: "any".into(), sub: sub.into(), exp, ..Claims::default() })
}

#[tokio::test]
async fn http_credentials_need_a_valid_token_and_never_outlive_the_cap() {
    let srv = server(|s| {
        s.auth_secret = Some(AUTH.into());
        s.turn = Some(turn());
    })
    .await;
    let addr = srv.local_addr();

    let (status, body) = http_get(addr, TURN_CREDENTIALS_PATH).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"unauthorized\""), "{body}");
    let forged = mint_token(
        b"another-secret-another-secret-xx",
        &Claims { room: "r".into(), sub: "s".into(), exp: now_s() + 60, ..Claims::default() },
    );
    let (status, body) =
        http_get_with(addr, TURN_CREDENTIALS_PATH, &[("Authorization", &format!("Bearer {forged}"))]).await;
    assert_eq!(status, 401, "{body}");
    let expired = token("ada", now_s() - 3600);
    let (status, body) =
        http_get_with(addr, TURN_CREDENTIALS_PATH, &[("Authorization", &format!("Bearer {expired}"))]).await;
    assert_eq!((status, body.contains("\"token_expired\"")), (401, true), "{body}");

    let bearer = format!("Bearer {}", token("ada", now_s() + 3600));
    for (query, ttl) in [("", TTL_S), ("?ttl=60", 60), ("?ttl=99999999", TTL_S)] {
        let (status, body) =
            http_get_with(addr, &format!("{TURN_CREDENTIALS_PATH}{query}"), &[("Authorization", &bearer)]).await;
        assert_eq!(status, 200, "{body}");
        let reply: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(reply["ttl"], ttl, "{query}: {body}");
        let username = reply["username"].as_str().expect("username");
        let (expiry, who) = username.split_once(':').expect("expiry:participant");
        assert_eq!(who, "ada");
        let expiry: u64 = expiry.parse().expect("expiry");
        assert!(expiry <= now_s() + ttl && expiry + 5 >= now_s() + ttl, "{username}");
        assert_eq!(reply["password"], password(TURN_SECRET, username));
        assert_eq!(reply["uris"][0], "turn:127.0.0.1:3479?transport=udp");
        assert_eq!(reply["iceServers"][0]["username"], username);
        assert_eq!(reply["iceServers"][0]["credential"], reply["password"]);
    }
}

#[tokio::test]
async fn any_case_of_bearer_works_and_every_refusal_is_uncached_json() {
    let srv = server(|s| {
        s.auth_secret = Some(AUTH.into());
        s.turn = Some(turn());
    })
    .await;
    let addr = srv.local_addr();
    let good = token("ada", now_s() + 3600);
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let auth = format!("{scheme} {good}");
        let (status, body) = http_get_with(addr, TURN_CREDENTIALS_PATH, &[("Authorization", &auth)]).await;
        assert_eq!(status, 200, "{scheme}: {body}");
    }
    let bearer = format!("Bearer {good}");
    for (query, auth) in [("?ttl=abc", bearer.as_str()), ("?ttl=-1", bearer.as_str()), ("", "Basic YWRhOng=")] {
        let (status, head, body) = http_get_head(addr, &format!("{TURN_CREDENTIALS_PATH}{query}"), auth).await;
        assert!(status == 400 || status == 401, "{query}: {status} {body}");
        let json: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{query}: not JSON ({e}): {body}"));
        assert!(json["error"].is_string() && json["message"].is_string(), "{body}");
        assert!(head.to_ascii_lowercase().contains("cache-control: no-store"), "{query}: {head}");
    }
}

#[tokio::test]
async fn open_rooms_behind_an_undeclared_proxy_get_no_turn_credentials() {
    let srv = server(|s| s.turn = Some(turn())).await;
    let (status, body) =
        http_get_with(srv.local_addr(), TURN_CREDENTIALS_PATH, &[("X-Forwarded-For", "203.0.113.5")]).await;
    assert_eq!(status, 403, "{body}");
    let json: Value = serde_json::from_str(&body).expect("a JSON refusal");
    assert_eq!(json["error"], "forbidden");
}

/// A GET with an Authorization header: status, response head and body.
async fn http_get_head(addr: std::net::SocketAddr, path: &str, auth: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: {auth}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

#[tokio::test]
async fn without_turn_the_endpoint_says_so() {
    let srv = server(|_| {}).await;
    let (status, body) = http_get(srv.local_addr(), TURN_CREDENTIALS_PATH).await;
    assert_eq!(status, 404);
    assert!(body.contains("turn_not_configured"), "{body}");
}

#[tokio::test]
async fn open_servers_hand_out_credentials_to_anyone_and_in_the_welcome() {
    let srv = server(|s| s.turn = Some(turn())).await;
    let (status, body) = http_get(srv.local_addr(), TURN_CREDENTIALS_PATH).await;
    assert_eq!(status, 200, "{body}");

    let mut ada = Client::connect(srv.local_addr()).await;
    let welcome = ada.join("demo", "Ada").await;
    assert_eq!(welcome.ice_servers_ttl_s, Some(TTL_S));
    let turn_entry = welcome.ice_servers.last().expect("a TURN entry");
    let username = turn_entry.username.clone().expect("username");
    assert!(username.ends_with(&format!(":{}", welcome.you.id)), "{username}");
    assert_eq!(turn_entry.credential.as_deref(), Some(password(TURN_SECRET, &username).as_str()));

    ada.send(r#"{"type":"ice_servers","id":7}"#).await;
    match ada.recv("ice_servers").await {
        ServerMessage::IceServers(list) => {
            assert_eq!(list.ice_servers_ttl_s, Some(TTL_S));
            assert!(list.ice_servers.last().and_then(|s| s.username.as_deref()).is_some());
        }
        other => panic!("expected ice_servers, got {other:?}"),
    }
}

#[tokio::test]
async fn the_embedded_stun_server_answers_and_is_advertised() {
    use stun_rs::attributes::stun::XorMappedAddress;
    use stun_rs::methods::BINDING;
    use stun_rs::{MessageClass, MessageDecoderBuilder, MessageEncoderBuilder, StunMessageBuilder, TransactionId};

    let srv = server(|s| s.stun = Some(StunSettings { port: 0, host: None })).await;
    let stun = srv.stun_addr().expect("STUN runs");
    let mut ada = Client::connect(srv.local_addr()).await;
    let welcome = ada.join("demo", "Ada").await;
    assert_eq!(welcome.ice_servers[0].urls, [format!("stun:127.0.0.1:{}", stun.port())]);

    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("udp");
    let id = TransactionId::default();
    let request = StunMessageBuilder::new(BINDING, MessageClass::Request).with_transaction_id(id).build();
    let mut buffer = [0u8; 256];
    let size = MessageEncoderBuilder::default().build().encode(&mut buffer, &request).expect("encode");
    // Garbage first: ignored, and the server keeps answering.
    socket.send_to(b"not stun at all", stun).await.expect("send");
    socket.send_to(&buffer[..size], stun).await.expect("send");
    let (len, _) =
        tokio::time::timeout(common::WAIT, socket.recv_from(&mut buffer)).await.expect("an answer").expect("recv");
    let (reply, _) = MessageDecoderBuilder::default().build().decode(&buffer[..len]).expect("decode");
    assert_eq!(reply.class(), MessageClass::SuccessResponse);
    assert_eq!(*reply.transaction_id(), id);
    let mapped = reply.get::<XorMappedAddress>().expect("mapped").as_xor_mapped_address().expect("xor");
    assert_eq!(*mapped.socket_address(), socket.local_addr().expect("addr"));

    let (_, metrics) = http_get(srv.local_addr(), "/metrics").await;
    assert!(metrics.contains("switchboard_stun_requests_total{result=\"answered\"}"), "{metrics}");
    assert!(metrics.contains("switchboard_stun_requests_total{result=\"ignored\"}"), "{metrics}");
}
