//! The signaling core: every room rule, with no IO and no clock of its own.
//!
//! [`Hub`] is a state machine in the style of quinn-proto and str0m. The
//! async shell owns it and, for every event, follows one loop:
//!
//! 1. feed an input: [`Hub::open`], [`Hub::message`], [`Hub::disconnect`],
//!    [`Hub::alive`], [`Hub::timeout`] or [`Hub::shutdown`], each with the
//!    current [`Now`];
//! 2. drain [`Hub::poll_output`] until it returns `None`, sending each
//!    [`Output`] (a message to one or many connections, or a close);
//! 3. sleep until [`Hub::poll_timeout`] or the next input, whichever is first.
//!
//! Because time and randomness are inputs, tests drive rooms through
//! thousands of steps in microseconds, with no sockets and no sleeping.
//! Per-connection checks that need no shared state (frame size, rate limit)
//! live in the shell, using [`RateLimiter`] and the same [`Limits`].
//!
//! Where things are: the hub is split by concern, one file each (the map
//! is in `src/hub/mod.rs`); the rest are the pieces it is built from: `room` (members
//! in join order, chat), `seat` (a member's room and peer id, which every
//! timer and token about a member points at), `resume_token`, `events`
//! (each member's numbered stream), `chat`, `timers`, `replaced`, and the
//! shell's helpers `auth`, `turn`, `rate` and `limits`.

mod auth;
mod chat;
mod events;
mod hub;
mod limits;
mod quota;
mod rate;
mod replaced;
mod resume_token;
mod room;
mod seat;
pub mod snapshot;
mod timers;
mod turn;

pub use auth::{Claims, ClaimsError, MAX_IDENTITY_BYTES, TokenError, TokenVerifier, check_claims, mint_token};
pub use chat::ChatLog;
pub use events::{Budget, CHAT_DEDUP, ChatDedup, EventLog, Overflow};
pub use hub::{
    CloseReason, ConnId, Entropy, Hub, HubConfig, InvariantViolation, MAX_PENDING_CHAT, MemberView, Output, Recipients,
    RoomDetail, RoomSummary,
};
pub use limits::Limits;
pub use quota::RoomQuota;
pub use rate::{RateLimiter, Verdict};
pub use replaced::MAX_REPLACED_TOKENS;
pub use turn::{
    CredentialProblem, DEFAULT_TURN_TTL_S, MAX_TURN_SECRETS, MAX_TURN_TTL_S, MIN_TURN_SECRET_BYTES, TurnConfig,
    TurnConfigError, TurnCredential, password,
};

use std::time::Instant;

/// The current time, given to the core by its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, for deadlines.
    pub mono: Instant,
    /// Wall-clock Unix time in milliseconds, for chat timestamps and token
    /// expiry.
    pub unix_ms: u64,
}
