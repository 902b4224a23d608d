//! Chat: a message is checked, stored once (a resend after a resume is
//! recognised by its client id) and sent to the whole room, its sender
//! included; history is served in pages.

use super::fanout::Audience;
use super::{ConnId, Hub};
use crate::Now;
use crate::seat::Seat;
use switchboard_protocol::{
    ChatHistoryPage, ChatHistoryRequest, ChatMessage, ChatSend, ErrorCode, ServerMessage, TypingNotice,
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
        let message =
            room.chat.append(now.unix_ms, |seq, ts| ChatMessage { seq, ts, from, name, client_id, text }).clone();
        if was_typing {
            let notice = ServerMessage::Typing(TypingNotice { from: seat.peer.clone(), active: false });
            self.emit(&seat.room, Audience::AllBut(&seat.peer), notice, now);
        }
        self.emit(&seat.room, Audience::All, ServerMessage::Chat(message), now);
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
