//! The one negotiator: every Switchboard peer connection on webrtc-rs (the
//! headless peer's links and the SFU's members) negotiates through it, and
//! the browser's `web/js/link.js` keeps the same rules.
//!
//! One task per connection applies signaling input in arrival order:
//! - **Perfect negotiation.** For each pair the peer whose id sorts greater
//!   is polite: on an offer collision it rolls its own offer back and
//!   answers; the impolite side ignores the colliding offer. A rolled-back
//!   offer is owed again.
//! - **First offer.** Whoever the rules name (the newcomer, or the SFU to
//!   the members already there) offers once; the other side waits for it.
//! - **Renegotiation.** [`Input::Negotiate`] asks for an offer (tracks
//!   changed). One offer is in flight at a time: while an exchange is under
//!   way, or before ICE first connects, the offer is owed and goes when the
//!   connection is stable and connected. (An offer made right after an
//!   answer, before a single candidate was gathered, left some stacks'
//!   ICE agents with no pairs for good.)
//! - **ICE restart.** The side that made the first offer restarts: when
//!   ICE stays disconnected for [`ICE_RESTART_AFTER`] (or fails), it offers
//!   with new credentials, and again every [`ICE_RESTART_RETRY`] until ICE
//!   is back (the offer may be lost while signaling is down too). Not the
//!   impolite side: the first offerer is ICE-controlling, and webrtc-rs
//!   keeps its ICE role across restarts while a browser gives the
//!   controlling role to whoever offers the restart. If the first answerer
//!   (controlled in webrtc-rs) offered a restart to a browser, both ends
//!   would be controlled and ICE would never reconnect.
//! - **Candidates.** Remote candidates before the first description wait
//!   in a capped queue; local ones are trickled with the BUNDLE mid, and
//!   the end of gathering is sent as `end_of_candidates`.

use crate::candidates::{CandidateQueue, bundle_mid, outgoing};
use crate::convert::{candidate_to_rtc, from_rtc, to_rtc};
use anyhow::Context;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use switchboard_protocol::{
    CandidateRelay, ClientMessage, DescriptionRelay, EndOfCandidatesRelay, IceCandidate, PeerId, SdpType,
    SessionDescription,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use webrtc::ice_transport::ice_connection_state::RTCIceConnectionState;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::offer_answer_options::RTCOfferOptions;
use webrtc::peer_connection::sdp::sdp_type::RTCSdpType;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::signaling_state::RTCSignalingState;

/// Signaling inputs queued for one connection before the sender waits.
pub const NEGOTIATOR_QUEUE: usize = 256;

/// How long ICE may stay disconnected before the restarter (the side that
/// made the first offer) restarts it: a short outage recovers by itself.
pub const ICE_RESTART_AFTER: Duration = Duration::from_secs(1);
/// How often a restart is tried again while ICE has not recovered.
pub const ICE_RESTART_RETRY: Duration = Duration::from_secs(5);

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
        Self { polite: me > remote, first_offer_ours }
    }
}

/// A running negotiator: its inbox and task.
#[derive(Debug)]
pub struct Negotiator {
    inputs: mpsc::Sender<Inbox>,
    task: JoinHandle<()>,
}

