//! The signaling connection: a WebSocket to the server and one task that
//! owns it. The rules (what to acknowledge, what to resend, how long to
//! wait, what a refusal means) are the sans-IO [`Session`]'s; this task does
//! the IO and the timing: it pings, notices a silent server, and after a
//! drop reconnects and resumes the session (or joins afresh when the server
//! cannot resume it).

use crate::pacer::Pacer;
use crate::session::{JoinRequest, Refusal, Session};
use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use switchboard_protocol::{ClientMessage, ErrorCode, ServerMessage, Welcome};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// Messages queued for the server before senders wait (also while
/// reconnecting).
pub const SEND_QUEUE: usize = 1024;
/// Server messages queued for the peer before the reader waits.
pub const EVENT_QUEUE: usize = 4096;

/// Longest wait for one reconnection attempt (connect and welcome): a
/// network that drops packets silently would otherwise hold it for minutes.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

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

    /// A sender over a queue the caller drains itself (tests, or another
    /// transport).
    pub fn over(tx: mpsc::Sender<ClientMessage>) -> Self {
        Self { tx }
    }

    /// The queue itself, for code that speaks only the protocol's types
    /// (the negotiator in `switchboard-rtc`).
    pub fn queue(&self) -> mpsc::Sender<ClientMessage> {
        self.tx.clone()
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

/// Longest wait for the connection task to write a `leave` and stop.
pub const LEAVE_FLUSH: Duration = Duration::from_secs(2);

impl Signaling {
    /// Waits, at most [`LEAVE_FLUSH`], for the connection task to stop:
    /// after a `leave` was queued, until it is written. Dropping the
    /// connection at once could lose the `leave`, and the room would hold
    /// the seat for the resume grace.
    pub async fn finish(&mut self) {
        let _ = tokio::time::timeout(LEAVE_FLUSH, &mut self.task).await;
    }
}

impl Drop for Signaling {
    fn drop(&mut self) {
        self.task.abort();
    }
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
        let mut session = Session::new(url, request.clone());
        let (ws, _) = tokio_tungstenite::connect_async_with_config(http_request(&session)?, None, true)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let connected_after = start.elapsed();
        let mut ws = ws;
        ws.send(Message::text(serde_json::to_string(&session.join_message(false)?)?)).await.context("sending join")?;
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

/// The WebSocket request for the session's URL, with the internal key when
/// it has one.
fn http_request(session: &Session) -> anyhow::Result<tokio_tungstenite::tungstenite::handshake::client::Request> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = session.url().into_client_request().context("signaling URL")?;
    // Only to this host: a `going_away` may point the session elsewhere,
    // and the key is for the server that made it.
    let loopback = request.uri().host().is_some_and(|h| {
        h == "localhost" || h.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    });
    if let Some(key) = session.request().internal_key.as_ref().filter(|_| loopback) {
        request.headers_mut().insert("x-switchboard-internal", key.parse().context("internal key")?);
    }
    Ok(request)
}

/// Connects and joins, resuming when it has a session. Returns the
/// socket and the welcome.
async fn connect(session: &mut Session) -> Result<(Ws, Welcome), JoinError> {
    let request = http_request(session).map_err(|e| JoinError::Fatal(format!("{e:#}")))?;
    let (mut ws, _) = match tokio_tungstenite::connect_async_with_config(request, None, true).await {
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
    let mut resume = session.can_resume();
    loop {
        let join = session.join_message(resume).map_err(|e| JoinError::Fatal(e.to_string()))?;
        let join = serde_json::to_string(&join).map_err(|e| JoinError::Fatal(e.to_string()))?;
        ws.send(Message::text(join)).await.map_err(|e| JoinError::Retry(format!("sending join: {e}"), None))?;
        match read_welcome(&mut ws).await {
            Ok(welcome) => return Ok((ws, welcome)),
            Err(JoinRefusal::Code(code, message)) => {
                let described = format!("join refused: {message} ({})", code.as_str());
                match Session::refusal(code, resume) {
                    Refusal::JoinAfresh => {
                        tracing::info!(%message, "resume refused: joining afresh");
                        resume = false;
                    }
                    Refusal::Fatal => return Err(JoinError::Fatal(described)),
                    Refusal::Retry => return Err(JoinError::Retry(described, None)),
                }
            }
            Err(JoinRefusal::Other(message)) => return Err(JoinError::Retry(message, None)),
        }
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
    // What waited in the queue across a fresh join, to go first.
    let mut carry = Vec::new();
    loop {
        let Some(socket) = ws.take() else { break };
        let ended = run(&mut session, socket, &mut rx, std::mem::take(&mut carry), &events).await;
        let Some(policy) = session.reconnect() else {
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
                    session.move_to(url);
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
            let wait = policy.wait(attempt, floor, rand::random::<f64>());
            let _ = state.send(SignalState::Reconnecting { attempt, retry_in: wait, reason: last.clone() });
            tokio::time::sleep(wait).await;
            if events.is_closed() {
                return;
            }
            attempt = attempt.saturating_add(1);
            let result = match tokio::time::timeout(ATTEMPT_TIMEOUT, connect(&mut session)).await {
                Ok(result) => result,
                Err(_) => Err(JoinError::Retry(format!("no welcome within {ATTEMPT_TIMEOUT:?}"), None)),
            };
            match result {
                Ok((socket, welcome)) => {
                    session.welcomed(&welcome);
                    if !welcome.resumed {
                        carry = without_stale_relays(&mut rx);
                    }
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

/// Empties the queue after a fresh join and returns what may still go out:
/// offers, answers and candidates queued for the old session's connections
/// (ICE restarts made while the socket was down) would reach the room under
/// the new peer id, to connections that no longer exist.
fn without_stale_relays(rx: &mut mpsc::Receiver<ClientMessage>) -> Vec<ClientMessage> {
    let mut keep = Vec::new();
    while let Ok(msg) = rx.try_recv() {
        let relay = matches!(
            msg,
            ClientMessage::Offer(_)
                | ClientMessage::Answer(_)
                | ClientMessage::Candidate(_)
                | ClientMessage::EndOfCandidates(_)
        );
        if !relay {
            keep.push(msg);
        }
    }
    keep
}

/// Runs one connection: writes `carry` and then queued messages (paced),
/// pings with an acknowledgement, reads and forwards everything, and
/// notices silence.
async fn run(
    session: &mut Session,
    ws: Ws,
    rx: &mut mpsc::Receiver<ClientMessage>,
    carry: Vec<ClientMessage>,
    events: &mpsc::Sender<ServerMessage>,
) -> Ended {
    let (mut sink, mut stream) = ws.split();
    let mut pacer = match session.request().internal_key {
        Some(_) => Pacer::unlimited(),
        None => Pacer::new(session.limits()),
    };
    if let Err(err) = resend(session, &mut sink, &mut pacer).await {
        return Ended::Dropped(format!("resending: {err}"));
    }
    // Carried only after a fresh join, when the resend went just now.
    for msg in carry {
        session.sending(&msg);
        if let Err(err) = send_paced(&mut sink, &mut pacer, &msg).await {
            return Ended::Dropped(format!("writing: {err}"));
        }
    }
    let ping_every = session.ping_every();
    let silence_limit = ping_every + (ping_every / 2).max(Duration::from_secs(1));
    let mut ping = tokio::time::interval(ping_every);
    ping.tick().await;
    let mut last_heard = tokio::time::Instant::now();
    let replay_started = tokio::time::Instant::now();
    let ended = loop {
        let out = tokio::select! {
            // Nothing new goes out before the resend of what the old
            // connection may have swallowed: the room stores chat in the
            // order it arrives.
            msg = rx.recv(), if !session.resend_due() => match msg {
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
                if session.resend_due() && session.replay_left() > 0 && replay_started.elapsed() >= ping_every {
                    tracing::warn!(left = session.replay_left(), "replay incomplete: resending anyway");
                    session.give_up_replay();
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
                if !session.ack_due() {
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

    fn parse(json: &str) -> ClientMessage {
        serde_json::from_str(json).expect("a client message")
    }

    #[test]
    fn a_fresh_join_drops_relays_queued_for_the_old_session_and_keeps_the_rest_in_order() {
        let (tx, mut rx) = mpsc::channel(16);
        let queued = [
            r#"{"type":"offer","to":"pOLD00000001","description":{"type":"offer","sdp":"v=0\r\n"}}"#,
            r#"{"type":"chat","client_id":"c-1","text":"typed while away"}"#,
            r#"{"type":"candidate","to":"pOLD00000001","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host"}}"#,
            r#"{"type":"end_of_candidates","to":"pOLD00000001"}"#,
            r#"{"type":"media","mic_muted":true,"camera_muted":false}"#,
        ];
        for json in queued {
            tx.try_send(parse(json)).expect("room in the queue");
        }
        let kept = without_stale_relays(&mut rx);
        let kinds: Vec<&str> = kept.iter().map(|m| m.kind().as_str()).collect();
        assert_eq!(kinds, ["chat", "media"]);
        assert!(rx.try_recv().is_err(), "the queue was emptied");
    }
}
