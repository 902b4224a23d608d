//! One member of the soak: the thin async shell around its signaling
//! session. It sends chat at a fixed rate until the end of the soak and
//! tells the collector everything the ledger needs (its sends, the chat it
//! receives, its welcomes after reconnecting), in the order it saw them.
//! The session's own task does the reconnecting, resuming and resending.

use crate::ledger::MemberId;
use anyhow::{Context, bail};
use std::time::Duration;
use switchboard_peer::Signaling;
use switchboard_protocol::{Bare, ChatMessage, ChatSend, ClientMessage, ClientMsgId, ErrorCode, ServerMessage};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};

/// Longest wait, after `leave`, for the session to end; past it the
/// session is dropped (its task aborted).
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a member did or saw, for the collector.
#[derive(Debug)]
pub enum Observation {
    /// It queued a chat message with this client id.
    Sent(MemberId, ClientMsgId),
    /// It received a chat message; `latency` from the send, when the text
    /// carries the send time.
    Chat(MemberId, ChatMessage, Option<Duration>),
    /// It reconnected: resumed, or joined afresh with the room's newest
    /// messages.
    Welcome { member: MemberId, resumed: bool, history: Vec<ChatMessage> },
    /// The server answered with an error.
    Error(MemberId, ErrorCode, String),
    /// It sent its last message.
    DoneSending(MemberId),
}

/// When a member sends.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// The soak's clock: send times in the texts count from here (all
    /// members share the process, so one clock serves sender and receiver).
    pub epoch: std::time::Instant,
    /// Its first send.
    pub first: Instant,
    /// No send at or after this.
    pub until: Instant,
    /// Between two sends.
    pub period: Duration,
}

/// The text of message `n` from `id`: names the sender and its counter,
/// and carries the send time for the latency.
pub fn chat_text(id: MemberId, n: u64, since_epoch: Duration) -> String {
    format!("{id} message {n}, sent at {}us", since_epoch.as_micros())
}

/// The send time carried by a [`chat_text`].
pub fn sent_at(text: &str) -> Option<Duration> {
    let (_, at) = text.rsplit_once(", sent at ")?;
    at.strip_suffix("us")?.parse::<u64>().ok().map(Duration::from_micros)
}

/// Runs `id` until `stop` says so: sends per `schedule`, reports to
/// `observations`, then leaves. An error means its session ended early.
pub async fn run(
    id: MemberId,
    mut signaling: Signaling,
    schedule: Schedule,
    observations: mpsc::Sender<Observation>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut ticks = tokio::time::interval_at(schedule.first, schedule.period);
    // A late tick is sent late, not skipped: the count stays fixed.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut n = 0u64;
    let mut sending = true;
    loop {
        tokio::select! {
            tick = ticks.tick(), if sending => {
                if tick >= schedule.until {
                    sending = false;
                    observations.send(Observation::DoneSending(id)).await?;
                    continue;
                }
                n += 1;
                let client_id = ClientMsgId::new(format!("{id}n{n}")).context("client id")?;
                let text = chat_text(id, n, schedule.epoch.elapsed());
                // Recorded first: a message the session fails to take is lost.
                observations.send(Observation::Sent(id, client_id.clone())).await?;
                signaling.sender.send(ClientMessage::Chat(ChatSend { id: None, client_id, text })).await?;
            }
            event = signaling.events.recv() => {
                let Some(event) = event else {
                    bail!("{id}: the session ended ({:?})", *signaling.state.borrow());
                };
                forward(id, event, schedule.epoch, &observations).await?;
            }
            _ = stop.changed() => break,
        }
    }
    let _ = signaling.sender.send(ClientMessage::Leave(Bare { id: None })).await;
    // The events end when the session's task does, after the leave.
    let drained = tokio::time::timeout(LEAVE_TIMEOUT, async {
        while let Some(event) = signaling.events.recv().await {
            forward(id, event, schedule.epoch, &observations).await?;
        }
        anyhow::Ok(())
    })
    .await;
    match drained {
        Ok(result) => result,
        Err(_) => bail!("{id}: the session did not end within {LEAVE_TIMEOUT:?} of leaving"),
    }
}

async fn forward(
    id: MemberId,
    event: ServerMessage,
    epoch: std::time::Instant,
    observations: &mpsc::Sender<Observation>,
) -> anyhow::Result<()> {
    let observation = match event {
        ServerMessage::Chat(message) => {
            let latency = sent_at(&message.text).and_then(|at| epoch.elapsed().checked_sub(at));
            Observation::Chat(id, message, latency)
        }
        ServerMessage::Welcome(welcome) => {
            let history = if welcome.resumed { Vec::new() } else { welcome.chat };
            Observation::Welcome { member: id, resumed: welcome.resumed, history }
        }
        ServerMessage::Error(error) => Observation::Error(id, error.code, error.message),
        _ => return Ok(()),
    };
    observations.send(observation).await.context("the collector stopped")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_carries_its_send_time() {
        let id = MemberId { room: 3, member: 1 };
        let text = chat_text(id, 12, Duration::from_micros(1_234_567));
        assert_eq!(text, "r3m1 message 12, sent at 1234567us");
        assert_eq!(sent_at(&text), Some(Duration::from_micros(1_234_567)));
        assert_eq!(sent_at("hello"), None);
    }
}
