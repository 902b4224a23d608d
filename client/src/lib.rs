//! The Switchboard signaling client, shared by the headless peer and the
//! SFU (and mirrored by the browser client's `web/js/signaling.js`).
//!
//! [`Session`] holds the rules with no IO: resume token and event count,
//! acknowledgements, chat resends, backoff, what a refusal means.
//! [`Signaling`] is the one task that owns the WebSocket and drives it.

mod connection;
mod pacer;
pub mod session;

pub use connection::{ATTEMPT_TIMEOUT, EVENT_QUEUE, SEND_QUEUE, SignalSender, SignalState, Signaling};
pub use pacer::{Pacer, RATE_MARGIN};
pub use session::{ACK_EVERY, JoinRequest, ReconnectPolicy, Refusal, RequestError, Session, UNACKED_CHATS};
