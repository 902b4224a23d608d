//! The delivery ledger: what every member sent and received, checked by
//! sequence number.
//!
//! Pure: the soak feeds it what each member did and saw, in the order that
//! member saw it, and asks whether the rooms have settled and what went
//! wrong. No clock and no IO, so its tests need neither.
//!
//! What it proves, per room:
//! - the messages stored (the union of what the members received, by
//!   `seq`) are exactly the messages sent: none lost, none stored twice
//!   under two sequence numbers, none from elsewhere, and no sequence
//!   number carrying two different messages;
//! - every member received every sequence number after its join up to the
//!   room's last, once each, in order.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use switchboard_protocol::{ChatMessage, ClientMsgId, PeerId};

/// Most problems described one by one in a verdict; the counts cover all.
pub const MAX_DETAILS: usize = 40;

/// Sequence numbers tracked per member past its join. A delivery beyond it
/// (a server bug, not a long soak: an hour at defaults is 36 000) is
/// counted as unknown instead of growing memory without bound.
pub const MAX_TRACKED_SEQS: u64 = 10_000_000;

/// A member of the soak: its room and its place in the room (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId {
    /// The room.
    pub room: usize,
    /// The member within the room.
    pub member: usize,
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}m{}", self.room, self.member)
    }
}

/// Every figure of a verdict, summed over the rooms.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    /// Distinct chat messages sent.
    pub sent: u64,
    /// Distinct sequence numbers anyone received.
    pub stored: u64,
    /// Messages times the members that should have received them.
    pub expected_deliveries: u64,
    /// First receipts of a sequence number by a member.
    pub deliveries: u64,
    /// Messages sent and never stored.
    pub lost: u64,
    /// Messages stored under more than one sequence number.
    pub duplicated: u64,
    /// Sequence numbers carrying a message this room never sent (or past
    /// [`MAX_TRACKED_SEQS`]).
    pub unknown: u64,
    /// Sequence numbers seen with two different messages.
    pub conflicts: u64,
    /// Sequence numbers a member should have received and did not.
    pub lost_deliveries: u64,
    /// Receipts of a sequence number a member already had (or from before
    /// its join).
    pub duplicated_deliveries: u64,
    /// Sequence numbers received after a higher one.
    pub reordered: u64,
    /// Reconnections that resumed the session.
    pub resumes: u64,
    /// Reconnections that joined afresh (the session was lost).
    pub rejoins: u64,
}

impl Totals {
    /// Everything that breaks the promise of exactly-once, in-order chat.
    pub fn faults(&self) -> u64 {
        self.lost
            + self.duplicated
            + self.unknown
            + self.conflicts
            + self.lost_deliveries
            + self.duplicated_deliveries
            + self.reordered
    }
}

/// The ledger's findings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The counts.
    pub totals: Totals,
    /// The first [`MAX_DETAILS`] problems, one line each.
    pub details: Vec<String>,
}

/// Everything the soak saw, by room.
#[derive(Debug)]
pub struct Ledger {
    rooms: Vec<RoomLedger>,
}

#[derive(Debug, Default)]
struct RoomLedger {
    sent: BTreeSet<ClientMsgId>,
    /// The message at each sequence number, as first received.
    stored: BTreeMap<u64, (ClientMsgId, PeerId)>,
    /// The sequence numbers each message was received under.
    seqs_of: BTreeMap<ClientMsgId, BTreeSet<u64>>,
    /// Sent messages not stored yet (kept up to date, so that `settled`
    /// costs nothing per message).
    unconfirmed: usize,
    /// Sequence numbers seen with a message other than the first.
    conflicts: BTreeSet<u64>,
    members: Vec<MemberLog>,
}

