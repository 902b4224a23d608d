//! The signaling client: a WebSocket to the server, the protocol types from
//! `switchboard-protocol`, and one task that owns the connection. It counts
//! the session's events and acknowledges them in its pings, notices a
//! silent server, and after a drop reconnects with backoff and jitter and
//! resumes the session (or joins afresh when the server cannot resume it),
//! resending chat messages whose echo never came.

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use std::collections::VecDeque;
use std::time::Duration;
use switchboard_protocol::{
    ChatSend, ClientMessage, ErrorCode, LimitsInfo, PeerId, Ping, Resume, ServerMessage, Welcome,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// Messages queued for the server before senders wait (also while
/// reconnecting).
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
    fn new(limits: &LimitsInfo) -> Self {
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
    /// Queues `msg` for the server; fails once the connection is gone for
    /// good. While it is reconnecting, messages wait in the queue.
    pub async fn send(&self, msg: ClientMessage) -> anyhow::Result<()> {
        self.tx.send(msg).await.map_err(|_| anyhow::anyhow!("signaling connection closed"))
    }
}

/// Where the signaling connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalState {
    /// Joined and connected.
    Connected,
    /// The connection dropped; the next attempt is in `retry_in`.
    Reconnecting {
        /// Attempts made since the drop.
        attempt: u32,
        /// Wait before the next one.
        retry_in: Duration,
        /// What went wrong last.
        reason: String,
    },
    /// Gone for good (left, refused, or reconnection is off).
    Closed {
        /// Why.
        reason: String,
    },
}

/// How a dropped connection is retried: exponential backoff from `initial`
/// doubling to `max`, each wait drawn at random from its upper half (so a
/// thousand clients dropped at once do not return at once).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReconnectPolicy {
    /// First wait.
    pub initial: Duration,
    /// Longest wait.
    pub max: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self { initial: Duration::from_millis(500), max: Duration::from_secs(15) }
    }
}

impl ReconnectPolicy {
    /// The wait before attempt `attempt` (0-based), with jitter from
    /// `unit`, a number in [0, 1).
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let full = self.initial.saturating_mul(1u32 << attempt.min(16)).min(self.max);
        full.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }
}

/// Longest wait for one reconnection attempt (connect and welcome): a
/// network that drops packets silently would otherwise hold it for minutes.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Unacknowledged chat messages kept for a resend after a reconnect.
pub const UNACKED_CHATS: usize = 256;
/// Events received between two acknowledgements at most (besides the one
/// in every ping), so the server's replay buffer stays small.
pub const ACK_EVERY: u64 = 64;

/// A joined signaling connection that reconnects by itself.
#[derive(Debug)]
pub struct Signaling {
    /// The server's first welcome.
    pub welcome: Welcome,
    /// Sends to the server.
    pub sender: SignalSender,
    /// What the server sends after the first welcome, in order, across
    /// reconnections; a later `welcome` says the session was resumed
    /// (`resumed`: the events it missed follow) or joined afresh (a new id:
    /// start over). Ends when the connection is gone for good.
    pub events: mpsc::Receiver<ServerMessage>,
    /// The connection's state, for display.
    pub state: watch::Receiver<SignalState>,
    /// Time from `start` to the WebSocket being open.
    pub connected_after: Duration,
    /// Time from `start` to the welcome.
    pub welcome_after: Duration,
    task: JoinHandle<()>,
}