/// What the task reads: inputs from the owner, ICE states from webrtc-rs.
#[derive(Debug)]
enum Inbox {
    Input(Input),
    Ice(RTCIceConnectionState),
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
        let weak_inputs = inputs.downgrade();
        pc.on_ice_connection_state_change(Box::new(move |state| {
            let inputs = weak_inputs.clone();
            Box::pin(async move {
                if let Some(inputs) = inputs.upgrade() {
                    let _ = inputs.send(Inbox::Ice(state)).await;
                }
            })
        }));
        let state = State {
            pc: Arc::downgrade(pc),
            remote,
            signal,
            observer,
            roles,
            bundle,
            offered: false,
            settled: false,
            wants_offer: false,
            ice_up: false,
            remote_set: false,
            pending: CandidateQueue::default(),
            restart_due: None,
            restarts: 0,
        };
        let task = tokio::spawn(state.run(rx));
        if roles.first_offer_ours {
            // Cannot fail: the queue is new and the task holds its receiver.
            let _ = inputs.try_send(Inbox::Input(Input::Negotiate));
        }
        Self { inputs, task }
    }

    /// Hands a signaling input to the task, in order.
    pub async fn input(&self, input: Input) {
        let _ = self.inputs.send(Inbox::Input(input)).await;
    }

    /// Hands a signaling input to the task unless its queue is full (the
    /// input is then returned): for an owner that must never wait on one
    /// connection, like an SFU room serving many.
    pub fn try_input(&self, input: Input) -> Result<(), Input> {
        self.inputs.try_send(Inbox::Input(input)).map_err(|e| match e.into_inner() {
            Inbox::Input(input) => input,
            Inbox::Ice(_) => unreachable!("only inputs are sent here"),
        })
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

/// Locks a mutex whose holders only read or replace a value, so a
/// poisoned lock is still consistent.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The negotiation state, owned by the task.
struct State<O> {
    pc: Weak<RTCPeerConnection>,
    remote: PeerId,
    signal: mpsc::Sender<ClientMessage>,
    observer: Arc<O>,
    roles: Roles,
    /// The BUNDLE mid of our local description, set before it is applied
    /// (gathering starts then), for trickled candidates. A std mutex: the
    /// candidate callback reads it, the task replaces it, neither across an
    /// await.
    bundle: Arc<Mutex<Option<String>>>,
    /// Our first offer went out.
    offered: bool,
    /// A first offer/answer exchange has completed.
    settled: bool,
    /// An offer is owed once the connection is stable (and ICE is up).
    wants_offer: bool,
    /// ICE has been connected at least once.
    ice_up: bool,
    /// A remote description has been applied: candidates can be added.
    remote_set: bool,
    /// Candidates that arrived before their description.
    pending: CandidateQueue,
    /// When to restart ICE (the first offerer, while ICE is down).
    restart_due: Option<tokio::time::Instant>,
    /// Restarts sent since ICE went down.
    restarts: u32,
}

impl<O: Observer> State<O> {
    async fn run(mut self, mut inbox: mpsc::Receiver<Inbox>) {
        loop {
            let due = self.restart_due;
            let restart = async move {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let item = tokio::select! {
                item = inbox.recv() => match item {
                    Some(item) => Some(item),
                    None => break,
                },
                () = restart => None,
            };
            let Some(pc) = self.pc.upgrade() else { break };
            let result = match item {
                Some(Inbox::Input(input)) => self.handle(&pc, input).await,
                Some(Inbox::Ice(state)) => self.ice(&pc, state).await,
                None => {
                    self.restart_due = Some(tokio::time::Instant::now() + ICE_RESTART_RETRY);
                    self.restart_ice(&pc).await.context("ICE restart")
                }
            };
            if let Err(err) = result {
                self.observer.report(Report::Problem(format!("{err:#}"))).await;
            }
        }
    }

    async fn handle(&mut self, pc: &RTCPeerConnection, input: Input) -> anyhow::Result<()> {
        match input {
            Input::Negotiate => {
                self.wants_offer = true;
                self.offer_if_due(pc).await?;
            }
            Input::Description(desc) => self.remote_description(pc, &desc).await?,
            Input::Candidate(candidate) => {
                let init = candidate_to_rtc(&candidate);
                if self.remote_set {
                    pc.add_ice_candidate(init).await.context("adding a candidate")?;
                } else if !self.pending.push(init) && self.pending.dropped() == 1 {
                    anyhow::bail!("too many candidates before a description: dropping the rest");
                }
            }
            Input::EndOfCandidates => {}
        }
        Ok(())
    }

    /// Sends the owed offer if the connection allows one now: before the
    /// first exchange only the first offerer offers, once; after it, only
    /// when stable and once ICE has connected.
    async fn offer_if_due(&mut self, pc: &RTCPeerConnection) -> anyhow::Result<()> {
        let stable = pc.signaling_state() == RTCSignalingState::Stable;
        let may =
            if self.settled { stable && self.ice_up } else { self.roles.first_offer_ours && stable && !self.offered };
        if !(self.wants_offer && may) {
            return Ok(());
        }
        self.wants_offer = false;
        self.offered = true;
        let offer = pc.create_offer(None).await.context("creating an offer")?;
        self.set_local(pc, offer).await.context("setting the local offer")?;
        self.send_local(pc, true).await
    }

    /// Applies a relayed offer or answer the way perfect negotiation says.
    async fn remote_description(&mut self, pc: &RTCPeerConnection, desc: &SessionDescription) -> anyhow::Result<()> {
        let is_offer = desc.kind == SdpType::Offer;
        self.observer.report(if is_offer { Report::OfferReceived } else { Report::AnswerReceived }).await;
        let collision = is_offer && pc.signaling_state() != RTCSignalingState::Stable;
        if collision && !self.roles.polite {
            // Our offer wins; theirs is dropped, and they will answer ours.
            return Ok(());
        }
        if collision {
            pc.set_local_description(rollback()).await.context("rolling back our offer")?;
            // Our withdrawn offer is owed again.
            self.wants_offer = true;
        }
        pc.set_remote_description(to_rtc(desc)?).await.context("setting the remote description")?;
        self.remote_set = true;
        for candidate in self.pending.take() {
            pc.add_ice_candidate(candidate).await.context("adding a queued candidate")?;
        }
        if is_offer {
            let answer = pc.create_answer(None).await.context("creating an answer")?;
            self.set_local(pc, answer).await.context("setting the local answer")?;
            self.send_local(pc, false).await?;
        }
        self.settled = true;
        self.offer_if_due(pc).await
    }

    async fn ice(&mut self, pc: &RTCPeerConnection, state: RTCIceConnectionState) -> anyhow::Result<()> {
        self.observer.report(Report::IceState(state)).await;
        match state {
            RTCIceConnectionState::Disconnected | RTCIceConnectionState::Failed
                if self.roles.first_offer_ours && self.restart_due.is_none() =>
            {
                self.restart_due = Some(tokio::time::Instant::now() + ICE_RESTART_AFTER);
            }
            RTCIceConnectionState::Connected | RTCIceConnectionState::Completed => {
                self.ice_up = true;
                self.restart_due = None;
                if std::mem::take(&mut self.restarts) > 0 {
                    self.observer.report(Report::IceRestarted).await;
                }
                self.offer_if_due(pc).await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Offers with new ICE credentials. An unanswered offer of ours (lost
    /// with the network) is rolled back first; in the middle of answering
    /// the restart waits for the next try.
    async fn restart_ice(&mut self, pc: &RTCPeerConnection) -> anyhow::Result<()> {
        match pc.signaling_state() {
            RTCSignalingState::Stable => {}
            RTCSignalingState::HaveLocalOffer => {
                pc.set_local_description(rollback()).await.context("rolling back an unanswered offer")?;
            }
            _ => return Ok(()),
        }
        self.restarts += 1;
        self.observer.report(Report::IceRestarting { attempt: self.restarts }).await;
        // The restart offer carries every current track: nothing else is owed.
        self.wants_offer = false;
        let options = RTCOfferOptions { ice_restart: true, ..RTCOfferOptions::default() };
        let offer = pc.create_offer(Some(options)).await.context("creating an ICE restart offer")?;
        self.set_local(pc, offer).await.context("setting the ICE restart offer")?;
        self.send_local(pc, true).await
    }

    /// Applies a local offer or answer, its BUNDLE mid noted first.
    async fn set_local(&self, pc: &RTCPeerConnection, desc: RTCSessionDescription) -> webrtc::error::Result<()> {
        *lock(&self.bundle) = bundle_mid(&desc.sdp);
        pc.set_local_description(desc).await
    }

    async fn send_local(&self, pc: &RTCPeerConnection, offer: bool) -> anyhow::Result<()> {
        let local = pc.local_description().await.context("no local description")?;
        let relay = DescriptionRelay { id: None, to: self.remote.clone(), description: from_rtc(&local) };
        let msg = if offer { ClientMessage::Offer(relay) } else { ClientMessage::Answer(relay) };
        self.signal.send(msg).await.map_err(|_| anyhow::anyhow!("signaling connection closed"))?;
        self.observer.report(if offer { Report::OfferSent } else { Report::AnswerSent }).await;
        Ok(())
    }
}

fn rollback() -> RTCSessionDescription {
    let mut rollback = RTCSessionDescription::default();
    rollback.sdp_type = RTCSdpType::Rollback;
    rollback
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::candidates::MAX_PENDING_CANDIDATES;
    use crate::engine::{RtcEngine, RtcOptions};

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Report>>);

    impl Observer for Recorder {
        async fn report(&self, report: Report) {
            self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(report);
        }
    }

    #[tokio::test]
    async fn candidates_before_any_description_are_held_up_to_the_cap() {
        let engine = RtcEngine::new(&RtcOptions { loopback_only: true, relay_only: false }).expect("engine");
        let pc = engine.connection(&[]).await.expect("connection");
        let (signal, _signals) = mpsc::channel(8);
        let recorder = Arc::new(Recorder::default());
        let (me, remote) = (PeerId::new("me").expect("id"), PeerId::new("remote").expect("id"));
        let negotiator =
            Negotiator::start(&pc, remote.clone(), Roles::new(&me, &remote, false), signal, recorder.clone());
        for n in 0..MAX_PENDING_CANDIDATES + 50 {
            let candidate = IceCandidate {
                candidate: format!("candidate:{n} 1 udp 2130706431 127.0.0.1 {} typ host", 10_000 + n),
                sdp_mid: Some("0".into()),
                sdp_m_line_index: Some(0),
                username_fragment: None,
            };
            negotiator.input(Input::Candidate(candidate)).await;
        }
        // A last input that fails visibly (an answer to no offer): once its
        // report is in, every candidate before it was handled (one task, in
        // order).
        let stray = SessionDescription { kind: SdpType::Answer, sdp: switchboard_protocol::Sdp::new("v=0\r\n") };
        negotiator.input(Input::Description(stray)).await;
        let problems = |reports: &[Report]| -> Vec<String> {
            reports.iter().filter_map(|r| if let Report::Problem(m) = r { Some(m.clone()) } else { None }).collect()
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let seen = loop {
            let reports = recorder.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
            if problems(&reports).len() >= 2 || tokio::time::Instant::now() > deadline {
                break problems(&reports);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let overflow: Vec<&String> = seen.iter().filter(|m| m.contains("too many candidates")).collect();
        assert_eq!(overflow.len(), 1, "one report for the overflow, not one per candidate: {seen:?}");
        assert_eq!(seen.len(), 2, "the overflow and the stray answer: {seen:?}");
        let _ = pc.close().await;
    }
}
