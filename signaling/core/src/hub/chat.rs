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

    /// The shell stored (`stored`) or could not store the chat message
    /// `seq` of `room` (see [`Output::StoreChat`]). Stored: it joins the
    /// history and is echoed to the room. Not stored: neither are the ones
    /// numbered after it (the store keeps order, so they cannot have been
    /// stored either); their senders get `unavailable` and may send them
    /// again, and `seq` goes on from the last stored message, so no number
    /// the room saw is skipped or used twice.
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
        self.send(conn, ServerMessage::ChatHistory(ChatHistoryPage { id, messages, has_more }));
    }
}
