//! Every bound of the service, named, with what happens on overflow.

use std::time::Duration;
use switchboard_protocol::LimitsInfo;

/// Limits, configurable; the defaults are safe for a public server.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest text frame, in bytes. A larger frame gets a
    /// `message_too_large` error and is dropped; the connection survives.
    pub max_message_bytes: usize,
    /// Longest chat text, in characters; longer gets `chat_too_long`.
    pub max_chat_chars: usize,
    /// Sustained messages per second per connection. Beyond it (and the
    /// burst) each message is dropped with a `rate_limited` error.
    pub messages_per_second: u32,
    /// Capacity of the token bucket: messages that may arrive at once after
    /// a quiet period.
    pub message_burst: u32,
    /// Dropped messages tolerated before the connection is closed with
    /// `flood`; forgiven at a tenth of `messages_per_second` per second.
    pub flood_strikes: u32,
    /// Most participants in one room; one more gets `room_full`.
    pub max_peers_per_room: usize,
    /// Most rooms on the server; a join that would create one more gets
    /// `too_many_rooms`.
    pub max_rooms: usize,
    /// Most open WebSocket connections; beyond it the HTTP upgrade is
    /// answered with 503 and a `Retry-After`.
    pub max_connections: usize,
    /// New WebSocket connections admitted per second (0: no limit); beyond
    /// it (and the burst) the upgrade is answered with 503 and
    /// `Retry-After: 1`, so that a reconnect storm is spread out.
    pub admissions_per_second: u32,
    /// New connections admitted at once after a quiet period.
    pub admission_burst: u32,
    /// New WebSocket connections admitted per second from one source
    /// address (0: no per-source limit); beyond it (and the burst) that
    /// source gets 503 with `Retry-After: 1` while others still get in.
    pub admissions_per_source_per_second: u32,
    /// New connections one source may open at once after a quiet period.
    pub admission_per_source_burst: u32,
    /// Connections still in HTTP (not upgraded: half-sent requests, idle
    /// keep-alives). One more is closed at once, before it is read.
    pub max_http_connections: usize,
    /// Connections in HTTP from one source address (trusted proxies
    /// exempt); one more is closed at once.
    pub http_connections_per_source: usize,
    /// A request whose header has not fully arrived within this is closed
    /// (slowloris).
    pub header_read_timeout: Duration,
    /// Messages queued for one connection. A client that lets its queue fill
    /// is disconnected as a `slow_consumer`; nobody else waits for it.
    pub outbound_queue: usize,
    /// Bytes of frames queued for one connection, the same rule in the unit
    /// that runs out: a queue over it makes the client a `slow_consumer`.
    /// One frame is always accepted into an empty queue, so a welcome with a
    /// long chat page still goes out.
    pub outbound_queue_bytes: usize,
    /// A connection that has not joined after this long is closed with
    /// `join_timeout`.
    pub join_timeout: Duration,
    /// How often clients are told to send at least a `ping`.
    pub ping_interval: Duration,
    /// A connection silent for this long is closed with `ping_timeout`.
    pub ping_timeout: Duration,
    /// Chat messages a room keeps; the oldest is forgotten beyond it.
    pub chat_history: usize,
    /// Bytes of chat a room keeps (text, name and ids of each message); the
    /// oldest messages are forgotten beyond it, the newest is always kept.
    pub chat_history_bytes: usize,
    /// Most messages in the welcome's chat and in one `chat_history` page.
    pub chat_history_page: usize,
    /// A typing indicator not renewed within this clears by itself.
    pub typing_ttl: Duration,
    /// How long the seat of a participant whose connection dropped is held
    /// for a resume; the others see it as `reconnecting`. After it, the
    /// participant leaves with `timeout`. Zero: no resume, a drop is a leave.
    pub resume_grace: Duration,
    /// Unacknowledged events kept per participant for a resume. While it is
    /// connected the oldest are forgotten beyond this (a resume from before
    /// them fails); while it is away, one more ends its session as a
    /// `slow_consumer`.
    pub replay_buffer: usize,
    /// Bytes of unacknowledged events kept per participant (each counted as
    /// its JSON size; a broadcast is shared, so this overstates memory).
    /// The same rule as `replay_buffer`: while connected the oldest are
    /// forgotten, while away one more ends the seat as a `slow_consumer`.
    pub replay_buffer_bytes: usize,
    /// Relays (offer, answer, candidate, end of candidates) one sender may
    /// leave waiting for one participant that is away. Beyond it the sender
    /// gets `rate_limited` for that relay and the away participant keeps its
    /// seat: one peer cannot push another out of its room while it
    /// reconnects. (Presence events for an away participant are coalesced
    /// instead: only the latest of each kind per peer is kept.)
    pub held_relays_per_sender: usize,
    /// How long an SFU room waits for the SFU it asked for
    /// ([`crate::Output::SfuWanted`]). When none has joined by then and the
    /// room still has participants, it asks again, and so on at this
    /// interval until an SFU joins or the room empties: a launch that failed
    /// (refused by admission during a reconnect storm, say) does not leave
    /// the room without an SFU for good. (The server's launcher skips a room
    /// whose SFU task is still on its way.) Zero: ask once, never again.
    pub sfu_launch_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024,
            max_chat_chars: 4000,
            messages_per_second: 50,
            message_burst: 100,
            flood_strikes: 100,
            max_peers_per_room: 32,
            max_rooms: 10_000,
            max_connections: 10_000,
            admissions_per_second: 500,
            admission_burst: 500,
            admissions_per_source_per_second: 50,
            admission_per_source_burst: 100,
            max_http_connections: 1024,
            http_connections_per_source: 64,
            header_read_timeout: Duration::from_secs(10),
            outbound_queue: 1024,
            outbound_queue_bytes: 1024 * 1024,
            join_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(15),
            ping_timeout: Duration::from_secs(45),
            chat_history: 500,
            chat_history_bytes: 512 * 1024,
            chat_history_page: 50,
            typing_ttl: Duration::from_secs(5),
            resume_grace: Duration::from_secs(20),
            replay_buffer: 1024,
            replay_buffer_bytes: 1024 * 1024,
            held_relays_per_sender: 64,
            sfu_launch_timeout: Duration::from_secs(5),
        }
    }
}

fn clamp_u32(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// Frames above `max_message_bytes` times this are not even buffered: the
/// connection is closed with `message_too_large` (code 1009).
pub const HARD_LIMIT_FACTOR: usize = 4;

impl Limits {
    /// The size beyond which a frame closes the connection.
    pub fn hard_max_message_bytes(&self) -> usize {
        self.max_message_bytes.saturating_mul(HARD_LIMIT_FACTOR)
    }

    /// The part clients need to know, for the welcome message.
    pub fn info(&self) -> LimitsInfo {
        LimitsInfo {
            max_message_bytes: clamp_u32(self.max_message_bytes),
            max_chat_chars: clamp_u32(self.max_chat_chars),
            messages_per_second: self.messages_per_second,
            message_burst: self.message_burst,
            max_peers_per_room: clamp_u32(self.max_peers_per_room),
            chat_history_page: clamp_u32(self.chat_history_page),
            typing_ttl_ms: u64::try_from(self.typing_ttl.as_millis()).unwrap_or(u64::MAX),
        }
    }
}
