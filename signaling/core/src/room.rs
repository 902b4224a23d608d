//! One room: its members and its chat log.

use crate::chat::ChatLog;
use crate::events::{Budget, ChatDedup, EventLog};
use crate::hub::ConnId;
use crate::resume_token::ResumeToken;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;
use switchboard_protocol::RequestId;
use switchboard_protocol::{PeerId, PeerInfo, Role, RoomMode};

/// A resume waiting for the member's old connection to prove itself dead.
#[derive(Debug, Clone)]
pub struct PendingResume {
    /// The connection that asked to resume.
    pub conn: ConnId,
    /// Its join's request id.
    pub id: Option<RequestId>,
    /// Events it has received.
    pub received: u64,
    /// The resume token it presented: the one the client is known to hold,
    /// so the one that must keep working until it reads the next welcome.
    pub token: ResumeToken,
}

/// A participant of a room.
#[derive(Debug, Clone)]
pub struct Member {
    /// The connection that speaks for it (the last one, while it is away).
    pub conn: ConnId,
    /// False while its connection is gone and its seat is held for a resume.
    pub online: bool,
    /// Its numbered events, kept until acknowledged.
    pub events: EventLog,
    /// Chat client ids it used lately.
    pub chat_ids: ChatDedup,
    /// The token that resumes it (a new one in every welcome).
    pub resume_token: ResumeToken,
    /// The token before the last resume, still honoured until the client
    /// speaks on its new connection: a drop can land after the server sent
    /// the resumed welcome and before the client read its new token.
    pub previous_token: Option<ResumeToken>,
    /// A resume waiting on a check of its current connection.
    pub pending: Option<PendingResume>,
    /// What the others see.
    pub info: PeerInfo,
    /// When its typing indicator expires, while it is typing.
    pub typing_until: Option<Instant>,
    /// Whether a `TypingExpiry` timer is pending for it (at most one is).
    pub typing_timer_armed: bool,
    /// While it is away: relays each sender has left waiting for it
    /// (bounded by `held_relays_per_sender` per sender; every entry counts
    /// at least one kept event, so there are at most `replay_buffer`
    /// entries, senders who left since included). Cleared when it comes
    /// back. Lookups only, never iterated.
    pub held_relays: HashMap<PeerId, usize>,
    /// Its seat is held because its room moved to this node (a drain):
    /// it is offline, but nobody was told it is reconnecting, since every
    /// member went at once and comes back within moments.
    pub quiet_hold: bool,
    /// When it joined (Unix ms; a resume keeps it).
    pub joined_unix_ms: u64,
}

/// Members in join order plus the chat log. Created on first join, removed
/// by the hub when the last member leaves.
#[derive(Debug)]
pub struct Room {
    /// Members by join order: every walk over them (who an event reaches
    /// first, who is listed first) is in join order, the same on every run.
    members: BTreeMap<u64, Member>,
    /// Each member's join order, by peer id (lookups only).
    order: HashMap<PeerId, u64>,
    next_order: u64,
    /// The room's chat.
    pub chat: ChatLog,
    /// Mesh or SFU, fixed at creation.
    pub mode: RoomMode,
    /// While an SFU was asked for and has not joined: when to ask again
    /// (SFU rooms only).
    pub sfu_asked_until: Option<Instant>,
    /// Chat numbered and handed to durable storage, not yet stored (with
    /// durable chat on): echoed, in order, once stored.
    pub pending_chat: std::collections::VecDeque<PendingChat>,
    /// When it was made (Unix ms; a move to another node keeps it).
    pub created_unix_ms: u64,
}

/// A chat message waiting to be stored durably.
#[derive(Debug, Clone)]
pub struct PendingChat {
    /// The message, numbered.
    pub message: switchboard_protocol::ChatMessage,
    /// The connection it came from.
    pub conn: ConnId,
    /// Its request id, for an error.
    pub id: Option<RequestId>,
}

impl Room {
    /// An empty room keeping `chat_history` chat messages, at most
    /// `chat_bytes` of them.
    pub fn new(chat_history: usize, chat_bytes: usize, mode: RoomMode) -> Self {
        let chat = ChatLog::new(chat_history, chat_bytes);
        Self {
            members: BTreeMap::new(),
            order: HashMap::new(),
            next_order: 0,
            chat,
            mode,
            sfu_asked_until: None,
            pending_chat: std::collections::VecDeque::new(),
            created_unix_ms: 0,
        }
    }

