//! Test kit: a real server on 127.0.0.1 port 0 and WebSocket clients that
//! wait for conditions (never for a fixed time) and say what they waited for.
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::Duration;
use switchboard_protocol::{ErrorCode, ErrorMessage, PeerJoined, Pong, ServerMessage, Welcome};
use switchboard_server::Server;
use switchboard_server::config::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error, Message, http};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Longest wait for anything a test expects to happen.
pub const WAIT: Duration = Duration::from_secs(10);

pub async fn server(configure: impl FnOnce(&mut Settings)) -> Server {
    let mut settings = Settings { bind: SocketAddr::from(([127, 0, 0, 1], 0)), stun: None, ..Settings::default() };
    configure(&mut settings);
    switchboard_server::start(settings).await.expect("server starts")
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_ping: u64,
}

pub fn url(addr: SocketAddr) -> String {
    format!("ws://{addr}/v1/ws")
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        Self::connect_with(addr, None).await.expect("websocket connects")
    }

    pub async fn connect_with(addr: SocketAddr, origin: Option<&str>) -> Result<Self, Error> {
        let mut request = url(addr).into_client_request()?;
        if let Some(origin) = origin {
            request.headers_mut().insert(http::header::ORIGIN, origin.parse().expect("origin header"));
        }
        let (ws, _) =
            tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request)).await.expect("connect in time")?;
        Ok(Self { ws, next_ping: 1_000_000 })
    }

    pub async fn send(&mut self, json: impl Into<String>) {
        self.ws.send(Message::text(json.into())).await.expect("send");
    }

    pub async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send");
    }

    /// The next protocol message; panics (saying what was awaited) on a
    /// close or after [`WAIT`].
    pub async fn recv(&mut self, waiting_for: &str) -> ServerMessage {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {waiting_for}"));
            match frame {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("server sent invalid JSON {text}: {e}"));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("connection ended while waiting for {waiting_for}: {other:?}"),
            }
        }
    }

    /// Skips messages until one matches.
    pub async fn recv_until(
        &mut self,
        waiting_for: &str,
        mut pred: impl FnMut(&ServerMessage) -> bool,
    ) -> ServerMessage {
        loop {
            let msg = self.recv(waiting_for).await;
            if pred(&msg) {
                return msg;
            }
        }
    }

    pub async fn expect_error(&mut self, code: ErrorCode) -> ErrorMessage {
        match self.recv(&format!("error {}", code.as_str())).await {
            ServerMessage::Error(e) if e.code == code => e,
            other => panic!("expected error {}, got {other:?}", code.as_str()),
        }
    }

    pub async fn join(&mut self, room: &str, name: &str) -> Welcome {
        self.send(format!(r#"{{"type":"join","room":"{room}","name":"{name}"}}"#)).await;
        self.expect_welcome().await
    }

    pub async fn expect_welcome(&mut self) -> Welcome {
        match self.recv("welcome").await {
            ServerMessage::Welcome(w) => *w,
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    /// Round-trips a ping and returns everything that arrived before the
    /// pong: proof of what the server sent so far, with no sleeping.
    pub async fn sync(&mut self) -> Vec<ServerMessage> {
        self.next_ping += 1;
        let id = self.next_ping;
        self.send(format!(r#"{{"type":"ping","id":{id}}}"#)).await;
        let mut before = Vec::new();
        loop {
            match self.recv("pong").await {
                ServerMessage::Pong(Pong { id: Some(switchboard_protocol::RequestId::Number(n)) }) if n == id => {
                    return before;
                }
                other => before.push(other),
            }
        }
    }

    /// Asserts the connection still works and nothing unexpected is queued.
    pub async fn assert_quiet(&mut self) {
        let pending = self.sync().await;
        assert!(pending.is_empty(), "unexpected messages: {pending:?}");
    }

    /// Waits for the server to close the connection; returns its close frame.
    pub async fn expect_close(&mut self) -> Option<CloseFrame> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await.expect("timed out waiting for the close") {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    }
}

/// Joins `n` clients to `room`; returns them with their welcomes, each
/// having drained the peer_joined messages of those who came after it.
pub async fn room(addr: SocketAddr, room: &str, n: usize) -> Vec<(Client, Welcome)> {
    let mut clients: Vec<(Client, Welcome)> = Vec::new();
    for i in 0..n {
        let mut c = Client::connect(addr).await;
        let w = c.join(room, &format!("user{i}")).await;
        for (other, _) in &mut clients {
            other.recv_until("peer_joined", |m| matches!(m, ServerMessage::PeerJoined(PeerJoined { .. }))).await;
        }
        clients.push((c, w));
    }
    clients
}

/// A plain HTTP/1.1 GET: status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_get_with(addr, path, &[]).await
}

/// A plain HTTP/1.1 GET with extra request headers: status code and body.
pub async fn http_get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("tcp connect");
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n");
    stream.write_all(request.as_bytes()).await.expect("write request");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response)).await.expect("response in time").expect("read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// A WebSocket upgrade request from `source` (a loopback address) with
/// extra headers, answered or not: the HTTP status (101 when upgraded).
/// The connection is dropped right after, as an abusive client's would be.
pub async fn upgrade_status(source: std::net::IpAddr, addr: SocketAddr, headers: &[(&str, &str)]) -> u16 {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(source, 0)).expect("bind source");
    let mut stream = tokio::time::timeout(WAIT, socket.connect(addr)).await.expect("connect in time").expect("tcp");
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    // A `Host` among `headers` replaces the real one.
    let host = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map_or(addr.to_string(), |(_, v)| String::new() + v);
    let extra: String =
        extra.lines().filter(|l| !l.to_ascii_lowercase().starts_with("host:")).map(|l| format!("{l}\r\n")).collect();
    let request = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut byte)).await.expect("status in time").expect("read");
        if n == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}
