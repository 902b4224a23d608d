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
//! answer comes back as a signal on the connection's queue, out of band:
//! see [`crate::outbox::Signal`].
//!
//! In a cluster the room's owner may be another node: the connection then
//! moves to that node (through the bridge) by the same rule.
//!
//! Pure: the caller does the sending.

use std::sync::Arc;

/// Where a connection's messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A hub shard of this node.
    Shard(usize),
    /// Another node, the owner of the room (through the bridge).
    Node(Arc<str>),
}

/// What to do with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send it there.
    Send(Target),
    /// Tell `from` the connection moved out, open it at `to`, and send the
    /// message there.
    Move {
        /// Where the connection was (in the lobby).
        from: Target,
        /// Where the room it joins lives.
        to: Target,
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
    at: Target,
    home: usize,
    phase: Phase,
    /// Where a move in progress started (until [`Route::moved`]).
    leaving: Option<Target>,
}

impl Route {
    /// A new connection at its home shard.
    pub fn new(home: usize) -> Self {
        Self { at: Target::Shard(home), home, phase: Phase::Lobby, leaving: None }
    }

    /// Where the connection is held now.
    pub fn at(&self) -> &Target {
        &self.at
    }

    /// A join was sent and its answer has not come: send nothing else yet.
    pub fn awaiting_answer(&self) -> bool {
        self.phase == Phase::Joining
    }

    /// Where the next message goes. `join_room_at` is, for a `join`,
    /// where the room it names lives (and `None` for any other message).
    pub fn next(&mut self, join_room_at: Option<Target>) -> Step {
        match (self.phase, join_room_at) {
            (Phase::Lobby, Some(to)) => {
                let from = std::mem::replace(&mut self.at, to.clone());
                self.phase = Phase::Joining;
                if from == to {
                    return Step::Send(to);
                }
                self.leaving = Some(from.clone());
                Step::Move { from, to }
            }
            // In a room a join is answered `already_joined` by the room's
            // shard; the caller never sends while a join is unanswered.
            _ => Step::Send(self.at.clone()),
        }
    }

    /// The join was answered: `joined` by a welcome, otherwise refused. A
    /// refused connection stays in the lobby of the shard it moved to, or,
    /// when it had moved to another node, comes back to its home shard (a
    /// connection outside a room is always held by its own node): the
    /// returned step says so.
    pub fn answered(&mut self, joined: bool) -> Option<Step> {
        if self.phase != Phase::Joining {
            return None;
        }
        self.phase = if joined { Phase::Joined } else { Phase::Lobby };
        if joined || matches!(self.at, Target::Shard(_)) {
            return None;
        }
        let home = Target::Shard(self.home);
        let from = std::mem::replace(&mut self.at, home.clone());
        self.leaving = Some(from.clone());
        Some(Step::Move { from, to: home })
    }

    /// The move the last step asked for is done.
    pub fn moved(&mut self) {
        self.leaving = None;
    }

    /// Where a move that has not finished started: a connection that ends
    /// halfway through a move must be closed there too.
    pub fn leaving(&self) -> Option<&Target> {
        self.leaving.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Target::Shard;

    fn node(id: &str) -> Target {
        Target::Node(id.into())
    }

    #[test]
    fn messages_before_a_join_stay_at_home_and_the_join_moves_to_its_rooms_shard() {
        let mut route = Route::new(1);
        assert_eq!(route.next(None), Step::Send(Shard(1)), "a ping in the lobby");
        assert_eq!(route.next(Some(Shard(3))), Step::Move { from: Shard(1), to: Shard(3) });
        assert!(route.awaiting_answer());
        route.answered(true);
        assert!(!route.awaiting_answer());
        assert_eq!(route.next(None), Step::Send(Shard(3)));
        assert_eq!(
            route.next(Some(Shard(0))),
            Step::Send(Shard(3)),
            "a second join goes to the room's shard: already_joined"
        );
    }

    #[test]
    fn a_join_for_a_room_of_the_home_shard_does_not_move() {
        let mut route = Route::new(2);
        assert_eq!(route.next(Some(Shard(2))), Step::Send(Shard(2)));
        assert!(route.awaiting_answer());
    }

    #[test]
    fn a_refused_join_leaves_the_connection_free_to_join_elsewhere() {
        let mut route = Route::new(0);
        assert_eq!(route.next(Some(Shard(1))), Step::Move { from: Shard(0), to: Shard(1) });
        route.answered(false);
        assert_eq!(route.next(None), Step::Send(Shard(1)), "it is in the lobby of the shard it moved to");
        assert_eq!(route.next(Some(Shard(2))), Step::Move { from: Shard(1), to: Shard(2) });
        route.answered(true);
        assert_eq!(route.at(), &Shard(2));
    }

    #[test]
    fn a_room_owned_by_another_node_is_joined_there_and_a_refusal_there_brings_it_home() {
        let mut route = Route::new(1);
        assert_eq!(route.next(Some(node("b"))), Step::Move { from: Shard(1), to: node("b") });
        assert_eq!(route.answered(false), Some(Step::Move { from: node("b"), to: Shard(1) }), "back home");
        assert_eq!(route.next(None), Step::Send(Shard(1)));
        assert_eq!(route.next(Some(node("c"))), Step::Move { from: Shard(1), to: node("c") });
        assert_eq!(route.answered(true), None);
        assert_eq!(route.next(None), Step::Send(node("c")));
    }

    #[test]
    fn an_answer_with_no_join_out_changes_nothing() {
        let mut route = Route::new(0);
        route.answered(true);
        assert_eq!(route.next(Some(Shard(1))), Step::Move { from: Shard(0), to: Shard(1) }, "still in the lobby");
    }
}
