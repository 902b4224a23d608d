//! One task per WebSocket: it reads, checks and parses the client's frames
//! and forwards them to the hub, and writes the frames the hub queues for it.
//! Checks that need no shared state (size, rate, parse, silence) happen here,
//! in parallel across connections, so the hub only sees valid messages.
//!
//! Reading and writing run side by side (the socket is split): a write
//! blocked on a dead network must not stop the reader from noticing the
//! silence, answering a probe, or reading the client's pings and acks. A
//! write that stays blocked for [`WRITE_TIMEOUT`] is a dropped connection
//! (the seat is held for a resume), not a slow consumer: from here the two
//! look the same, and holding the seat is what keeps a call alive through a
//! network cut in a busy room.

use crate::cluster::bridge::deliver;
use crate::hub_task::{CloseSpec, ConnHandle, HubEvent, Kill, Outbound, PROBE_TIMEOUT};
use crate::outbox::{Outbox, Signal};
use crate::router::{Route, Step, Target};
use crate::state::AppState;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_core::{ConnId, RateLimiter, Verdict};
use switchboard_protocol::{
    ClientMessage, ErrorCode, ErrorMessage, LeaveReason, RequestId, ServerMessage, parse_client, request_id_of,
};
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc};
use tracing::{Instrument, debug, info, info_span};

/// A single write or flush that takes longer than this means the client is
/// gone or not reading: the connection ends as dropped.
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
/// Frames the reader hands the writer directly (error replies, probe
/// pings), ahead of the hub's queue. A reader that finds it full drops the
/// reply (a flooder's last rate-limit errors, beyond burst plus strikes, can
/// be among them): its client is not reading them fast enough anyway. Each
/// is a short error (a few hundred bytes).
pub const DIRECT_QUEUE: usize = 128;

type Sink = SplitSink<WebSocket, Message>;
type Stream = SplitStream<WebSocket>;

/// How the connection ends, and what is still to be written.
enum End {
    /// Nothing more to send.
    Quiet(LeaveReason),
    /// The hub asked for a close (leave, kick, shutdown).
    Close(CloseSpec, LeaveReason),
    /// A fatal error of the connection's own, then a close.
    Fatal { code: ErrorCode, message: String, close: u16, reason: LeaveReason },
    /// A frame over the hard limit: fatal, then linger.
    Oversize,
}

/// Serves one upgraded WebSocket until it closes. `_slot` is this
/// connection's place under the connection limit, released on return.
/// `internal`: the built-in SFU's connection, exempt from the rate limit.
pub async fn run(ws: WebSocket, id: ConnId, state: Arc<AppState>, _slot: Option<OwnedSemaphorePermit>, internal: bool) {
    let span = info_span!("conn", id = id.0);
    async move {
        state.telemetry.connections.increment(1.0);
        info!("connection opened");
        let outbox = Arc::new(Outbox::new(state.limits.outbound_queue, state.limits.outbound_queue_bytes));
        let handle =
            ConnHandle { outbox: outbox.clone(), probe: Arc::new(Notify::new()), kill: Arc::new(Kill::default()) };
        let home = state.shards.home(id);
        let opened = Instant::now();
        if state.shards.get(home).send(HubEvent::Open { conn: id, handle: handle.clone(), opened }).await.is_ok() {
            let mut route = Route::new(home);
            let reason = serve(ws, (id, internal, opened), &state, &handle, &mut route).await;
            outbox.close();
            let _ = deliver(&state, route.at(), HubEvent::Closed { conn: id, reason }).await;
            // Ended halfway through a move: the place it was leaving may
            // still hold it.
            if let Some(from) = route.leaving() {
                let _ = deliver(&state, from, HubEvent::Closed { conn: id, reason }).await;
            }
        }
        state.telemetry.connections.decrement(1.0);
    }
    .instrument(span)
    .await;
}

