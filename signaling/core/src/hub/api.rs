//! What the server API reads about rooms (issue 16, decision 0020): a page
//! of rooms in name order, and one room's participants. Queries only: they
//! change nothing and produce no output.

use super::Hub;
use switchboard_protocol::{PeerInfo, Role, RoomMode, RoomName};

/// One room, as a list of rooms shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSummary {
    /// Its name.
    pub name: RoomName,
    /// Mesh or SFU.
    pub mode: RoomMode,
    /// Members other than the SFU (those reconnecting included).
    pub participants: usize,
    /// When it was made (Unix ms).
    pub created_unix_ms: u64,
    /// The latest chat `seq` (0: no chat yet).
    pub chat_seq: u64,
}

/// One member of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// What the others see (`reconnecting` while its seat is held).
    pub info: PeerInfo,
    /// When it joined (Unix ms; a resume keeps it).
    pub joined_unix_ms: u64,
}

/// One room and its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomDetail {
    /// The room.
    pub summary: RoomSummary,
    /// Its members in join order, the SFU included (its `role` says so).
    pub members: Vec<MemberView>,
}

impl Hub {
    /// Up to `limit` rooms in name order, after `after` (a page's last
    /// name, for the next page).
    pub fn list_rooms(&self, after: Option<&RoomName>, limit: usize) -> Vec<RoomSummary> {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = after.map_or(Unbounded, Excluded);
        self.rooms.range((from, Unbounded)).take(limit).map(|(name, room)| summary(name, room)).collect()
    }

    /// One room, if it is here.
    pub fn room_detail(&self, name: &RoomName) -> Option<RoomDetail> {
        let room = self.rooms.get(name)?;
        let members =
            room.members().map(|m| MemberView { info: m.info.clone(), joined_unix_ms: m.joined_unix_ms }).collect();
        Some(RoomDetail { summary: summary(name, room), members })
    }
}

fn summary(name: &RoomName, room: &crate::room::Room) -> RoomSummary {
    RoomSummary {
        name: name.clone(),
        mode: room.mode,
        participants: room.members().filter(|m| m.info.role == Role::Participant).count(),
        created_unix_ms: room.created_unix_ms,
        chat_seq: room.chat.last_seq(),
    }
}
