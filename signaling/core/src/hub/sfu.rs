//! SFU wiring: an SFU room with participants and no SFU asks the shell for
//! one ([`Output::SfuWanted`]), and asks again every
//! [`crate::Limits::sfu_launch_timeout`] until one joins or nobody is left.
//! A launch can fail for good (refused by admission during a reconnect
//! storm, say), and a room must not be left without its SFU because of it.
//! Who may join as the SFU is decided at admission (`membership.rs`), whom
//! it may address in `relay.rs`.

use super::{Hub, Output};
use crate::Now;
use crate::timers::Timer;
use std::time::Instant;
use switchboard_protocol::RoomName;

impl Hub {
    /// Tells the shell `room` wants an SFU (the room has noted the ask, see
    /// [`crate::room::Room::ask_for_sfu`]), and sets the deadline to ask
    /// again at `again_at`.
    pub(super) fn request_sfu(&mut self, room: RoomName, again_at: Instant) {
        // Zero asks once and never again.
        if !self.config.limits.sfu_launch_timeout.is_zero() {
            self.timers.arm(again_at, Timer::SfuLaunch(room.clone()));
        }
        self.out.push_back(Output::SfuWanted { room });
    }

    /// A `SfuLaunch` deadline came due: no SFU joined since the last ask.
    pub(super) fn sfu_launch_expired(&mut self, room_name: &RoomName, now: Now) {
        let Some(room) = self.rooms.get_mut(room_name) else { return };
        // Not asked (the SFU joined), or asked again later (it came and
        // went): that later ask's own deadline is the one that counts.
        if room.sfu_asked_until.is_none_or(|until| until > now.mono) {
            return;
        }
        room.sfu_asked_until = None;
        let again_at = now.mono + self.config.limits.sfu_launch_timeout;
        if room.ask_for_sfu(again_at) {
            self.request_sfu(room_name.clone(), again_at);
        }
    }
}
