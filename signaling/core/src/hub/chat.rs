//! Chat: a message is checked, stored once (a resend after a resume is
//! recognised by its client id) and sent to the whole room, its sender
//! included; history is served in pages.

use super::fanout::Audience;
use super::{ConnId, Hub, Output};
use crate::Now;
use crate::room::PendingChat;
use crate::seat::Seat;
use switchboard_protocol::{
    ChatHistoryPage, ChatHistoryRequest, ChatMessage, ChatSend, ErrorCode, RoomName, ServerMessage, TypingNotice,
};

/// Chat messages of one room numbered and waiting to be stored durably;
/// past this, new ones are refused (`unavailable`) without a number.
pub const MAX_PENDING_CHAT: usize = 64;

/// The member `peer` of `room` may send `client_id` again (it was not taken).
fn member_forget(
    room: &mut crate::room::Room,
    peer: &switchboard_protocol::PeerId,
    client_id: &switchboard_protocol::ClientMsgId,
) {
    if let Some(member) = room.get_mut(peer) {
        member.chat_ids.forget(client_id);
    }
}

impl Hub {
    /// A chat message from the member in `seat`.
    pub(super) fn chat(&mut self, conn: ConnId, seat: &Seat, send: ChatSend, now: Now) {
        let ChatSend { id, client_id, text } = send;
        let max = self.config.limits.max_chat_chars;
        if let Err(why) = switchboard_protocol::text::check_chat(&text) {
            return self.error(conn, id, ErrorCode::InvalidMessage, why);
        }
        if text.chars().count() > max {
            let message = format!("chat text is longer than {max} characters");
            return self.error(conn, id, ErrorCode::ChatTooLong, message);
        }
        let Some(room) = self.rooms.get_mut(&seat.room) else { return };
        let Some(member) = room.get_mut(&seat.peer) else { return };
        if !member.chat_ids.first_time(&client_id) {
            // A resend of a message already stored: its echo is in this
            // client's event stream, delivered or replayed.
            return;
        }
        let name = member.info.name.clone();
        let was_typing = member.typing_until.take().is_some();
        let from = seat.peer.clone();
        if was_typing {
            let notice = ServerMessage::Typing(TypingNotice { from: seat.peer.clone(), active: false });
            self.emit(&seat.room, Audience::AllBut(&seat.peer), notice, now);
        }
        let Some(room) = self.rooms.get_mut(&seat.room) else { return };
        if self.config.durable_chat {
            if room.pending_chat.len() >= MAX_PENDING_CHAT {
                // The store is not keeping up (Redis away): refused before it
                // is numbered, so no `seq` is used.
                member_forget(room, &seat.peer, &client_id);
                let why = "chat cannot be stored right now: send it again later";
                return self.error(conn, id, ErrorCode::Unavailable, why);
            }
            // Numbered now, echoed once stored (see `chat_stored`).
            let pending = room.pending_chat.back().map(|p| (p.message.seq, p.message.ts));
            let (last_seq, last_ts) = pending.unwrap_or((room.chat.last_seq(), room.chat.last_ts()));
            let (seq, ts) = (last_seq + 1, last_ts.max(now.unix_ms));
            let message = ChatMessage { seq, ts, from, name, client_id, text };
            room.pending_chat.push_back(PendingChat { message: message.clone(), conn, id });
            self.out.push_back(Output::StoreChat { room: seat.room.clone(), message });
            return;
        }
        let message =
            room.chat.append(now.unix_ms, |seq, ts| ChatMessage { seq, ts, from, name, client_id, text }).clone();
        self.emit(&seat.room, Audience::All, ServerMessage::Chat(message), now);
    }

    /// The shell stored (`stored`) the chat message `seq` of `room` (see
    /// [`Output::StoreChat`]): it joins the history and is echoed to the
    /// room. `false` means the shell gave up because this node no longer
    /// holds the room (it is being evicted): no pending message is echoed,
    /// their senders get `unavailable`, and will find them in the history
    /// of the room's next owner if they were stored after all.
    pub fn chat_stored(&mut self, room_name: &RoomName, seq: u64, stored: bool, now: Now) {
        let Some(room) = self.rooms.get_mut(room_name) else { return };
        if room.pending_chat.front().is_none_or(|p| p.message.seq != seq) {
            // An answer for a message already given up.
            return;
        }
        if stored {
            let Some(pending) = room.pending_chat.pop_front() else { return };
            let message = room.chat.push(pending.message).clone();
            self.emit(room_name, Audience::All, ServerMessage::Chat(message), now);
            return;
        }
        let failed: Vec<PendingChat> = room.pending_chat.drain(..).collect();
        for pending in failed {
            let Some(member) = room.get_mut(&pending.message.from) else { continue };
            member.chat_ids.forget(&pending.message.client_id);
            if member.online && member.conn == pending.conn {
                let why = "the chat message could not be stored: send it again";
                self.out.push_back(Output::Send {
                    to: super::Recipients::One(pending.conn),
                    msg: ServerMessage::Error(switchboard_protocol::ErrorMessage::recoverable(
                        pending.id,
                        ErrorCode::Unavailable,
                        why,
                    )),
                    json: None,
                });
            }
        }
    }

    /// A page of the room's chat history, to the member that asked.
    pub(super) fn chat_history(&mut self, conn: ConnId, seat: &Seat, request: ChatHistoryRequest) {
        let ChatHistoryRequest { id, before, limit } = request;
        let Some(room) = self.rooms.get(&seat.room) else { return };
        let page = self.config.limits.chat_history_page;
        let limit = limit.map_or(page, |l| usize::try_from(l).unwrap_or(page).min(page));
        let (messages, has_more) = room.chat.page(before, limit);
        // Memory forgot older messages than it can give, and the durable
        // store keeps more: the page comes from there.
        let forgot = room.chat.first_seq().map_or(room.chat.last_seq() > 0, |first| first > 1);
        let below = before.unwrap_or(u64::MAX);
        let wants_older = messages.len() < limit && below > 1;
        if self.config.durable_chat && forgot && wants_older {
            let fallback = ChatHistoryPage { id, messages, has_more };
            let room = seat.room.clone();
            self.out.push_back(Output::LoadHistory { conn, room, before, limit, fallback });
            return;
        }
        self.send(conn, ServerMessage::ChatHistory(ChatHistoryPage { id, messages, has_more }));
    }
}
