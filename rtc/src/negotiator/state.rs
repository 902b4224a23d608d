//! The negotiator's task: its state and what it does with each input, ICE
//! state and timer (the rules are in the module docs of `negotiator`).

use super::rules::{Clocks, Collision, Due, Ice};
use super::{ANSWER_TIMEOUT, Input, MAX_CANDIDATE_BYTES, MAX_REMOTE_CANDIDATES, Observer, Report, Roles};
use crate::candidates::{CandidateQueue, bundle_mid};
use crate::convert::{candidate_to_rtc, from_rtc, to_rtc};
use crate::rejected::{keep_rejected, rejected_mids};
use anyhow::Context;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use switchboard_protocol::{ClientMessage, DescriptionRelay, PeerId, Sdp, SdpType, SessionDescription};
use tokio::sync::{mpsc, watch};
use webrtc::ice_transport::ice_connection_state::RTCIceConnectionState;
use webrtc::ice_transport::ice_gathering_state::RTCIceGatheringState;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::offer_answer_options::RTCOfferOptions;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::signaling_state::RTCSignalingState;

/// Locks a mutex whose holders only read or replace a value, so a
/// poisoned lock is still consistent.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The negotiation state, owned by the task.
pub(super) struct State<O> {
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
    /// ICE is connected now (a renegotiation waits while it is not: an
    /// offer before any candidate pair left some stacks without pairs).
    ice_connected: bool,
    /// A remote description has been applied: candidates can be added.
    remote_set: bool,
    /// Candidates that arrived before their description.
    pending: CandidateQueue,
    /// Remote candidates added since the latest remote description.
    remote_added: usize,
    /// Mids of media sections the remote's answers rejected: our later
    /// offers keep them rejected on the wire (see `rejected.rs`). At most
    /// one per media section.
    rejected: Vec<String>,
    /// The offerer's ICE restart and answer clocks (the shared rules).
    clocks: Clocks,
    /// Time zero of the clocks.
    origin: tokio::time::Instant,
}

impl<O: Observer> State<O> {
    /// A connection that has negotiated nothing yet.
    pub(super) fn new(
        pc: &Arc<RTCPeerConnection>,
        remote: PeerId,
        signal: mpsc::Sender<ClientMessage>,
        observer: Arc<O>,
        roles: Roles,
        bundle: Arc<Mutex<Option<String>>>,
    ) -> Self {
        Self {
            pc: Arc::downgrade(pc),
            remote,
            signal,
            observer,
            roles,
            bundle,
            offered: false,
            settled: false,
            wants_offer: false,
            ice_connected: false,
            remote_set: false,
            pending: CandidateQueue::default(),
            remote_added: 0,
            rejected: Vec::new(),
            clocks: Clocks::new(roles.first_offer_ours),
            origin: tokio::time::Instant::now(),
        }
    }

