//! Which hub shard a connection's messages go to.
//!
//! A room lives in exactly one shard, the one [`crate::shards::Shards::place`]
//! names, so a connection must be at its room's shard before its `join`
//! arrives. A new connection starts at a home shard (spread by connection
//! id), which answers what it says before joining (`ping`, `leave`,
//! `not_joined`) and times its join out. Its `join` goes to the shard of the
//! room it names, moving the connection there first when that is another
//! shard. A connection in a room never moves again.
//!
//! While a join is unanswered nothing else is sent: a refused join leaves
//! the connection in the lobby, free to join a room of another shard, and a
//! message sent on the back of the join would not know where to go. The
//! answer (a `welcome`, or an error refusing the join) comes back through
//! the connection's queue, see [`crate::outbox::Outbox::answer`].
//!
//! Pure: the caller does the sending.

/// What to do with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Send it to this shard.
    Send(usize),
    /// Tell `from` the connection moved out, open it at `to`, and send the
    /// message there.
    Move {
        /// Where the connection was (in the lobby).
        from: usize,
        /// The shard of the room it joins.
        to: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not in a room.
    Lobby,
    /// A join was sent and not answered yet.
    Joining,
    /// In a room: every message goes to its shard.
    Joined,
}

/// One connection's place among the shards.
#[derive(Debug)]
pub struct Route {
    at: usize,
    phase: Phase,
}

impl Route {
    /// A new connection at its home shard.
    pub fn new(home: usize) -> Self {
        Self { at: home, phase: Phase::Lobby }
    }

    /// The shard that holds the connection now.
    pub fn at(&self) -> usize {
        self.at
    }

    /// A join was sent and its answer has not come: send nothing else yet.
    pub fn awaiting_answer(&self) -> bool {
        self.phase == Phase::Joining
    }

    /// Where the next message goes. `join_room_shard` is, for a `join`,
    /// the shard of the room it names (and `None` for any other message).
    pub fn next(&mut self, join_room_shard: Option<usize>) -> Step {
        match (self.phase, join_room_shard) {
            (Phase::Lobby, Some(to)) => {
                let from = self.at;
                self.at = to;
                self.phase = Phase::Joining;
                if from == to { Step::Send(to) } else { Step::Move { from, to } }
            }
            // In a room a join is answered `already_joined` by the room's
            // shard; the caller never sends while a join is unanswered.
            _ => Step::Send(self.at),
        }
    }

    /// The join was answered: `joined` by a welcome, otherwise refused (the
    /// connection stays where it is, in the lobby).
    pub fn answered(&mut self, joined: bool) {
        if self.phase == Phase::Joining {
            self.phase = if joined { Phase::Joined } else { Phase::Lobby };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_before_a_join_stay_at_home_and_the_join_moves_to_its_rooms_shard() {
        let mut route = Route::new(1);
        assert_eq!(route.next(None), Step::Send(1), "a ping in the lobby");
        assert_eq!(route.next(Some(3)), Step::Move { from: 1, to: 3 });
        assert!(route.awaiting_answer());
        route.answered(true);
        assert!(!route.awaiting_answer());
        assert_eq!(route.next(None), Step::Send(3));
        assert_eq!(route.next(Some(0)), Step::Send(3), "a second join goes to the room's shard: already_joined");
    }

    #[test]
    fn a_join_for_a_room_of_the_home_shard_does_not_move() {
        let mut route = Route::new(2);
        assert_eq!(route.next(Some(2)), Step::Send(2));
        assert!(route.awaiting_answer());
    }

    #[test]
    fn a_refused_join_leaves_the_connection_free_to_join_elsewhere() {
        let mut route = Route::new(0);
        assert_eq!(route.next(Some(1)), Step::Move { from: 0, to: 1 });
        route.answered(false);
        assert_eq!(route.next(None), Step::Send(1), "it is in the lobby of the shard it moved to");
        assert_eq!(route.next(Some(2)), Step::Move { from: 1, to: 2 });
        route.answered(true);
        assert_eq!(route.at(), 2);
    }

    #[test]
    fn an_answer_with_no_join_out_changes_nothing() {
        let mut route = Route::new(0);
        route.answered(true);
        assert_eq!(route.next(Some(1)), Step::Move { from: 0, to: 1 }, "still in the lobby");
    }
}
