//! The hub: every connection's room membership and every room, owned by one
//! state machine. See the crate docs for the loop that drives it.
//!
//! One `impl Hub` per concern, each in the file named after it:
//!
//! | file            | what it decides                                          |
//! |-----------------|----------------------------------------------------------|
//! | `mod.rs`        | the state, the connection states, polling                |
//! | `api.rs`        | what the server API reads: rooms, members                |
//! | `output.rs`     | what the shell is told to do ([`Output`])                |
//! | `inputs.rs`     | the inputs, and where each message goes                  |
//! | `membership.rs` | who gets in (join, replacing an identity) and leaving    |
//! | `sessions.rs`   | seats held for a resume, resumes, resume tokens          |
//! | `fanout.rs`     | events to a room's members, replies, errors              |
//! | `relay.rs`      | offers, answers and candidates between two members       |
//! | `presence.rs`   | typing, read receipts, media state                       |
//! | `chat.rs`       | chat messages and history pages                          |
//! | `handover.rs`   | moving a room to another hub, as data                    |
//! | `sfu.rs`        | asking the shell for an SFU, and again when none comes   |
//! | `invariants.rs` | what must hold between all of the above                  |

mod api;
mod chat;
mod fanout;
mod handover;
mod inputs;
mod invariants;
mod membership;
mod output;
mod presence;
mod relay;
mod sessions;
mod sfu;

pub use api::{MemberView, RoomDetail, RoomSummary};
pub use chat::MAX_PENDING_CHAT;
pub use invariants::InvariantViolation;
pub use output::{CloseReason, Output, Recipients};

use crate::auth::TokenVerifier;
use crate::limits::Limits;
use crate::replaced::ReplacedTokens;
use crate::resume_token::ResumeToken;
use crate::room::{Member, Room};
use crate::seat::Seat;
use crate::timers::Timers;
use crate::turn::TurnConfig;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;
use switchboard_protocol::{GoingAway, IceServer, PeerId, RoomMode, RoomName};

/// A connection, numbered by the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Randomness for peer ids and resume tokens, supplied by the shell (the OS
/// generator in the server, a seeded one in tests).
pub type Entropy = Box<dyn FnMut() -> u128 + Send>;

/// Everything the hub needs to know at start.
#[derive(Debug, Default)]
pub struct HubConfig {
    /// Limits.
    pub limits: Limits,
    /// Join tokens are required when set.
    pub verifier: Option<TokenVerifier>,
    /// ICE servers without credentials (STUN) handed out in the welcome.
    pub ice_servers: Vec<IceServer>,
    /// TURN: credentials minted per participant at join and on request.
    pub turn: Option<TurnConfig>,
    /// Mode of rooms created without a `mode` claim.
    pub room_mode: RoomMode,
    /// Checks the tokens of the server's own SFU (a secret of the process),
    /// so that SFU rooms work without an auth secret.
    pub sfu_verifier: Option<TokenVerifier>,
    /// Chat is stored durably by the shell before it is echoed
    /// ([`Output::StoreChat`]); off, the hub's memory is the store.
    pub durable_chat: bool,
    /// Rooms held against `limits.max_rooms`, shared with the server's
    /// other hub shards.
    pub room_quota: crate::quota::RoomQuota,
}

/// Where a connection is.
#[derive(Debug, Clone)]
enum ConnState {
    /// Open, not in a room (yet, or again after a refused resume).
    Lobby,
    /// Speaks for the member in this seat.
    Joined(Seat),
    /// Asked to resume the session in this seat, whose current connection
    /// is being probed.
    Resuming(Seat),
}

/// The signaling state machine.
///
/// Every map whose iteration can reach an output (who is closed first at
/// shutdown, which invariant is reported) is ordered, so that two hubs fed
/// the same inputs and the same entropy produce the same outputs.
pub struct Hub {
    config: HubConfig,
    conns: BTreeMap<ConnId, ConnState>,
    rooms: BTreeMap<RoomName, Room>,
    timers: Timers,
    out: VecDeque<Output>,
    entropy: Entropy,
    /// Members of all rooms, kept so that metrics never walk the rooms.
    peers: usize,
    /// Every member's session, by its current (and, just after a resume,
    /// previous) resume token. Lookups only, never iterated.
    tokens: HashMap<ResumeToken, Seat>,
    /// Seats held for a resume, with the deadline after which each is given
    /// up (a stale `ResumeDeadline` timer of a seat that resumed and dropped
    /// again finds a later deadline here and does nothing).
    away: BTreeMap<Seat, Instant>,
    /// Set by [`Hub::shutdown`]: a connection that opens afterwards (its
    /// upgrade was in flight) is told so and closed at once.
    going_away: Option<GoingAway>,
    /// Tokens of sessions replaced less than a resume grace ago.
    replaced: ReplacedTokens,
    /// Connections whose join is not answered yet (see
    /// [`Output::JoinAnswered`]): at most one entry per connection.
    joins_owed: std::collections::BTreeSet<ConnId>,
    /// Chat history read back from durable storage for rooms about to be
    /// made here (a new owner), taken when the room is made; oldest first.
    seeds: VecDeque<(RoomName, Vec<switchboard_protocol::ChatMessage>)>,
    /// Rooms handed to another node lately, until when they are
    /// remembered (see [`Hub::hand_over`]).
    moved: BTreeMap<RoomName, Instant>,
}

