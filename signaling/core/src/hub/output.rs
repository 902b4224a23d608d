//! What the hub tells its shell to do, drained with [`super::Hub::poll_output`].

use super::ConnId;
use switchboard_protocol::{ErrorCode, RoomName, ServerMessage};

/// Who a message goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    /// One connection.
    One(ConnId),
    /// Several connections (one serialization, many sends), in the room's
    /// join order (or, at shutdown, in connection order).
    Many(Vec<ConnId>),
}

impl Recipients {
    /// The connections.
    pub fn as_slice(&self) -> &[ConnId] {
        match self {
            Self::One(conn) => std::slice::from_ref(conn),
            Self::Many(conns) => conns,
        }
    }
}

/// Why the hub closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client asked to leave.
    Normal,
    /// After a fatal error, already sent as a message.
    Error(ErrorCode),
    /// The server is shutting down.
    GoingAway,
}

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send `msg` to every recipient.
    Send {
        /// Recipients.
        to: Recipients,
        /// The message.
        msg: ServerMessage,
        /// Its JSON text, when the hub already wrote it (room events: their
        /// size counts against the replay budgets), so the shell need not
        /// serialize it again; `None`: serialize `msg`.
        json: Option<String>,
    },
    /// Close the connection once what was sent before is flushed.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// An SFU room has participants and no SFU: start one for it. Repeated
    /// every [`crate::Limits::sfu_launch_timeout`] while the room still has
    /// participants and no SFU has joined (a launch can fail, or be refused
    /// during a reconnect storm).
    SfuWanted {
        /// The room.
        room: RoomName,
    },
    /// Someone asked to resume the session this connection serves: find out
    /// whether it is still alive (a half-open connection looks alive until
    /// the ping timeout). Answer with [`super::Hub::alive`] when the client
    /// proves it is there, or [`super::Hub::disconnect`] when it does not,
    /// in bounded time.
    Probe {
        /// The connection to check.
        conn: ConnId,
    },
    /// The join this connection sent is answered (its welcome or refusal
    /// is queued before this): `joined`, or still outside a room. Every
    /// join sent outside a room gets exactly one, after its answer; a
    /// resume waiting on a probe gets it when the probe is settled. The
    /// shell routes a connection by it (it holds the connection's later
    /// messages until then).
    JoinAnswered {
        /// The connection.
        conn: ConnId,
        /// Whether it is in a room now.
        joined: bool,
    },
    /// Store this chat message durably (in a cluster: the room's stream in
    /// Redis), then answer with [`super::Hub::chat_stored`]. It is echoed
    /// to the room only once stored: the echo is the acknowledgement.
    /// Messages of one room come in `seq` order and must be stored in it.
    StoreChat {
        /// The room.
        room: RoomName,
        /// The message, numbered.
        message: switchboard_protocol::ChatMessage,
    },
    /// A history page that memory cannot fill (the room forgot older
    /// messages, and durable storage may keep more): read it from durable
    /// storage and send it to `conn` as a `chat_history` reply, or send
    /// `fallback` (what memory holds) if that fails.
    LoadHistory {
        /// Who asked.
        conn: ConnId,
        /// The room.
        room: RoomName,
        /// Only messages below this `seq` (None: the newest).
        before: Option<u64>,
        /// Most messages.
        limit: usize,
        /// The page from memory, with the request's id.
        fallback: switchboard_protocol::ChatHistoryPage,
    },
    /// A room was created here (its first member joined). In a cluster the
    /// shell holds the room's lease from now on.
    RoomStarted {
        /// The room.
        room: RoomName,
    },
    /// A room is gone from here: its last member left, or the hub shut down.
    /// In a cluster the shell gives the room's lease back.
    RoomEnded {
        /// The room.
        room: RoomName,
    },
}