    pub(super) async fn run(
        mut self,
        mut inbox: mpsc::Receiver<Input>,
        mut ice: watch::Receiver<RTCIceConnectionState>,
    ) {
        loop {
            let clock = sleep_until(self.clocks.next().map(|ms| self.origin + Duration::from_millis(ms)));
            let item = tokio::select! {
                input = inbox.recv() => match input {
                    Some(input) => Wake::Input(input),
                    None => break,
                },
                changed = ice.changed() => match changed {
                    Ok(()) => Wake::Ice(*ice.borrow_and_update()),
                    Err(_) => break,
                },
                () = clock => Wake::Clock,
            };
            let Some(pc) = self.pc.upgrade() else { break };
            let result = match item {
                Wake::Input(input) => self.handle(&pc, input).await,
                Wake::Ice(state) => self.ice(&pc, state).await,
                Wake::Clock => match self.clocks.fire(self.now()) {
                    Some(Due::RestartIce(attempt)) => self.restart_ice(&pc, attempt).await.context("ICE restart"),
                    Some(Due::OfferAgain) => self.no_answer(&pc).await,
                    None => Ok(()),
                },
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
                if candidate.candidate.len() > MAX_CANDIDATE_BYTES {
                    anyhow::bail!("a candidate of {} bytes: dropped", candidate.candidate.len());
                }
                let init = candidate_to_rtc(&candidate);
                if !self.remote_set {
                    if !self.pending.push(init) && self.pending.dropped() == 1 {
                        anyhow::bail!("too many candidates before a description: dropping the rest");
                    }
                } else if self.remote_added < MAX_REMOTE_CANDIDATES {
                    self.remote_added += 1;
                    pc.add_ice_candidate(init).await.context("adding a candidate")?;
                } else if self.remote_added == MAX_REMOTE_CANDIDATES {
                    self.remote_added += 1;
                    anyhow::bail!("over {MAX_REMOTE_CANDIDATES} candidates for one description: dropping the rest");
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
        let may = if self.settled {
            stable && self.ice_connected
        } else {
            self.roles.first_offer_ours && stable && !self.offered
        };
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
        // webrtc-rs 0.17 cannot roll back a local offer (no such signaling
        // transition): the polite side drops a colliding offer instead of
        // yielding. Switchboard's endpoints never collide (one offerer per
        // connection: decision 0015).
        match collision.then(|| Collision::rule(self.roles.polite, false)) {
            None => {}
            // Our offer wins; theirs is dropped, and they will answer ours.
            Some(Collision::Ignore) => return Ok(()),
            Some(Collision::Drop | Collision::RollBackAndAnswer) => {
                anyhow::bail!("an offer collided with ours, and webrtc-rs cannot roll back: it was dropped")
            }
        }
        set_remote(pc, desc).await?;
        self.remote_set = true;
        self.remote_added = 0;
        if !is_offer {
            // Our offer is answered.
            self.clocks.answered();
            for mid in rejected_mids(&desc.sdp.text()) {
                if !self.rejected.contains(&mid) {
                    self.rejected.push(mid);
                }
            }
        }
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
            RTCIceConnectionState::Disconnected | RTCIceConnectionState::Failed => {
                self.ice_connected = false;
                self.clocks.on_ice(Ice::Down, self.now());
            }
            RTCIceConnectionState::Checking => self.ice_connected = false,
            RTCIceConnectionState::Connected | RTCIceConnectionState::Completed => {
                self.ice_connected = true;
                if self.clocks.on_ice(Ice::Up, self.now()) {
                    self.observer.report(Report::IceRestarted).await;
                }
                self.offer_if_due(pc).await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Offers with new ICE credentials. An unanswered offer of ours (lost
    /// with the network) is replaced (webrtc-rs allows a new local offer
    /// over a pending one); in the middle of answering the restart waits
    /// for the next try.
    async fn restart_ice(&mut self, pc: &RTCPeerConnection, attempt: u32) -> anyhow::Result<()> {
        match pc.signaling_state() {
            RTCSignalingState::Stable | RTCSignalingState::HaveLocalOffer => {}
            _ => return Ok(()),
        }
        self.observer.report(Report::IceRestarting { attempt }).await;
        // The restart offer carries every current track: nothing else is owed.
        self.wants_offer = false;
        let options = RTCOfferOptions { ice_restart: true, ..RTCOfferOptions::default() };
        let offer = pc.create_offer(Some(options)).await.context("creating an ICE restart offer")?;
        self.set_local(pc, offer).await.context("setting the ICE restart offer")?;
        self.send_local(pc, true).await
    }

    /// Our offer got no answer in time: make it again (a new local offer
    /// replaces the pending one; webrtc-rs cannot roll one back). While ICE
    /// is down the restart timer makes the next offer instead.
    async fn no_answer(&mut self, pc: &RTCPeerConnection) -> anyhow::Result<()> {
        if pc.signaling_state() != RTCSignalingState::HaveLocalOffer {
            return Ok(());
        }
        self.observer.report(Report::Problem(format!("no answer within {ANSWER_TIMEOUT:?}: offering again"))).await;
        self.wants_offer = false;
        let offer = pc.create_offer(None).await.context("creating an offer")?;
        self.set_local(pc, offer).await.context("setting the local offer")?;
        self.send_local(pc, true).await
    }

    /// Milliseconds since the clocks' origin.
    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Applies a local offer or answer, its BUNDLE mid noted first.
    async fn set_local(&self, pc: &RTCPeerConnection, desc: RTCSessionDescription) -> webrtc::error::Result<()> {
        *lock(&self.bundle) = bundle_mid(&desc.sdp);
        pc.set_local_description(desc).await
    }

    async fn send_local(&mut self, pc: &RTCPeerConnection, offer: bool) -> anyhow::Result<()> {
        let local = pc.local_description().await.context("no local description")?;
        let mut description = from_rtc(&local);
        if offer && !self.rejected.is_empty() {
            description.sdp = Sdp::new(&keep_rejected(&local.sdp, &self.rejected));
        }
        let relay = DescriptionRelay { id: None, to: self.remote.clone(), description };
        let msg = if offer { ClientMessage::Offer(relay) } else { ClientMessage::Answer(relay) };
        self.signal.send(msg).await.map_err(|_| anyhow::anyhow!("signaling connection closed"))?;
        if offer {
            self.clocks.offer_sent(self.now());
        }
        self.observer.report(if offer { Report::OfferSent } else { Report::AnswerSent }).await;
        Ok(())
    }
}

/// What woke the task.
enum Wake {
    Input(Input),
    Ice(RTCIceConnectionState),
    Clock,
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Longest wait for webrtc-rs's ICE agent to finish gathering before a
/// remote offer is applied.
const GATHERING_WAIT: Duration = Duration::from_secs(10);

/// Applies a remote description. webrtc-rs refuses an ICE restart while its
/// agent is still gathering (after an earlier restart, gathering through a
/// network that has just come back can take seconds), and by then it has
/// already moved to `have-remote-offer`, from which nothing but an answer
/// gets it out: every later offer then looks like a collision. So a remote
/// offer waits (bounded) for gathering to finish before it is applied.
async fn set_remote(pc: &RTCPeerConnection, desc: &SessionDescription) -> anyhow::Result<()> {
    if desc.kind == SdpType::Offer {
        let deadline = tokio::time::Instant::now() + GATHERING_WAIT;
        while pc.ice_gathering_state() == RTCIceGatheringState::Gathering && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    pc.set_remote_description(to_rtc(desc)?).await.context("setting the remote description")
}