impl Drop for Signaling {
    fn drop(&mut self) {
        self.task.abort();
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
    /// Reconnect and resume after a drop; `None`: a drop ends the session.
    pub reconnect: Option<ReconnectPolicy>,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Why a connection ended.
enum Ended {
    /// The program dropped its sender or sent `leave`: stop.
    Stopped,
    /// The connection failed or went silent.
    Dropped(String),
    /// The server is going away.
    GoingAway(switchboard_protocol::GoingAway),
    /// The server ended the session for good (`replaced`: the same
    /// identity joined elsewhere). Reconnecting would take the seat back
    /// from the newer session, which would do the same: a fight forever.
    Final(String),
}

/// Why a (re)join failed.
enum JoinError {
    /// Try again later.
    Retry(String, Option<Duration>),
    /// Trying again cannot help (a bad token, a refused role).
    Fatal(String),
}

/// The session as the client sees it: what it needs to resume.
struct Session {
    url: String,
    request: JoinRequest,
    me: Option<PeerId>,
    token: Option<String>,
    /// Events received in this session (its position in the stream).
    received: u64,
    acked: u64,
    unacked: VecDeque<ChatSend>,
    /// Replayed events still to come after a resumed welcome; unacknowledged
    /// chat is resent only once they are read (their echoes acknowledge
    /// what did arrive, and the server remembers only 64 client ids).
    replay_left: u64,
    /// Whether this connection still owes the resend.
    resend_due: bool,
    ping_every: Duration,
    limits: LimitsInfo,
}

impl Session {
    fn join_message(&self, resume: bool) -> anyhow::Result<String> {
        let request = &self.request;
        let resume = match (&self.token, resume) {
            (Some(token), true) => Some(Resume { token: token.clone(), received: self.received }),
            _ => None,
        };
        let join = ClientMessage::Join(switchboard_protocol::Join {
            id: None,
            room: switchboard_protocol::RoomName::new(request.room.clone()).context("room name")?,
            name: switchboard_protocol::DisplayName::new(request.name.clone()).context("display name")?,
            token: request.token.clone(),
            media: switchboard_protocol::MediaState::default(),
            role: request.role,
            resume,
        });
        Ok(serde_json::to_string(&join)?)
    }

    /// Connects and joins, resuming when it has a session. Returns the
    /// socket and the welcome.
    async fn connect(&mut self) -> Result<(Ws, Welcome), JoinError> {
        let (mut ws, _) = match tokio_tungstenite::connect_async_with_config(&self.url, None, true).await {
            Ok(ok) => ok,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                // Full (503): the server says when to come back.
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .map(Duration::from_secs);
                return Err(JoinError::Retry(format!("HTTP {}", response.status()), retry_after));
            }
            Err(err) => return Err(JoinError::Retry(format!("connecting: {err}"), None)),
        };
        let mut resume = self.token.is_some();
        loop {
            let join = self.join_message(resume).map_err(|e| JoinError::Fatal(format!("{e:#}")))?;
            ws.send(Message::text(join)).await.map_err(|e| JoinError::Retry(format!("sending join: {e}"), None))?;
            match read_welcome(&mut ws).await {
                Ok(welcome) => return Ok((ws, welcome)),
                Err(JoinRefusal::Code(ErrorCode::ResumeFailed, message)) if resume => {
                    tracing::info!(%message, "resume refused: joining afresh");
                    resume = false;
                }
                Err(JoinRefusal::Code(
                    code @ (ErrorCode::Unauthorized
                    | ErrorCode::TokenExpired
                    | ErrorCode::Forbidden
                    | ErrorCode::Replaced),
                    message,
                )) => {
                    return Err(JoinError::Fatal(format!("join refused: {message} ({})", code.as_str())));
                }
                Err(JoinRefusal::Code(code, message)) => {
                    return Err(JoinError::Retry(format!("join refused: {message} ({})", code.as_str()), None));
                }
                Err(JoinRefusal::Other(message)) => return Err(JoinError::Retry(message, None)),
            }
        }
    }

    /// Takes in a welcome: a fresh one starts a new session.
    fn welcomed(&mut self, welcome: &Welcome) {
        if !welcome.resumed {
            if let Some(old) = &self.me {
                // Chats the old session stored before it was lost are in
                // the room's history: they need no resend.
                self.unacked.retain(|c| !welcome.chat.iter().any(|m| m.from == *old && m.client_id == c.client_id));
            }
            self.received = 0;
            self.acked = 0;
            self.me = Some(welcome.you.id.clone());
        }
        self.token = Some(welcome.resume_token.clone());
        self.replay_left = if welcome.resumed { welcome.replayed } else { 0 };
        self.resend_due = true;
        self.ping_every = Duration::from_millis(welcome.ping_interval_ms.max(100));
        self.limits = welcome.limits.clone();
    }

    /// Counts an event and clears the chat it acknowledges.
    fn received(&mut self, msg: &ServerMessage) {
        if !msg.kind().is_event() {
            return;
        }
        self.received += 1;
        self.replay_left = self.replay_left.saturating_sub(1);
        if let ServerMessage::Chat(chat) = msg
            && self.me.as_ref() == Some(&chat.from)
        {
            self.unacked.retain(|c| c.client_id != chat.client_id);
        }
    }

    /// Remembers a chat until its echo comes back.
    fn sending(&mut self, msg: &ClientMessage) {
        if let ClientMessage::Chat(chat) = msg {
            if self.unacked.len() >= UNACKED_CHATS {
                self.unacked.pop_front();
            }
            self.unacked.push_back(chat.clone());
        }
    }

    /// The chat to resend on this connection, once: nothing until the
    /// replay after a resumed welcome has been read, then every message
    /// whose echo is still missing, in order.
    fn take_resend(&mut self) -> Option<Vec<ClientMessage>> {
        if !self.resend_due || self.replay_left > 0 {
            return None;
        }
        self.resend_due = false;
        Some(self.unacked.iter().cloned().map(ClientMessage::Chat).collect())
    }

    fn ping(&mut self) -> ClientMessage {
        self.acked = self.received;
        ClientMessage::Ping(Ping { id: None, ack: Some(self.received) })
    }
}

enum JoinRefusal {
    Code(ErrorCode, String),
    Other(String),
}

async fn read_welcome(ws: &mut Ws) -> Result<Welcome, JoinRefusal> {
    loop {
        let Some(frame) = ws.next().await else {
            return Err(JoinRefusal::Other("connection closed before the welcome".into()));
        };
        let frame = frame.map_err(|e| JoinRefusal::Other(format!("reading the welcome: {e}")))?;
        let Message::Text(text) = frame else { continue };
        match ServerMessage::from_json(&text) {
            Some(ServerMessage::Welcome(w)) => return Ok(*w),
            Some(ServerMessage::Error(e)) => return Err(JoinRefusal::Code(e.code, e.message)),
            _ => return Err(JoinRefusal::Other("unexpected message before the welcome".into())),
        }
    }
}

impl Signaling {
    /// Connects to `url` (e.g. `ws://127.0.0.1:8080/v1/ws`) and joins;
    /// times are measured from `start`. The first join's failure is
    /// returned; after it, drops are retried per `request.reconnect`.
    pub async fn join(url: &str, request: &JoinRequest, start: std::time::Instant) -> anyhow::Result<Self> {
        let mut session = Session {
            url: url.to_owned(),
            request: request.clone(),
            me: None,
            token: None,
            received: 0,
            acked: 0,
            unacked: VecDeque::new(),
            replay_left: 0,
            resend_due: false,
            ping_every: Duration::from_secs(15),
            limits: LimitsInfo::default(),
        };
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let connected_after = start.elapsed();
        let mut ws = ws;
        ws.send(Message::text(session.join_message(false)?)).await.context("sending join")?;
        let welcome = match read_welcome(&mut ws).await {
            Ok(w) => w,
            Err(JoinRefusal::Code(code, message)) => bail!("join refused: {message} ({})", code.as_str()),
            Err(JoinRefusal::Other(message)) => bail!("{message}"),
        };
        let welcome_after = start.elapsed();
        session.welcomed(&welcome);
        let (tx, rx) = mpsc::channel::<ClientMessage>(SEND_QUEUE);
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let (state_tx, state) = watch::channel(SignalState::Connected);
        let task = tokio::spawn(supervise(session, ws, rx, events_tx, state_tx));
        Ok(Self { welcome, sender: SignalSender { tx }, events, state, connected_after, welcome_after, task })
    }
}

/// Owns the connection: runs it, and after a drop reconnects with backoff
/// and resumes, until the program stops or the server refuses for good.
async fn supervise(
    mut session: Session,
    ws: Ws,
    mut rx: mpsc::Receiver<ClientMessage>,
    events: mpsc::Sender<ServerMessage>,
    state: watch::Sender<SignalState>,
) {
    let mut ws = Some(ws);
    loop {
        let Some(socket) = ws.take() else { break };
        let ended = run(&mut session, socket, &mut rx, &events).await;
        let Some(policy) = session.request.reconnect else {
            let _ = state.send(SignalState::Closed { reason: "connection ended".into() });
            return;
        };
        let mut floor = Duration::ZERO;
        let reason = match ended {
            Ended::Stopped => break,
            Ended::Final(reason) => {
                tracing::info!(%reason, "signaling ended by the server for good");
                let _ = state.send(SignalState::Closed { reason });
                return;
            }
            Ended::Dropped(reason) => reason,
            Ended::GoingAway(notice) => {
                if let Some(url) = notice.reconnect_url {
                    session.url = url;
                }
                floor = Duration::from_millis(notice.retry_after_ms);
                format!("server going away: {}", notice.reason)
            }
        };
        tracing::info!(%reason, "signaling dropped: reconnecting");
        let mut attempt = 0u32;
        let mut last = reason;
        loop {
            // Prompt after a going-away notice (its retry_after plus a
            // little jitter), exponential after a failure.
            let wait = if attempt == 0 && !floor.is_zero() {
                floor + policy.initial.mul_f64(rand::random::<f64>())
            } else {
                policy.delay(attempt, rand::random::<f64>()).max(floor)
            };
            let _ = state.send(SignalState::Reconnecting { attempt, retry_in: wait, reason: last.clone() });
            tokio::time::sleep(wait).await;
            if events.is_closed() {
                return;
            }
            attempt = attempt.saturating_add(1);
            let result = match tokio::time::timeout(ATTEMPT_TIMEOUT, session.connect()).await {
                Ok(result) => result,
                Err(_) => Err(JoinError::Retry(format!("no welcome within {ATTEMPT_TIMEOUT:?}"), None)),
            };
            match result {
                Ok((socket, welcome)) => {
                    session.welcomed(&welcome);
                    tracing::info!(resumed = welcome.resumed, attempt, "signaling reconnected");
                    if events.send(ServerMessage::Welcome(Box::new(welcome))).await.is_err() {
                        return;
                    }
                    ws = Some(socket);
                    let _ = state.send(SignalState::Connected);
                    break;
                }
                Err(JoinError::Fatal(message)) => {
                    tracing::warn!(%message, "signaling refused for good");
                    let _ = state.send(SignalState::Closed { reason: message });
                    return;
                }
                Err(JoinError::Retry(message, retry_after)) => {
                    floor = retry_after.unwrap_or(Duration::ZERO);
                    last = message;
                }
            }
        }
    }
    let _ = state.send(SignalState::Closed { reason: "left".into() });
}

/// Runs one connection: writes queued messages (paced), pings with an
/// acknowledgement, reads and forwards everything, and notices silence.
async fn run(
    session: &mut Session,
    ws: Ws,
    rx: &mut mpsc::Receiver<ClientMessage>,
    events: &mpsc::Sender<ServerMessage>,
) -> Ended {
    let (mut sink, mut stream) = ws.split();
    let mut pacer = Pacer::new(&session.limits);
    if let Err(err) = resend(session, &mut sink, &mut pacer).await {
        return Ended::Dropped(format!("resending: {err}"));
    }
    let silence_limit = session.ping_every + (session.ping_every / 2).max(Duration::from_secs(1));
    let mut ping = tokio::time::interval(session.ping_every);
    ping.tick().await;
    let mut last_heard = tokio::time::Instant::now();
    let replay_started = tokio::time::Instant::now();
    let ended = loop {
        let out = tokio::select! {
            // Nothing new goes out before the resend of what the old
            // connection may have swallowed: the room stores chat in the
            // order it arrives.
            msg = rx.recv(), if !session.resend_due => match msg {
                Some(msg) => {
                    session.sending(&msg);
                    let leaving = matches!(msg, ClientMessage::Leave(_));
                    if leaving {
                        let _ = send_paced(&mut sink, &mut pacer, &msg).await;
                        break Ended::Stopped;
                    }
                    msg
                }
                None => break Ended::Stopped,
            },
            _ = ping.tick() => {
                if last_heard.elapsed() > silence_limit {
                    break Ended::Dropped(format!("nothing heard from the server for {silence_limit:?}"));
                }
                // A replay that never completes (an event this client
                // cannot read is not counted) must not hold back what it
                // sends for good: after a ping interval, resend anyway.
                if session.resend_due && session.replay_left > 0 && replay_started.elapsed() >= session.ping_every {
                    tracing::warn!(left = session.replay_left, "replay incomplete: resending anyway");
                    session.replay_left = 0;
                    if let Err(err) = resend(session, &mut sink, &mut pacer).await {
                        break Ended::Dropped(format!("resending: {err}"));
                    }
                }
                session.ping()
            }
            frame = stream.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    // A close saying `replaced` is final even when the error
                    // before it was lost.
                    Some(Ok(Message::Close(Some(frame)))) if frame.reason.as_str() == "replaced" => {
                        break Ended::Final("replaced: the same identity joined from another connection".into());
                    }
                    Some(Ok(Message::Close(_))) | None => break Ended::Dropped("the server closed the connection".into()),
                    Some(Ok(_)) => { last_heard = tokio::time::Instant::now(); continue }
                    Some(Err(err)) => break Ended::Dropped(format!("reading: {err}")),
                };
                last_heard = tokio::time::Instant::now();
                let Some(msg) = ServerMessage::from_json(&text) else {
                    tracing::warn!("unparseable message from the server");
                    continue;
                };
                if let ServerMessage::GoingAway(notice) = msg {
                    break Ended::GoingAway(notice);
                }
                let replaced = match &msg {
                    ServerMessage::Error(e) if e.fatal && e.code == ErrorCode::Replaced => {
                        Some(format!("replaced: {}", e.message))
                    }
                    _ => None,
                };
                if let Some(reason) = replaced {
                    let _ = events.send(msg).await;
                    break Ended::Final(reason);
                }
                session.received(&msg);
                if events.send(msg).await.is_err() {
                    break Ended::Stopped;
                }
                if let Err(err) = resend(session, &mut sink, &mut pacer).await {
                    break Ended::Dropped(format!("resending: {err}"));
                }
                if session.received - session.acked < ACK_EVERY {
                    continue;
                }
                session.ping()
            }
        };
        if let Err(err) = send_paced(&mut sink, &mut pacer, &out).await {
            break Ended::Dropped(format!("writing: {err}"));
        }
    };
    if matches!(ended, Ended::Stopped) {
        let _ = sink.close().await;
    }
    ended
}

/// Resends unacknowledged chat when it is due (see [`Session::take_resend`]),
/// in order: the server stores each client id once.
async fn resend(
    session: &mut Session,
    sink: &mut futures_util::stream::SplitSink<Ws, Message>,
    pacer: &mut Pacer,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    for msg in session.take_resend().unwrap_or_default() {
        send_paced(sink, pacer, &msg).await?;
    }
    Ok(())
}

async fn send_paced(
    sink: &mut futures_util::stream::SplitSink<Ws, Message>,
    pacer: &mut Pacer,
    msg: &ClientMessage,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let Ok(text) = serde_json::to_string(msg) else { return Ok(()) };
    pacer.wait().await;
    sink.send(Message::text(text)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pacing_keeps_under_the_announced_rate() {
        let limits = LimitsInfo {
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
