//! The one negotiator: every Switchboard peer connection on webrtc-rs (the
//! headless peer's links and the SFU's members) negotiates through it, and
//! the browser's `web/js/link.js` keeps the same rules.
//!
//! One task per connection applies signaling input in arrival order:
//! - **One offerer per connection.** Whoever the rules name makes every
//!   offer on a connection: in a mesh the newcomer, in an SFU room the SFU.
//!   The other side only answers, so offers never collide. This matters:
//!   webrtc-rs 0.17 cannot roll back a local offer (there is no such
//!   signaling transition), so the polite side of perfect negotiation
//!   cannot yield. A colliding offer is still handled: the side whose id
//!   sorts lower (impolite) ignores it; the other, which cannot roll back,
//!   drops it too and reports it (a browser, which can roll back, yields).
//! - **Renegotiation.** [`Input::Negotiate`] asks for an offer (tracks
//!   changed). One offer is in flight at a time: while an exchange is under
//!   way, or while ICE is not connected, the offer is owed and goes when the
//!   connection is stable and connected. (An offer made right after an
//!   answer, before a single candidate was gathered, left some stacks'
//!   ICE agents with no pairs for good.)
//! - **Lost descriptions.** An offer with no answer after
//!   [`ANSWER_TIMEOUT`] is made again (signaling may lose one: a socket
//!   that dies with writes in flight).
//! - **ICE restart.** The offerer restarts: when ICE stays disconnected for
//!   [`ICE_RESTART_AFTER`] (or fails), it offers with new credentials, and
//!   again every [`ICE_RESTART_RETRY`] until ICE is back (the offer may be
//!   lost while signaling is down too). It must be the first offerer: it is
//!   ICE-controlling, and webrtc-rs keeps its ICE role across restarts while
//!   a browser gives the controlling role to whoever offers the restart. If
//!   the first answerer (controlled in webrtc-rs) offered a restart to a
//!   browser, both ends would be controlled and ICE would never reconnect.
//! - **Candidates.** Remote candidates before the first description wait
//!   in a capped queue, later ones are capped per description and in size;
//!   local ones are trickled with the BUNDLE mid, and the end of gathering
//!   is sent as `end_of_candidates`.

use crate::candidates::outgoing;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchboard_protocol::{
    CandidateRelay, ClientMessage, EndOfCandidatesRelay, IceCandidate, PeerId, SessionDescription,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use webrtc::ice_transport::ice_connection_state::RTCIceConnectionState;
use webrtc::peer_connection::RTCPeerConnection;

pub mod rules;
mod state;
#[cfg(test)]
mod tests;

use state::{State, lock};

/// Signaling inputs queued for one connection before the sender waits.
pub const NEGOTIATOR_QUEUE: usize = 256;

/// How long ICE may stay disconnected before the restarter (the side that
/// made the first offer) restarts it: a short outage recovers by itself.
pub const ICE_RESTART_AFTER: Duration = Duration::from_secs(1);
/// How often a restart is tried again while ICE has not recovered.
pub const ICE_RESTART_RETRY: Duration = Duration::from_secs(5);
/// How long an offer of ours may wait for its answer. Signaling can lose a
/// description (a socket that dies with writes in flight, a full queue);
/// past this the offer is rolled back and made again.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Remote candidates added per remote description (an ICE generation);
/// more are dropped and reported once. A browser sends a few dozen at most.
pub const MAX_REMOTE_CANDIDATES: usize = 256;
/// Longest candidate line accepted (a real one is about 100-200 bytes).
pub const MAX_CANDIDATE_BYTES: usize = 1024;

/// What the negotiator acts on.
#[derive(Debug)]
pub enum Input {
    /// A relayed offer or answer.
    Description(SessionDescription),
    /// A relayed candidate.
    Candidate(IceCandidate),
    /// The remote has no more candidates (webrtc-rs needs no such signal:
    /// accepted and dropped).
    EndOfCandidates,
    /// Offer now, or as soon as the connection allows (tracks changed).
    Negotiate,
}

/// What the negotiator tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// An offer went out.
    OfferSent,
    /// An offer came in.
    OfferReceived,
    /// An answer went out.
    AnswerSent,
    /// An answer came in.
    AnswerReceived,
    /// A local candidate of this type (`host`, `srflx`, `relay`) was
    /// gathered and sent.
    Gathered(String),
    /// The ICE connection's state changed.
    IceState(RTCIceConnectionState),
    /// An ICE restart offer went out (attempt counts from 1 per outage).
    IceRestarting {
        /// Restarts sent since ICE went down.
        attempt: u32,
    },
    /// ICE is back after one or more restarts.
    IceRestarted,
    /// Something failed; negotiation goes on with the next input.
    Problem(String),
}

