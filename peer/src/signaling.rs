//! The signaling client: one WebSocket to the server, the protocol types
//! from `switchboard-protocol`, a writer task, a reader task and a pinger.

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use switchboard_protocol::{Bare, ClientMessage, ServerMessage, Welcome};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// Messages queued for the server before senders wait.
pub const SEND_QUEUE: usize = 1024;
/// Server messages queued for the peer before the reader waits.
pub const EVENT_QUEUE: usize = 4096;

/// Share of the server's announced rate and burst the client uses: a margin
/// for timer jitter, so the server never has to drop one of our messages.
pub const RATE_MARGIN: f64 = 0.9;

/// Paces sends to the rate limit the server announced in its welcome (a
/// token bucket like the server's, slightly smaller), so that a burst of
/// candidates waits briefly instead of being dropped as `rate_limited`.
#[derive(Debug)]
struct Pacer {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: tokio::time::Instant,
}

impl Pacer {
    fn new(limits: &switchboard_protocol::LimitsInfo) -> Self {
        let rate = (f64::from(limits.messages_per_second) * RATE_MARGIN).max(1.0);
        let burst = (f64::from(limits.message_burst) * RATE_MARGIN).max(1.0);
        // One message (the join) was already sent.
        Self { rate, burst, tokens: burst - 1.0, last: tokio::time::Instant::now() }
    }

    fn refill(&mut self) {
        let now = tokio::time::Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
    }

    /// Waits until one more message may be sent, and takes its token.
    async fn wait(&mut self) {
        self.refill();
        if self.tokens < 1.0 {
            tokio::time::sleep(Duration::from_secs_f64((1.0 - self.tokens) / self.rate)).await;
            self.refill();
        }
        self.tokens -= 1.0;
    }
}

/// Sends client messages to the server.
#[derive(Debug, Clone)]
pub struct SignalSender {
    tx: mpsc::Sender<ClientMessage>,
}

impl SignalSender {
    /// Queues `msg` for the server; fails once the connection is gone.
    pub async fn send(&self, msg: ClientMessage) -> anyhow::Result<()> {
        self.tx.send(msg).await.map_err(|_| anyhow::anyhow!("signaling connection closed"))
    }
}

/// A joined signaling connection.
#[derive(Debug)]
pub struct Signaling {
    /// The server's welcome.
    pub welcome: Welcome,
    /// Sends to the server.
    pub sender: SignalSender,
    /// What the server sends after the welcome. Ends when the socket closes.
    pub events: mpsc::Receiver<ServerMessage>,
    /// Time from `start` to the WebSocket being open.
    pub connected_after: Duration,
    /// Time from `start` to the welcome.
    pub welcome_after: Duration,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Signaling {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What to join with.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// The room.
    pub room: String,
    /// Display name.
    pub name: String,
    /// Join token, when the server requires one.
    pub token: Option<String>,
    /// `Sfu` for a forwarding unit (its token must allow it).
    pub role: switchboard_protocol::Role,
}

impl Signaling {
    /// Connects to `url` (e.g. `ws://127.0.0.1:8080/v1/ws`) and joins;
    /// times are measured from `start`.
    pub async fn join(url: &str, request: &JoinRequest, start: std::time::Instant) -> anyhow::Result<Self> {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let connected_after = start.elapsed();
        let (mut sink, mut stream) = ws.split();
        let join = ClientMessage::Join(switchboard_protocol::Join {
            id: None,
            room: switchboard_protocol::RoomName::new(request.room.clone()).context("room name")?,
            name: switchboard_protocol::DisplayName::new(request.name.clone()).context("display name")?,
            token: request.token.clone(),
            media: switchboard_protocol::MediaState::default(),
            role: request.role,
        });
        sink.send(Message::text(serde_json::to_string(&join)?)).await.context("sending join")?;
        let welcome = loop {
            let Some(frame) = stream.next().await else { bail!("connection closed before the welcome") };
            let Message::Text(text) = frame.context("reading the welcome")? else { continue };
            match ServerMessage::from_json(&text) {
                Some(ServerMessage::Welcome(w)) => break *w,
                Some(ServerMessage::Error(e)) => bail!("join refused: {} ({})", e.message, e.code.as_str()),
                _ => bail!("unexpected message before the welcome"),
            }
        };
        let welcome_after = start.elapsed();
        let (tx, mut rx) = mpsc::channel::<ClientMessage>(SEND_QUEUE);
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let ping_every = Duration::from_millis(welcome.ping_interval_ms.max(100));
        let mut pacer = Pacer::new(&welcome.limits);
        let writer = tokio::spawn(async move {
            let mut ping = tokio::time::interval(ping_every);
            ping.tick().await;
            loop {
                let msg = tokio::select! {
                    msg = rx.recv() => match msg { Some(msg) => msg, None => break },
                    _ = ping.tick() => ClientMessage::Ping(Bare::default()),
                };
                let Ok(text) = serde_json::to_string(&msg) else { continue };
                pacer.wait().await;
                if sink.send(Message::text(text)).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let reader = tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                let Message::Text(text) = frame else { continue };
                let Some(msg) = ServerMessage::from_json(&text) else {
                    tracing::warn!("unparseable message from the server");
                    continue;
                };
                if events_tx.send(msg).await.is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            welcome,
            sender: SignalSender { tx },
            events,
            connected_after,
            welcome_after,
            tasks: vec![writer, reader],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pacing_keeps_under_the_announced_rate() {
        let limits = switchboard_protocol::LimitsInfo {
            max_message_bytes: 65536,
            max_chat_chars: 4000,
            messages_per_second: 50,
            message_burst: 100,
            max_peers_per_room: 32,
            chat_history_page: 50,
            typing_ttl_ms: 5000,
        };
        let mut pacer = Pacer::new(&limits);
        let start = tokio::time::Instant::now();
        for _ in 0..89 {
            pacer.wait().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst (less the join and the margin) goes at once");
        for _ in 0..45 {
            pacer.wait().await;
        }
        // 45 more at 45/s: about a second.
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(990) && waited <= Duration::from_millis(1010), "{waited:?}");
    }
}