/// One member's view of its room's sequence.
#[derive(Debug, Default)]
struct MemberLog {
    /// The room's last sequence number when it joined.
    baseline: u64,
    /// `seen[i]`: sequence number `baseline + 1 + i` received.
    seen: Vec<bool>,
    /// Every sequence number in `baseline + 1 ..= contiguous` received.
    contiguous: u64,
    highest: u64,
    repeats: u64,
    reordered: u64,
    out_of_range: u64,
    resumes: u64,
    rejoins: u64,
}

impl MemberLog {
    fn joined(baseline: u64) -> Self {
        Self { baseline, contiguous: baseline, highest: baseline, ..Self::default() }
    }

    fn has(&self, seq: u64) -> bool {
        seq <= self.baseline || self.index(seq).and_then(|i| self.seen.get(i)).copied().unwrap_or(false)
    }

    fn index(&self, seq: u64) -> Option<usize> {
        let offset = seq.checked_sub(self.baseline + 1)?;
        if offset >= MAX_TRACKED_SEQS {
            return None;
        }
        usize::try_from(offset).ok()
    }

    /// Takes in a receipt of `seq`; true when it is the member's first.
    fn see(&mut self, seq: u64) -> bool {
        if seq <= self.baseline {
            self.repeats += 1;
            return false;
        }
        let Some(i) = self.index(seq) else {
            self.out_of_range += 1;
            return false;
        };
        if self.seen.len() <= i {
            self.seen.resize(i + 1, false);
        }
        if self.seen[i] {
            self.repeats += 1;
            return false;
        }
        self.seen[i] = true;
        if seq < self.highest {
            self.reordered += 1;
        }
        self.highest = self.highest.max(seq);
        while self.index(self.contiguous + 1).and_then(|i| self.seen.get(i)).copied().unwrap_or(false) {
            self.contiguous += 1;
        }
        true
    }

    /// The sequence numbers up to `last` it never received.
    fn missing(&self, last: u64) -> impl Iterator<Item = u64> + '_ {
        (self.contiguous + 1..=last).filter(|&seq| !self.has(seq))
    }
}

impl RoomLedger {
    fn last(&self) -> u64 {
        self.stored.keys().next_back().copied().unwrap_or(0)
    }

    fn store(&mut self, message: &ChatMessage) {
        let entry = (message.client_id.clone(), message.from.clone());
        match self.stored.get(&message.seq) {
            Some(first) if *first != entry => {
                self.conflicts.insert(message.seq);
            }
            Some(_) => {}
            None => {
                self.stored.insert(message.seq, entry);
                let seqs = self.seqs_of.entry(message.client_id.clone()).or_default();
                seqs.insert(message.seq);
                if seqs.len() == 1 && self.sent.contains(&message.client_id) {
                    self.unconfirmed -= 1;
                }
            }
        }
    }
}

impl Ledger {
    /// A ledger for `rooms` rooms of `members` members each.
    pub fn new(rooms: usize, members: usize) -> Self {
        let room =
            || RoomLedger { members: (0..members).map(|_| MemberLog::joined(0)).collect(), ..RoomLedger::default() };
        Self { rooms: (0..rooms).map(|_| room()).collect() }
    }

    fn member(&mut self, id: MemberId) -> (&mut RoomLedger, usize) {
        // Ids come from the same shape as `new`; another one is a bug in
        // the soak, not something the run can meet.
        (&mut self.rooms[id.room], id.member)
    }

    /// `id` joined when the room's last sequence number was `chat_seq`: it
    /// is owed everything after it.
    pub fn joined(&mut self, id: MemberId, chat_seq: u64) {
        let (room, m) = self.member(id);
        room.members[m] = MemberLog::joined(chat_seq);
    }

    /// `id` sent the message `client_id`.
    pub fn sent(&mut self, id: MemberId, client_id: &ClientMsgId) {
        let (room, _) = self.member(id);
        if room.sent.insert(client_id.clone()) && !room.seqs_of.contains_key(client_id) {
            room.unconfirmed += 1;
        }
    }

    /// `id` received `message` as a live or replayed event.
    pub fn delivered(&mut self, id: MemberId, message: &ChatMessage) {
        let (room, m) = self.member(id);
        room.store(message);
        room.members[m].see(message.seq);
    }

