//! A bare protocol client over a real WebSocket, for tests that check the
//! frames themselves: it sends JSON text and reads JSON values, written
//! from docs/protocol.md rather than from the server's Rust types.

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::net::SocketAddr;
use tokio_tungstenite::tungstenite::Message;

/// One client connection.
#[derive(Debug)]
pub struct WsClient {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    /// Events received since the last welcome (what a resume's `received`
    /// counts, protocol.md §12): room events, not replies or `going_away`.
    pub events: u64,
    /// Every message read so far, for failure messages.
    pub seen: Vec<Value>,
}

impl WsClient {
    /// Connects to `ws://addr/v1/ws`.
    pub async fn connect(addr: SocketAddr) -> Self {
        let url = format!("ws://{addr}/v1/ws");
        let connect = tokio_tungstenite::connect_async(url);
        let (ws, _) = tokio::time::timeout(crate::WAIT, connect).await.expect("connect in time").expect("connects");
        Self { ws, events: 0, seen: Vec::new() }
    }

    /// Sends one JSON text frame.
    pub async fn send(&mut self, json: impl Into<String>) {
        self.ws.send(Message::text(json.into())).await.expect("send");
    }

    /// The next message whose `type` is `kind`, skipping others; panics
    /// after [`crate::WAIT`] or on a close.
    pub async fn recv(&mut self, kind: &str) -> Value {
        self.recv_where(kind, |m| m["type"] == kind).await
    }

    /// The next message for which `pred` holds, skipping others.
    pub async fn recv_where(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + crate::WAIT;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next()).await;
            let text = match frame {
                Ok(Some(Ok(Message::Text(text)))) => text,
                Ok(Some(Ok(_))) => continue,
                other => panic!("waiting for {what}: {other:?}; seen {:#?}", self.seen),
            };
            let value: Value = serde_json::from_str(&text).expect("server JSON");
            let kind = value["type"].as_str().unwrap_or_default();
            if kind == "welcome" && value["resumed"] != true {
                self.events = 0;
            }
            let replies = ["welcome", "pong", "error", "chat_history", "ice_servers", "going_away"];
            if !replies.contains(&kind) {
                self.events += 1;
            }
            self.seen.push(value.clone());
            if pred(&value) {
                return value;
            }
        }
    }

    /// Joins `room` as `name` and returns the welcome.
    pub async fn join(&mut self, room: &str, name: &str) -> Value {
        self.send(format!(r#"{{"type":"join","room":"{room}","name":"{name}"}}"#)).await;
        self.recv("welcome").await
    }
}
