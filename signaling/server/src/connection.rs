//! One task per WebSocket: it reads, checks and parses the client's frames
//! and forwards them to the hub, and writes the frames the hub queues for it.
//! Checks that need no shared state (size, rate, parse, silence) happen here,
//! in parallel across connections, so the hub only sees valid messages.

use crate::hub_task::{CloseSpec, ConnHandle, HubEvent, Outbound, PROBE_TIMEOUT};
use crate::outbox::Outbox;
use crate::state::AppState;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_core::{ConnId, RateLimiter, Verdict};
use switchboard_protocol::{
    ErrorCode, ErrorMessage, LeaveReason, RequestId, ServerMessage, parse_client, request_id_of,
};
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tracing::{Instrument, debug, info, info_span};

/// A single write or flush that takes longer than this means the client has
/// stopped reading: it is disconnected as a slow consumer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed to deliver a close frame before the socket is dropped.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// After a frame over the hard size limit the rest of it is still unread and
/// cannot be drained; the socket is kept this long so the client can read
/// the error and the close frame before the kernel resets the connection.
pub const OVERSIZE_LINGER: Duration = Duration::from_secs(1);
/// Queued frames written before one flush: batching under load, low latency
/// when idle.
pub const WRITE_BATCH: usize = 64;

// The close, fatal and read-failure paths are rare and their futures are
// large (timers, close handshakes); they are boxed where awaited so that
// every idle connection's task does not carry their space.

/// One socket write.
enum Write {
    /// Buffer a frame.
    Feed(Message),
    /// Flush buffered frames.
    Flush,
    /// Buffer and flush one frame.
    Send(Message),
}

struct Conn {
    id: ConnId,
    ws: WebSocket,
    /// The hub's kill switch; `None` once the hub dropped it unused.
    kill: Option<oneshot::Receiver<CloseSpec>>,
    state: Arc<AppState>,
    /// While a probe is out: when the client must have answered by.
    probe: Option<tokio::time::Instant>,
    /// Probes sent, so that a late pong to an earlier one is not taken as
    /// an answer to the current one.
    probes_sent: u64,
}

/// Resolves when the hub kills the connection. A hub that drops the sender
/// (it does so after queueing a normal close) never kills it.
async fn killed(kill: &mut Option<oneshot::Receiver<CloseSpec>>) -> CloseSpec {
    if let Some(rx) = kill.as_mut()
        && let Ok(spec) = rx.await
    {
        return spec;
    }
    *kill = None;
    std::future::pending().await
}

/// Serves one upgraded WebSocket until it closes. `_slot` is this
/// connection's place under the connection limit, released on return.
pub async fn run(ws: WebSocket, id: ConnId, state: Arc<AppState>, _slot: OwnedSemaphorePermit) {
    let span = info_span!("conn", id = id.0);
    async move {
        state.telemetry.connections.increment(1.0);
        info!("connection opened");
        let outbox = Arc::new(Outbox::new(state.limits.outbound_queue, state.limits.outbound_queue_bytes));
        let (kill_tx, kill) = oneshot::channel();
        let handle = ConnHandle { outbox: outbox.clone(), kill: kill_tx };
        if state.hub.send(HubEvent::Open { conn: id, handle }).await.is_ok() {
            let mut conn = Conn { id, ws, kill: Some(kill), state: state.clone(), probe: None, probes_sent: 0 };
            let reason = conn.serve(&outbox).await;
            outbox.close();
            let _ = state.hub.send(HubEvent::Closed { conn: id, reason }).await;
        }
        state.telemetry.connections.decrement(1.0);
    }
    .instrument(span)
    .await;
}