/// Receives the negotiator's reports. Called from the negotiator's task
/// and from webrtc-rs callbacks: an observer that waits holds negotiation
/// (and ICE) up, so it must not wait on anything a user controls.
pub trait Observer: Send + Sync + 'static {
    /// Takes one report.
    fn report(&self, report: Report) -> impl Future<Output = ()> + Send;
}

/// The two facts that decide who does what on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Roll back our offer on a collision (our id sorts greater).
    pub polite: bool,
    /// We make the first offer, and so we restart ICE.
    pub first_offer_ours: bool,
}

impl Roles {
    /// The roles of `me` towards `remote`.
    pub fn new(me: &PeerId, remote: &PeerId, first_offer_ours: bool) -> Self {
        Self { polite: rules::polite(me.as_str(), remote.as_str()), first_offer_ours }
    }
}

/// A running negotiator: its inbox and task.
#[derive(Debug)]
pub struct Negotiator {
    inputs: mpsc::Sender<Input>,
    task: JoinHandle<()>,
}

impl Negotiator {
    /// Starts negotiating `pc` with `remote`, sending through `signal`.
    /// Installs `pc`'s ICE candidate and ICE state handlers. With
    /// `first_offer_ours` the first offer goes at once.
    pub fn start<O: Observer>(
        pc: &Arc<RTCPeerConnection>,
        remote: PeerId,
        roles: Roles,
        signal: mpsc::Sender<ClientMessage>,
        observer: Arc<O>,
    ) -> Self {
        let (inputs, rx) = mpsc::channel(NEGOTIATOR_QUEUE);
        let bundle = Arc::new(Mutex::new(None));
        trickle(pc, &remote, &signal, &bundle, &observer);
        // ICE states reach the task through a watch: the callback never
        // waits, and the task acts on the latest state.
        let (ice_tx, ice_rx) = watch::channel(RTCIceConnectionState::New);
        pc.on_ice_connection_state_change(Box::new(move |state| {
            ice_tx.send_replace(state);
            Box::pin(async {})
        }));
        let state = State::new(pc, remote, signal, observer, roles, bundle);
        let task = tokio::spawn(state.run(rx, ice_rx));
        if roles.first_offer_ours {
            // Cannot fail: the queue is new and the task holds its receiver.
            let _ = inputs.try_send(Input::Negotiate);
        }
        Self { inputs, task }
    }

    /// Hands a signaling input to the task, in order.
    pub async fn input(&self, input: Input) {
        let _ = self.inputs.send(input).await;
    }

    /// Hands a signaling input to the task unless its queue is full (the
    /// input is then returned): for an owner that must never wait on one
    /// connection, like an SFU room serving many.
    pub fn try_input(&self, input: Input) -> Result<(), Input> {
        self.inputs.try_send(input).map_err(mpsc::error::TrySendError::into_inner)
    }

    /// Stops the task (the connection is being closed).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Negotiator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends local candidates as they are gathered, then `end_of_candidates`.
/// The callback holds no reference to the connection (a cycle would leak
/// it).
fn trickle<O: Observer>(
    pc: &RTCPeerConnection,
    remote: &PeerId,
    signal: &mpsc::Sender<ClientMessage>,
    bundle: &Arc<Mutex<Option<String>>>,
    observer: &Arc<O>,
) {
    let (to, signal, bundle, observer) = (remote.clone(), signal.clone(), bundle.clone(), observer.clone());
    pc.on_ice_candidate(Box::new(move |candidate| {
        let (to, signal, bundle, observer) = (to.clone(), signal.clone(), bundle.clone(), observer.clone());
        Box::pin(async move {
            let msg = match candidate {
                Some(c) => {
                    let typ = c.typ.to_string();
                    let Ok(init) = c.to_json() else { return };
                    // Not `pc.local_description()`: it waits on the gatherer
                    // and held candidates back long enough for the remote's
                    // checks to arrive first (peer-reflexive, a 1 s wait).
                    let mid = lock(&bundle).clone();
                    observer.report(Report::Gathered(typ)).await;
                    ClientMessage::Candidate(CandidateRelay { id: None, to, candidate: outgoing(init, mid.as_deref()) })
                }
                None => ClientMessage::EndOfCandidates(EndOfCandidatesRelay { id: None, to }),
            };
            let _ = signal.send(msg).await;
        })
    }));
}
