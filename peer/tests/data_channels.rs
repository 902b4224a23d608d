//! Two headless peers through the real signaling server: both data channels
//! open and carry text both ways; a leaving peer is announced and its link
//! closed. Runs only in a loopback-only network namespace.

mod common;

use common::{join, server, wait_for};
use switchboard_peer::{Channel, PeerEvent};
use switchboard_protocol::LeaveReason;

async fn open_both(peer: &mut switchboard_peer::Peer) {
    let mut open = Vec::new();
    while open.len() < 2 {
        let event = wait_for(peer, "both data channels open", |e| matches!(e, PeerEvent::ChannelOpen { .. })).await;
        if let PeerEvent::ChannelOpen { channel, .. } = event
            && !open.contains(&channel)
        {
            open.push(channel);
        }
    }
}

#[tokio::test]
async fn two_peers_exchange_data_both_ways_on_both_channels() {
    let srv = server().await;
    let mut a = join(&srv, "dc", "alice").await;
    let mut b = join(&srv, "dc", "bob").await;
    open_both(&mut a).await;
    open_both(&mut b).await;

    assert_eq!(a.send(Channel::Chat, "reliable from alice").await.expect("send"), 1);
    let got = wait_for(&mut b, "alice's chat-channel text", |e| matches!(e, PeerEvent::Data { .. })).await;
    assert!(
        matches!(&got, PeerEvent::Data { remote, channel: Channel::Chat, text } if remote == a.id() && text == "reliable from alice"),
        "{got:?}"
    );
    b.send(Channel::Chat, "reliable from bob").await.expect("send");
    let got = wait_for(&mut a, "bob's chat-channel text", |e| matches!(e, PeerEvent::Data { .. })).await;
    assert!(
        matches!(&got, PeerEvent::Data { channel: Channel::Chat, text, .. } if text == "reliable from bob"),
        "{got:?}"
    );

    // The state channel is unreliable by design; on loopback nothing is lost.
    a.send(Channel::State, "state from alice").await.expect("send");
    let got =
        wait_for(&mut b, "alice's state text", |e| matches!(e, PeerEvent::Data { channel: Channel::State, .. })).await;
    assert!(matches!(&got, PeerEvent::Data { text, .. } if text == "state from alice"), "{got:?}");
    b.send(Channel::State, "state from bob").await.expect("send");
    let got =
        wait_for(&mut a, "bob's state text", |e| matches!(e, PeerEvent::Data { channel: Channel::State, .. })).await;
    assert!(matches!(&got, PeerEvent::Data { text, .. } if text == "state from bob"), "{got:?}");

    let b_id = b.id().clone();
    b.leave().await;
    let left = wait_for(&mut a, "bob's departure", |e| matches!(e, PeerEvent::PeerLeft { .. })).await;
    assert!(matches!(left, PeerEvent::PeerLeft { remote, reason: LeaveReason::Left } if remote == b_id));
    a.leave().await;
}

#[tokio::test]
async fn chat_on_the_signaling_socket_reaches_everyone() {
    let srv = server().await;
    let mut a = join(&srv, "chat", "alice").await;
    let mut b = join(&srv, "chat", "bob").await;
    a.chat("hello room").await.expect("chat");
    for p in [&mut a, &mut b] {
        let got = wait_for(p, "the chat message", |e| matches!(e, PeerEvent::Chat(_))).await;
        assert!(matches!(&got, PeerEvent::Chat(c) if c.text == "hello room" && c.seq == 1), "{got:?}");
    }
}