/// Runs the reader and the writer until either ends, then finishes the
/// connection as the end requires.
async fn serve(
    ws: WebSocket,
    (id, internal, opened): (ConnId, bool, Instant),
    state: &Arc<AppState>,
    handle: &ConnHandle,
    route: &mut Route,
) -> LeaveReason {
    let (mut sink, mut stream) = ws.split();
    let (direct_tx, mut direct_rx) = mpsc::channel(DIRECT_QUEUE);
    let end = {
        let mut reader = Reader {
            id,
            state,
            direct: direct_tx,
            probe_deadline: None,
            probes_sent: 0,
            internal,
            handle,
            route,
            opened,
        };
        tokio::select! {
            end = write(&mut sink, &handle.outbox, &mut direct_rx, state) => end,
            end = reader.read(&mut stream) => end,
            spec = handle.kill.fired() => End::Close(spec, LeaveReason::SlowConsumer),
        }
    };
    let Ok(mut ws) = sink.reunite(stream) else {
        // Both halves come from the same socket: reuniting cannot fail.
        return LeaveReason::Disconnected;
    };
    // Replies the reader produced before it stopped (the rate-limit errors
    // before a flood close) go out before the last word.
    if !matches!(end, End::Quiet(_)) {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while let Ok(msg) = direct_rx.try_recv() {
                if ws.send(msg).await.is_err() {
                    break;
                }
            }
        })
        .await;
    }
    match end {
        End::Quiet(reason) => reason,
        End::Close(spec, reason) => {
            close(&mut ws, spec).await;
            reason
        }
        End::Fatal { code, message, close: close_code, reason } => {
            Box::pin(fatal(&mut ws, state, code, message, close_code)).await;
            reason
        }
        End::Oversize => {
            let hard = state.limits.hard_max_message_bytes();
            let message = format!("frame over {hard} bytes: connection closed");
            Box::pin(fatal(&mut ws, state, ErrorCode::MessageTooLarge, message, 1009)).await;
            tokio::time::sleep(OVERSIZE_LINGER).await;
            LeaveReason::Kicked
        }
    }
}

/// Writes what the reader hands over directly (first) and what the hub
/// queues, a batch per flush, each socket operation bounded by
/// [`WRITE_TIMEOUT`].
async fn write(sink: &mut Sink, outbox: &Outbox, direct: &mut mpsc::Receiver<Message>, state: &AppState) -> End {
    loop {
        let first = tokio::select! {
            biased;
            Some(msg) = direct.recv() => {
                if let Err(reason) = bounded(sink.send(msg)).await {
                    return End::Quiet(reason);
                }
                continue;
            }
            out = outbox.pop() => out,
        };
        let mut next = Some(first);
        for _ in 0..WRITE_BATCH {
            let Some(out) = next.take().or_else(|| outbox.try_pop()) else { break };
            match out {
                Outbound::Frame { text, kind, received } => {
                    if let Err(reason) = bounded(sink.feed(Message::Text(text))).await {
                        return End::Quiet(reason);
                    }
                    let telemetry = &state.telemetry;
                    telemetry.message_out(kind, 1);
                    if let (true, Some(at)) = (kind.is_relay(), received) {
                        telemetry.relay_latency.record(at.elapsed().as_secs_f64());
                    }
                }
                Outbound::Close(spec) => {
                    if let Err(reason) = bounded(sink.flush()).await {
                        return End::Quiet(reason);
                    }
                    // A going-away close asks the client to come back: to
                    // a room on another node (the bridge reports it) that
                    // is a drop, and the seat is held for its resume.
                    let reason =
                        if spec == CloseSpec::GOING_AWAY { LeaveReason::Disconnected } else { LeaveReason::Left };
                    return End::Close(spec, reason);
                }
            }
        }
        if let Err(reason) = bounded(sink.flush()).await {
            return End::Quiet(reason);
        }
    }
}

/// One socket operation, bounded: a failure or a timeout is a drop.
async fn bounded<E>(op: impl Future<Output = Result<(), E>>) -> Result<(), LeaveReason> {
    match tokio::time::timeout(WRITE_TIMEOUT, op).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(LeaveReason::Disconnected),
        Err(_) => {
            debug!("write blocked for {WRITE_TIMEOUT:?}: connection dropped");
            Err(LeaveReason::Disconnected)
        }
    }
}

/// The reading half and what it decides alone.
struct Reader<'a> {
    id: ConnId,
    state: &'a Arc<AppState>,
    direct: mpsc::Sender<Message>,
    /// While a probe is out: when the client must have answered by.
    probe_deadline: Option<tokio::time::Instant>,
    /// Probes sent, so that a late pong to an earlier one is not taken as
    /// an answer to the current one.
    probes_sent: u64,
    /// The built-in SFU's connection: no rate limit.
    internal: bool,
    /// How the hub shards reach this connection (handed to a shard it
    /// moves to).
    handle: &'a ConnHandle,
    /// Which shard holds the connection.
    route: &'a mut Route,
    /// When it connected.
    opened: Instant,
}

