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