    /// `id` reconnected: `resumed`, or joined afresh with the room's
    /// newest messages in `history`, which it merges as a client would
    /// (by sequence number: what it already has is not a repeat).
    pub fn welcomed(&mut self, id: MemberId, resumed: bool, history: &[ChatMessage]) {
        let (room, m) = self.member(id);
        if resumed {
            room.members[m].resumes += 1;
            return;
        }
        room.members[m].rejoins += 1;
        for message in history {
            if !room.members[m].has(message.seq) {
                room.store(message);
                room.members[m].see(message.seq);
            }
        }
    }

    /// Every sent message is stored and every member has every sequence
    /// number up to its room's last. (Only meaningful once nobody sends.)
    pub fn settled(&self) -> bool {
        self.rooms.iter().all(|room| {
            let last = room.last();
            room.unconfirmed == 0 && room.members.iter().all(|m| m.contiguous >= last)
        })
    }

    /// Sent messages that nobody has received yet.
    pub fn unstored(&self) -> usize {
        self.rooms.iter().map(|r| r.unconfirmed).sum()
    }

    /// The members that do not have their room's last message yet.
    pub fn behind(&self) -> Vec<MemberId> {
        let mut behind = Vec::new();
        for (r, room) in self.rooms.iter().enumerate() {
            let last = room.last();
            for (m, log) in room.members.iter().enumerate() {
                if log.contiguous < last {
                    behind.push(MemberId { room: r, member: m });
                }
            }
        }
        behind
    }

    /// Checks everything seen so far.
    pub fn verdict(&self) -> Verdict {
        let mut v = Verdict::default();
        for (r, room) in self.rooms.iter().enumerate() {
            let t = &mut v.totals;
            let last = room.last();
            t.sent += room.sent.len() as u64;
            t.stored += room.stored.len() as u64;
            for id in room.sent.iter().filter(|id| !room.seqs_of.contains_key(*id)) {
                t.lost += 1;
                note(&mut v.details, format!("room {r}: {id} was sent and never stored"));
            }
            for (id, seqs) in room.seqs_of.iter().filter(|(_, seqs)| seqs.len() > 1) {
                t.duplicated += 1;
                note(&mut v.details, format!("room {r}: {id} stored under seqs {seqs:?}"));
            }
            for (seq, (id, _)) in room.stored.iter().filter(|(_, (id, _))| !room.sent.contains(id)) {
                t.unknown += 1;
                note(&mut v.details, format!("room {r}: seq {seq} carries {id}, never sent in this room"));
            }
            for seq in &room.conflicts {
                t.conflicts += 1;
                note(&mut v.details, format!("room {r}: seq {seq} was received with two different messages"));
            }
            for (m, log) in room.members.iter().enumerate() {
                let who = MemberId { room: r, member: m };
                t.expected_deliveries += last.saturating_sub(log.baseline);
                t.deliveries += log.seen.iter().filter(|s| **s).count() as u64;
                let missing: Vec<u64> = log.missing(last).collect();
                t.lost_deliveries += missing.len() as u64;
                if !missing.is_empty() {
                    note(&mut v.details, format!("{who}: missing seqs {} (of 1..={last})", ranges(&missing)));
                }
                t.duplicated_deliveries += log.repeats;
                if log.repeats > 0 {
                    note(&mut v.details, format!("{who}: {} repeated deliveries", log.repeats));
                }
                t.reordered += log.reordered;
                if log.reordered > 0 {
                    note(&mut v.details, format!("{who}: {} deliveries out of order", log.reordered));
                }
                t.unknown += log.out_of_range;
                t.resumes += log.resumes;
                t.rejoins += log.rejoins;
                if log.rejoins > 0 {
                    note(&mut v.details, format!("{who}: joined afresh {} times (session lost)", log.rejoins));
                }
            }
        }
        v
    }
}