impl Reader<'_> {
    async fn read(&mut self, stream: &mut Stream) -> End {
        let (probe, outbox) = (self.handle.probe.clone(), self.handle.outbox.clone());
        let ping_timeout = self.state.limits.ping_timeout;
        let mut rate = RateLimiter::new(&self.state.limits, Instant::now());
        // One timer for the whole connection, moved only when it fires:
        // re-arming a timer for every frame would cost more than the frame.
        let mut last_heard = tokio::time::Instant::now();
        let silence = tokio::time::sleep_until(last_heard + ping_timeout);
        tokio::pin!(silence);
        loop {
            tokio::select! {
                // Nothing is read while a join is unanswered (see
                // `crate::router`); the socket's buffer holds what comes.
                signal = outbox.next_signal(), if self.route.awaiting_answer() => {
                    let Signal::JoinAnswered(joined) = signal else { continue };
                    if let Some(step) = self.route.answered(joined)
                        && self.step(step).await.is_err()
                    {
                        return End::Quiet(LeaveReason::Shutdown);
                    }
                }
                inbound = stream.next(), if !self.route.awaiting_answer() => {
                    let frame = match inbound {
                        None => return End::Quiet(LeaveReason::Disconnected),
                        Some(Err(err)) => return read_failed(err),
                        Some(Ok(frame)) => frame,
                    };
                    last_heard = tokio::time::Instant::now();
                    if self.probe_deadline.is_some() && self.answers_probe(&frame) {
                        self.probe_deadline = None;
                        let _ = deliver(self.state, self.route.at(), HubEvent::Alive { conn: self.id }).await;
                    }
                    if let Some(end) = self.inbound(frame, &mut rate).await {
                        return end;
                    }
                }
                () = probe.notified() => self.send_probe(),
                () = probe_expiry(self.probe_deadline) => {
                    debug!("probe unanswered: connection dropped");
                    return End::Quiet(LeaveReason::Disconnected);
                }
                () = &mut silence => {
                    let due = last_heard + ping_timeout;
                    if due > tokio::time::Instant::now() {
                        silence.as_mut().reset(due);
                        continue;
                    }
                    let message = format!("no message for {ping_timeout:?}");
                    return End::Fatal { code: ErrorCode::PingTimeout, message, close: 1008, reason: LeaveReason::Timeout };
                }
            }
        }
    }

    /// Someone is resuming this session: ping the client, ahead of anything
    /// queued, and give it [`PROBE_TIMEOUT`] to show it is there. A probe
    /// that cannot even be handed to the writer counts as unanswered.
    fn send_probe(&mut self) {
        self.probes_sent += 1;
        let payload = self.probes_sent.to_be_bytes().to_vec();
        let _ = self.direct.try_send(Message::Ping(payload.into()));
        self.probe_deadline = Some(tokio::time::Instant::now() + PROBE_TIMEOUT);
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

    async fn inbound(&mut self, frame: Message, rate: &mut RateLimiter) -> Option<End> {
        let received = Instant::now();
        let text = match frame {
            Message::Text(text) => Some(text),
            Message::Binary(_) => None,
            // Pings are answered by the WebSocket layer; a close ends the read.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => return None,
        };
        let limits = &self.state.limits;
        let verdict = if self.internal { Verdict::Allow } else { rate.check(received) };
        match verdict {
            Verdict::Allow => {}
            Verdict::Drop => {
                let id = text.as_ref().and_then(|t| request_id_of(t));
                let message = format!("over {} messages per second: message dropped", limits.messages_per_second);
                self.reply(ErrorMessage::recoverable(id, ErrorCode::RateLimited, message));
                return None;
            }
            Verdict::Flood => {
                let message = "sustained flooding".to_owned();
                return Some(End::Fatal { code: ErrorCode::Flood, message, close: 1008, reason: LeaveReason::Kicked });
            }
        }
        let Some(text) = text else {
            let message = "binary frames are not part of the protocol: send JSON text";
            self.reply(ErrorMessage::recoverable(None, ErrorCode::BinaryFrame, message));
            return None;
        };
        if text.len() > limits.max_message_bytes {
            let id = request_id_of(&text);
            let message =
                format!("message of {} bytes is over the {}-byte limit", text.len(), limits.max_message_bytes);
            self.reply(ErrorMessage::recoverable(id, ErrorCode::MessageTooLarge, message));
            return None;
        }
        match parse_client(&text) {
            Ok(msg) => {
                let kind = msg.kind();
                debug!(kind = kind.as_str(), "message");
                self.state.telemetry.message_in(kind);
                if self.forward(msg, received).await.is_err() {
                    return Some(End::Quiet(LeaveReason::Shutdown));
                }
                None
            }
            Err(err) => {
                self.reply(err.into_error());
                None
            }
        }
    }

    /// Sends a message where it belongs: a join to where its room lives
    /// (a shard here, or the owner node), moving the connection there when
    /// it is elsewhere. A join whose room cannot be placed now (the
    /// cluster's Redis is unreachable) is refused as `unavailable`.
    async fn forward(&mut self, msg: ClientMessage, received: Instant) -> Result<(), ()> {
        let join_to = match &msg {
            // A join the room would refuse anyway (no genuine token for it)
            // is answered by the home shard: an unauthenticated client must
            // not make the cluster place rooms (leases, fences, reads).
            ClientMessage::Join(join) if !self.may_place(join) => Some(Target::Shard(self.state.shards.home(self.id))),
            ClientMessage::Join(join) => match self.place(&join.room).await {
                Ok(to) => Some(to),
                Err(why) => {
                    self.reply(ErrorMessage::recoverable(join.id.clone(), ErrorCode::Unavailable, why));
                    return Ok(());
                }
            },
            _ => None,
        };
        let step = self.route.next(join_to);
        let to = self.step(step).await?;
        deliver(self.state, &to, HubEvent::Message { conn: self.id, msg, received }).await
    }

    /// Carries out a routing step: where the next message goes.
    async fn step(&mut self, step: Step) -> Result<Target, ()> {
        match step {
            Step::Send(to) => Ok(to),
            Step::Move { from, to } => {
                let (conn, opened) = (self.id, self.opened);
                deliver(self.state, &from, HubEvent::MovedOut { conn }).await?;
                if matches!(from, Target::Shard(_)) {
                    // Replies to what was sent there before (a ping, a
                    // refused join) are queued before the new shard's.
                    while self.handle.outbox.next_signal().await != Signal::MovedOut {}
                }
                let handle = self.handle.clone();
                deliver(self.state, &to, HubEvent::Open { conn, handle, opened }).await?;
                self.route.moved();
                Ok(to)
            }
        }
    }

    /// Whether `join` may place its room in the cluster: always on open
    /// servers and for the built-in SFU; otherwise only with a genuine token
    /// for that room (expired is fine: a resume may carry one, and the room
    /// checks expiry itself).
    fn may_place(&self, join: &switchboard_protocol::Join) -> bool {
        let (Some(verifier), Some(_)) = (&self.state.verifier, &self.state.cluster) else { return true };
        self.internal || join.token.as_deref().is_some_and(|t| verifier.verify_for_resume(t, &join.room).is_ok())
    }

    /// Where `room` lives: by the shard rule on a single node, or where the
    /// cluster placed it.
    async fn place(&self, room: &switchboard_protocol::RoomName) -> Result<Target, String> {
        match &self.state.cluster {
            None => Ok(Target::Shard(self.state.shards.place(room))),
            // In a task of its own: placing may take the room's lease and
            // its state, which must not stop halfway if this connection
            // ends meanwhile.
            Some(cluster) => {
                let (state, cluster, room) = (Arc::clone(self.state), cluster.clone(), room.clone());
                let placing = tokio::spawn(async move { crate::cluster::leases::place(&state, &cluster, &room).await });
                placing.await.unwrap_or_else(|_| Err("this server is stopping".into()))
            }
        }
    }

    /// Sends an error straight to this socket, ahead of what the hub
    /// queued; its request id says what it answers.
    fn reply(&self, error: ErrorMessage) {
        self.state.telemetry.error(error.code);
        debug!(code = error.code.as_str(), "error reply");
        let text = Utf8Bytes::from(ServerMessage::Error(error).to_json());
        let _ = self.direct.try_send(Message::Text(text));
    }
}