impl Conn {
    async fn serve(&mut self, outbox: &Outbox) -> LeaveReason {
        let ping_timeout = self.state.limits.ping_timeout;
        let mut rate = RateLimiter::new(&self.state.limits, Instant::now());
        // One timer for the whole connection, moved only when it fires:
        // re-arming a timer for every frame would cost more than the frame.
        let mut last_heard = tokio::time::Instant::now();
        let silence = tokio::time::sleep_until(last_heard + ping_timeout);
        tokio::pin!(silence);
        loop {
            tokio::select! {
                biased;
                spec = killed(&mut self.kill) => {
                    Box::pin(self.close(spec)).await;
                    return LeaveReason::SlowConsumer;
                }
                out = outbox.pop() => {
                    if let Some(stop) = self.write_queued(out, outbox).await {
                        return stop;
                    }
                }
                inbound = self.ws.recv() => {
                    let frame = match inbound {
                        None => return LeaveReason::Disconnected,
                        Some(Err(err)) => return Box::pin(self.read_failed(err)).await,
                        Some(Ok(frame)) => frame,
                    };
                    last_heard = tokio::time::Instant::now();
                    if self.probe.is_some() && self.answers_probe(&frame) {
                        self.probe = None;
                        let _ = self.state.hub.send(HubEvent::Alive { conn: self.id }).await;
                    }
                    if let Some(stop) = self.inbound(frame, &mut rate).await {
                        return stop;
                    }
                }
                () = probe_expiry(self.probe) => {
                    debug!("probe unanswered: connection dropped");
                    return LeaveReason::Disconnected;
                }
                () = &mut silence => {
                    let due = last_heard + ping_timeout;
                    if due > tokio::time::Instant::now() {
                        silence.as_mut().reset(due);
                        continue;
                    }
                    let message = format!("no message for {ping_timeout:?}");
                    return Box::pin(self.fatal(ErrorCode::PingTimeout, message, 1008, LeaveReason::Timeout)).await;
                }
            }
        }
    }

    /// Writes `first` and whatever else is queued (up to a batch), then
    /// flushes once.
    async fn write_queued(&mut self, first: Outbound, outbox: &Outbox) -> Option<LeaveReason> {
        let mut next = Some(first);
        for _ in 0..WRITE_BATCH {
            let Some(out) = next.take().or_else(|| outbox.try_pop()) else { break };
            match out {
                Outbound::Frame { text, kind, received } => {
                    if let Err(stop) = self.io(Write::Feed(Message::Text(text))).await {
                        return Some(stop);
                    }
                    // Handed to the socket layer; the flush follows at once.
                    let telemetry = &self.state.telemetry;
                    telemetry.message_out(kind, 1);
                    if let (true, Some(at)) = (kind.is_relay(), received) {
                        telemetry.relay_latency.record(at.elapsed().as_secs_f64());
                    }
                }
                Outbound::Close(spec) => {
                    Box::pin(self.close(spec)).await;
                    return Some(LeaveReason::Left);
                }
                Outbound::Probe => {
                    self.probes_sent += 1;
                    let payload = self.probes_sent.to_be_bytes().to_vec();
                    if let Err(stop) = self.io(Write::Feed(Message::Ping(payload.into()))).await {
                        return Some(stop);
                    }
                    self.probe = Some(tokio::time::Instant::now() + PROBE_TIMEOUT);
                }
            }
        }
        self.io(Write::Flush).await.err()
    }