/// Adds `line` unless there are enough details already.
fn note(details: &mut Vec<String>, line: String) {
    if details.len() < MAX_DETAILS {
        details.push(line);
    }
}

/// `[3, 4, 5, 9]` as `3-5, 9`.
fn ranges(seqs: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < seqs.len() {
        let mut j = i;
        while j + 1 < seqs.len() && seqs[j + 1] == seqs[j] + 1 {
            j += 1;
        }
        out.push(if i == j { seqs[i].to_string() } else { format!("{}-{}", seqs[i], seqs[j]) });
        i = j + 1;
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_protocol::DisplayName;

    const A: MemberId = MemberId { room: 0, member: 0 };
    const B: MemberId = MemberId { room: 0, member: 1 };

    fn id(s: &str) -> ClientMsgId {
        ClientMsgId::new(s).unwrap()
    }

    fn chat(seq: u64, client_id: &str, from: &str) -> ChatMessage {
        ChatMessage {
            seq,
            ts: 0,
            from: PeerId::new(from).unwrap(),
            name: DisplayName::new(from).unwrap(),
            client_id: id(client_id),
            text: "hi".into(),
        }
    }

    /// A and B each send two messages; the room stores them as seqs 1-4.
    fn four() -> Vec<ChatMessage> {
        vec![chat(1, "a1", "pa"), chat(2, "b1", "pb"), chat(3, "a2", "pa"), chat(4, "b2", "pb")]
    }

    fn sent_four(ledger: &mut Ledger) {
        for c in ["a1", "a2"] {
            ledger.sent(A, &id(c));
        }
        for c in ["b1", "b2"] {
            ledger.sent(B, &id(c));
        }
    }

    #[test]
    fn a_clean_run_has_no_faults_and_settles() {
        let mut ledger = Ledger::new(1, 2);
        sent_four(&mut ledger);
        assert!(!ledger.settled(), "nothing stored yet");
        for m in four() {
            ledger.delivered(A, &m);
            ledger.delivered(B, &m);
        }
        ledger.welcomed(A, true, &[]);
        assert!(ledger.settled());
        let v = ledger.verdict();
        assert_eq!(v.totals.faults(), 0, "{v:?}");
        assert_eq!((v.totals.sent, v.totals.stored), (4, 4));
        assert_eq!((v.totals.expected_deliveries, v.totals.deliveries), (8, 8));
        assert_eq!((v.totals.resumes, v.totals.rejoins), (1, 0));
        assert!(v.details.is_empty(), "{v:?}");
    }

    #[test]
    fn a_duplicate_and_a_gap_are_detected() {
        let mut ledger = Ledger::new(1, 2);
        sent_four(&mut ledger);
        let mut all = four();
        // The server stored a resend of a2 again, as seq 5.
        all.push(chat(5, "a2", "pa"));
        for m in &all {
            ledger.delivered(A, m);
        }
        // B missed seq 3 and got seq 2 twice.
        for seq in [1, 2, 2, 4, 5] {
            ledger.delivered(B, &all[seq - 1]);
        }
        assert!(!ledger.settled(), "B lacks seq 3");
        assert_eq!(ledger.behind(), vec![B]);
        let v = ledger.verdict();
        assert_eq!(v.totals.duplicated, 1, "{v:?}");
        assert_eq!(v.totals.lost_deliveries, 1, "{v:?}");
        assert_eq!(v.totals.duplicated_deliveries, 1, "{v:?}");
        assert_eq!(v.totals.lost, 0, "every message was stored at least once: {v:?}");
        assert!(v.details.iter().any(|d| d.contains("a2 stored under seqs {3, 5}")), "{v:?}");
        assert!(v.details.iter().any(|d| d.contains("r0m1: missing seqs 3 ")), "{v:?}");
    }

    #[test]
    fn a_message_never_stored_is_lost() {
        let mut ledger = Ledger::new(1, 2);
        sent_four(&mut ledger);
        ledger.sent(B, &id("b3"));
        for m in four() {
            ledger.delivered(A, &m);
            ledger.delivered(B, &m);
        }
        assert!(!ledger.settled(), "b3 is not stored");
        assert_eq!(ledger.unstored(), 1);
        let v = ledger.verdict();
        assert_eq!(v.totals.lost, 1, "{v:?}");
        assert_eq!(v.totals.lost_deliveries, 0, "nobody is owed a seq that does not exist");
    }

    #[test]
    fn a_delivery_may_come_before_the_record_of_its_send() {
        let mut ledger = Ledger::new(1, 1);
        ledger.delivered(A, &chat(1, "a1", "pa"));
        assert!(ledger.settled());
        ledger.sent(A, &id("a1"));
        assert!(ledger.settled());
        assert_eq!(ledger.verdict().totals.faults(), 0);
    }

    #[test]
    fn the_tail_a_member_never_got_is_missing() {
        let mut ledger = Ledger::new(1, 2);
        sent_four(&mut ledger);
        for m in four() {
            ledger.delivered(A, &m);
        }
        ledger.delivered(B, &four()[0]);
        let v = ledger.verdict();
        assert_eq!(v.totals.lost_deliveries, 3, "{v:?}");
        assert!(v.details.iter().any(|d| d.contains("missing seqs 2-4")), "{v:?}");
    }

    #[test]
    fn out_of_order_is_neither_lost_nor_repeated() {
        let mut ledger = Ledger::new(1, 1);
        sent_four(&mut ledger);
        for seq in [1, 3, 2, 4] {
            ledger.delivered(A, &four()[seq - 1]);
        }
        let t = ledger.verdict().totals;
        assert_eq!((t.reordered, t.lost_deliveries, t.duplicated_deliveries), (1, 0, 0), "{t:?}");
    }

    #[test]
    fn conflicting_and_foreign_messages_are_detected() {
        let mut ledger = Ledger::new(2, 2);
        sent_four(&mut ledger);
        for m in four() {
            ledger.delivered(A, &m);
        }
        ledger.delivered(B, &chat(1, "b2", "pb"));
        // A message of room 0 delivered in room 1.
        ledger.delivered(MemberId { room: 1, member: 0 }, &chat(1, "a1", "pa"));
        let t = ledger.verdict().totals;
        assert_eq!(t.conflicts, 1, "{t:?}");
        assert_eq!(t.unknown, 1, "{t:?}");
    }

    #[test]
    fn a_rejoin_is_counted_and_merges_history_by_seq() {
        let mut ledger = Ledger::new(1, 2);
        sent_four(&mut ledger);
        for m in four() {
            ledger.delivered(A, &m);
        }
        ledger.delivered(B, &four()[0]);
        ledger.welcomed(B, false, &four());
        let v = ledger.verdict();
        assert_eq!(v.totals.rejoins, 1);
        assert_eq!(v.totals.faults(), 0, "history filled the gap and seq 1 is no repeat: {v:?}");
        assert!(ledger.settled());
    }

    #[test]
    fn members_owe_only_what_came_after_their_join() {
        let mut ledger = Ledger::new(1, 2);
        ledger.joined(B, 2);
        sent_four(&mut ledger);
        for m in four() {
            ledger.delivered(A, &m);
        }
        for m in &four()[2..] {
            ledger.delivered(B, m);
        }
        ledger.delivered(B, &four()[0]);
        let t = ledger.verdict().totals;
        assert_eq!(t.expected_deliveries, 6, "{t:?}");
        assert_eq!(t.duplicated_deliveries, 1, "seq 1 came before B joined: {t:?}");
        assert_eq!(t.lost_deliveries, 0, "{t:?}");
    }

    #[test]
    fn ranges_are_compact() {
        assert_eq!(ranges(&[3, 4, 5, 9, 11, 12]), "3-5, 9, 11-12");
        assert_eq!(ranges(&[]), "");
    }
}
