//! The protocol walkthrough over real sockets: join, relay, chat, presence.

mod common;

use common::{Client, room, server};
use std::time::Duration;
use switchboard_protocol::{
    ChatHistoryPage, LeaveReason, PeerLeft, PeerUpdated, ReadNotice, RelayedCandidate, RelayedDescription,
    RelayedEndOfCandidates, ServerMessage, TypingNotice,
};

#[tokio::test]
async fn join_relay_offer_answer_and_candidates() {
    let srv = server(|_| {}).await;
    let mut peers = room(srv.local_addr(), "call", 2).await;
    let (mut b, wb) = peers.pop().expect("b");
    let (mut a, wa) = peers.pop().expect("a");
    assert_eq!(wb.peers[0].id, wa.you.id);
    a.send(format!(r#"{{"type":"offer","to":"{}","description":{{"type":"offer","sdp":"v=0\r\n"}}}}"#, wb.you.id))
        .await;
    match b.recv("offer").await {
        ServerMessage::Offer(RelayedDescription { from, description }) => {
            assert_eq!(from, wa.you.id);
            assert_eq!(description.sdp.text(), "v=0\r\n");
        }
        other => panic!("{other:?}"),
    }
    b.send(format!(r#"{{"type":"answer","to":"{}","description":{{"type":"answer","sdp":"v=0\r\n"}}}}"#, wa.you.id))
        .await;
    assert!(
        matches!(a.recv("answer").await, ServerMessage::Answer(RelayedDescription { from, .. }) if from == wb.you.id)
    );
    b.send(format!(
        r#"{{"type":"candidate","to":"{}","candidate":{{"candidate":"candidate:1 1 udp 1 192.0.2.1 9 typ host","sdpMid":"0","sdpMLineIndex":0}}}}"#,
        wa.you.id
    ))
    .await;
    b.send(format!(r#"{{"type":"end_of_candidates","to":"{}"}}"#, wa.you.id)).await;
    match a.recv("candidate").await {
        ServerMessage::Candidate(RelayedCandidate { candidate, .. }) => {
            assert_eq!(candidate.sdp_mid.as_deref(), Some("0"))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(a.recv("end_of_candidates").await, ServerMessage::EndOfCandidates(RelayedEndOfCandidates { .. })));
}

#[tokio::test]
async fn chat_history_typing_receipts_media_and_leave() {
    let srv = server(|_| {}).await;
    let mut peers = room(srv.local_addr(), "chat", 2).await;
    let (mut b, wb) = peers.pop().expect("b");
    let (mut a, wa) = peers.pop().expect("a");
    a.send(r#"{"type":"typing","active":true}"#).await;
    assert!(matches!(b.recv("typing").await, ServerMessage::Typing(TypingNotice { active: true, .. })));
    a.send(r#"{"type":"chat","client_id":"m1","text":"hello"}"#).await;
    // The typing indicator clears when the message is sent.
    assert!(matches!(b.recv("typing off").await, ServerMessage::Typing(TypingNotice { active: false, .. })));
    let ServerMessage::Chat(delivered) = b.recv("chat").await else { panic!("chat") };
    let ServerMessage::Chat(ack) = a.recv("chat ack").await else { panic!("ack") };
    assert_eq!(ack, delivered);
    assert_eq!((ack.seq, ack.client_id.as_str(), ack.from.clone()), (1, "m1", wa.you.id.clone()));
    b.send(r#"{"type":"read","seq":1}"#).await;
    assert!(matches!(a.recv("read").await, ServerMessage::Read(ReadNotice { seq: 1, from }) if from == wb.you.id));
    b.send(r#"{"type":"media","mic_muted":true,"camera_muted":false}"#).await;
    assert!(
        matches!(a.recv("peer_updated").await, ServerMessage::PeerUpdated(PeerUpdated { peer }) if peer.media.mic_muted)
    );
    // A late joiner sees history and read positions.
    let mut c = Client::connect(srv.local_addr()).await;
    let wc = c.join("chat", "late").await;
    assert_eq!(wc.chat.len(), 1);
    assert_eq!(wc.chat[0].text, "hello");
    assert_eq!(wc.peers.len(), 2);
    c.send(r#"{"type":"chat_history","id":"h"}"#).await;
    assert!(
        matches!(c.recv("history").await, ServerMessage::ChatHistory(ChatHistoryPage { messages, has_more: false, .. }) if messages.len() == 1)
    );
    // Leave: the others are told, the leaver's socket is closed normally.
    b.send(r#"{"type":"leave"}"#).await;
    let close = b.expect_close().await.expect("close frame");
    assert_eq!(u16::from(close.code), 1000);
    for x in [&mut a, &mut c] {
        let left = x.recv_until("peer_left", |m| matches!(m, ServerMessage::PeerLeft(PeerLeft { .. }))).await;
        assert!(
            matches!(left, ServerMessage::PeerLeft(PeerLeft { peer_id, reason: LeaveReason::Left }) if peer_id == wb.you.id)
        );
    }
}

#[tokio::test]
async fn a_dropped_socket_is_announced_as_disconnected_when_resume_is_off() {
    let srv = server(|s| s.limits.resume_grace = Duration::ZERO).await;
    let mut peers = room(srv.local_addr(), "drop", 2).await;
    let (b, wb) = peers.pop().expect("b");
    let (mut a, _) = peers.pop().expect("a");
    drop(b);
    let left = a.recv_until("peer_left", |m| matches!(m, ServerMessage::PeerLeft(PeerLeft { .. }))).await;
    assert!(
        matches!(left, ServerMessage::PeerLeft(PeerLeft { peer_id, reason: LeaveReason::Disconnected }) if peer_id == wb.you.id)
    );
}
