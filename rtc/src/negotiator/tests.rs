//! The negotiator with a real webrtc-rs connection and no network: what it
//! does with what it is given.
use super::*;
use crate::candidates::MAX_PENDING_CANDIDATES;
use crate::engine::{RtcEngine, RtcOptions};
use switchboard_protocol::SdpType;

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
    let negotiator = Negotiator::start(&pc, remote.clone(), Roles::new(&me, &remote, false), signal, recorder.clone());
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

#[tokio::test(start_paused = true)]
async fn an_offer_without_an_answer_is_made_again() {
    let engine = RtcEngine::new(&RtcOptions { loopback_only: true, relay_only: false }).expect("engine");
    let pc = engine.connection(&[]).await.expect("connection");
    let (signal, mut signals) = mpsc::channel(64);
    let recorder = Arc::new(Recorder::default());
    let (me, remote) = (PeerId::new("me").expect("id"), PeerId::new("remote").expect("id"));
    let _negotiator = Negotiator::start(&pc, remote.clone(), Roles::new(&me, &remote, true), signal, recorder.clone());
    let mut offers = 0;
    let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT * 2;
    while offers < 2 {
        let next = tokio::time::timeout_at(deadline, signals.recv()).await;
        match next {
            Ok(Some(ClientMessage::Offer(_))) => offers += 1,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let seen = recorder.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    assert_eq!(offers, 2, "the lost first offer is made again after ANSWER_TIMEOUT: {seen:?}");
    let reports = recorder.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    assert!(reports.iter().any(|r| matches!(r, Report::Problem(m) if m.contains("no answer"))), "{reports:?}");
    let _ = pc.close().await;
}

/// What a negotiator's signals mean to the test: descriptions and
/// candidates to hand to the other side.
fn relayed(msg: ClientMessage) -> Option<Input> {
    match msg {
        ClientMessage::Offer(r) | ClientMessage::Answer(r) => Some(Input::Description(r.description)),
        ClientMessage::Candidate(r) => Some(Input::Candidate(r.candidate)),
        ClientMessage::EndOfCandidates(_) => Some(Input::EndOfCandidates),
        _ => None,
    }
}

/// Waits for the next signal `pick` accepts; the others are kept in `held`.
async fn next_signal(
    signals: &mut mpsc::Receiver<ClientMessage>,
    held: &mut Vec<ClientMessage>,
    pick: impl Fn(&ClientMessage) -> bool,
) -> ClientMessage {
    let wait = async {
        loop {
            let msg = signals.recv().await.expect("the negotiator runs");
            if pick(&msg) {
                return msg;
            }
            held.push(msg);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await.expect("the signal comes")
}

/// Interop found that an offer made right after an answer, before a
/// single candidate was exchanged, left some stacks' ICE agents with no
/// pairs for good. A renegotiation asked for before ICE connected is owed,
/// and goes once it has.
#[tokio::test]
async fn a_renegotiation_waits_until_ice_has_connected() {
    let engine = RtcEngine::new(&RtcOptions { loopback_only: true, relay_only: false }).expect("engine");
    let (a_pc, b_pc) = (engine.connection(&[]).await.expect("a"), engine.connection(&[]).await.expect("b"));
    a_pc.create_data_channel("data", None).await.expect("a data channel to negotiate");
    let (a_id, b_id) = (PeerId::new("a").expect("id"), PeerId::new("b").expect("id"));
    let ((a_signal, mut a_out), (b_signal, mut b_out)) = (mpsc::channel(256), mpsc::channel(256));
    let a_reports = Arc::new(Recorder::default());
    let a = Negotiator::start(&a_pc, b_id.clone(), Roles::new(&a_id, &b_id, true), a_signal, a_reports.clone());
    let b = Negotiator::start(
        &b_pc,
        a_id.clone(),
        Roles::new(&b_id, &a_id, false),
        b_signal,
        Arc::new(Recorder::default()),
    );
    let is_offer = |m: &ClientMessage| matches!(m, ClientMessage::Offer(_));
    let (mut a_held, mut b_held) = (Vec::new(), Vec::new());

    // The first exchange, with no candidate handed over either way: ICE
    // cannot connect.
    let offer = next_signal(&mut a_out, &mut a_held, is_offer).await;
    b.input(relayed(offer).expect("a description")).await;
    let answer = next_signal(&mut b_out, &mut b_held, |m| matches!(m, ClientMessage::Answer(_))).await;
    a.input(Input::Negotiate).await;
    a.input(relayed(answer).expect("a description")).await;
    // A stray answer after it fails visibly: once its report is in, the
    // answer before it was applied (one task, in order), and any offer
    // made on its back is in `a_out`.
    let stray = SessionDescription { kind: SdpType::Answer, sdp: switchboard_protocol::Sdp::new("v=0\r\n") };
    a.input(Input::Description(stray)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !a_reports
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .any(|r| matches!(r, Report::Problem(_)))
    {
        assert!(tokio::time::Instant::now() < deadline, "the stray answer is reported");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    while let Ok(msg) = a_out.try_recv() {
        assert!(!is_offer(&msg), "a re-offer went out before ICE connected");
        a_held.push(msg);
    }

    // Candidates cross; once ICE is connected the owed offer goes.
    for msg in b_held.drain(..) {
        if let Some(input) = relayed(msg) {
            a.input(input).await;
        }
    }
    for msg in a_held.drain(..) {
        if let Some(input) = relayed(msg) {
            b.input(input).await;
        }
    }
    let b_to_a = async {
        while let Some(msg) = b_out.recv().await {
            if let Some(input) = relayed(msg) {
                a.input(input).await;
            }
        }
    };
    let a_to_b_until_offer = async {
        loop {
            let msg = a_out.recv().await.expect("a runs");
            if is_offer(&msg) {
                return;
            }
            if let Some(input) = relayed(msg) {
                b.input(input).await;
            }
        }
    };
    tokio::select! {
        () = b_to_a => panic!("b stopped"),
        r = tokio::time::timeout(Duration::from_secs(10), a_to_b_until_offer) => r.expect("the owed offer goes once ICE is up"),
    }
    let reports = a_reports.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let connected = reports.iter().position(|r| matches!(r, Report::IceState(RTCIceConnectionState::Connected)));
    assert!(connected.is_some(), "ICE connected before the second offer: {reports:?}");
    let _ = (a_pc.close().await, b_pc.close().await);
}