fn read_failed(err: axum::Error) -> End {
    let inner = err.into_inner();
    let too_big = matches!(inner.downcast_ref::<tungstenite::Error>(), Some(tungstenite::Error::Capacity(_)));
    if too_big {
        return End::Oversize;
    }
    debug!(error = %inner, "read failed");
    End::Quiet(LeaveReason::Disconnected)
}

/// Sends a fatal error and a close frame.
async fn fatal(ws: &mut WebSocket, state: &AppState, code: ErrorCode, message: String, close_code: u16) {
    info!(code = code.as_str(), "closing connection");
    state.telemetry.error(code);
    let text = Utf8Bytes::from(ServerMessage::Error(ErrorMessage::fatal(None::<RequestId>, code, message)).to_json());
    let sent = tokio::time::timeout(CLOSE_TIMEOUT, ws.send(Message::Text(text))).await;
    if matches!(sent, Ok(Ok(()))) {
        Box::pin(close(ws, CloseSpec { code: close_code, reason: code.as_str() })).await;
    }
}

/// The closing handshake, bounded by [`CLOSE_TIMEOUT`]: send a close
/// frame, then read (and discard) until the client's close arrives.
/// Dropping the socket with unread input would make the kernel reset
/// the connection, and the client would lose the frames before it.
async fn close(ws: &mut WebSocket, spec: CloseSpec) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if ws.send(close_message(spec)).await.is_err() {
            return;
        }
        while let Some(Ok(frame)) = ws.recv().await {
            if matches!(frame, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
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