    /// Runs one socket write, bounded by [`WRITE_TIMEOUT`] and interrupted
    /// by a kill.
    async fn io(&mut self, op: Write) -> Result<(), LeaveReason> {
        let (ws, kill) = (&mut self.ws, &mut self.kill);
        let write = async move {
            match op {
                Write::Feed(msg) => ws.feed(msg).await,
                Write::Flush => ws.flush().await,
                Write::Send(msg) => ws.send(msg).await,
            }
        };
        tokio::select! {
            result = tokio::time::timeout(WRITE_TIMEOUT, write) => match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(LeaveReason::Disconnected),
                Err(_) => Err(LeaveReason::SlowConsumer),
            },
            _ = killed(kill) => Err(LeaveReason::SlowConsumer),
        }
    }

    /// Whether `frame` shows the client is there now: the pong to the
    /// current probe, or any message it wrote.
    fn answers_probe(&self, frame: &Message) -> bool {
        match frame {
            Message::Pong(payload) => payload.as_ref() == self.probes_sent.to_be_bytes(),
            Message::Text(_) | Message::Binary(_) => true,
            Message::Ping(_) | Message::Close(_) => false,
        }
    }

    async fn inbound(&mut self, frame: Message, rate: &mut RateLimiter) -> Option<LeaveReason> {
        let received = Instant::now();
        let text = match frame {
            Message::Text(text) => Some(text),
            Message::Binary(_) => None,
            // Pings are answered by the WebSocket layer; a close ends the read.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => return None,
        };
        let limits = &self.state.limits;
        match rate.check(received) {
            Verdict::Allow => {}
            Verdict::Drop => {
                let id = text.as_ref().and_then(|t| request_id_of(t));
                let message = format!("over {} messages per second: message dropped", limits.messages_per_second);
                return self.reply(ErrorMessage::recoverable(id, ErrorCode::RateLimited, message)).await;
            }
            Verdict::Flood => {
                let message = "sustained flooding".to_owned();
                return Some(Box::pin(self.fatal(ErrorCode::Flood, message, 1008, LeaveReason::Kicked)).await);
            }
        }
        let Some(text) = text else {
            let message = "binary frames are not part of the protocol: send JSON text";
            return self.reply(ErrorMessage::recoverable(None, ErrorCode::BinaryFrame, message)).await;
        };
        if text.len() > limits.max_message_bytes {
            let id = request_id_of(&text);
            let message =
                format!("message of {} bytes is over the {}-byte limit", text.len(), limits.max_message_bytes);
            return self.reply(ErrorMessage::recoverable(id, ErrorCode::MessageTooLarge, message)).await;
        }
        match parse_client(&text) {
            Ok(msg) => {
                let kind = msg.kind();
                debug!(kind = kind.as_str(), "message");
                self.state.telemetry.message_in(kind);
                if self.state.hub.send(HubEvent::Message { conn: self.id, msg, received }).await.is_err() {
                    return Some(LeaveReason::Shutdown);
                }
                None
            }
            Err(err) => self.reply(err.into_error()).await,
        }
    }

    /// Sends an error straight to this socket. It may overtake messages
    /// still queued by the hub; its request id says what it answers.
    async fn reply(&mut self, error: ErrorMessage) -> Option<LeaveReason> {
        self.state.telemetry.error(error.code);
        debug!(code = error.code.as_str(), "error reply");
        let text = Utf8Bytes::from(ServerMessage::Error(error).to_json());
        self.io(Write::Send(Message::Text(text))).await.err()
    }

    /// Sends a fatal error and a close frame, and stops.
    async fn fatal(&mut self, code: ErrorCode, message: String, close: u16, reason: LeaveReason) -> LeaveReason {
        info!(code = code.as_str(), "closing connection");
        self.state.telemetry.error(code);
        let text =
            Utf8Bytes::from(ServerMessage::Error(ErrorMessage::fatal(None::<RequestId>, code, message)).to_json());
        let sent = tokio::time::timeout(CLOSE_TIMEOUT, self.ws.send(Message::Text(text))).await;
        if matches!(sent, Ok(Ok(()))) {
            Box::pin(self.close(CloseSpec { code: close, reason: code.as_str() })).await;
        }
        reason
    }

    /// The closing handshake, bounded by [`CLOSE_TIMEOUT`]: send a close
    /// frame, then read (and discard) until the client's close arrives.
    /// Dropping the socket with unread input would make the kernel reset
    /// the connection, and the client would lose the frames before it.
    async fn close(&mut self, spec: CloseSpec) {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            if self.ws.send(close_message(spec)).await.is_err() {
                return;
            }
            while let Some(Ok(frame)) = self.ws.recv().await {
                if matches!(frame, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }

    async fn read_failed(&mut self, err: axum::Error) -> LeaveReason {
        let inner = err.into_inner();
        let too_big = matches!(inner.downcast_ref::<tungstenite::Error>(), Some(tungstenite::Error::Capacity(_)));
        if too_big {
            let hard = self.state.limits.hard_max_message_bytes();
            let message = format!("frame over {hard} bytes: connection closed");
            let stop = Box::pin(self.fatal(ErrorCode::MessageTooLarge, message, 1009, LeaveReason::Kicked)).await;
            tokio::time::sleep(OVERSIZE_LINGER).await;
            return stop;
        }
        debug!(error = %inner, "read failed");
        LeaveReason::Disconnected
    }
}

/// Resolves when a probe's deadline passes; never while none is out.
async fn probe_expiry(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn close_message(spec: CloseSpec) -> Message {
    Message::Close(Some(CloseFrame { code: spec.code, reason: Utf8Bytes::from_static(spec.reason) }))
}