    /// The room's forwarding unit, if it has joined.
    pub fn sfu(&self) -> Option<&Member> {
        self.members().find(|m| m.info.role == Role::Sfu)
    }

    /// Members other than the SFU.
    pub fn participants(&self) -> usize {
        self.members().filter(|m| m.info.role == Role::Participant).count()
    }

    /// True when an SFU room has participants and no SFU, and none was asked
    /// for yet (or the last ask has timed out): the shell should start one.
    pub fn wants_sfu(&self) -> bool {
        self.mode == RoomMode::Sfu && self.sfu_asked_until.is_none() && self.participants() > 0 && self.sfu().is_none()
    }

    /// Notes that an SFU is asked for, to be asked again at `again_at`, if
    /// the room [wants one](Self::wants_sfu); true when it did.
    pub fn ask_for_sfu(&mut self, again_at: Instant) -> bool {
        let wanted = self.wants_sfu();
        if wanted {
            self.sfu_asked_until = Some(again_at);
        }
        wanted
    }

    /// True when nobody is left.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// A member by id.
    pub fn get(&self, peer: &PeerId) -> Option<&Member> {
        self.order.get(peer).and_then(|order| self.members.get(order))
    }

    /// A member by id, mutably.
    pub fn get_mut(&mut self, peer: &PeerId) -> Option<&mut Member> {
        self.order.get(peer).and_then(|order| self.members.get_mut(order))
    }

    /// Adds a member, last in join order, keeping up to `replay` of events;
    /// it joins at `now_unix_ms`.
    pub fn insert(
        &mut self,
        conn: ConnId,
        info: PeerInfo,
        resume_token: ResumeToken,
        replay: Budget,
        now_unix_ms: u64,
    ) {
        let join_order = self.next_order;
        self.next_order += 1;
        let member = Member {
            conn,
            online: true,
            events: EventLog::new(replay),
            chat_ids: ChatDedup::default(),
            resume_token,
            previous_token: None,
            pending: None,
            info,
            typing_until: None,
            typing_timer_armed: false,
            held_relays: HashMap::new(),
            quiet_hold: false,
            joined_unix_ms: now_unix_ms,
        };
        self.order.insert(member.info.id.clone(), join_order);
        self.members.insert(join_order, member);
    }

    /// The join order the next member gets.
    pub fn next_order(&self) -> u64 {
        self.next_order
    }

    /// Every member with its join order, in join order.
    pub fn members_in_order(&self) -> impl Iterator<Item = (u64, &Member)> {
        self.members.iter().map(|(order, m)| (*order, m))
    }

    /// Puts back a member at its join order (an imported room); false when
    /// the order or the peer id is taken, or the order is not below
    /// `next_order`.
    pub fn restore_member(&mut self, order: u64, member: Member) -> bool {
        if order >= self.next_order || self.members.contains_key(&order) || self.order.contains_key(&member.info.id) {
            return false;
        }
        self.order.insert(member.info.id.clone(), order);
        self.members.insert(order, member);
        true
    }

    /// Sets the join order the next member gets (an imported room).
    pub fn set_next_order(&mut self, next: u64) {
        self.next_order = next;
    }

    /// Removes a member.
    pub fn remove(&mut self, peer: &PeerId) -> Option<Member> {
        let order = self.order.remove(peer)?;
        self.members.remove(&order)
    }

    /// Every member but `except`, in join order.
    pub fn peers_except(&self, except: &PeerId) -> Vec<PeerInfo> {
        self.members().filter(|m| &m.info.id != except).map(|m| m.info.clone()).collect()
    }

    /// The member with this verified identity and role, if any (a
    /// participant can never replace the SFU, whatever its token's `sub`).
    pub fn find_identity(&self, identity: &str, role: Role) -> Option<PeerId> {
        self.members()
            .find(|m| m.info.role == role && m.info.identity.as_deref() == Some(identity))
            .map(|m| m.info.id.clone())
    }

    /// Every member, in join order.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// Every member, mutably, in join order.
    pub fn members_mut(&mut self) -> impl Iterator<Item = &mut Member> {
        self.members.values_mut()
    }
}
