//! The client side of a Switchboard session, with no IO and no clock: what
//! a client must remember to resume after a drop (its peer id, the resume
//! token, how many events it has read), which chat it must resend, when it
//! acknowledges, how long it waits before the next attempt, and what a
//! refused join means.
//!
//! The connection task in `connection.rs` feeds it what it reads and sends;
//! the browser client (`web/js/signaling.js`) keeps the same rules, and both
//! replay the scenarios in `client/fixtures/session.json` (see the tests at
//! the bottom and `tests/tests/protocol.rs`).

use std::collections::VecDeque;
use std::time::Duration;
use switchboard_protocol::{
    ChatSend, ClientMessage, DisplayName, ErrorCode, Join, LimitsInfo, MediaState, PeerId, Ping, Resume, Role,
    RoomName, ServerMessage, Welcome,
};

/// Unacknowledged chat messages kept for a resend after a reconnect; past
/// it the oldest is forgotten (it may then be lost if its echo never came).
pub const UNACKED_CHATS: usize = 256;
/// Events received between two acknowledgements at most (besides the one
/// in every ping), so the server's replay buffer stays small.
pub const ACK_EVERY: u64 = 64;

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

    /// The wait before attempt `attempt` when the server asked for at least
    /// `floor` (`going_away`'s `retry_after_ms`, a 503's `Retry-After`):
    /// promptly after a notice (the floor plus a little jitter), else
    /// exponential, never under the floor.
    pub fn wait(&self, attempt: u32, floor: Duration, unit: f64) -> Duration {
        if attempt == 0 && !floor.is_zero() {
            floor + self.initial.mul_f64(unit.clamp(0.0, 1.0))
        } else {
            self.delay(attempt, unit).max(floor)
        }
    }
}

/// What to join with. Its `Debug` leaves the secrets out.
#[derive(Clone)]
pub struct JoinRequest {
    /// The room.
    pub room: String,
    /// Display name.
    pub name: String,
    /// Join token, when the server requires one.
    pub token: Option<String>,
    /// `Sfu` for a forwarding unit (its token must allow it).
    pub role: Role,
    /// Reconnect and resume after a drop; `None`: a drop ends the session.
    pub reconnect: Option<ReconnectPolicy>,
    /// The key a server gives its own built-in SFU, sent in the
    /// `x-switchboard-internal` header. Such a connection skips admission
    /// and the message rate limit, so it is not paced either.
    pub internal_key: Option<String>,
}

impl std::fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinRequest")
            .field("room", &self.room)
            .field("name", &self.name)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("role", &self.role)
            .field("reconnect", &self.reconnect)
            .field("internal_key", &self.internal_key.as_ref().map(|_| "…"))
            .finish()
    }
}

/// A join request that cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The room name breaks the protocol's rules.
    #[error("room name: {0}")]
    Room(String),
    /// The display name breaks the protocol's rules.
    #[error("display name: {0}")]
    Name(String),
}

/// What a refused join means for the next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The session cannot be resumed: join afresh at once (a new peer id).
    JoinAfresh,
    /// Trying again cannot help (a bad token, a refused role, `replaced`).
    Fatal,
    /// Try again after the backoff.
    Retry,
}

/// The session as the client sees it: what it needs to resume. Its
/// `Debug` leaves the resume token out.
pub struct Session {
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

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("request", &self.request)
            .field("me", &self.me)
            .field("received", &self.received)
            .field("unacked", &self.unacked.len())
            .field("replay_left", &self.replay_left)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session not yet joined.
    pub fn new(url: &str, request: JoinRequest) -> Self {
        Self {
            url: url.to_owned(),
            request,
            me: None,
            token: None,
            received: 0,
            acked: 0,
            unacked: VecDeque::new(),
            replay_left: 0,
            resend_due: false,
            ping_every: Duration::from_secs(15),
            limits: LimitsInfo::default(),
        }
    }

    /// Where to connect (a `going_away` may have moved it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Connect to `url` from now on.
    pub fn move_to(&mut self, url: String) {
        self.url = url;
    }

