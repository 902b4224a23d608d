//! One room: its members and its chat log.

use crate::chat::ChatLog;
use crate::events::{Budget, ChatDedup, EventLog};
use crate::hub::ConnId;
use std::collections::HashMap;
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
    pub token: String,
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
    pub resume_token: String,
    /// The token before the last resume, still honoured until the client
    /// speaks on its new connection: a drop can land after the server sent
    /// the resumed welcome and before the client read its new token.
    pub previous_token: Option<String>,
    /// A resume waiting on a check of its current connection.
    pub pending: Option<PendingResume>,
    /// What the others see.
    pub info: PeerInfo,
    /// Position in join order, for listing peers.
    join_order: u64,
    /// When its typing indicator expires, while it is typing.
    pub typing_until: Option<Instant>,
    /// Whether a `TypingExpiry` timer is pending for it (at most one is).
    pub typing_timer_armed: bool,
    /// While it is away: relays each sender has left waiting for it
    /// (bounded by `held_relays_per_sender` per sender; every entry counts
    /// at least one kept event, so there are at most `replay_buffer`
    /// entries, senders who left since included). Cleared when it comes
    /// back.
    pub held_relays: HashMap<PeerId, usize>,
}

/// Members in join order plus the chat log. Created on first join, removed
/// by the hub when the last member leaves.
#[derive(Debug)]
pub struct Room {
    members: HashMap<PeerId, Member>,
    next_order: u64,
    /// The room's chat.
    pub chat: ChatLog,
    /// Mesh or SFU, fixed at creation.
    pub mode: RoomMode,
    /// An SFU was asked for and has not joined yet (SFU rooms only).
    pub sfu_requested: bool,
}

impl Room {
    /// An empty room keeping `chat_history` chat messages, at most
    /// `chat_bytes` of them.
    pub fn new(chat_history: usize, chat_bytes: usize, mode: RoomMode) -> Self {
        let chat = ChatLog::new(chat_history, chat_bytes);
        Self { members: HashMap::new(), next_order: 0, chat, mode, sfu_requested: false }
    }

    /// The room's forwarding unit, if it has joined.
    pub fn sfu(&self) -> Option<&Member> {
        self.members.values().find(|m| m.info.role == Role::Sfu)
    }

    /// Members other than the SFU.
    pub fn participants(&self) -> usize {
        self.members.values().filter(|m| m.info.role == Role::Participant).count()
    }

    /// True when an SFU room has participants and no SFU, and none was asked
    /// for yet: the shell should start one.
    pub fn wants_sfu(&self) -> bool {
        self.mode == RoomMode::Sfu && !self.sfu_requested && self.participants() > 0 && self.sfu().is_none()
    }

    /// True when nobody is left.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// A member by id.
    pub fn get(&self, peer: &PeerId) -> Option<&Member> {
        self.members.get(peer)
    }

    /// A member by id, mutably.
    pub fn get_mut(&mut self, peer: &PeerId) -> Option<&mut Member> {
        self.members.get_mut(peer)
    }

    /// Adds a member, last in join order, keeping up to `replay` of events.
    pub fn insert(&mut self, conn: ConnId, info: PeerInfo, resume_token: String, replay: Budget) {
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
            join_order,
            typing_until: None,
            typing_timer_armed: false,
            held_relays: HashMap::new(),
        };
        self.members.insert(member.info.id.clone(), member);
    }

    /// Removes a member.
    pub fn remove(&mut self, peer: &PeerId) -> Option<Member> {
        self.members.remove(peer)
    }

    /// Every member but `except`, in join order.
    pub fn peers_except(&self, except: &PeerId) -> Vec<PeerInfo> {
        let mut members: Vec<&Member> = self.members.values().filter(|m| &m.info.id != except).collect();
        members.sort_by_key(|m| m.join_order);
        members.into_iter().map(|m| m.info.clone()).collect()
    }

    /// The member with this verified identity and role, if any (a
    /// participant can never replace the SFU, whatever its token's `sub`).
    pub fn find_identity(&self, identity: &str, role: Role) -> Option<PeerId> {
        self.members
            .values()
            .find(|m| m.info.role == role && m.info.identity.as_deref() == Some(identity))
            .map(|m| m.info.id.clone())
    }

    /// Every member, in no particular order.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// Every member, mutably, in no particular order.
    pub fn members_mut(&mut self) -> impl Iterator<Item = &mut Member> {
        self.members.values_mut()
    }
}