/// Rooms whose chat seed may wait for the room's first join; past this the
/// oldest seed is dropped.
pub const MAX_SEEDS: usize = 1024;

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("conns", &self.conns.len()).field("rooms", &self.rooms.len()).finish()
    }
}

impl Hub {
    /// A hub with no connections.
    pub fn new(config: HubConfig, entropy: Entropy) -> Self {
        Self {
            config,
            conns: BTreeMap::new(),
            rooms: BTreeMap::new(),
            timers: Timers::default(),
            out: VecDeque::new(),
            entropy,
            peers: 0,
            tokens: HashMap::new(),
            away: BTreeMap::new(),
            going_away: None,
            replaced: ReplacedTokens::default(),
            joins_owed: std::collections::BTreeSet::new(),
            seeds: VecDeque::new(),
            moved: BTreeMap::new(),
        }
    }

    /// The chat a room had before this hub owned it (read back from
    /// durable storage): the room, when its first member joins here,
    /// starts with this history and continues its `seq`. Ignored for a
    /// room that exists here already.
    pub fn seed_chat(&mut self, room: RoomName, messages: Vec<switchboard_protocol::ChatMessage>) {
        if self.rooms.contains_key(&room) {
            return;
        }
        // The room is coming back here (it moved away and back).
        self.moved.remove(&room);
        self.seeds.retain(|(name, _)| *name != room);
        if self.seeds.len() >= MAX_SEEDS {
            self.seeds.pop_front();
        }
        self.seeds.push_back((room, messages));
    }

    /// Takes the seed of `room`, if one waits.
    fn take_seed(&mut self, room: &RoomName) -> Vec<switchboard_protocol::ChatMessage> {
        match self.seeds.iter().position(|(name, _)| name == room) {
            Some(i) => self.seeds.remove(i).map(|(_, messages)| messages).unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// Says, for every join still owed an answer, whether it is settled:
    /// joined, or back outside a room (or closed). A resume waiting on a
    /// probe stays owed. Called at the end of every input.
    fn settle_joins(&mut self) {
        if self.joins_owed.is_empty() {
            return;
        }
        let owed = std::mem::take(&mut self.joins_owed);
        for conn in owed {
            let joined = match self.conns.get(&conn) {
                Some(ConnState::Resuming(_)) => {
                    self.joins_owed.insert(conn);
                    continue;
                }
                Some(ConnState::Joined(_)) => true,
                Some(ConnState::Lobby) | None => false,
            };
            self.out.push_back(Output::JoinAnswered { conn, joined });
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }

    /// Open connections (joined or not).
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Rooms with at least one member.
    pub fn rooms(&self) -> usize {
        self.rooms.len()
    }

    /// Participants in all rooms.
    pub fn peers(&self) -> usize {
        self.peers
    }

    /// The next output, if any. Call until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Hub::timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Participants whose connection dropped and whose seat is held.
    pub fn away(&self) -> usize {
        self.away.len()
    }

    /// Bytes of events kept for resumes, over every member (walks every
    /// room: for tests and occasional inspection, not per message).
    pub fn replay_bytes(&self) -> usize {
        self.rooms.values().flat_map(Room::members).map(|m| m.events.bytes()).sum()
    }

    /// Bytes of chat history kept, over every room (walks every room).
    pub fn chat_bytes(&self) -> usize {
        self.rooms.values().map(|r| r.chat.bytes()).sum()
    }

    /// The member in `seat`, if it is still there.
    fn member_mut(&mut self, seat: &Seat) -> Option<&mut Member> {
        self.rooms.get_mut(&seat.room).and_then(|r| r.get_mut(&seat.peer))
    }

    /// The member `peer` of `room`, if it is still there.
    fn member(&self, room: &RoomName, peer: &PeerId) -> Option<&Member> {
        self.rooms.get(room).and_then(|r| r.get(peer))
    }
}