    /// What the session joins with.
    pub fn request(&self) -> &JoinRequest {
        &self.request
    }

    /// The reconnection policy (`None`: a drop ends the session).
    pub fn reconnect(&self) -> Option<ReconnectPolicy> {
        self.request.reconnect
    }

    /// Whether there is a session to resume.
    pub fn can_resume(&self) -> bool {
        self.token.is_some()
    }

    /// The join message: a resume of the current session when `resume` and
    /// there is one, else a fresh join.
    pub fn join_message(&self, resume: bool) -> Result<ClientMessage, RequestError> {
        let request = &self.request;
        let resume = match (&self.token, resume) {
            (Some(token), true) => Some(Resume { token: token.clone(), received: self.received }),
            _ => None,
        };
        Ok(ClientMessage::Join(Join {
            id: None,
            room: RoomName::new(request.room.clone()).map_err(|e| RequestError::Room(e.to_string()))?,
            name: DisplayName::new(request.name.clone()).map_err(|e| RequestError::Name(e.to_string()))?,
            token: request.token.clone(),
            media: MediaState::default(),
            role: request.role,
            resume,
        }))
    }

    /// What a join refused with `code` means, for a join that was a resume
    /// (`resumed`) or not.
    pub fn refusal(code: ErrorCode, resumed: bool) -> Refusal {
        match code {
            ErrorCode::ResumeFailed if resumed => Refusal::JoinAfresh,
            ErrorCode::Unauthorized | ErrorCode::TokenExpired | ErrorCode::Forbidden | ErrorCode::Replaced => {
                Refusal::Fatal
            }
            _ => Refusal::Retry,
        }
    }

    /// Takes in a welcome: a fresh one starts a new session.
    pub fn welcomed(&mut self, welcome: &Welcome) {
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
    pub fn received(&mut self, msg: &ServerMessage) {
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
    pub fn sending(&mut self, msg: &ClientMessage) {
        if let ClientMessage::Chat(chat) = msg {
            // A message sent again (the same client id) is the same message.
            self.unacked.retain(|c| c.client_id != chat.client_id);
            if self.unacked.len() >= UNACKED_CHATS {
                self.unacked.pop_front();
            }
            self.unacked.push_back(chat.clone());
        }
    }

    /// Whether new messages must wait: the resend of what the old
    /// connection may have swallowed goes first (the room stores chat in
    /// the order it arrives).
    pub fn resend_due(&self) -> bool {
        self.resend_due
    }

    /// Replayed events still to be read.
    pub fn replay_left(&self) -> u64 {
        self.replay_left
    }

    /// A replay that never completes (an event this client cannot read is
    /// not counted) must not hold back what it sends for good: the caller
    /// gives up on it after a ping interval, and the resend goes.
    pub fn give_up_replay(&mut self) {
        self.replay_left = 0;
    }

    /// The chat to resend on this connection, once: nothing until the
    /// replay after a resumed welcome has been read, then every message
    /// whose echo is still missing, in order.
    pub fn take_resend(&mut self) -> Option<Vec<ClientMessage>> {
        if !self.resend_due || self.replay_left > 0 {
            return None;
        }
        self.resend_due = false;
        Some(self.unacked.iter().cloned().map(ClientMessage::Chat).collect())
    }

    /// Whether enough events arrived since the last acknowledgement to send
    /// one now.
    pub fn ack_due(&self) -> bool {
        self.received - self.acked >= ACK_EVERY
    }

    /// A ping acknowledging every event read so far.
    pub fn ping(&mut self) -> ClientMessage {
        self.acked = self.received;
        ClientMessage::Ping(Ping { id: None, ack: Some(self.received) })
    }

    /// How often to ping (from the welcome).
    pub fn ping_every(&self) -> Duration {
        self.ping_every
    }

    /// The server's announced limits (from the welcome).
    pub fn limits(&self) -> &LimitsInfo {
        &self.limits
    }
}
